"""Rotation keeps one chain across files; verify names the first edited/inserted/deleted/reordered record."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.trail import CURRENT, Trail, rotated_files, trail_files
from edgesec.auditing.verify import Anchor, verify_trail
from edgesec.errors import VerificationError

from .test_trail_core import small_verifier


def ev(i: int, when: dt.datetime | None = None) -> AuditEvent:
    return AuditEvent(
        action="test.event",
        category=("host",),
        type=("info",),
        part="test",
        fields={"edgesec.test.i": i, "user.id": f"u{i}"},
        timestamp=when,
    )


def build(d: Path, n: int = 60, rotate_bytes: int = 4000) -> list[Path]:
    with auditing.configured(d, durability="none", rotate_bytes=rotate_bytes):
        for i in range(n):
            auditing.emit(ev(i))
    return trail_files(d)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trail")
    build(d)
    return d


@pytest.fixture
def trail(pristine: Path, tmp_path: Path) -> Path:
    d = tmp_path / "t"
    shutil.copytree(pristine, d)
    return d


def test_rotation_by_size_keeps_one_chain(pristine: Path) -> None:
    rotated = rotated_files(pristine)
    assert len(rotated) >= 3
    for f in rotated:
        first, last = (int(x) for x in f.name[len("trail.") : -len(".jsonl")].split("-"))
        lines = f.read_bytes().splitlines()
        assert json.loads(lines[0])["event"]["sequence"] == first
        assert json.loads(lines[-1])["event"]["sequence"] == last
        assert f.stat().st_mode & 0o777 == 0o600
    assert small_verifier(pristine) == 60
    rep = verify_trail(pristine)
    assert (rep.records, rep.first_seq, rep.head_seq) == (60, 1, 60)


def test_rotation_by_date(tmp_path: Path) -> None:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with auditing.configured(tmp_path, durability="fsync"):  # written yesterday
        auditing.emit(ev(1, yesterday))
        auditing.emit(ev(2, yesterday))
    with auditing.configured(tmp_path, durability="fsync", rotate_daily=True):
        auditing.emit(ev(3))
        auditing.emit(ev(4))
    assert [f.name for f in rotated_files(tmp_path)] == ["trail.000000000001-000000000002.jsonl"]
    assert len((tmp_path / CURRENT).read_bytes().splitlines()) == 2
    assert verify_trail(tmp_path).head_seq == 4


def test_explicit_rotate_and_writers_follow(tmp_path: Path) -> None:
    a = Trail(tmp_path)
    b = Trail(tmp_path)  # a second writer holding the old file open
    a.append(ev(1).to_document())
    b.append(ev(2).to_document())
    assert a.rotate() == tmp_path / "trail.000000000001-000000000002.jsonl"
    assert a.rotate() is None  # nothing new to rotate
    b.append(ev(3).to_document())  # notices the rotation and continues the chain in a new file
    a.append(ev(4).to_document())
    a.close()
    b.close()
    assert small_verifier(tmp_path) == 4


def _lines(f: Path) -> list[bytes]:
    return f.read_bytes().splitlines(keepends=True)


def _pick(d: Path, which: str) -> Path:
    files = trail_files(d)
    return {"first": files[0], "middle": files[len(files) // 2], "current": files[-1]}[which]


def _seq(line: bytes) -> int:
    return int(json.loads(line)["event"]["sequence"])


WHICH = ["first", "middle", "current"]


@pytest.mark.parametrize("which", WHICH)
def test_edit_named(trail: Path, which: str) -> None:
    f = _pick(trail, which)
    lines = _lines(f)
    target = _seq(lines[1])
    doc = json.loads(lines[1])
    doc["user"]["id"] = "mallory"
    lines[1] = (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
    f.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError, match=rf"edited: record {target} at {f.name}:2") as ei:
        verify_trail(trail)
    assert ei.value.details["problem"] == "edited" and ei.value.details["seq"] == target


@pytest.mark.parametrize("which", WHICH)
def test_delete_named(trail: Path, which: str) -> None:
    f = _pick(trail, which)
    lines = _lines(f)
    target = _seq(lines[1])
    del lines[1]
    f.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError, match=rf"deleted: record {target} missing") as ei:
        verify_trail(trail)
    assert ei.value.details["seq"] == target


@pytest.mark.parametrize("which", WHICH)
def test_insert_named(trail: Path, which: str, pristine: Path) -> None:
    f = _pick(trail, which)
    lines = _lines(f)
    # A forged record: a copy of another record, re-hashed and re-linked so that it is valid on its own.
    lines.insert(2, lines[0])
    dup = _seq(lines[0])
    f.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError, match=rf"inserted: record {dup} at {f.name}:3") as ei:
        verify_trail(trail)
    assert ei.value.details["problem"] == "inserted"


def test_insert_forged_rehashed_record(trail: Path) -> None:
    """A forger who computes a correct hash for the fake record still breaks the link of the next one."""
    from edgesec.auditing.canonical import canonical, record_hash

    f = _pick(trail, "middle")
    lines = _lines(f)
    real = json.loads(lines[1])
    forged = json.loads(lines[1])
    forged["user"]["id"] = "mallory"
    forged["event"]["hash"] = record_hash(forged)
    lines[1] = (canonical(forged) + "\n").encode()
    f.write_bytes(b"".join(lines))
    with pytest.raises(
        VerificationError,
        match=rf"inserted: record {real['event']['sequence'] + 1} at {f.name}:3 does not link",
    ):
        verify_trail(trail)


@pytest.mark.parametrize("which", WHICH)
def test_reorder_named(trail: Path, which: str) -> None:
    f = _pick(trail, which)
    lines = _lines(f)
    target = _seq(lines[1])
    lines[1], lines[2] = lines[2], lines[1]
    f.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError, match=rf"reordered: .* where record {target} should be") as ei:
        verify_trail(trail)
    assert ei.value.details["problem"] == "reordered"


@pytest.mark.parametrize("which", ["first", "middle"])
def test_truncate_rotated_file_named(trail: Path, which: str) -> None:
    f = _pick(trail, which)
    lines = _lines(f)
    last = _seq(lines[-1])
    f.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(VerificationError, match=rf"truncated: {f.name} ends at record {last - 1}") as ei:
        verify_trail(trail)
    assert ei.value.details["seq"] == last


def test_whole_rotated_file_removed(trail: Path) -> None:
    f = _pick(trail, "middle")
    first = _seq(_lines(f)[0])
    f.unlink()
    with pytest.raises(VerificationError, match=rf"deleted: records {first}\.\.\d+ missing"):
        verify_trail(trail)


def test_truncated_current_tail_needs_checkpoint(trail: Path) -> None:
    cur = trail / CURRENT
    lines = _lines(cur)
    head = json.loads(lines[-1])["event"]
    cur.write_bytes(b"".join(lines[:-2]))
    # A shorter chain is valid in itself...
    assert verify_trail(trail).head_seq == head["sequence"] - 2
    # ...but not against a checkpoint of the old head.
    with pytest.raises(VerificationError, match=rf"truncated: .* covers record {head['sequence']}"):
        verify_trail(trail, anchors=[Anchor(head["sequence"], head["hash"], "a test checkpoint")])


def test_rewritten_tail_against_checkpoint(trail: Path) -> None:
    """Truncate after a checkpoint and append new records: the chain is valid, the checkpoint is not covered."""
    cur = trail / CURRENT
    lines = _lines(cur)
    head = json.loads(lines[-1])["event"]
    cur.write_bytes(b"".join(lines[:-1]))
    with auditing.configured(trail, durability="fsync"):
        auditing.emit(ev(999))
    with pytest.raises(VerificationError, match=rf"rewritten: record {head['sequence']}"):
        verify_trail(trail, anchors=[Anchor(head["sequence"], head["hash"], "a test checkpoint")])


def test_from_skips_archived_files(trail: Path) -> None:
    files = rotated_files(trail)
    start = _seq(_lines(files[1])[0])
    files[0].unlink()
    with pytest.raises(VerificationError, match=r"deleted: records 1\.\."):
        verify_trail(trail)
    rep = verify_trail(trail, from_seq=start)
    assert rep.first_seq == start and rep.head_seq == 60
    # --from in the middle of a file: earlier records of that file are skipped, not checked.
    assert verify_trail(trail, from_seq=start + 2).first_seq == start + 2


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_any_byte_change_is_caught(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    shutil.rmtree(d)
    shutil.copytree(pristine, d)
    files = trail_files(d)
    f = files[data.draw(st.integers(0, len(files) - 1))]
    raw = bytearray(f.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]))
    raw[pos] = new
    f.write_bytes(bytes(raw))
    with pytest.raises(VerificationError):
        verify_trail(d)


def test_cli_verify_and_rotate(cli, trail: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("--json", "auditlog", "verify", "--trail", str(trail))
    assert code == 0, err
    res = json.loads(out)["result"]
    assert res["records"] == 60 and res["head_seq"] == 60 and len(res["files"]) >= 4
    code, out, _ = cli("--json", "auditlog", "rotate", "--trail", str(trail))
    assert code == 0 and json.loads(out)["result"]["rotated"].endswith("-000000000060.jsonl")
    assert cli("auditlog", "verify", "--trail", str(trail))[0] == 0
    # damage one record in a rotated file: exit 1, one line naming it
    f = rotated_files(trail)[1]
    lines = _lines(f)
    target = _seq(lines[0])
    f.write_bytes(lines[0].replace(b'"u', b'"x', 1) + b"".join(lines[1:]))
    code, out, err = cli("auditlog", "verify", "--trail", str(trail))
    assert code == 1 and f"edited: record {target} at {f.name}:1" in err and "Traceback" not in err
    code, out, _ = cli("--json", "auditlog", "verify", "--trail", str(trail))
    err_doc = json.loads(out)["error"]
    assert err_doc["details"] == {"problem": "edited", "seq": target, "file": f.name, "line": 1}
    # --from past the damage verifies the rest
    later = _seq(_lines(rotated_files(trail)[2])[0])
    assert cli("auditlog", "verify", "--trail", str(trail), "--from", str(later))[0] == 0


def test_cli_verify_input_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("auditlog", "verify", "--trail", str(tmp_path / "nope"))
    assert code == 2 and "no audit trail" in err
    code, _, err = cli("auditlog", "verify", "--trail", str(tmp_path), "--from", "0")
    assert code == 2
    (tmp_path / "t").mkdir()
    code, _, err = cli(
        "auditlog", "verify", "--trail", str(tmp_path / "t"), "--checkpoint", str(tmp_path / "missing.json")
    )
    assert code == 2 and "not found" in err


def _rotating_writer(directory: str, n: int) -> None:
    with auditing.configured(Path(directory), durability="group", group_commit_ms=2, rotate_bytes=30_000):
        for i in range(n):
            auditing.emit(ev(i))


def test_processes_rotating_concurrently_keep_one_chain(tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rotating_writer, args=(str(tmp_path), 1500)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    rotated = rotated_files(tmp_path)
    assert len(rotated) >= 20
    assert small_verifier(tmp_path) == 4500
    assert verify_trail(tmp_path).records == 4500
    for f in rotated:  # every name tells the truth about its content
        lines = _lines(f)
        first, last = (int(x) for x in f.name[len("trail.") : -len(".jsonl")].split("-"))
        assert (_seq(lines[0]), _seq(lines[-1])) == (first, last)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_any_deletion_or_swap_is_named(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("prop")
    shutil.rmtree(d)
    shutil.copytree(pristine, d)
    files = trail_files(d)
    f = files[data.draw(st.integers(0, len(files) - 1))]
    lines = _lines(f)
    k = data.draw(st.integers(0, len(lines) - 2))
    target = _seq(lines[k])
    if data.draw(st.booleans()):
        del lines[k]
        expect = {"deleted", "truncated"} if k == len(lines) else {"deleted"}
    else:
        lines[k], lines[k + 1] = lines[k + 1], lines[k]
        expect = {"reordered"}
    f.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError) as ei:
        verify_trail(d)
    assert ei.value.details["problem"] in expect
    assert ei.value.details["seq"] == target


def test_cli_verify_against_shipped_copy(cli, trail: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shipped = tmp_path / "archive-audit.log"
    shipped.write_bytes(b"".join(f.read_bytes() for f in trail_files(trail)) + b"not a record\n")
    code, out, err = cli("auditlog", "verify", "--trail", str(trail), "--shipped", str(shipped))
    assert code == 0 and "60 shipped record(s) matched" in out, err
    # The host drops its last two records: the copy off the host still has them.
    cur = trail / CURRENT
    cur.write_bytes(b"".join(_lines(cur)[:-2]))
    code, out, _ = cli("--json", "auditlog", "verify", "--trail", str(trail), "--shipped", str(shipped))
    err_doc = json.loads(out)["error"]
    assert code == 1 and err_doc["details"]["problem"] == "truncated" and err_doc["details"]["seq"] == 59
    # Two copies that disagree about one record: the trail was rewritten between them.
    other = tmp_path / "other.log"
    doc = json.loads(_lines(trail_files(trail)[0])[0])
    doc["event"]["hash"] = "f" * 64
    other.write_text(json.dumps(doc) + "\n")
    code, _, err = cli(
        "auditlog", "verify", "--trail", str(trail), "--shipped", str(shipped), "--shipped", str(other)
    )
    assert code == 1 and "two different records numbered 1" in err
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    assert cli("auditlog", "verify", "--trail", str(trail), "--shipped", str(empty))[0] == 2


@pytest.mark.parametrize("how", ["spaces", "key-order", "unicode-escape", "duplicate-key"])
def test_same_content_other_bytes_is_an_edit(trail: Path, how: str) -> None:
    """Equal as JSON is not enough: the bytes that were hashed are what must be there."""
    f = _pick(trail, "middle")
    lines = _lines(f)
    doc = json.loads(lines[1])
    if how == "spaces":
        new = json.dumps(doc, sort_keys=True)
    elif how == "key-order":
        new = json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":"))
    elif how == "unicode-escape":
        doc["message"] = "é"
        new = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    else:
        raw = lines[1].decode().rstrip("\n")
        new = raw[:-1] + ',"message":"forged"}'
    lines[1] = (new + "\n").encode()
    f.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError, match=rf"edited: record {doc['event']['sequence']}"):
        verify_trail(trail)


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    event=st.dictionaries(st.text(max_size=10).filter(lambda k: k != "hash"), json_value, max_size=6),
    rest=st.dictionaries(st.text(max_size=10).filter(lambda k: k != "event"), json_value, max_size=4),
)
def test_seal_equals_the_plain_encoding(event: dict, rest: dict) -> None:  # type: ignore[type-arg]
    """The one-encoding fast path writes exactly what record_hash + canonical would."""
    from edgesec.auditing.canonical import canonical, record_hash, seal

    doc = {**rest, "event": dict(event)}
    plain = dict(doc, event=dict(event))
    digest, line = seal(doc)
    expect = record_hash(plain)
    plain["event"]["hash"] = expect
    assert digest == expect
    assert line == (canonical(plain) + "\n").encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    event=st.dictionaries(
        st.sampled_from(
            ["action", "category", "dataset", "kind", "module", "outcome", "hash2", "h", "i", "ha"]
        ),
        st.one_of(
            json_scalar,
            st.sampled_from([',"kind":"x"', '","kind":', '\\","kind":']),
            st.lists(st.text(alphabet=',"kind:\\', max_size=8), max_size=3),
        ),
        max_size=7,
    ),
    edgesec=st.dictionaries(
        st.sampled_from(["kind", "event", "hash"]), st.text(alphabet=',"kind:{}', max_size=10), max_size=3
    ),
)
def test_seal_with_hostile_values(event: dict, edgesec: dict) -> None:  # type: ignore[type-arg]
    from edgesec.auditing.canonical import canonical, record_hash, seal

    doc = {"edgesec": edgesec, "event": dict(event), "zz": {"kind": 1}}
    plain = {"edgesec": edgesec, "event": dict(event), "zz": {"kind": 1}}
    digest, line = seal(doc)
    plain["event"]["hash"] = record_hash(plain)
    assert line == (canonical(plain) + "\n").encode("utf-8") and digest == plain["event"]["hash"]


def test_unfinished_last_line_is_not_an_alarm(trail: Path) -> None:
    """A line still being written (or left by a killed writer) at the end of trail.jsonl is not yet a record."""
    cur = trail / CURRENT
    with open(cur, "ab") as fh:
        fh.write(b'{"@timestamp":"2026-')
    rep = verify_trail(trail)
    assert rep.head_seq == 60 and rep.torn_tail_bytes == len(b'{"@timestamp":"2026-')
    # The same in a rotated file is damage.
    f = rotated_files(trail)[0]
    with open(f, "ab") as fh:
        fh.write(b'{"x":')
    with pytest.raises(VerificationError):
        verify_trail(trail)


def test_verify_while_writers_rotate(tmp_path: Path) -> None:
    """verify runs against a live trail that rotates under it: never a false alarm."""
    import threading

    stop = threading.Event()

    def write() -> None:
        with auditing.configured(tmp_path, durability="none", rotate_bytes=3000):
            i = 0
            while not stop.is_set():
                auditing.emit(ev(i))
                i += 1

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(60):
            verify_trail(tmp_path)
    finally:
        stop.set()
        t.join()
    assert verify_trail(tmp_path).records == small_verifier(tmp_path)


def test_cli_verify_says_what_it_cannot_see(cli, trail: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without an off-host anchor a cut on a line boundary verifies: the output must say that the records
    after the newest anchor are not covered, and a torn last line must not read as "intact"."""
    cur = trail / CURRENT
    cur.write_bytes(b"".join(_lines(cur)[:-2]))  # the newest two records cut on a line boundary
    code, out, err = cli("auditlog", "verify", "--trail", str(trail), "--no-local-checkpoints")
    assert code == 0, err
    assert "trail intact" not in out and "records 1..58 are after the newest off-host anchor" in out
    code, out, _ = cli("--json", "auditlog", "verify", "--trail", str(trail), "--no-local-checkpoints")
    res = json.loads(out)["result"]
    assert res["covered_to"] == 0 and res["not_covered"] == 58
    # A copy off the host up to record 50: records 51..58 are the only ones not covered.
    shipped = tmp_path / "archive-audit.log"
    shipped.write_bytes(b"".join(ln for f in trail_files(trail) for ln in _lines(f) if _seq(ln) <= 50))
    code, out, _ = cli("--json", "auditlog", "verify", "--trail", str(trail), "--shipped", str(shipped))
    res = json.loads(out)["result"]
    assert code == 0 and res["covered_to"] == 50 and res["not_covered"] == 8
    # A torn last line is named, not passed over.
    with open(cur, "ab") as fh:
        fh.write(b'{"event":{"seq')
    code, out, _ = cli("auditlog", "verify", "--trail", str(trail), "--no-local-checkpoints")
    assert code == 0 and "an unfinished last line (14 bytes) is not part of the chain" in out
