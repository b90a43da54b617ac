"""Verify a host's trail across its rotated files, and name the first record that is wrong.

The chain is checked record by record in sequence order, oldest file first. At the first break the
verifier says what happened, in the words an auditor needs:

* ``edited`` -- the record's content no longer matches its own hash (or is not canonical JSON);
* ``unparsable`` -- a line that is not a trail record at all (inserted text, or a record damaged past reading);
* ``deleted`` -- the sequence jumps and the missing records are nowhere later in the trail;
* ``reordered`` -- the expected record exists, but further on;
* ``inserted`` -- a sequence number that was already seen appears again, or a record that does not link to
  the record before it (a forged record whose own hash is right);
* ``truncated`` -- a rotated file ends before the last record its name promises, or a signed checkpoint
  covers a record the trail no longer has;
* ``misnamed`` -- a rotated file whose name does not match the records in it.

Truncating the *current* file's tail leaves a valid, shorter chain: only a checkpoint kept off the host
(see :mod:`edgesec.auditing.checkpoint`) reveals it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesec.auditing.canonical import line_hash_ok
from edgesec.auditing.trail import CURRENT, GENESIS, trail_files
from edgesec.errors import InputError, NotFound, VerificationError

_ROTATED_RE = re.compile(r"^trail\.(\d{12})-(\d{12})\.jsonl$")


@dataclass(frozen=True)
class Anchor:
    """A (sequence, hash) pair the trail must contain: a checkpoint, or a record shipped off the host."""

    seq: int
    hash: str
    source: str
    kind: str = "checkpoint"  # or "shipped": a record copied off the host (archive, Elasticsearch export)


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with the trail."""

    kind: str
    seq: int | None
    file: str
    line: int | None
    message: str

    def raise_(self) -> None:
        raise VerificationError(
            self.message,
            hint="keep the trail directory as evidence; compare it with the copy shipped off the host",
            problem=self.kind,
            seq=self.seq,
            file=self.file,
            line=self.line,
        )


@dataclass
class VerifyReport:
    """What a successful verification covered."""

    records: int = 0
    first_seq: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    files: list[str] = field(default_factory=list)
    anchors_checked: int = 0
    shipped_checked: int = 0
    torn_tail_bytes: int = 0  # an unfinished last line of the current file, not yet part of the chain

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "records": self.records,
            "first_seq": self.first_seq,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "files": self.files,
            "checkpoints_checked": self.anchors_checked,
            "shipped_checked": self.shipped_checked,
            "torn_tail_bytes": self.torn_tail_bytes,
        }


@dataclass(frozen=True)
class _Rec:
    file: Path
    line: int
    raw: bytes
    doc: dict[str, Any] | None
    seq: int | None
    torn: bool = False


