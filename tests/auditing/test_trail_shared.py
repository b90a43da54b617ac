"""A group-shared trail directory (02770, as `edgesec site units`' tmpfiles entry makes it) keeps every file
the writer creates open to the group: the current file, the lock, rotated files and torn-tail evidence
(issue #20 attack 1). Private directories stay private. The real-user test is
tests/e2e/test_trail_service_user.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.trail import Trail


def _ev(i: int) -> AuditEvent:
    return AuditEvent("test.event", ("configuration",), ("info",), message=f"event {i}")


def test_files_in_a_shared_trail_are_group_rw_and_evidence_dirs_shared(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    d.mkdir()
    os.chmod(d, 0o2770)
    old = os.umask(0o077)  # the replica unit's UMask: the writer must not depend on it
    try:
        t = Trail(d, durability="fsync", rotate_bytes=4096)
        t.append(_ev(0).to_document())
        with open(d / "trail.jsonl", "ab") as fh:  # a writer killed mid-line
            fh.write(b'{"event":{"sequence":')
        t2 = Trail(d, durability="fsync", rotate_bytes=4096)
        for i in range(1, 40):
            t2.append(_ev(i).to_document())
        t.close()
        t2.close()
    finally:
        os.umask(old)
    gid = d.stat().st_gid
    rotated = sorted(d.glob("trail.*-*.jsonl"))
    assert rotated, "rotation did not happen"
    for f in [d / "trail.jsonl", d / "trail.lock", *rotated]:
        st = f.stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid, (f, oct(st.st_mode))
    torn = d / "torn"
    assert stat.S_IMODE(torn.stat().st_mode) == 0o2770 and torn.stat().st_gid == gid
    assert stat.S_IMODE(d.stat().st_mode) == 0o2770  # the writer never tightens a shared directory


def test_a_private_trail_stays_private(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    t = Trail(d, durability="fsync")
    t.append(_ev(0).to_document())
    t.close()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "trail.jsonl").stat().st_mode) == 0o600
