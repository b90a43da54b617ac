"""``edgesec schedule install``: hardened systemd units (verified by systemd-analyze) or a cron.d file."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest


def test_systemd_units_are_hardened_and_verify(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli("--json", "schedule", "install", "--systemd", "--dir", str(tmp_path))
    assert code == 0, err
    doc = json.loads(out)["result"]
    assert "audit" in doc["jobs"]
    service = (tmp_path / "edgesec-audit.service").read_text()
    timer = (tmp_path / "edgesec-audit.timer").read_text()
    for line in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
    ):
        assert line in service
    assert "audit --report json --report prom" in service and "--prom-textfile" in service
    assert "OnCalendar=*-*-* 02:30:00" in timer and "Persistent=yes" in timer
    if shutil.which("systemd-analyze"):
        assert doc["verify"]["ran"] is True and doc["verify"]["problems"] == []
    # Safe to re-run: identical files are left alone; a changed one is refused, nothing overwritten.
    code, out, err = cli("--json", "schedule", "install", "--systemd", "--dir", str(tmp_path))
    assert code == 0 and json.loads(out)["result"]["written"] == []
    (tmp_path / "edgesec-audit.timer").write_text(timer + "# local edit\n")
    code, _, err = cli("schedule", "install", "--systemd", "--dir", str(tmp_path))
    assert code == 1 and "refusing to overwrite" in err
    assert (tmp_path / "edgesec-audit.timer").read_text().endswith("# local edit\n")


@pytest.mark.real("systemd-analyze")
def test_systemd_analyze_accepts_the_service(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("schedule", "install", "--systemd", "--dir", str(tmp_path))
    assert code == 0, err
    cp = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "edgesec-audit.service"),
            str(tmp_path / "edgesec-audit.timer"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "edgesec-audit" not in cp.stderr, cp.stderr


def test_cron_file(cli, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("schedule", "install", "--cron", "--dir", str(tmp_path))
    assert code == 0, err
    text = (tmp_path / "edgesec").read_text()
    (line,) = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and "=" not in ln.split()[0]]
    fields = line.split()
    assert fields[:5] == ["30", "2", "*", "*", "*"] and fields[5] == "root"
    assert f"--home {home}" in line and "audit" in line


def test_schedule_usage_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("schedule", "install", "--dir", str(tmp_path))[0] == 2
    assert cli("schedule", "install", "--systemd", "--cron", "--dir", str(tmp_path))[0] == 2
    assert cli("schedule", "install", "--cron", "--dir", str(tmp_path / "missing"))[0] == 2


def test_jobs_the_config_enables(cli, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    units = tmp_path / "units"
    units.mkdir()
    # Nothing set up: only the audit.
    code, out, _ = cli("--json", "schedule", "install", "--systemd", "--dir", str(units))
    assert json.loads(out)["result"]["jobs"] == ["audit"]
    # A CA and an Elasticsearch target: CRL renewal and shipping join it.
    assert cli("pki", "init", "--no-encrypt")[0] == 0
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text('[auditing]\nelasticsearch_urls = ["https://127.0.0.1:9200"]\n')
    units2 = tmp_path / "units2"
    units2.mkdir()
    code, out, err = cli(
        "--json", "--config", str(cfg), "schedule", "install", "--systemd", "--dir", str(units2)
    )
    assert code == 0, err
    assert json.loads(out)["result"]["jobs"] == ["audit", "pki-crl", "trail-ship"]
    crl = (units2 / "edgesec-pki-crl.service").read_text()
    assert "pki crl" in crl and f"--config {cfg}" in crl
    assert "OnCalendar=*:0/5" in (units2 / "edgesec-trail-ship.timer").read_text()
    code, _, err = cli("--config", str(cfg), "schedule", "install", "--cron", "--dir", str(tmp_path))
    assert code == 0, err
    cron = (tmp_path / "edgesec").read_text()
    assert "*/5 * * * * root" in cron and "10 3 * * * root" in cron


def _exec_start(unit: str) -> list[str]:
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_checkpoint_job_by_signer_name_runs_and_signs(
    cli, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Issue #20 attack 4: checkpoint_signer alone installs a checkpoint job, and that job's command works."""
    assert cli("pki", "init", "--no-encrypt")[0] == 0
    assert cli("pki", "issue", "signing", "trail-signer")[0] == 0
    (tmp_path / "edgesec.toml").write_text('[auditing]\ncheckpoint_signer = "trail-signer"\n')
    units = tmp_path / "units"
    units.mkdir()
    monkeypatch.chdir(tmp_path)  # a relative --config must not be copied verbatim into the units
    code, out, err = cli(
        "--json", "--config", "edgesec.toml", "schedule", "install", "--systemd", "--dir", str(units)
    )
    assert code == 0, err
    assert "trail-checkpoint" in json.loads(out)["result"]["jobs"]
    argv = _exec_start((units / "edgesec-trail-checkpoint.service").read_text())
    assert argv[argv.index("--config") + 1] == str(tmp_path / "edgesec.toml")
    timer = (units / "edgesec-trail-checkpoint.timer").read_text()
    assert "OnCalendar=hourly" in timer and "RandomizedDelaySec=5min" in timer
    # What the timer would run, run from elsewhere (systemd starts it in /).
    r = subprocess.run(argv, cwd="/", capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    code, out, err = cli("--json", "--config", str(tmp_path / "edgesec.toml"), "auditlog", "verify")
    assert code == 0, err
    assert "checkpoint" in out


def test_ship_job_only_when_it_adds_something_and_never_outlasts_its_period(
    cli, tmp_path: Path, home: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "edgesec.toml"
    es = '[auditing]\nelasticsearch_urls = ["https://127.0.0.1:9200"]\n'
    # syslog output on: the syslog-ng pipeline ships every record; a ship job would send each twice.
    cfg.write_text(es + 'syslog = "tcp"\n')
    code, out, err = cli(
        "--json", "--config", str(cfg), "schedule", "install", "--cron", "--dir", str(tmp_path)
    )
    assert code == 0, err
    assert "trail-ship" not in json.loads(out)["result"]["jobs"]
    cfg.write_text(es)
    units = tmp_path / "units"
    units.mkdir()
    code, out, err = cli(
        "--json", "--config", str(cfg), "schedule", "install", "--systemd", "--dir", str(units)
    )
    assert "trail-ship" in json.loads(out)["result"]["jobs"]
    assert "RandomizedDelaySec=1min" in (units / "edgesec-trail-ship.timer").read_text()
    (tmp_path / "edgesec").unlink()
    code, _, err = cli("--config", str(cfg), "schedule", "install", "--cron", "--dir", str(tmp_path))
    assert code == 0, err
    for line in (tmp_path / "edgesec").read_text().splitlines():
        assert "/dev/null" not in line
        if line and not line.startswith("#") and " root " in line:
            assert line.endswith(tuple(f"| logger -t edgesec-{j}" for j in ("audit", "trail-ship"))), line
