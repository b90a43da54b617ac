"""Host checks on built systems (auditd, time sync: kernel facts this machine may not provide) and on a
real temporary home (world-writable files)."""

from __future__ import annotations

import os
from pathlib import Path

from edgesec.checks.families import host
from edgesec.checks.probes import BuiltSystem, CommandResult, LiveSystem
from tests.checks.test_egress_built import ctx_for

CHRONY_OK = """Reference ID    : 0A000001 (10.0.0.1)
Stratum         : 3
System time     : 0.000012345 seconds fast of NTP time
Leap status     : Normal
"""
CHRONY_UNSYNC = CHRONY_OK.replace("Normal", "Not synchronised")
CHRONY_OFF = CHRONY_OK.replace("0.000012345", "2.5")


def test_time_sync() -> None:
    none = list(host.TimeSync().run(ctx_for(BuiltSystem(files={"/proc/1/comm": "systemd\n"}))))
    assert none[0].status.value == "FAIL" and "no time synchronisation daemon" in none[0].message
    for out, want in ((CHRONY_OK, "PASS"), (CHRONY_UNSYNC, "FAIL"), (CHRONY_OFF, "FAIL")):
        sys_ = BuiltSystem(
            files={"/proc/77/comm": "chronyd\n"}, commands={("chronyc", "-n", "tracking"): out}
        )
        (f,) = host.TimeSync().run(ctx_for(sys_))
        assert f.status.value == want, (out, f.message)
    sys_ = BuiltSystem(
        files={"/proc/5/comm": "systemd-timesyn\n"},
        commands={("timedatectl", "show", "-p", "NTPSynchronized", "--value"): "no\n"},
    )
    (f,) = host.TimeSync().run(ctx_for(sys_))
    assert f.status.value == "FAIL" and "not synchronised" in f.message


def test_auditd() -> None:
    (f,) = host.Auditd().run(ctx_for(BuiltSystem(files={"/proc/1/comm": "init\n"})))
    assert f.status.value == "FAIL" and "not running" in f.message
    running = {"/proc/300/comm": "auditd\n"}
    status = "enabled 1\nfailure 1\npid 300\nrate_limit 0\n"
    sys_ = BuiltSystem(
        files=running,
        commands={
            ("auditctl", "-s"): status,
            ("auditctl", "-l"): "-w /etc/edgesec -p wa -k edgesec\n-a always,exit -F arch=b64 -S execve\n",
        },
    )
    (f,) = host.Auditd().run(ctx_for(sys_))
    assert f.status.value == "PASS" and "2 rules" in f.message
    sys_ = BuiltSystem(files=running, commands={("auditctl", "-s"): status, ("auditctl", "-l"): "No rules\n"})
    assert next(iter(host.Auditd().run(ctx_for(sys_)))).status.value == "WARN"
    sys_ = BuiltSystem(files=running, commands={("auditctl", "-s"): status.replace("enabled 1", "enabled 0")})
    assert next(iter(host.Auditd().run(ctx_for(sys_)))).status.value == "FAIL"
    # auditctl -s failing (not root, no CAP_AUDIT_CONTROL, a non-initial PID namespace): not assessed.
    sys_ = BuiltSystem(
        files=running, commands={("auditctl", "-s"): CommandResult(("auditctl", "-s"), 1, "", "denied")}
    )
    (f,) = host.Auditd().run(ctx_for(sys_))
    assert f.status.value == "ERROR" and f.message.startswith("not assessed:") and "denied" in f.message
    # auditctl not installed while auditd runs, or an answer without "enabled": not assessed either.
    for cmds in ({}, {("auditctl", "-s"): "garbage\n"}):
        (f,) = host.Auditd().run(ctx_for(BuiltSystem(files=running, commands=cmds)))
        assert f.status.value == "ERROR", cmds
    sys_ = BuiltSystem(
        files=running,
        commands={
            ("auditctl", "-s"): status,
            ("auditctl", "-l"): CommandResult(("auditctl", "-l"), 1, "", "EPERM"),
        },
    )
    (f,) = host.Auditd().run(ctx_for(sys_))
    assert f.status.value == "ERROR" and "EPERM" in f.message


def test_world_writable_edgesec_files(home: Path) -> None:
    (home / "checks").mkdir()
    (home / "checks" / "waivers.json").write_text("{}")
    (home / "ok.txt").write_text("x")
    ctx = ctx_for(LiveSystem())
    (f,) = host.EdgesecFiles().run(ctx)
    assert f.status.value == "PASS"
    os.chmod(home / "checks" / "waivers.json", 0o666)
    os.chmod(home / "checks", 0o777)
    bad = {x.resource: x for x in host.EdgesecFiles().run(ctx)}
    assert set(bad) == {str(home / "checks"), str(home / "checks" / "waivers.json")}
    assert bad[str(home / "checks" / "waivers.json")].evidence["mode"] == "0666"


def test_world_writable_parent_without_sticky_bit(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    home = shared / "edgesec"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("EDGESEC_HOME", str(home))
    bad = {x.resource: x for x in host.EdgesecFiles().run(ctx_for(LiveSystem()))}
    assert bad[str(shared)].status.value == "FAIL"
    os.chmod(shared, 0o1777)  # sticky, like /tmp: others cannot rename what they do not own
    assert [x.status.value for x in host.EdgesecFiles().run(ctx_for(LiveSystem()))] == ["PASS"]


def test_no_edgesec_files_yet_is_a_skip(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGESEC_HOME", str(tmp_path / "not-created-yet"))
    (f,) = host.EdgesecFiles().run(ctx_for(LiveSystem()))
    assert f.status.value == "SKIP" and "no edgesec files" in f.message
