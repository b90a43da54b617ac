"""The site config: one typed schema for ``edgesec.toml``, its lookup order and where each value came from.

Lookup order (first that exists wins; never the working directory, so a root cron job cannot be fed
a config planted there):

1. ``--config PATH`` (must exist),
2. ``$EDGESEC_CONFIG`` (must exist),
3. ``/etc/edgesec/edgesec.toml``,
4. ``~/.config/edgesec/edgesec.toml``,
5. none: the embedded defaults.

The edgesec home (all state) is ``--home``, else ``$EDGESEC_HOME``, else ``/var/lib/edgesec`` for root
and ``~/.local/share/edgesec`` otherwise.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgesec._fs import read_input_file
from edgesec.auditing.settings import AuditingSettings
from edgesec.authz.settings import AuthzSettings
from edgesec.checks.settings import ChecksSettings, GpuSettings, ModelsSettings
from edgesec.errors import ConfigError
from edgesec.pki.settings import PkiSettings

SYSTEM_CONFIG = Path("/etc/edgesec/edgesec.toml")
# Search path after --config and $EDGESEC_CONFIG; a tuple so tests can monkeypatch it whole.
SEARCH_PATH: tuple[Path, ...] = (SYSTEM_CONFIG, Path("~/.config/edgesec/edgesec.toml"))


class SiteSettings(BaseModel):
    """Who this site is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("edge-site", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    org: str = Field("edgesec site", min_length=1, max_length=64)
    profile: str = Field("baseline", description="compliance profile: baseline, bank, clinic, factory")


class Settings(BaseModel):
    """The whole ``edgesec.toml``: one section per part."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: SiteSettings = Field(default_factory=SiteSettings)
    pki: PkiSettings = Field(default_factory=PkiSettings)
    authz: AuthzSettings = Field(default_factory=AuthzSettings)
    auditing: AuditingSettings = Field(default_factory=AuditingSettings)
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)


@dataclass(frozen=True)
class LoadedConfig:
    """The effective settings, the file they came from (if any), the home, and each value's source."""

    settings: Settings
    path: Path | None
    home: Path
    home_source: str
    sources: Mapping[str, str] = field(default_factory=dict)

    def source_of(self, key: str) -> str:
        """Where the value at dotted ``key`` came from: ``file:line`` or ``default``."""
        return self.sources.get(key, "default")

    def path_in_home(self, configured: str | None, *parts: str) -> Path:
        """A configured path, or the default ``<home>/<parts...>``."""
        return Path(configured).expanduser() if configured else self.home.joinpath(*parts)


def default_home() -> Path:
    """The home when neither ``--home`` nor ``$EDGESEC_HOME`` is given."""
    if os.geteuid() == 0:
        return Path("/var/lib/edgesec")
    return Path("~/.local/share/edgesec").expanduser()


def resolve_home(cli_home: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The edgesec home and where it came from."""
    if cli_home:
        return Path(cli_home).expanduser().absolute(), "--home"
    env = os.environ.get("EDGESEC_HOME")
    if env:
        return Path(env).expanduser().absolute(), "$EDGESEC_HOME"
    return default_home(), "default"


def find_config(cli_path: str | os.PathLike[str] | None = None) -> tuple[Path | None, str]:
    """The config file to read and why it was chosen; ``(None, "defaults")`` when there is none."""
    if cli_path:
        p = Path(cli_path).expanduser()
        if not p.exists():
            raise ConfigError(f"config file not found: {p} (given with --config)")
        return p, "--config"
    env = os.environ.get("EDGESEC_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise ConfigError(f"config file not found: {p} (named by $EDGESEC_CONFIG)")
        return p, "$EDGESEC_CONFIG"
    for candidate in SEARCH_PATH:
        p = candidate.expanduser()
        if p.exists():
            return p, "search path"
    return None, "defaults"


_TABLE_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"""^\s*("[^"]+"|'[^']+'|[A-Za-z0-9_.-]+)\s*=""")


def _unquote(k: str) -> str:
    k = k.strip()
    if len(k) >= 2 and k[0] == k[-1] and k[0] in "\"'":
        return k[1:-1]
    return k


def locate_keys(text: str) -> dict[str, int]:
    """Map each dotted key path in a TOML document to the 1-based line it is set on.

    A best-effort scan (tables, dotted keys, inline assignment); enough to point an operator at a line.
    """
    where: dict[str, int] = {}
    prefix: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _TABLE_RE.match(line)
        if m:
            prefix = [_unquote(p) for p in m.group(1).split(".")]
            where.setdefault(".".join(prefix), lineno)
            continue
        m = _KEY_RE.match(line)
        if m:
            parts = prefix + [_unquote(p) for p in m.group(1).split(".")]
            where.setdefault(".".join(parts), lineno)
    return where


def _leaf_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _leaf_keys(v, key + ".")
        else:
            yield key


def _line_for(lines: Mapping[str, int], key: str) -> int | None:
    parts = key.split(".")
    while parts:
        ln = lines.get(".".join(parts))
        if ln is not None:
            return ln
        parts.pop()
    return None


def _check_permissions(path: Path) -> None:
    st = path.stat()
    if st.st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"{path}: config file is world-writable; refusing to use it",
            hint=f"chmod o-w {path}",
        )


def parse_config(text: str, path: Path) -> tuple[Settings, dict[str, str]]:
    """Parse and validate a config document; errors name the file, line and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    lines = locate_keys(text)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        first = errs[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top)"
        ln = _line_for(lines, key)
        where = f"{path}:{ln}" if ln else str(path)
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(f"{where}: {key}: {msg}{more}") from None
    sources = {}
    for key in _leaf_keys(data):
        ln = _line_for(lines, key)
        sources[key] = f"{path}:{ln}" if ln else str(path)
    return settings, sources


def load_config(
    cli_path: str | os.PathLike[str] | None = None, cli_home: str | os.PathLike[str] | None = None
) -> LoadedConfig:
    """Find, read and validate the site config, and resolve the home."""
    path, _why = find_config(cli_path)
    home, home_source = resolve_home(cli_home)
    if path is None:
        return LoadedConfig(Settings(), None, home, home_source, {})
    _check_permissions(path)
    raw = read_input_file(path, what="config file", limit=4 * 1024 * 1024)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    settings, sources = parse_config(text, path)
    return LoadedConfig(settings, path, home, home_source, sources)


def flatten(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Every leaf value of the settings as ``{"dotted.key": value}``, for ``config show``."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.update(flatten(value, key + "."))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            out[key] = [v.model_dump(mode="json") for v in value]
        else:
            out[key] = value
    return out
