"""Site config: lookup order, validation errors naming file/line/key, provenance, home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesec import config
from edgesec.errors import ConfigError


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_defaults_when_no_file() -> None:
    cfg = config.load_config()
    assert cfg.path is None
    assert cfg.settings.site.profile == "baseline"
    assert cfg.source_of("authz.port") == "default"


def test_working_directory_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "edgesec.toml", "[site]\nname = 'planted'\n")
    monkeypatch.chdir(tmp_path)
    cfg = config.load_config()
    assert cfg.path is None and cfg.settings.site.name == "edge-site"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sysf = write(tmp_path / "sys.toml", "[site]\nname = 'from-system'\n")
    envf = write(tmp_path / "env.toml", "[site]\nname = 'from-env'\n")
    clif = write(tmp_path / "cli.toml", "[site]\nname = 'from-cli'\n")
    monkeypatch.setattr(config, "SEARCH_PATH", (sysf,))
    assert config.load_config().settings.site.name == "from-system"
    monkeypatch.setenv("EDGESEC_CONFIG", str(envf))
    assert config.load_config().settings.site.name == "from-env"
    assert config.load_config(clif).settings.site.name == "from-cli"


def test_provenance_names_file_and_line(tmp_path: Path) -> None:
    f = write(
        tmp_path / "e.toml",
        "# site\n[site]\nname = 'b1'\n\n[authz]\nport = 9200\n[authz.headers]\nuser = 'X-U'\n",
    )
    cfg = config.load_config(f)
    assert cfg.source_of("site.name") == f"{f}:3"
    assert cfg.source_of("authz.port") == f"{f}:6"
    assert cfg.source_of("authz.headers.user") == f"{f}:8"
    assert cfg.source_of("authz.host") == "default"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[site]\nname = 'ok'\nnmae = 'typo'\n", ":3: site.nmae: unknown key"),
        ("[authz]\nport = 'x'\n", ":2: authz.port: Input should be a valid integer"),
        ("[authz]\nport = 70000\n", ":2: authz.port: Input should be less than or equal to 65535"),
        ("[nosuch]\na = 1\n", ":1: nosuch: unknown key"),
        ("[site\n", ": not valid TOML"),
        ("[auditing]\ndurability = 'sometimes'\n", ":2: auditing.durability:"),
    ],
)
def test_errors_name_file_line_key(tmp_path: Path, text: str, expect: str) -> None:
    f = write(tmp_path / "e.toml", text)
    with pytest.raises(ConfigError) as ei:
        config.load_config(f)
    assert str(f) in ei.value.message and expect in ei.value.message
    assert "\n" not in ei.value.message


def test_unreadable_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load_config(tmp_path / "nope.toml")
    d = tmp_path / "dir.toml"
    d.mkdir()
    with pytest.raises(Exception, match="is a directory"):
        config.load_config(d)
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load_config(bad)


def test_world_writable_config_refused(tmp_path: Path) -> None:
    f = write(tmp_path / "e.toml", "[site]\nname = 'x'\n")
    os.chmod(f, 0o666)
    with pytest.raises(ConfigError, match="world-writable"):
        config.load_config(f)


def test_home_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.resolve_home(tmp_path / "h") == ((tmp_path / "h").absolute(), "--home")
    monkeypatch.setenv("EDGESEC_HOME", str(tmp_path / "e"))
    assert config.resolve_home(None) == ((tmp_path / "e").absolute(), "$EDGESEC_HOME")
    monkeypatch.delenv("EDGESEC_HOME")
    home, src = config.resolve_home(None)
    assert src == "default"
    assert home == (
        Path("/var/lib/edgesec") if os.geteuid() == 0 else Path("~/.local/share/edgesec").expanduser()
    )


@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.integers(), max_size=4))
def test_unknown_sections_always_rejected(
    tmp_path_factory: pytest.TempPathFactory, junk: dict[str, int]
) -> None:
    lines = ["[zz_unknown]"] + [f"{k} = {v}" for k, v in junk.items()]
    f = tmp_path_factory.mktemp("c") / "e.toml"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError):
        config.load_config(f)
