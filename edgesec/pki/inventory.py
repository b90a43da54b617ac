"""The CA inventory: its SQLite schema, the write transaction and its journal (what a change owes the outside
world once committed: audit events, a publication), recovery of a killed command, and the certificate records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import signal
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from edgesec._fs import FileLock, atomic_write
from edgesec.audit_sink import Event, sink
from edgesec.errors import InputError, NotFound
from edgesec.pki.builder import (
    PublicKey,
)
from edgesec.pki.layout import INTERMEDIATE_PREFIX
from edgesec.pki.trust import (
    cert_pem,
    utcnow,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


from edgesec.pki.layout import CA_DIR, DB_FILE, LOCK_FILE, PENDING_FILE

SCHEMA_VERSION = 1


_CONSTANT_META = frozenset({"org", "site", "key_type", "name_constraints", "encrypted", "offline_root"})


KILLPOINT_ENV = "EDGESEC_KILLPOINT"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cas (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('root', 'intermediate')),
    serial TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    key_file TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    subject TEXT NOT NULL,
    sans TEXT NOT NULL,
    key_type TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issuer_id INTEGER NOT NULL REFERENCES cas(id),
    cert_pem TEXT NOT NULL,
    key_pem TEXT,
    key_encrypted INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    current INTEGER NOT NULL,
    revoked_at TEXT,
    revocation_reason TEXT,
    issued_at TEXT NOT NULL,
    paths TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX IF NOT EXISTS certs_current_name ON certs(name) WHERE current = 1;
CREATE INDEX IF NOT EXISTS certs_name ON certs(name);
CREATE INDEX IF NOT EXISTS certs_name_nocase ON certs(name COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS certs_revoked ON certs(issuer_id) WHERE revoked_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS certs_expiry ON certs(not_after) WHERE current = 1 AND revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    publish INTEGER NOT NULL,
    events TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS crls (
    id INTEGER PRIMARY KEY,
    issuer_id INTEGER NOT NULL REFERENCES cas(id),
    number INTEGER NOT NULL,
    this_update TEXT NOT NULL,
    next_update TEXT NOT NULL,
    crl_pem TEXT NOT NULL,
    entries INTEGER NOT NULL
);
"""


_JOURNAL_SQL = (
    "CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, action TEXT NOT NULL,"
    " publish INTEGER NOT NULL, events TEXT, created_at TEXT NOT NULL)"
)


_killpoints_seen = 0


def killpoint(label: str) -> None:
    """A test hook at every write step of the CA: with ``$EDGESEC_KILLPOINT=N`` the process kills itself
    (SIGKILL, nothing runs after it) at the N-th step; ``$EDGESEC_KILLPOINT_LOG`` names a file that gets
    one line per step reached (how a test learns how many steps a command has)."""
    spec = os.environ.get(KILLPOINT_ENV)
    if not spec:
        return
    global _killpoints_seen
    _killpoints_seen += 1
    log = os.environ.get(KILLPOINT_ENV + "_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{_killpoints_seen} {label}\n")
    if spec.isdigit() and _killpoints_seen == int(spec):
        os.kill(os.getpid(), signal.SIGKILL)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


def _parse_iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def parse_serial(text: str) -> str | None:
    """A serial typed by a person (hex, optional ``0x`` or colons) as our canonical lower-case hex."""
    t = text.strip().lower().replace(":", "")
    if t.startswith("0x"):
        t = t[2:]
    if not t or len(t) > 40 or any(c not in "0123456789abcdef" for c in t):
        return None
    return f"{int(t, 16):x}"


@dataclass(frozen=True)
class CertRecord:
    """One row of the inventory: a certificate ever issued."""

    name: str
    profile: str
    serial: str
    subject: str
    sans: list[str]
    key_type: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str  # valid | expired | revoked
    current: bool
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    issued_at: dt.datetime
    source: str  # generated | csr
    has_key: bool
    issuer: str
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile,
            "serial": self.serial,
            "subject": self.subject,
            "sans": self.sans,
            "key_type": self.key_type,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "status": self.status,
            "current": self.current,
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
            "issued_at": _iso(self.issued_at),
            "source": self.source,
            "key_in_store": self.has_key,
            "issuer": self.issuer,
            "paths": self.paths,
        }


