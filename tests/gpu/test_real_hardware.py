"""The real H200 run, replayed: the recording gives the same findings the real run produced.

``tests/fixtures/gpu/h200`` holds what ``capture.sh`` brought back from an H200 host: the report of
``edgesec audit --only gpu --report json`` and the recording of everything its checks read (NVML values
and errors, files, /proc, command output, the clock), for a bare baseline run and a bank-profile run with
an allowlist. Replaying runs the same check code on the recorded values through the probe interfaces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ._helpers import FIXTURES

RUNS = [
    ("baseline", "baseline", None),
    ("bank", "bank", "edgesec-bank.toml"),
]


def findings(doc: dict[str, Any]) -> list[str]:
    return sorted(json.dumps(f, sort_keys=True) for c in doc["checks"] for f in c["findings"])


def real_exit(name: str) -> int:
    for line in (FIXTURES / "exit-codes.txt").read_text().splitlines():
        run, _, code = line.rpartition(" exit ")
        if run == name:
            return int(code)
    raise AssertionError(name)


@pytest.mark.parametrize(("name", "profile", "config"), RUNS)
def test_recording_replays_to_the_findings_of_the_real_run(
    cli, tmp_path: Path, name: str, profile: str, config: str | None
) -> None:  # type: ignore[no-untyped-def]
    real = json.loads((FIXTURES / f"report-{name}.json").read_text())
    out = tmp_path / "replayed.json"
    args = ["--config", str(FIXTURES / config)] if config else []
    code, _stdout, stderr = cli(
        *args, "--quiet", "audit", "--profile", profile, "--only", "gpu", "--report", "json",
        "--out", str(out), "--replay", str(FIXTURES / f"recording-{name}.json"),
    )  # fmt: skip
    assert code == real_exit(name), stderr
    replayed = json.loads(out.read_text())
    assert replayed["run"]["mode"] == "replay" and real["run"]["mode"] == "live"
    assert replayed["run"]["started"] == real["run"]["started"]  # the recorded clock
    assert findings(replayed) == findings(real)
    assert not any(f["status"] == "ERROR" for c in replayed["checks"] for f in c["findings"])


def test_what_the_real_h200_said() -> None:
    """The facts of the real run, pinned so a change in a check shows up here first."""
    real = json.loads((FIXTURES / "report-bank.json").read_text())
    by: dict[str, list[dict[str, Any]]] = {}
    for c in real["checks"]:
        by.setdefault(c["id"], []).extend(c["findings"])
    drv = by["gpu.driver-eol"][0]
    assert drv["status"] == "PASS" and drv["evidence"]["driver"]["version"] == "580.159.04"
    assert {f["status"] for f in by["gpu.cuda-driver"]} == {"PASS"}
    assert {f["evidence"]["runtime"]["version"] for f in by["gpu.cuda-driver"]} == {"13.0"}
    assert {f["status"] for f in by["gpu.cudnn"]} == {"PASS"}
    assert {f["evidence"]["cudnn"]["version"] for f in by["gpu.cudnn"]} >= {"9.14.0"}
    assert [f["status"] for f in by["gpu.mig"]] == ["FAIL"]
    assert "FAIL" in {f["status"] for f in by["gpu.processes"]}
    assert [f["status"] for f in by["gpu.profiling-admin-only"]] == ["FAIL"]
    assert {f["status"] for f in by["gpu.ecc"] + by["gpu.ecc-errors"] + by["gpu.memory-remap"]} == {"PASS"}
    smi = (FIXTURES / "nvidia-smi-q.txt").read_text()
    assert "580.159.04" in smi and "NVIDIA H200" in smi
