"""GPU isolation: who may use which GPU, and what stops one tenant reading or crashing another.

The site's allowlist is ``[[gpu.assignments]]`` in ``edgesec.toml``: a service (matched by user,
executable and/or systemd unit; by its name against unit, command or executable when none is given) and
the GPUs it may use (index, GPU UUID or MIG UUID).
"""

from __future__ import annotations

import posixpath
import shlex
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgesec.checks.families.gpu._base import GpuCheck, gpus
from edgesec.checks.families.gpu.discovery import (
    ProcInfo,
    cached,
    gpu_count,
    gpu_uuid,
    inventory,
    nvml_or,
    proc_info,
)
from edgesec.checks.families.gpu.nvml import COMPUTE_MODES, NvmlError
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity
from edgesec.checks.settings import GpuAssignment

_ISOLATION_CONTROLS = (
    "pci-dss-4.0:2.2.1",
    "hipaa:164.312(a)(1)",
    "mlps-2.0-l3:8.1.4.2",
    "iec-62443-3-3:SR 2.1",
)
_NOT_AVAILABLE = 0xFFFFFFFF  # NVML's "no GPU instance" in process records


@dataclass(frozen=True)
class GpuProc:
    """A process NVML reports on a GPU (or a MIG instance of it)."""

    gpu: int
    gpu_uuid: str
    mig_uuid: str | None
    info: ProcInfo
    used_memory: int | None
    kind: str  # compute | mps

    def evidence(self) -> dict[str, Any]:
        d = {**self.info.evidence(), "gpu": self.gpu, "gpu_uuid": self.gpu_uuid, "kind": self.kind}
        if self.mig_uuid:
            d["mig_uuid"] = self.mig_uuid
        if self.used_memory is not None:
            d["used_memory_bytes"] = self.used_memory
        return d


def mig_mode(ctx: CheckContext, index: int) -> tuple[int, int] | None:
    """``(current, pending)``, or None when the GPU has no MIG."""
    v = nvml_or(ctx, "nvmlDeviceGetMigMode", index)
    return (int(v[0]), int(v[1])) if isinstance(v, list) and len(v) == 2 else None


def mig_devices(ctx: CheckContext, index: int) -> dict[int, str]:
    """GPU instance id → MIG device UUID for a GPU with MIG on."""
    assert ctx.nvml is not None
    nvml = ctx.nvml

    def compute() -> dict[int, str]:
        mode = mig_mode(ctx, index)
        if not mode or mode[0] != 1:
            return {}
        out: dict[int, str] = {}
        for j in range(int(nvml_or(ctx, "nvmlDeviceGetMaxMigDeviceCount", index, default=0) or 0)):
            try:
                ref = nvml.call("nvmlDeviceGetMigDeviceHandleByIndex", index, j)
            except NvmlError:
                continue  # no MIG device in that slot
            uuid = str(nvml.call("nvmlDeviceGetUUID", ref))
            gi = nvml_or(ctx, "nvmlDeviceGetGpuInstanceId", ref)
            out[int(gi) if gi is not None else j] = uuid
        return out

    return cached(ctx, f"mig:{index}", compute)


def gpu_processes(ctx: CheckContext) -> list[GpuProc]:
    """Every compute and MPS process NVML reports, with owner, executable and cgroup."""

    def compute() -> list[GpuProc]:
        out: list[GpuProc] = []
        for i, uuid, _label in gpus(ctx):
            migs = mig_devices(ctx, i)
            for fn, kind in (
                ("nvmlDeviceGetComputeRunningProcesses", "compute"),
                ("nvmlDeviceGetMPSComputeRunningProcesses", "mps"),
            ):
                for p in nvml_or(ctx, fn, i, default=[]) or []:
                    gi = p.get("gpuInstanceId")
                    mig = migs.get(int(gi)) if gi is not None and int(gi) != _NOT_AVAILABLE else None
                    mem = p.get("usedGpuMemory")
                    out.append(GpuProc(i, uuid, mig, proc_info(ctx, int(p["pid"])), mem, kind))
        return out

    return cached(ctx, "gpu_processes", compute)


