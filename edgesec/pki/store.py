"""The on-disk CA store: keys, certificates, the inventory, CRLs and trust-bundle publication.

Layout of the store directory (0700)::

    inventory.db        SQLite (WAL, synchronous=FULL): every certificate ever issued, leaf keys, CRLs
    lock                flock taken around every write, shared by every process on the host
    ca/root.pem         the root certificate
    ca/root.key         the root key (encrypted PKCS#8) -- absent with an offline root
    ca/intermediate-N.pem / .key   each intermediate the store ever had (N = 1, 2, ... after rotations)
    status.json         what the pki checks read: expiring leaves, key types (derived; refreshed on change)

Crash safety: ``init`` builds the whole store (with its first CRLs) in a temporary directory and renames
it into place, so a killed ``init`` leaves no store at all (the next ``init`` removes its leftovers, an
orphan offline root key included); every later change is one SQLite transaction taken under the lock (new
CA files are written atomically, before the transaction that refers to them; a revocation and the CRL that
lists it are one transaction), so a ``kill -9`` at any point leaves the previous consistent state or the
next one.

What a change owes the outside world -- its audit events and, for revocations, CRLs and rotations, a new
publication of the trust bundle -- is written into the ``journal`` table in the same transaction and done
after the commit; a publishing change also leaves ``publish.pending`` in the store until the bundle is
out, so the file-reading ``pki.crl-freshness`` check sees it. :meth:`CertificateAuthority.recover`
(run by every ``edgesec pki`` command) finishes what a killed command left: it publishes, writes the
missing audit events (marked ``edgesec.pki.recovered``) and removes orphan files of a killed rotation.
``$EDGESEC_KILLPOINT=N`` (a test hook) makes the process SIGKILL itself at the N-th write step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.utils import CryptographyDeprecationWarning

from edgesec._fs import FileLock, atomic_write, ensure_private_dir, fsync_dir
from edgesec.audit_sink import Event, sink
from edgesec.errors import AlreadyExists, InputError, NotFound, OperationFailed, VerificationError
from edgesec.pki import secrets
from edgesec.pki.builder import (
    KEY_TYPES,
    PROFILES,
    NameConstraints,
    PrivateKey,
    PublicKey,
    SubjectAltNames,
    build_certificate,
    check_name,
    check_profile_sans,
    check_public_key,
    common_name,
    describe_key,
    generate_key,
    signature_hash,
    subject_name,
)
from edgesec.pki.settings import PkiSettings
from edgesec.pki.trust import (
    CA_BUNDLE_FILE,
    CRL_FILE,
    INTERMEDIATES_FILE,
    MANIFEST_FILE,
    ROOT_FILE,
    TrustBundle,
    cert_pem,
    utcnow,
)

SCHEMA_VERSION = 1
_CONSTANT_META = frozenset({"org", "site", "key_type", "name_constraints", "encrypted", "offline_root"})
DB_FILE = "inventory.db"
STATUS_FILE = "status.json"
STATUS_WINDOW_DAYS = 120
# Re-sign the root's CRL (when the root key is online) once it has less than this left.
ROOT_CRL_RENEW_DAYS = 30
LOCK_FILE = "lock"
INIT_LOCK_FILE = ".pki-init.lock"
INIT_TMP_PREFIX = ".pki-init-"
OFFLINE_FILES = "offline-files.json"
RESTORE_TMP_PREFIX = ".pki-restore-"
PENDING_FILE = "publish.pending"
CA_DIR = "ca"
KILLPOINT_ENV = "EDGESEC_KILLPOINT"
# How many of the latest revocations status.json lists for the check that compares them with the bundle.
STATUS_RECENT_REVOCATIONS = 200
# Backdate notBefore a little so a client whose clock runs slightly behind still accepts a fresh cert.
BACKDATE = dt.timedelta(minutes=5)

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}

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


def _store_dir(path: Path, exact: bool = False) -> Path:
    """The store directory for a path that names either an edgesec home or a store (``exact``: a store)."""
    if exact and not (path / DB_FILE).exists() and (path / "pki" / DB_FILE).exists():
        # a configured store_dir that names the home holding the store: accept it rather than fail
        return path / "pki"
    if exact or (path / DB_FILE).exists() or path.name == "pki":
        return path
    return path / "pki"


class CertificateAuthority:
    """The site CA: open it with :meth:`open` (or create it with :meth:`init`), then issue, revoke, renew.

    The object caches the decrypted intermediate key after the first signature; it is safe to use from
    several threads, and several processes may use the same store at once (writes take a file lock).
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        settings: PkiSettings | None = None,
        trust_dir: Path | None = None,
        passphrase: secrets.PassphraseSource = None,
        clock: Callable[[], dt.datetime] = utcnow,
        root_passphrase: secrets.PassphraseSource = None,
    ) -> None:
        self.dir = Path(store_dir)
        self.settings = settings or PkiSettings()
        self.trust_dir = Path(trust_dir) if trust_dir else self.dir.parent / "trust"
        self._passphrase_source = passphrase
        self._root_passphrase_source = root_passphrase
        self._root_passphrase: bytes | None = None
        self._passphrase: bytes | None = None
        self._signer: tuple[int, x509.Certificate, PrivateKey] | None = None
        self._tlock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.clock = clock
        self.hook_results: list[dict[str, Any]] = []
        self._operator: str | None = None
        self._meta_cache: dict[str, str] = {}
        self._status_needed = True
        self._status_types: set[str] | None = None
        self._journal_rows = 0
        self._journal_publish = False
        self._journal_ready = False
        self._own_journal: set[int] = set()
        self._verified: set[str] = set()  # fingerprints of CA certificates whose signature was checked
        self.last_publication: PublishResult | None = None
        self.recovered: list[str] = []

    # --- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        home_or_store_dir: str | os.PathLike[str],
        *,
        passphrase: secrets.PassphraseSource = None,
        settings: PkiSettings | None = None,
        trust_dir: str | os.PathLike[str] | None = None,
        exact: bool = False,
    ) -> CertificateAuthority:
        """Open an existing store, given the edgesec home or the store directory itself (a directory named
        ``pki`` or holding an inventory; ``exact=True``: the path is the store directory, whatever its name)."""
        d = _store_dir(Path(home_or_store_dir), exact)
        if not (d / DB_FILE).is_file():
            raise NotFound(f"no CA store in {d}", hint="run `edgesec pki init --org ORG` first")
        ca = cls(
            d, settings=settings, trust_dir=Path(trust_dir) if trust_dir else None, passphrase=passphrase
        )
        ca._check_schema()
        return ca

    @classmethod
    def exists(cls, home_or_store_dir: str | os.PathLike[str], *, exact: bool = False) -> bool:
        return (_store_dir(Path(home_or_store_dir), exact) / DB_FILE).is_file()

    def close(self) -> None:
        with self._tlock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> CertificateAuthority:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.dir / DB_FILE, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns (WAL fsync per transaction).
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
        return self._conn

    def _check_schema(self) -> None:
        try:
            row = self._db().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise operational_error(exc, store=self.dir) from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise InputError(f"the CA inventory {self.dir / DB_FILE} has an unknown schema version")

    @contextlib.contextmanager
    def _write(self, *, issuing: bool = False) -> Iterator[sqlite3.Connection]:
        """The file lock plus one immediate transaction: all or nothing, one writer at a time.

        What the transaction put in the journal (audit events, a publication) is done after the commit,
        still under the lock; the reload hooks run after the lock is released. ``status.json`` is refreshed
        after the commit, except after plain issuance that changes nothing the checks read (a certificate
        expiring beyond the status window, of a key type already listed).
        """
        with self._tlock:
            try:
                lock = FileLock(self.dir / LOCK_FILE, timeout=120)
                lock.acquire()
            except OSError as exc:
                raise operational_error(exc, store=self.dir) from None
            try:
                self._status_needed = not issuing
                self._journal_rows = 0
                self._journal_publish = False
                try:
                    conn = self._db()
                    self._ensure_journal(conn)
                    conn.execute("BEGIN IMMEDIATE")
                except (OSError, sqlite3.Error) as exc:
                    raise operational_error(exc, store=self.dir) from None
                try:
                    yield conn
                    if self._journal_publish:
                        self._write_pending_marker()
                    killpoint("before-commit")
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    if isinstance(exc, OSError | sqlite3.Error):
                        raise operational_error(exc, store=self.dir) from None
                    raise
                killpoint("commit")
                try:
                    if self._status_needed or self._journal_publish:
                        self._write_status(conn)
                    if self._journal_rows:
                        self._drain_journal(conn, recovered=False)
                except (OSError, sqlite3.Error) as exc:
                    raise operational_error(exc, store=self.dir, committed=True) from None
            finally:
                lock.release()

    def _ensure_journal(self, conn: sqlite3.Connection) -> None:
        """Stores created before the journal existed get its (empty) table on their first write."""
        if not self._journal_ready:
            conn.execute(_JOURNAL_SQL)
            conn.execute("CREATE INDEX IF NOT EXISTS certs_name_nocase ON certs(name COLLATE NOCASE)")
            self._journal_ready = True

    def _journal(
        self, conn: sqlite3.Connection, action: str, events: Sequence[Event], *, publish: bool = False
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
            self._own_journal.add(cur.lastrowid)
        self._journal_rows += 1
        self._journal_publish = self._journal_publish or publish

    def _write_pending_marker(self) -> None:
        atomic_write(
            self.dir / PENDING_FILE,
            json.dumps({"since": _iso(utcnow()), "pid": os.getpid()}) + "\n",
            mode=0o600,
        )
        killpoint("pending-marker")

    def _drain_journal(
        self, conn: sqlite3.Connection, *, recovered: bool, publish: bool = False, run_hooks: bool = True
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
                    if recovered or id_ not in self._own_journal:
                        d.setdefault("edgesec", {}).setdefault("pki", {})["recovered"] = True
                        d["message"] = (
                            f"{d.get('message', action)} (recorded late: the command was interrupted)"
                        )
                    docs.append(d)
        must_publish = publish or any(r[2] for r in rows) or (self.dir / PENDING_FILE).exists()
        # The journal's own clean-up need not wait for the disk: a kill (the process dies, the OS keeps the
        # WAL) loses nothing; only a power cut before the next checkpoint could bring a row back, and its
        # events would be written again, marked recovered.
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            self._drain_rows(conn, rows, docs, must_publish=must_publish, run_hooks=run_hooks)
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def _drain_rows(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[int, str, int, str | None]],
        docs: list[dict[str, Any]],
        *,
        must_publish: bool,
        run_hooks: bool,
    ) -> None:
        if docs:
            self._emit_documents(docs)
            killpoint("audit-written")
            if must_publish:  # the publication may fail: its row stays, without the events written
                conn.execute("UPDATE journal SET events=NULL WHERE id <= ?", (rows[-1][0],))
                killpoint("audit-cleared")
        if must_publish:
            try:
                self.last_publication = self._publish_files()
            except OSError as exc:
                raise InputError(
                    f"the change is recorded, but publishing the trust bundle to {self.trust_dir} failed: "
                    f"{exc.strerror or exc}",
                    hint="fix the trust directory; the next `edgesec pki` command (or `edgesec pki publish`) "
                    "publishes it",
                ) from None
            if run_hooks:
                hooks = self.run_reload_hooks()
                self.last_publication = PublishResult(
                    self.last_publication.directory, self.last_publication.files, hooks
                )
                killpoint("reload hooks")
        if rows:
            conn.execute("DELETE FROM journal WHERE id <= ?", (rows[-1][0],))
            self._own_journal.clear()
            killpoint("journal-cleared")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / PENDING_FILE)
            killpoint("pending-cleared")

    def _emit_documents(self, docs: Sequence[dict[str, Any]]) -> None:
        """Audit documents written as one group commit: durable on return."""
        sink().write(docs)

    def needs_recovery(self) -> bool:
        """Whether a killed command left something to finish (cheap: a stat, a glob and one query)."""
        if (self.dir / PENDING_FILE).exists() or self._orphan_files():
            return True
        try:
            row = self._db().execute("SELECT COUNT(*) FROM journal").fetchone()
        except sqlite3.OperationalError:
            return False  # a store from before the journal: nothing journaled
        return bool(row and row[0])

    def _orphan_files(self) -> list[Path]:
        """Files no committed state refers to: temporary files of interrupted atomic writes, and the
        certificate and key of an intermediate whose rotation was killed before its commit."""
        out: list[Path] = []
        cadir = self.dir / CA_DIR
        for d in (cadir, self.trust_dir, self.dir):
            if d.is_dir():
                out += [p for p in d.glob(".*.tmp") if p.is_file()]
        files = list(cadir.glob("intermediate-*")) if cadir.is_dir() else []
        if files:
            keys = {r[0] for r in self._db().execute("SELECT key_file FROM cas WHERE key_file IS NOT NULL")}
            used = keys | {k[: -len(".key")] + ".pem" for k in keys}
            out += [p for p in files if p.name not in used]
        return out

    def recover(self) -> list[str]:
        """Finish what a killed command left, under the lock: write its missing audit events (marked as
        recovered), publish the trust bundle it did not publish, remove its orphan files. Returns what
        was done (empty when nothing was left). Needs no passphrase."""
        if not self.needs_recovery():
            return []
        done: list[str] = []
        with self._tlock:
            with FileLock(self.dir / LOCK_FILE, timeout=120):
                conn = self._db()
                self._ensure_journal(conn)
                for p in self._orphan_files():
                    p.unlink(missing_ok=True)
                    done.append(f"removed orphan file {p}")
                rows = conn.execute("SELECT action, publish, events IS NOT NULL FROM journal").fetchall()
                pending = (self.dir / PENDING_FILE).exists()
                if rows or pending:
                    self._write_status(conn)
                    done += [f"finished the interrupted {r[0]}" for r in rows]
                    if pending or any(r[1] for r in rows):
                        done.append(f"published the trust bundle to {self.trust_dir}")
                    self._drain_journal(conn, recovered=True, publish=pending)
        self.recovered = done
        if done:
            self._audit(
                "pki.store.recovered",
                ("configuration",),
                ("change",),
                "finished what an interrupted CA command left: " + "; ".join(done),
                {"edgesec.pki.recovered_steps": done},
            )
        return done

    def _write_status(self, conn: sqlite3.Connection) -> None:
        """Refresh ``status.json``: what the pki checks read (they see the host only through file probes,
        not SQLite). Derived data, rewritten after every committed change, so not fsynced."""
        now = self.clock()
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
        self._status_types = set(types)
        doc = {
            "format": 1,
            "written_at": _iso(now),
            "window_days": STATUS_WINDOW_DAYS,
            "expiring": [{"name": r[0], "serial": r[1], "profile": r[2], "not_after": r[3]} for r in rows],
            "valid_key_types": types,
            "publication": self._expected_publication(conn),
        }
        atomic_write(self.dir / STATUS_FILE, json.dumps(doc, indent=1) + "\n", mode=0o600, durable=False)
        killpoint("status")

    def _expected_publication(self, conn: sqlite3.Connection) -> dict[str, Any]:
        """What the published bundle must hold, for the check that compares it with the inventory (which
        reads files, not SQLite): the CRL file's digest, the intermediates, the latest revocations."""
        import hashlib

        crl_pem = "".join(r[0] for r in self._current_crl_rows()).encode("ascii")
        inters = self.intermediates()
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

    def meta(self, key: str, default: str | None = None) -> str | None:
        # Settled at init and never changed afterwards: cache them.
        if key in _CONSTANT_META and key in self._meta_cache:
            return self._meta_cache[key]
        row = self._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row and key in _CONSTANT_META:
            self._meta_cache[key] = row[0]
        return row[0] if row else default

    # --- passphrase and keys -------------------------------------------------------------------------

    def _get_passphrase(self) -> bytes | None:
        if self._passphrase is None:
            src = self._passphrase_source
            if callable(src):
                self._passphrase = src()
            else:
                self._passphrase = secrets.resolve_passphrase(src, config_file=self.settings.passphrase_file)
        return self._passphrase

    def use_root_passphrase(self, source: secrets.PassphraseSource) -> None:
        """Where the root key's own passphrase comes from (default: its file option's sources)."""
        self._root_passphrase_source = source
        self._root_passphrase = None

    def _get_root_passphrase(self) -> bytes | None:
        """The root key's own passphrase (never the site config's file); None when no source has one."""
        if self._root_passphrase is None:
            src = self._root_passphrase_source
            if callable(src):
                self._root_passphrase = src()
            elif src is not None:
                self._root_passphrase = src.encode() if isinstance(src, str) else src
            else:
                self._root_passphrase = secrets.resolve_root_passphrase()
        return self._root_passphrase

    def _load_ca_key(self, path: Path, what: str, *, root: bool = False) -> PrivateKey:
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
            rpw = self._get_root_passphrase()
            if rpw is not None:
                return secrets.load_key_pem(pem, rpw, what=f"{what} (root passphrase)")
        return secrets.load_key_pem(pem, self._get_passphrase(), what=what)

    def _active_intermediate(self) -> tuple[int, x509.Certificate, str | None]:
        row = (
            self._db()
            .execute("SELECT id, cert_pem, key_file FROM cas WHERE role='intermediate' AND status='active'")
            .fetchone()
        )
        if row is None:
            raise OperationFailed("the CA store has no active intermediate")
        return row[0], self._checked_intermediate(row[1]), row[2]

    def _checked_intermediate(self, pem: str) -> x509.Certificate:
        """An intermediate from the inventory, parsed and verified under the root: a damaged one is never
        used to sign nor published."""
        cert = _ca_cert(pem, "an intermediate")
        fp = _fp(cert)
        if fp not in self._verified:
            root = self.root_certificate()
            _check_signed(cert, root, f"intermediate {cert.subject.rfc4514_string()}")
            self._verified.add(fp)
        return cert

    def signer(self) -> tuple[int, x509.Certificate, PrivateKey]:
        """The active intermediate (id, certificate, decrypted key), cached after the first call."""
        ca_id, cert, key_file = self._active_intermediate()
        if self._signer is not None and self._signer[0] == ca_id:
            return self._signer
        if not key_file:
            raise OperationFailed("the active intermediate's key is not in the store")
        key = self._load_ca_key(self.dir / CA_DIR / key_file, "intermediate CA key")
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise VerificationError("the intermediate CA key does not match its certificate")
        self._signer = (ca_id, cert, key)
        return self._signer

    def root_certificate(self) -> x509.Certificate:
        row = self._db().execute("SELECT cert_pem FROM cas WHERE role='root'").fetchone()
        if row is None:
            raise OperationFailed("the CA store has no root")
        root = _ca_cert(row[0], "the root")
        fp = _fp(root)
        if fp not in self._verified:
            _check_signed(root, root, "root")
            self._verified.add(fp)
        return root

    def intermediates(self, *, include_expired: bool = False) -> list[x509.Certificate]:
        """Intermediates still in use, newest first (the active one first)."""
        rows = self._db().execute(
            "SELECT cert_pem FROM cas WHERE role='intermediate' ORDER BY status='active' DESC, id DESC"
        )
        now = self.clock()
        out = []
        for (pem,) in rows:
            c = self._checked_intermediate(pem)
            if include_expired or c.not_valid_after_utc > now:
                out.append(c)
        return out

    def _load_root_key(self, offline_root: str | os.PathLike[str] | None) -> PrivateKey:
        root = self.root_certificate()
        if offline_root:
            path = Path(offline_root) / _offline_key_name(root)
            if not path.is_file():
                raise NotFound(f"the root key for this CA is not in {offline_root} (expected {path.name})")
        else:
            row = self._db().execute("SELECT key_file FROM cas WHERE role='root'").fetchone()
            if not row or not row[0]:
                raise InputError(
                    "this CA has an offline root: its key is not in the store",
                    hint="mount the removable media and pass --offline-root DIR",
                )
            path = self.dir / CA_DIR / row[0]
        key = self._load_ca_key(path, "root CA key", root=True)
        if _spki(key.public_key()) != _spki(root.public_key()):
            raise VerificationError(f"{path} is not the key of this CA's root")
        return key

    # --- init ------------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        home_or_store_dir: str | os.PathLike[str],
        *,
        org: str,
        site: str | None = None,
        key_type: str = "ec-p256",
        permit_dns: Sequence[str] = (),
        permit_ip: Sequence[str] = (),
        offline_root: str | os.PathLike[str] | None = None,
        passphrase: bytes | str | None = None,
        encrypt: bool = True,
        settings: PkiSettings | None = None,
        trust_dir: str | os.PathLike[str] | None = None,
        publish: bool = True,
        exact: bool = False,
        root_passphrase: bytes | str | None = None,
    ) -> CertificateAuthority:
        """Create a new CA (root + intermediate + first CRLs) and publish its trust bundle.

        ``root_passphrase`` encrypts the root key on its own (it must differ from ``passphrase``, which then
        protects only the intermediate key the daily CRL job uses); without it both keys share
        ``passphrase``. Refuses, changing nothing, when a store already exists.
        """
        settings = settings or PkiSettings()
        d = _store_dir(Path(home_or_store_dir), exact)
        if key_type not in KEY_TYPES:
            raise InputError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")
        org = _check_dn_value(org, "--org")
        site = _check_dn_value(site, "--site") if site else None
        constraints = NameConstraints.parse(permit_dns, permit_ip)
        pw: bytes | None = None
        if encrypt:
            if passphrase is None:
                raise InputError(
                    "no CA passphrase given",
                    hint=f"use --passphrase-file, ${secrets.ENV_PASSPHRASE}, systemd credentials, or --no-encrypt",
                )
            pw = secrets.check_new_passphrase(
                passphrase.encode() if isinstance(passphrase, str) else passphrase
            )
        root_pw = pw
        if encrypt and root_passphrase is not None:
            root_pw = secrets.check_new_passphrase(
                root_passphrase.encode() if isinstance(root_passphrase, str) else root_passphrase
            )
            if root_pw == pw:
                raise InputError(
                    "the root passphrase must differ from the intermediate's",
                    hint="the CRL job holds the intermediate's; the root's stays with the offline media",
                )
        offline = Path(offline_root) if offline_root else None
        if offline is not None and not offline.is_dir():
            raise InputError(f"--offline-root directory does not exist: {offline}")
        d.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(d.parent / INIT_LOCK_FILE, timeout=120):
            _remove_stale_builds(d.parent)
            if d.exists() and any(d.iterdir()):
                raise AlreadyExists(f"a CA store already exists in {d}; nothing was changed")
            ca = cls._build(
                d,
                org=org,
                site=site,
                key_type=key_type,
                constraints=constraints,
                offline=offline,
                pw=pw,
                root_pw=root_pw,
                encrypt=encrypt,
                settings=settings,
                trust_dir=Path(trust_dir) if trust_dir else None,
                publish=publish,
            )
            # The store is in place with its first CRLs; its journal holds the events and the publication.
            with ca._tlock, FileLock(ca.dir / LOCK_FILE, timeout=120):
                ca._write_status(ca._db())
                ca._drain_journal(ca._db(), recovered=False)
        return ca

    @classmethod
    def _build(
        cls,
        d: Path,
        *,
        org: str,
        site: str | None,
        key_type: str,
        constraints: NameConstraints,
        offline: Path | None,
        pw: bytes | None,
        root_pw: bytes | None,
        encrypt: bool,
        settings: PkiSettings,
        trust_dir: Path | None,
        publish: bool,
    ) -> CertificateAuthority:
        """Build the store in a temporary directory next to ``d`` and rename it into place."""
        now = utcnow()
        root_key = generate_key(key_type)
        inter_key = generate_key(key_type)
        root_name = subject_name(f"{org} Root CA", org, site)
        inter_name = subject_name(f"{org} Intermediate CA 1", org, site)
        root_after = now + dt.timedelta(days=settings.root_days)
        root = build_certificate(
            kind="root",
            subject=root_name,
            public_key=root_key.public_key(),
            issuer=root_name,
            issuer_key=root_key,
            not_before=now - BACKDATE,
            not_after=root_after,
        )
        inter = build_certificate(
            kind="intermediate",
            subject=inter_name,
            public_key=inter_key.public_key(),
            issuer=root_name,
            issuer_key=root_key,
            not_before=now - BACKDATE,
            not_after=min(root_after, now + dt.timedelta(days=settings.intermediate_days)),
            constraints=constraints,
        )
        tmp = Path(tempfile.mkdtemp(prefix=INIT_TMP_PREFIX, dir=d.parent))
        killpoint("init temporary directory")
        try:
            os.chmod(tmp, 0o700)
            cadir = ensure_private_dir(tmp / CA_DIR)
            atomic_write(cadir / "root.pem", cert_pem(root), mode=0o644)
            killpoint("init root certificate")
            atomic_write(cadir / "intermediate-1.pem", cert_pem(inter), mode=0o644)
            killpoint("init intermediate certificate")
            atomic_write(cadir / "intermediate-1.key", secrets.key_to_pem(inter_key, pw), mode=0o600)
            killpoint("init intermediate key")
            root_key_file: str | None = "root.key"
            if offline is not None:
                root_key_file = None
                key_path = offline / _offline_key_name(root)
                pem_path = offline / f"{_offline_key_name(root)[:-4]}.pem"
                # Written before the files on the media: a build killed before its rename is removed by the
                # next init together with what it wrote there (the key of a root no store ever used).
                atomic_write(tmp / OFFLINE_FILES, json.dumps([str(key_path), str(pem_path)]), mode=0o600)
                killpoint("init offline list")
                atomic_write(key_path, secrets.key_to_pem(root_key, root_pw), exclusive=True)
                killpoint("init offline root key")
                atomic_write(pem_path, cert_pem(root), mode=0o644, exclusive=True)
                killpoint("init offline root certificate")
            else:
                atomic_write(cadir / "root.key", secrets.key_to_pem(root_key, root_pw), mode=0o600)
                killpoint("init root key")
            ca = cls(tmp, settings=settings, trust_dir=trust_dir, passphrase=pw)
            conn = sqlite3.connect(tmp / DB_FILE, isolation_level=None)
            ca._conn = conn
            try:
                os.chmod(tmp / DB_FILE, 0o600)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute("BEGIN")
                meta = {
                    "schema_version": str(SCHEMA_VERSION),
                    "org": org,
                    "site": site or "",
                    "key_type": key_type,
                    "name_constraints": json.dumps(constraints.to_json()),
                    "encrypted": "1" if encrypt else "0",
                    "offline_root": "1" if offline is not None else "0",
                    "root_passphrase": "separate" if root_pw != pw else "shared",
                    "crl_number": "0",
                    "created_at": _iso(now),
                }
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                _insert_ca(conn, root, "root", root_key_file, now)
                _insert_ca(conn, inter, "intermediate", "intermediate-1.key", now)
                ca._signer = (2, inter, inter_key)
                crl = ca._sign_crls(conn, root_key=root_key)
                initialized = ca._event(
                    "pki.ca.initialized",
                    ("configuration",),
                    ("creation",),
                    f"CA {org} initialized ({key_type}, offline root: {offline is not None})",
                    {
                        "organization.name": org,
                        "file.x509.serial_number": f"{root.serial_number:x}",
                        "file.x509.subject.common_name": common_name(root_name),
                        "file.x509.not_after": root.not_valid_after_utc,
                        "edgesec.pki.key_type": key_type,
                        "edgesec.pki.name_constraints": constraints.to_json(),
                        "edgesec.pki.offline_root": offline is not None,
                        "edgesec.pki.encrypted": encrypt,
                    },
                )
                ca._journal(conn, "init", [initialized, ca._crl_event(crl)], publish=publish)
                if publish:
                    ca._write_pending_marker()
                conn.execute("COMMIT")
                # Fold the WAL into the main file so the renamed store is self-contained.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                ca.close()
            killpoint("init inventory")
            (tmp / OFFLINE_FILES).unlink(missing_ok=True)
            fsync_dir(tmp)
            try:
                if d.exists():
                    d.rmdir()  # an empty directory only (checked above); a non-empty one raises
                os.rename(tmp, d)
            except OSError:
                raise AlreadyExists(f"a CA store already exists in {d}; nothing was changed") from None
            fsync_dir(d.parent)
            killpoint("init rename")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        ca = cls(d, settings=settings, trust_dir=trust_dir, passphrase=pw)
        ca._signer = (2, inter, inter_key)
        ca._own_journal = {1}
        return ca

    # --- issuing ---------------------------------------------------------------------------------------

    def name_constraints(self) -> NameConstraints:
        return NameConstraints.from_json(json.loads(self.meta("name_constraints") or "{}"))

    def _days(self, profile: str) -> int:
        return {
            "server": self.settings.server_days,
            "client": self.settings.client_days,
            "signing": self.settings.signing_days,
        }[profile]

    def _issue_in_tx(
        self,
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
            raise InputError(
                "a server certificate needs at least one DNS: or IP: SAN", hint="add --san DNS:host"
            )
        check_profile_sans(profile, sans)
        self.name_constraints().check(sans, common_name=name)
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
        ca_id, ca_cert, ca_key = self.signer()
        now = self.clock()
        life = dt.timedelta(days=days if days is not None else self._days(profile))
        not_after = min(now + life, ca_cert.not_valid_after_utc)
        if not_after <= now:
            raise OperationFailed(
                "the intermediate CA has expired", hint="run `edgesec pki rotate-intermediate`"
            )
        key: PrivateKey | None = None
        if public_key is None:
            key = generate_key(key_type or self.settings.key_type)
            public_key = key.public_key()
        org = self.meta("org") or "edgesec"
        site = self.meta("site") or None
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
            self._status_types is None
            or describe_key(public_key) not in self._status_types
            or cert.not_valid_after_utc < now + dt.timedelta(days=STATUS_WINDOW_DAYS)
        ):
            self._status_needed = True
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
        self, cert: x509.Certificate, profile: str, name: str, action: str = "pki.certificate.issued"
    ) -> Event:
        return self._event(
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
        self,
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
            self._audit_refused(profile, name, exc.message)
            raise
        with self._write(issuing=True) as conn:
            cert, key = self._issue_in_tx(
                conn,
                profile=profile,
                name=name,
                sans=s,
                key_type=key_type,
                days=days,
                key_passphrase=key_passphrase,
            )
            self._journal(conn, "issue", [self._issued_event(cert, profile, name)])
        assert key is not None
        return cert, key

    def issue_server(
        self, name: str, sans: Sequence[str] | SubjectAltNames, **kw: Any
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A serverAuth certificate; ``sans`` like ``["DNS:llm.branch.local", "IP:10.0.0.5"]``."""
        return self.issue("server", name, sans, **kw)

    def issue_client(
        self, id: str, *, email: str | None = None, uri: str | None = None, **kw: Any
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A clientAuth certificate: the identity is the CN ``id``, optionally an email and a URI SAN."""
        items = ([f"email:{email}"] if email else []) + ([f"URI:{uri}"] if uri else [])
        return self.issue("client", id, items, **kw)

    def issue_signing(self, name: str, **kw: Any) -> tuple[x509.Certificate, PrivateKey]:
        """A codeSigning certificate (model manifests, trail checkpoints, signed audit results)."""
        return self.issue("signing", name, (), **kw)

    def issue_clients(
        self, requests: Iterable[ClientRequest], *, skip_existing: bool = False, **kw: Any
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
                self._audit_refused("client", r.id, f"entry {i}: {exc.message}")
                raise InputError(f"entry {i}: {exc.message}", hint=exc.hint) from None
            if r.id.lower() in seen:
                first = seen[r.id.lower()]
                what = "appears twice" if first == r.id else f"differs from {first!r} only in case"
                raise InputError(f"entry {i}: {r.id!r} {what} in the batch")
            seen[r.id.lower()] = r.id
        out: list[x509.Certificate] = []
        issued: list[ClientRequest] = []
        self.last_skipped = []
        with self._write(issuing=True) as conn:
            for i, (r, sans) in enumerate(parsed, start=1):
                if (
                    skip_existing
                    and conn.execute(
                        "SELECT 1 FROM certs WHERE name=? AND profile='client' LIMIT 1", (r.id,)
                    ).fetchone()
                ):
                    self.last_skipped.append(r.id)
                    continue
                try:
                    cert, _ = self._issue_in_tx(conn, profile="client", name=r.id, sans=sans, **kw)
                except (InputError, AlreadyExists) as exc:
                    raise type(exc)(
                        f"entry {i}: {exc.message}; no certificate of the batch was issued", hint=exc.hint
                    ) from None
                out.append(cert)
                issued.append(r)
            self._journal(
                conn,
                "batch issue",
                [self._issued_event(cert, "client", r.id) for r, cert in zip(issued, out, strict=True)],
            )
        return out

    last_skipped: list[str] = []  # noqa: RUF012 - replaced per call, never mutated in place

    def sign_csr(
        self, csr_data: bytes, profile: str, *, name: str | None = None, days: int | None = None
    ) -> x509.Certificate:
        """Issue a certificate for a device-generated key, strictly by ``profile``: only the SAN types and
        counts the profile defines, the name policy checked before anything else reads the subject, and
        the device's exact public key (a key the library would re-encode, such as RSA-PSS, is refused).
        Refuses weak keys, CA requests, bad signatures and names outside the name constraints; every
        refusal is an audit event. The key never enters the store."""
        try:
            csr, public_key, sans, cn = _vet_csr(csr_data, profile, name)
        except InputError as exc:
            self._audit_csr_refused(csr_data, profile, exc.message)
            raise
        self.signer()
        try:
            with self._write(issuing=True) as conn:
                cert, _ = self._issue_in_tx(
                    conn, profile=profile, name=cn, sans=sans, public_key=public_key, days=days, source="csr"
                )
                if _spki(cert.public_key()) != _csr_spki(csr):
                    raise InputError("the certificate would not carry the CSR's public key exactly as given")
                self._journal(conn, "sign-csr", [self._issued_event(cert, profile, cn)])
        except (InputError, AlreadyExists) as exc:
            self._audit_csr_refused(csr_data, profile, exc.message)
            raise
        return cert

    def _audit_refused(self, profile: str, name: object, reason: str) -> None:
        shown = name if isinstance(name, str) and len(name) <= 64 else repr(name)[:64]
        self._emit(
            self._event(
                "pki.certificate.refused",
                ("iam",),
                ("denied",),
                f"{profile} certificate for {shown} refused: {reason}",
                {"event.reason": reason[:300], "edgesec.pki.profile": profile, "edgesec.pki.name": shown},
            )
        )

    def _audit_csr_refused(self, csr_data: bytes, profile: str, reason: str) -> None:
        import hashlib

        ev = self._event(
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
        self._emit(ev)

    def renew(self, name: str, *, revoke_old: bool = False, days: int | None = None) -> x509.Certificate:
        """A new certificate (and key, unless it came from a CSR) under the same name; history is kept."""
        with self._write() as conn:
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
            cert, _ = self._issue_in_tx(
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
            events = [self._issued_event(cert, profile, name, action="pki.certificate.renewed")]
            if revoke_old and self._mark_revoked(conn, old_serial, "superseded"):
                events += [
                    self._revoked_event(old_serial, name, "superseded"),
                    self._crl_event(self._sign_crls(conn)),
                ]
            self._journal(conn, "renew", events, publish=revoke_old)
        return cert

    # --- revocation and CRLs -------------------------------------------------------------------------

    def _find(self, conn: sqlite3.Connection, name_or_serial: str) -> tuple[str, str]:
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

    def _mark_revoked(self, conn: sqlite3.Connection, serial: str, reason: str) -> bool:
        """Mark ``serial`` revoked in the open transaction; False when it already was."""
        if reason not in REASONS:
            raise InputError(f"unknown revocation reason {reason!r}; expected one of {', '.join(REASONS)}")
        cur = conn.execute(
            "UPDATE certs SET revoked_at=?, revocation_reason=? WHERE serial=? AND revoked_at IS NULL",
            (_iso(self.clock()), reason, serial),
        )
        return cur.rowcount == 1

    def _revoked_event(self, serial: str, name: str, reason: str) -> Event:
        return self._event(
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

    def revoke(self, name_or_serial: str, reason: str = "unspecified", *, publish: bool = True) -> str:
        """Revoke a certificate (the current one of a name, or any serial). The revocation and the CRLs
        that list it are one transaction; the trust bundle is then published (a kill in between leaves a
        journal entry the next command finishes). Revoking an already revoked certificate signs and
        publishes the CRLs again (``last_revoke_repeated`` tells which happened). Returns the serial."""
        if reason not in REASONS:
            raise InputError(f"unknown revocation reason {reason!r}; expected one of {', '.join(REASONS)}")
        self.signer()  # the key (and its passphrase) before the lock is taken
        with self._write() as conn:
            serial, name = self._find(conn, name_or_serial)
            fresh = self._mark_revoked(conn, serial, reason)
            out = self._sign_crls(conn)
            events = [self._revoked_event(serial, name, reason)] if fresh else []
            self._journal(conn, "revoke", [*events, self._crl_event(out)], publish=publish)
        self.last_revoke_repeated = not fresh
        return serial

    last_revoke_repeated = False

    def _crl_event(self, out: dict[str, Any]) -> Event:
        return self._event(
            "pki.crl.generated",
            ("configuration",),
            ("change",),
            f"CRL number {out['number']} generated",
            {"edgesec.pki.crl_number": out["number"], "edgesec.pki.crls": out["crls"]},
        )

    def generate_crl(
        self,
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
        crl_days = days if days is not None else self.settings.crl_days
        if not 1 <= crl_days <= 365:
            raise InputError("the CRL lifetime must be 1 to 365 days")
        now = self.clock()
        if root_key is None and not (with_root or offline_root) and self._root_crl_due(now):
            # With the root key in the store, the routine run renews the root's CRL before it lapses (an
            # expired root CRL makes nginx refuse every client); an offline root needs a ceremony, which
            # the pki.crl-freshness check announces 30 days ahead.
            # A root key under its own passphrase is renewed only when that passphrase was given: the CRL
            # job holds the intermediate's alone.
            with_root = self.meta("offline_root") != "1" and (
                self.meta("root_passphrase") != "separate" or self._get_root_passphrase() is not None
            )
        if root_key is None and (with_root or offline_root):
            root_key = self._load_root_key(offline_root)
        self.signer()
        with self._write() as conn:
            out = self._sign_crls(conn, root_key=root_key, days=crl_days)
            self._journal(conn, "crl", [self._crl_event(out)], publish=publish)
        if publish and self.last_publication is not None:
            out["published"] = str(self.last_publication.directory)
            out["hooks"] = self.last_publication.hooks
        return out

    def _sign_crls(
        self, conn: sqlite3.Connection, *, root_key: PrivateKey | None = None, days: int | None = None
    ) -> dict[str, Any]:
        """Sign and store, in the open transaction, a CRL for every intermediate still valid (and the
        root's, given its key), all with one new CRL number."""
        crl_days = days if days is not None else self.settings.crl_days
        now = self.clock()
        out: dict[str, Any] = {"crls": []}
        number = int(self.meta("crl_number") or "0") + 1
        rows = conn.execute(
            "SELECT id, cert_pem, key_file, status FROM cas WHERE role='intermediate' ORDER BY id"
        ).fetchall()
        for ca_id, pem, key_file, _status in rows:
            cert = self._checked_intermediate(pem)
            if cert.not_valid_after_utc <= now:
                continue
            if self._signer is not None and self._signer[0] == ca_id:
                key = self._signer[2]
            else:
                key = self._load_ca_key(self.dir / CA_DIR / key_file, "intermediate CA key")
                if _spki(key.public_key()) != _spki(cert.public_key()):
                    raise VerificationError(f"the key {key_file} does not match its intermediate certificate")
            revoked = conn.execute(
                "SELECT serial, revoked_at, revocation_reason FROM certs WHERE issuer_id=? AND revoked_at IS NOT NULL",
                (ca_id,),
            ).fetchall()
            crl = build_crl(cert, key, revoked, number, now, now + dt.timedelta(days=crl_days))
            self._store_crl(conn, ca_id, crl, number, len(revoked))
            out["crls"].append(
                {"issuer": common_name(cert.subject), "number": number, "entries": len(revoked)}
            )
        if root_key is not None:
            root_id, root = self._root_row(conn)
            crl = build_crl(
                root, root_key, [], number, now, now + dt.timedelta(days=self.settings.root_crl_days)
            )
            self._store_crl(conn, root_id, crl, number, 0)
            out["crls"].append({"issuer": common_name(root.subject), "number": number, "entries": 0})
        conn.execute("UPDATE meta SET value=? WHERE key='crl_number'", (str(number),))
        out["number"] = number
        out["next_update"] = _iso(now + dt.timedelta(days=crl_days))
        self._status_needed = True
        return out

    def _root_crl_due(self, now: dt.datetime) -> bool:
        row = (
            self._db()
            .execute(
                "SELECT MAX(c.next_update) FROM crls c JOIN cas a ON a.id = c.issuer_id WHERE a.role = 'root'"
            )
            .fetchone()
        )
        if row is None or row[0] is None:
            return True
        return _parse_iso(row[0]) - now < dt.timedelta(days=ROOT_CRL_RENEW_DAYS)

    def _root_row(self, conn: sqlite3.Connection) -> tuple[int, x509.Certificate]:
        row = conn.execute("SELECT id, cert_pem FROM cas WHERE role='root'").fetchone()
        return row[0], x509.load_pem_x509_certificate(row[1].encode())

    def _store_crl(
        self,
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

    def _current_crl_rows(self) -> list[tuple[str, int, str, str, str]]:
        """(pem, number, this_update, next_update, issuer subject) of the latest CRL of the root and of
        every intermediate still valid -- straight from the inventory, without parsing a 100k-entry CRL."""
        now = self.clock()
        rows = self._db().execute(
            "SELECT c.crl_pem, c.number, c.this_update, c.next_update, a.subject, a.not_after"
            " FROM crls c JOIN cas a ON a.id = c.issuer_id"
            " WHERE c.id IN (SELECT MAX(id) FROM crls GROUP BY issuer_id) ORDER BY a.role DESC, a.id"
        )
        return [r[:5] for r in rows if _parse_iso(r[5]) > now]

    def current_crls(self) -> list[x509.CertificateRevocationList]:
        """The latest CRL of the root and of every intermediate still valid."""
        return [x509.load_pem_x509_crl(r[0].encode()) for r in self._current_crl_rows()]

    # --- rotation --------------------------------------------------------------------------------------

    def rotate_intermediate(self, *, offline_root: str | os.PathLike[str] | None = None) -> x509.Certificate:
        """A new intermediate signed by the root; the old one is retired but stays in the trust bundle
        (with its CRL) until it expires, so every certificate it issued keeps working."""
        root_key = self._load_root_key(offline_root)
        pw = self._get_passphrase() if self.meta("encrypted") == "1" else None
        if self.meta("encrypted") == "1" and not pw:
            raise InputError("no CA passphrase given for the new intermediate key")
        root = self.root_certificate()
        now = self.clock()
        key = generate_key(self.meta("key_type") or "ec-p256")
        with self._write() as conn:
            # Files of a rotation killed before its commit may exist: never reuse their number.
            on_disk = [
                int(p.stem.split("-", 1)[1])
                for p in (self.dir / CA_DIR).glob("intermediate-*.pem")
                if p.stem.split("-", 1)[1].isdigit()
            ]
            in_db = conn.execute("SELECT COUNT(*) FROM cas WHERE role='intermediate'").fetchone()[0]
            n = max([in_db, *on_disk]) + 1
            org = self.meta("org") or "edgesec"
            cert = build_certificate(
                kind="intermediate",
                subject=subject_name(f"{org} Intermediate CA {n}", org, self.meta("site") or None),
                public_key=key.public_key(),
                issuer=root.subject,
                issuer_key=root_key,
                not_before=now - BACKDATE,
                not_after=min(
                    root.not_valid_after_utc, now + dt.timedelta(days=self.settings.intermediate_days)
                ),
                constraints=self.name_constraints(),
            )
            cadir = self.dir / CA_DIR
            atomic_write(cadir / f"intermediate-{n}.pem", cert_pem(cert), mode=0o644, exclusive=True)
            killpoint("intermediate certificate")
            atomic_write(
                cadir / f"intermediate-{n}.key", secrets.key_to_pem(key, pw), mode=0o600, exclusive=True
            )
            killpoint("intermediate key")
            conn.execute("UPDATE cas SET status='retired' WHERE role='intermediate' AND status='active'")
            _insert_ca(conn, cert, "intermediate", f"intermediate-{n}.key", now)
            self._signer = None
            rotated = self._event(
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
            crl = self._sign_crls(conn, root_key=root_key)
            self._journal(conn, "rotate-intermediate", [rotated, self._crl_event(crl)], publish=True)
        self._signer = None
        return cert

    # --- the trust bundle -------------------------------------------------------------------------------

    def trust_bundle(self) -> TrustBundle:
        """The bundle as the store would publish it now (without reading the published directory)."""
        crls = [c.public_bytes(serialization.Encoding.PEM) for c in self.current_crls()]
        return TrustBundle.from_parts([self.root_certificate()], self.intermediates(), crls)

    def publish(self, *, run_hooks: bool = True) -> PublishResult:
        """Write root, intermediates, CA bundle and CRLs (world-readable) to the trust directory, then run
        the reload hooks. What is published is read under the store lock, so a concurrent change is either
        in it or publishes after it; each file is replaced atomically. A pending publication (and any
        audit event a killed command owed) is finished by it."""
        with self._tlock:
            with FileLock(self.dir / LOCK_FILE, timeout=120):
                conn = self._db()
                self._ensure_journal(conn)
                self._drain_journal(conn, recovered=True, publish=True, run_hooks=run_hooks)
        assert self.last_publication is not None
        return self.last_publication

    def _publish_files(self) -> PublishResult:
        """Write the bundle files from the inventory; the caller holds the store lock."""
        root = self.root_certificate()
        inters = self.intermediates()
        crls = self._current_crl_rows()
        d = self.trust_dir
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

    def run_reload_hooks(self) -> list[dict[str, Any]]:
        """Run each configured hook (argv split like a shell, no shell); a failing hook raises after all ran."""
        results: list[dict[str, Any]] = []
        for hook in self.settings.reload_hooks:
            argv = shlex.split(hook)
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
                results.append({"hook": hook, "exit_code": p.returncode, "stderr": p.stderr.strip()[-500:]})
            except (OSError, subprocess.TimeoutExpired) as exc:
                results.append({"hook": hook, "exit_code": None, "stderr": str(exc)})
        self.hook_results = results
        failed = [r for r in results if r["exit_code"] != 0]
        if failed:
            f = failed[0]
            raise OperationFailed(
                f"trust bundle published, but reload hook {f['hook']!r} failed: {f['stderr'] or f['exit_code']}",
                hint="fix the hook, then run `edgesec pki crl` to publish and reload again",
            )
        return results

    # --- reading the inventory -------------------------------------------------------------------------------

    _COLS = (
        "c.name, c.profile, c.serial, c.subject, c.sans, c.key_type, c.not_before, c.not_after, c.current,"
        " c.revoked_at, c.revocation_reason, c.issued_at, c.source, c.key_pem IS NOT NULL, a.subject, c.paths"
    )

    def _record(self, row: Sequence[Any], now: dt.datetime) -> CertRecord:
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
        self, *, expiring_days: int | None = None, include_history: bool = True
    ) -> list[CertRecord]:
        """Every certificate ever issued (oldest first); with ``expiring_days``, only current valid ones
        whose notAfter falls within that many days."""
        now = self.clock()
        q = f"SELECT {self._COLS} FROM certs c JOIN cas a ON a.id = c.issuer_id"  # noqa: S608 - constant columns
        if not include_history:
            q += " WHERE c.current = 1"
        rows = self._db().execute(q + " ORDER BY c.issued_at, c.rowid").fetchall()
        recs = [self._record(r, now) for r in rows]
        if expiring_days is not None:
            limit = now + dt.timedelta(days=expiring_days)
            recs = [r for r in recs if r.current and r.status == "valid" and r.not_after <= limit]
        return recs

    def records(self, serials: Sequence[str]) -> list[CertRecord]:
        """Inventory records of many serials in one query (order kept; unknown serials are skipped)."""
        now = self.clock()
        q = f"SELECT {self._COLS}, c.serial FROM certs c JOIN cas a ON a.id = c.issuer_id"  # noqa: S608
        by_serial = {}
        conn = self._db()
        for i in range(0, len(serials), 500):
            chunk = list(serials[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"{q} WHERE c.serial IN ({marks})", chunk):
                by_serial[row[-1]] = self._record(row, now)
        return [by_serial[s] for s in serials if s in by_serial]

    def get(self, name_or_serial: str) -> CertRecord:
        serial, _ = self._find(self._db(), name_or_serial)
        row = (
            self._db()
            .execute(
                f"SELECT {self._COLS} FROM certs c JOIN cas a ON a.id = c.issuer_id WHERE c.serial=?",  # noqa: S608
                (serial,),
            )
            .fetchone()
        )
        return self._record(row, self.clock())

    def certificate(self, name_or_serial: str) -> x509.Certificate:
        serial, _ = self._find(self._db(), name_or_serial)
        row = self._db().execute("SELECT cert_pem FROM certs WHERE serial=?", (serial,)).fetchone()
        return x509.load_pem_x509_certificate(row[0].encode())

    def leaf(self, name: str, *, key_passphrase: bytes | None = None) -> tuple[x509.Certificate, PrivateKey]:
        """The current certificate named ``name`` and its private key (for signing or deployment)."""
        row = (
            self._db()
            .execute("SELECT cert_pem, key_pem, source FROM certs WHERE name=? AND current=1", (name,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no certificate named {name!r}")
        if row[1] is None:
            raise NotFound(f"the key of {name!r} is not in the store (it was issued from a CSR)")
        key = secrets.load_key_pem(row[1].encode(), key_passphrase, what=f"key of {name}")
        return x509.load_pem_x509_certificate(row[0].encode()), key

    def chain_for(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The intermediate(s) between ``cert`` and the root, nearest first."""
        return [c for c in self.intermediates(include_expired=True) if c.subject == cert.issuer][:1]

    # --- export ------------------------------------------------------------------------------------------------

    def export_pem(
        self, name: str, directory: str | os.PathLike[str], *, replace: bool = False
    ) -> dict[str, str]:
        """Write ``cert.pem``, ``chain.pem`` (intermediate), ``fullchain.pem`` (leaf + intermediate), ``ca.pem``
        (root) and ``key.pem`` (0600, when the key is in the store) to ``directory``. Existing files are
        refused unless ``replace``."""
        rec = self.get(name)
        cert = self.certificate(rec.serial)
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        chain = self.chain_for(cert)
        files: dict[str, tuple[bytes, int]] = {
            "cert.pem": (cert_pem(cert), 0o644),
            "chain.pem": (b"".join(cert_pem(c) for c in chain), 0o644),
            "fullchain.pem": (cert_pem(cert) + b"".join(cert_pem(c) for c in chain), 0o644),
            "ca.pem": (cert_pem(self.root_certificate()), 0o644),
        }
        row = self._db().execute("SELECT key_pem FROM certs WHERE serial=?", (rec.serial,)).fetchone()
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
        self._record_export(rec, str(d.absolute()), "pem")
        return written

    def export_p12(
        self,
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
        cert, key = self.leaf(name, key_passphrase=key_passphrase)
        chain = [*self.chain_for(cert), self.root_certificate()]
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
        rec = self.get(name)
        self._record_export(rec, str(p.absolute()), "p12-legacy" if legacy else "p12")
        return p

    def _record_export(self, rec: CertRecord, path: str, fmt: str) -> None:
        """The export's path in the inventory and its audit event, journaled in one transaction."""
        with self._write(issuing=True) as conn:
            row = conn.execute("SELECT paths FROM certs WHERE serial=?", (rec.serial,)).fetchone()
            paths = json.loads(row[0])
            if path not in paths:
                paths.append(path)
                conn.execute("UPDATE certs SET paths=? WHERE serial=?", (json.dumps(paths), rec.serial))
            event = self._event(
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
            self._journal(conn, "export", [event])

    # --- audit ----------------------------------------------------------------------------------------------------

    def _event(
        self,
        action: str,
        category: tuple[str, ...],
        type_: tuple[str, ...],
        message: str,
        fields: dict[str, Any],
    ) -> Event:
        if self._operator is None:
            self._operator = _operator()
        return Event(
            action=action,
            category=category,
            type=type_,
            message=message,
            part="pki",
            fields={"user.id": self._operator, **fields},
        )

    def _audit(
        self,
        action: str,
        category: tuple[str, ...],
        type_: tuple[str, ...],
        message: str,
        fields: dict[str, Any],
    ) -> None:
        self._emit(self._event(action, category, type_, message, fields))

    def _emit(self, event: Event) -> None:
        """An event that is no change of the store (a refusal): written now, through the one audit API."""
        s = sink()
        s.write([s.document(event)])


# --- helpers --------------------------------------------------------------------------------------------------


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


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER, with a valid self-signature and parseable subject, key and extensions; one
    line on anything else. The library's warnings (an over-long name, a deprecated encoding) never reach
    the operator's terminal: deprecated encodings are refused, the rest is judged by our own checks."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        return _load_csr(data)


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm, CryptographyDeprecationWarning, x509.InvalidVersion):
        raise InputError("the file is not a valid PEM or DER certificate signing request") from None
    try:
        csr.public_key()
    except (ValueError, UnsupportedAlgorithm, CryptographyDeprecationWarning) as exc:
        raise InputError(f"the CSR's public key is unsupported or malformed: {exc}") from None
    try:
        ok = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm, CryptographyDeprecationWarning):
        ok = False
    if not ok:
        raise InputError("the CSR's signature is invalid (it was altered or not signed by its key)")
    try:
        csr.subject.rfc4514_string()
        list(csr.extensions)
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension, CryptographyDeprecationWarning):
        raise InputError("the CSR's subject or extensions are malformed") from None
    return csr


def _vet_csr(
    csr_data: bytes, profile: str, name: str | None
) -> tuple[x509.CertificateSigningRequest, PublicKey, SubjectAltNames, str]:
    """Everything a CSR is checked for before the CA signs it; raises InputError with one line."""
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; expected server, client or signing")
    csr = load_csr(csr_data)
    spki = _csr_spki(csr)
    public_key = check_public_key(csr.public_key())
    if _spki(public_key) != spki:
        raise InputError(
            f"the CSR's key ({_spki_algorithm(spki)}) cannot be certified exactly as given",
            hint="generate an EC (P-256/P-384) or plain RSA key; RSA-PSS keys are refused",
        )
    try:
        bc = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise InputError("the CSR requests a CA certificate; only end-entity certificates are signed")
    except x509.ExtensionNotFound:
        pass
    try:
        san_ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = SubjectAltNames()
    else:
        if len(san_ext) > MAX_CSR_SANS:
            raise InputError(f"the CSR asks for {len(san_ext)} SANs (at most {MAX_CSR_SANS})")
        sans = SubjectAltNames.from_extension(san_ext)
    check_profile_sans(profile, sans)
    cn = name or _csr_common_name(csr)
    if not cn:
        raise InputError("the CSR has no common name; give --name")
    try:
        check_name(cn)
    except InputError as exc:
        raise InputError(
            f"the CSR's name is not usable: {exc.message}", hint=exc.hint or "give --name"
        ) from None
    return csr, public_key, sans, cn


MAX_CSR_SANS = 100


def _csr_common_name(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's CN without letting the library warn (a 2 kB CN makes it print a warning with a path)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attrs = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if not attrs:
        return None
    v = attrs[0].value
    return v if isinstance(v, str) else None


def _der_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4:
            raise InputError("the CSR is not valid DER")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > len(data):
        raise InputError("the CSR is not valid DER")
    return tag, pos, pos + n


def _csr_spki(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's SubjectPublicKeyInfo exactly as the device encoded it."""
    der = csr.public_bytes(serialization.Encoding.DER)
    try:
        _, body, _ = _der_tlv(der, 0)  # CertificationRequest
        _, info, _ = _der_tlv(der, body)  # CertificationRequestInfo
        _, _, p = _der_tlv(der, info)  # version
        _, _, p = _der_tlv(der, p)  # subject
        _, _, end = _der_tlv(der, p)  # subjectPKInfo
    except IndexError:
        raise InputError("the CSR is not valid DER") from None
    return der[p:end]


_SPKI_ALGORITHMS = {
    "2a864886f70d010101": "RSA",
    "2a864886f70d01010a": "RSA-PSS",
    "2a8648ce3d0201": "EC",
    "2b6570": "Ed25519",
    "2b6571": "Ed448",
}


def _spki_algorithm(spki: bytes) -> str:
    try:
        _, body, _ = _der_tlv(spki, 0)
        _, alg, _ = _der_tlv(spki, body)
        _, oid_start, oid_end = _der_tlv(spki, alg)
    except (IndexError, InputError):
        return "unknown algorithm"
    return _SPKI_ALGORITHMS.get(spki[oid_start:oid_end].hex(), "unknown algorithm")


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


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _spki(key: PublicKey | Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _offline_key_name(root: x509.Certificate) -> str:
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    return f"edgesec-root-{ski[:16]}.key"


def _remove_stale_builds(parent: Path) -> None:
    """Remove what a killed ``init`` (or ``restore``) left next to the store: its temporary directory and
    the files it wrote to the offline-root media. The caller holds the init lock, so none is in progress."""
    for tmp in [*parent.glob(INIT_TMP_PREFIX + "*"), *parent.glob(RESTORE_TMP_PREFIX + "*")]:
        if not tmp.is_dir():
            continue
        listed = tmp / OFFLINE_FILES
        if listed.is_file():
            try:
                paths = json.loads(listed.read_text())
            except ValueError:
                paths = []
            for p in paths if isinstance(paths, list) else []:
                Path(str(p)).unlink(missing_ok=True)
        shutil.rmtree(tmp)


def _check_dn_value(v: str, what: str) -> str:
    v = v.strip() if isinstance(v, str) else ""
    if not v or len(v) > 64 or any(ord(c) < 32 for c in v):
        raise InputError(f"{what} must be 1-64 printable characters")
    return v


# --- backup and restore ---------------------------------------------------------------------------------------

BACKUP_MAGIC = b"EDGESEC-PKI-BACKUP\x00\x01"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def _backup_key(passphrase: bytes, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, **_SCRYPT).derive(passphrase)


def backup(ca: CertificateAuthority, out: str | os.PathLike[str], passphrase: bytes) -> dict[str, Any]:
    """Write an encrypted (scrypt + AES-256-GCM) archive of the whole store: a consistent SQLite snapshot
    taken under the store lock plus the CA files. Refuses to overwrite ``out``."""
    import io
    import tarfile

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not passphrase:
        raise InputError("a backup needs a passphrase")
    buf = io.BytesIO()
    with FileLock(ca.dir / LOCK_FILE, timeout=120), tempfile.TemporaryDirectory(dir=ca.dir.parent) as tmp:
        snap = Path(tmp) / DB_FILE
        dst = sqlite3.connect(snap)
        try:
            ca._db().backup(dst)
            # A rollback journal, not WAL, so the snapshot is one self-contained file.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(snap, arcname=DB_FILE)
            for f in sorted((ca.dir / CA_DIR).iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    tar.add(f, arcname=f"{CA_DIR}/{f.name}")
    salt, nonce = os.urandom(16), os.urandom(12)
    ct = AESGCM(_backup_key(passphrase, salt)).encrypt(nonce, buf.getvalue(), BACKUP_MAGIC)
    p = atomic_write(Path(out), BACKUP_MAGIC + salt + nonce + ct, mode=0o600, exclusive=True)
    ca._audit(
        "pki.store.backed_up",
        ("configuration",),
        ("info",),
        f"CA store backed up to {p}",
        {"file.path": str(p.absolute()), "file.size": p.stat().st_size},
    )
    return {"path": str(p), "bytes": p.stat().st_size}


def restore(
    backup_file: str | os.PathLike[str],
    home_or_store_dir: str | os.PathLike[str],
    passphrase: bytes,
    *,
    settings: PkiSettings | None = None,
    trust_dir: str | os.PathLike[str] | None = None,
    exact: bool = False,
) -> CertificateAuthority:
    """Restore a backup into a home without a CA store (refuses otherwise), then publish its bundle."""

    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from edgesec._fs import read_input_file

    data = read_input_file(Path(backup_file), what="backup file", limit=1 << 30)
    if not data.startswith(BACKUP_MAGIC) or len(data) < len(BACKUP_MAGIC) + 28 + 16:
        raise InputError(f"{backup_file} is not an edgesec pki backup")
    off = len(BACKUP_MAGIC)
    salt, nonce, ct = data[off : off + 16], data[off + 16 : off + 28], data[off + 28 :]
    try:
        plain = AESGCM(_backup_key(passphrase, salt)).decrypt(nonce, ct, BACKUP_MAGIC)
    except InvalidTag:
        raise VerificationError("wrong passphrase, or the backup file is corrupt") from None
    d = _store_dir(Path(home_or_store_dir), exact)
    d.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(d.parent / INIT_LOCK_FILE, timeout=120):
        _remove_stale_builds(d.parent)
        _restore_into(d, plain)
    ca = CertificateAuthority.open(d, settings=settings, trust_dir=trust_dir)
    ca._audit(
        "pki.store.restored",
        ("configuration",),
        ("creation",),
        f"CA store restored from {backup_file}",
        {"file.path": str(Path(backup_file).absolute())},
    )
    with ca._write():
        pass  # an empty transaction: refreshes status.json, which a backup does not carry
    ca.publish()
    return ca


def _restore_into(d: Path, plain: bytes) -> None:
    import io
    import tarfile

    if d.exists() and any(d.iterdir()):
        raise AlreadyExists(f"a CA store already exists in {d}; restore only into a home without one")
    tmp = Path(tempfile.mkdtemp(prefix=RESTORE_TMP_PREFIX, dir=d.parent))
    try:
        os.chmod(tmp, 0o700)
        ensure_private_dir(tmp / CA_DIR)
        try:
            with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
                for m in tar.getmembers():
                    parts = Path(m.name).parts
                    ok = m.isfile() and (
                        parts == (DB_FILE,)
                        or (len(parts) == 2 and parts[0] == CA_DIR and not parts[1].startswith("."))
                    )
                    if not ok:
                        raise InputError(f"the backup holds an unexpected entry {m.name!r}")
                    src = tar.extractfile(m)
                    assert src is not None
                    mode = 0o644 if m.name.endswith(".pem") else 0o600
                    atomic_write(tmp / m.name, src.read(), mode=mode)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"the backup archive is damaged: {exc}") from None
        conn = sqlite3.connect(tmp / DB_FILE)
        try:
            ok_db = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        if not ok_db:
            raise InputError("the inventory in the backup fails SQLite's integrity check")
        fsync_dir(tmp)
        if d.exists():
            d.rmdir()
        os.rename(tmp, d)
        fsync_dir(d.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
