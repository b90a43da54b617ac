"""The runner: crashes and hangs become ERROR findings, exit codes, waivers, history diffs, --baseline."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from edgesec.checks.interface import CheckContext
from edgesec.checks.probes import BuiltSystem, FixedClock
from edgesec.checks.runner import run_checks
from edgesec.config import load_config
from tests.checks.conftest import FileState, Hangs, LowFail, Passes, Raises, Silent


def _ctx() -> CheckContext:
    return CheckContext(
        system=BuiltSystem(), clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)), config=load_config()
    )


def test_crash_hang_and_silence_are_errors_and_the_run_finishes() -> None:
    t0 = time.monotonic()
    outs = run_checks([Raises, Hangs, Silent, Passes], _ctx(), timeout_s=20, workers=4)
    took = time.monotonic() - t0
    by = {o.check_id: o.findings for o in outs}
    assert [f.status.value for f in by["demo.passes"]] == ["PASS"]
    (crash,) = by["demo.raises"]
    assert crash.status.value == "ERROR" and "RuntimeError: boom" in crash.message
    assert "traceback" in crash.evidence
    (hang,) = by["demo.hangs"]
    assert hang.status.value == "ERROR" and "timed out after 0.5s" in hang.message
    (silent,) = by["demo.silent"]
    assert silent.status.value == "ERROR" and "no findings" in silent.message
    # The hung check (sleeping 30 s) was abandoned at its 0.5 s deadline.
    assert took < 10


def test_workers_bound_parallelism_and_every_check_gets_an_outcome() -> None:
    outs = run_checks([Hangs, Passes, Raises, Silent, LowFail], _ctx(), timeout_s=5, workers=1)
    assert [o.check_id for o in outs] == [
        "demo.hangs",
        "demo.passes",
        "demo.raises",
        "demo.silent",
        "demo.low-fail",
    ]


def _json_run(cli, *args: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    code, out, _err = cli("--json", "audit", *args)
    doc = json.loads(out)
    return code, doc


def test_exit_codes(cli, use_checks, demo_profile: Path, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(FileState, Passes, LowFail, Raises)
    prof = str(demo_profile)
    # 0: nothing fails at or above high (the low finding does not count).
    code, doc = _json_run(cli, "--profile", prof, "--only", "demo.passes", "--only", "demo.low-fail")
    assert code == 0 and doc["result"]["result"]["summary"]["verdict"] == "pass"
    # 1: --fail-on low makes the low finding fail the run.
    code, doc = _json_run(cli, "--profile", prof, "--only", "demo.low-fail", "--fail-on", "low")
    assert code == 1
    assert doc["result"]["result"]["summary"]["blocking"][0]["check_id"] == "demo.low-fail"
    # 3: a check errored; it wins over the failing one.
    code, doc = _json_run(cli, "--profile", prof, "--fail-on", "low")
    assert code == 3 and doc["result"]["result"]["summary"]["verdict"] == "incomplete"
    # 2: bad input, nothing run and nothing kept.
    before = len(list((home / "checks" / "history").glob("*.json")))
    for bad in (
        ["--only", "nosuch"],
        ["--report", "pdf"],
        ["--fail-on", "urgent"],
        ["--lang", "fr"],
        ["--waivers", str(tmp_path / "missing.json")],
        ["--baseline", str(demo_profile)],
        ["--replay", str(demo_profile)],
        ["--report", "json", "--out", str(tmp_path / "no" / "such" / "r.json")],
        ["--prom-textfile", str(tmp_path / "no" / "x.prom")],
    ):
        code, out, err = cli("audit", "--profile", prof, *bad)
        assert code == 2, (bad, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert len(list((home / "checks" / "history").glob("*.json"))) == before
    code, out, err = cli("audit", "--profile", "nosuch")
    assert code == 2 and "unknown profile" in err


def _write_state(home: Path, **items: str) -> None:
    (home / "state.txt").write_text("".join(f"{k}={v}\n" for k, v in items.items()))


def test_history_diff_between_runs_and_baseline(
    cli, use_checks, demo_profile: Path, home: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    use_checks(FileState, Passes)
    prof = str(demo_profile)
    _write_state(home, a="good", b="bad1", c="good")
    code, first = _json_run(cli, "--profile", prof, "--report", "json", "--out", str(tmp_path / "first.json"))
    assert code == 1
    assert first["result"]["result"]["changes"]["against"] is None
    _write_state(home, a="bad", b="bad2", c="good")
    code, second = _json_run(cli, "--profile", prof)
    ch = second["result"]["result"]["changes"]
    assert ch["against"] == first["result"]["result"]["run"]["id"]
    assert [(c["check_id"], c["resource"]) for c in ch["new_failures"]] == [("demo.file-state", "a")]
    assert [c["resource"] for c in ch["changed_evidence"]] == ["b"]
    assert ch["changed_evidence"][0]["evidence_before"] == {"value": "bad1"}
    _write_state(home, a="good", b="good", c="good")
    code, third = _json_run(cli, "--profile", prof)
    assert code == 0
    assert sorted(c["resource"] for c in third["result"]["result"]["changes"]["fixed"]) == ["a", "b"]
    # --baseline compares with a chosen earlier result instead of the last run.
    code, fourth = _json_run(cli, "--profile", prof, "--baseline", str(tmp_path / "first.json"))
    ch = fourth["result"]["result"]["changes"]
    assert ch["against"] == first["result"]["result"]["run"]["id"]
    assert [c["resource"] for c in ch["fixed"]] == ["b"]
    # Every run is kept under the home.
    assert len(list((home / "checks" / "history").glob("*.json"))) == 4


def test_framework_scoring(cli, use_checks, demo_profile: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(FileState, Passes)
    _write_state(home, a="bad")
    code, doc = _json_run(cli, "--profile", str(demo_profile))
    assert code == 1
    (fw,) = doc["result"]["result"]["frameworks"]
    status = {c["id"]: c["status"] for c in fw["controls"]}
    assert status == {"1.3.2": "failed", "10.6.1": "passed", "99": "not_assessed"}
    assert fw["score"] == pytest.approx(1 / 3, abs=1e-3)
    assert "controls passed / controls mapped" in fw["method"]


def test_waivers_valid_and_expired(cli, use_checks, demo_profile: Path, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(FileState, Passes)
    _write_state(home, a="bad", b="bad")
    today = dt.datetime.now(dt.UTC).date()
    wf = tmp_path / "waivers.json"
    wf.write_text(
        json.dumps(
            {
                "waivers": [
                    {
                        "id": "w-ok",
                        "check": "demo.file-state",
                        "resource": "a",
                        "justification": "compensating control: air gap at the branch",
                        "owner": "it-ops",
                        "approver": "ciso",
                        "expires": str(today + dt.timedelta(days=30)),
                    },
                    {
                        "id": "w-old",
                        "check": "demo.file-state",
                        "resource": "b",
                        "justification": "temporary exception during migration",
                        "owner": "it-ops",
                        "approver": "ciso",
                        "expires": str(today),
                    },
                ]
            }
        )
    )
    code, out, err = cli("--json", "audit", "--profile", str(demo_profile), "--waivers", str(wf))
    res = json.loads(out)["result"]["result"]
    st = {f["resource"]: f for c in res["checks"] for f in c["findings"]}
    assert (
        st["a"]["status"] == "WAIVED" and st["a"]["waiver"] == "w-ok" and st["a"]["waived_status"] == "FAIL"
    )
    assert st["b"]["status"] == "FAIL"  # the expired waiver no longer waives
    assert code == 1
    ws = {w["id"]: w for w in res["waivers"]}
    assert ws["w-ok"]["state"] == "active" and ws["w-ok"]["waived_findings"] == 1
    assert ws["w-old"]["state"] == "expired" and ws["w-old"]["waived_findings"] == 0
    assert "w-old" in err and "expired" in err
    trail = [json.loads(x) for x in (home / "audit" / "trail.jsonl").read_text().splitlines()]
    actions = [r["event"]["action"] for r in trail]
    assert actions.count("checks.waiver.expired") == 1 and "checks.audit.completed" in actions
    # The expiry is an audit event once, not on every later run; the report still shows it.
    code, out, err = cli("--json", "audit", "--profile", str(demo_profile), "--waivers", str(wf))
    trail = [json.loads(x) for x in (home / "audit" / "trail.jsonl").read_text().splitlines()]
    assert [r["event"]["action"] for r in trail].count("checks.waiver.expired") == 1
    assert [r["event"]["action"] for r in trail].count("checks.audit.completed") == 2
    assert {w["id"]: w["state"] for w in json.loads(out)["result"]["result"]["waivers"]}["w-old"] == "expired"


def test_waiver_add_and_list(cli, use_checks, demo_profile: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(FileState, Passes)
    until = str(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=10))
    code, out, err = cli(
        "--json",
        "waiver",
        "add",
        "demo.file-state",
        "--resource",
        "a",
        "-j",
        "risk accepted until the new firewall lands",
        "--owner",
        "ops",
        "--approver",
        "ciso",
        "--expires",
        until,
    )
    assert code == 0, err
    wid = json.loads(out)["result"]["id"]
    code, out, _ = cli("--json", "waiver", "list")
    (w,) = json.loads(out)["result"]["waivers"]
    assert w["id"] == wid and w["state"] == "active" and w["days_left"] == 10
    trail = (home / "audit" / "trail.jsonl").read_text()
    assert "checks.waiver.granted" in trail and wid in trail
    # The stored waiver applies to the next audit.
    _write_state(home, a="bad")
    code, out, _ = cli("--json", "audit", "--profile", str(demo_profile))
    assert code == 0
    # Bad input is refused with one line.
    for bad in (
        [
            "demo.file-state",
            "-j",
            "long enough reason",
            "--owner",
            "o",
            "--approver",
            "a",
            "--expires",
            "2020-01-01",
        ],
        [
            "demo.file-state",
            "-j",
            "long enough reason",
            "--owner",
            "o",
            "--approver",
            "a",
            "--expires",
            "soon",
        ],
        ["no.such", "-j", "long enough reason", "--owner", "o", "--approver", "a", "--expires", until],
        ["demo.file-state", "-j", "short", "--owner", "o", "--approver", "a", "--expires", until],
    ):
        code, out, err = cli("waiver", "add", *bad)
        assert code == 2, (bad, err)


def test_broken_waiver_file_is_one_line(cli, use_checks, demo_profile: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(Passes)
    for text in ("{not json", '{"waivers": [{"id": "x"}]}', '{"nope": 1}', "[[waivers]]\nid = 3\n"):
        wf = tmp_path / "w.json"
        wf.write_text(text)
        code, _, err = cli("audit", "--profile", str(demo_profile), "--waivers", str(wf))
        assert code == 2 and "waiver file" in err and "Traceback" not in err


def test_checks_list(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("--json", "checks", "list", "--profile", "bank")
    assert code == 0, err
    rows = {r["id"]: r for r in json.loads(out)["result"]["checks"]}
    assert "pci-dss-4.0:1.3.2" in rows["egress.routes"]["controls"]
    assert rows["egress.dns"]["severity"] == "high"  # the bank profile raises it from medium
    code, out, _ = cli("--json", "checks", "list")
    assert {"egress.routes", "host.time-sync", "host.auditd", "host.edgesec-files"} <= {
        r["id"] for r in json.loads(out)["result"]["checks"]
    }


def test_fail_on_precedence(cli, use_checks, demo_profile: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(LowFail)
    prof = tmp_path / "strict.toml"
    prof.write_text(
        demo_profile.read_text().replace('select = ["demo"]', 'fail_on = "low"\nselect = ["demo"]')
    )
    assert cli("audit", "--profile", str(demo_profile))[0] == 0  # default high
    assert cli("audit", "--profile", str(prof))[0] == 1  # the profile says low
    assert cli("audit", "--profile", str(prof), "--fail-on", "critical")[0] == 0  # the flag wins
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text('[checks]\nfail_on = "high"\n')
    assert cli("--config", str(cfg), "audit", "--profile", str(prof))[0] == 0  # the site's own setting wins


def test_reports_never_replace_a_foreign_file(cli, use_checks, demo_profile: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(Passes)
    precious = tmp_path / "notes.txt"
    precious.write_text("quarterly notes")
    code, _, err = cli("audit", "--profile", str(demo_profile), "--report", "json", "--out", str(precious))
    assert code == 1 and "refusing to overwrite" in err
    assert precious.read_text() == "quarterly notes"
    out = tmp_path / "r.json"
    for _ in range(2):  # an earlier edgesec report is replaced
        assert cli("audit", "--profile", str(demo_profile), "--report", "json", "--out", str(out))[0] == 0
    code, _, err = cli(
        "audit", "--profile", str(demo_profile), "--report", "json", "--report", "html", "--out", str(out)
    )
    assert code == 2 and "directory" in err


def test_commands_run_once_per_audit() -> None:
    import threading

    from edgesec.checks.probes import CachingSystem, CommandResult

    calls: list[tuple[str, ...]] = []

    class Slow(BuiltSystem):
        def run(self, argv, timeout=10.0):  # type: ignore[no-untyped-def]
            calls.append(tuple(argv))
            time.sleep(0.05)
            return CommandResult(tuple(argv), 0, "out")

    sys_ = CachingSystem(Slow())
    threads = [threading.Thread(target=sys_.run, args=(["nft", "-j", "list", "ruleset"],)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys_.run(["ip", "-j", "link"])
    assert calls == [("nft", "-j", "list", "ruleset"), ("ip", "-j", "link")]


def test_history_listing(cli, use_checks, demo_profile: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    use_checks(Passes)
    code, out, _ = cli("--json", "checks", "history")
    assert code == 0 and json.loads(out)["result"]["runs"] == []
    ids = [
        json.loads(cli("--json", "audit", "--profile", str(demo_profile))[1])["result"]["result"]["run"]["id"]
        for _ in range(3)
    ]
    (home / "checks" / "history" / "00000000T000000.000000Z-broken.json").write_text("{nope")
    code, out, _ = cli("--json", "checks", "history", "--limit", "5")
    runs = json.loads(out)["result"]["runs"]
    assert [r["id"] for r in runs[:3]] == list(reversed(ids))
    assert runs[0]["verdict"] == "pass" and "error" in runs[3]
