"""The hash-chained trail core: one chain across processes, crash repair, ECS validation."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.trail import GENESIS, Trail, trail_files
from edgesec.errors import InputError
from tests._wait import wait_until


def small_verifier(directory: Path) -> int:
    """Independent of the library's verifier: recompute every hash and link from the raw lines."""
    prev, seq = GENESIS, 0
    for f in trail_files(directory):
        for raw in f.read_bytes().splitlines():
            doc = json.loads(raw)
            h = doc["event"].pop("hash")
            body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            assert hashlib.sha256(body).hexdigest() == h, f"hash mismatch at {seq + 1}"
            assert doc["event"]["sequence"] == seq + 1
            assert doc["edgesec"]["trail"]["prev"] == prev
            prev, seq = h, seq + 1
    return seq


def ev(i: int = 0) -> AuditEvent:
    return AuditEvent(
        action="test.event",
        category=("host",),
        type=("info",),
        part="test",
        fields={"edgesec.test.i": i, "user.id": f"u{i}"},
    )


def _writer(directory: str, n: int, durability: str) -> None:
    with auditing.configured(Path(directory), durability=durability, group_commit_ms=5):
        for i in range(n):
            auditing.emit(ev(i))


def test_four_processes_one_chain(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 10_000, "group")) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    assert small_verifier(tmp_path) == 40_000


def test_fsync_durability_chain(tmp_path: Path) -> None:
    with auditing.configured(tmp_path, durability="fsync") as trail:
        recs = [auditing.emit(ev(i)) for i in range(20)]
    assert all(r is not None for r in recs)
    assert recs[-1]["event"]["sequence"] == 20  # type: ignore[index]
    assert small_verifier(tmp_path) == 20
    assert trail.path.stat().st_mode & 0o777 == 0o600


def test_group_commit_bound(tmp_path: Path) -> None:
    """In group mode emit() returns before the write; the record is on disk within the stated bound."""
    with auditing.configured(tmp_path, durability="group", group_commit_ms=50) as trail:
        assert auditing.emit(ev(1)) is None
        t0 = time.monotonic()
        while small_verifier(tmp_path) < 1:
            assert time.monotonic() - t0 < 1.0, "record not durable within 1 s"
            time.sleep(0.005)
        assert trail.flush(5)


KILL_SCRIPT = r"""
import sys, os
from pathlib import Path
from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
auditing.configure(Path(sys.argv[1]), durability="none")
i = 0
while True:
    i += 1
    auditing.emit(AuditEvent(action="test.kill", category=("host",), type=("info",), part="test",
                             fields={"edgesec.test.pad": "x" * 2000, "edgesec.test.i": i}))
"""


def test_killed_writer_never_breaks_chain(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)])
    # Killed while writing: once it has written a good many records (about 2 KB each).
    cur = tmp_path / "trail.jsonl"
    wait_until(lambda: cur.exists() and cur.stat().st_size > 200_000, "the writer to write 100 records")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # Simulate the worst case too: a torn last line.
    cur = tmp_path / "trail.jsonl"
    with open(cur, "ab") as fh:
        fh.write(b'{"event":{"sequence":')
    before = small_verifier_tolerant(cur)
    trail = Trail(tmp_path, durability="fsync")
    rec = trail.append(ev(99).to_document())
    trail.close()
    n = small_verifier(tmp_path)
    assert n == before + 2  # the repair note, then our record
    lines = cur.read_bytes().splitlines()
    repair = json.loads(lines[-2])
    assert repair["event"]["action"] == "trail.repaired"
    assert rec["event"]["sequence"] == n
    frags = list((tmp_path / "torn").iterdir())
    assert len(frags) == 1 and frags[0].read_bytes().endswith(b'{"event":{"sequence":')


def small_verifier_tolerant(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n")[:-1] if line)


def test_rejects_non_ecs_values() -> None:
    with pytest.raises(InputError, match=r"event\.category"):
        AuditEvent(action="x", category=("nonsense",), type=("info",))
    with pytest.raises(InputError, match=r"event\.outcome"):
        AuditEvent(action="x", category=("host",), type=("info",), outcome="maybe")
    with pytest.raises(InputError, match="neither a modelled ECS field"):
        AuditEvent(action="x", category=("host",), type=("info",), fields={"x509.serial": "1"})
    with pytest.raises(InputError, match="IP address"):
        AuditEvent(action="x", category=("host",), type=("info",), fields={"source.ip": "nope"}).to_document()


def test_ecs_document_shape() -> None:
    doc = AuditEvent(
        action="authz.decision",
        category=("iam",),
        type=("denied",),
        outcome="failure",
        severity="high",
        part="authz",
        fields={"user.id": "alice", "user.roles": ["teller"], "source.ip": "127.0.0.1"},
    ).to_document(site="branch-1")
    assert doc["ecs"]["version"] == "8.17.0"
    assert doc["event"]["category"] == ["iam"] and doc["event"]["type"] == ["denied"]
    assert doc["user"] == {"id": "alice", "roles": ["teller"]}
    assert doc["edgesec"] == {"part": "authz", "site": "branch-1"}
    assert doc["@timestamp"].endswith("Z")
