"""Group commit never loses silently: a full disk, a failed fdatasync and an unencodable record.

The disk-full cases use a real, tiny tmpfs (mounted by the test, as root): ``write()`` fails with ENOSPC
part-way through a batch, as it does on a full ``/var``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgesec import auditing
from edgesec.auditing import trail as trail_mod
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.trail import REJECTED_DIR, Trail, TrailWriteFailed, trail_files, verify_chain
from tests.auditing.test_trail_core import small_verifier
from tests.conftest import _missing, require_root, require_tool


def ev(i: int, **fields: Any) -> AuditEvent:
    return AuditEvent(
        action="test.event",
        category=("host",),
        type=("info",),
        part="test",
        fields={"edgesec.test.i": i, "user.id": f"u{i}", **fields},
    )


def records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for f in trail_files(directory):
        out += [json.loads(line) for line in f.read_bytes().splitlines()]
    return out


@contextlib.contextmanager
def tiny_fs(where: Path, size: str = "48k") -> Iterator[Path]:
    require_root()
    require_tool("mount", "umount")
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True
        )
    except subprocess.CalledProcessError:
        _missing("cannot mount a tmpfs here (root without CAP_SYS_ADMIN?)")
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow(where: Path, size: str = "8m") -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def test_group_commit_on_full_disk_raises_keeps_queue_and_loses_nothing(tmp_path: Path) -> None:
    """1,500 events into a 48 KiB file system: the failure reaches the caller, what was accepted is
    kept queued, and once there is room every accepted event is in the chain exactly once."""
    with tiny_fs(tmp_path / "fs") as fs:
        trail_dir = fs / "audit"
        accepted: list[int] = []
        refused = 0
        with auditing.configured(trail_dir, durability="group", group_commit_ms=5) as trail:
            forwarded: list[bytes] = []  # what a listener (the RFC 5424 forwarder) was given
            trail.listeners.append(lambda _docs, lines: forwarded.extend(lines))
            for i in range(1500):
                try:
                    auditing.emit(ev(i))
                except TrailWriteFailed as exc:
                    refused += 1
                    assert "not on disk" in str(exc)
                else:
                    accepted.append(i)
                if i % 100 == 99:
                    with contextlib.suppress(TrailWriteFailed):
                        trail.flush(5)
            assert refused > 0, "the full disk never reached the caller"
            with pytest.raises(TrailWriteFailed, match=r"\d+ queued record\(s\) not on disk"):
                auditing.flush(10)
            assert auditing.trail_failing()
            err = auditing.trail_error()
            assert err is not None and "No space left on device" in err
            # The file ends on a whole record: the failed batch was cut back, never left half-written.
            assert trail.path.read_bytes().endswith(b"\n")
            grow(fs)
            auditing.flush(30)  # the queued events go in now
            assert not auditing.trail_failing()
        got = [r["edgesec"]["test"]["i"] for r in records(trail_dir) if r["event"]["action"] == "test.event"]
        assert got == accepted  # every accepted event, once, in order
        assert small_verifier(trail_dir) == len(records(trail_dir))
        verify_chain(trail_files(trail_dir))
        # Every record on disk was forwarded once, those of a partly written batch included.
        on_disk = [ln + b"\n" for f in trail_files(trail_dir) for ln in f.read_bytes().splitlines()]
        assert forwarded == on_disk


def test_cli_exit_code_names_events_lost_to_a_full_disk(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A command that queued events the disk would not take exits 1 with a line that says so."""
    with tiny_fs(tmp_path / "fs", size="16k") as fs:
        with auditing.configured(fs / "audit", durability="group", group_commit_ms=5) as trail:
            with contextlib.suppress(TrailWriteFailed):
                for i in range(400):
                    auditing.emit(ev(i))
            code, _out, err = cli("--version")
            assert code == 1
            assert "not on disk" in err and "edgesec: error:" in err
            grow(fs)
            trail.flush(30)
        assert small_verifier(fs / "audit") >= 1


