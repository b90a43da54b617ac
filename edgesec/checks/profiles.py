"""Compliance profiles: data in ``policies/profiles/<name>.toml``, validated when loaded.

A profile selects checks (families, ids or ``fnmatch`` patterns), sets severities and thresholds per check,
and maps checks to the control ids of its frameworks. The runner scores each framework from that mapping
(see :func:`edgesec.checks.result.score_frameworks`). A site may pass its own profile file by path.

Profile rules are data, never code keyed on a profile's name: a check reads its thresholds and switches
(``require_mig``, ``fail_past_eol``, ``min_days``, ``required``...) through one lookup,
:meth:`Profile.param` (the check's own ``[checks."<id>"] params``, else its family's ``[checks.<family>]``),
and the audit-log retention the pipeline keeps is ``[audit_log]``. A site profile inherits a shipped (or
another site) profile's rules with ``extends = "bank"``: what it does not set is the parent's, so a
``bank-hq`` profile is as strict as ``bank`` unless it says otherwise.
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
from edgesec.checks.interface import Severity, lookup_param
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


class AuditLog(BaseModel):
    """How long the audit-log archive in Elasticsearch is kept under this profile, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: int = Field(ge=1)
    retention_reason: str = Field(min_length=1)


class Profile(BaseModel):
    """A compliance profile (``policies/profiles/<id>.toml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PROFILE_NAME_RE)
    extends: str | None = None
    title: str
    title_zh: str | None = None
    description: str = ""
    fail_on: str | None = Field(None, pattern="^(info|low|medium|high|critical)$")
    select: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    checks: dict[str, CheckSettings] = Field(default_factory=dict)
    frameworks: list[Framework] = Field(default_factory=list)
    audit_log: AuditLog | None = None

    def selects(self, check_id: str) -> bool:
        return _matches(check_id, self.select) and not _matches(check_id, self.exclude)

    def severity_of(self, check_id: str, default: Severity) -> Severity:
        cs = self.checks.get(check_id)
        return Severity.parse(cs.severity) if cs and cs.severity else default

    def params(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v.params) for k, v in self.checks.items() if v.params}

    def param(self, check_id: str, name: str, default: Any) -> Any:
        """A rule of this profile: see :func:`lookup_param` (what every family uses, via ``ctx.param``)."""
        return lookup_param(self.params(), check_id, name, default)

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


def shipped_frameworks() -> frozenset[str]:
    """The ids of the frameworks the shipped profiles score: what a check's ``framework:control`` may name."""
    return frozenset(fw.id for name in available_profiles() for fw in load_profile(name).frameworks)


def available_profiles() -> list[str]:
    root = policies_root() / "profiles"
    return sorted(p.stem for p in root.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or a site profile file by path (``.toml``), with what it extends."""
    return _load(name_or_path, ())


def _locate(name_or_path: str) -> Path:
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise NotFound(f"profile file not found: {path}")
        return path
    path = policies_root() / "profiles" / f"{name_or_path}.toml"
    if not path.is_file():
        raise NotFound(
            f"unknown profile {name_or_path!r}",
            hint=f"shipped profiles: {', '.join(available_profiles())}; or give a .toml path",
        )
    return path


#: How deep ``extends`` may chain (a site profile on a site profile on a shipped one is two).
MAX_EXTENDS = 8


def _load(name_or_path: str, chain: tuple[Path, ...]) -> Profile:
    path = _locate(name_or_path)
    if path.resolve() in chain:
        raise ConfigError(f"profile {path}: extends itself (through {' -> '.join(map(str, chain))})")
    if len(chain) >= MAX_EXTENDS:
        raise ConfigError(f"profile {path}: extends more than {MAX_EXTENDS} profiles deep")
    raw = read_input_file(path, what="profile")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path}: not valid TOML: {exc}") from None
    parent = doc.get("extends")
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise ConfigError(f"profile {path}: extends: must be a profile name or a .toml path")
        is_path = "/" in parent or parent.endswith(".toml")
        if is_path and not Path(parent).expanduser().is_absolute():
            parent = str(path.parent / parent)  # a sibling file, not one relative to the working directory
        base = _load(parent, (*chain, path.resolve()))
        doc = _inherit(base.model_dump(exclude_none=True, exclude={"extends"}), doc)
    try:
        return Profile.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"profile {path}: {loc}: {err['msg']}") from None


def _inherit(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: every key the child sets wins; ``checks`` merge per check and their
    ``params`` per name (a child can tighten one threshold and keep the rest); ``audit_log`` merges
    per field. Lists (``select``, ``exclude``, ``frameworks``) are replaced whole when given."""
    out = dict(base)
    for key, value in child.items():
        if key == "checks" and isinstance(value, dict):
            checks = {k: dict(v) for k, v in base.get("checks", {}).items()}
            for cid, settings in value.items():
                if not isinstance(settings, dict):
                    checks[cid] = settings  # validation reports it
                    continue
                merged = {**checks.get(cid, {}), **settings}
                if isinstance(settings.get("params"), dict):
                    merged["params"] = {**checks.get(cid, {}).get("params", {}), **settings["params"]}
                checks[cid] = merged
            out["checks"] = checks
        elif key == "audit_log" and isinstance(value, dict) and isinstance(base.get("audit_log"), dict):
            out["audit_log"] = {**base["audit_log"], **value}
        else:
            out[key] = value
    # A profile that sets its own title but not title_zh must not show its parent's Chinese title.
    if "title" in child and "title_zh" not in child:
        out.pop("title_zh", None)
    return out
