"""The reference tables, row by row: every toolkit minimum, compat floor, cuDNN entry and branch date."""

from __future__ import annotations

import datetime as dt
import shutil
import tomllib
from pathlib import Path

import pytest

from edgesec._data import policies_root
from edgesec.checks.families.gpu.alignment import CudaDriverAlignment, CudnnAlignment, judge_runtime
from edgesec.checks.families.gpu.discovery import Driver, Found
from edgesec.checks.families.gpu.reference import FILES, load_reference, shipped_reference
from edgesec.checks.families.gpu.versions import Version
from edgesec.checks.interface import Status
from edgesec.errors import ConfigError

from ._helpers import Calls, context, recording, run

REF = shipped_reference()
TOOLKIT = [r for r in REF.toolkit if r.confirmed]


def below(v: Version) -> Version:
    """The highest driver version strictly below ``v`` with the same number of parts."""
    p = list(v.parts)
    for i in range(len(p) - 1, -1, -1):
        if p[i] > 0:
            p[i] -= 1
            for j in range(i + 1, len(p)):
                p[j] = 999
            return Version(tuple(p))
    raise AssertionError(v)


def driver_at(version: Version) -> Driver:
    """A driver and the highest CUDA its version reaches in the table (what NVML would report)."""
    reach = [Version.parse(r.cuda) for r in TOOLKIT if Version.parse(r.min_driver) <= version]
    cuda = max(reach).major_minor() if reach else Version((10, 0))
    return Driver(version, cuda, cuda.major * 1000 + cuda.minor * 10)


def test_every_row_of_every_file_names_its_source_and_date() -> None:
    # Read as plain TOML, independent of the loader's models.
    for name in FILES:
        doc = tomllib.loads((policies_root() / "reference" / name).read_text())
        rows = [r for table in doc.values() if isinstance(table, list) for r in table]
        assert rows, name
        for row in rows:
            assert isinstance(row.get("source"), str) and len(row["source"]) > 8, (name, row)
            assert isinstance(row.get("checked"), dt.date), (name, row)


def test_tables_hold_what_the_release_notes_list() -> None:
    assert len(TOOLKIT) == 48
    assert {r.cuda_major for r in REF.compat} == {11, 12, 13}
    assert [r.version for r in REF.cudnn] == ["8.9.6", "9.0.0", "9.5.1", "9.10.2", "9.17.0"]
    assert {r.branch: r.eol for r in REF.branches} == {535: "2026-06", 570: "2026-02", 580: "2028-08"}
    assert not any(r.cuda.startswith("12.7") for r in REF.toolkit), "there is no CUDA 12.7"


@pytest.mark.parametrize("row", TOOLKIT, ids=lambda r: r.cuda)
def test_toolkit_row(row) -> None:  # type: ignore[no-untyped-def]
    cuda = Version.parse(row.cuda)
    md = REF.min_driver(cuda)
    assert md is not None and md.exact and str(md.min_driver) == row.min_driver
    check = CudaDriverAlignment()
    rt = Found("runtime", cuda, "toolkit", f"/usr/local/cuda-{row.cuda}/version.json", cuda.major)
    at = Version.parse(row.min_driver)
    assert judge_runtime(check, REF, driver_at(at), rt, {}).status is Status.PASS
    floor = Version.parse(REF.compat_floor(cuda.major).floor)  # type: ignore[union-attr]
    under = below(at)
    verdict = judge_runtime(check, REF, driver_at(under), rt, {})
    # One step below the toolkit minimum: limited features (WARN) above the floor, cannot run (FAIL) below.
    assert verdict.status is (Status.FAIL if under < floor else Status.WARN), verdict.message
    assert row.min_driver in verdict.message or under < floor


@pytest.mark.parametrize("row", REF.compat, ids=lambda r: f"cuda{r.cuda_major}")
def test_compat_floor_row(row) -> None:  # type: ignore[no-untyped-def]
    # The family's newest release: below its own minimum, only the floor decides whether it runs.
    last = max(Version.parse(r.cuda) for r in TOOLKIT if r.cuda.startswith(f"{row.cuda_major}."))
    rt = Found("runtime", last.major_minor(), "process", "pid 1", row.cuda_major, pid=1)
    check = CudaDriverAlignment()
    floor = Version.parse(row.floor)
    assert judge_runtime(check, REF, driver_at(floor), rt, {}).status is not Status.FAIL
    under = judge_runtime(check, REF, driver_at(below(floor)), rt, {})
    assert under.status is Status.FAIL
    assert "minor-version compatibility floor" in under.message
    assert under.evidence["compat_floor"]["source"] == row.source


