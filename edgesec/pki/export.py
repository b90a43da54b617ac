"""Exporting a certificate: PEM files or PKCS#12, each export recorded in the inventory and the audit trail."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from edgesec._fs import atomic_write
from edgesec.errors import AlreadyExists, InputError, NotFound, OperationFailed
from edgesec.pki import secrets
from edgesec.pki.builder import (
    PrivateKey,
)
from edgesec.pki.trust import (
    cert_pem,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


from edgesec.pki.csr import _der_tlv
from edgesec.pki.inventory import CertRecord

P12_MAC_ITERATIONS = 600_000


def _pkcs12_remac(pfx: bytes, password: bytes, iterations: int) -> bytes:
    """``pfx`` with its MacData recomputed (HMAC-SHA256, PKCS#12 KDF per RFC 7292 B.2, ``iterations``)."""
    import hashlib
    import hmac

    _, body, end = _der_tlv(pfx, 0)
    _, _, p = _der_tlv(pfx, body)  # version
    auth_start = p
    _, ci, auth_end = _der_tlv(pfx, auth_start)  # authSafe ContentInfo
    _, _, q = _der_tlv(pfx, ci)  # contentType OID (data)
    _, expl, _ = _der_tlv(pfx, q)  # [0] EXPLICIT
    _, octets, octets_end = _der_tlv(pfx, expl)  # OCTET STRING: what the MAC covers
    if auth_end >= end:
        raise OperationFailed("the PKCS#12 writer produced no MacData")
    content = pfx[octets:octets_end]
    salt = os.urandom(16)
    v, u = 64, 32
    pw = (password.decode("utf-8") + "\0").encode("utf-16-be")

    def fill(x: bytes) -> bytes:
        """``x`` repeated to the next multiple of ``v`` bytes (RFC 7292 B.2 steps 2 and 3)."""
        size = v * ((len(x) + v - 1) // v)
        return (x * (size // len(x) + 1))[:size] if x else b""

    a = bytes([3]) * v + fill(salt) + fill(pw)
    for _ in range(iterations):
        a = hashlib.sha256(a).digest()
    key = a[:u]
    mac = hmac.new(key, content, hashlib.sha256).digest()
    sha256_alg = bytes.fromhex("300d06096086480165030402010500")
    digest_info = secrets._der(0x30, sha256_alg + secrets._der(0x04, mac))
    mac_data = secrets._der(0x30, digest_info + secrets._der(0x04, salt) + secrets._der_int(iterations))
    return secrets._der(0x30, pfx[body:auth_end] + mac_data)


def leaf(
    ca: CertificateAuthority, name: str, *, key_passphrase: bytes | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """The current certificate named ``name`` and its private key (for signing or deployment)."""
    row = (
        ca._db()
        .execute("SELECT cert_pem, key_pem, source FROM certs WHERE name=? AND current=1", (name,))
        .fetchone()
    )
    if row is None:
        raise NotFound(f"no certificate named {name!r}")
    if row[1] is None:
        raise NotFound(f"the key of {name!r} is not in the store (it was issued from a CSR)")
    key = secrets.load_key_pem(row[1].encode(), key_passphrase, what=f"key of {name}")
    return x509.load_pem_x509_certificate(row[0].encode()), key


def chain_for(ca: CertificateAuthority, cert: x509.Certificate) -> list[x509.Certificate]:
    """The intermediate(s) between ``cert`` and the root, nearest first."""
    return [c for c in ca.intermediates(include_expired=True) if c.subject == cert.issuer][:1]


def export_pem(
    ca: CertificateAuthority, name: str, directory: str | os.PathLike[str], *, replace: bool = False
) -> dict[str, str]:
    """Write ``cert.pem``, ``chain.pem`` (intermediate), ``fullchain.pem`` (leaf + intermediate), ``ca.pem``
    (root) and ``key.pem`` (0600, when the key is in the store) to ``directory``. Existing files are
    refused unless ``replace``."""
    rec = ca.get(name)
    cert = ca.certificate(rec.serial)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    chain = ca.chain_for(cert)
    files: dict[str, tuple[bytes, int]] = {
        "cert.pem": (cert_pem(cert), 0o644),
        "chain.pem": (b"".join(cert_pem(c) for c in chain), 0o644),
        "fullchain.pem": (cert_pem(cert) + b"".join(cert_pem(c) for c in chain), 0o644),
        "ca.pem": (cert_pem(ca.root_certificate()), 0o644),
    }
    row = ca._db().execute("SELECT key_pem FROM certs WHERE serial=?", (rec.serial,)).fetchone()
    if row[0] is not None:
        files["key.pem"] = (row[0].encode(), 0o600)
    if not replace:
        clash = [f for f in files if (d / f).exists()]
        if clash:
            raise AlreadyExists(
                f"refusing to overwrite {d / clash[0]}",
                hint="choose an empty directory or pass --replace",
            )
    written = {}
    for fname, (data, mode) in files.items():
        written[fname] = str(atomic_write(d / fname, data, mode=mode))
    ca._record_export(rec, str(d.absolute()), "pem")
    return written


def export_p12(
    ca: CertificateAuthority,
    name: str,
    out: str | os.PathLike[str],
    password: bytes,
    *,
    legacy: bool = False,
    replace: bool = False,
    key_passphrase: bytes | None = None,
) -> Path:
    """A PKCS#12 with key, certificate and full chain. AES-256-CBC + PBKDF2-SHA256 + HMAC-SHA256 by
    default; ``legacy`` uses 3DES + SHA-1 (PBES1), which older macOS and Windows import."""
    if not password:
        raise InputError("a PKCS#12 file needs a password")
    cert, key = ca.leaf(name, key_passphrase=key_passphrase)
    chain = [*ca.chain_for(cert), ca.root_certificate()]
    if legacy:
        enc = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the legacy mode exists for importers that need SHA-1
            .build(password)
        )
    else:
        enc = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(600_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password)
        )
    data = pkcs12.serialize_key_and_certificates(name.encode(), key, cert, chain, enc)
    if not legacy:
        # The library writes the MAC with 2,048 iterations whatever kdf_rounds says; a password is
        # then guessed through the MAC at 1/300 of the key bag's cost. Re-MAC at 600,000.
        data = _pkcs12_remac(data, password, P12_MAC_ITERATIONS)
    p = Path(out)
    atomic_write(p, data, mode=0o600, exclusive=not replace)
    rec = ca.get(name)
    ca._record_export(rec, str(p.absolute()), "p12-legacy" if legacy else "p12")
    return p


def _record_export(ca: CertificateAuthority, rec: CertRecord, path: str, fmt: str) -> None:
    """The export's path in the inventory and its audit event, journaled in one transaction."""
    with ca._write(issuing=True) as conn:
        row = conn.execute("SELECT paths FROM certs WHERE serial=?", (rec.serial,)).fetchone()
        paths = json.loads(row[0])
        if path not in paths:
            paths.append(path)
            conn.execute("UPDATE certs SET paths=? WHERE serial=?", (json.dumps(paths), rec.serial))
        event = ca._event(
            "pki.certificate.exported",
            ("file",),
            ("creation",),
            f"certificate {rec.name} exported ({fmt}) to {path}",
            {
                "file.path": path,
                "file.x509.serial_number": rec.serial,
                "edgesec.pki.name": rec.name,
                "edgesec.pki.format": fmt,
            },
        )
        ca._journal(conn, "export", [event])
