"""GPU visibility: which GPUs a service's environment (``*_VISIBLE_DEVICES``) exposes against its assignment."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from edgesec.checks.families.gpu._base import GpuCheck
from edgesec.checks.families.gpu.discovery import gpu_count, gpu_uuid, inventory
from edgesec.checks.families.gpu.processes import ISOLATION_CONTROLS, allowed_refs, gpu_processes, identifies
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity
from edgesec.checks.settings import GpuAssignment

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
        controls=ISOLATION_CONTROLS,
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
        exposed, problems = exposed_devices(env, host)
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


def exposed_devices(env: dict[str, str], host: list[str]) -> tuple[set[str], list[str]]:
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