def all_comms(ctx: CheckContext) -> dict[int, str]:
    """pid → command name of every process (to find MPS and persistence daemons)."""

    def compute() -> dict[int, str]:
        out = {}
        for path in ctx.system.glob("/proc/[0-9]*/comm"):
            name = path.split("/")[2]
            text = ctx.system.read_text(path, 256) if name.isdigit() else None
            if text is not None:
                out[int(name)] = text.strip()
        return out

    return cached(ctx, "comms", compute)


# -- the allowlist ------------------------------------------------------------------------------------------
def _unit_names(unit: str | None) -> set[str]:
    if not unit:
        return set()
    return {unit, unit.removesuffix(".service")}


def identifies(a: GpuAssignment, info: ProcInfo) -> bool:
    """Whether a process is the assignment's service (every selector given must match)."""
    selected = False
    if a.user is not None:
        selected = True
        if a.user not in (info.user, str(info.uid)):
            return False
    if a.executable is not None:
        selected = True
        exe = info.exe or ""
        if a.executable not in (exe, posixpath.basename(exe)):
            return False
    if a.unit is not None:
        selected = True
        if not (_unit_names(a.unit) & _unit_names(info.unit)):
            return False
    if selected:
        return True
    names = _unit_names(info.unit) | {info.comm or "", posixpath.basename(info.exe or "")}
    return a.service in names


def allowed_refs(a: GpuAssignment) -> set[str]:
    return {g.strip() for g in a.gpus}


def permits(a: GpuAssignment, p: GpuProc) -> bool:
    refs = allowed_refs(a)
    whole = str(p.gpu) in refs or p.gpu_uuid in refs
    return whole or (p.mig_uuid is not None and p.mig_uuid in refs)