@dataclass(frozen=True)
class ClientRequest:
    """One row of a batch enrolment."""

    id: str
    email: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class PublishResult:
    """What a trust-bundle publication wrote and which reload hooks ran."""

    directory: Path
    files: list[str]
    hooks: list[dict[str, Any]]


def operational_error(
    exc: BaseException, *, store: Path | None = None, committed: bool = False
) -> InputError:
    """An OS or SQLite failure as the one line an operator acts on: the cause (disk full, permission,
    read-only, damaged store) and whether anything changed."""
    import errno as errno_

    after = (
        "the change is recorded; the next `edgesec pki` command finishes it"
        if committed
        else "nothing was changed"
    )
    where = f" ({store / DB_FILE})" if store is not None else ""
    hint: str | None = None
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        low = text.lower()
        if "malformed" in low or "not a database" in low or "corrupt" in low:
            msg = f"the CA inventory is damaged{where}: {text}"
            hint = "restore the store from a backup (`edgesec pki restore`)"
        elif "full" in low:
            msg = f"no space left for the CA inventory{where}"
        elif "readonly" in low or "read-only" in low:
            msg = f"the CA store is read-only{where}"
        elif "unable to open" in low:
            msg = f"cannot open the CA inventory{where} (permission denied or missing)"
            hint = "run as the user that owns the CA store (usually root)"
        else:
            msg = f"the CA inventory{where} failed: {text}"
    elif isinstance(exc, OSError):
        name = f": {exc.filename}" if exc.filename else ""
        cause = {
            errno_.ENOSPC: "no space left on device",
            errno_.EDQUOT: "disk quota exceeded",
            errno_.EROFS: "read-only file system",
            errno_.EACCES: "permission denied",
            errno_.EPERM: "operation not permitted",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        msg = f"{cause}{name}"
        if exc.errno in (errno_.EACCES, errno_.EPERM):
            hint = "run as the user that owns the CA store (usually root)"
    else:
        msg = str(exc)
    return InputError(f"{msg}; {after}", hint=hint)


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _spki(key: PublicKey | Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@contextlib.contextmanager
def _write(ca: CertificateAuthority, *, issuing: bool = False) -> Iterator[sqlite3.Connection]:
    """The file lock plus one immediate transaction: all or nothing, one writer at a time.

    What the transaction put in the journal (audit events, a publication) is done after the commit,
    still under the lock; the reload hooks run after the lock is released. ``status.json`` is refreshed
    after the commit, except after plain issuance that changes nothing the checks read (a certificate
    expiring beyond the status window, of a key type already listed).
    """
    with ca._tlock:
        try:
            lock = FileLock(ca.dir / LOCK_FILE, timeout=120)
            lock.acquire()
        except OSError as exc:
            raise operational_error(exc, store=ca.dir) from None
        try:
            ca._status_needed = not issuing
            ca._journal_rows = 0
            ca._journal_publish = False
            try:
                conn = ca._db()
                ca._ensure_journal(conn)
                conn.execute("BEGIN IMMEDIATE")
            except (OSError, sqlite3.Error) as exc:
                raise operational_error(exc, store=ca.dir) from None
            try:
                yield conn
                if ca._journal_publish:
                    ca._write_pending_marker()
                killpoint("before-commit")
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, OSError | sqlite3.Error):
                    raise operational_error(exc, store=ca.dir) from None
                raise
            killpoint("commit")
            try:
                if ca._status_needed or ca._journal_publish:
                    ca._write_status(conn)
                if ca._journal_rows:
                    ca._drain_journal(conn, recovered=False)
            except (OSError, sqlite3.Error) as exc:
                raise operational_error(exc, store=ca.dir, committed=True) from None
        finally:
            lock.release()


def _ensure_journal(ca: CertificateAuthority, conn: sqlite3.Connection) -> None:
    """Stores created before the journal existed get its (empty) table on their first write."""
    if not ca._journal_ready:
        conn.execute(_JOURNAL_SQL)
        conn.execute("CREATE INDEX IF NOT EXISTS certs_name_nocase ON certs(name COLLATE NOCASE)")
        ca._journal_ready = True


def _journal(
    ca: CertificateAuthority,
    conn: sqlite3.Connection,
    action: str,
    events: Sequence[Event],
    *,
    publish: bool = False,
) -> None:
    """Record, in the open transaction, what this change owes once committed: its audit events and,
    with ``publish``, a publication of the trust bundle."""
    to_document = sink().document
    docs = [to_document(ev) for ev in events]
    cur = conn.execute(
        "INSERT INTO journal (action, publish, events, created_at) VALUES (?,?,?,?)",
        (action, 1 if publish else 0, json.dumps(docs, default=str), _iso(utcnow())),
    )
    if cur.lastrowid is not None:
        ca._own_journal.add(cur.lastrowid)
    ca._journal_rows += 1
    ca._journal_publish = ca._journal_publish or publish


def _write_pending_marker(ca: CertificateAuthority) -> None:
    atomic_write(
        ca.dir / PENDING_FILE,
        json.dumps({"since": _iso(utcnow()), "pid": os.getpid()}) + "\n",
        mode=0o600,
    )
    killpoint("pending-marker")


def _drain_journal(
    ca: CertificateAuthority,
    conn: sqlite3.Connection,
    *,
    recovered: bool,
    publish: bool = False,
    run_hooks: bool = True,
) -> None:
    """Do what the journal holds (lock held): write the audit events, publish and run the reload
    hooks, then clear it.

    Events first, so a publication that fails (read-only or full trust directory) loses none; its
    journal row and the pending marker stay until a later command publishes and the servers have
    reloaded (a failing hook leaves them too)."""
    rows = conn.execute("SELECT id, action, publish, events FROM journal ORDER BY id").fetchall()
    docs: list[dict[str, Any]] = []
    for id_, action, _pub, events in rows:
        if events:
            for d in json.loads(events):
                if recovered or id_ not in ca._own_journal:
                    d.setdefault("edgesec", {}).setdefault("pki", {})["recovered"] = True
                    d["message"] = f"{d.get('message', action)} (recorded late: the command was interrupted)"
                docs.append(d)
    must_publish = publish or any(r[2] for r in rows) or (ca.dir / PENDING_FILE).exists()
    # The journal's own clean-up need not wait for the disk: a kill (the process dies, the OS keeps the
    # WAL) loses nothing; only a power cut before the next checkpoint could bring a row back, and its
    # events would be written again, marked recovered.
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        ca._drain_rows(conn, rows, docs, must_publish=must_publish, run_hooks=run_hooks)
    finally:
        conn.execute("PRAGMA synchronous=FULL")


def _drain_rows(
    ca: CertificateAuthority,
    conn: sqlite3.Connection,
    rows: list[tuple[int, str, int, str | None]],
    docs: list[dict[str, Any]],
    *,
    must_publish: bool,
    run_hooks: bool,
) -> None:
    if docs:
        ca._emit_documents(docs)
        killpoint("audit-written")
        if must_publish:  # the publication may fail: its row stays, without the events written
            conn.execute("UPDATE journal SET events=NULL WHERE id <= ?", (rows[-1][0],))
            killpoint("audit-cleared")
    if must_publish:
        try:
            ca.last_publication = ca._publish_files()
        except OSError as exc:
            raise InputError(
                f"the change is recorded, but publishing the trust bundle to {ca.trust_dir} failed: "
                f"{exc.strerror or exc}",
                hint="fix the trust directory; the next `edgesec pki` command (or `edgesec pki publish`) "
                "publishes it",
            ) from None
        if run_hooks:
            hooks = ca.run_reload_hooks()
            ca.last_publication = PublishResult(
                ca.last_publication.directory, ca.last_publication.files, hooks
            )
            killpoint("reload hooks")
    if rows:
        conn.execute("DELETE FROM journal WHERE id <= ?", (rows[-1][0],))
        ca._own_journal.clear()
        killpoint("journal-cleared")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ca.dir / PENDING_FILE)
        killpoint("pending-cleared")


