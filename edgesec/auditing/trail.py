"""The host's append-only, hash-chained audit trail (JSON lines).

Each record is one ECS document on one line. The writer adds, under an exclusive ``flock`` shared by
every process on the host:

* ``event.sequence`` -- 1, 2, 3, ... across the whole chain;
* ``edgesec.trail.prev`` -- the previous record's hash (64 zeros for the first record);
* ``event.hash`` -- SHA-256 (hex) of the record's canonical JSON without ``event.hash`` itself.

Canonical JSON: keys sorted, no whitespace, UTF-8 (``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``); the line on disk *is* that canonical form, so a verifier needs no re-encoding.

Crash safety: a record is written with one ``write()`` of a whole line. If a writer is killed mid-line,
the next writer finds a file that does not end in ``\\n``; it copies the torn bytes to
``torn/`` (evidence, never deleted), truncates the file back to the last complete line, and appends a
``trail.repaired`` record naming the fragment's size and digest -- so the chain is never broken and
the repair itself is on the record.

Durability (``[auditing] durability``): ``fsync`` -- ``append()`` returns after ``fdatasync``;
``group`` -- ``submit()`` queues, a writer thread writes and fdatasyncs whatever has queued, so a record
is durable within about ``group_commit_ms`` of ``submit()`` under normal load, and ``flush()`` waits for
it; ``none`` -- ``write()`` only.

Nothing is dropped silently. A write or fdatasync that fails (a full disk) cuts the file back to its last
whole record and raises :class:`TrailWriteFailed`; under ``group`` the failed records stay queued and are
written when the disk takes them again, while ``submit()``, ``flush()`` and ``wait_durable()`` raise the
error, naming how many records are not on disk, until a write succeeds (``error()`` says the same for a
health check). A record that cannot be written at all (a string that is not valid Unicode, a value that is
not JSON data) is set aside as evidence under ``rejected/`` and a ``trail.record_rejected`` record takes its
place in the chain, so one bad record never blocks the ones after it.

Sharing: a trail directory is private (created 0700, files 0600) unless its group has ``rwx`` (the
tmpfiles entry of ``edgesec site units`` makes it ``02770 root:<service group>``): then the current
file, rotated files and ``trail.lock`` are 0660 in the directory's group, so root-run commands and the
ForwardAuth service user append to one chain. A write that fails sets :attr:`Trail.failure` (the
service's ``/readyz`` reports it) and logs one error when the trail goes from writable to failing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from edgesec._fs import FileLock, atomic_write, ensure_private_dir, fsync_dir
from edgesec.auditing.canonical import canonical, record_hash, seal
from edgesec.auditing.ecs import AuditEvent
from edgesec.errors import OperationFailed, VerificationError

if TYPE_CHECKING:
    from edgesec.auditing.prepared import Prepared

#: What the writer takes: a nested document, or a record prepared against a compiled shape.
Record = Union[dict[str, Any], "Prepared"]

GENESIS = "0" * 64
#: Group commit writes at once when this many records are queued, without waiting out the window.
GROUP_MAX_BATCH = 4096
#: Group commit gathers records for at most this long (or group_commit_ms if shorter) before writing:
#: enough to make one write and fdatasync serve many records, short enough that sealing a batch does
#: not hold the interpreter lock (and so the request path) for long.
GROUP_GATHER_S = 0.02
CURRENT = "trail.jsonl"
LOCK = "trail.lock"
TORN_DIR = "torn"
#: The largest record the trail writes (its line, newline included). The generated syslog-ng pipeline reads
#: lines up to a little more than this (log-msg-size), so a record always reaches it whole; a larger one is
#: set aside under ``rejected/`` like an unencodable one.
MAX_RECORD_BYTES = 1024 * 1024
REJECTED_DIR = "rejected"
# Rotated files: trail.<first-seq:012d>-<last-seq:012d>.jsonl, in the same directory.
ROTATED_GLOB = "trail.*-*.jsonl"
SHARED_MODE = 0o660
log = logging.getLogger("edgesec.auditing.trail")


def _share(fd: int, mode: int, gid: int) -> None:
    """Give a file we own the shared directory's mode and group (umask and a setgid-less dir aside)."""
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        return
    if st.st_gid != gid:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)


