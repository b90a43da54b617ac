"""Scenarios built from the values recorded on the H200 host, each edited in one place.

The base is the real recording (driver 580.159.04, CUDA 13.0, cuDNN 9.14 system / 9.19 wheel, two torch
model servers: root's and nobody's). Each scenario replaces only the answers it is about, so everything
else the checks read is what the real machine answered.
"""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesec.checks.families.gpu.discovery import (
    CUDNN_HEADER_GLOBS,
    CUDNN_LIB_GLOBS,
    SITE_GLOBS,
    TOOLKIT_GLOBS,
)
from edgesec.checks.interface import CheckContext, Status
from edgesec.checks.probes import FixedClock, LiveSystem
from edgesec.config import load_config

from ._helpers import FIXTURES, Calls, context, only, recording, run, statuses

CUDA_LIBS = ("cudart", "cudnn", "torch_cuda")
BANK_CONFIG = (FIXTURES / "edgesec-bank.toml").read_text()


def base(name: str = "baseline") -> Calls:
    return Calls(recording(name)["calls"])


def root_pid(c: Calls) -> int:
    return c.pid_of_user(0)


def nobody_pid(c: Calls) -> int:
    return c.pid_of_user(65534)


def set_libs(c: Calls, pid: int, libs: list[str]) -> Calls:
    """Replace the CUDA libraries a recorded process has mapped, keeping the rest of its maps."""
    maps = c.read(f"/proc/{pid}/maps") or ""
    kept = [ln for ln in maps.splitlines() if not any(x in ln for x in CUDA_LIBS)]
    added = [
        f"7f00{i:08x}000-7f00{i:08x}fff r-xp 00000000 fe:00 {900 + i} {lib}" for i, lib in enumerate(libs)
    ]
    return c.file(f"/proc/{pid}/maps", "\n".join(kept + added) + "\n")


def without_installed_software(c: Calls) -> Calls:
    """No toolkits, Python environments or cuDNN files on disk: only what processes load counts."""
    for pattern in (
        *TOOLKIT_GLOBS,
        *SITE_GLOBS,
        *CUDNN_HEADER_GLOBS,
        *CUDNN_LIB_GLOBS,
        "/usr/local/cuda*/bin/nvcc",
    ):
        c.glob(pattern, [])
    return c.which("nvcc", None)


CUDART_12_4 = "/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12.4.127"


# -- alignment ------------------------------------------------------------------------------------------------
def test_driver_535_with_a_cuda_12_4_runtime_warns_not_fails() -> None:
    c = without_installed_software(base()).driver("535.104.05", 12020)
    set_libs(c, root_pid(c), [CUDART_12_4])
    set_libs(c, nobody_pid(c), [])
    findings = run("gpu.cuda-driver", context(c))
    assert [f.status for f in findings] == [Status.WARN]
    f = findings[0]
    assert "minor-version compatibility" in f.message and "550.54.14" in f.message
    ev = f.evidence
    assert ev["driver"] == {"version": "535.104.05", "source": "NVML nvmlSystemGetDriverVersion"}
    assert ev["driver_cuda"]["version"] == "12.2"
    assert ev["runtime"]["version"] == "12.4" and CUDART_12_4 in ev["runtime"]["where"]
    assert ev["runtime"]["pid"] == root_pid(c)
    assert ev["toolkit_min_driver"]["driver"] == "550.54.14" and ev["toolkit_min_driver"]["cuda"] == "12.4.0"
    assert ev["compat_floor"]["driver"] == "525.60.13"


def test_driver_525_with_cuda_13_fails() -> None:
    c = base().driver("525.60.13", 12000)
    findings = run("gpu.cuda-driver", context(c))
    assert findings and statuses(findings) == {Status.FAIL}
    for f in findings:
        assert "needs at least 580" in f.message
        assert f.evidence["driver"]["version"] == "525.60.13"
    sources = {f.evidence["runtime"]["source"] for f in findings}
    assert sources == {"nvcc", "process", "wheel", "torch"}  # every place CUDA 13 was found, each named
    cudnn = run("gpu.cudnn", context(c))
    assert statuses(cudnn) == {Status.FAIL}
    assert all("580.65.06" in f.message for f in cudnn)
    eol = run("gpu.driver-eol", context(c))
    assert [f.status for f in eol] == [Status.WARN] and "R525 is not in the reference data" in eol[0].message


