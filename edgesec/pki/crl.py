"""Revocation and CRLs: marking certificates revoked, signing the root and intermediate CRLs, storing them."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec.audit_sink import Event
from edgesec.errors import InputError, VerificationError
from edgesec.pki.builder import (
    PrivateKey,
    common_name,
    signature_hash,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


from edgesec.pki.inventory import _iso, _parse_iso, _spki
from edgesec.pki.layout import CA_DIR

# Re-sign the root's CRL (when the root key is online) once it has less than this left.
ROOT_CRL_RENEW_DAYS = 30


REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def build_crl(
    issuer: x509.Certificate,
    key: PrivateKey,
    revoked: Iterable[tuple[str, str, str | None]],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """A CRL per RFC 5280: CRL number and AKI extensions; a reasonCode entry extension unless the reason is
    unspecified (RFC 5280 5.3.1: absent rather than unspecified)."""
    # The entries go in through the constructor: add_revoked_certificate() copies the whole list on every
    # call, which makes a 100,000-entry CRL quadratic (tens of seconds instead of about one).
    reason_ext: dict[str, x509.Extension[x509.ExtensionType]] = {
        name: x509.Extension(x509.oid.CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(flag))
        for name, flag in REASONS.items()
        if name != "unspecified"
    }
    dates: dict[str, dt.datetime] = {}
    entries: list[x509.RevokedCertificate] = []
    for serial, revoked_at, reason in revoked:
        when = dates.get(revoked_at)
        if when is None:
            when = dates[revoked_at] = _parse_iso(revoked_at)
        ext = [reason_ext[reason]] if reason in reason_ext else []
        entries.append(x509.RevokedCertificateBuilder(int(serial, 16), when, ext).build())
    b = (
        x509.CertificateRevocationListBuilder(revoked_certificates=entries)
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    return b.sign(key, signature_hash(key))


def _mark_revoked(ca: CertificateAuthority, conn: sqlite3.Connection, serial: str, reason: str) -> bool:
    """Mark ``serial`` revoked in the open transaction; False when it already was."""
    if reason not in REASONS:
        raise InputError(f"unknown revocation reason {reason!r}; expected one of {', '.join(REASONS)}")
    cur = conn.execute(
        "UPDATE certs SET revoked_at=?, revocation_reason=? WHERE serial=? AND revoked_at IS NULL",
        (_iso(ca.clock()), reason, serial),
    )
    return cur.rowcount == 1


def _revoked_event(ca: CertificateAuthority, serial: str, name: str, reason: str) -> Event:
    return ca._event(
        "pki.certificate.revoked",
        ("iam",),
        ("deletion",),
        f"certificate {name} (serial {serial}) revoked: {reason}",
        {
            "file.x509.serial_number": serial,
            "file.x509.subject.common_name": name,
            "event.reason": reason,
            "edgesec.pki.name": name,
        },
    )


def revoke(
    ca: CertificateAuthority, name_or_serial: str, reason: str = "unspecified", *, publish: bool = True
) -> str:
    """Revoke a certificate (the current one of a name, or any serial). The revocation and the CRLs
    that list it are one transaction; the trust bundle is then published (a kill in between leaves a
    journal entry the next command finishes). Revoking an already revoked certificate signs and
    publishes the CRLs again (``last_revoke_repeated`` tells which happened). Returns the serial."""
    if reason not in REASONS:
        raise InputError(f"unknown revocation reason {reason!r}; expected one of {', '.join(REASONS)}")
    ca.signer()  # the key (and its passphrase) before the lock is taken
    with ca._write() as conn:
        serial, name = ca._find(conn, name_or_serial)
        fresh = ca._mark_revoked(conn, serial, reason)
        out = ca._sign_crls(conn)
        events = [ca._revoked_event(serial, name, reason)] if fresh else []
        ca._journal(conn, "revoke", [*events, ca._crl_event(out)], publish=publish)
    ca.last_revoke_repeated = not fresh
    return serial


def _crl_event(ca: CertificateAuthority, out: dict[str, Any]) -> Event:
    return ca._event(
        "pki.crl.generated",
        ("configuration",),
        ("change",),
        f"CRL number {out['number']} generated",
        {"edgesec.pki.crl_number": out["number"], "edgesec.pki.crls": out["crls"]},
    )


def generate_crl(
    ca: CertificateAuthority,
    *,
    root_key: PrivateKey | None = None,
    offline_root: str | os.PathLike[str] | None = None,
    with_root: bool = False,
    publish: bool = True,
    days: int | None = None,
) -> dict[str, Any]:
    """Sign a fresh CRL for every intermediate in use (and the root's, when its key is given or
    ``with_root``), store them and publish the trust bundle. Only the intermediate key is needed
    for the day-to-day CRL. ``days`` overrides ``[pki] crl_days`` for the nextUpdate."""
    crl_days = days if days is not None else ca.settings.crl_days
    if not 1 <= crl_days <= 365:
        raise InputError("the CRL lifetime must be 1 to 365 days")
    now = ca.clock()
    if root_key is None and not (with_root or offline_root) and ca._root_crl_due(now):
        # With the root key in the store, the routine run renews the root's CRL before it lapses (an
        # expired root CRL makes nginx refuse every client); an offline root needs a ceremony, which
        # the pki.crl-freshness check announces 30 days ahead.
        # A root key under its own passphrase is renewed only when that passphrase was given: the CRL
        # job holds the intermediate's alone.
        with_root = ca.meta("offline_root") != "1" and (
            ca.meta("root_passphrase") != "separate" or ca._get_root_passphrase() is not None
        )
    if root_key is None and (with_root or offline_root):
        root_key = ca._load_root_key(offline_root)
    ca.signer()
    with ca._write() as conn:
        out = ca._sign_crls(conn, root_key=root_key, days=crl_days)
        ca._journal(conn, "crl", [ca._crl_event(out)], publish=publish)
    if publish and ca.last_publication is not None:
        out["published"] = str(ca.last_publication.directory)
        out["hooks"] = ca.last_publication.hooks
    return out


def _sign_crls(
    ca: CertificateAuthority,
    conn: sqlite3.Connection,
    *,
    root_key: PrivateKey | None = None,
    days: int | None = None,
) -> dict[str, Any]:
    """Sign and store, in the open transaction, a CRL for every intermediate still valid (and the
    root's, given its key), all with one new CRL number."""
    crl_days = days if days is not None else ca.settings.crl_days
    now = ca.clock()
    out: dict[str, Any] = {"crls": []}
    number = int(ca.meta("crl_number") or "0") + 1
    rows = conn.execute(
        "SELECT id, cert_pem, key_file, status FROM cas WHERE role='intermediate' ORDER BY id"
    ).fetchall()
    for ca_id, pem, key_file, _status in rows:
        cert = ca._checked_intermediate(pem)
        if cert.not_valid_after_utc <= now:
            continue
        if ca._signer is not None and ca._signer[0] == ca_id:
            key = ca._signer[2]
        else:
            key = ca._load_ca_key(ca.dir / CA_DIR / key_file, "intermediate CA key")
            if _spki(key.public_key()) != _spki(cert.public_key()):
                raise VerificationError(f"the key {key_file} does not match its intermediate certificate")
        revoked = conn.execute(
            "SELECT serial, revoked_at, revocation_reason FROM certs WHERE issuer_id=? AND revoked_at IS NOT NULL",
            (ca_id,),
        ).fetchall()
        crl = build_crl(cert, key, revoked, number, now, now + dt.timedelta(days=crl_days))
        ca._store_crl(conn, ca_id, crl, number, len(revoked))
        out["crls"].append({"issuer": common_name(cert.subject), "number": number, "entries": len(revoked)})
    if root_key is not None:
        root_id, root = ca._root_row(conn)
        crl = build_crl(root, root_key, [], number, now, now + dt.timedelta(days=ca.settings.root_crl_days))
        ca._store_crl(conn, root_id, crl, number, 0)
        out["crls"].append({"issuer": common_name(root.subject), "number": number, "entries": 0})
    conn.execute("UPDATE meta SET value=? WHERE key='crl_number'", (str(number),))
    out["number"] = number
    out["next_update"] = _iso(now + dt.timedelta(days=crl_days))
    ca._status_needed = True
    return out


def _root_crl_due(ca: CertificateAuthority, now: dt.datetime) -> bool:
    row = (
        ca._db()
        .execute(
            "SELECT MAX(c.next_update) FROM crls c JOIN cas a ON a.id = c.issuer_id WHERE a.role = 'root'"
        )
        .fetchone()
    )
    if row is None or row[0] is None:
        return True
    return _parse_iso(row[0]) - now < dt.timedelta(days=ROOT_CRL_RENEW_DAYS)


def _root_row(ca: CertificateAuthority, conn: sqlite3.Connection) -> tuple[int, x509.Certificate]:
    row = conn.execute("SELECT id, cert_pem FROM cas WHERE role='root'").fetchone()
    return row[0], x509.load_pem_x509_certificate(row[1].encode())


def _store_crl(
    ca: CertificateAuthority,
    conn: sqlite3.Connection,
    ca_id: int,
    crl: x509.CertificateRevocationList,
    number: int,
    entries: int,
) -> None:
    conn.execute(
        "INSERT INTO crls (issuer_id, number, this_update, next_update, crl_pem, entries) VALUES (?,?,?,?,?,?)",
        (
            ca_id,
            number,
            _iso(crl.last_update_utc),
            _iso(crl.next_update_utc or crl.last_update_utc),
            crl.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            entries,
        ),
    )
    # Keep only the latest few CRLs per CA: older ones are superseded and only cost space.
    conn.execute(
        "DELETE FROM crls WHERE issuer_id=? AND id NOT IN (SELECT id FROM crls WHERE issuer_id=? ORDER BY id DESC LIMIT 3)",
        (ca_id, ca_id),
    )


def _current_crl_rows(ca: CertificateAuthority) -> list[tuple[str, int, str, str, str]]:
    """(pem, number, this_update, next_update, issuer subject) of the latest CRL of the root and of
    every intermediate still valid -- straight from the inventory, without parsing a 100k-entry CRL."""
    now = ca.clock()
    rows = ca._db().execute(
        "SELECT c.crl_pem, c.number, c.this_update, c.next_update, a.subject, a.not_after"
        " FROM crls c JOIN cas a ON a.id = c.issuer_id"
        " WHERE c.id IN (SELECT MAX(id) FROM crls GROUP BY issuer_id) ORDER BY a.role DESC, a.id"
    )
    return [r[:5] for r in rows if _parse_iso(r[5]) > now]


def current_crls(ca: CertificateAuthority) -> list[x509.CertificateRevocationList]:
    """The latest CRL of the root and of every intermediate still valid."""
    return [x509.load_pem_x509_crl(r[0].encode()) for r in ca._current_crl_rows()]