def _name_range(path: Path) -> tuple[int, int] | None:
    m = _ROTATED_RE.match(path.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _parse(path: Path, lineno: int, raw: bytes) -> _Rec:
    try:
        doc = json.loads(raw)
        seq = int(doc["event"]["sequence"])
        if not isinstance(doc["event"].get("hash"), str) or not isinstance(
            doc["edgesec"]["trail"]["prev"], str
        ):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _Rec(path, lineno, raw, None, None)
    return _Rec(path, lineno, raw, doc, seq)


class _Vanished(Exception):
    """A listed file was renamed away (rotated) before it was opened: list the files again."""


def _lines(f: Path, fh: Any, first: bytes | None = None) -> Iterator[_Rec]:
    lines = fh if first is None else _chain_first(first, fh)
    for lineno, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            # A line without its newline: a write in progress, or a writer killed mid-line
            # (the next writer fences it). Not a record.
            yield _Rec(f, lineno, raw, None, None, torn=True)
            continue
        yield _parse(f, lineno, raw[:-1])


def _chain_first(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _open(f: Path) -> Any:
    try:
        return open(f, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read trail file {f}: {exc.strerror or exc}") from None


def _first_seq(line: bytes) -> int | None:
    try:
        return int(json.loads(line)["event"]["sequence"])
    except (ValueError, KeyError, TypeError):
        return None


def _rotated_after(directory: Path, last_end: int, before: int | None = None) -> list[Path]:
    """Rotated files (immutable once named) that start after record ``last_end`` (and before ``before``)."""
    out = []
    for p in trail_files(directory):
        rng = _name_range(p)
        if rng is not None and rng[0] > last_end and (before is None or rng[1] < before):
            out.append(p)
    return out


def _records(files: Iterable[Path]) -> Iterator[_Rec]:
    """Every line of the listed files, in chain order, following rotations that happen while we read.

    Rotated files never change once named. Only ``trail.jsonl`` moves: a writer renames it to its
    rotated name and starts a new one. So when the current file has gone by the time we open it, or
    the one we open starts past the last rotated file we listed, the records in between are in rotated
    files that appeared meanwhile: read those first, then the current file. No restart, however
    fast the trail rotates.
    """
    last_end = 0
    for f in files:
        if f.name != CURRENT:
            fh = _open(f)
            if fh is None:
                raise _Vanished(str(f))
            rng = _name_range(f)
            if rng is not None:
                last_end = rng[1]
            with fh:
                yield from _lines(f, fh)
            continue
        while True:
            fh = _open(f)
            if fh is None:
                newer = _rotated_after(f.parent, last_end)
                if not newer:
                    return  # no current file: the trail ends with the last rotated file
                for p in newer:
                    pfh = _open(p)
                    if pfh is None:
                        raise _Vanished(str(p))
                    with pfh:
                        yield from _lines(p, pfh)
                    last_end = max(last_end, (_name_range(p) or (0, last_end))[1])
                continue
            with fh:
                first = fh.readline()
                seq = _first_seq(first) if first.endswith(b"\n") else None
                if seq is not None and last_end and seq > last_end + 1:
                    for p in _rotated_after(f.parent, last_end, before=seq):
                        pfh = _open(p)
                        if pfh is None:
                            raise _Vanished(str(p))
                        with pfh:
                            yield from _lines(p, pfh)
                if first:
                    yield from _lines(f, fh, first)
            return


def _find_later(files: list[Path], start: tuple[Path, int], seq: int) -> _Rec | None:
    """The first record numbered ``seq`` after position ``start`` (rare path: only on a break)."""
    started = False
    for rec in _records(files):
        if not started:
            started = (rec.file, rec.line) == start
            continue
        if rec.seq == seq:
            return rec
    return None


def _where(rec: _Rec) -> str:
    return f"{rec.file.name}:{rec.line}"


def select_files(directory: Path, from_seq: int | None) -> list[Path]:
    """The trail's files in chain order, skipping rotated files wholly before ``from_seq``."""
    if not directory.is_dir():
        raise NotFound(f"no audit trail at {directory}", hint="check [auditing] trail_dir or --trail")
    files = trail_files(directory)
    if len(files) > 1 and files[-1].name == CURRENT:
        # Rotation links trail.jsonl to its new name, then unlinks it: caught in between, the same
        # file has two names. Read it once, under its rotated name.
        try:
            cur = files[-1].stat()
            prev = files[-2].stat()
        except FileNotFoundError:
            raise _Vanished(str(directory)) from None
        if (cur.st_dev, cur.st_ino) == (prev.st_dev, prev.st_ino):
            files = files[:-1]
    if from_seq is not None:
        kept = []
        for f in files:
            rng = _name_range(f)
            if rng is not None and rng[1] < from_seq:
                continue
            kept.append(f)
        files = kept
    return files


def verify_trail(
    directory: Path,
    *,
    from_seq: int | None = None,
    anchors: Iterable[Anchor] = (),
) -> VerifyReport:
    """Verify the trail in ``directory``; raise :class:`VerificationError` naming the first bad record.

    ``from_seq``: start at that record, taking its link to the record before on trust (older files
    archived or removed). Without it the chain must start at record 1. ``anchors``: checkpoints whose
    (sequence, hash) the trail must contain.
    """
    anchors = list(anchors)
    for _ in range(5):
        try:
            return _verify_once(directory, from_seq, anchors)
        except _Vanished:
            continue  # rotated while we listed the files: the chain is still there, under new names
    raise InputError(f"the trail in {directory} keeps rotating under the verifier; try again")


def _verify_once(directory: Path, from_seq: int | None, anchors: Iterable[Anchor]) -> VerifyReport:
    files = select_files(directory, from_seq)
    pending: dict[int, Anchor] = {}
    for a in anchors:
        if from_seq is None or a.seq >= from_seq:
            had = pending.setdefault(a.seq, a)
            if had.hash != a.hash:
                Problem(
                    "edited",
                    a.seq,
                    a.source,
                    None,
                    f"two different records numbered {a.seq}: in {had.source} and in {a.source}"
                    " (the trail was rewritten after one of them was taken)",
                ).raise_()
    report = VerifyReport(files=[f.name for f in files])
    problem = _walk(files, from_seq, pending, report)
    if problem is not None:
        if select_files(directory, from_seq) != files:
            # A writer rotated while we read (trail.jsonl we opened may be the new one): read again
            # rather than report records "missing" that are now in a rotated file.
            raise _Vanished(str(directory))
        problem.raise_()
    if pending:
        a = pending[min(pending)]
        last = files[-1].name if files else CURRENT
        Problem(
            "truncated",
            a.seq,
            last,
            None,
            f"truncated: {a.source} covers record {a.seq}, but the trail ends at record {report.head_seq}"
            f" (records {report.head_seq + 1}..{a.seq} or more were removed)",
        ).raise_()
    return report


def _walk(
    files: list[Path], from_seq: int | None, anchors: dict[int, Anchor], report: VerifyReport
) -> Problem | None:
    expected = from_seq if from_seq is not None else 1
    prev: str | None = None if from_seq is not None else GENESIS
    seen_any = False
    cur_file: Path | None = None
    file_first: int | None = None
    last_seq_in_file: int | None = None

    def close_file(f: Path) -> Problem | None:
        rng = _name_range(f)
        if rng is None or file_first is None or last_seq_in_file is None:
            return None
        if last_seq_in_file < rng[1]:
            return Problem(
                "truncated",
                last_seq_in_file + 1,
                f.name,
                None,
                f"truncated: {f.name} ends at record {last_seq_in_file}, its name says it holds records up to {rng[1]}",
            )
        if from_seq is None and file_first != rng[0]:
            return Problem(
                "misnamed", file_first, f.name, 1, f"{f.name} starts at record {file_first}, not {rng[0]}"
            )
        return None

    for rec in _records(files):
        if rec.file != cur_file:
            if cur_file is not None:
                p = close_file(cur_file)
                if p is not None:
                    return p
            cur_file, file_first, last_seq_in_file = rec.file, None, None
        if from_seq is not None and not seen_any and rec.seq is not None and rec.seq < from_seq:
            continue  # before the starting point: not checked
        if rec.torn and rec.file == files[-1] and rec.file.name == CURRENT:
            report.torn_tail_bytes = len(rec.raw)  # being written, or left by a killed writer
            break
        if rec.doc is None or rec.seq is None:
            return Problem(
                "unparsable",
                expected,
                rec.file.name,
                rec.line,
                f"{_where(rec)}: not a trail record where record {expected} should be (inserted text or damaged record)",
            )
        doc = rec.doc
        if not line_hash_ok(rec.raw, doc):
            return Problem(
                "edited",
                rec.seq,
                rec.file.name,
                rec.line,
                f"edited: record {rec.seq} at {_where(rec)} does not match its hash",
            )
        if rec.seq != expected:
            if rec.seq < expected:
                return Problem(
                    "inserted",
                    rec.seq,
                    rec.file.name,
                    rec.line,
                    f"inserted: record {rec.seq} at {_where(rec)} appears again after record {expected - 1}",
                )
            later = _find_later(files, (rec.file, rec.line), expected)
            if later is not None:
                return Problem(
                    "reordered",
                    expected,
                    rec.file.name,
                    rec.line,
                    f"reordered: record {rec.seq} at {_where(rec)} stands where record {expected} should be;"
                    f" record {expected} is later, at {_where(later)}",
                )
            missing = (
                f"record {expected}" if rec.seq == expected + 1 else f"records {expected}..{rec.seq - 1}"
            )
            return Problem(
                "deleted",
                expected,
                rec.file.name,
                rec.line,
                f"deleted: {missing} missing before record {rec.seq} at {_where(rec)}",
            )
        link = doc["edgesec"]["trail"]["prev"]
        if prev is not None and link != prev:
            return Problem(
                "inserted",
                rec.seq,
                rec.file.name,
                rec.line,
                f"inserted: record {rec.seq} at {_where(rec)} does not link to record {rec.seq - 1}"
                " (one of them was forged or replaced)",
            )
        anchor = anchors.pop(rec.seq, None)
        if anchor is not None:
            if anchor.hash != doc["event"]["hash"]:
                return Problem(
                    "edited",
                    rec.seq,
                    rec.file.name,
                    rec.line,
                    f"rewritten: record {rec.seq} at {_where(rec)} differs from the one {anchor.source} covers",
                )
            if anchor.kind == "shipped":
                report.shipped_checked += 1
            else:
                report.anchors_checked += 1
        if not seen_any:
            report.first_seq = rec.seq
            seen_any = True
        if file_first is None:
            file_first = rec.seq
        last_seq_in_file = rec.seq
        prev = doc["event"]["hash"]
        expected = rec.seq + 1
        report.records += 1
        report.head_seq = rec.seq
        report.head_hash = prev
    if cur_file is not None:
        p = close_file(cur_file)
        if p is not None:
            return p
    return None


def anchors_from_lines(data: bytes, source: str) -> list[Anchor]:
    """Anchors from a JSON-lines copy of trail records kept off the host (the syslog-ng archive's
    ``audit.log``, an Elasticsearch export). Lines that are not trail records are skipped."""
    out = []
    for line in data.splitlines():
        try:
            ev = json.loads(line).get("event") or {}
        except (ValueError, AttributeError):
            continue
        if (
            isinstance(ev, Mapping)
            and isinstance(ev.get("sequence"), int)
            and isinstance(ev.get("hash"), str)
        ):
            out.append(Anchor(ev["sequence"], ev["hash"], f"the shipped copy {source}", "shipped"))
    return out


def trail_host(directory: Path) -> str | None:
    """``host.name`` of the trail's newest record (to match checkpoints to their host)."""
    files = trail_files(directory)
    if not files:
        return None
    with open(files[-1], "rb") as fh:
        first = fh.readline()
    try:
        host = (json.loads(first).get("host") or {}).get("name")
    except (ValueError, AttributeError):
        return None
    return host if isinstance(host, str) else None
