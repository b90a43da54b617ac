"""NVIDIA reference tables (``policies/reference/*.toml``): loaded, validated, and asked questions.

Four tables, each row with its source and the date it was checked:

* toolkit -- minimum driver of each CUDA toolkit release (``nvidia-cuda.toml``);
* compat -- minor-version-compatibility floor per CUDA major (``nvidia-cuda.toml``);
* cudnn -- the cuDNN support matrix (``nvidia-cudnn.toml``);
* branch -- driver branch end of life (``nvidia-driver-branches.toml``).

A broken table is a :class:`ConfigError` with the file and row, never a silent default.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgesec._data import policies_root
from edgesec.checks.families.gpu.versions import Version
from edgesec.errors import ConfigError

FILES = ("nvidia-cuda.toml", "nvidia-cudnn.toml", "nvidia-driver-branches.toml")


def _version(v: str) -> str:
    Version.parse(v)  # raises ValueError: pydantic turns it into a validation error naming the field
    return v


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=8)
    checked: dt.date
    note: str | None = None


class ToolkitRow(_Row):
    """A CUDA toolkit release and the minimum driver it needs."""

    cuda: str
    min_driver: str
    confirmed: bool = True

    @field_validator("cuda", "min_driver")
    @classmethod
    def _check_version(cls, v: str) -> str:
        return _version(v)


class CompatRow(_Row):
    """The minor-version-compatibility floor of one CUDA major."""

    cuda_major: int = Field(ge=9, le=99)
    floor: str

    @field_validator("floor")
    @classmethod
    def _check_version(cls, v: str) -> str:
        return _version(v)


class DriverFrom(BaseModel):
    """A higher driver floor from one CUDA version upward (cuDNN 9.10.2: CUDA 12.8+ needs 570.26)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cuda: str
    min_driver: str

    @field_validator("cuda", "min_driver")
    @classmethod
    def _check_version(cls, v: str) -> str:
        return _version(v)


