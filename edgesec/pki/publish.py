"""Publishing the trust bundle (root, intermediates, CRLs, manifest), ``status.json`` for the file-reading
pki checks, and the reload hooks that tell servers about a new bundle.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sqlite3
import subprocess
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from edgesec._fs import FileLock, atomic_write
from edgesec.errors import OperationFailed
from edgesec.pki.layout import CA_BUNDLE_FILE, CRL_FILE, INTERMEDIATES_FILE, MANIFEST_FILE, ROOT_FILE
from edgesec.pki.trust import (
    TrustBundle,
    cert_pem,
    utcnow,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


from edgesec.pki.inventory import PublishResult, _fp, _iso, killpoint
from edgesec.pki.layout import LOCK_FILE, STATUS_FILE

STATUS_WINDOW_DAYS = 120


# How many of the latest revocations status.json lists for the check that compares them with the bundle.
STATUS_RECENT_REVOCATIONS = 200


def _write_status(ca: CertificateAuthority, conn: sqlite3.Connection) -> None:
    """Refresh ``status.json``: what the pki checks read (they see the host only through file probes,
    not SQLite). Derived data, rewritten after every committed change, so not fsynced."""
    now = ca.clock()
    horizon = now + dt.timedelta(days=STATUS_WINDOW_DAYS)
    rows = conn.execute(
        "SELECT name, serial, profile, not_after FROM certs WHERE current = 1 AND revoked_at IS NULL"
        " AND not_after < ? ORDER BY not_after",
        (_iso(horizon),),
    ).fetchall()
    types = sorted(
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT key_type FROM certs WHERE current = 1 AND revoked_at IS NULL AND not_after > ?",
            (_iso(now),),
        )
    )
    ca._status_types = set(types)
    doc = {
        "format": 1,
        "written_at": _iso(now),
        "window_days": STATUS_WINDOW_DAYS,
        "expiring": [{"name": r[0], "serial": r[1], "profile": r[2], "not_after": r[3]} for r in rows],
        "valid_key_types": types,
        "publication": ca._expected_publication(conn),
    }
    atomic_write(ca.dir / STATUS_FILE, json.dumps(doc, indent=1) + "\n", mode=0o600, durable=False)
    killpoint("status")


def _expected_publication(ca: CertificateAuthority, conn: sqlite3.Connection) -> dict[str, Any]:
    """What the published bundle must hold, for the check that compares it with the inventory (which
    reads files, not SQLite): the CRL file's digest, the intermediates, the latest revocations."""
    import hashlib

    crl_pem = "".join(r[0] for r in ca._current_crl_rows()).encode("ascii")
    inters = ca.intermediates()
    recent = conn.execute(
        "SELECT c.serial, a.subject, c.name, c.revoked_at FROM certs c JOIN cas a ON a.id = c.issuer_id"
        " WHERE c.revoked_at IS NOT NULL ORDER BY c.revoked_at DESC, c.rowid DESC LIMIT ?",
        (STATUS_RECENT_REVOCATIONS,),
    ).fetchall()
    changed = conn.execute("SELECT MAX(this_update) FROM crls").fetchone()[0]
    return {
        "crl_sha256": hashlib.sha256(crl_pem).hexdigest(),
        "crl_changed_at": changed,
        "intermediates": [_fp(c) for c in inters],
        "active_intermediate": _fp(inters[0]) if inters else None,
        "recent_revocations": [
            {"serial": r[0], "issuer": r[1], "name": r[2], "revoked_at": r[3]} for r in recent
        ],
    }


def trust_bundle(ca: CertificateAuthority) -> TrustBundle:
    """The bundle as the store would publish it now (without reading the published directory)."""
    crls = [c.public_bytes(serialization.Encoding.PEM) for c in ca.current_crls()]
    return TrustBundle.from_parts([ca.root_certificate()], ca.intermediates(), crls)


def publish(ca: CertificateAuthority, *, run_hooks: bool = True) -> PublishResult:
    """Write root, intermediates, CA bundle and CRLs (world-readable) to the trust directory, then run
    the reload hooks. What is published is read under the store lock, so a concurrent change is either
    in it or publishes after it; each file is replaced atomically. A pending publication (and any
    audit event a killed command owed) is finished by it."""
    with ca._tlock:
        with FileLock(ca.dir / LOCK_FILE, timeout=120):
            conn = ca._db()
            ca._ensure_journal(conn)
            ca._drain_journal(conn, recovered=True, publish=True, run_hooks=run_hooks)
    assert ca.last_publication is not None
    return ca.last_publication


def _publish_files(ca: CertificateAuthority) -> PublishResult:
    """Write the bundle files from the inventory; the caller holds the store lock."""
    root = ca.root_certificate()
    inters = ca.intermediates()
    crls = ca._current_crl_rows()
    d = ca.trust_dir
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)  # noqa: S103 - explicit, never the umask: nginx reads it, only we write
    elif d.stat().st_mode & 0o022:
        os.chmod(d, d.stat().st_mode & 0o755)
    root_pem = cert_pem(root)
    inter_pem = b"".join(cert_pem(c) for c in inters)
    crl_pem = "".join(r[0] for r in crls).encode("ascii")
    manifest = {
        "format": 1,
        "published_at": _iso(utcnow()),
        "root": {
            "subject": root.subject.rfc4514_string(),
            "sha256": _fp(root),
            "not_after": _iso(root.not_valid_after_utc),
        },
        "intermediates": [
            {
                "subject": c.subject.rfc4514_string(),
                "sha256": _fp(c),
                "not_after": _iso(c.not_valid_after_utc),
            }
            for c in inters
        ],
        "crls": [
            {"issuer": issuer, "number": number, "this_update": this_update, "next_update": next_update}
            for _, number, this_update, next_update, issuer in crls
        ],
    }
    # The CRL goes first and the manifest last, so a reader that sees a new manifest sees its files.
    for name, data in (
        (CRL_FILE, crl_pem),
        (INTERMEDIATES_FILE, inter_pem),
        (ROOT_FILE, root_pem),
        (CA_BUNDLE_FILE, root_pem + inter_pem),
        (MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode()),
    ):
        atomic_write(d / name, data, mode=0o644)
        killpoint(f"publish {name}")
    return PublishResult(d, [ROOT_FILE, INTERMEDIATES_FILE, CA_BUNDLE_FILE, CRL_FILE, MANIFEST_FILE], [])


def run_reload_hooks(ca: CertificateAuthority) -> list[dict[str, Any]]:
    """Run each configured hook (argv split like a shell, no shell); a failing hook raises after all ran."""
    results: list[dict[str, Any]] = []
    for hook in ca.settings.reload_hooks:
        argv = shlex.split(hook)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            results.append({"hook": hook, "exit_code": p.returncode, "stderr": p.stderr.strip()[-500:]})
        except (OSError, subprocess.TimeoutExpired) as exc:
            results.append({"hook": hook, "exit_code": None, "stderr": str(exc)})
    ca.hook_results = results
    failed = [r for r in results if r["exit_code"] != 0]
    if failed:
        f = failed[0]
        raise OperationFailed(
            f"trust bundle published, but reload hook {f['hook']!r} failed: {f['stderr'] or f['exit_code']}",
            hint="fix the hook, then run `edgesec pki crl` to publish and reload again",
        )
    return results
