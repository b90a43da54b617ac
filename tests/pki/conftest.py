"""Fixtures for the pki tests: a fresh CA per test (EC P-256: cheap), and helpers that run real tools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec.pki.api import CertificateAuthority, TrustBundle
from edgesec.pki.settings import PkiSettings

PASSPHRASE = b"correct horse battery"


@pytest.fixture
def pki_settings() -> PkiSettings:
    return PkiSettings()


@pytest.fixture
def ca(home: Path, pki_settings: PkiSettings) -> Iterator[CertificateAuthority]:
    c = CertificateAuthority.init(
        home, org="Acme Clinic", site="ward-3", passphrase=PASSPHRASE, settings=pki_settings
    )
    yield c
    c.close()


@pytest.fixture
def trust(ca: CertificateAuthority) -> TrustBundle:
    return TrustBundle.load(ca.trust_dir)


def write_pem(path: Path, *objs: object) -> Path:
    data = b""
    for o in objs:
        if isinstance(o, x509.Certificate):
            data += o.public_bytes(serialization.Encoding.PEM)
        elif isinstance(o, x509.CertificateRevocationList):
            data += o.public_bytes(serialization.Encoding.PEM)
        else:
            data += o.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
    path.write_bytes(data)
    return path


def run(*argv: str | Path, check: bool = False, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=check, timeout=60, **kw
    )  # type: ignore[call-overload]


def pkilint_findings(tool: str, *args: str | Path, ignore: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Run a pkilint CLI at WARNING and above; every finding except those ignored by code name."""
    p = run(tool, "lint", "-s", "WARNING", "-f", "JSON", *args)
    if p.returncode != 0 and not p.stdout.strip():
        raise AssertionError(f"{tool} failed: {p.stderr}")
    doc = json.loads(p.stdout)
    out = []
    for r in doc["results"]:
        for f in r["finding_descriptions"]:
            if f["code"] not in ignore:
                out.append({"path": r["node_path"], **f})
    # The exit code is the number of findings at or above the threshold: it must agree with the JSON.
    assert p.returncode == sum(len(r["finding_descriptions"]) for r in doc["results"])
    return out