CUDNN = [(r, e) for r in REF.cudnn for e in r.cuda]


@pytest.mark.parametrize(("row", "entry"), CUDNN, ids=lambda x: getattr(x, "version", None) or f"cu{x.major}")
def test_cudnn_row(row, entry) -> None:  # type: ignore[no-untyped-def]
    found = Version.parse(row.version)
    match = REF.cudnn_for(found, entry.major)
    assert match is not None and match.exact and match.entry == entry
    rt = Found("runtime", Version.parse(entry.min), "process", "pid 7", entry.major, pid=7)
    c = Found("cudnn", found, "process", "pid 7", entry.major, f"libcudnn-cuda-{entry.major}", pid=7)
    check = CudnnAlignment()
    need = Version.parse(entry.min_driver)
    ok = check._judge(REF, driver_at(need), [rt], c, {0: Version((9, 0))})
    assert ok.status is Status.PASS, ok.message
    bad = check._judge(REF, driver_at(below(need)), [rt], c, {0: Version((9, 0))})
    assert bad.status is Status.FAIL and str(need) in bad.message


def test_cudnn_9_10_2_needs_570_for_cuda_12_8_and_later() -> None:
    check = CudnnAlignment()
    c = Found("cudnn", Version.parse("9.10.2"), "process", "pid 7", 12, "libcudnn9-cuda-12", pid=7)
    old_rt = Found("runtime", Version.parse("12.6"), "process", "pid 7", 12, pid=7)
    new_rt = Found("runtime", Version.parse("12.8"), "process", "pid 7", 12, pid=7)
    drv = driver_at(Version.parse("560.35.05"))
    assert check._judge(REF, drv, [old_rt], c, {}).status is Status.PASS
    assert check._judge(REF, drv, [new_rt], c, {}).status is Status.FAIL


def test_cudnn_13_needs_turing() -> None:
    check = CudnnAlignment()
    c = Found("cudnn", Version.parse("9.17.0"), "process", "pid 7", 13, "libcudnn9-cuda-13", pid=7)
    rt = Found("runtime", Version.parse("13.0"), "process", "pid 7", 13, pid=7)
    drv = driver_at(Version.parse("580.95.05"))
    assert check._judge(REF, drv, [rt], c, {0: Version((9, 0))}).status is Status.PASS
    volta = check._judge(REF, drv, [rt], c, {0: Version((7, 0))})
    assert volta.status is Status.FAIL and "compute capability" in volta.message