def test_cudnn_for_cuda_11_beside_a_cuda_12_runtime_fails() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/libcudnn.so.9.5.1"
    c = without_installed_software(base()).driver("550.54.14", 12040)
    set_libs(c, root_pid(c), [CUDART_12_4, lib])
    set_libs(c, nobody_pid(c), [])
    c.which("dpkg-query", "/usr/bin/dpkg-query").readlink(lib, None)
    c.command(["dpkg-query", "-S", lib], f"libcudnn9-cuda-11: {lib}\n")
    assert statuses(run("gpu.cuda-driver", context(c))) == {Status.PASS}
    findings = run("gpu.cudnn", context(c))
    assert [f.status for f in findings] == [Status.FAIL]
    f = findings[0]
    assert "built for CUDA 11 (package libcudnn9-cuda-11)" in f.message and "CUDA 12.4" in f.message
    assert f.evidence["cudnn"]["package"] == "libcudnn9-cuda-11"
    assert f.evidence["runtimes_beside"][0]["version"] == "12.4"


def test_the_same_cudnn_built_for_cuda_12_passes() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/libcudnn.so.9.5.1"
    c = without_installed_software(base()).driver("550.54.14", 12040)
    set_libs(c, root_pid(c), [CUDART_12_4, lib])
    set_libs(c, nobody_pid(c), [])
    c.which("dpkg-query", "/usr/bin/dpkg-query").readlink(lib, None)
    c.command(["dpkg-query", "-S", lib], f"libcudnn9-cuda-12: {lib}\n")
    findings = run("gpu.cudnn", context(c))
    assert [f.status for f in findings] == [Status.PASS]
    assert findings[0].evidence["matrix"]["documented_release"] == "9.5.1"


def test_cudnn_9_14_between_documented_releases_is_judged_by_the_nearest_covering_cuda_13() -> None:
    findings = run("gpu.cudnn", context(base()))
    f = only(findings, "/usr/lib/x86_64-linux-gnu/libcudnn.so.9.14.0")
    assert f.status is Status.PASS
    assert f.evidence["cudnn"]["package"] == "libcudnn9-cuda-13" and f.evidence["cudnn"]["cuda_major"] == 13
    m = f.evidence["matrix"]
    assert m["documented_release"] == "9.17.0" and m["exact"] is False
    assert "between documented releases" in m["why"] and "nearest documented" in f.message


def test_several_runtimes_in_use_warn() -> None:
    c = base()
    set_libs(c, nobody_pid(c), [CUDART_12_4])
    findings = run("gpu.cuda-driver", context(c))
    mixed = [f for f in findings if "different CUDA runtimes" in f.message]
    assert len(mixed) == 1 and mixed[0].status is Status.WARN
    assert "12.4" in mixed[0].message and "13.0" in mixed[0].message


