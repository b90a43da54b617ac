"""Compliance profiles: data in ``policies/profiles/<name>.toml``, validated when loaded.

A profile selects checks (families, ids or ``fnmatch`` patterns), sets severities and thresholds per check,
and maps checks to the control ids of its frameworks. The runner scores each framework from that mapping
(see :func:`edgesec.checks.result.score_frameworks`). A site may pass its own profile file by path.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgesec._data import policies_root
from edgesec._fs import read_input_file
from edgesec.checks.interface import Severity
from edgesec.errors import ConfigError, NotFound

PROFILE_NAME_RE = r"^[a-z][a-z0-9-]*$"


class CheckSettings(BaseModel):
    """What a profile says about one check: its severity here and its thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: str | None = Field(None, pattern="^(info|low|medium|high|critical)$")
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, le=3600)


class Control(BaseModel):
    """One control of a framework and the checks that evidence it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1)
    title_zh: str | None = None
    # Patterns naming the checks; checks whose metadata references this control are added to them.
    checks: list[str] = Field(default_factory=list)


class Framework(BaseModel):
    """A compliance framework as this profile maps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    title: str
    title_zh: str | None = None
    controls: list[Control] = Field(min_length=1)

    @field_validator("controls")
    @classmethod
    def _unique(cls, v: list[Control]) -> list[Control]:
        ids = [c.id for c in v]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate control ids: {', '.join(sorted(dup))}")
        return v


class Profile(BaseModel):
    """A compliance profile (``policies/profiles/<id>.toml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PROFILE_NAME_RE)
    title: str
    title_zh: str | None = None
    description: str = ""
    fail_on: str | None = Field(None, pattern="^(info|low|medium|high|critical)$")
    select: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    checks: dict[str, CheckSettings] = Field(default_factory=dict)
    frameworks: list[Framework] = Field(default_factory=list)

    def selects(self, check_id: str) -> bool:
        return _matches(check_id, self.select) and not _matches(check_id, self.exclude)

    def severity_of(self, check_id: str, default: Severity) -> Severity:
        cs = self.checks.get(check_id)
        return Severity.parse(cs.severity) if cs and cs.severity else default

    def params(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v.params) for k, v in self.checks.items() if v.params}

    def families(self) -> set[str]:
        """Families the profile selects by name (``gpu``) or pattern (``gpu.*``)."""
        out = set()
        for sel in self.select:
            out.add(sel.split(".", 1)[0])
        return out


def _matches(check_id: str, patterns: Iterable[str]) -> bool:
    family = check_id.split(".", 1)[0]
    for p in patterns:
        if p == "*" or p == check_id or p == family or fnmatch.fnmatchcase(check_id, p):
            return True
    return False


def expand(patterns: Iterable[str], check_ids: Iterable[str]) -> list[str]:
    """The check ids among ``check_ids`` that ``patterns`` (ids, families, globs) name."""
    ids = sorted(check_ids)
    return [c for c in ids if _matches(c, patterns)]


def available_profiles() -> list[str]:
    root = policies_root() / "profiles"
    return sorted(p.stem for p in root.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or a site profile file by path (``.toml``)."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise NotFound(f"profile file not found: {path}")
    else:
        path = policies_root() / "profiles" / f"{name_or_path}.toml"
        if not path.is_file():
            raise NotFound(
                f"unknown profile {name_or_path!r}",
                hint=f"shipped profiles: {', '.join(available_profiles())}; or give a .toml path",
            )
    raw = read_input_file(path, what="profile")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path}: not valid TOML: {exc}") from None
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"profile {path}: {loc}: {err['msg']}") from None
