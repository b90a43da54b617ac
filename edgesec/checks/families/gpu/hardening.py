"""GPU driver and host hardening: device node modes, profiling counters, NVIDIA Container Toolkit settings."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable

from edgesec.checks.families.gpu._base import GpuCheck
from edgesec.checks.families.gpu.discovery import cached
from edgesec.checks.families.gpu.processes import ISOLATION_CONTROLS
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity


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
        controls=ISOLATION_CONTROLS,
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
        controls=ISOLATION_CONTROLS,
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
