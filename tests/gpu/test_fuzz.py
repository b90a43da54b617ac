"""Whatever the host's files say, the gpu checks answer with findings: never an exception (hypothesis)."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesec.checks.families.gpu import CHECKS
from edgesec.checks.families.gpu.nvml import ReplayNvml
from edgesec.checks.interface import CheckContext
from edgesec.checks.probes import BuiltSystem, CommandResult, FileStat, FixedClock
from edgesec.config import load_config

from ._helpers import recording

SITE = "/usr/local/lib/python3.11/site-packages"
PATHS = (
    "/usr/local/cuda-12.4/version.json",
    "/usr/local/cuda-11.0/version.txt",
    "/usr/include/cudnn_version.h",
    "/proc/77/maps",
    "/proc/77/status",
    "/proc/77/cgroup",
    "/proc/77/comm",
    "/proc/77/environ",
    "/proc/net/tcp",
    "/proc/net/tcp6",
    "/proc/driver/nvidia/params",
    "/etc/nvidia-container-runtime/config.toml",
    "/etc/passwd",
    f"{SITE}/torch/version.py",
    f"{SITE}/torch-2.5.1.dist-info/METADATA",
    f"{SITE}/nvidia_cudnn_cu12-9.1.0.70.dist-info/METADATA",
)
# Text with the shapes the parsers look for, mixed with noise.
fragments = st.sampled_from(
    [
        '{"cuda": {"version": "12.4.1"}}',
        '{"cuda": 5}',
        "CUDA Version 11.0.228",
        "#define CUDNN_MAJOR 9",
        "#define CUDNN_MINOR 99999999",
        "7f00-7f01 r-xp 0 fe:00 1 /x/libcudart.so.12.4.127",
        "7f00-7f01 r-xp 0 fe:00 1 /s/site-packages/nvidia/cudnn/lib/libcudnn.so.9",
        "Uid:\t1000\t1000",
        "Uid:\tx",
        "0::/system.slice/a.service",
        "0::/docker/0123456789abcdef0123",
        "CUDA_VISIBLE_DEVICES=0,1",
        "NVIDIA_VISIBLE_DEVICES=all",
        "\0",
        "0: 0100007F:24C8 00000000:0000 0A",
        "0: ZZZZ:24C8 0:0 0A",
        "0: 0100007F:GGGG 0:0 0A",
        "RmProfilingAdminOnly: 1",
        "DeviceFileMode: 438",
        "[nvidia-container-cli]",
        "no-cgroups = true",
        'ldconfig = "/sbin/ldconfig"',
        "root:x:0:0::/:/bin/sh",
        "cuda = '12.4'",
        "cuda: Optional[str] = 'x.y'",
        "Version: 2.5.1+cu124",
        "Requires-Dist: nvidia-cuda-runtime-cu12==12..4",
        "NVRM: Xid (PCI:0000:00:06): 79, pid=1",
        "NVRM: Xid (PCI:0000:00:06): x,",
    ]
)
content = st.one_of(
    st.none(), st.lists(st.one_of(fragments, st.text(max_size=40)), max_size=6).map("\n".join)
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries({p: content for p in PATHS}),
    st.sampled_from(["", "release 12.4, V12.4.131", "garbage"]),
)
def test_checks_never_raise_on_strange_host_files(files: dict[str, str | None], nvcc: str) -> None:
    present = {k: v for k, v in files.items() if v is not None}
    dirs = {
        d: FileStat(0o40755, 0, 0, 0, 0.0, True, False)
        for d in (SITE, f"{SITE}/torch-2.5.1.dist-info", f"{SITE}/nvidia_cudnn_cu12-9.1.0.70.dist-info")
    }
    system = BuiltSystem(
        files=present,
        stats={**dirs, "/dev/nvidia0": FileStat(0o20666, 0, 0, 0, 0.0, False, False)},
        commands={
            ("/usr/bin/nvcc", "--version"): CommandResult(("nvcc",), 0, nvcc),
            ("dmesg",): files["/proc/77/comm"] or "",
        },
    )
    ctx = CheckContext(
        system=system,
        clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)),
        config=load_config(),
        nvml=ReplayNvml(recording("baseline")["calls"]),
    )
    for cls in CHECKS:
        findings = list(cls().run(ctx))
        assert findings, cls.meta.id
