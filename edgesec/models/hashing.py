"""Walking a model directory and hashing it in parallel with bounded memory.

A unit of hashing work is a :class:`Task`: one byte range of one file. Large files are split into
shards so that even a single multi-gigabyte file keeps every core busy; each worker thread owns one
reused buffer and reads into it with ``readinto`` (no mmap, no per-read allocation), so peak memory is
``workers x chunk`` whatever the model size. ``hashlib`` releases the GIL on large updates, so threads
scale across cores.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, cast

from edgesec.errors import InputError, UsageError

CHUNK = 1024 * 1024
"""Bytes read per ``readinto``. Measured on a 2-core pin: 128 KiB to 4 MiB hash at the same speed (the copy
out of the page cache costs the same per byte); 1 MiB keeps the per-call overhead negligible and the
buffer in L2."""

DEFAULT_SHARD_SIZE = 64 * 1024 * 1024
"""Shard size of edgesec manifests: a 4 GiB file is 64 tasks, enough to balance 16 cores; a 100 GB model
costs ~1,500 digests (~100 KB of manifest)."""

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
"""Ignored by default, as the OpenSSF ``model_signing`` tool does (both sides must agree)."""


class Hasher(Protocol):
    """The part of a hash object this module uses."""

    def update(self, data: Any, /) -> None: ...

    def digest(self) -> bytes: ...


def hasher_factory(algorithm: str) -> Callable[[], Hasher]:
    """A constructor of streaming hashers for a manifest algorithm name."""
    if algorithm == "sha256":
        return hashlib.sha256
    if algorithm == "blake3":
        try:
            import blake3
        except ImportError:
            raise UsageError(
                "BLAKE3 manifests need the blake3 package", hint="pip install 'edgesec[blake3]'"
            ) from None
        return lambda: cast(Hasher, blake3.blake3(max_threads=blake3.blake3.AUTO))
    raise InputError(f"unsupported digest algorithm {algorithm!r} (edgesec supports sha256 and blake3)")


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


# --- walking --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirIssue:
    """Something in the directory that is not a plain file the manifest can cover."""

    path: str
    kind: str  # "symlink", "symlink-escape", "special", "unreadable"
    detail: str

    def line(self) -> str:
        return f"{self.kind.upper()} {self.path}: {self.detail}"


@dataclass
class Listing:
    """The plain files of a model directory (relative POSIX path -> size) and what was refused."""

    files: dict[str, int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    issues: list[DirIssue] = field(default_factory=list)


def printable(text: str) -> str:
    """``text`` with control characters, newlines and undecodable bytes escaped: a file name cannot forge a line."""
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0 or 0xDC80 <= o <= 0xDCFF or ch in "\u2028\u2029":
            out.append(f"\\x{o & 0xFF:02x}" if o < 0x100 or 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def is_ignored(rel: str, patterns: Sequence[str], literal: Sequence[str] = ()) -> bool:
    """Whether ``rel`` or one of its parent directories matches a pattern or is a literal path.

    A pattern with a ``/`` matches the relative path (``logs/*.txt``); one without also matches any single
    component (``*.log``, ``.cache``), as in ``.gitignore``. ``literal`` paths (model_signing's
    ``ignore_paths``) match only themselves and what lies under them, from the model's root.
    """
    for lit in literal:
        lit = lit.strip("/")
        if lit and (rel == lit or rel.startswith(lit + "/")):
            return True
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        pat = pat.strip("/")
        if not pat:
            continue
        if "/" in pat:
            if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
                return True
        elif any(fnmatch.fnmatchcase(c, pat) for c in parts):
            return True
    return False


def walk(
    root: Path, *, ignore: Sequence[str] = (), literal: Sequence[str] = (), follow_symlinks: bool = False
) -> Listing:
    """List the model directory without following anything out of it.

    Symlinks are refused unless ``follow_symlinks``; even then one whose target leaves ``root`` (or is not
    a regular file) is an issue, never read. Sockets, FIFOs and devices are issues: reading a FIFO would
    block the verifier forever.
    """
    listing = Listing()
    real_root = os.path.realpath(root)

    def visit(directory: str, rel_dir: str) -> list[tuple[str, str]]:
        """List one directory; returns its subdirectories (walked by the caller, so depth costs no stack)."""
        subdirs: list[tuple[str, str]] = []
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            listing.issues.append(DirIssue(rel_dir or ".", "unreadable", e.strerror or str(e)))
            return subdirs
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if is_ignored(rel, ignore, literal):
                listing.ignored.append(rel)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                listing.issues.append(DirIssue(rel, "unreadable", e.strerror or str(e)))
                continue
            if stat.S_ISLNK(st.st_mode):
                _symlink(entry.path, rel)
            elif stat.S_ISDIR(st.st_mode):
                subdirs.append((entry.path, rel))
            elif stat.S_ISREG(st.st_mode):
                listing.files[rel] = st.st_size
            else:
                listing.issues.append(DirIssue(rel, "special", "not a regular file or directory"))
        return subdirs

    def _symlink(path: str, rel: str) -> None:
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        inside = resolved == real_root or resolved.startswith(real_root + os.sep)
        if not inside:
            listing.issues.append(
                DirIssue(rel, "symlink-escape", f"points outside the model directory ({target})")
            )
        elif not follow_symlinks:
            listing.issues.append(DirIssue(rel, "symlink", f"symlinks are not allowed ({target})"))
        else:
            try:
                tst = os.stat(resolved)
            except OSError as e:
                listing.issues.append(DirIssue(rel, "symlink", f"dangling ({e.strerror})"))
                return
            if stat.S_ISREG(tst.st_mode):
                listing.files[rel] = tst.st_size
            else:
                listing.issues.append(
                    DirIssue(rel, "symlink", f"only links to files are followed ({target})")
                )

    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    stack = [(str(root), "")]
    while stack:
        stack.extend(reversed(visit(*stack.pop())))
    return listing


def sort_key(rel: str) -> tuple[str, ...]:
    """The order ``model_signing`` sorts resources in (by path components, not by string)."""
    return PurePosixPath(rel).parts


def shard_ranges(size: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering ``size`` bytes (none for an empty file, as model_signing)."""
    return [(s, min(s + shard_size, size)) for s in range(0, size, shard_size)]


# --- hashing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Hash ``[start, end)`` of ``path`` (``end=None``: to the end of the file)."""

    key: Any
    path: Path
    start: int
    end: int | None
    algorithm: str

    @property
    def length(self) -> int:
        return 0 if self.end is None else self.end - self.start


@dataclass(frozen=True)
class TaskResult:
    """A digest, the bytes actually read, or the error that stopped the read."""

    digest: bytes | None
    read: int
    error: str | None = None


def _hash_range(
    task: Task, buf: bytearray, new: Callable[[], Hasher], tick: Callable[[int], None]
) -> TaskResult:
    h = new()
    view = memoryview(buf)
    total = 0
    try:
        with open(task.path, "rb", buffering=0) as f:
            if task.start:
                f.seek(task.start)
            remaining = None if task.end is None else task.end - task.start
            while remaining is None or remaining > 0:
                want = len(buf) if remaining is None else min(len(buf), remaining)
                n = f.readinto(view[:want])
                if not n:
                    break  # the file is shorter than signed: the digest will differ
                h.update(view[:n])
                total += n
                tick(n)
                if remaining is not None:
                    remaining -= n
    except OSError as e:
        return TaskResult(None, total, e.strerror or str(e))
    return TaskResult(h.digest(), total)


def run_tasks(
    tasks: Iterable[Task],
    *,
    workers: int | None = None,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> dict[Any, TaskResult]:
    """Hash every task on ``workers`` threads; each thread reuses one ``chunk``-sized buffer.

    Larger tasks are started first so that the last seconds are not spent waiting on one big shard.
    Peak memory is ``workers x chunk`` plus one future per task.
    """
    todo = sorted(tasks, key=lambda t: -t.length)
    n_workers = max(1, min(workers or cpu_count(), len(todo) or 1))
    factories: dict[str, Callable[[], Hasher]] = {a: hasher_factory(a) for a in {t.algorithm for t in todo}}
    tick = progress or (lambda n: None)
    local = threading.local()

    def one(t: Task) -> TaskResult:
        buf = getattr(local, "buf", None)
        if buf is None:  # one buffer per worker thread, reused for every task it runs
            buf = local.buf = bytearray(chunk)
        return _hash_range(t, buf, factories[t.algorithm], tick)

    # Tasks are submitted largest first and the executor runs them in order, so big shards start early.
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="edgesec-hash") as pool:
        futures = {t.key: pool.submit(one, t) for t in todo}
        return {k: f.result() for k, f in futures.items()}