class TrailWriteFailed(OperationFailed):
    """Records could not be written to the trail (a full disk, an I/O error); ``written`` of the batch were."""

    kind = "trail-write-failed"

    def __init__(
        self, message: str, *, written: int = 0, reason: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.written = written
        self.reason = reason or self.message


class _Unwritable(Exception):
    """The lines from ``done`` on were not written; the current file was cut back to ``size``."""

    def __init__(self, done: int, exc: OSError) -> None:
        super().__init__(str(exc))
        self.done = done
        self.exc = exc


class TrailCorrupt(OperationFailed):
    """The trail's last complete record cannot be read, so the chain cannot be continued safely."""

    kind = "trail-corrupt"


@dataclass
class _Head:
    seq: int
    digest: str
    size: int
    ino: int


def rotated_files(directory: Path) -> list[Path]:
    """Rotated trail files in chain order (by first sequence number)."""
    return sorted(directory.glob(ROTATED_GLOB))


def trail_files(directory: Path) -> list[Path]:
    """Every file of the chain, oldest first; the current file last."""
    files = rotated_files(directory)
    cur = directory / CURRENT
    if cur.exists():
        files.append(cur)
    return files


def _last_line(fd: int, size: int) -> tuple[bytes, int]:
    """The last complete line of the file and the offset just after it; handles a torn tail."""
    chunk = 65536
    end = size
    buf = b""
    while end > 0:
        start = max(0, end - chunk)
        buf = os.pread(fd, end - start, start) + buf
        end = start
        nl = buf.rfind(b"\n", 0, len(buf) - 1) if buf.endswith(b"\n") else buf.rfind(b"\n")
        if nl != -1 or end == 0:
            break
    # Offset of buf[0] in the file is `end`.
    if buf.endswith(b"\n"):
        prev_nl = buf.rfind(b"\n", 0, len(buf) - 1)
        return buf[prev_nl + 1 : -1], size
    # Torn: the complete part ends at the last newline.
    nl = buf.rfind(b"\n")
    if nl == -1:
        return b"", end  # nothing complete in the file (offset 0)
    complete_end = end + nl + 1
    prev_nl = buf.rfind(b"\n", 0, nl)
    return buf[prev_nl + 1 : nl], complete_end


def _parse_head(line: bytes, where: Path) -> tuple[int, str]:
    try:
        doc = json.loads(line)
        seq = int(doc["event"]["sequence"])
        digest = str(doc["event"]["hash"])
    except (ValueError, KeyError, TypeError):
        raise TrailCorrupt(
            f"the last record of {where} is not a trail record; refusing to continue the chain",
            hint="run `edgesec auditlog verify` and keep the file as evidence",
        ) from None
    return seq, digest


class Trail:
    """One host trail directory. Thread-safe; many processes may append to the same directory."""

    def __init__(
        self,
        directory: Path,
        *,
        durability: str = "fsync",
        group_commit_ms: int = 50,
        rotate_bytes: int | None = None,
        rotate_daily: bool = False,
    ) -> None:
        if durability not in ("fsync", "group", "none"):
            raise ValueError(durability)
        self.dir = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        # (inode, first sequence, UTC date of the first record) of the current file, cached per inode.
        self._first: tuple[int, int, str] | None = None
        self._dir_ready = False
        self._lock_path = self.dir / LOCK
        # Called with (records, their lines) after each durable write: the RFC 5424 forwarder.
        self.listeners: list[Callable[[list[dict[str, Any]], list[bytes]], None]] = []
        self.path = self.dir / CURRENT
        self.durability = durability
        self.interval = group_commit_ms / 1000.0
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._head: _Head | None = None
        # group commit state
        self._cond = threading.Condition()
        self._queue: list[Record] = []
        self._submitted = 0
        self._durable = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._oldest = 0.0  # monotonic time the oldest queued record was submitted
        self._hurry = False  # someone waits for durability: write what is queued now
        # Records made by the writer itself (a repair note) that a failed write could not write yet.
        self._carry: list[dict[str, Any]] = []
        self._attempts = 0  # group-commit writes tried, failed or not
        self._mode = 0o600
        self._gid = -1
        #: Why the last write failed (``None`` while the trail is writable).
        self.failure: str | None = None
        _LIVE.add(self)

    def _prepare_dir(self) -> None:
        """Create the directory private, or adopt a group-shared one (see the module docstring)."""
        try:
            st = os.stat(self.dir)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_mode & 0o070 == 0o070:
            self._mode, self._gid = SHARED_MODE, st.st_gid
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SHARED_MODE)
            try:
                _share(fd, SHARED_MODE, st.st_gid)
            finally:
                os.close(fd)
            return
        self._mode, self._gid = 0o600, -1
        if st is None or st.st_uid == os.geteuid():
            ensure_private_dir(self.dir)

    # -- writing ---------------------------------------------------------------------------------
    def _open(self) -> int:
        self._prepare_dir()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self._mode)
        if self._mode != 0o600:
            _share(fd, self._mode, self._gid)
        return fd

    def _current_fd(self) -> int:
        """Our append fd, reopened if the current file was rotated away since we opened it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._fd is not None and st is not None and os.fstat(self._fd).st_ino == st.st_ino:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._head = None
        self._fd = self._open()
        return self._fd

    def _read_head(self, fd: int) -> tuple[_Head, list[dict[str, Any]]]:
        """The chain head, repairing a torn tail first. Returns records to prepend (a repair note)."""
        st = os.fstat(fd)
        if self._head is not None and self._head.size == st.st_size and self._head.ino == st.st_ino:
            return self._head, []
        extra: list[dict[str, Any]] = []
        if st.st_size == 0:
            seq, digest = self._head_from_rotated()
            return _Head(seq, digest, 0, st.st_ino), extra
        rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            line, complete_end = _last_line(rfd, st.st_size)
            if complete_end != st.st_size:
                fragment = os.pread(rfd, st.st_size - complete_end, complete_end)
                extra.append(self._fence(fd, fragment, complete_end))
                st = os.fstat(fd)
        finally:
            os.close(rfd)
        if not line:
            seq, digest = self._head_from_rotated()
        else:
            seq, digest = _parse_head(line, self.path)
        return _Head(seq, digest, st.st_size, st.st_ino), extra

    def _fence(self, fd: int, fragment: bytes, offset: int) -> dict[str, Any]:
        """Keep a torn fragment as evidence, cut it from the file, and describe it in a record."""
        torn = self.dir / TORN_DIR
        if self._mode == SHARED_MODE:  # any writer of a shared trail may have to keep a fragment
            torn.mkdir(mode=0o2770, exist_ok=True)
            st = os.stat(torn)
            if st.st_uid == os.geteuid() and (stat.S_IMODE(st.st_mode) != 0o2770 or st.st_gid != self._gid):
                with contextlib.suppress(PermissionError):
                    os.chown(torn, -1, self._gid)
                os.chmod(torn, 0o2770)  # noqa: S103 -- shared with the service group by design
        else:
            ensure_private_dir(torn)
        digest = hashlib.sha256(fragment).hexdigest()
        name = f"{int(time.time())}-{offset}-{digest[:16]}.frag"
        with contextlib.suppress(FileExistsError):
            atomic_write(torn / name, fragment, exclusive=True)
        os.ftruncate(fd, offset)
        os.fsync(fd)
        return AuditEvent(
            action="trail.repaired",
            category=("file",),
            type=("change",),
            outcome="success",
            severity="medium",
            part="auditing",
            message=f"torn trail tail of {len(fragment)} bytes fenced at offset {offset}",
            fields={
                "file.path": str(self.path),
                "edgesec.trail.fragment_bytes": len(fragment),
                "edgesec.trail.fragment_sha256": digest,
                "edgesec.trail.fragment_file": str(torn / name),
            },
        ).to_document()

    def _head_from_rotated(self) -> tuple[int, str]:
        for f in reversed(rotated_files(self.dir)):
            if f.stat().st_size == 0:
                continue
            rfd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
            try:
                line, _ = _last_line(rfd, os.fstat(rfd).st_size)
            finally:
                os.close(rfd)
            if line:
                return _parse_head(line, f)
        return 0, GENESIS

    def _write_batch(
        self, docs: list[Record], *, sync: bool, want_docs: bool = False
    ) -> list[dict[str, Any]]:
        try:
            written = self._write_batch_now(docs, sync=sync, want_docs=want_docs)
        except OSError as exc:  # before any line was written (the lock, a repair, a rotation)
            self._head = None
            err = TrailWriteFailed(
                f"audit trail {self.path} not written: {exc.strerror or exc}; "
                f"{len(docs)} record(s) not on disk",
                reason=str(exc.strerror or exc),
                hint="free space in the trail's file system or fix its permissions",
            )
            self._note_failure(err)
            raise err from exc
        except BaseException as exc:
            self._note_failure(exc)
            raise
        if self.failure is not None:
            log.warning("audit trail %s: writable again", self.dir)
            self.failure = None
        return written

    def _note_failure(self, exc: BaseException) -> None:
        """Remember why the last write failed, logging once when the trail goes from writable to failing."""
        if self.failure is None:
            log.error("audit trail %s: cannot write: %s", self.dir, exc)
        self.failure = f"{type(exc).__name__}: {exc}"

    def _write_batch_now(
        self, docs: list[Record], *, sync: bool, want_docs: bool = False
    ) -> list[dict[str, Any]]:
        """Seal and write ``docs`` as the next records of the chain; with ``want_docs`` (or listeners)
        return them as written (a Prepared record is read back from its line).

        A record that cannot be sealed is set aside (see :meth:`_set_aside`) and its notice written in
        its place. A write or fdatasync that fails cuts the current file back to its last whole record
        and raises :class:`TrailWriteFailed` saying how many of ``docs`` were written (in files rotated
        away before the failure, which were fsynced): the rest are not on disk."""
        if not self._dir_ready:  # once per Trail: a mkdir+stat per record costs more than the write
            self._prepare_dir()
            self._dir_ready = True
        with self._mutex, FileLock(self._lock_path):
            fd = self._current_fd()
            head, extra = self._read_head(fd)
            if (self.rotate_bytes or self.rotate_daily) and head.size > 0 and self._due(fd, head):
                self._rotate(fd, head)
                fd = self._current_fd()
                head, extra2 = self._read_head(fd)
                extra += extra2
            # Notes of an earlier failed write (a repair, a record set aside) go first.
            extra, self._carry = [*self._carry, *extra], []
            seq, prev = head.seq, head.digest
            records: list[Record] = [*extra, *docs]
            out: list[bytes] = []
            chain: list[tuple[int, str]] = []  # (sequence, hash) of each line, for rotation mid-batch
            for i, doc in enumerate(records):
                seq += 1
                try:
                    prev, line = self._seal(doc, seq, prev)
                except (UnicodeError, TypeError, ValueError, RecursionError) as exc:
                    doc = records[i] = self._set_aside(doc, exc)
                    prev, line = self._seal(doc, seq, prev)
                out.append(line)
                chain.append((seq, prev))
            failure: TrailWriteFailed | None = None
            try:
                fd = self._write_lines(fd, head, out, chain, sync=sync)
            except _Unwritable as exc:
                done, cause = exc.done, exc.exc
                self._head = None  # read the head again from the file next time
                self._carry = [r for r in records[done : len(extra)] if isinstance(r, dict)]
                n_written = max(0, done - len(extra))
                failure = TrailWriteFailed(
                    f"audit trail {self.path} not written: {cause.strerror or cause}; "
                    f"{len(docs) - n_written} record(s) not on disk",
                    written=n_written,
                    reason=str(cause.strerror or cause),
                    hint="free space in the trail's file system; the records are kept and written again",
                )
                failure.__cause__ = cause
                # The lines that did go in are records like any other: the listeners get them too.
                records, out = records[:done], out[:done]
            else:
                st = os.fstat(fd)
                self._head = _Head(seq, prev, st.st_size, st.st_ino)
        written = [
            doc if isinstance(doc, dict) else json.loads(line)
            for doc, line in zip(records, out, strict=True)
        ] if (self.listeners or want_docs) else []  # fmt: skip
        # Outside the file lock: a slow receiver must not hold up other writers.
        if self.listeners and out:
            for listener in self.listeners:
                listener(written, out)
        if failure is not None:
            raise failure
        return written

    @staticmethod
    def _seal(doc: Record, seq: int, prev: str) -> tuple[str, bytes]:
        if isinstance(doc, dict):
            doc.setdefault("event", {})["sequence"] = seq
            doc.setdefault("edgesec", {}).setdefault("trail", {})["prev"] = prev
            digest, line = seal(doc)
        else:  # a Prepared record: its shape writes the same line
            digest, line = doc.shape.seal(doc.pieces, seq, prev)
        if len(line) > MAX_RECORD_BYTES:
            raise ValueError(
                f"a record of {len(line)} bytes is over the trail's limit of {MAX_RECORD_BYTES} bytes"
            )
        return digest, line

    def _set_aside(self, doc: Record, exc: BaseException) -> dict[str, Any]:
        """Keep a record that cannot be written as evidence under ``rejected/`` and return the notice
        that takes its place in the chain (the chain goes on; the record is not lost)."""
        if isinstance(doc, dict):
            event = doc.get("event")
            if isinstance(event, dict):
                for k in ("sequence", "hash"):
                    event.pop(k, None)
            trail = doc.get("edgesec", {}).get("trail") if isinstance(doc.get("edgesec"), dict) else None
            if isinstance(trail, dict):
                trail.pop("prev", None)
            try:
                text = canonical(doc)
            except (TypeError, ValueError, RecursionError):
                text = repr(doc)
        else:
            text = "".join(doc.pieces)  # the record's JSON but the trail's three fields
        # Lossless: a lone surrogate (a file name decoded with surrogateescape) is kept as written.
        data = text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(data).hexdigest()
        rejected = ensure_private_dir(self.dir / REJECTED_DIR)
        name = f"{digest[:32]}.json"  # the same record set aside again (a retried batch): one file
        with contextlib.suppress(FileExistsError):
            atomic_write(rejected / name, data, exclusive=True)
        return AuditEvent(
            action="trail.record_rejected",
            category=("file",),
            type=("info",),
            outcome="failure",
            severity="high",
            part="auditing",
            message=f"a record that cannot be written to the trail was set aside: {ascii(str(exc))[:300]}",
            fields={
                "file.path": str(rejected / name),
                "edgesec.trail.rejected_bytes": len(data),
                "edgesec.trail.rejected_sha256": digest,
            },
        ).to_document()

    def _write_lines(
        self, fd: int, head: _Head, out: list[bytes], chain: list[tuple[int, str]], *, sync: bool
    ) -> int:
        """Write the lines; with size rotation, start a new file whenever one reaches ``rotate_bytes``
        (a large group-commit batch is split, so files stay near the configured size).

        A failed write or fdatasync cuts the current file back to where this batch began in it and raises
        :class:`_Unwritable` with the number of lines before that (whole, in rotated and fsynced files)."""
        size = head.size
        base_i, base_size = 0, head.size  # the first line of the batch in the current file, and where
        i = 0
        done = 0  # bytes of out[base_i:] in the current file
        syncing = False
        try:
            while i < len(out):
                if self.rotate_bytes and size >= self.rotate_bytes:
                    seq, digest = chain[i - 1] if i else (head.seq, head.digest)
                    at = _Head(seq, digest, size, os.fstat(fd).st_ino)
                    self._rotate(fd, at)
                    fd = self._current_fd()
                    size = 0
                    base_i, base_size, done = i, 0, 0
                j, chunk = i, 0
                while j < len(out) and (
                    j == i or not self.rotate_bytes or size + chunk + len(out[j]) <= self.rotate_bytes
                ):
                    chunk += len(out[j])
                    j += 1
                view = memoryview(b"".join(out[i:j]))
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    done += n
                size += chunk
                i = j
            syncing = True
            if sync:
                os.fdatasync(fd)
        except OSError as exc:
            # A failed fdatasync leaves nothing of this file's part of the batch sure: cut it all.
            # A failed write (a full disk takes part of a batch) keeps the whole lines that went in,
            # if they can be made durable, and cuts the rest, so the file ends on a whole record.
            k, kept = base_i, 0
            if not syncing:
                while k < len(out) and kept + len(out[k]) <= done:
                    kept += len(out[k])
                    k += 1
            try:
                os.ftruncate(fd, base_size + kept)
                if sync and k > base_i:
                    os.fdatasync(fd)
            except OSError:
                k = base_i
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, base_size)
            raise _Unwritable(k, exc) from exc
        return fd

    # -- rotation --------------------------------------------------------------------------------
    def _first_record(self, fd: int, ino: int) -> tuple[int, str]:
        """Sequence and UTC date of the current file's first record (cached while the inode lasts)."""
        if self._first is not None and self._first[0] == ino:
            return self._first[1], self._first[2]
        head = b""
        off = 0
        while b"\n" not in head:
            chunk = os.pread(fd, 65536, off)
            if not chunk:
                break
            head += chunk
            off += len(chunk)
        line = head.split(b"\n", 1)[0]
        try:
            doc = json.loads(line)
            first, day = int(doc["event"]["sequence"]), str(doc.get("@timestamp", ""))[:10]
        except (ValueError, KeyError, TypeError):
            raise TrailCorrupt(
                f"the first record of {self.path} is not a trail record; refusing to rotate it",
                hint="run `edgesec auditlog verify` and keep the file as evidence",
            ) from None
        self._first = (ino, first, day)
        return first, day

    def _due(self, fd: int, head: _Head) -> bool:
        if self.rotate_bytes and head.size >= self.rotate_bytes:
            return True
        if self.rotate_daily:
            # Rotating when the UTC day changes keeps each file to one day, so an archive can
            # drop whole files at the end of the retention period.
            if self._first is not None and self._first[0] == head.ino:
                day = self._first[2]
            else:
                rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _, day = self._first_record(rfd, head.ino)
                finally:
                    os.close(rfd)
            return bool(day) and day != time.strftime("%Y-%m-%d", time.gmtime())
        return False

    def _rotate(self, fd: int, head: _Head) -> Path:
        """Rename the current file to ``trail.<first>-<last>.jsonl``; never replaces an existing file."""
        rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            first, _ = self._first_record(rfd, head.ino)
        finally:
            os.close(rfd)
        target = self.dir / f"trail.{first:012d}-{head.seq:012d}.jsonl"
        os.fsync(fd)
        try:
            # link + unlink rather than rename: rename would silently replace an existing file.
            os.link(self.path, target)
        except FileExistsError:
            raise TrailCorrupt(
                f"cannot rotate {self.path}: {target.name} already exists",
                hint="the trail directory holds two copies of one range; run `edgesec auditlog verify`",
            ) from None
        os.unlink(self.path)
        fsync_dir(self.dir)
        self._first = None
        return target

    def rotate(self) -> Path | None:
        """Rotate the current file now (``auditlog rotate``); ``None`` when it is empty."""
        self._write_batch([], sync=True)  # fence a torn tail first, so the rotated file ends whole
        with self._mutex, FileLock(self._lock_path):
            fd = self._current_fd()
            head, _ = self._read_head(fd)
            if head.size == 0:
                return None
            return self._rotate(fd, head)

    def append(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Append one record now (``fsync``/``none`` durability); returns the record as written."""
        return self._write_batch([doc], sync=self.durability == "fsync", want_docs=True)[-1]

    def submit(self, doc: Record) -> int:
        """Queue a record (a document, or a :class:`~edgesec.auditing.prepared.Prepared` one) for group
        commit; returns a ticket for :meth:`wait_durable`.

        Raises :class:`TrailWriteFailed` (and queues nothing) while the trail cannot be written: the
        caller knows at once that this record is not on its way, and the records already queued stay
        queued until a write succeeds."""
        with self._cond:
            if self._error is not None:
                raise self._failure()
            queue = self._queue
            first = not queue
            if first:
                self._oldest = time.monotonic()
            queue.append(doc)
            self._submitted += 1
            ticket = self._submitted
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="edgesec-trail", daemon=True)
                self._thread.start()
            # The writer sleeps only on an empty queue or a full window: wake it for those, not for
            # every record (each wake-up is a thread switch the request path pays for).
            if first or len(queue) >= GROUP_MAX_BATCH:
                self._cond.notify_all()
        return ticket

    def _failure(self) -> TrailWriteFailed:
        """The error callers see while the writer fails (call with ``_cond`` held)."""
        lost = self._submitted - self._durable
        err = self._error
        reason = err.reason if isinstance(err, TrailWriteFailed) else f"{type(err).__name__}: {err}"
        return TrailWriteFailed(
            f"audit trail {self.path} cannot be written: {reason}; {lost} queued record(s) not on disk",
            reason=reason,
            hint="free space in the trail's file system; queued records are written when it takes them",
        )

    @property
    def failing(self) -> bool:
        """Whether the last write failed (read without the lock: the authz decision path asks it)."""
        return self._error is not None or self.failure is not None

    def error(self) -> str | None:
        """Why the trail cannot be written now (``None`` when the last write succeeded): for health checks."""
        with self._cond:
            return self.failure if self._error is None else str(self._failure())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(timeout=self.interval)
                if not self._queue and self._closed:
                    return
                # Group commit: gather what arrives until ``group_commit_ms`` after the oldest queued
                # record, so a busy service pays one write, fdatasync and lock round per window rather
                # than per handful of records (and the threads trade the interpreter lock far less
                # often). A waiter (flush, break-glass) or a full batch ends the window at once, so the
                # bound stays: durable within group_commit_ms of submit() plus one write and fdatasync.
                deadline = self._oldest + min(self.interval, GROUP_GATHER_S)
                while not self._closed and not self._hurry and len(self._queue) < GROUP_MAX_BATCH:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(timeout=remaining)
                self._hurry = False
                batch, self._queue = self._queue, []
            try:
                self._write_batch(batch, sync=True)
            except BaseException as exc:  # noqa: BLE001 - kept and raised to every caller until a write succeeds
                done = exc.written if isinstance(exc, TrailWriteFailed) else 0
                with self._cond:
                    self._durable += done
                    self._queue[:0] = batch[done:]  # keep them: nothing is dropped
                    self._error = exc
                    self._attempts += 1
                    self._cond.notify_all()
                    if self._closed:
                        return  # close() has reported what is not on disk
                time.sleep(max(self.interval, 0.05))
                continue
            with self._cond:
                self._durable += len(batch)
                self._error = None
                self._attempts += 1
                self._cond.notify_all()

    def wait_durable(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until the record of ``ticket`` is durable; ``False`` on timeout. Raises
        :class:`TrailWriteFailed` while the trail cannot be written."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            attempts = self._attempts
            if self._durable < ticket:
                self._hurry = True  # someone is waiting: do not hold the batch open
                self._cond.notify_all()
            while self._durable < ticket:
                # A write that failed after this call began is the answer; a failure from before it
                # gets one more try first (the disk may have room again).
                if self._error is not None and self._attempts > attempts:
                    raise self._failure() from self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(timeout=remaining if remaining is not None else 1.0)
        return True

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every submitted record is durable; ``False`` on timeout, :class:`TrailWriteFailed`
        while the trail cannot be written (naming how many records are not on disk)."""
        with self._cond:
            ticket = self._submitted
        if ticket == 0:
            return True
        return self.wait_durable(ticket, timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer. Raises :class:`TrailWriteFailed` naming the records
        that could not be written (they are lost with the process: the error is the record of that)."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True  # the writer empties the queue, then stops
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join(timeout=5)
            with self._mutex:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
            for listener in self.listeners:
                closer = getattr(listener, "close", None)
                if callable(closer):
                    closer()
        with self._cond:
            lost = self._submitted - self._durable
        if lost:
            raise TrailWriteFailed(
                f"audit trail {self.path}: {lost} queued record(s) not written before close"
            )

    def _after_fork(self) -> None:
        # A forked child inherits no writer thread and must not share our fd's cached head.
        self._mutex = threading.Lock()
        self._cond = threading.Condition()
        self._queue = []
        self._submitted = self._durable = 0
        self._thread = None
        self._head = None
        self._error = None
        self._hurry = False
        self._carry = []
        self._attempts = 0


_LIVE: weakref.WeakSet[Trail] = weakref.WeakSet()


def _flush_all() -> None:
    """At exit: write what is queued; a loss is said on stderr (an exit handler cannot change the code)."""
    for t in list(_LIVE):
        try:
            if not t.flush(timeout=10):
                sys.stderr.write(
                    f"edgesec: error: audit trail {t.path}: queued records not written at exit\n"
                )
        except Exception as exc:  # noqa: BLE001 - every trail gets its turn
            sys.stderr.write(f"edgesec: error: {exc}\n")


def _reset_after_fork() -> None:
    for t in list(_LIVE):
        t._after_fork()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_reset_after_fork)


# -- reading and a basic verifier (the auditlog part builds the full one on top) ----------------
def iter_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line without newline) for each line of one file."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            yield n, raw.rstrip(b"\n")


