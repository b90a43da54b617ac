"""The CA keys and certificates: passphrases, loading (and checking) the root and intermediate, the signer,
and rotating the intermediate.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec._fs import atomic_write
from edgesec.errors import InputError, NotFound, OperationFailed, VerificationError
from edgesec.pki import secrets
from edgesec.pki.builder import (
    BACKDATE,
    PrivateKey,
    build_certificate,
    common_name,
    generate_key,
    subject_name,
)
from edgesec.pki.inventory import (
    _fp,
    _insert_ca,
    _spki,
    killpoint,
)
from edgesec.pki.layout import (
    CA_DIR,
    INTERMEDIATE_PREFIX,
    _offline_key_name,
    intermediate_files,
    intermediate_number,
)
from edgesec.pki.trust import (
    cert_pem,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


def _ca_cert(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise InputError(
            f"the CA store is damaged: {what} certificate in the inventory does not parse; nothing was changed",
            hint="restore the store from a backup (`edgesec pki restore`)",
        ) from None


def _check_signed(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise InputError(
            f"the CA store is damaged: the {what} certificate does not verify under the root; "
            "it is neither used nor published",
            hint="restore the store from a backup (`edgesec pki restore`)",
        ) from None


def _get_passphrase(ca: CertificateAuthority) -> bytes | None:
    if ca._passphrase is None:
        src = ca._passphrase_source
        if callable(src):
            ca._passphrase = src()
        else:
            ca._passphrase = secrets.resolve_passphrase(src, config_file=ca.settings.passphrase_file)
    return ca._passphrase


def _get_root_passphrase(ca: CertificateAuthority) -> bytes | None:
    """The root key's own passphrase (never the site config's file); None when no source has one."""
    if ca._root_passphrase is None:
        src = ca._root_passphrase_source
        if callable(src):
            ca._root_passphrase = src()
        elif src is not None:
            ca._root_passphrase = src.encode() if isinstance(src, str) else src
        else:
            ca._root_passphrase = secrets.resolve_root_passphrase()
    return ca._root_passphrase


def _load_ca_key(ca: CertificateAuthority, path: Path, what: str, *, root: bool = False) -> PrivateKey:
    """A CA key; the root's is tried with its own passphrase first, then (a CA created with one
    passphrase for both) the intermediate's."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{what} not found: {path}") from None
    except PermissionError:
        raise InputError(f"{what} is not readable (permission denied): {path}") from None
    if not secrets.is_encrypted_pem(pem):
        return secrets.load_key_pem(pem, None, what=what)
    if root:
        rpw = ca._get_root_passphrase()
        if rpw is not None:
            return secrets.load_key_pem(pem, rpw, what=f"{what} (root passphrase)")
    return secrets.load_key_pem(pem, ca._get_passphrase(), what=what)


def _active_intermediate(ca: CertificateAuthority) -> tuple[int, x509.Certificate, str | None]:
    row = (
        ca._db()
        .execute("SELECT id, cert_pem, key_file FROM cas WHERE role='intermediate' AND status='active'")
        .fetchone()
    )
    if row is None:
        raise OperationFailed("the CA store has no active intermediate")
    return row[0], ca._checked_intermediate(row[1]), row[2]


def _checked_intermediate(ca: CertificateAuthority, pem: str) -> x509.Certificate:
    """An intermediate from the inventory, parsed and verified under the root: a damaged one is never
    used to sign nor published."""
    cert = _ca_cert(pem, "an intermediate")
    fp = _fp(cert)
    if fp not in ca._verified:
        root = ca.root_certificate()
        _check_signed(cert, root, f"intermediate {cert.subject.rfc4514_string()}")
        ca._verified.add(fp)
    return cert


def signer(ca: CertificateAuthority) -> tuple[int, x509.Certificate, PrivateKey]:
    """The active intermediate (id, certificate, decrypted key), cached after the first call."""
    ca_id, cert, key_file = ca._active_intermediate()
    if ca._signer is not None and ca._signer[0] == ca_id:
        return ca._signer
    if not key_file:
        raise OperationFailed("the active intermediate's key is not in the store")
    key = ca._load_ca_key(ca.dir / CA_DIR / key_file, "intermediate CA key")
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise VerificationError("the intermediate CA key does not match its certificate")
    ca._signer = (ca_id, cert, key)
    return ca._signer


