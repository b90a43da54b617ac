"""Encrypted backup of a CA store and its restore into a new, empty place."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from edgesec._fs import FileLock, atomic_write, ensure_private_dir, fsync_dir
from edgesec.errors import AlreadyExists, InputError, VerificationError
from edgesec.pki.ca import CertificateAuthority
from edgesec.pki.layout import (
    CA_DIR,
    DB_FILE,
    INIT_LOCK_FILE,
    LOCK_FILE,
    RESTORE_TMP_PREFIX,
    _remove_stale_builds,
    _store_dir,
)
from edgesec.pki.settings import PkiSettings

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
