"""The check interface: what a check is, what it returns, and the context it runs in.

A check is small and declarative: a :class:`CheckMeta` (validated when the registry loads it) and
``run(ctx)`` returning :class:`Finding` objects with evidence. Checks reach the system only through
the probes on :class:`CheckContext` (``ctx.system``, ``ctx.nvml``, ``ctx.clock``), so a test can hand a
check a recorded or built system instead of the live one.
"""

from __future__ import annotations

import datetime as dt
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgesec.errors import EdgesecError

if TYPE_CHECKING:
    from edgesec.checks.probes import Clock, NvmlProbe, SystemProbe
    from edgesec.config import LoadedConfig


class CheckDefinitionError(EdgesecError):
    """A check's metadata is invalid (a bug in the check or a site plug-in)."""

    kind = "check-definition"


class Severity(IntEnum):
    """How bad a failed check is. Ordered, so ``--fail-on`` compares with ``>=``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; expected one of info, low, medium, high, critical"
            ) from None

    def label(self) -> str:
        return self.name.lower()


class Status(StrEnum):
    """The outcome of one finding."""

    PASS = "PASS"  # noqa: S105 - a status, not a password
    FAIL = "FAIL"
    WARN = "WARN"
    ERROR = "ERROR"  # the check itself broke: the verdict is incomplete
    SKIP = "SKIP"  # not applicable here; the finding's message says why
    WAIVED = "WAIVED"  # would be FAIL/WARN, but a valid waiver covers it


_ID_RE = re.compile(r"^[a-z][a-z0-9]*(\.[a-z0-9][a-z0-9_-]*)+$")
_CONTROL_RE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*:[A-Za-z0-9().\- ]+$")


@dataclass(frozen=True)
class CheckMeta:
    """What a check is about. ``id`` is ``family.name`` (``egress.default-route``).

    ``controls`` are default control references as ``framework:control`` (``pci-dss-4.0:1.3.2``);
    profiles may add or override the mapping.
    """

    id: str
    title: str
    severity: Severity
    rationale: str
    remediation: str
    controls: tuple[str, ...] = ()
    timeout_s: float | None = None
    needs_root: bool = False
    # Checks edgesec's own data (the age of its reference tables), not the site: evidence for no control.
    housekeeping: bool = False

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    def validate(self) -> None:
        if not _ID_RE.match(self.id):
            raise CheckDefinitionError(f"check id {self.id!r} must look like family.name (lowercase)")
        for name in ("title", "rationale", "remediation"):
            if not getattr(self, name).strip():
                raise CheckDefinitionError(f"check {self.id}: {name} must not be empty")
        if not isinstance(self.severity, Severity):
            raise CheckDefinitionError(f"check {self.id}: severity must be a Severity")
        for c in self.controls:
            if not _CONTROL_RE.match(c):
                raise CheckDefinitionError(f"check {self.id}: control reference {c!r} must be framework:id")
        if self.housekeeping and self.controls:
            raise CheckDefinitionError(f"check {self.id}: a housekeeping check evidences no control")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise CheckDefinitionError(f"check {self.id}: timeout_s must be positive")


@dataclass(frozen=True)
class Finding:
    """One result of a check, about one resource (or the host when ``resource`` is None).

    ``evidence`` holds what was observed (JSON-serialisable): versions and where they came from,
    command output excerpts, file paths and modes. ``severity`` defaults to the check's. Counters that
    change on every run (entries scanned) go under ``evidence["stats"]``: the run-to-run diff ignores them.
    """

    check_id: str
    status: Status
    message: str
    resource: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity | None = None
    remediation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "status": self.status.value,
            "message": self.message,
            "resource": self.resource,
            "evidence": dict(self.evidence),
            "severity": None if self.severity is None else self.severity.label(),
            "remediation": self.remediation,
        }


def lookup_param(params: Mapping[str, Mapping[str, Any]], check_id: str, name: str, default: Any) -> Any:
    """The one parameter lookup: ``[checks."<check id>"] params``, else the family's ``[checks.<family>]``
    (``gpu`` for ``gpu.mig``), else ``default``."""
    own = params.get(check_id, {})
    if name in own:
        return own[name]
    family = check_id.split(".", 1)[0]
    return params.get(family, {}).get(name, default)


@dataclass
class CheckContext:
    """Everything a check may look at. Built by the runner (live) or by a test (recorded)."""

    system: SystemProbe
    clock: Clock
    config: LoadedConfig
    nvml: NvmlProbe | None = None
    profile: str = "baseline"
    # Per-check thresholds and options from the profile, keyed by check id.
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.config.home

    def now(self) -> dt.datetime:
        return self.clock.now()

    def param(self, check_id: str, name: str, default: Any) -> Any:
        """A rule of the profile, through :func:`lookup_param`: the check's own, else its family's."""
        return lookup_param(self.params, check_id, name, default)


class Check(ABC):
    """Base class of every check. Subclasses set ``meta`` and implement ``run``.

    ``run`` raises nothing on purpose: a crash becomes an ERROR finding in the runner, never a crashed run,
    but checks should turn expected conditions (no driver, no CA) into SKIP findings with a reason.
    """

    meta: ClassVar[CheckMeta]

    @abstractmethod
    def run(self, ctx: CheckContext) -> Iterable[Finding]: ...

    # Helpers so checks read as sentences.
    def passed(self, message: str, **kw: Any) -> Finding:
        return Finding(self.meta.id, Status.PASS, message, **kw)

    def failed(self, message: str, **kw: Any) -> Finding:
        return Finding(self.meta.id, Status.FAIL, message, **kw)

    def warned(self, message: str, **kw: Any) -> Finding:
        return Finding(self.meta.id, Status.WARN, message, **kw)

    def skipped(self, reason: str, **kw: Any) -> Finding:
        return Finding(self.meta.id, Status.SKIP, reason, **kw)