def test_r535_judged_before_and_after_its_end_of_life() -> None:
    c = base().driver("535.104.05", 12020)
    before = run("gpu.driver-eol", context(c, profile="bank", at=dt.datetime(2026, 1, 15, tzinfo=dt.UTC)))
    assert [f.status for f in before] == [Status.PASS] and "until the end of 2026-06" in before[0].message
    # On 2026-11-26, the day the H200 reference reading was taken, R535 was past end of life.
    after = run("gpu.driver-eol", context(c, profile="bank", at=dt.datetime(2026, 11, 26, tzinfo=dt.UTC)))
    assert [f.status for f in after] == [Status.FAIL] and "reached end of life" in after[0].message
    assert after[0].evidence["judged_on"] == "2026-11-26"
    lenient = run(
        "gpu.driver-eol", context(c, profile="baseline", at=dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    )
    assert [f.status for f in lenient] == [Status.WARN]
    forced = context(
        c, at=dt.datetime(2026, 11, 26, tzinfo=dt.UTC), params={"gpu.driver-eol": {"fail_past_eol": True}}
    )
    assert [f.status for f in run("gpu.driver-eol", forced)] == [Status.FAIL]


# -- isolation ------------------------------------------------------------------------------------------------
def test_mig_off_on_a_shared_gpu_fails_in_the_bank_profile(tmp_path: Path) -> None:
    c = base("bank")
    f = run("gpu.mig", context(c, profile="bank", config_text=BANK_CONFIG, tmp=tmp_path))
    assert [x.status for x in f] == [Status.FAIL]
    assert "MIG is off on a GPU shared by model-server, user nobody" in f[0].message
    assert f[0].evidence["mig_mode"] == {"current": 0, "pending": 0}
    baseline = run("gpu.mig", context(c, profile="baseline", config_text=BANK_CONFIG, tmp=tmp_path))
    assert [x.status for x in baseline] == [Status.WARN]


def test_mig_off_on_a_gpu_used_by_one_service_passes(tmp_path: Path) -> None:
    c = base("bank")
    procs = c.nvml_get("nvmlDeviceGetComputeRunningProcesses", 0)
    c.nvml("nvmlDeviceGetComputeRunningProcesses", 0, ok=[p for p in procs if p["pid"] == root_pid(c)])
    f = run("gpu.mig", context(c, profile="bank", config_text=BANK_CONFIG, tmp=tmp_path))
    assert [x.status for x in f] == [Status.PASS] and "not shared" in f[0].message


def mig_on(c: Calls) -> Calls:
    """MIG on with two GPU instances; root's server on instance 1, nobody's on instance 2."""
    c.nvml("nvmlDeviceGetMigMode", 0, ok=[1, 1]).nvml("nvmlDeviceGetMaxMigDeviceCount", 0, ok=7)
    for j in range(7):
        if j < 2:
            c.nvml("nvmlDeviceGetMigDeviceHandleByIndex", 0, j, ok=f"0/{j}")
            c.nvml("nvmlDeviceGetUUID", f"0/{j}", ok=f"MIG-0000000{j}-aaaa-bbbb-cccc-dddddddddddd")
            c.nvml("nvmlDeviceGetGpuInstanceId", f"0/{j}", ok=j + 1)
        else:
            c.nvml("nvmlDeviceGetMigDeviceHandleByIndex", 0, j, error="NotFound")
    procs = c.nvml_get("nvmlDeviceGetComputeRunningProcesses", 0)
    placed = [
        {**p, "gpuInstanceId": 1 if p["pid"] == root_pid(c) else 2, "computeInstanceId": 0} for p in procs
    ]
    return c.nvml("nvmlDeviceGetComputeRunningProcesses", 0, ok=placed)


def test_mig_on_with_services_on_their_instances(tmp_path: Path) -> None:
    c = mig_on(base("bank"))
    cfg = BANK_CONFIG.replace('gpus = ["0"]', 'gpus = ["MIG-00000000-aaaa-bbbb-cccc-dddddddddddd"]')
    ctx = context(c, profile="bank", config_text=cfg, tmp=tmp_path)
    mig = run("gpu.mig", ctx)
    assert [x.status for x in mig] == [Status.PASS] and "2 instance(s)" in mig[0].message
    procs = run("gpu.processes", ctx)
    assert only(procs, f"pid {root_pid(c)} ").status is Status.PASS
    # nobody's server is on the other instance, assigned to no one.
    assert only(procs, f"pid {nobody_pid(c)} ").status is Status.FAIL


def test_a_foreign_process_fails(tmp_path: Path) -> None:
    c = base("bank")
    findings = run("gpu.processes", context(c, profile="bank", config_text=BANK_CONFIG, tmp=tmp_path))
    foreign = only(findings, "foreign process")
    assert foreign.status is Status.FAIL
    p = foreign.evidence["process"]
    assert p["pid"] == nobody_pid(c) and p["user"] == "nobody" and p["exe"].startswith("/usr/bin/python3")
    assert foreign.evidence["matched_services"] == []
    assert only(findings, f"pid {root_pid(c)} ").status is Status.PASS


def test_an_assigned_service_on_the_wrong_gpu_fails(tmp_path: Path) -> None:
    c = base("bank")
    cfg = BANK_CONFIG.replace('gpus = ["0"]', 'gpus = ["GPU-11111111-2222-3333-4444-555555555555"]')
    ctx = context(c, profile="bank", config_text=cfg, tmp=tmp_path)
    wrong = only(run("gpu.processes", ctx), f"pid {root_pid(c)} ")
    assert wrong.status is Status.FAIL and "not assigned to it" in wrong.message
    vis = only(run("gpu.visible-devices", ctx), f"pid {root_pid(c)} ")
    assert vis.status is Status.FAIL and c.nvml_get("nvmlDeviceGetUUID", 0) in vis.message


def test_visible_devices_of_a_service(tmp_path: Path) -> None:
    c = base("bank")
    ctx = context(c, profile="bank", config_text=BANK_CONFIG, tmp=tmp_path)
    f = only(run("gpu.visible-devices", ctx), f"pid {root_pid(c)} ")
    assert f.status is Status.PASS and f.evidence["environ"]["NVIDIA_VISIBLE_DEVICES"] == "0"


def test_compute_mode_of_a_dedicated_gpu(tmp_path: Path) -> None:
    c = base("bank")
    ctx = context(c, profile="bank", config_text=BANK_CONFIG, tmp=tmp_path)
    assert [f.status for f in run("gpu.compute-mode", ctx)] == [Status.WARN]
    c.nvml("nvmlDeviceGetComputeMode", 0, ok=3)
    assert [f.status for f in run("gpu.compute-mode", context(c, config_text=BANK_CONFIG, tmp=tmp_path))] == [
        Status.PASS
    ]
    c.nvml("nvmlDeviceGetComputeMode", 0, ok=2)
    assert [f.status for f in run("gpu.compute-mode", context(c, config_text=BANK_CONFIG, tmp=tmp_path))] == [
        Status.FAIL
    ]


def test_world_writable_device_nodes_fail() -> None:
    c = base()
    findings = run("gpu.device-nodes", context(c))
    assert only(findings, "/dev/nvidia0").status is Status.FAIL
    assert only(findings, "/dev/nvidiactl").status is Status.FAIL
    assert only(findings, "/dev/nvidia0").evidence["mode"] == "0666"
    assert only(findings, "/dev/nvidia0").evidence["driver_params"]["DeviceFileMode"] == "438"
    assert only(findings, "nvidia-cap1").status is Status.PASS
    for path in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"):
        c.stat(path, 0o20660, gid=44)
    assert statuses(run("gpu.device-nodes", context(c))) == {Status.PASS}


def test_mps_server_shared_by_two_users_fails() -> None:
    c = base()
    comms = c.calls['glob:["/proc/[0-9]*/comm"]']
    c.glob("/proc/[0-9]*/comm", [*comms, "/proc/900/comm"])
    c.file("/proc/900/comm", "nvidia-cuda-mps-control\n").file(
        "/proc/900/status", "Name:\tnvidia-cuda-mps\nUid:\t0\t0\t0\t0\n"
    )
    c.file("/proc/900/cgroup", "0::/system.slice/nvidia-mps.service\n").readlink(
        "/proc/900/exe", "/usr/bin/nvidia-cuda-mps-control"
    )
    procs = c.nvml_get("nvmlDeviceGetComputeRunningProcesses", 0)
    c.nvml("nvmlDeviceGetMPSComputeRunningProcesses", 0, ok=procs)
    f = run("gpu.mps", context(c))
    assert [x.status for x in f] == [Status.FAIL]
    assert "user nobody" in f[0].message and "user root" in f[0].message
    assert f[0].evidence["mps_daemons"][0]["comm"] == "nvidia-cuda-mps-control"


def test_real_host_has_no_mps() -> None:
    assert [f.status for f in run("gpu.mps", context(base()))] == [Status.PASS]


def test_profiling_counters() -> None:
    c = base()
    f = run("gpu.profiling-admin-only", context(c))
    assert [x.status for x in f] == [Status.FAIL] and "RmProfilingAdminOnly: 0" in f[0].message
    params = c.read("/proc/driver/nvidia/params") or ""
    c.file("/proc/driver/nvidia/params", params.replace("RmProfilingAdminOnly: 0", "RmProfilingAdminOnly: 1"))
    assert [x.status for x in run("gpu.profiling-admin-only", context(c))] == [Status.PASS]


@pytest.mark.parametrize(
    ("config", "status", "needle"),
    [
        (None, Status.SKIP, "not configured"),
        ('[nvidia-container-cli]\nldconfig = "@/sbin/ldconfig"\n', Status.WARN, "unset (default true)"),
        (
            '[nvidia-container-cli]\nno-cgroups = true\nldconfig = "@/sbin/ldconfig"\n',
            Status.FAIL,
            "no-cgroups",
        ),
        ('[nvidia-container-cli]\nldconfig = "/sbin/ldconfig"\n', Status.FAIL, "container image's ldconfig"),
        (
            'accept-nvidia-visible-devices-envvar-when-unprivileged = false\n[nvidia-container-cli]\nldconfig = "@/sbin/ldconfig.real"\n',
            Status.PASS,
            "keeps containers",
        ),
        ("[nvidia-container-cli\n", Status.FAIL, "cannot be parsed"),
    ],
)
def test_container_toolkit_config(config: str | None, status: Status, needle: str) -> None:
    c = base().file("/etc/nvidia-container-runtime/config.toml", config)
    f = run("gpu.container-toolkit", context(c))
    assert [x.status for x in f] == [status] and needle in f[0].message


# -- health ---------------------------------------------------------------------------------------------------
def test_real_host_is_healthy() -> None:
    ctx = context(base())
    for check_id in ("gpu.ecc", "gpu.ecc-errors", "gpu.memory-remap", "gpu.xid", "gpu.persistence"):
        assert statuses(run(check_id, ctx)) == {Status.PASS}, check_id


def test_health_problems() -> None:
    c = (
        base()
        .nvml("nvmlDeviceGetTotalEccErrors", 0, 1, 0, ok=3)
        .nvml("nvmlDeviceGetRemappedRows", 0, ok=[2, 1, 1, 0])
    )
    c.nvml("nvmlDeviceGetEccMode", 0, ok=[0, 1]).nvml("nvmlDeviceGetPersistenceMode", 0, ok=0)
    ctx = context(c)
    assert "3 uncorrected" in run("gpu.ecc-errors", ctx)[0].message
    assert [f.status for f in run("gpu.ecc-errors", ctx)] == [Status.FAIL]
    assert [f.status for f in run("gpu.memory-remap", ctx)] == [Status.FAIL]
    ecc = run("gpu.ecc", ctx)
    assert [f.status for f in ecc] == [Status.FAIL] and "on after reset" in ecc[0].message
    assert [f.status for f in run("gpu.persistence", ctx)] == [Status.WARN]


def test_pre_ampere_gpu_with_pending_page_retirement() -> None:
    c = base().nvml("nvmlDeviceGetRemappedRows", 0, error="NotSupported")
    c.nvml("nvmlDeviceGetRetiredPagesPendingStatus", 0, ok=1)
    c.nvml("nvmlDeviceGetRetiredPages", 0, 0, ok=[4096]).nvml(
        "nvmlDeviceGetRetiredPages", 0, 1, ok=[8192, 12288]
    )
    f = run("gpu.memory-remap", context(c))
    assert [x.status for x in f] == [Status.FAIL]
    assert f[0].evidence["retired_pages"] == {"pending": 1, "single_bit": 1, "double_bit": 2}


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("NVRM: Xid (PCI:0000:00:06): 79, pid=1234, name=python3, GPU has fallen off the bus.", Status.FAIL),
        ("NVRM: Xid (PCI:0000:00:06): 94, pid=1234, name=python3, Contained: SM (0x1).", Status.FAIL),
        ("NVRM: Xid (PCI:0000:00:06): 13, pid=1234, name=python3, Graphics Exception: ESR 0x50", Status.WARN),
    ],
)
def test_xid_in_the_kernel_log(line: str, status: Status) -> None:
    c = base()
    log = c.calls['run:[["dmesg"]]']["stdout"]
    c.command(["dmesg"], log + f"[  812.123456] {line}\n")
    f = run("gpu.xid", context(c))
    assert [x.status for x in f] == [status]
    assert f[0].evidence["xids"][0]["device"] == "PCI:0000:00:06"