class GpuProcesses(GpuCheck):
    """Processes on each GPU against the site's allowlist."""

    meta = CheckMeta(
        id="gpu.processes",
        title="Only the services assigned to a GPU run on it",
        severity=Severity.HIGH,
        rationale=(
            "A process on a GPU it is not assigned to shares memory bandwidth, can exhaust GPU memory and, "
            "without MIG, shares the GPU's address-space isolation with the tenant's model."
        ),
        remediation=(
            "Stop the process or add it to [[gpu.assignments]] in edgesec.toml; pin services with "
            "CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES to their GPU or MIG instance."
        ),
        controls=_ISOLATION_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        assignments = ctx.config.settings.gpu.assignments
        procs = gpu_processes(ctx)
        if not procs:
            yield self.passed(
                f"no compute processes on {gpu_count(ctx)} GPU(s)",
                evidence={"assignments": [a.model_dump() for a in assignments]},
            )
            return
        if not assignments:
            yield self.warned(
                f"{len(procs)} process(es) use GPUs but no [[gpu.assignments]] allowlist is configured",
                evidence={"processes": [p.evidence() for p in procs]},
                severity=Severity.MEDIUM,
            )
            return
        for p in procs:
            where = p.mig_uuid or p.gpu_uuid
            if p.info.comm is None and p.info.exe is None and p.info.uid is None:
                # NVML reports host PIDs: a process in another PID namespace (a container) is not in our /proc.
                who = f"pid {p.info.pid} (not visible in this PID namespace: run the audit on the host)"
            else:
                who = f"pid {p.info.pid} ({p.info.exe or p.info.comm}, user {p.info.user or p.info.uid})"
            mine = [a for a in assignments if identifies(a, p.info)]
            ok = [a for a in mine if permits(a, p)]
            ev = {"process": p.evidence(), "matched_services": [a.service for a in mine]}
            if ok:
                yield self.passed(
                    f"{who} on gpu{p.gpu} is service {ok[0].service}, assigned to it",
                    resource=where,
                    evidence=ev,
                )
            elif mine:
                yield self.failed(
                    f"{who} is service {mine[0].service} but runs on gpu{p.gpu} {where}, which is not assigned to it",
                    resource=where,
                    evidence={**ev, "assigned": sorted(allowed_refs(mine[0]))},
                )
            else:
                yield self.failed(
                    f"foreign process on gpu{p.gpu}: {who} matches no [[gpu.assignments]] entry",
                    resource=where,
                    evidence=ev,
                )


def services_on(ctx: CheckContext, index: int, uuid: str) -> set[str]:
    """Services the allowlist assigns to the whole GPU (not to one of its MIG instances)."""
    return {a.service for a in ctx.config.settings.gpu.assignments if {str(index), uuid} & allowed_refs(a)}


def owners_on(ctx: CheckContext, index: int) -> set[str]:
    """Distinct owners (unit, container or user) of processes on a GPU outside MIG instances."""
    out = set()
    assignments = ctx.config.settings.gpu.assignments
    for p in gpu_processes(ctx):
        if p.gpu == index and p.mig_uuid is None:
            out.add(owner_name(assignments, p.info))
    return out


def owner_name(assignments: Iterable[GpuAssignment], i: ProcInfo) -> str:
    """A process's owner as a report names it: its assigned service, else unit, container or user."""
    for a in assignments:
        if identifies(a, i):
            return a.service
    return i.unit or (f"container {i.container}" if i.container else f"user {i.user or i.uid}")


class MigIsolation(GpuCheck):
    """MIG mode and instances; a shared GPU without MIG in profiles that require it."""

    meta = CheckMeta(
        id="gpu.mig",
        title="GPUs shared by several services are split with MIG",
        severity=Severity.HIGH,
        rationale=(
            "MIG GPU instances are the isolation boundary between tenants of one GPU: separate memory, "
            "caches and fault domains. Without MIG, tenants share one GPU and one failure domain."
        ),
        remediation=(
            "Enable MIG (nvidia-smi -i N -mig 1, then create GPU instances) and assign each service a MIG "
            "UUID, or give each service its own GPU."
        ),
        controls=_ISOLATION_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        configured = ctx.config.settings.gpu.require_mig
        require = configured if configured is not None else bool(self.param(ctx, "require_mig", False))
        for i, uuid, label in gpus(ctx):
            mode = mig_mode(ctx, i)
            services = services_on(ctx, i, uuid)
            owners = owners_on(ctx, i)
            shared = len(services) > 1 or len(owners) > 1
            ev: dict[str, Any] = {
                "mig_mode": None if mode is None else {"current": mode[0], "pending": mode[1]},
                "services_assigned_whole_gpu": sorted(services),
                "process_owners": sorted(owners),
                "shared": shared,
                "mig_required_on_shared": require,
            }
            if mode is not None and mode[0] == 1:
                inst = mig_devices(ctx, i)
                ev["instances"] = {str(k): v for k, v in sorted(inst.items())}
                if len(services) > 1:
                    yield self.warned(
                        f"{label}: MIG is on but services {', '.join(sorted(services))} are assigned the whole GPU, "
                        "not MIG instances",
                        resource=uuid,
                        evidence=ev,
                        severity=Severity.MEDIUM,
                    )
                else:
                    yield self.passed(
                        f"{label}: MIG on with {len(inst)} instance(s)", resource=uuid, evidence=ev
                    )
                continue
            pending = mode is not None and mode[1] != mode[0]
            state = "not supported" if mode is None else "off" + (" (on after reset)" if pending else "")
            if shared and require:
                yield self.failed(
                    f"{label}: MIG is {state} on a GPU shared by {', '.join(sorted(services | owners))}",
                    resource=uuid,
                    evidence=ev,
                )
            elif shared:
                yield self.warned(
                    f"{label}: MIG is {state} on a GPU shared by {', '.join(sorted(services | owners))}",
                    resource=uuid,
                    evidence=ev,
                    severity=Severity.MEDIUM,
                )
            else:
                yield self.passed(
                    f"{label}: MIG is {state}; the GPU is not shared", resource=uuid, evidence=ev
                )


class ComputeMode(GpuCheck):
    """Compute mode against how the GPU is assigned."""

    meta = CheckMeta(
        id="gpu.compute-mode",
        title="GPU compute mode fits its assignment",
        severity=Severity.LOW,
        rationale=(
            "In Default mode any local process may open a context on a GPU dedicated to one service; "
            "Exclusive_Process on a GPU assigned to several services keeps all but one from starting; "
            "Prohibited keeps every service off it."
        ),
        remediation="nvidia-smi -i N -c EXCLUSIVE_PROCESS for a dedicated GPU; DEFAULT for a shared one.",
        controls=_ISOLATION_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        for i, uuid, label in gpus(ctx):
            raw = nvml_or(ctx, "nvmlDeviceGetComputeMode", i)
            if raw is None:
                yield self.skipped(f"{label}: compute mode not reported", resource=uuid)
                continue
            mode = COMPUTE_MODES.get(int(raw), str(raw))
            services = services_on(ctx, i, uuid)
            ev = {"compute_mode": mode, "services_assigned": sorted(services)}
            if services and mode == "Prohibited":
                yield self.failed(
                    f"{label}: compute mode Prohibited, but {', '.join(sorted(services))} are assigned to it",
                    resource=uuid,
                    evidence=ev,
                    severity=Severity.MEDIUM,
                )
            elif len(services) > 1 and mode.startswith("Exclusive"):
                yield self.warned(
                    f"{label}: compute mode {mode} lets only one of {', '.join(sorted(services))} run",
                    resource=uuid,
                    evidence=ev,
                )
            elif len(services) == 1 and mode == "Default":
                yield self.warned(
                    f"{label}: dedicated to {next(iter(services))} but in Default mode: any local process can use it",
                    resource=uuid,
                    evidence=ev,
                )
            else:
                yield self.passed(f"{label}: compute mode {mode}", resource=uuid, evidence=ev)


class MpsSharing(GpuCheck):
    """MPS control daemons and servers shared across users or services."""

    meta = CheckMeta(
        id="gpu.mps",
        title="No MPS server is shared by different services or users",
        severity=Severity.HIGH,
        rationale=(
            "Clients of one MPS server share its GPU context: a fatal fault in one client terminates every "
            "client of that server, so one tenant can crash another."
        ),
        remediation="Run one MPS control daemon per service (its own CUDA_MPS_PIPE_DIRECTORY), or use MIG.",
        controls=_ISOLATION_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        comms = all_comms(ctx)
        daemons = {pid: c for pid, c in comms.items() if c.startswith("nvidia-cuda-mps")}
        clients = [p for p in gpu_processes(ctx) if p.kind == "mps"]
        ev: dict[str, Any] = {
            "mps_daemons": [proc_info(ctx, pid).evidence() for pid in sorted(daemons)],
            "mps_clients": [p.evidence() for p in clients],
        }
        if not daemons and not clients:
            yield self.passed("no MPS control daemon or server is running", evidence=ev)
            return
        assignments = ctx.config.settings.gpu.assignments
        by_gpu: dict[int, set[str]] = {}
        for p in clients:
            by_gpu.setdefault(p.gpu, set()).add(owner_name(assignments, p.info))
        shared = {g: s for g, s in by_gpu.items() if len(s) > 1}
        if shared:
            for g, s in sorted(shared.items()):
                yield self.failed(
                    f"gpu{g}: MPS clients of {', '.join(sorted(s))} share a server: one client's fatal fault "
                    "ends them all",
                    resource=gpu_uuid(ctx, g),
                    evidence=ev,
                )
            return
        yield self.passed(
            f"MPS is running ({len(daemons)} daemon process(es)); each GPU's clients belong to one service",
            evidence=ev,
        )


_VIS_VARS = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def _environ(ctx: CheckContext, pid: int) -> dict[str, str] | None:
    text = ctx.system.read_text(f"/proc/{pid}/environ", 1 << 18)
    if text is None:
        return None
    out = {}
    for item in text.split("\0"):
        k, sep, v = item.partition("=")
        if sep and k in (*_VIS_VARS, "CUDA_DEVICE_ORDER"):
            out[k] = v
    return out


class VisibleDevices(GpuCheck):
    """``CUDA_VISIBLE_DEVICES`` / ``NVIDIA_VISIBLE_DEVICES`` of model services against their assignment."""

    meta = CheckMeta(
        id="gpu.visible-devices",
        title="Model services see only the GPUs assigned to them",
        severity=Severity.MEDIUM,
        rationale=(
            "A service that sees every GPU can open contexts on its neighbours' GPUs; pinning the visible "
            "devices is the first layer of GPU assignment."
        ),
        remediation=(
            "Set NVIDIA_VISIBLE_DEVICES (containers) or CUDA_VISIBLE_DEVICES with UUIDs of the assigned GPU "
            "or MIG instance in the service's unit or container spec."
        ),
        controls=_ISOLATION_CONTROLS,
        timeout_s=120.0,  # waits for the process inventory the alignment checks build
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        assignments = ctx.config.settings.gpu.assignments
        if not assignments:
            yield self.skipped("no [[gpu.assignments]] configured: nothing to compare visible devices with")
            return
        count = gpu_count(ctx)
        host = [gpu_uuid(ctx, i) for i in range(count)]
        pids = {p.info.pid: p.info for p in gpu_processes(ctx)}
        pids.update(inventory(ctx).processes)
        seen_services: set[str] = set()
        for pid, info in sorted(pids.items()):
            mine = [a for a in assignments if identifies(a, info)]
            if not mine:
                continue
            seen_services.update(a.service for a in mine)
            env = _environ(ctx, pid)
            who = f"pid {pid} ({info.exe or info.comm}) of service {mine[0].service}"
            ev: dict[str, Any] = {"process": info.evidence(), "environ": env}
            if env is None:
                yield self.skipped(
                    f"{who}: environment unreadable (run as root)", resource=str(pid), evidence=ev
                )
                continue
            yield self._judge(who, str(pid), env, mine, host, ev)
        # Services not running yet (before go-live): what their systemd unit would give them.
        for a in assignments:
            if a.service in seen_services or not a.unit:
                continue
            r = ctx.system.run(["systemctl", "show", "--property=Environment", "--value", a.unit], 10.0)
            if not r.ok:
                continue
            seen_services.add(a.service)
            env = _unit_environment(r.stdout)
            who = f"unit {a.unit} of service {a.service} (not running)"
            yield self._judge(who, a.unit, env, [a], host, {"unit": a.unit, "environ": env})
        if not seen_services:
            yield self.skipped(
                "no running process or systemd unit of an assigned service", evidence={"processes": len(pids)}
            )

    def _judge(
        self,
        who: str,
        resource: str,
        env: dict[str, str],
        mine: list[GpuAssignment],
        host: list[str],
        ev: dict[str, Any],
    ) -> Finding:
        allowed = set().union(*(allowed_refs(a) for a in mine))
        allowed_uuids = {host[int(r)] if r.isdigit() and int(r) < len(host) else r for r in allowed}
        exposed, problems = _exposed(env, host)
        ev = {**ev, "assigned": sorted(allowed), "visible": sorted(exposed)}
        extra = sorted(u for u in exposed if not any(_same_device(u, a) for a in allowed_uuids))
        if extra:
            return self.failed(
                f"{who} can see {', '.join(extra)}, which is not assigned to it",
                resource=resource,
                evidence=ev,
            )
        if problems:
            return self.warned(f"{who}: {'; '.join(problems)}", resource=resource, evidence=ev)
        return self.passed(f"{who} sees only its assigned GPU(s)", resource=resource, evidence=ev)


def _same_device(a: str, b: str) -> bool:
    """Equal, or one a UUID prefix of the other (CUDA accepts ``GPU-713c9a48`` for the whole UUID)."""
    if a == b:
        return True
    short = min(len(a), len(b))
    return short >= 8 and (a.startswith(b) or b.startswith(a))


def _unit_environment(text: str) -> dict[str, str]:
    """``systemctl show --property=Environment --value`` output (space-separated, shell-quoted) as a dict."""
    out: dict[str, str] = {}
    try:
        items = shlex.split(text)
    except ValueError:
        items = text.split()
    for item in items:
        k, sep, v = item.partition("=")
        if sep and k in (*_VIS_VARS, "CUDA_DEVICE_ORDER"):
            out[k] = v
    return out


def _exposed(env: dict[str, str], host: list[str]) -> tuple[set[str], list[str]]:
    """The host GPUs (UUIDs, or MIG UUIDs) a process's environment exposes, and caveats."""
    problems: list[str] = []
    visible = list(host)
    nv = env.get("NVIDIA_VISIBLE_DEVICES")
    if nv is not None:
        v = nv.strip().lower()
        if v in ("none", "void", ""):
            visible = []
        elif v != "all":
            visible = [_ref(x, host) for x in nv.split(",") if x.strip()]
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        items = [x.strip() for x in cuda.split(",")]
        picked = []
        for x in items:
            if not x:
                break
            if x.lstrip("-").isdigit():
                n = int(x)
                if n < 0 or n >= len(visible):
                    break  # CUDA stops at the first invalid entry
                if len(visible) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
                    problems.append(
                        "CUDA_VISIBLE_DEVICES uses indexes without CUDA_DEVICE_ORDER=PCI_BUS_ID: CUDA may "
                        "number GPUs differently from nvidia-smi"
                    )
                picked.append(visible[n])
            else:
                picked.append(x)
        visible = picked
    elif nv is None and len(host) > 1:
        problems.append(
            "neither CUDA_VISIBLE_DEVICES nor NVIDIA_VISIBLE_DEVICES is set: every GPU is visible"
        )
    return set(visible), sorted(set(problems))


def _ref(x: str, host: list[str]) -> str:
    x = x.strip()
    return host[int(x)] if x.isdigit() and int(x) < len(host) else x


class DeviceNodes(GpuCheck):
    """Permissions of ``/dev/nvidia*`` and ``/dev/nvidia-caps/*``."""

    needs_driver = False
    meta = CheckMeta(
        id="gpu.device-nodes",
        title="NVIDIA device nodes are not world-writable",
        severity=Severity.MEDIUM,
        rationale=(
            "World read-write /dev/nvidia* (the driver's default 0666) lets every local account use the GPUs "
            "and the driver's attack surface; access should be limited to the model services' group."
        ),
        remediation=(
            "Set the nvidia module options NVreg_DeviceFileMode=0660 and NVreg_DeviceFileGID=<gpu group> "
            "(modprobe.d), reload the module, and add only the services to that group."
        ),
        controls=("pci-dss-4.0:7.2.1", "hipaa:164.312(a)(1)", "mlps-2.0-l3:8.1.4.2", "iec-62443-3-3:SR 2.1"),
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        sys_ = ctx.system
        paths = [*sys_.glob("/dev/nvidia*"), *sys_.glob("/dev/nvidia-caps/*")]
        nodes = []
        for p in sorted(set(paths)):
            st = sys_.stat(p)
            if st is None or st.is_dir or st.is_link:
                continue
            nodes.append((p, st))
        if not nodes:
            yield self.skipped("no NVIDIA device nodes (/dev/nvidia*): no NVIDIA driver")
            return
        params = _driver_params(ctx)
        ev_params = {
            k: params[k] for k in ("DeviceFileMode", "DeviceFileUID", "DeviceFileGID") if k in params
        }
        for p, st in nodes:
            ev = {
                "path": p,
                "mode": f"{st.perms:04o}",
                "uid": st.uid,
                "gid": st.gid,
                "driver_params": ev_params,
            }
            if st.perms & 0o002:
                yield self.failed(f"{p} is world-writable (mode {st.perms:04o})", resource=p, evidence=ev)
            elif "nvidia-caps" in p and st.perms & 0o004 and p.endswith("cap1"):
                yield self.warned(
                    f"{p} (MIG configuration capability) is world-readable (mode {st.perms:04o})",
                    resource=p,
                    evidence=ev,
                    severity=Severity.LOW,
                )
            else:
                yield self.passed(f"{p} mode {st.perms:04o}", resource=p, evidence=ev)


def _driver_params(ctx: CheckContext) -> dict[str, str]:
    def compute() -> dict[str, str]:
        text = ctx.system.read_text("/proc/driver/nvidia/params", 65536)
        out: dict[str, str] = {}
        if text is None:
            return out
        for line in text.splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k.strip()] = v.strip()
        return out

    return cached(ctx, "driver_params", compute)


class ProfilingAdminOnly(GpuCheck):
    """``RmProfilingAdminOnly`` in the driver's parameters."""

    needs_driver = False
    meta = CheckMeta(
        id="gpu.profiling-admin-only",
        title="GPU performance counters are restricted to administrators",
        severity=Severity.MEDIUM,
        rationale=(
            "Unrestricted GPU performance counters let an unprivileged user infer other tenants' activity "
            "(a side channel, CVE-2018-6260); NVIDIA restricts them with RmProfilingAdminOnly=1."
        ),
        remediation="Set options nvidia NVreg_RestrictProfilingToAdminUsers=1 in modprobe.d and reload the module.",
        controls=_ISOLATION_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        params = _driver_params(ctx)
        if not params:
            yield self.skipped("/proc/driver/nvidia/params is missing: no NVIDIA kernel module loaded")
            return
        value = params.get("RmProfilingAdminOnly")
        ev = {"RmProfilingAdminOnly": value, "source": "/proc/driver/nvidia/params"}
        if value is None:
            yield self.warned(
                "RmProfilingAdminOnly is not reported by this driver", evidence=ev, severity=Severity.LOW
            )
        elif value.strip() == "1":
            yield self.passed(
                "GPU profiling is restricted to administrators (RmProfilingAdminOnly: 1)", evidence=ev
            )
        else:
            yield self.failed(
                f"GPU profiling is open to every user (RmProfilingAdminOnly: {value})", evidence=ev
            )


CONTAINER_TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"


class ContainerToolkit(GpuCheck):
    """The NVIDIA Container Toolkit's config, where it is installed."""

    needs_driver = False
    meta = CheckMeta(
        id="gpu.container-toolkit",
        title="The NVIDIA Container Toolkit keeps containers to the GPUs they are given",
        severity=Severity.MEDIUM,
        rationale=(
            "With no-cgroups the device cgroup is not set and a container can open every GPU; with "
            "accept-nvidia-visible-devices-envvar-when-unprivileged any unprivileged container picks its "
            "GPUs with an environment variable; an ldconfig path without '@' runs the image's ldconfig."
        ),
        remediation=(
            f"In {CONTAINER_TOOLKIT_CONFIG}: no-cgroups = false, "
            "accept-nvidia-visible-devices-envvar-when-unprivileged = false with volume-mount device requests, "
            'ldconfig = "@/sbin/ldconfig".'
        ),
        controls=_ISOLATION_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        text = ctx.system.read_text(CONTAINER_TOOLKIT_CONFIG, 1 << 20)
        if text is None:
            yield self.skipped(
                f"NVIDIA Container Toolkit not configured here ({CONTAINER_TOOLKIT_CONFIG} absent)"
            )
            return
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            yield self.failed(
                f"{CONTAINER_TOOLKIT_CONFIG} cannot be parsed: {exc}", resource=CONTAINER_TOOLKIT_CONFIG
            )
            return
        cli = doc.get("nvidia-container-cli", {}) if isinstance(doc.get("nvidia-container-cli"), dict) else {}
        envvar = doc.get("accept-nvidia-visible-devices-envvar-when-unprivileged", True)
        ldconfig = str(cli.get("ldconfig", "@/sbin/ldconfig"))
        ev = {
            "file": CONTAINER_TOOLKIT_CONFIG,
            "no-cgroups": cli.get("no-cgroups", False),
            "accept-nvidia-visible-devices-envvar-when-unprivileged": envvar,
            "ldconfig": ldconfig,
        }
        problems_fail = []
        problems_warn = []
        if cli.get("no-cgroups") is True:
            problems_fail.append(
                "no-cgroups = true: containers are not limited to their GPUs by the device cgroup"
            )
        if not ldconfig.startswith("@"):
            problems_fail.append(
                f"ldconfig = {ldconfig!r} runs the container image's ldconfig, not the host's"
            )
        if envvar is not False:
            problems_warn.append(
                "accept-nvidia-visible-devices-envvar-when-unprivileged is "
                + (
                    "unset (default true)"
                    if "accept-nvidia-visible-devices-envvar-when-unprivileged" not in doc
                    else "true"
                )
                + ": any unprivileged container chooses its GPUs with NVIDIA_VISIBLE_DEVICES"
            )
        if problems_fail:
            yield self.failed(
                "; ".join(problems_fail + problems_warn), resource=CONTAINER_TOOLKIT_CONFIG, evidence=ev
            )
        elif problems_warn:
            yield self.warned("; ".join(problems_warn), resource=CONTAINER_TOOLKIT_CONFIG, evidence=ev)
        else:
            yield self.passed("NVIDIA Container Toolkit config keeps containers to their GPUs", evidence=ev)
