"""Where checks come from: the built-in families and the ``edgesec.checks`` entry-point group.

Each built-in family module exposes ``CHECKS: list[type[Check]]``. A site's own checks are
published by a package under the entry-point group ``edgesec.checks`` (each entry point names a module
with ``CHECKS`` or a single ``Check`` subclass). Every check's metadata is validated when it is loaded;
a plug-in that cannot be imported or whose metadata is invalid is reported as a load problem (an ERROR
in the run), never a crash and never silently dropped.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

from edgesec.checks.interface import Check, CheckDefinitionError
from edgesec.checks.profiles import shipped_frameworks

BUILTIN_FAMILY_MODULES: tuple[str, ...] = (
    "edgesec.checks.families.egress",
    "edgesec.checks.families.host",
    "edgesec.checks.families.pki",
    "edgesec.checks.families.gpu",
    "edgesec.checks.families.models",
    "edgesec.checks.families.authz",
    "edgesec.checks.families.auditing",
)
ENTRY_POINT_GROUP = "edgesec.checks"

# Families the runner knows about even when no check of theirs is installed, so a profile that selects
# them gets a SKIP with a reason instead of silence.
KNOWN_FAMILIES: tuple[str, ...] = ("egress", "host", "pki", "gpu", "models", "authz", "auditing")


@dataclass(frozen=True)
class LoadProblem:
    """A check source that could not be used (import error, invalid metadata, duplicate id)."""

    source: str
    message: str


@dataclass
class Catalog:
    """Every loaded check by id, where it came from, and what could not be loaded."""

    checks: dict[str, type[Check]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)
    # Framework ids a control reference may name (those of the shipped profiles); read once per catalog.
    frameworks: frozenset[str] = field(default_factory=shipped_frameworks)

    @property
    def families(self) -> list[str]:
        return sorted({c.meta.family for c in self.checks.values()} | set(KNOWN_FAMILIES))

    def add(self, cls: Any, source: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Check)):
            self.problems.append(LoadProblem(source, f"{cls!r} is not a Check subclass"))
            return
        meta = getattr(cls, "meta", None)
        if meta is None:
            self.problems.append(LoadProblem(source, f"{cls.__name__} has no meta"))
            return
        try:
            meta.validate()
        except CheckDefinitionError as exc:
            self.problems.append(LoadProblem(source, exc.message))
            return
        # A control that names no framework is never scored: refuse the check so the slip is seen.
        unknown = [c for c in meta.controls if c.split(":", 1)[0] not in self.frameworks]
        if unknown:
            self.problems.append(
                LoadProblem(
                    source,
                    f"check {meta.id}: control reference {unknown[0]!r} names no framework "
                    f"(known: {', '.join(sorted(self.frameworks))})",
                )
            )
            return
        if meta.id in self.checks:
            if self.checks[meta.id] is not cls:
                self.problems.append(
                    LoadProblem(source, f"check id {meta.id} is already defined by {self.origin[meta.id]}")
                )
            return  # the same class seen twice keeps its first origin
        self.checks[meta.id] = cls
        self.origin[meta.id] = source


def _checks_of(obj: Any) -> Iterable[Any]:
    if isinstance(obj, ModuleType):
        return list(getattr(obj, "CHECKS", []))
    return [obj]


def load_catalog(*, builtin: Iterable[str] = BUILTIN_FAMILY_MODULES, entry_points: bool = True) -> Catalog:
    """Load the built-in families and (unless disabled) the site's plug-ins."""
    cat = Catalog()
    for name in builtin:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the family is simply not part of this build
                continue
            cat.problems.append(LoadProblem(name, f"cannot import: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - a broken family must not stop the others; it is reported
            cat.problems.append(LoadProblem(name, f"cannot import: {type(exc).__name__}: {exc}"))
            continue
        for cls in _checks_of(mod):
            cat.add(cls, name)
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {ep.name} ({ep.value})"
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a site plug-in's bug becomes a reported problem
                cat.problems.append(LoadProblem(source, f"cannot load: {type(exc).__name__}: {exc}"))
                continue
            for cls in _checks_of(obj):
                cat.add(cls, source)
    return cat