def test_dcgm_exporter_absent_on_the_real_host() -> None:
    f = run("gpu.dcgm-exporter", context(base()))
    assert [x.status for x in f] == [Status.WARN] and "no DCGM exporter" in f[0].message


def test_dcgm_exporter_url_off_loopback_is_refused_without_probing(tmp_path: Path) -> None:
    # The replay has no answer for any curl call: probing would be an ERROR, not this FAIL.
    cfg = '[gpu]\ndcgm_exporter_url = "http://192.0.2.10:9400/metrics"\n'
    f = run("gpu.dcgm-exporter", context(base(), config_text=cfg, tmp=tmp_path))
    assert [x.status for x in f] == [Status.FAIL] and "refusing to probe" in f[0].message


@pytest.fixture
def exporter() -> Iterator[tuple[str, list[bytes]]]:
    body: list[bytes] = [b'# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature\nDCGM_FI_DEV_GPU_TEMP{gpu="0"} 35\n']

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/metrics", body
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.real("curl")
def test_dcgm_exporter_on_loopback_with_real_curl(tmp_path: Path, exporter: tuple[str, list[bytes]]) -> None:
    url, body = exporter
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[gpu]\ndcgm_exporter_url = "{url}"\n')
    from edgesec.checks.families.gpu.nvml import ReplayNvml

    ctx = CheckContext(
        system=LiveSystem(),
        clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)),
        config=load_config(cfg),
        nvml=ReplayNvml(recording("baseline")["calls"]),
    )
    f = run("gpu.dcgm-exporter", ctx)
    assert [x.status for x in f] == [Status.PASS] and f[0].evidence["dcgm_samples"] == 1
    body[0] = b"node_load1 0.5\n"
    f = run("gpu.dcgm-exporter", ctx)
    assert [x.status for x in f] == [Status.FAIL] and "no DCGM_FI_" in f[0].message


