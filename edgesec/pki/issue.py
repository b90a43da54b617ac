"""Issuing certificates: one profile-checked path for generated keys, batches and CSRs, and renewal."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from edgesec.audit_sink import Event
from edgesec.errors import AlreadyExists, InputError, NotFound, OperationFailed
from edgesec.pki import secrets
from edgesec.pki.builder import (
    BACKDATE,
    KEY_TYPES,
    PROFILES,
    PrivateKey,
    PublicKey,
    SubjectAltNames,
    build_certificate,
    check_name,
    check_profile_sans,
    check_public_key,
    describe_key,
    generate_key,
    subject_name,
)
from edgesec.pki.csr import (
    _csr_spki,
    _vet_csr,
)
from edgesec.pki.inventory import (
    ClientRequest,
    _iso,
    _spki,
)
from edgesec.pki.publish import STATUS_WINDOW_DAYS
from edgesec.pki.trust import (
    cert_pem,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


def _days(ca: CertificateAuthority, profile: str) -> int:
    return {
        "server": ca.settings.server_days,
        "client": ca.settings.client_days,
        "signing": ca.settings.signing_days,
    }[profile]


def _issue_in_tx(
    ca: CertificateAuthority,
    conn: sqlite3.Connection,
    *,
    profile: str,
    name: str,
    sans: SubjectAltNames,
    public_key: PublicKey | None = None,
    key_type: str | None = None,
    days: int | None = None,
    key_passphrase: bytes | None = None,
    replaces: str | None = None,
    source: str = "generated",
) -> tuple[x509.Certificate, PrivateKey | None]:
    check_name(name)
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; expected server, client or signing")
    if profile == "server" and not (sans.dns or sans.ips):
        raise InputError("a server certificate needs at least one DNS: or IP: SAN", hint="add --san DNS:host")
    check_profile_sans(profile, sans)
    ca.name_constraints().check(sans, common_name=name)
    if replaces is None:
        row = conn.execute(
            "SELECT serial, name FROM certs WHERE name=? COLLATE NOCASE LIMIT 1", (name,)
        ).fetchone()
        if row is not None:
            if row[1] != name:
                raise AlreadyExists(
                    f"a certificate named {row[1]!r} already exists; {name!r} differs from it only in case",
                    hint="one identity, one name: a proxy or policy comparing names without case would mix them",
                )
            raise AlreadyExists(
                f"a certificate named {name!r} already exists (serial {row[0]})",
                hint=f"use `edgesec pki renew {name}` for a new certificate under the same name",
            )
    ca_id, ca_cert, ca_key = ca.signer()
    now = ca.clock()
    life = dt.timedelta(days=days if days is not None else ca._days(profile))
    not_after = min(now + life, ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise OperationFailed("the intermediate CA has expired", hint="run `edgesec pki rotate-intermediate`")
    key: PrivateKey | None = None
    if public_key is None:
        key = generate_key(key_type or ca.settings.key_type)
        public_key = key.public_key()
    org = ca.meta("org") or "edgesec"
    site = ca.meta("site") or None
    cert = build_certificate(
        kind=profile,  # type: ignore[arg-type]
        subject=subject_name(name, org, site),
        public_key=public_key,
        issuer=ca_cert.subject,
        issuer_key=ca_key,
        not_before=now - BACKDATE,
        not_after=not_after,
        sans=sans,
    )
    if (
        ca._status_types is None
        or describe_key(public_key) not in ca._status_types
        or cert.not_valid_after_utc < now + dt.timedelta(days=STATUS_WINDOW_DAYS)
    ):
        ca._status_needed = True
    if replaces is not None:
        conn.execute("UPDATE certs SET current=0 WHERE name=? AND current=1", (name,))
    conn.execute(
        "INSERT INTO certs (serial, name, profile, subject, sans, key_type, not_before, not_after, issuer_id,"
        " cert_pem, key_pem, key_encrypted, source, current, issued_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,1,?)",
        (
            f"{cert.serial_number:x}",
            name,
            profile,
            cert.subject.rfc4514_string(),
            json.dumps(sans.as_strings()),
            describe_key(public_key),
            _iso(cert.not_valid_before_utc),
            _iso(cert.not_valid_after_utc),
            ca_id,
            cert_pem(cert).decode(),
            secrets.key_to_pem(key, key_passphrase).decode() if key is not None else None,
            1 if (key is not None and key_passphrase) else 0,
            source,
            _iso(now),
        ),
    )
    return cert, key


def _issued_event(
    ca: CertificateAuthority,
    cert: x509.Certificate,
    profile: str,
    name: str,
    action: str = "pki.certificate.issued",
) -> Event:
    return ca._event(
        action,
        ("iam",),
        ("creation",),
        f"{profile} certificate {name} issued (serial {cert.serial_number:x})",
        {
            "file.x509.serial_number": f"{cert.serial_number:x}",
            "file.x509.subject.common_name": name,
            "file.x509.not_after": cert.not_valid_after_utc,
            "edgesec.pki.name": name,
            "edgesec.pki.profile": profile,
        },
    )


def issue(
    ca: CertificateAuthority,
    profile: str,
    name: str,
    sans: SubjectAltNames | Sequence[str] = (),
    *,
    key_type: str | None = None,
    days: int | None = None,
    key_passphrase: bytes | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """Generate a key and issue a ``profile`` certificate named ``name``; the key stays in the store.
    A refusal (name, SANs, profile) is an audit event."""
    try:
        s = sans if isinstance(sans, SubjectAltNames) else SubjectAltNames.parse(list(sans))
        check_name(name)
        check_profile_sans(profile, s)
    except InputError as exc:
        ca._audit_refused(profile, name, exc.message)
        raise
    with ca._write(issuing=True) as conn:
        cert, key = ca._issue_in_tx(
            conn,
            profile=profile,
            name=name,
            sans=s,
            key_type=key_type,
            days=days,
            key_passphrase=key_passphrase,
        )
        ca._journal(conn, "issue", [ca._issued_event(cert, profile, name)])
    assert key is not None
    return cert, key


def issue_clients(
    ca: CertificateAuthority, requests: Iterable[ClientRequest], *, skip_existing: bool = False, **kw: Any
) -> list[x509.Certificate]:
    """Batch enrolment: every client certificate in one locked transaction, or none of them. With
    ``skip_existing`` an id that already has a certificate under exactly that name is left out (a batch
    re-run after a partial enrolment); ``last_skipped`` lists them."""
    reqs = list(requests)
    seen: dict[str, str] = {}
    parsed: list[tuple[ClientRequest, SubjectAltNames]] = []
    for i, r in enumerate(reqs, start=1):
        try:
            check_name(r.id)
            items = ([f"email:{r.email}"] if r.email else []) + ([f"URI:{r.uri}"] if r.uri else [])
            parsed.append((r, SubjectAltNames.parse(items)))
        except InputError as exc:
            ca._audit_refused("client", r.id, f"entry {i}: {exc.message}")
            raise InputError(f"entry {i}: {exc.message}", hint=exc.hint) from None
        if r.id.lower() in seen:
            first = seen[r.id.lower()]
            what = "appears twice" if first == r.id else f"differs from {first!r} only in case"
            raise InputError(f"entry {i}: {r.id!r} {what} in the batch")
        seen[r.id.lower()] = r.id
    out: list[x509.Certificate] = []
    issued: list[ClientRequest] = []
    ca.last_skipped = []
    with ca._write(issuing=True) as conn:
        for i, (r, sans) in enumerate(parsed, start=1):
            if (
                skip_existing
                and conn.execute(
                    "SELECT 1 FROM certs WHERE name=? AND profile='client' LIMIT 1", (r.id,)
                ).fetchone()
            ):
                ca.last_skipped.append(r.id)
                continue
            try:
                cert, _ = ca._issue_in_tx(conn, profile="client", name=r.id, sans=sans, **kw)
            except (InputError, AlreadyExists) as exc:
                raise type(exc)(
                    f"entry {i}: {exc.message}; no certificate of the batch was issued", hint=exc.hint
                ) from None
            out.append(cert)
            issued.append(r)
        ca._journal(
            conn,
            "batch issue",
            [ca._issued_event(cert, "client", r.id) for r, cert in zip(issued, out, strict=True)],
        )
    return out


def sign_csr(
    ca: CertificateAuthority,
    csr_data: bytes,
    profile: str,
    *,
    name: str | None = None,
    days: int | None = None,
) -> x509.Certificate:
    """Issue a certificate for a device-generated key, strictly by ``profile``: only the SAN types and
    counts the profile defines, the name policy checked before anything else reads the subject, and
    the device's exact public key (a key the library would re-encode, such as RSA-PSS, is refused).
    Refuses weak keys, CA requests, bad signatures and names outside the name constraints; every
    refusal is an audit event. The key never enters the store."""
    try:
        csr, public_key, sans, cn = _vet_csr(csr_data, profile, name)
    except InputError as exc:
        ca._audit_csr_refused(csr_data, profile, exc.message)
        raise
    ca.signer()
    try:
        with ca._write(issuing=True) as conn:
            cert, _ = ca._issue_in_tx(
                conn, profile=profile, name=cn, sans=sans, public_key=public_key, days=days, source="csr"
            )
            if _spki(cert.public_key()) != _csr_spki(csr):
                raise InputError("the certificate would not carry the CSR's public key exactly as given")
            ca._journal(conn, "sign-csr", [ca._issued_event(cert, profile, cn)])
    except (InputError, AlreadyExists) as exc:
        ca._audit_csr_refused(csr_data, profile, exc.message)
        raise
    return cert


def _audit_refused(ca: CertificateAuthority, profile: str, name: object, reason: str) -> None:
    shown = name if isinstance(name, str) and len(name) <= 64 else repr(name)[:64]
    ca._emit(
        ca._event(
            "pki.certificate.refused",
            ("iam",),
            ("denied",),
            f"{profile} certificate for {shown} refused: {reason}",
            {"event.reason": reason[:300], "edgesec.pki.profile": profile, "edgesec.pki.name": shown},
        )
    )


def _audit_csr_refused(ca: CertificateAuthority, csr_data: bytes, profile: str, reason: str) -> None:
    import hashlib

    ev = ca._event(
        "pki.csr.refused",
        ("iam",),
        ("denied",),
        f"CSR refused ({profile}): {reason}",
        {
            "event.reason": reason[:300],
            "edgesec.pki.profile": profile,
            "edgesec.pki.csr_sha256": hashlib.sha256(csr_data).hexdigest(),
        },
    )
    ca._emit(ev)


def renew(
    ca: CertificateAuthority, name: str, *, revoke_old: bool = False, days: int | None = None
) -> x509.Certificate:
    """A new certificate (and key, unless it came from a CSR) under the same name; history is kept."""
    with ca._write() as conn:
        row = conn.execute(
            "SELECT serial, profile, sans, key_type, cert_pem, source, key_encrypted FROM certs WHERE name=? AND current=1",
            (name,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no certificate named {name!r}")
        old_serial, profile, sans_json, key_type, old_pem, source, key_enc = row
        if key_enc:
            raise InputError(
                "renewing a certificate with an encrypted leaf key is not supported; issue a new one"
            )
        old = x509.load_pem_x509_certificate(old_pem.encode())
        pub = check_public_key(old.public_key()) if source == "csr" else None
        kt = key_type if key_type in KEY_TYPES else None
        cert, _ = ca._issue_in_tx(
            conn,
            profile=profile,
            name=name,
            sans=SubjectAltNames.parse(json.loads(sans_json)),
            public_key=pub,
            key_type=kt,
            days=days,
            replaces=old_serial,
            source=source,
        )
        events = [ca._issued_event(cert, profile, name, action="pki.certificate.renewed")]
        if revoke_old and ca._mark_revoked(conn, old_serial, "superseded"):
            events += [
                ca._revoked_event(old_serial, name, "superseded"),
                ca._crl_event(ca._sign_crls(conn)),
            ]
        ca._journal(conn, "renew", events, publish=revoke_old)
    return cert