def _emit_documents(ca: CertificateAuthority, docs: Sequence[dict[str, Any]]) -> None:
    """Audit documents written as one group commit: durable on return."""
    sink().write(docs)


def needs_recovery(ca: CertificateAuthority) -> bool:
    """Whether a killed command left something to finish (cheap: a stat, a glob and one query)."""
    if (ca.dir / PENDING_FILE).exists() or ca._orphan_files():
        return True
    try:
        row = ca._db().execute("SELECT COUNT(*) FROM journal").fetchone()
    except sqlite3.OperationalError:
        return False  # a store from before the journal: nothing journaled
    return bool(row and row[0])


def _orphan_files(ca: CertificateAuthority) -> list[Path]:
    """Files no committed state refers to: temporary files of interrupted atomic writes, and the
    certificate and key of an intermediate whose rotation was killed before its commit."""
    out: list[Path] = []
    cadir = ca.dir / CA_DIR
    for d in (cadir, ca.trust_dir, ca.dir):
        if d.is_dir():
            out += [p for p in d.glob(".*.tmp") if p.is_file()]
    files = list(cadir.glob(INTERMEDIATE_PREFIX + "*")) if cadir.is_dir() else []
    if files:
        keys = {r[0] for r in ca._db().execute("SELECT key_file FROM cas WHERE key_file IS NOT NULL")}
        used = keys | {k[: -len(".key")] + ".pem" for k in keys}
        out += [p for p in files if p.name not in used]
    return out