@dataclass(frozen=True)
class ChainReport:
    records: int
    head_seq: int
    head_hash: str
    files: tuple[str, ...]


def verify_chain(files: Iterable[Path], *, start_prev: str = GENESIS, start_seq: int = 0) -> ChainReport:
    """Check every record's hash, sequence and link; raise :class:`VerificationError` at the first break."""
    prev, seq, count = start_prev, start_seq, 0
    names = []
    for f in files:
        names.append(str(f))
        for lineno, raw in iter_records(f):
            where = f"{f}:{lineno}"
            try:
                doc = json.loads(raw)
                got_seq = int(doc["event"]["sequence"])
                got_hash = doc["event"]["hash"]
                got_prev = doc["edgesec"]["trail"]["prev"]
            except (ValueError, KeyError, TypeError):
                raise VerificationError(
                    f"{where}: not a trail record (unparsable or fields missing)"
                ) from None
            if canonical(doc).encode("utf-8") != raw:
                raise VerificationError(f"{where}: record {got_seq} is not in canonical form (edited)")
            if record_hash(doc) != got_hash:
                raise VerificationError(f"{where}: record {got_seq} was edited (hash mismatch)")
            if got_seq != seq + 1:
                raise VerificationError(
                    f"{where}: expected record {seq + 1}, found {got_seq} (deleted, inserted or reordered)"
                )
            if got_prev != prev:
                raise VerificationError(f"{where}: record {got_seq} does not link to record {seq}")
            prev, seq, count = got_hash, got_seq, count + 1
    return ChainReport(count, seq, prev, tuple(names))
