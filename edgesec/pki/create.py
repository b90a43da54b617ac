"""Creating a CA store: ``init`` builds the whole store in a temporary directory and renames it into place."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgesec._fs import FileLock, atomic_write, ensure_private_dir, fsync_dir
from edgesec.errors import AlreadyExists, InputError
from edgesec.pki import secrets
from edgesec.pki.builder import (
    BACKDATE,
    KEY_TYPES,
    NameConstraints,
    build_certificate,
    common_name,
    generate_key,
    subject_name,
)
from edgesec.pki.inventory import (
    _SCHEMA,
    SCHEMA_VERSION,
    _insert_ca,
    _iso,
    killpoint,
)
from edgesec.pki.layout import (
    CA_DIR,
    DB_FILE,
    INIT_LOCK_FILE,
    INIT_TMP_PREFIX,
    LOCK_FILE,
    OFFLINE_FILES,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    _offline_key_name,
    _remove_stale_builds,
    _store_dir,
    intermediate_files,
)
from edgesec.pki.settings import PkiSettings
from edgesec.pki.trust import (
    cert_pem,
    utcnow,
)

if TYPE_CHECKING:
    from edgesec.pki.ca import CertificateAuthority


def _check_dn_value(v: str, what: str) -> str:
    v = v.strip() if isinstance(v, str) else ""
    if not v or len(v) > 64 or any(ord(c) < 32 for c in v):
        raise InputError(f"{what} must be 1-64 printable characters")
    return v


def init(
    cls: type[CertificateAuthority],
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
        pw = secrets.check_new_passphrase(passphrase.encode() if isinstance(passphrase, str) else passphrase)
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


def _build(
    cls: type[CertificateAuthority],
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
        atomic_write(cadir / ROOT_CERT_FILE, cert_pem(root), mode=0o644)
        killpoint("init root certificate")
        atomic_write(cadir / intermediate_files(1)[0], cert_pem(inter), mode=0o644)
        killpoint("init intermediate certificate")
        atomic_write(cadir / intermediate_files(1)[1], secrets.key_to_pem(inter_key, pw), mode=0o600)
        killpoint("init intermediate key")
        root_key_file: str | None = ROOT_KEY_FILE
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
            atomic_write(cadir / ROOT_KEY_FILE, secrets.key_to_pem(root_key, root_pw), mode=0o600)
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
            _insert_ca(conn, inter, "intermediate", intermediate_files(1)[1], now)
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
