"""GPU health: ECC, uncorrected errors, row remapping / retired pages, Xid errors, persistence, DCGM."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from edgesec.checks.families.gpu._base import GpuCheck, gpus
from edgesec.checks.families.gpu.discovery import cached, nvml_or
from edgesec.checks.families.gpu.nvml import (
    NVML_AGGREGATE_ECC,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    NVML_VOLATILE_ECC,
)
from edgesec.checks.families.gpu.processes import all_comms
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity

_HEALTH_CONTROLS = ("pci-dss-4.0:10.7.2", "iec-62443-3-3:SR 6.2")


class EccMode(GpuCheck):
    """ECC enabled on every GPU that has it."""

    meta = CheckMeta(
        id="gpu.ecc",
        title="ECC is enabled on every GPU",
        severity=Severity.MEDIUM,
        rationale="Without ECC, memory bit flips silently corrupt model weights and results.",
        remediation="nvidia-smi -i N -e 1, then reset the GPU or reboot.",
        controls=_HEALTH_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        for i, uuid, label in gpus(ctx):
            v = nvml_or(ctx, "nvmlDeviceGetEccMode", i)
            if not isinstance(v, list) or len(v) != 2:
                yield self.skipped(f"{label}: the GPU has no ECC", resource=uuid)
                continue
            cur, pend = int(v[0]), int(v[1])
            ev = {"ecc_mode": {"current": cur, "pending": pend}}
            if cur != 1:
                yield self.failed(
                    f"{label}: ECC is off" + (" (on after reset)" if pend == 1 else ""),
                    resource=uuid,
                    evidence=ev,
                )
            elif pend != 1:
                yield self.warned(
                    f"{label}: ECC is on but will be off after reset", resource=uuid, evidence=ev
                )
            else:
                yield self.passed(f"{label}: ECC is on", resource=uuid, evidence=ev)


class EccErrors(GpuCheck):
    """Volatile uncorrected ECC errors since the last driver load."""

    meta = CheckMeta(
        id="gpu.ecc-errors",
        title="No uncorrected ECC errors since the driver loaded",
        severity=Severity.HIGH,
        rationale="An uncorrected ECC error means data on the GPU was lost; the process that hit it was killed.",
        remediation="Drain the GPU, reset it, and check remapped rows; replace it if errors recur.",
        controls=_HEALTH_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        for i, uuid, label in gpus(ctx):
            vol = nvml_or(
                ctx, "nvmlDeviceGetTotalEccErrors", i, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC
            )
            agg = nvml_or(
                ctx, "nvmlDeviceGetTotalEccErrors", i, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_AGGREGATE_ECC
            )
            ev = {"volatile_uncorrected": vol, "aggregate_uncorrected": agg}
            if vol is None:
                yield self.skipped(f"{label}: ECC error counters not available", resource=uuid, evidence=ev)
            elif int(vol) > 0:
                yield self.failed(
                    f"{label}: {vol} uncorrected ECC error(s) since the driver loaded",
                    resource=uuid,
                    evidence=ev,
                )
            else:
                yield self.passed(
                    f"{label}: no uncorrected ECC errors since the driver loaded (lifetime: {agg})",
                    resource=uuid,
                    evidence=ev,
                )


class MemoryRemap(GpuCheck):
    """Pending row remaps (Ampere and later) or pending page retirement (older GPUs)."""

    meta = CheckMeta(
        id="gpu.memory-remap",
        title="No pending row remaps or page retirements",
        severity=Severity.HIGH,
        rationale=(
            "A pending row remap or page retirement takes effect only after a GPU reset; until then the "
            "faulty memory stays in use. A remapping failure means the GPU has run out of spare rows."
        ),
        remediation="Drain and reset the GPU to apply pending remaps; replace it after a remapping failure.",
        controls=_HEALTH_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        for i, uuid, label in gpus(ctx):
            rows = nvml_or(ctx, "nvmlDeviceGetRemappedRows", i)
            # Asked on every GPU: Ampere and later answer NotSupported, which the evidence records.
            pend = nvml_or(ctx, "nvmlDeviceGetRetiredPagesPendingStatus", i)
            if isinstance(rows, list) and len(rows) == 4:
                corr, unc, pending, failure = (int(x) for x in rows)
                ev = {
                    "remapped_rows": {
                        "correctable": corr,
                        "uncorrectable": unc,
                        "pending": pending,
                        "failure": failure,
                    },
                    "retired_pages_pending": "not supported (row remapping replaces it)"
                    if pend is None
                    else pend,
                }
                if failure:
                    yield self.failed(
                        f"{label}: row remapping failed: no spare rows left", resource=uuid, evidence=ev
                    )
                elif pending:
                    yield self.failed(
                        f"{label}: row remap pending: reset the GPU", resource=uuid, evidence=ev
                    )
                else:
                    yield self.passed(
                        f"{label}: no pending row remaps ({corr} correctable, {unc} uncorrectable remapped)",
                        resource=uuid,
                        evidence=ev,
                    )
                continue
            # Pre-Ampere GPUs retire pages instead.
            if pend is None:
                yield self.skipped(
                    f"{label}: neither row remapping nor page retirement is reported", resource=uuid
                )
                continue
            sbe = nvml_or(
                ctx, "nvmlDeviceGetRetiredPages", i, NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
            )
            dbe = nvml_or(
                ctx, "nvmlDeviceGetRetiredPages", i, NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
            )
            ev2: dict[str, Any] = {
                "retired_pages": {
                    "pending": int(pend),
                    "single_bit": len(sbe or []),
                    "double_bit": len(dbe or []),
                }
            }
            if int(pend):
                yield self.failed(
                    f"{label}: page retirement pending: reset the GPU", resource=uuid, evidence=ev2
                )
            else:
                yield self.passed(f"{label}: no pending page retirement", resource=uuid, evidence=ev2)


# Xid codes that point at the hardware or the driver rather than at an application.
# 48 DBE, 61/62 internal microcontroller, 63/64 row remap events, 74 NVLink, 79 fallen off the bus,
# 92 high single-bit rate, 94/95 contained/uncontained ECC, 119/120 GSP, 121 C2C, 140 unrecovered ECC.
HARDWARE_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 121, 140})
_XID_RE = re.compile(r"NVRM: Xid \((?P<dev>[^)]*)\): (?P<xid>\d+),(?P<rest>.*)$", re.MULTILINE)


def kernel_log(ctx: CheckContext) -> tuple[str | None, list[str]]:
    """The kernel log through ``dmesg``, else ``journalctl -k``; and what was tried."""

    def compute() -> tuple[str | None, list[str]]:
        tried: list[str] = []
        for argv in (["dmesg"], ["journalctl", "-k", "-b", "--no-pager", "-q"]):
            r = ctx.system.run(argv, 20.0)
            if r.ok and r.stdout.strip():
                return r.stdout, [*tried, " ".join(argv)]
            tried.append(f"{' '.join(argv)}: exit {r.returncode} {r.stderr.strip()[:120]}")
        return None, tried

    return cached(ctx, "kernel_log", compute)


class XidErrors(GpuCheck):
    """Xid errors the NVIDIA driver logged in the kernel log since boot."""

    needs_driver = False
    meta = CheckMeta(
        id="gpu.xid",
        title="No Xid errors in the kernel log",
        severity=Severity.HIGH,
        rationale=(
            "Xid errors are the driver's report of GPU faults: hardware Xids (79 fallen off the bus, 48/94/95 "
            "ECC, 119/120 GSP) mean a failing GPU; application Xids (13, 31, 43) mean crashing workloads."
        ),
        remediation="Look up each Xid in NVIDIA's Xid catalogue; drain and reset or replace the GPU for hardware Xids.",
        controls=_HEALTH_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        log, tried = kernel_log(ctx)
        if log is None:
            yield self.skipped("the kernel log cannot be read (run as root)", evidence={"tried": tried})
            return
        hits = [
            {"device": m.group("dev"), "xid": int(m.group("xid")), "text": m.group(0).strip()[:300]}
            for m in _XID_RE.finditer(log)
        ]
        ev: dict[str, Any] = {"source": tried[-1], "xids": hits[:50], "count": len(hits)}
        hw = sorted({h["xid"] for h in hits if h["xid"] in HARDWARE_XIDS})
        other = sorted({h["xid"] for h in hits if h["xid"] not in HARDWARE_XIDS})
        if not hits and ctx.system.read_text("/proc/driver/nvidia/version", 4096) is None:
            yield self.skipped(
                "no NVIDIA kernel module loaded (/proc/driver/nvidia/version absent)", evidence=ev
            )
        elif hw:
            yield self.failed(
                f"{len(hits)} Xid error(s) in the kernel log, hardware/driver Xid(s) {', '.join(map(str, hw))}",
                evidence=ev,
            )
        elif other:
            yield self.warned(
                f"{len(hits)} Xid error(s) in the kernel log (application Xid(s) {', '.join(map(str, other))})",
                evidence=ev,
                severity=Severity.MEDIUM,
            )
        else:
            yield self.passed("no Xid errors in the kernel log since boot", evidence=ev)


class PersistenceMode(GpuCheck):
    """Persistence mode (or the persistence daemon) keeps the driver initialised between jobs."""

    meta = CheckMeta(
        id="gpu.persistence",
        title="GPU persistence mode is on",
        severity=Severity.LOW,
        rationale=(
            "Without persistence the driver tears the GPU down when the last client exits: slow first calls, "
            "lost ECC and Xid state between jobs, and monitoring that sees the GPU come and go."
        ),
        remediation="Run nvidia-persistenced (systemctl enable --now nvidia-persistenced).",
        controls=_HEALTH_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        daemon = sorted(pid for pid, c in all_comms(ctx).items() if c == "nvidia-persistenced")
        for i, uuid, label in gpus(ctx):
            v = nvml_or(ctx, "nvmlDeviceGetPersistenceMode", i)
            ev = {"persistence_mode": v, "nvidia_persistenced_pids": daemon}
            if v is None:
                yield self.skipped(f"{label}: persistence mode not reported", resource=uuid, evidence=ev)
            elif int(v) == 1:
                yield self.passed(f"{label}: persistence mode on", resource=uuid, evidence=ev)
            else:
                yield self.warned(f"{label}: persistence mode off", resource=uuid, evidence=ev)


_DCGM_PORT = 9400


def _listeners(ctx: CheckContext, port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = ctx.system.read_text(path, 4 << 20) or ""
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) > 3 and f[3] == "0A":  # LISTEN
                addr, _, p = f[1].rpartition(":")
                try:
                    if int(p, 16) == port:
                        out.append(_addr(addr))
                except ValueError:
                    continue  # not a socket line: the kernel never writes one, a replayed file might
    return sorted(set(out))


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) not in (4, 16):
        raise ValueError(f"not an address: {hexaddr!r}")
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # tcp6: four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DcgmExporter(GpuCheck):
    """A DCGM exporter on loopback serving GPU metrics between audits."""

    meta = CheckMeta(
        id="gpu.dcgm-exporter",
        title="A DCGM exporter on loopback serves GPU metrics",
        severity=Severity.LOW,
        rationale=(
            "ECC errors, Xids and throttling happen between audits; an exporter lets the site's monitoring "
            "see them when they happen. Bound to loopback, it does not expose the host's GPU inventory."
        ),
        remediation=(
            "Run dcgm-exporter with -a 127.0.0.1:9400 and set [gpu] dcgm_exporter_url = "
            '"http://127.0.0.1:9400/metrics".'
        ),
        controls=_HEALTH_CONTROLS,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        url = ctx.config.settings.gpu.dcgm_exporter_url
        listening = _listeners(ctx, _DCGM_PORT)
        ev: dict[str, Any] = {"configured_url": url, f"listening_on_{_DCGM_PORT}": listening}
        if url is None:
            if not listening:
                yield self.warned(
                    f"no DCGM exporter configured or listening on port {_DCGM_PORT}: GPU faults are seen only at audits",
                    evidence=ev,
                )
                return
            exposed = [a for a in listening if not _is_loopback(a)]
            if exposed:
                yield self.warned(
                    f"something listens on port {_DCGM_PORT} beyond loopback ({', '.join(exposed)}); "
                    "not probed: set [gpu] dcgm_exporter_url to a loopback URL",
                    evidence=ev,
                )
                return
            url = f"http://127.0.0.1:{_DCGM_PORT}/metrics"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _is_loopback(parts.hostname):
            yield self.failed(
                f"dcgm_exporter_url {url!r} is not a loopback http(s) URL; refusing to probe it", evidence=ev
            )
            return
        r = ctx.system.run(["curl", "-sS", "--max-time", "5", "--noproxy", "*", url], 10.0)
        metrics = [ln for ln in r.stdout.splitlines() if ln.startswith("DCGM_FI_")]
        ev.update(
            {"url": url, "curl_exit": r.returncode, "dcgm_samples": len(metrics), "sample": metrics[:5]}
        )
        if r.returncode == 127:
            yield self.skipped("curl is not installed: cannot probe the DCGM exporter", evidence=ev)
        elif not r.ok:
            yield self.failed(
                f"the DCGM exporter at {url} does not answer: {r.stderr.strip()[:200]}", evidence=ev
            )
        elif not metrics:
            yield self.failed(f"{url} answers but serves no DCGM_FI_* metrics", evidence=ev)
        else:
            yield self.passed(f"the DCGM exporter at {url} serves {len(metrics)} DCGM samples", evidence=ev)
