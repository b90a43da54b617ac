"""GPU isolation, the process model: who may use which GPU (the allowlist, NVML's process records) and the
``gpu.processes`` check.  The other isolation checks (sharing, visibility, hardening) build on it.

The site's allowlist is ``[[gpu.assignments]]`` in ``edgesec.toml``: a service (matched by user,
executable and/or systemd unit; by its name against unit, command or executable when none is given) and
the GPUs it may use (index, GPU UUID or MIG UUID).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgesec.checks.families.gpu._base import GpuCheck, gpus
from edgesec.checks.families.gpu.discovery import ProcInfo, cached, gpu_count, nvml_or, proc_info
from edgesec.checks.families.gpu.nvml import NvmlError
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity
from edgesec.checks.settings import GpuAssignment

ISOLATION_CONTROLS = (
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
        controls=ISOLATION_CONTROLS,
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