@pytest.mark.parametrize("row", REF.branches, ids=lambda r: f"R{r.branch}")
def test_branch_row_before_and_after_end_of_life(row, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    calls = Calls(recording("baseline")["calls"]).driver(f"{row.branch}.100.01", 12020)
    end = row.eol_date()
    last = dt.datetime.combine(end - dt.timedelta(days=1), dt.time(23, 0), tzinfo=dt.UTC)
    first = dt.datetime.combine(end, dt.time(0, 30), tzinfo=dt.UTC)
    long_before = first - dt.timedelta(days=200)
    assert [f.status for f in run("gpu.driver-eol", context(calls, profile="bank", at=long_before))] == [
        Status.PASS
    ]
    # The last supported day is a warning in any profile; the day after is a FAIL in bank and clinic.
    assert [f.status for f in run("gpu.driver-eol", context(calls, profile="bank", at=last))] == [Status.WARN]
    for profile, want in (("bank", Status.FAIL), ("clinic", Status.FAIL), ("baseline", Status.WARN)):
        got = run("gpu.driver-eol", context(calls, profile=profile, at=first))
        assert [f.status for f in got] == [want], profile
        assert got[0].evidence["eol"] == row.eol and got[0].evidence["source"] == row.source


def test_the_widely_copied_cuda_12_4_needs_535_104_05_claim_is_wrong() -> None:
    """535.104.05 is CUDA 12.2.2's minimum. 12.4 needs 550.54.14; 12.x as a family runs from 525.60.13.

    So the claim is neither the exact minimum (a 535.104.05 driver runs 12.4 only through minor-version
    compatibility: a WARN, not the PASS the claim promises) nor the floor (525.60.13 already runs it).
    """
    md = REF.min_driver(Version.parse("12.4"))
    assert md is not None and str(md.min_driver) == "550.54.14" and md.row.cuda == "12.4.0"
    assert [r.cuda for r in TOOLKIT if r.min_driver == "535.104.05"] == ["12.2.2"]
    assert REF.compat_floor(12).floor == "525.60.13"  # type: ignore[union-attr]
    rt = Found("runtime", Version.parse("12.4"), "process", "pid 42", 12, pid=42)
    claimed = judge_runtime(CudaDriverAlignment(), REF, driver_at(Version.parse("535.104.05")), rt, {})
    assert claimed.status is Status.WARN
    assert "550.54.14" in claimed.message and "minor-version compatibility" in claimed.message
    floor = judge_runtime(CudaDriverAlignment(), REF, driver_at(Version.parse("525.60.13")), rt, {})
    assert floor.status is Status.WARN  # runs, limited, even on the family floor


def test_versions_between_rows_use_the_row_below() -> None:
    md = REF.min_driver(Version.parse("12.7"))
    assert md is not None and not md.exact and md.row.cuda == "12.6.3"
    # 13.3 is listed but unconfirmed: it is never used to judge.
    md = REF.min_driver(Version.parse("13.3"))
    assert md is not None and not md.exact and md.row.cuda == "13.2.2"
    assert REF.min_driver(Version.parse("10.2")) is None


def test_cudnn_between_documented_releases_takes_the_nearest_covering_that_major() -> None:
    m13 = REF.cudnn_for(Version.parse("9.14.0"), 13)
    assert m13 is not None and str(m13.documented) == "9.17.0" and not m13.exact
    m11 = REF.cudnn_for(Version.parse("9.14.0"), 11)
    assert m11 is not None and str(m11.documented) == "9.10.2"
    assert REF.cudnn_for(Version.parse("9.14.0"), 14) is None


def test_reference_data_older_than_a_year_warns() -> None:
    calls = recording("baseline")["calls"]
    fresh = run("gpu.reference-data", context(calls, at=dt.datetime(2027, 11, 26, tzinfo=dt.UTC)))
    assert [f.status for f in fresh] == [Status.PASS]
    stale = run("gpu.reference-data", context(calls, at=dt.datetime(2027, 11, 28, tzinfo=dt.UTC)))
    assert [f.status for f in stale] == [Status.WARN]
    assert stale[0].evidence["newest_checked"] == "2026-11-26" and stale[0].evidence["age_days"] == 367


@pytest.mark.parametrize(
    ("file", "old", "new", "needle"),
    [
        ("nvidia-cuda.toml", 'min_driver = "550.54.14"', 'min_driver = "five-fifty"', "toolkit row 29"),
        ("nvidia-cuda.toml", 'floor = "525.60.13"', "floor = 525", "compat row 2"),
        ("nvidia-cudnn.toml", 'version = "9.5.1"', 'version = "9.5.1"\nbogus = 1', "cudnn row 3"),
        ("nvidia-driver-branches.toml", 'eol = "2026-06"', 'eol = "June 2026"', "branch row 1"),
        ("nvidia-driver-branches.toml", "checked = 2026-11-26", 'checked = "recently"', "branch row 1"),
        ("nvidia-cuda.toml", "[[compat]]", "[[compat]", "cannot be read"),
    ],
)
def test_a_broken_table_is_one_clear_config_error(
    tmp_path: Path, file: str, old: str, new: str, needle: str
) -> None:
    d = tmp_path / "reference"
    shutil.copytree(policies_root() / "reference", d)
    text = (d / file).read_text()
    assert old in text
    (d / file).write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_reference(d)
    assert needle in err.value.message and file in err.value.message
    assert "\n" not in err.value.message


def test_a_missing_table_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        load_reference(tmp_path)