def root_certificate(ca: CertificateAuthority) -> x509.Certificate:
    row = ca._db().execute("SELECT cert_pem FROM cas WHERE role='root'").fetchone()
    if row is None:
        raise OperationFailed("the CA store has no root")
    root = _ca_cert(row[0], "the root")
    fp = _fp(root)
    if fp not in ca._verified:
        _check_signed(root, root, "root")
        ca._verified.add(fp)
    return root


def intermediates(ca: CertificateAuthority, *, include_expired: bool = False) -> list[x509.Certificate]:
    """Intermediates still in use, newest first (the active one first)."""
    rows = ca._db().execute(
        "SELECT cert_pem FROM cas WHERE role='intermediate' ORDER BY status='active' DESC, id DESC"
    )
    now = ca.clock()
    out = []
    for (pem,) in rows:
        c = ca._checked_intermediate(pem)
        if include_expired or c.not_valid_after_utc > now:
            out.append(c)
    return out


def _load_root_key(ca: CertificateAuthority, offline_root: str | os.PathLike[str] | None) -> PrivateKey:
    root = ca.root_certificate()
    if offline_root:
        path = Path(offline_root) / _offline_key_name(root)
        if not path.is_file():
            raise NotFound(f"the root key for this CA is not in {offline_root} (expected {path.name})")
    else:
        row = ca._db().execute("SELECT key_file FROM cas WHERE role='root'").fetchone()
        if not row or not row[0]:
            raise InputError(
                "this CA has an offline root: its key is not in the store",
                hint="mount the removable media and pass --offline-root DIR",
            )
        path = ca.dir / CA_DIR / row[0]
    key = ca._load_ca_key(path, "root CA key", root=True)
    if _spki(key.public_key()) != _spki(root.public_key()):
        raise VerificationError(f"{path} is not the key of this CA's root")
    return key


def rotate_intermediate(
    ca: CertificateAuthority, *, offline_root: str | os.PathLike[str] | None = None
) -> x509.Certificate:
    """A new intermediate signed by the root; the old one is retired but stays in the trust bundle
    (with its CRL) until it expires, so every certificate it issued keeps working."""
    root_key = ca._load_root_key(offline_root)
    pw = ca._get_passphrase() if ca.meta("encrypted") == "1" else None
    if ca.meta("encrypted") == "1" and not pw:
        raise InputError("no CA passphrase given for the new intermediate key")
    root = ca.root_certificate()
    now = ca.clock()
    key = generate_key(ca.meta("key_type") or "ec-p256")
    with ca._write() as conn:
        # Files of a rotation killed before its commit may exist: never reuse their number.
        on_disk = [
            num
            for p in (ca.dir / CA_DIR).glob(INTERMEDIATE_PREFIX + "*")
            if (num := intermediate_number(p.name)) is not None
        ]
        in_db = conn.execute("SELECT COUNT(*) FROM cas WHERE role='intermediate'").fetchone()[0]
        n = max([in_db, *on_disk]) + 1
        org = ca.meta("org") or "edgesec"
        cert = build_certificate(
            kind="intermediate",
            subject=subject_name(f"{org} Intermediate CA {n}", org, ca.meta("site") or None),
            public_key=key.public_key(),
            issuer=root.subject,
            issuer_key=root_key,
            not_before=now - BACKDATE,
            not_after=min(root.not_valid_after_utc, now + dt.timedelta(days=ca.settings.intermediate_days)),
            constraints=ca.name_constraints(),
        )
        cadir = ca.dir / CA_DIR
        atomic_write(cadir / intermediate_files(n)[0], cert_pem(cert), mode=0o644, exclusive=True)
        killpoint("intermediate certificate")
        atomic_write(
            cadir / intermediate_files(n)[1], secrets.key_to_pem(key, pw), mode=0o600, exclusive=True
        )
        killpoint("intermediate key")
        conn.execute("UPDATE cas SET status='retired' WHERE role='intermediate' AND status='active'")
        _insert_ca(conn, cert, "intermediate", intermediate_files(n)[1], now)
        ca._signer = None
        rotated = ca._event(
            "pki.intermediate.rotated",
            ("configuration",),
            ("change",),
            f"intermediate rotated: {common_name(cert.subject)} is now active",
            {
                "file.x509.serial_number": f"{cert.serial_number:x}",
                "file.x509.subject.common_name": common_name(cert.subject),
                "file.x509.not_after": cert.not_valid_after_utc,
            },
        )
        crl = ca._sign_crls(conn, root_key=root_key)
        ca._journal(conn, "rotate-intermediate", [rotated, ca._crl_event(crl)], publish=True)
    ca._signer = None
    return cert
