"""A small site PKI for the auditing tests: root -> intermediate -> server, client and signing leaves.

Written as the site's published trust bundle (``root.pem``, ``intermediates.pem``, ``ca-bundle.pem``,
``crl.pem``) so the code under test verifies certificates exactly as it does in production.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgesec test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_len: int | None = None,
    eku: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    pub = key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> x509.CertificateRevocationList:
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW - dt.timedelta(minutes=5))
        .next_update(NOW + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def _key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Leaf:
    cert: Path
    key: Path


@dataclass
class SitePki:
    trust: Path  # the published bundle directory
    ca_bundle: Path
    server: Leaf
    client: Leaf
    signing: Leaf
    other_signing: Leaf  # signed by a CA the site does not trust


def make_site_pki(d: Path) -> SitePki:
    d.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("test root", root_key, None, root_key, ca=True, path_len=1)
    int_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("test intermediate", int_key, root, root_key, ca=True, path_len=0)
    trust = d / "trust"
    trust.mkdir(exist_ok=True)
    (trust / "root.pem").write_bytes(_pem(root))
    (trust / "intermediates.pem").write_bytes(_pem(inter))
    (trust / "ca-bundle.pem").write_bytes(_pem(root) + _pem(inter))
    crls = _crl(root, root_key).public_bytes(serialization.Encoding.PEM) + _crl(inter, int_key).public_bytes(
        serialization.Encoding.PEM
    )
    (trust / "crl.pem").write_bytes(crls)

    def leaf(
        name: str, eku: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None, issuer=inter, ikey=int_key
    ) -> Leaf:  # type: ignore[no-untyped-def]
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(name, k, issuer, ikey, ca=False, eku=eku, sans=sans)
        (d / f"{name}.pem").write_bytes(_pem(c) + (_pem(issuer) if issuer is inter else b""))
        (d / f"{name}.key").write_bytes(_key_pem(k))
        (d / f"{name}.key").chmod(0o600)
        return Leaf(d / f"{name}.pem", d / f"{name}.key")

    server = leaf(
        "es-server",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = leaf("syslog-ng-client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("syslog-ng.local")])
    signing = leaf("trail-signer", ExtendedKeyUsageOID.CODE_SIGNING, None)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("rogue root", rogue_key, None, rogue_key, ca=True, path_len=0)
    other = leaf("rogue-signer", ExtendedKeyUsageOID.CODE_SIGNING, None, issuer=rogue, ikey=rogue_key)
    return SitePki(trust, trust / "ca-bundle.pem", server, client, signing, other)