def recover(ca: CertificateAuthority) -> list[str]:
    """Finish what a killed command left, under the lock: write its missing audit events (marked as
    recovered), publish the trust bundle it did not publish, remove its orphan files. Returns what
    was done (empty when nothing was left). Needs no passphrase."""
    if not ca.needs_recovery():
        return []
    done: list[str] = []
    with ca._tlock:
        with FileLock(ca.dir / LOCK_FILE, timeout=120):
            conn = ca._db()
            ca._ensure_journal(conn)
            for p in ca._orphan_files():
                p.unlink(missing_ok=True)
                done.append(f"removed orphan file {p}")
            rows = conn.execute("SELECT action, publish, events IS NOT NULL FROM journal").fetchall()
            pending = (ca.dir / PENDING_FILE).exists()
            if rows or pending:
                ca._write_status(conn)
                done += [f"finished the interrupted {r[0]}" for r in rows]
                if pending or any(r[1] for r in rows):
                    done.append(f"published the trust bundle to {ca.trust_dir}")
                ca._drain_journal(conn, recovered=True, publish=pending)
    ca.recovered = done
    if done:
        ca._audit(
            "pki.store.recovered",
            ("configuration",),
            ("change",),
            "finished what an interrupted CA command left: " + "; ".join(done),
            {"edgesec.pki.recovered_steps": done},
        )
    return done


def meta(ca: CertificateAuthority, key: str, default: str | None = None) -> str | None:
    # Settled at init and never changed afterwards: cache them.
    if key in _CONSTANT_META and key in ca._meta_cache:
        return ca._meta_cache[key]
    row = ca._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row and key in _CONSTANT_META:
        ca._meta_cache[key] = row[0]
    return row[0] if row else default


def _find(ca: CertificateAuthority, conn: sqlite3.Connection, name_or_serial: str) -> tuple[str, str]:
    row = conn.execute(
        "SELECT serial, name FROM certs WHERE name=? AND current=1", (name_or_serial,)
    ).fetchone()
    if row is None:
        s = parse_serial(name_or_serial)
        if s is not None:
            row = conn.execute("SELECT serial, name FROM certs WHERE serial=?", (s,)).fetchone()
    if row is None:
        raise NotFound(f"no certificate with name or serial {name_or_serial!r}")
    return row[0], row[1]