class CudnnCuda(BaseModel):
    """What one cuDNN release supports for one CUDA major."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    major: int = Field(ge=9, le=99)
    min: str
    max: str
    min_driver: str
    driver_from: DriverFrom | None = None
    min_compute_capability: str | None = None

    @field_validator("min", "max", "min_driver")
    @classmethod
    def _check_version(cls, v: str) -> str:
        return _version(v)


class CudnnRow(_Row):
    """One documented cuDNN release."""

    version: str
    cuda: list[CudnnCuda] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _check_version(cls, v: str) -> str:
        return _version(v)


class BranchRow(_Row):
    """A driver branch and the month after which it is past end of life."""

    branch: int = Field(ge=100, le=9999)
    kind: str
    eol: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")

    def eol_date(self) -> dt.date:
        """The first day past end of life: the branch is supported through the whole ``eol`` month."""
        y, m = (int(x) for x in self.eol.split("-"))
        return dt.date(y + (m == 12), m % 12 + 1, 1)


@dataclass(frozen=True)
class MinDriver:
    """The answer to "what driver does this CUDA version need", with the row it came from."""

    cuda: Version
    min_driver: Version
    row: ToolkitRow
    exact: bool  # False when the version's own row is missing and a neighbour was used


@dataclass(frozen=True)
class CudnnMatch:
    """The documented cuDNN release used to judge a found one, and what it says for one CUDA major."""

    found: Version
    documented: Version
    entry: CudnnCuda
    row: CudnnRow
    exact: bool


class Reference:
    """All tables, validated; the questions the gpu checks ask of them."""

    def __init__(
        self,
        toolkit: list[ToolkitRow],
        compat: list[CompatRow],
        cudnn: list[CudnnRow],
        branches: list[BranchRow],
        files: tuple[str, ...] = (),
    ) -> None:
        self.toolkit = toolkit
        self.compat = compat
        self.cudnn = cudnn
        self.branches = branches
        self.files = files
        self._confirmed = sorted(
            ((Version.parse(r.cuda), r) for r in toolkit if r.confirmed), key=lambda t: t[0]
        )

    # -- freshness ----------------------------------------------------------------------------------
    def rows(self) -> list[_Row]:
        return [*self.toolkit, *self.compat, *self.cudnn, *self.branches]

    def newest_check(self) -> dt.date:
        return max(r.checked for r in self.rows())

    def oldest_check(self) -> dt.date:
        return min(r.checked for r in self.rows())

    # -- toolkit minimum ------------------------------------------------------------------------------
    def min_driver(self, cuda: Version) -> MinDriver | None:
        """The minimum driver of a CUDA version.

        A full version (``13.0.2``) takes its own row; ``major.minor`` (what a runtime reports) takes the
        minor's first release (``12.4`` → ``12.4.0``), the lowest driver any 12.4 toolkit needed. A
        version newer than every row of its major takes that major's newest row (``exact`` False);
        None when the major is not in the table at all.
        """
        same_major = [(v, r) for v, r in self._confirmed if v.major == cuda.major]
        if not same_major:
            return None
        precise = len(cuda.parts) >= 3
        for v, r in same_major:
            if (precise and v == cuda) or (not precise and v.major_minor() == cuda.major_minor()):
                return MinDriver(cuda, Version.parse(r.min_driver), r, True)
        below = [(v, r) for v, r in same_major if v < cuda]
        # Between rows or past the last one: the nearest lower row is a lower bound of what it needs.
        v, r = below[-1] if below else same_major[0]
        return MinDriver(cuda, Version.parse(r.min_driver), r, False)

    def rows_for_driver(self, driver: Version) -> list[ToolkitRow]:
        """Every toolkit release whose minimum the driver meets."""
        return [r for v, r in self._confirmed if Version.parse(r.min_driver) <= driver]

    # -- minor-version compatibility --------------------------------------------------------------------
    def compat_floor(self, cuda_major: int) -> CompatRow | None:
        for r in self.compat:
            if r.cuda_major == cuda_major:
                return r
        return None

    # -- cuDNN --------------------------------------------------------------------------------------------
    def cudnn_for(self, found: Version, cuda_major: int) -> CudnnMatch | None:
        """The documented cuDNN release nearest to ``found`` that covers ``cuda_major``.

        Exact row first; else the nearest by encoded version (ties go to the older release, whose
        statement held before ``found`` shipped). None when no documented release covers that major.
        """
        candidates: list[tuple[int, Version, CudnnCuda, CudnnRow]] = []
        f = _cudnn_num(found)
        for row in self.cudnn:
            rv = Version.parse(row.version)
            for e in row.cuda:
                if e.major == cuda_major:
                    candidates.append((abs(_cudnn_num(rv) - f), rv, e, row))
        if not candidates:
            return None
        candidates.sort(key=lambda c: (c[0], c[1].parts))
        dist, rv, e, row = candidates[0]
        return CudnnMatch(found, rv, e, row, dist == 0)

    # -- driver branches ------------------------------------------------------------------------------------
    def branch(self, number: int) -> BranchRow | None:
        for r in self.branches:
            if r.branch == number:
                return r
        return None


def _cudnn_num(v: Version) -> int:
    # One scale for v8 and v9 so distances across the two are meaningful.
    return v.major * 10000 + v.minor * 100 + v.patch


def _load_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"reference table missing: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"reference table {path} cannot be read: {exc}") from None


def _rows(path: Path, doc: dict[str, Any], key: str, model: type[BaseModel]) -> list[Any]:
    out = []
    raw = doc.get(key, [])
    if not isinstance(raw, list):
        raise ConfigError(f"reference table {path}: [[{key}]] must be an array of tables")
    for i, item in enumerate(raw, start=1):
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"reference table {path}: {key} row {i}: {where}: {err['msg']}") from None
    return out


def load_reference(directory: Path | None = None) -> Reference:
    """Load and validate the tables from ``directory`` (default: the shipped ``policies/reference``)."""
    d = directory if directory is not None else policies_root() / "reference"
    # Evidence names shipped tables by their place in policies/, the same on every host; a site's own
    # directory by its path.
    names = tuple(f"policies/reference/{f}" if directory is None else str(d / f) for f in FILES)
    cuda = _load_file(d / "nvidia-cuda.toml")
    cudnn = _load_file(d / "nvidia-cudnn.toml")
    branches = _load_file(d / "nvidia-driver-branches.toml")
    ref = Reference(
        _rows(d / "nvidia-cuda.toml", cuda, "toolkit", ToolkitRow),
        _rows(d / "nvidia-cuda.toml", cuda, "compat", CompatRow),
        _rows(d / "nvidia-cudnn.toml", cudnn, "cudnn", CudnnRow),
        _rows(d / "nvidia-driver-branches.toml", branches, "branch", BranchRow),
        names,
    )
    if not ref.toolkit or not ref.compat or not ref.cudnn or not ref.branches:
        raise ConfigError(f"reference tables in {d} are incomplete: every table needs at least one row")
    return ref


@lru_cache(maxsize=4)
def shipped_reference() -> Reference:
    """The shipped tables, loaded once per process."""
    return load_reference()
