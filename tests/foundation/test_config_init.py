"""``edgesec config init``: the site config the go-live steps read (issue #20 attack 3)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from edgesec.config import load_config


def test_config_init_writes_what_later_steps_read_and_never_overwrites(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "etc" / "edgesec" / "edgesec.toml"
    argv = [
        "config", "init", "--site", "branch-042", "--org", "Bank", "--profile", "bank",
        "--policy-dir", str(tmp_path / "policy"), "--model", str(tmp_path / "models" / "teller"),
        "--checkpoint-signer", "trail-signer", "--out", str(out),
    ]  # fmt: skip
    code, stdout, err = cli("--json", *argv)
    assert code == 0, err
    assert json.loads(stdout)["result"]["written"] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    s = load_config(out).settings
    assert (s.site.name, s.site.org, s.site.profile) == ("branch-042", "Bank", "bank")
    assert s.authz.policy_dir == str(tmp_path / "policy") and s.authz.url == "http://127.0.0.1:9100"
    assert s.auditing.checkpoint_signer == "trail-signer" and s.auditing.syslog == "off"
    assert s.models.dirs == [str(tmp_path / "models" / "teller")]
    before = out.read_bytes()
    code, _, err = cli(*argv[:-1], str(out))
    assert code == 1 and "exists" in err and out.read_bytes() == before
    code, _, err = cli("config", "check", "--help")
    assert code == 0


def test_config_init_refuses_bad_values_before_writing(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "edgesec.toml"
    for extra in (
        ["--site", "bad name"],
        ["--site", "s", "--profile", "nope"],
        ["--site", "s", "--syslog", "udp"],
    ):
        code, _, err = cli("config", "init", "--org", "Bank", *extra, "--out", str(out))
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
        assert not out.exists()


def test_relative_paths_are_written_absolute(cli: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(
        "config", "init", "--site", "s", "--org", "o", "--policy-dir", "pol", "--out", "c.toml"
    )
    assert code == 0, err
    assert load_config(tmp_path / "c.toml").settings.authz.policy_dir == str(tmp_path / "pol")
