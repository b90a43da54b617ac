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
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from edgesec.audit_sink import Event, sink
from edgesec.errors import InputError, NotFound
from edgesec.pki import create as _create
from edgesec.pki import crl as _crl
from edgesec.pki import export as _export
from edgesec.pki import inventory as _inventory
from edgesec.pki import issue as _issue
from edgesec.pki import keys as _keys
from edgesec.pki import publish as _publish
from edgesec.pki import secrets
from edgesec.pki.builder import (
    NameConstraints,
    PrivateKey,
    PublicKey,
    SubjectAltNames,
)
from edgesec.pki.inventory import (
    SCHEMA_VERSION,
    CertRecord,
    ClientRequest,
    PublishResult,
    _operator,
    operational_error,
)
from edgesec.pki.layout import (
    DB_FILE,
    _store_dir,
)
from edgesec.pki.settings import PkiSettings
from edgesec.pki.trust import (
    TrustBundle,
    utcnow,
)


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

    def _write(self, *, issuing: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return _inventory._write(self, issuing=issuing)

    def _ensure_journal(self, conn: sqlite3.Connection) -> None:
        return _inventory._ensure_journal(self, conn)

    def _journal(
        self, conn: sqlite3.Connection, action: str, events: Sequence[Event], *, publish: bool = False
    ) -> None:
        return _inventory._journal(self, conn, action, events, publish=publish)

    def _write_pending_marker(self) -> None:
        return _inventory._write_pending_marker(self)

    def _drain_journal(
        self, conn: sqlite3.Connection, *, recovered: bool, publish: bool = False, run_hooks: bool = True
    ) -> None:
        return _inventory._drain_journal(
            self, conn, recovered=recovered, publish=publish, run_hooks=run_hooks
        )

    def _drain_rows(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[int, str, int, str | None]],
        docs: list[dict[str, Any]],
        *,
        must_publish: bool,
        run_hooks: bool,
    ) -> None:
        return _inventory._drain_rows(self, conn, rows, docs, must_publish=must_publish, run_hooks=run_hooks)

    def _emit_documents(self, docs: Sequence[dict[str, Any]]) -> None:
        return _inventory._emit_documents(self, docs)

    def needs_recovery(self) -> bool:
        """Whether a killed command left something to finish (cheap: a stat, a glob and one query)."""
        return _inventory.needs_recovery(self)

    def _orphan_files(self) -> list[Path]:
        return _inventory._orphan_files(self)

    def recover(self) -> list[str]:
        """Finish what a killed command left, under the lock: write its missing audit events (marked as
        recovered), publish the trust bundle it did not publish, remove its orphan files. Returns what
        was done (empty when nothing was left). Needs no passphrase."""
        return _inventory.recover(self)

    def _write_status(self, conn: sqlite3.Connection) -> None:
        return _publish._write_status(self, conn)

    def _expected_publication(self, conn: sqlite3.Connection) -> dict[str, Any]:
        return _publish._expected_publication(self, conn)

    def meta(self, key: str, default: str | None = None) -> str | None:
        # Settled at init and never changed afterwards: cache them.
        return _inventory.meta(self, key, default)

    # --- passphrase and keys -------------------------------------------------------------------------

    def _get_passphrase(self) -> bytes | None:
        return _keys._get_passphrase(self)

    def use_root_passphrase(self, source: secrets.PassphraseSource) -> None:
        """Where the root key's own passphrase comes from (default: its file option's sources)."""
        self._root_passphrase_source = source
        self._root_passphrase = None

    def _get_root_passphrase(self) -> bytes | None:
        return _keys._get_root_passphrase(self)

    def _load_ca_key(self, path: Path, what: str, *, root: bool = False) -> PrivateKey:
        return _keys._load_ca_key(self, path, what, root=root)

    def _active_intermediate(self) -> tuple[int, x509.Certificate, str | None]:
        return _keys._active_intermediate(self)

    def _checked_intermediate(self, pem: str) -> x509.Certificate:
        return _keys._checked_intermediate(self, pem)

    def signer(self) -> tuple[int, x509.Certificate, PrivateKey]:
        """The active intermediate (id, certificate, decrypted key), cached after the first call."""
        return _keys.signer(self)

    def root_certificate(self) -> x509.Certificate:
        return _keys.root_certificate(self)

    def intermediates(self, *, include_expired: bool = False) -> list[x509.Certificate]:
        """Intermediates still in use, newest first (the active one first)."""
        return _keys.intermediates(self, include_expired=include_expired)

    def _load_root_key(self, offline_root: str | os.PathLike[str] | None) -> PrivateKey:
        return _keys._load_root_key(self, offline_root)

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
        return _create.init(
            cls,
            home_or_store_dir,
            org=org,
            site=site,
            key_type=key_type,
            permit_dns=permit_dns,
            permit_ip=permit_ip,
            offline_root=offline_root,
            passphrase=passphrase,
            encrypt=encrypt,
            settings=settings,
            trust_dir=trust_dir,
            publish=publish,
            exact=exact,
            root_passphrase=root_passphrase,
        )

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
        return _create._build(
            cls,
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
            trust_dir=trust_dir,
            publish=publish,
        )

    # --- issuing ---------------------------------------------------------------------------------------

    def name_constraints(self) -> NameConstraints:
        return NameConstraints.from_json(json.loads(self.meta("name_constraints") or "{}"))

    def _days(self, profile: str) -> int:
        return _issue._days(self, profile)

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
        return _issue._issue_in_tx(
            self,
            conn,
            profile=profile,
            name=name,
            sans=sans,
            public_key=public_key,
            key_type=key_type,
            days=days,
            key_passphrase=key_passphrase,
            replaces=replaces,
            source=source,
        )

    def _issued_event(
        self, cert: x509.Certificate, profile: str, name: str, action: str = "pki.certificate.issued"
    ) -> Event:
        return _issue._issued_event(self, cert, profile, name, action)

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
        return _issue.issue(
            self, profile, name, sans, key_type=key_type, days=days, key_passphrase=key_passphrase
        )

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
        return _issue.issue_clients(self, requests, skip_existing=skip_existing, **kw)

    last_skipped: list[str] = []  # noqa: RUF012 - replaced per call, never mutated in place

    def sign_csr(
        self, csr_data: bytes, profile: str, *, name: str | None = None, days: int | None = None
    ) -> x509.Certificate:
        """Issue a certificate for a device-generated key, strictly by ``profile``: only the SAN types and
        counts the profile defines, the name policy checked before anything else reads the subject, and
        the device's exact public key (a key the library would re-encode, such as RSA-PSS, is refused).
        Refuses weak keys, CA requests, bad signatures and names outside the name constraints; every
        refusal is an audit event. The key never enters the store."""
        return _issue.sign_csr(self, csr_data, profile, name=name, days=days)

    def _audit_refused(self, profile: str, name: object, reason: str) -> None:
        return _issue._audit_refused(self, profile, name, reason)

    def _audit_csr_refused(self, csr_data: bytes, profile: str, reason: str) -> None:
        return _issue._audit_csr_refused(self, csr_data, profile, reason)

    def renew(self, name: str, *, revoke_old: bool = False, days: int | None = None) -> x509.Certificate:
        """A new certificate (and key, unless it came from a CSR) under the same name; history is kept."""
        return _issue.renew(self, name, revoke_old=revoke_old, days=days)

    # --- revocation and CRLs -------------------------------------------------------------------------

    def _find(self, conn: sqlite3.Connection, name_or_serial: str) -> tuple[str, str]:
        return _inventory._find(self, conn, name_or_serial)

    def _mark_revoked(self, conn: sqlite3.Connection, serial: str, reason: str) -> bool:
        return _crl._mark_revoked(self, conn, serial, reason)

    def _revoked_event(self, serial: str, name: str, reason: str) -> Event:
        return _crl._revoked_event(self, serial, name, reason)

    def revoke(self, name_or_serial: str, reason: str = "unspecified", *, publish: bool = True) -> str:
        """Revoke a certificate (the current one of a name, or any serial). The revocation and the CRLs
        that list it are one transaction; the trust bundle is then published (a kill in between leaves a
        journal entry the next command finishes). Revoking an already revoked certificate signs and
        publishes the CRLs again (``last_revoke_repeated`` tells which happened). Returns the serial."""
        return _crl.revoke(self, name_or_serial, reason, publish=publish)

    last_revoke_repeated = False

    def _crl_event(self, out: dict[str, Any]) -> Event:
        return _crl._crl_event(self, out)

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
        return _crl.generate_crl(
            self,
            root_key=root_key,
            offline_root=offline_root,
            with_root=with_root,
            publish=publish,
            days=days,
        )

    def _sign_crls(
        self, conn: sqlite3.Connection, *, root_key: PrivateKey | None = None, days: int | None = None
    ) -> dict[str, Any]:
        return _crl._sign_crls(self, conn, root_key=root_key, days=days)

    def _root_crl_due(self, now: dt.datetime) -> bool:
        return _crl._root_crl_due(self, now)

    def _root_row(self, conn: sqlite3.Connection) -> tuple[int, x509.Certificate]:
        return _crl._root_row(self, conn)

    def _store_crl(
        self,
        conn: sqlite3.Connection,
        ca_id: int,
        crl: x509.CertificateRevocationList,
        number: int,
        entries: int,
    ) -> None:
        return _crl._store_crl(self, conn, ca_id, crl, number, entries)

    def _current_crl_rows(self) -> list[tuple[str, int, str, str, str]]:
        return _crl._current_crl_rows(self)

    def current_crls(self) -> list[x509.CertificateRevocationList]:
        """The latest CRL of the root and of every intermediate still valid."""
        return _crl.current_crls(self)

    # --- rotation --------------------------------------------------------------------------------------

    def rotate_intermediate(self, *, offline_root: str | os.PathLike[str] | None = None) -> x509.Certificate:
        """A new intermediate signed by the root; the old one is retired but stays in the trust bundle
        (with its CRL) until it expires, so every certificate it issued keeps working."""
        return _keys.rotate_intermediate(self, offline_root=offline_root)

    # --- the trust bundle -------------------------------------------------------------------------------

    def trust_bundle(self) -> TrustBundle:
        """The bundle as the store would publish it now (without reading the published directory)."""
        return _publish.trust_bundle(self)

    def publish(self, *, run_hooks: bool = True) -> PublishResult:
        """Write root, intermediates, CA bundle and CRLs (world-readable) to the trust directory, then run
        the reload hooks. What is published is read under the store lock, so a concurrent change is either
        in it or publishes after it; each file is replaced atomically. A pending publication (and any
        audit event a killed command owed) is finished by it."""
        return _publish.publish(self, run_hooks=run_hooks)

    def _publish_files(self) -> PublishResult:
        return _publish._publish_files(self)

    def run_reload_hooks(self) -> list[dict[str, Any]]:
        """Run each configured hook (argv split like a shell, no shell); a failing hook raises after all ran."""
        return _publish.run_reload_hooks(self)

    # --- reading the inventory -------------------------------------------------------------------------------

    _COLS = (
        "c.name, c.profile, c.serial, c.subject, c.sans, c.key_type, c.not_before, c.not_after, c.current,"
        " c.revoked_at, c.revocation_reason, c.issued_at, c.source, c.key_pem IS NOT NULL, a.subject, c.paths"
    )

    def _record(self, row: Sequence[Any], now: dt.datetime) -> CertRecord:
        return _inventory._record(self, row, now)

    def list_certificates(
        self, *, expiring_days: int | None = None, include_history: bool = True
    ) -> list[CertRecord]:
        """Every certificate ever issued (oldest first); with ``expiring_days``, only current valid ones
        whose notAfter falls within that many days."""
        return _inventory.list_certificates(
            self, expiring_days=expiring_days, include_history=include_history
        )

    def records(self, serials: Sequence[str]) -> list[CertRecord]:
        """Inventory records of many serials in one query (order kept; unknown serials are skipped)."""
        return _inventory.records(self, serials)

    def get(self, name_or_serial: str) -> CertRecord:
        return _inventory.get(self, name_or_serial)

    def certificate(self, name_or_serial: str) -> x509.Certificate:
        return _inventory.certificate(self, name_or_serial)

    def leaf(self, name: str, *, key_passphrase: bytes | None = None) -> tuple[x509.Certificate, PrivateKey]:
        """The current certificate named ``name`` and its private key (for signing or deployment)."""
        return _export.leaf(self, name, key_passphrase=key_passphrase)

    def chain_for(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The intermediate(s) between ``cert`` and the root, nearest first."""
        return _export.chain_for(self, cert)

    # --- export ------------------------------------------------------------------------------------------------

    def export_pem(
        self, name: str, directory: str | os.PathLike[str], *, replace: bool = False
    ) -> dict[str, str]:
        """Write ``cert.pem``, ``chain.pem`` (intermediate), ``fullchain.pem`` (leaf + intermediate), ``ca.pem``
        (root) and ``key.pem`` (0600, when the key is in the store) to ``directory``. Existing files are
        refused unless ``replace``."""
        return _export.export_pem(self, name, directory, replace=replace)

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
        return _export.export_p12(
            self, name, out, password, legacy=legacy, replace=replace, key_passphrase=key_passphrase
        )

    def _record_export(self, rec: CertRecord, path: str, fmt: str) -> None:
        return _export._record_export(self, rec, path, fmt)

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