def test_a_lost_gpu_is_a_failure_not_a_crash() -> None:
    c = base().nvml("nvmlDeviceGetEccMode", 0, error="GpuIsLost")
    f = run("gpu.ecc", context(c))
    assert [x.status for x in f] == [Status.FAIL] and "lost" in f[0].message


def test_nvml_refusing_a_query_skips_with_the_reason() -> None:
    c = base().nvml("nvmlDeviceGetPersistenceMode", 0, error="NoPermission")
    f = run("gpu.persistence", context(c))
    assert [x.status for x in f] == [Status.SKIP] and "run as root" in f[0].message


def test_profile_parameters_of_the_family_and_the_check(tmp_path: Path) -> None:
    c = base("bank")
    strict = context(
        c, profile="custom", config_text=BANK_CONFIG, tmp=tmp_path, params={"gpu": {"require_mig": True}}
    )
    assert [f.status for f in run("gpu.mig", strict)] == [Status.FAIL]
    lenient = context(
        c,
        profile="bank",
        config_text=BANK_CONFIG,
        tmp=tmp_path,
        params={"gpu": {"require_mig": True}, "gpu.mig": {"require_mig": False}},
    )
    assert [f.status for f in run("gpu.mig", lenient)] == [Status.WARN]
    # The site's own [gpu] require_mig wins over any profile.
    site = BANK_CONFIG + "\n[gpu]\nrequire_mig = false\n"
    assert [f.status for f in run("gpu.mig", context(c, profile="bank", config_text=site, tmp=tmp_path))] == [
        Status.WARN
    ]


