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

import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
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
    SubjectAltNames,
)
from edgesec.pki.inventory import (
    SCHEMA_VERSION,
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

    _write = _inventory._write
    _ensure_journal = _inventory._ensure_journal
    _journal = _inventory._journal
    _write_pending_marker = _inventory._write_pending_marker
    _drain_journal = _inventory._drain_journal
    _drain_rows = _inventory._drain_rows
    _emit_documents = _inventory._emit_documents
    needs_recovery = _inventory.needs_recovery
    _orphan_files = _inventory._orphan_files
    recover = _inventory.recover
    _write_status = _publish._write_status
    _expected_publication = _publish._expected_publication
    meta = _inventory.meta

    # --- passphrase and keys -------------------------------------------------------------------------

    _get_passphrase = _keys._get_passphrase

    def use_root_passphrase(self, source: secrets.PassphraseSource) -> None:
        """Where the root key's own passphrase comes from (default: its file option's sources)."""
        self._root_passphrase_source = source
        self._root_passphrase = None

    _get_root_passphrase = _keys._get_root_passphrase
    _load_ca_key = _keys._load_ca_key
    _active_intermediate = _keys._active_intermediate
    _checked_intermediate = _keys._checked_intermediate
    signer = _keys.signer
    root_certificate = _keys.root_certificate
    intermediates = _keys.intermediates
    _load_root_key = _keys._load_root_key

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

    _days = _issue._days
    _issue_in_tx = _issue._issue_in_tx
    _issued_event = _issue._issued_event
    issue = _issue.issue

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

    issue_clients = _issue.issue_clients

    last_skipped: list[str] = []  # noqa: RUF012 - replaced per call, never mutated in place

    sign_csr = _issue.sign_csr
    _audit_refused = _issue._audit_refused
    _audit_csr_refused = _issue._audit_csr_refused
    renew = _issue.renew

    # --- revocation and CRLs -------------------------------------------------------------------------

    _find = _inventory._find
    _mark_revoked = _crl._mark_revoked
    _revoked_event = _crl._revoked_event
    revoke = _crl.revoke

    last_revoke_repeated = False

    _crl_event = _crl._crl_event
    generate_crl = _crl.generate_crl
    _sign_crls = _crl._sign_crls
    _root_crl_due = _crl._root_crl_due
    _root_row = _crl._root_row
    _store_crl = _crl._store_crl
    _current_crl_rows = _crl._current_crl_rows
    current_crls = _crl.current_crls

    # --- rotation --------------------------------------------------------------------------------------

    rotate_intermediate = _keys.rotate_intermediate

    # --- the trust bundle -------------------------------------------------------------------------------

    trust_bundle = _publish.trust_bundle
    publish = _publish.publish
    _publish_files = _publish._publish_files
    run_reload_hooks = _publish.run_reload_hooks

    # --- reading the inventory -------------------------------------------------------------------------------

    _COLS = (
        "c.name, c.profile, c.serial, c.subject, c.sans, c.key_type, c.not_before, c.not_after, c.current,"
        " c.revoked_at, c.revocation_reason, c.issued_at, c.source, c.key_pem IS NOT NULL, a.subject, c.paths"
    )

    _record = _inventory._record
    list_certificates = _inventory.list_certificates
    records = _inventory.records
    get = _inventory.get
    certificate = _inventory.certificate
    leaf = _export.leaf
    chain_for = _export.chain_for

    # --- export ------------------------------------------------------------------------------------------------

    export_pem = _export.export_pem
    export_p12 = _export.export_p12
    _record_export = _export._record_export

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
