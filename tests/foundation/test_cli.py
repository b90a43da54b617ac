"""The CLI conventions: exit codes, --json, --version, help, errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesec import __version__
from edgesec._cli import main


def test_version(cli) -> None:
    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"edgesec {__version__}"


def test_help_everywhere(cli) -> None:
    for argv in (
        ["--help"],
        ["pki", "--help"],
        ["authz", "--help"],
        ["auditlog", "--help"],
        ["config", "--help"],
    ):
        code, out, _ = cli(*argv)
        assert code == 0, argv
        assert "Usage" in out


def test_unknown_command_is_usage_error(cli) -> None:
    code, _, err = cli("no-such-command")
    assert code == 2
    assert "edgesec: error:" in err
    assert "Traceback" not in err


def test_unknown_option_is_usage_error_json(cli) -> None:
    code, out, _ = cli("--json", "config", "show", "--bogus")
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["error"]["kind"] == "usage"


def test_json_flag_anywhere(cli) -> None:
    code, out, _ = cli("config", "show", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True and doc["command"] == "config show"
    assert any(r["key"] == "site.name" and r["source"] == "default" for r in doc["result"]["values"])


def test_config_error_exit_2_json(cli, tmp_path: Path) -> None:
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text("[site]\nname = 'x'\nbogus = 1\n")
    code, out, _ = cli("--json", "--config", str(cfg), "config", "check")
    assert code == 2
    doc = json.loads(out)
    assert doc["error"]["kind"] == "config"
    assert f"{cfg}:3: site.bogus: unknown key" in doc["error"]["message"]


def test_exit_codes_from_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every documented exit code comes out of main() for the matching error class."""
    import typer

    from edgesec import _cli
    from edgesec.errors import IncompleteError, InputError, VerificationError

    probe = typer.Typer()

    cases = {
        "fail": (VerificationError("tampered"), 1),
        "input": (InputError("bad input"), 2),
        "incomplete": (IncompleteError("a check errored"), 3),
    }

    for name, (exc, _) in cases.items():

        def cmd(exc: Exception = exc) -> None:
            raise exc

        probe.command(name)(cmd)

    @probe.command("boom")
    def boom() -> None:
        raise RuntimeError("unexpected")

    _cli.app.add_typer(probe, name="probe-test")
    try:
        for name, (_, want) in cases.items():
            assert main(["probe-test", name]) == want
            err = capsys.readouterr().err
            assert err.count("\n") <= 2 and "Traceback" not in err
        assert main(["probe-test", "boom"]) == 1
        err = capsys.readouterr().err
        assert "internal error: RuntimeError: unexpected" in err and "Traceback" not in err
        assert main(["--debug", "probe-test", "boom"]) == 1
        assert "Traceback" in capsys.readouterr().err
    finally:
        _cli.app.registered_groups = [g for g in _cli.app.registered_groups if g.name != "probe-test"]


def test_subprocess_entry_point(tmp_path: Path) -> None:
    """Once through a real process: python -m edgesec, with a config error -> exit 2, one line."""
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text("[authz]\nport = 'not-a-port'\n")
    env = {**os.environ, "EDGESEC_CONFIG": str(cfg), "EDGESEC_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    cp = subprocess.run(
        [sys.executable, "-m", "edgesec", "config", "check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert cp.returncode == 2
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, cp.stderr
    assert f"{cfg}:2: authz.port:" in lines[0]
    assert "\x1b[" not in cp.stderr  # NO_COLOR respected
    ok = subprocess.run(
        [sys.executable, "-m", "edgesec", "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ok.returncode == 0 and ok.stdout.startswith("edgesec ")


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["--home", "HOME", "config", "show"], "config show"),
        (["config", "show", "--json"], "config show"),
        (
            ["authz", "explain", "--user", "alice", "--tenant", "b", "--method", "GET", "--uri", "/"],
            "authz explain",
        ),
        (["pki", "issue", "client", "alice", "--email", "a@b.c"], "pki issue client"),
        (["no-such-command", "x"], ""),
    ],
)
def test_json_command_names_only_the_sub_commands(cli, home: Path, argv: list[str], command: str) -> None:  # type: ignore[no-untyped-def]
    """Issue #20 section 9: option values ("--home /x", "--profile bank") were part of the ``command``."""
    _code, out, _err = cli("--json", *[str(home) if a == "HOME" else a for a in argv])
    assert json.loads(out)["command"] == command


def test_help_keeps_config_key_names(cli) -> None:  # type: ignore[no-untyped-def]
    """Issue #20 section 9: rich markup ate "[site]", "[pki]", "[models]" out of the help text."""
    for argv, needle in (
        (["pki", "init", "--help"], "(default: [site] org)"),
        (["pki", "issue", "client", "--help"], "[pki] key_type"),
        (["model", "verify", "--help"], "[models] follow_symlinks"),
    ):
        code, out, _ = cli(*argv)
        assert code == 0 and needle in " ".join(out.split()), (argv, out)
