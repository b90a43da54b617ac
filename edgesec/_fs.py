"""File-system primitives every part uses: atomic writes, private directories and inter-process locks.

The rule they implement: nothing already on disk is overwritten or lost. Writes go to a temporary file
in the same directory, are fsynced, then renamed into place (and the directory fsynced), so a reader
sees the old file or the new one, never half of one. ``exclusive=True`` refuses to replace an existing
file, using ``link()`` so the check and the creation are one atomic step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgesec.errors import AlreadyExists, InputError


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) if missing; tighten its mode to ``mode``."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if (path.stat().st_mode & 0o777) != mode:
        os.chmod(path, mode)
    return path


def atomic_write(
    path: Path,
    data: bytes | str,
    *,
    mode: int = 0o600,
    exclusive: bool = False,
    durable: bool = True,
) -> Path:
    """Write ``data`` to ``path`` atomically with permissions ``mode``.

    With ``exclusive`` the call raises :class:`AlreadyExists` if ``path`` exists, and never replaces it.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"directory does not exist: {parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AlreadyExists(f"refusing to overwrite existing file: {path}") from None
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        if durable:
            fsync_dir(parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


class FileLock:
    """An advisory ``flock`` on a lock file, shared by every process on the host.

    Used as a context manager; re-entrant within one object is not supported (take it once).
    """

    def __init__(self, path: Path, *, shared: bool = False, timeout: float | None = None) -> None:
        self.path = Path(path)
        self.shared = shared
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if self.timeout is None:
                fcntl.flock(fd, op)
            else:
                import time

                deadline = time.monotonic() + self.timeout
                while True:
                    try:
                        fcntl.flock(fd, op | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EACCES):
                            raise
                        if time.monotonic() >= deadline:
                            raise InputError(
                                f"another edgesec process holds the lock {self.path}",
                                hint="wait for it to finish, then re-run",
                            ) from None
                        time.sleep(0.02)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Context manager form of :class:`FileLock`."""
    with FileLock(path, shared=shared, timeout=timeout):
        yield


def read_input_file(path: Path, *, what: str = "file", limit: int = 64 * 1024 * 1024) -> bytes:
    """Read a user-supplied file, turning every OS error into one clear :class:`InputError` line."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory, expected a file: {path}") from None
    except PermissionError:
        raise InputError(f"{what} is not readable (permission denied): {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} is larger than {limit} bytes: {path}")
    return data
