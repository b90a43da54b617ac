"""Discovery against this host's real /proc and package database, and parsing edge cases.

No NVIDIA stack is installed here, so real processes map copies of an ordinary shared library under
the names a CUDA runtime and cuDNN carry (``libcudart.so.12.4.127``): the kernel's maps, the site-packages
layout and the wheel metadata are real; only the library contents are not CUDA's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesec.checks.families.gpu.discovery import inventory, owning_package, resolve
from edgesec.checks.families.gpu.visibility import exposed_devices
from edgesec.checks.interface import CheckContext, Status
from edgesec.checks.probes import BuiltSystem, FileStat, FixedClock, LiveSystem
from edgesec.config import load_config

from ._helpers import Calls, recording, run

HOST = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000"]


def _a_shared_library() -> str:
    import _ctypes

    return _ctypes.__file__  # a real ELF shared object every CPython has


def _spawn_mapping(libs: list[Path]) -> subprocess.Popen[str]:
    code = (
        "import ctypes, sys, time\n"
        "for p in sys.argv[1:]:\n"
        "    ctypes.CDLL(p)\n"
        "print('READY', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, libs)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


@pytest.fixture
def fake_model_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real process that has a CUDA-12.4-named runtime and a cu11 cuDNN wheel's library mapped."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    (site / "nvidia_cudnn_cu11-9.1.0.70.dist-info").mkdir()
    (site / "nvidia_cudnn_cu11-9.1.0.70.dist-info" / "METADATA").write_text(
        "Name: nvidia-cudnn-cu11\nVersion: 9.1.0.70\n"
    )
    cudnn = site / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9"
    rt_dir = tmp_path / "cuda-12.4" / "lib64"
    rt_dir.mkdir(parents=True)
    cudart = rt_dir / "libcudart.so.12.4.127"
    for target in (cudnn, cudart):
        shutil.copy(_a_shared_library(), target)
    proc = _spawn_mapping([cudart, cudnn])
    try:
        yield proc.pid, site
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_live_proc_maps_find_runtime_and_cudnn_of_a_running_process(
    fake_model_server: tuple[int, Path],
) -> None:
    pid, _site = fake_model_server
    c = Calls(recording("baseline")["calls"]).driver("550.54.14", 12040)
    from edgesec.checks.families.gpu.nvml import ReplayNvml

    ctx = CheckContext(
        system=LiveSystem(),
        clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)),
        config=load_config(),
        nvml=ReplayNvml(c.calls),
    )
    inv = inventory(ctx)
    mine = [r for r in inv.runtimes if r.pid == pid]
    assert [str(r.version) for r in mine] == ["12.4"]
    assert "libcudart.so.12.4.127" in mine[0].where and str(pid) in mine[0].where
    cud = [x for x in inv.cudnn if x.pid == pid]
    assert len(cud) == 1 and str(cud[0].version) == "9.1.0" and cud[0].cuda_major == 11
    assert cud[0].package == "nvidia_cudnn_cu11-9.1.0.70"
    assert pid in inv.processes and inv.processes[pid].uid == os.geteuid()
    findings = [f for f in run("gpu.cudnn", ctx) if f.evidence.get("cudnn", {}).get("pid") == pid]
    assert [f.status for f in findings] == [Status.FAIL]
    assert "built for CUDA 11" in findings[0].message and "12.4" in findings[0].message


@pytest.mark.real("dpkg-query")
def test_owning_package_asks_the_real_package_database() -> None:
    ctx = CheckContext(
        system=LiveSystem(), clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)), config=load_config()
    )
    openssl = shutil.which("openssl")
    assert openssl is not None
    real = os.path.realpath(openssl)
    assert owning_package(ctx, real) == "openssl"
    assert owning_package(ctx, "/nonexistent/libcudnn.so.9.14.0") is None


def test_resolve_follows_alternatives_links(tmp_path: Path) -> None:
    sys_ = BuiltSystem(
        links={
            "/usr/include/x86_64-linux-gnu/cudnn_version.h": "/etc/alternatives/cudnn_version_h",
            "/etc/alternatives/cudnn_version_h": "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h",
            "/usr/lib/x86_64-linux-gnu/libcudnn.so.9": "libcudnn.so.9.14.0",
        }
    )
    assert (
        resolve(sys_, "/usr/include/x86_64-linux-gnu/cudnn_version.h")
        == "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h"
    )
    assert (
        resolve(sys_, "/usr/lib/x86_64-linux-gnu/libcudnn.so.9")
        == "/usr/lib/x86_64-linux-gnu/libcudnn.so.9.14.0"
    )
    loop = BuiltSystem(links={"/a": "/b", "/b": "/a"})
    assert resolve(loop, "/a") in ("/a", "/b")  # a link loop ends, it does not hang


def built_ctx(files: dict[str, str], commands: dict[tuple[str, ...], str] | None = None) -> CheckContext:
    """A built host; every parent directory of a file exists too, so directory globs find it."""
    c = Calls(recording("baseline")["calls"])
    from edgesec.checks.families.gpu.nvml import ReplayNvml

    dirs = {}
    for path in files:
        parts = path.split("/")
        for i in range(2, len(parts)):
            dirs["/".join(parts[:i])] = FileStat(0o40755, 0, 0, 0, 0.0, True, False)
    return CheckContext(
        system=BuiltSystem(files=files, commands=commands or {}, stats=dirs),
        clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)),
        config=load_config(),
        nvml=ReplayNvml(c.calls),
    )


def test_old_toolkits_conda_envs_and_torch_metadata() -> None:
    site = "/opt/conda/envs/serve/lib/python3.10/site-packages"
    files = {
        "/usr/local/cuda-11.0/version.txt": "CUDA Version 11.0.228\n",
        "/usr/local/cuda-12.2/version.json": json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.2.2"}}),
        "/usr/local/cuda-broken/version.json": "{not json",
        f"{site}/torch-2.1.0+cu118.dist-info/METADATA": "Version: 2.1.0+cu118\n",
        f"{site}/torch/version.py": "__version__ = '2.1.0+cu118'\ndebug = False\ncuda: Optional[str] = '11.8'\n",
        f"{site}/nvidia_cuda_runtime_cu11-11.8.89.dist-info/METADATA": "Version: 11.8.89\n",
        f"{site}/nvidia/cudnn/include/cudnn_version.h": "#define CUDNN_MAJOR 8\n#define CUDNN_MINOR 7\n#define CUDNN_PATCHLEVEL 0\n",
        f"{site}/nvidia_cudnn_cu11-8.7.0.84.dist-info/METADATA": "Version: 8.7.0.84\n",
    }
    inv = inventory(built_ctx(files))
    got = {(r.source, str(r.version)) for r in inv.runtimes}
    assert got == {("toolkit", "11.0.228"), ("toolkit", "12.2.2"), ("torch", "11.8"), ("wheel", "11.8")}
    assert any("not valid JSON" in n for n in inv.notes)
    cudnn = {(x.source, str(x.version), x.cuda_major) for x in inv.cudnn}
    assert cudnn == {("wheel", "8.7.0", 11), ("header", "8.7.0", 11)}


def test_torch_cuda_from_the_local_tag_when_version_py_is_missing() -> None:
    site = "/usr/local/lib/python3.11/site-packages"
    inv = inventory(built_ctx({f"{site}/torch-2.5.1+cu124.dist-info/METADATA": "Version: 2.5.1+cu124\n"}))
    assert [(r.source, str(r.version)) for r in inv.runtimes] == [("torch", "12.4")]


@pytest.mark.parametrize(
    ("env", "visible", "problem"),
    [
        ({}, HOST, "every GPU is visible"),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, HOST, None),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, [], None),
        ({"NVIDIA_VISIBLE_DEVICES": "1"}, HOST[1:], None),
        ({"CUDA_VISIBLE_DEVICES": HOST[0]}, HOST[:1], None),
        ({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, HOST[1:], None),
        ({"CUDA_VISIBLE_DEVICES": "1"}, HOST[1:], "CUDA_DEVICE_ORDER"),
        ({"CUDA_VISIBLE_DEVICES": ""}, [], None),
        ({"CUDA_VISIBLE_DEVICES": "0,7,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, HOST[:1], None),  # stops at 7
        ({"NVIDIA_VISIBLE_DEVICES": HOST[1], "CUDA_VISIBLE_DEVICES": "0"}, HOST[1:], None),  # relative
    ],
)
def test_visible_devices_parsing(env: dict[str, str], visible: list[str], problem: str | None) -> None:
    got, problems = exposed_devices(env, HOST)
    assert got == set(visible)
    assert (problem is None and not problems) or (problem is not None and any(problem in p for p in problems))


def test_unreadable_processes_are_noted_not_fatal() -> None:
    files = {"/proc/1/comm": "init\n"}
    ctx = built_ctx(files)
    ctx.system.glob = lambda pattern: ["/proc/1/maps"] if pattern == "/proc/[0-9]*/maps" else []  # type: ignore[method-assign]
    ctx.system._euid = 1000  # type: ignore[attr-defined]
    inv = inventory(ctx)
    assert inv.notes == ["1 processes' /proc/<pid>/maps could not be read (run as root to see every process)"]


def test_inventory_is_computed_once_per_run() -> None:
    ctx = built_ctx({})
    assert inventory(ctx) is inventory(ctx)
    assert inventory(built_ctx({})) is not inventory(ctx)


def test_a_subprocess_audit_on_this_host(tmp_path: Path) -> None:
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has an NVIDIA driver")
    out = tmp_path / "r.json"
    env = {**os.environ, "EDGESEC_HOME": str(tmp_path / "home")}
    t0 = time.monotonic()
    cp = subprocess.run(
        [sys.executable, "-m", "edgesec", "--quiet", "audit", "--only", "gpu", "--report", "json", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    assert time.monotonic() - t0 < 60
    doc = json.loads(out.read_text())
    st = {c["id"]: {f["status"] for f in c["findings"]} for c in doc["checks"]}
    assert st["gpu.reference-data"] == {"PASS"}
    assert all(v == {"SKIP"} for k, v in st.items() if k != "gpu.reference-data"), st


def test_torch_cuda_from_metadata_when_version_py_says_nothing() -> None:
    site = "/usr/local/lib/python3.11/site-packages"
    files = {
        f"{site}/torch-2.5.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: torch\nVersion: 2.5.1+cu124\n",
        f"{site}/torch/version.py": "__version__ = '2.5.1'\n",
    }
    inv = inventory(built_ctx(files))
    assert [(r.source, str(r.version), r.package) for r in inv.runtimes] == [("torch", "12.4", "torch-2.5.1")]
    pinned = {
        f"{site}/torch-2.6.0.dist-info/METADATA": (
            "Name: torch\nVersion: 2.6.0\nRequires-Dist: filelock\n"
            "Requires-Dist: nvidia-cuda-runtime-cu12==12.6.77; platform_system == 'Linux'\n"
        ),
    }
    inv = inventory(built_ctx(pinned))
    assert [(r.source, str(r.version)) for r in inv.runtimes] == [("torch", "12.6")]


def test_configured_python_envs_are_searched(tmp_path: Path) -> None:
    site = "/data/envs/app/lib/python3.11/site-packages"
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[gpu]\npython_envs = ["{site}"]\n')
    ctx = built_ctx({f"{site}/nvidia_cuda_runtime_cu12-12.6.77.dist-info/METADATA": "Version: 12.6.77\n"})
    assert inventory(ctx).runtimes == []  # not a place searched by default
    ctx = built_ctx({f"{site}/nvidia_cuda_runtime_cu12-12.6.77.dist-info/METADATA": "Version: 12.6.77\n"})
    ctx.config = load_config(cfg)
    assert [(r.source, str(r.version)) for r in inventory(ctx).runtimes] == [("wheel", "12.6")]
