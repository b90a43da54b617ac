"""The file names and paths of the CA store and of the trust bundle it publishes: the one place that knows
them (the store, its recovery and backup, and the pki checks that read the store and the bundle as files).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
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
# In CA_DIR: the root certificate and key, and every intermediate the store ever had (N = 1, 2, ...).
ROOT_CERT_FILE = "root.pem"
ROOT_KEY_FILE = "root.key"
INTERMEDIATE_PREFIX = "intermediate-"

# The published trust bundle (its own directory).
ROOT_FILE = "root.pem"
INTERMEDIATES_FILE = "intermediates.pem"
CA_BUNDLE_FILE = "ca-bundle.pem"
CRL_FILE = "crl.pem"
MANIFEST_FILE = "bundle.json"

_INTERMEDIATE = re.compile(r"intermediate-([1-9][0-9]{0,8})\.(pem|key)")


def intermediate_files(n: int) -> tuple[str, str]:
    """The certificate and key file names (in ``CA_DIR``) of the store's ``n``-th intermediate."""
    return f"{INTERMEDIATE_PREFIX}{n}.pem", f"{INTERMEDIATE_PREFIX}{n}.key"


def intermediate_number(file_name: str) -> int | None:
    """``N`` of ``intermediate-N.pem`` / ``.key``; ``None`` for any other name (a stray file is no intermediate)."""
    m = _INTERMEDIATE.fullmatch(file_name)
    return int(m.group(1)) if m else None


def configured_store(path: str, exists: Callable[[str], bool]) -> str:
    """The store a configured ``store_dir`` names: the directory itself, or, when it holds no inventory but
    its ``pki/`` does, the home holding the store (what ``CertificateAuthority.open(exact=True)`` accepts).
    ``exists`` answers for a path (the checks ask their file probe)."""
    if not exists(f"{path}/{DB_FILE}") and exists(f"{path}/pki/{DB_FILE}"):
        return f"{path}/pki"
    return path


def _store_dir(path: Path, exact: bool = False) -> Path:
    """The store directory for a path that names either an edgesec home or a store (``exact``: a store)."""
    if exact:
        # a configured store_dir that names the home holding the store: accept it rather than fail
        return Path(configured_store(str(path), lambda p: Path(p).exists()))
    if (path / DB_FILE).exists() or path.name == "pki":
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