def test_fsync_append_on_full_disk_is_an_error_and_the_chain_stays_whole(tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "fs", size="16k") as fs:
        with auditing.configured(fs / "audit", durability="fsync") as trail:
            written = 0
            with pytest.raises(TrailWriteFailed, match="No space left on device"):
                for i in range(400):
                    auditing.emit(ev(i))
                    written += 1
            assert trail.path.read_bytes().endswith(b"\n")
            assert auditing.trail_failing() and "No space left" in (auditing.trail_error() or "")
            grow(fs)
            auditing.emit(ev(10_000))
            assert not auditing.trail_failing()
        recs = records(fs / "audit")
        assert [r["edgesec"]["test"]["i"] for r in recs] == [*range(written), 10_000]
        verify_chain(trail_files(fs / "audit"))


def test_failed_fdatasync_rewrites_the_batch_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error at fdatasync (cannot be produced on demand here, so injected): the batch is cut from
    the file and written again later -- never counted durable, never duplicated."""
    real = os.fdatasync
    failing = [True]

    def flaky(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(trail_mod.os, "fdatasync", flaky)
    trail = Trail(tmp_path, durability="group", group_commit_ms=5)
    for i in range(50):
        trail.submit(ev(i).to_document())
    with pytest.raises(TrailWriteFailed, match="Input/output error"):
        trail.flush(10)
    assert trail.failing and records(tmp_path) == []  # cut from the file: not half there
    failing[0] = False
    assert trail.flush(10)  # retried by the writer once the error is gone
    trail.close()
    assert [r["edgesec"]["test"]["i"] for r in records(tmp_path)] == list(range(50))
    verify_chain(trail_files(tmp_path))


@pytest.mark.parametrize("durability", ["group", "fsync"])
def test_unencodable_record_is_set_aside_and_the_chain_goes_on(tmp_path: Path, durability: str) -> None:
    """A file name decoded with surrogateescape cannot be written as UTF-8: it is kept as evidence, a
    notice takes its place, and the events after it are written."""
    name = b"/srv/models/\xff\xfe.bin".decode("utf-8", "surrogateescape")
    with auditing.configured(tmp_path, durability=durability, group_commit_ms=5):
        auditing.emit(ev(0))
        auditing.emit(ev(1, **{"file.path": name}))
        for i in range(2, 40):
            auditing.emit(ev(i))
        auditing.flush(10)
    recs = records(tmp_path)
    actions = [r["event"]["action"] for r in recs]
    assert actions.count("trail.record_rejected") == 1 and len(recs) == 40
    notice = recs[1]
    assert notice["event"]["action"] == "trail.record_rejected" and notice["event"]["outcome"] == "failure"
    evidence = Path(notice["file"]["path"])
    assert evidence.parent == tmp_path / REJECTED_DIR
    data = evidence.read_bytes()
    assert data.decode("utf-8", "surrogatepass").count(name) == 1  # the record, losslessly
    assert notice["edgesec"]["trail"]["rejected_sha256"] == hashlib.sha256(data).hexdigest()
    assert [r["edgesec"]["test"]["i"] for r in recs if r["event"]["action"] == "test.event"] == [
        0,
        *range(2, 40),
    ]
    verify_chain(trail_files(tmp_path))


def test_not_a_number_is_refused_at_the_event_never_written_as_invalid_json() -> None:
    from edgesec.errors import InputError

    for bad in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="JSON data"):
            ev(0, **{"edgesec.test.ratio": bad}).to_document()
        with pytest.raises(InputError, match="JSON data"):
            ev(0, **{"edgesec.test.ratio": bad}).prepare()


def test_a_record_over_the_pipeline_limit_is_set_aside(tmp_path: Path) -> None:
    """syslog-ng reads lines up to log-msg-size: a larger record would reach it as fragments."""
    with auditing.configured(tmp_path, durability="group", group_commit_ms=5):
        auditing.emit(ev(0, **{"edgesec.test.blob": "x" * trail_mod.MAX_RECORD_BYTES}))
        auditing.emit(ev(1))
        auditing.flush(10)
    recs = records(tmp_path)
    assert [r["event"]["action"] for r in recs] == ["trail.record_rejected", "test.event"]
    assert "over the trail's limit" in recs[0]["message"]
    assert Path(recs[0]["file"]["path"]).stat().st_size > trail_mod.MAX_RECORD_BYTES
    verify_chain(trail_files(tmp_path))


def test_canonical_refuses_what_is_not_json() -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            trail_mod.canonical({"v": bad})
