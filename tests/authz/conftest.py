"""Fixtures for authz tests: one site CA per session (made with pki's own API), certificates, an authorizer."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec import auditing
from edgesec._data import policies_root
from edgesec.authz.policy import PolicyFiles
from edgesec.authz.service import Authorizer
from edgesec.authz.settings import AuthzSettings
from edgesec.pki.api import CertificateAuthority
from tests._net import free_port
from tests._pki import new_ca, write_pair

CLIENTS = ("alice", "carol", "dave", "erin", "emergency-1", "mallory", "revoked-rita")
HOST = "dify.branch.local"


@dataclass
class SiteCA:
    """A CA store, its published trust bundle and PEM files of the certificates tests use."""

    ca: CertificateAuthority
    trust: Path
    files: Path
    certs: dict[str, x509.Certificate]

    def der_b64(self, name: str) -> str:
        return base64.b64encode(self.certs[name].public_bytes(serialization.Encoding.DER)).decode()

    def pem(self, name: str) -> str:
        return self.certs[name].public_bytes(serialization.Encoding.PEM).decode()

    def cert_file(self, name: str) -> Path:
        return self.files / f"{name}.crt"

    def key_file(self, name: str) -> Path:
        return self.files / f"{name}.key"


@pytest.fixture(scope="session")
def site_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteCA]:
    base = tmp_path_factory.mktemp("authz-ca")
    # Session fixtures run before the per-test isolation: point the trail somewhere private meanwhile.
    with auditing.configured(base / "audit", durability="none"):
        ca = new_ca(base, "Test Bank", store="home")
        files = base / "files"
        files.mkdir()
        certs: dict[str, x509.Certificate] = {}

        def save(name: str, cert: x509.Certificate, key: Any) -> None:
            certs[name] = cert
            write_pair(files, name, cert, key)

        for name in CLIENTS:
            save(name, *ca.issue_client(name))
        save("server", *ca.issue_server("proxy", ["DNS:" + HOST, "DNS:localhost", "IP:127.0.0.1"]))
        ca.revoke("revoked-rita", "key-compromise")
        # A certificate for a client from a CA the site does not trust.
        other = new_ca(base, "Evil Corp", store="other", trust="evil")
        save("stranger", *other.issue_client("alice"))
        ca_bundle = (base / "trust" / "ca-bundle.pem").read_bytes()
        (files / "ca-bundle.pem").write_bytes(ca_bundle)
        yield SiteCA(ca=ca, trust=base / "trust", files=files, certs=certs)
        ca.close()
        other.close()


def bank_files(tmp: Path) -> PolicyFiles:
    """A private copy of the shipped bank policy (tests edit it)."""
    src = policies_root() / "casbin"
    d = tmp / "policy"
    d.mkdir(exist_ok=True)
    shutil.copy2(src / "model.conf", d / "model.conf")  # old mtimes: the files count as settled
    shutil.copy2(src / "bank.csv", d / "policy.csv")
    return PolicyFiles(d / "model.conf", d / "policy.csv")


def settings(**kw: Any) -> AuthzSettings:
    base: dict[str, Any] = {"tenant_hosts": {HOST: "branch"}, "identity_order": ["cert"]}
    base.update(kw)
    return AuthzSettings.model_validate(base)


@pytest.fixture
def make_authorizer(site_ca: SiteCA, tmp_path: Path) -> Callable[..., Authorizer]:
    def make(clock: Any = None, files: PolicyFiles | None = None, **kw: Any) -> Authorizer:
        extra: dict[str, Any] = {}
        if clock is not None:
            extra["clock"] = clock
        return Authorizer(
            settings(**kw), files=files or bank_files(tmp_path), trust_dir=site_ca.trust, **extra
        )

    return make


def fwd(
    method: str = "GET", uri: str = "/", host: str = HOST, cert: str | None = None, **extra: str
) -> list[tuple[str, str]]:
    """Headers as Traefik sends them to /auth."""
    h = [
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Uri", uri),
        ("X-Forwarded-Host", host),
        ("X-Forwarded-Proto", "https"),
    ]
    if cert is not None:
        h.append(("X-Forwarded-Tls-Client-Cert", cert))
    h.extend((k.replace("_", "-"), v) for k, v in extra.items())
    return h


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class running:
    """Serve an ASGI app with real uvicorn on 127.0.0.1 in a thread: ``with running(app) as url``."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import threading

        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def write_settled(path: Path, text: str) -> None:
    """Write a policy file as if it had been saved a second ago (reload waits for files to settle)."""
    import os
    import time

    path.write_text(text)
    t = time.time() - 1
    os.utime(path, (t, t))
