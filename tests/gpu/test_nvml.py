"""The NVML probe: live (no driver here), recording and replay, errors included; read-only by design."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import pynvml
import pytest

from edgesec.checks.families.gpu.nvml import (
    LiveNvml,
    NvmlError,
    NvmlUnavailable,
    RecordingNvml,
    ReplayNvml,
    key,
    to_json,
)
from edgesec.checks.probes import ProbeNotRecorded, Recorder

from ._helpers import context, recording, run

HAS_DRIVER = os.path.exists("/dev/nvidiactl")


@pytest.mark.skipif(HAS_DRIVER, reason="this host has an NVIDIA driver")
def test_live_nvml_without_a_driver_says_so() -> None:
    nv = LiveNvml()  # construction never fails
    with pytest.raises(NvmlUnavailable, match="no NVIDIA driver"):
        nv.call("nvmlSystemGetDriverVersion")
    with pytest.raises(NvmlUnavailable):  # the reason is kept, not retried per call
        nv.call("nvmlDeviceGetCount")


@pytest.mark.parametrize(
    "fn",
    [
        "nvmlDeviceSetComputeMode",
        "nvmlDeviceSetMigMode",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlInit",
        "os.system",
    ],
)
def test_only_getters_pass(fn: str) -> None:
    with pytest.raises(ValueError, match="not a read-only"):
        LiveNvml().call(fn, 0)


@pytest.mark.skipif(HAS_DRIVER, reason="this host has an NVIDIA driver")
def test_every_gpu_check_skips_without_a_driver(tmp_path: Path) -> None:
    import datetime as dt

    from edgesec.checks.families.gpu import CHECKS
    from edgesec.checks.interface import CheckContext, Status
    from edgesec.checks.probes import FixedClock, LiveSystem
    from edgesec.config import load_config

    ctx = CheckContext(
        system=LiveSystem(),
        clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)),
        config=load_config(),
        nvml=LiveNvml(),
        profile="bank",
    )
    for cls in CHECKS:
        findings = list(cls().run(ctx))
        assert findings, cls.meta.id
        for f in findings:
            assert f.status in (Status.SKIP, Status.PASS), (cls.meta.id, f.message)
            if cls.meta.id not in ("gpu.reference-data",):
                assert f.status is Status.SKIP, (cls.meta.id, f.message)
                assert "NVIDIA" in f.message or "nvidia" in f.message


def test_to_json_turns_real_pynvml_structures_into_data() -> None:
    mem = pynvml.c_nvmlMemory_t()
    mem.total, mem.free, mem.used = 150754820096, 150109880320, 644939776
    assert to_json(mem) == {"total": 150754820096, "free": 150109880320, "used": 644939776}
    pci = pynvml.nvmlPciInfo_t()
    pci.busId = b"00000000:00:06.0"
    assert to_json(pci)["busId"] == "00000000:00:06.0"
    proc = pynvml.nvmlStructToFriendlyObject(pynvml.c_nvmlProcessInfo_v3_t(pid=426, usedGpuMemory=652214272))
    got = to_json(proc)
    assert got["pid"] == 426 and got["usedGpuMemory"] == 652214272
    assert to_json((1, [2, ctypes.c_uint(3)])) == [1, [2, 3]]
    json.dumps(to_json(pci))  # all plain data


class FakeDriver:
    """Stands in for the driver NVML needs (none here): answers like an H200 reading, errors included."""

    def call(self, fn: str, *args: object) -> object:
        if fn == "nvmlDeviceGetRetiredPagesPendingStatus":
            raise NvmlError(fn, "NotSupported", 3)
        if fn == "nvmlDeviceGetMigDeviceHandleByIndex":
            raise NvmlError(fn, "NotFound", 6)
        return {"nvmlSystemGetDriverVersion": "580.159.04", "nvmlDeviceGetMigMode": [0, 0]}[fn]


def test_recording_keeps_answers_and_errors_and_replay_reproduces_them(tmp_path: Path) -> None:
    rec = Recorder()
    nv = RecordingNvml(FakeDriver(), rec)
    assert nv.call("nvmlSystemGetDriverVersion") == "580.159.04"
    assert nv.call("nvmlDeviceGetMigMode", 0) == [0, 0]
    with pytest.raises(NvmlError) as live_err:
        nv.call("nvmlDeviceGetRetiredPagesPendingStatus", 0)
    with pytest.raises(NvmlError):
        nv.call("nvmlDeviceGetMigDeviceHandleByIndex", 0, 0)
    rec.save(tmp_path / "rec.json")

    replay = ReplayNvml.load(tmp_path / "rec.json")
    assert replay.call("nvmlSystemGetDriverVersion") == "580.159.04"
    assert replay.call("nvmlDeviceGetMigMode", 0) == [0, 0]
    with pytest.raises(NvmlError) as replay_err:
        replay.call("nvmlDeviceGetRetiredPagesPendingStatus", 0)
    assert (replay_err.value.name, replay_err.value.code) == (live_err.value.name, live_err.value.code)
    assert replay_err.value.not_supported
    with pytest.raises(NvmlError, match="NotFound"):
        replay.call("nvmlDeviceGetMigDeviceHandleByIndex", 0, 0)
    with pytest.raises(ProbeNotRecorded):
        replay.call("nvmlDeviceGetMigMode", 1)  # never asked on the real host


def test_unavailable_is_recorded_and_replayed() -> None:
    class NoDriver:
        def call(self, fn: str, *args: object) -> object:
            raise NvmlUnavailable("no NVIDIA driver: the NVML library (libnvidia-ml.so.1) is not installed")

    rec = Recorder()
    with pytest.raises(NvmlUnavailable):
        RecordingNvml(NoDriver(), rec).call("nvmlSystemGetDriverVersion")
    with pytest.raises(NvmlUnavailable, match="libnvidia-ml"):
        ReplayNvml(rec.calls).call("nvmlSystemGetDriverVersion")


def test_a_recorded_no_driver_host_skips_every_driver_check() -> None:
    calls = dict(recording("baseline")["calls"])
    calls[key("nvmlSystemGetDriverVersion")] = {
        "unavailable": "no NVIDIA driver: the kernel module is not loaded"
    }
    ctx = context(calls)
    for check_id in ("gpu.cuda-driver", "gpu.mig", "gpu.processes", "gpu.ecc", "gpu.driver-eol"):
        findings = run(check_id, ctx)
        assert [f.status.value for f in findings] == ["SKIP"], check_id
        assert "kernel module is not loaded" in findings[0].message


def test_the_real_recording_holds_an_nvml_error() -> None:
    # Hopper answers NotSupported for retired pages (it remaps rows): recorded, so replay reproduces it.
    calls = recording("baseline")["calls"]
    errors = {k: v for k, v in calls.items() if k.startswith("nvml:") and "error" in v}
    assert errors, "the H200 recording should hold at least one NVML error"
    assert any(v["error"]["name"] == "NotSupported" for v in errors.values())
