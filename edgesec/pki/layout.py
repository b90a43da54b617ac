"""The file names and paths of the CA store and of the trust bundle it publishes: the one place that knows
them (the store, its recovery and backup, and the pki checks that read the store and the bundle as files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cryptography import x509

DB_FILE = "inventory.db"


STATUS_FILE = "status.json"


LOCK_FILE = "lock"


INIT_LOCK_FILE = ".pki-init.lock"


INIT_TMP_PREFIX = ".pki-init-"


OFFLINE_FILES = "offline-files.json"


RESTORE_TMP_PREFIX = ".pki-restore-"


PENDING_FILE = "publish.pending"


CA_DIR = "ca"


def _store_dir(path: Path, exact: bool = False) -> Path:
    """The store directory for a path that names either an edgesec home or a store (``exact``: a store)."""
    if exact and not (path / DB_FILE).exists() and (path / "pki" / DB_FILE).exists():
        # a configured store_dir that names the home holding the store: accept it rather than fail
        return path / "pki"
    if exact or (path / DB_FILE).exists() or path.name == "pki":
        return path
    return path / "pki"


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
