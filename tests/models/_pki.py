"""A small site PKI for the model tests: root, intermediate, signing and server leaves, and a CRL.

Built with ``cryptography`` directly: the tests need certificates the site CA refuses to issue (expired,
not yet valid, other usages); files are written with the shared ``tests._pki.write_pair``; the profiles match the site PKI's
(root pathLen 1, intermediate pathLen 0, signing leaf codeSigning EKU, server leaf serverAuth EKU).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests._pki import write_pair

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Site"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class Issued:
    """A certificate with its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str, *chain: x509.Certificate) -> tuple[Path, Path]:
        """Write ``stem.crt`` (the leaf, then ``chain``) and ``stem.key``; return both paths."""
        leaf = write_pair(directory, stem, self.cert, self.key, *chain)
        return leaf.cert, leaf.key


def _build(
    subject: str,
    issuer: Issued | None,
    *,
    ca: bool,
    path_len: int | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    sign_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else _name(subject)
    nb = not_before or NOW - dt.timedelta(days=365 if ca else 1)
    na = not_after or NOW + dt.timedelta(days=365)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(sign_key.public_key()),  # type: ignore[arg-type]
            critical=False,
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
        if subject.startswith("server"):
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("model.test")]), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return Issued(b.sign(sign_key, hashes.SHA256()), key)


@dataclass
class SitePki:
    """Root, intermediate, and leaves issued on demand; revocations go into the next CRL."""

    root: Issued = field(default_factory=lambda: _build("Test Root", None, ca=True, path_len=1))
    intermediate: Issued = field(init=False)
    revoked: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.intermediate = _build("Test Intermediate", self.root, ca=True, path_len=0)

    def signing(self, name: str = "publisher", **kw: dt.datetime) -> Issued:
        return _build(name, self.intermediate, ca=False, eku=[ExtendedKeyUsageOID.CODE_SIGNING], **kw)

    def server(self, name: str = "server") -> Issued:
        return _build(name, self.intermediate, ca=False, eku=[ExtendedKeyUsageOID.SERVER_AUTH])

    def revoke(self, leaf: Issued) -> None:
        self.revoked.append(leaf.cert.serial_number)

    def crl(
        self, issuer: Issued | None = None, *, next_update: dt.datetime | None = None
    ) -> x509.CertificateRevocationList:
        """The CRL of ``issuer`` (default: the intermediate), listing the revoked serials it issued."""
        ca = issuer or self.intermediate
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(NOW - dt.timedelta(hours=1))
            .next_update(next_update or NOW + dt.timedelta(days=7))
            .add_extension(x509.CRLNumber(len(self.revoked) + 1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
            )
        )
        if ca is self.intermediate:
            for serial in self.revoked:
                b = b.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(serial)
                    .revocation_date(NOW - dt.timedelta(minutes=5))
                    .build()
                )
        return b.sign(ca.key, hashes.SHA256())

    def publish(self, directory: Path, *, next_update: dt.datetime | None = None) -> Path:
        """Write a trust bundle as the site PKI publishes it: root, intermediates, and every CA's CRL."""
        directory.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        (directory / "root.pem").write_bytes(self.root.cert.public_bytes(pem))
        (directory / "intermediates.pem").write_bytes(self.intermediate.cert.public_bytes(pem))
        (directory / "crl.pem").write_bytes(
            self.crl(self.root).public_bytes(pem) + self.crl(next_update=next_update).public_bytes(pem)
        )
        return directory
