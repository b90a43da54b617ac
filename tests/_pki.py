"""The site-PKI builder the tests share: a CA made with edgesec's own API, and its certificates as files.

Each part's tests keep a small adapter for what it needs of a site PKI: ``tests/auditing/sitepki.py``
(exported leaves for Elasticsearch, syslog-ng and the trail signer), ``tests/authz/conftest.py`` (client
certificates and a revoked one, as PEM files and objects), ``tests/models/_pki.py`` (hand-made
certificates the CA refuses to issue -- expired, not yet valid, wrong usage -- written with
:func:`write_pair`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec.pki.api import CertificateAuthority


@dataclass
class Leaf:
    """A certificate file (the leaf, then its chain) and its private key file."""

    cert: Path
    key: Path


def new_ca(base: Path, org: str, *, store: str = "ca", trust: str = "trust") -> CertificateAuthority:
    """An unencrypted CA store at ``base/store`` that publishes its trust bundle to ``base/trust``."""
    return CertificateAuthority.init(base / store, org=org, encrypt=False, trust_dir=base / trust)


def write_pair(
    directory: Path, stem: str, cert: x509.Certificate, key: Any, *chain: x509.Certificate
) -> Leaf:
    """Write ``stem.crt`` (``cert``, then ``chain``) and ``stem.key`` (PKCS#8, unencrypted, mode 0600)."""
    pem = serialization.Encoding.PEM
    crt = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    crt.write_bytes(b"".join(c.public_bytes(pem) for c in (cert, *chain)))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return Leaf(crt, key_file)


def export(ca: CertificateAuthority, name: str, directory: Path) -> Leaf:
    """Export the store's certificate ``name`` (``fullchain.pem``, ``key.pem``) to ``directory/name``."""
    files = ca.export_pem(name, directory / name)
    return Leaf(Path(files["fullchain.pem"]), Path(files["key.pem"]))
