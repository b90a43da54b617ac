"""What reading a proxy config back reports (``Issue``, ``ProxyReport``), what the site trusts (``SiteTrust``),
and the CA-file judgement every proxy's reader shares."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgesec.authz.headers import (
    CERT_HEADER_DEFAULT,
    IDENTITY_DEFAULT,
    fold,
    strip_list,
)

Reader = Callable[[str], str | None]
Globber = Callable[[str], list[str]]

# Headers authz answers with and a client must never be able to set itself (one definition: authz.headers).
IDENTITY_HEADERS = IDENTITY_DEFAULT
CERT_HEADER = CERT_HEADER_DEFAULT


@dataclass(frozen=True)
class Issue:
    """One way the proxy config falls short: ``level`` is ``fail`` or ``warn``; ``where`` is ``file:line``."""

    level: str
    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "where": self.where, "message": self.message}


@dataclass
class ProxyReport:
    """What was read and what is wrong with it."""

    kind: str
    path: str
    issues: list[Issue] = field(default_factory=list)
    routes: int = 0
    files: list[str] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        self.issues.append(Issue("fail", where, message))

    def warn(self, where: str, message: str) -> None:
        self.issues.append(Issue("warn", where, message))

    @property
    def failed(self) -> bool:
        return any(i.level == "fail" for i in self.issues)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "routes": self.routes,
            "files": self.files,
            "issues": [i.to_json() for i in self.issues],
        }


@dataclass(frozen=True)
class SiteTrust:
    """What the proxy config is judged against: the site CA certificates and the ForwardAuth address."""

    ca_fingerprints: frozenset[str]
    auth_url: str | None = None
    identity_headers: tuple[str, ...] = IDENTITY_HEADERS
    cert_header: str = CERT_HEADER

    @classmethod
    def from_pem(
        cls,
        pem: str | None,
        auth_url: str | None,
        headers: Sequence[str] = IDENTITY_HEADERS,
        cert_header: str = CERT_HEADER,
    ) -> SiteTrust:
        return cls(frozenset(fingerprints(pem or "")), auth_url, tuple(headers), cert_header)

    def strip(self, keep: Sequence[str] = ()) -> tuple[str, ...]:
        """Every client header spelling the proxy must delete (:func:`edgesec.authz.headers.strip_list`)."""
        return strip_list(self.identity_headers, self.cert_header, keep)

    def protected(self) -> set[str]:
        """The folded names of every protected header."""
        return {fold(h) for h in self.strip()} - {"connection"}

    def auth_port(self) -> int | None:
        if not self.auth_url:
            return None
        u = urlsplit(self.auth_url)
        return u.port or (443 if u.scheme == "https" else 80)


def fingerprints(pem: str) -> list[str]:
    """SHA-256 fingerprints of every certificate in a PEM text (unparsable blocks are skipped)."""
    out = []
    for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]:
        body = "-----BEGIN CERTIFICATE-----" + block.split("-----END CERTIFICATE-----")[0]
        try:
            cert = x509.load_pem_x509_certificate((body + "-----END CERTIFICATE-----\n").encode())
        except ValueError:
            continue
        out.append(hashlib.sha256(cert.public_bytes(_DER)).hexdigest())
    return out


_DER = Encoding.DER


def judge_ca_file(path: str, text: str | None, trust: SiteTrust) -> str | None:
    """Why the client CA file ``path`` does not verify against the site CA; ``None`` when it does."""
    if text is None:
        return f"client CA file {path} cannot be read"
    if not trust.ca_fingerprints:
        return None  # nothing to compare with: the caller reports the missing trust bundle once
    found = fingerprints(text)
    if not found:
        return f"client CA file {path} holds no certificate"
    foreign = [f for f in found if f not in trust.ca_fingerprints]
    if foreign:
        return (
            f"client CA file {path} trusts {len(foreign)} certificate(s) that are not the site CA: "
            "any client they issue is accepted"
        )
    return None


def few(names: Sequence[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