def _record(ca: CertificateAuthority, row: Sequence[Any], now: dt.datetime) -> CertRecord:
    not_after = _parse_iso(row[7])
    status = "revoked" if row[9] else ("expired" if not_after <= now else "valid")
    return CertRecord(
        name=row[0],
        profile=row[1],
        serial=row[2],
        subject=row[3],
        sans=json.loads(row[4]),
        key_type=row[5],
        not_before=_parse_iso(row[6]),
        not_after=not_after,
        status=status,
        current=bool(row[8]),
        revoked_at=_parse_iso(row[9]) if row[9] else None,
        revocation_reason=row[10],
        issued_at=_parse_iso(row[11]),
        source=row[12],
        has_key=bool(row[13]),
        issuer=row[14],
        paths=json.loads(row[15]),
    )


def list_certificates(
    ca: CertificateAuthority, *, expiring_days: int | None = None, include_history: bool = True
) -> list[CertRecord]:
    """Every certificate ever issued (oldest first); with ``expiring_days``, only current valid ones
    whose notAfter falls within that many days."""
    now = ca.clock()
    q = f"SELECT {ca._COLS} FROM certs c JOIN cas a ON a.id = c.issuer_id"  # noqa: S608 - constant columns
    if not include_history:
        q += " WHERE c.current = 1"
    rows = ca._db().execute(q + " ORDER BY c.issued_at, c.rowid").fetchall()
    recs = [ca._record(r, now) for r in rows]
    if expiring_days is not None:
        limit = now + dt.timedelta(days=expiring_days)
        recs = [r for r in recs if r.current and r.status == "valid" and r.not_after <= limit]
    return recs


def records(ca: CertificateAuthority, serials: Sequence[str]) -> list[CertRecord]:
    """Inventory records of many serials in one query (order kept; unknown serials are skipped)."""
    now = ca.clock()
    q = f"SELECT {ca._COLS}, c.serial FROM certs c JOIN cas a ON a.id = c.issuer_id"  # noqa: S608
    by_serial = {}
    conn = ca._db()
    for i in range(0, len(serials), 500):
        chunk = list(serials[i : i + 500])
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"{q} WHERE c.serial IN ({marks})", chunk):
            by_serial[row[-1]] = ca._record(row, now)
    return [by_serial[s] for s in serials if s in by_serial]


def get(ca: CertificateAuthority, name_or_serial: str) -> CertRecord:
    serial, _ = ca._find(ca._db(), name_or_serial)
    row = (
        ca._db()
        .execute(
            f"SELECT {ca._COLS} FROM certs c JOIN cas a ON a.id = c.issuer_id WHERE c.serial=?",  # noqa: S608
            (serial,),
        )
        .fetchone()
    )
    return ca._record(row, ca.clock())


def certificate(ca: CertificateAuthority, name_or_serial: str) -> x509.Certificate:
    serial, _ = ca._find(ca._db(), name_or_serial)
    row = ca._db().execute("SELECT cert_pem FROM certs WHERE serial=?", (serial,)).fetchone()
    return x509.load_pem_x509_certificate(row[0].encode())


def _insert_ca(
    conn: sqlite3.Connection, cert: x509.Certificate, role: str, key_file: str | None, now: dt.datetime
) -> None:
    conn.execute(
        "INSERT INTO cas (role, serial, fingerprint, subject, not_before, not_after, cert_pem, key_file, status, created_at)"
        " VALUES (?,?,?,?,?,?,?,?, 'active', ?)",
        (
            role,
            f"{cert.serial_number:x}",
            _fp(cert),
            cert.subject.rfc4514_string(),
            _iso(cert.not_valid_before_utc),
            _iso(cert.not_valid_after_utc),
            cert_pem(cert).decode(),
            key_file,
            _iso(now),
        ),
    )
