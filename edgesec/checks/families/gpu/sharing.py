"""GPU sharing: MIG instances, compute mode and MPS on GPUs that serve more than one service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgesec.checks.families.gpu._base import GpuCheck, gpus
from edgesec.checks.families.gpu.discovery import gpu_uuid, nvml_or, proc_info
from edgesec.checks.families.gpu.nvml import COMPUTE_MODES
from edgesec.checks.families.gpu.processes import (
    ISOLATION_CONTROLS,
    all_comms,
    gpu_processes,
    mig_devices,
    mig_mode,
    owner_name,
    owners_on,
    services_on,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity


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
        controls=ISOLATION_CONTROLS,
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
        controls=ISOLATION_CONTROLS,
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
        controls=ISOLATION_CONTROLS,
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
