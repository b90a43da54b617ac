"""The test session's guard over the host's real edgesec state.

Before any fixture runs (conftest import time), ``EDGESEC_HOME`` points at a session temporary home and
the config search path is emptied, so even module- and session-scoped fixtures never default to
``/var/lib/edgesec`` or read ``/etc/edgesec``. At session start the guarded trees are snapshotted; at
session end they are compared and any difference fails the session, naming each changed path.

``EDGESEC_TEST_GUARD_DIRS`` (``:``-separated) replaces the guarded list; the guard's own test uses it to
point the guard at a scratch directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

Snapshot = dict[str, tuple[int, ...]]


def guarded_dirs() -> list[Path]:
    env = os.environ.get("EDGESEC_TEST_GUARD_DIRS")
    if env is not None:
        return [Path(p) for p in env.split(":") if p]
    dirs = [Path("/var/lib/edgesec"), Path("/etc/edgesec")]
    try:
        user = Path("~").expanduser()
    except RuntimeError:
        return dirs
    return [*dirs, user / ".local/share/edgesec", user / ".config/edgesec"]


def snapshot(roots: Iterable[Path]) -> Snapshot:
    """Every path under each root with its type, mode, owner, size, mtime and inode (absent roots too)."""
    out: Snapshot = {}
    for root in roots:
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            out[str(root)] = (-1,)
            continue
        out[str(root)] = _key(st)
        if not stat.S_ISDIR(st.st_mode):
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                try:
                    out[p] = _key(os.lstat(p))
                except FileNotFoundError:
                    continue
    return out


def _key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ino)


def changes(before: Mapping[str, tuple[int, ...]], after: Mapping[str, tuple[int, ...]]) -> list[str]:
    """One line per created, removed or modified path."""
    lines = []
    for p in sorted(set(before) | set(after)):
        b, a = before.get(p, (-1,)), after.get(p, (-1,))
        if b == a:
            continue
        if b == (-1,):
            lines.append(f"created: {p}")
        elif a == (-1,):
            lines.append(f"removed: {p}")
        else:
            lines.append(f"modified: {p}")
    return lines