def test_visible_devices_of_a_service_not_running_yet_come_from_its_unit(tmp_path: Path) -> None:
    c = base("bank")
    gpu = c.nvml_get("nvmlDeviceGetUUID", 0)
    cfg = (
        BANK_CONFIG + '\n[[gpu.assignments]]\nservice = "vllm"\nunit = "vllm.service"\ngpus = ["MIG-0000"]\n'
    )
    argv = ["systemctl", "show", "--property=Environment", "--value", "vllm.service"]
    c.command(argv, f'HF_HOME=/srv/hf "CUDA_VISIBLE_DEVICES={gpu[:12]}" CUDA_DEVICE_ORDER=PCI_BUS_ID\n')
    f = only(run("gpu.visible-devices", context(c, config_text=cfg, tmp=tmp_path)), "vllm.service")
    assert f.status is Status.FAIL and "(not running)" in f.message and gpu[:12] in f.message
    assert f.evidence["environ"] == {"CUDA_VISIBLE_DEVICES": gpu[:12], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    # The same unit pinned to its own GPU by a UUID prefix passes.
    cfg_ok = cfg.replace('gpus = ["MIG-0000"]', f'gpus = ["{gpu}"]')
    f = only(run("gpu.visible-devices", context(c, config_text=cfg_ok, tmp=tmp_path)), "vllm.service")
    assert f.status is Status.PASS


def test_forward_compatibility_through_cuda_compat_warns() -> None:
    # A CUDA 13.1 server on an R535 kernel driver works only through cuda-compat's newer libcuda.
    c = without_installed_software(base()).driver("535.104.05", 12020)
    set_libs(
        c,
        root_pid(c),
        [
            "/usr/local/cuda-13.1/targets/x86_64-linux/lib/libcudart.so.13.1.80",
            "/usr/local/cuda-13.1/compat/libcuda.so.590.44.01",
        ],
    )
    set_libs(c, nobody_pid(c), ["/usr/local/cuda-13.1/targets/x86_64-linux/lib/libcudart.so.13.1.80"])
    findings = run("gpu.cuda-driver", context(c))
    fwd = only(findings, f"pid {root_pid(c)} ")
    assert fwd.status is Status.WARN and "forward compatibility" in fwd.message and "804" in fwd.message
    assert fwd.evidence["forward_compat"]["version"] == "590.44.01"
    # Without cuda-compat the same runtime cannot start on that driver.
    assert only(findings, f"pid {nobody_pid(c)} ").status is Status.FAIL


def test_a_gpu_process_outside_our_pid_namespace_is_named_as_such(tmp_path: Path) -> None:
    c = base("bank")
    procs = c.nvml_get("nvmlDeviceGetComputeRunningProcesses", 0)
    ghost = {**procs[0], "pid": 424242}
    c.nvml("nvmlDeviceGetComputeRunningProcesses", 0, ok=[*procs, ghost])
    for name in ("status", "comm", "cgroup"):
        c.file(f"/proc/424242/{name}", None)
    c.readlink("/proc/424242/exe", None)
    f = only(
        run("gpu.processes", context(c, profile="bank", config_text=BANK_CONFIG, tmp=tmp_path)), "424242"
    )
    assert f.status is Status.FAIL and "not visible in this PID namespace" in f.message


def test_cudnn_newer_than_every_documented_release_says_so() -> None:
    f = only(run("gpu.cudnn", context(base())), "nvidia_cudnn_cu13-9.19.0")
    assert f.status is Status.PASS and f.evidence["matrix"]["documented_release"] == "9.17.0"
    assert "9.19.0 is newer than every documented release" in f.evidence["matrix"]["why"]
