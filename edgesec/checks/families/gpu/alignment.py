"""Driver / CUDA / cuDNN alignment: would the model servers start, and with every feature?

Verdicts (facts in ``policies/reference``):

* FAIL -- the driver is below the minor-version-compatibility floor of a CUDA major in use or installed
  (the runtime cannot initialise), or a cuDNN build targets another CUDA major than the runtime beside it,
  or the driver is below what the documented cuDNN release needs;
* WARN -- the driver is below the exact toolkit's minimum (limited feature set; PTX built by the newer
  toolkit fails to JIT), or several different runtimes are in use;
* driver branch end of life is its own check, judged against the run's clock (FAIL in bank and clinic).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgesec.checks.families.gpu._base import GpuCheck, gpus
from edgesec.checks.families.gpu.discovery import Driver, Found, driver, inventory, nvml_or
from edgesec.checks.families.gpu.reference import Reference, shipped_reference
from edgesec.checks.families.gpu.versions import Version, driver_branch
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity

_CONTROLS = ("pci-dss-4.0:6.3.3", "mlps-2.0-l3:8.1.4.6", "iec-62443-3-3:SR 3.4")


def _row_evidence(row: Any) -> dict[str, Any]:
    return {"source": row.source, "checked": row.checked.isoformat()}


class CudaDriverAlignment(GpuCheck):
    """Every CUDA runtime found (in use or installed) against the driver."""

    meta = CheckMeta(
        id="gpu.cuda-driver",
        title="The NVIDIA driver runs every CUDA runtime in use or installed",
        severity=Severity.HIGH,
        rationale=(
            "A driver below a runtime's minor-version-compatibility floor makes CUDA initialisation fail "
            "when the model server starts; below the toolkit's own minimum, features are limited and PTX "
            "built by that toolkit fails to JIT (cudaErrorUnsupportedPtxVersion)."
        ),
        remediation=(
            "Install a driver at or above the toolkit's minimum (policies/reference/nvidia-cuda.toml), or "
            "rebuild the service against a CUDA release the installed driver supports."
        ),
        controls=_CONTROLS,
        timeout_s=120.0,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        ref = shipped_reference()
        drv = driver(ctx)
        inv = inventory(ctx)
        base = {**drv.evidence(), "notes": inv.notes} if inv.notes else drv.evidence()
        if not inv.runtimes:
            yield self.skipped(
                f"driver {drv.version} (CUDA {drv.cuda}); no CUDA runtime found in toolkits, Python "
                "environments or running processes",
                evidence={**base, "searched": {"sites": inv.sites}},
            )
            return
        for rt in inv.runtimes:
            yield judge_runtime(self, ref, drv, rt, base)
        in_use = sorted({str(r.version.major_minor()) for r in inv.runtimes if r.in_use})
        if len(in_use) > 1:
            yield self.warned(
                f"{len(in_use)} different CUDA runtimes are in use ({', '.join(in_use)}): each needs the "
                "driver to support it, and upgrades must keep all of them working",
                evidence={**base, "runtimes": [r.evidence() for r in inv.runtimes if r.in_use]},
                severity=Severity.MEDIUM,
            )


def judge_runtime(check: GpuCheck, ref: Reference, drv: Driver, rt: Found, base: dict[str, Any]) -> Finding:
    """The verdict on one runtime: FAIL below the compat floor, WARN below the toolkit minimum, else PASS."""
    ev: dict[str, Any] = {**base, "runtime": rt.evidence()}
    label = f"CUDA {rt.version} ({rt.source}: {rt.where})"
    floor = ref.compat_floor(rt.version.major)
    if floor is None:
        return check.warned(
            f"{label}: CUDA {rt.version.major}.x is not in the reference data; cannot judge driver {drv.version}",
            resource=rt.where,
            evidence=ev,
            severity=Severity.MEDIUM,
        )
    ev["compat_floor"] = {"cuda_major": floor.cuda_major, "driver": floor.floor, **_row_evidence(floor)}
    md = ref.min_driver(rt.version)
    if md is not None:
        ev["toolkit_min_driver"] = {
            "cuda": md.row.cuda,
            "driver": str(md.min_driver),
            "exact_row": md.exact,
            **_row_evidence(md.row),
        }
    # A process that loaded cuda-compat's libcuda runs on that user-space driver (forward compatibility).
    effective = drv.version
    compat = rt.compat_version()
    if compat is not None and compat > drv.version:
        effective = compat
        ev["forward_compat"] = {
            "libcuda": rt.compat,
            "version": str(compat),
            "kernel_driver": str(drv.version),
        }
    # At or above the toolkit's own minimum the runtime runs natively, whatever the family floor says
    # (CUDA 11.0.2 on 450.51.05 is below the 11.x compat floor 450.80.02 and still fine).
    native = md is not None and effective >= md.min_driver
    if not native and effective < Version.parse(floor.floor):
        return check.failed(
            f"{label} cannot run on driver {drv.version}: CUDA {rt.version.major}.x needs at least "
            f"{floor.floor} (minor-version compatibility floor)",
            resource=rt.where,
            evidence=ev,
        )
    if md is not None and not native:
        return check.warned(
            f"{label} runs on driver {effective} only through minor-version compatibility: the toolkit "
            f"wants {md.min_driver} (row {md.row.cuda}); features are limited and PTX JIT may fail",
            resource=rt.where,
            evidence=ev,
            severity=Severity.MEDIUM,
        )
    if effective is not drv.version:
        return check.warned(
            f"{label} runs on kernel driver {drv.version} through forward compatibility (cuda-compat "
            f"{effective}): supported only on data-center GPUs, elsewhere CUDA fails with error 804; "
            "cuda-compat must be upgraded with every runtime",
            resource=rt.where,
            evidence=ev,
            severity=Severity.MEDIUM,
        )
    if rt.version.major_minor() > drv.cuda:
        return check.warned(
            f"{label} is newer than the CUDA {drv.cuda} that driver {drv.version} reports",
            resource=rt.where,
            evidence=ev,
            severity=Severity.MEDIUM,
        )
    return check.passed(
        f"{label} runs on driver {drv.version} (supports CUDA {drv.cuda})", resource=rt.where, evidence=ev
    )


class CudnnAlignment(GpuCheck):
    """Every cuDNN found against the CUDA runtimes beside it and the driver."""

    meta = CheckMeta(
        id="gpu.cudnn",
        title="cuDNN builds match the CUDA major in use and the driver",
        severity=Severity.HIGH,
        rationale=(
            "A cuDNN built for another CUDA major than the runtime it is loaded with fails to load or "
            "crashes at the first convolution; a driver below the matrix's floor fails the same way."
        ),
        remediation=(
            "Install the cuDNN package for the CUDA major in use (libcudnn9-cuda-13, nvidia-cudnn-cu12) and "
            "remove the others from the service's library path."
        ),
        controls=_CONTROLS,
        timeout_s=120.0,
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        ref = shipped_reference()
        drv = driver(ctx)
        inv = inventory(ctx)
        if not inv.cudnn:
            yield self.skipped("no cuDNN found (headers, libraries, wheels, running processes)")
            return
        ccs = _compute_capabilities(ctx)
        for c in inv.cudnn:
            yield self._judge(ref, drv, inv.runtimes, c, ccs)

    def _judge(
        self, ref: Reference, drv: Driver, runtimes: list[Found], c: Found, ccs: dict[int, Version]
    ) -> Finding:
        ev: dict[str, Any] = {**drv.evidence(), "cudnn": c.evidence()}
        label = f"cuDNN {c.version} ({c.source}: {c.where})"
        # Runtimes beside it: the same process first, else those in use, else those installed.
        beside = [r for r in runtimes if c.pid is not None and r.pid == c.pid]
        beside = beside or [r for r in runtimes if r.in_use] or runtimes
        ev["runtimes_beside"] = [r.evidence() for r in beside]
        majors = sorted({r.version.major for r in beside})
        if c.cuda_major is None:
            return self.warned(
                f"{label}: its package does not say which CUDA major it targets"
                + (f" (runtimes beside it: CUDA {', '.join(map(str, majors))}.x)" if majors else ""),
                resource=c.where,
                evidence=ev,
                severity=Severity.MEDIUM,
            )
        if majors and c.cuda_major not in majors:
            return self.failed(
                f"{label} is built for CUDA {c.cuda_major} (package {c.package}) but the runtime beside it "
                f"is CUDA {', '.join(str(r.version) for r in beside if r.version.major != c.cuda_major)}",
                resource=c.where,
                evidence=ev,
            )
        match = ref.cudnn_for(c.version, c.cuda_major)
        if match is None:
            return self.warned(
                f"{label}: no documented cuDNN release covers CUDA {c.cuda_major}; the reference data may be old",
                resource=c.where,
                evidence=ev,
                severity=Severity.MEDIUM,
            )
        e = match.entry
        ev["matrix"] = {
            "documented_release": str(match.documented),
            "exact": match.exact,
            "cuda": f"{e.min}-{e.max}",
            "min_driver": e.min_driver,
            **_row_evidence(match.row),
        }
        if not match.exact:
            documented = sorted(Version.parse(r.version) for r in ref.cudnn)
            lower = [v for v in documented if v < c.version]
            upper = [v for v in documented if v > c.version]
            if lower and upper:
                where = f"lies between documented releases {lower[-1]} and {upper[0]}"
            elif lower:
                where = f"is newer than every documented release (the newest is {lower[-1]})"
            else:
                where = f"is older than every documented release (the oldest is {upper[0]})"
            ev["matrix"]["why"] = (
                f"{c.version} {where}; judged by the nearest documented release covering CUDA "
                f"{c.cuda_major}: {match.documented}"
            )
        need = Version.parse(e.min_driver)
        same_major = [r for r in beside if r.version.major == c.cuda_major]
        if e.driver_from and any(r.version >= Version.parse(e.driver_from.cuda) for r in same_major):
            need = max(need, Version.parse(e.driver_from.min_driver))
        judged = f"judged by cuDNN {match.documented}" + ("" if match.exact else " (nearest documented)")
        if drv.version < need:
            return self.failed(
                f"{label} needs driver >= {need} for CUDA {c.cuda_major} ({judged}); driver is {drv.version}",
                resource=c.where,
                evidence=ev,
            )
        if e.min_compute_capability:
            low = {i: str(v) for i, v in ccs.items() if v < Version.parse(e.min_compute_capability)}
            if low:
                ev["compute_capability"] = {str(i): str(v) for i, v in ccs.items()}
                return self.failed(
                    f"{label} for CUDA {c.cuda_major} needs compute capability >= {e.min_compute_capability}; "
                    f"GPU(s) {', '.join(f'{i} ({v})' for i, v in low.items())} are older ({judged})",
                    resource=c.where,
                    evidence=ev,
                )
        newer = [r for r in same_major if r.version.major_minor() > Version.parse(e.max)]
        if newer:
            return self.warned(
                f"{label}: runtime CUDA {newer[0].version} is newer than the {e.min}-{e.max} range {judged}",
                resource=c.where,
                evidence=ev,
                severity=Severity.LOW,
            )
        return self.passed(
            f"{label} targets CUDA {c.cuda_major} like the runtime beside it; driver {drv.version} >= {need} "
            f"({judged})",
            resource=c.where,
            evidence=ev,
        )


def _compute_capabilities(ctx: CheckContext) -> dict[int, Version]:
    out = {}
    for i, _uuid, _label in gpus(ctx):
        cc = nvml_or(ctx, "nvmlDeviceGetCudaComputeCapability", i)
        if isinstance(cc, list) and len(cc) == 2:
            out[i] = Version((int(cc[0]), int(cc[1])), f"{cc[0]}.{cc[1]}")
    return out


class DriverBranchEol(GpuCheck):
    """The driver's branch against NVIDIA's end-of-life dates, on the run's clock."""

    meta = CheckMeta(
        id="gpu.driver-eol",
        title="The NVIDIA driver branch is not past end of life",
        severity=Severity.HIGH,
        rationale=(
            "A driver branch past end of life gets no security fixes; NVIDIA's GPU driver bulletins "
            "regularly fix privilege escalation in the kernel module."
        ),
        remediation="Move to a supported branch (an LTSB such as R580) before the current one ends.",
        controls=("pci-dss-4.0:6.3.3", "hipaa:164.308(a)(5)(ii)(B)", "mlps-2.0-l3:8.1.4.6"),
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        ref = shipped_reference()
        drv = driver(ctx)
        today = ctx.now().date()
        branch = driver_branch(drv.version)
        row = ref.branch(branch)
        ev: dict[str, Any] = {**drv.evidence(), "branch": f"R{branch}", "judged_on": today.isoformat()}
        if row is None:
            yield self.warned(
                f"driver {drv.version}: branch R{branch} is not in the reference data; its end of life is unknown",
                evidence={**ev, "known_branches": [f"R{b.branch}" for b in ref.branches]},
                severity=Severity.LOW,
            )
            return
        ev.update({"kind": row.kind, "eol": row.eol, **_row_evidence(row)})
        end = row.eol_date()
        fail = bool(self.param(ctx, "fail_past_eol", False))
        if today >= end:
            msg = f"driver {drv.version}: branch R{branch} ({row.kind}) reached end of life at the end of {row.eol}"
            if fail:
                yield self.failed(msg, evidence=ev)
            else:
                yield self.warned(msg, evidence=ev)
            return
        warn_days = int(self.param(ctx, "warn_days", 90))
        left = (end - today).days
        if left <= warn_days:
            yield self.warned(
                f"driver {drv.version}: branch R{branch} ends in {left} days (end of {row.eol})",
                evidence={**ev, "days_left": left},
                severity=Severity.MEDIUM,
            )
            return
        yield self.passed(
            f"driver {drv.version}: branch R{branch} ({row.kind}) is supported until the end of {row.eol}",
            evidence={**ev, "days_left": left},
        )


class ReferenceData(GpuCheck):
    """The age of the reference tables the other gpu checks judge by."""

    needs_driver = False
    meta = CheckMeta(
        id="gpu.reference-data",
        title="The NVIDIA reference data is less than a year old",
        severity=Severity.LOW,
        rationale=(
            "Driver minimums, cuDNN support and branch end-of-life dates change with every release; "
            "verdicts from stale tables miss new requirements and new end-of-life dates."
        ),
        remediation="Update policies/reference/*.toml from NVIDIA's release notes and lifecycle pages.",
        housekeeping=True,  # the age of edgesec's own tables says nothing about the site's patches
    )

    def check(self, ctx: CheckContext) -> Iterable[Finding]:
        ref = shipped_reference()
        today = ctx.now().date()
        newest = ref.newest_check()
        max_age = int(self.param(ctx, "max_age_days", 365))
        age = (today - newest).days
        unconfirmed = [r.cuda for r in ref.toolkit if not r.confirmed]
        ev = {
            "files": list(ref.files),
            "newest_checked": newest.isoformat(),
            "oldest_checked": ref.oldest_check().isoformat(),
            "age_days": age,
            "rows": len(ref.rows()),
            "unconfirmed_rows_not_used": unconfirmed,
        }
        if age > max_age:
            yield self.warned(
                f"the NVIDIA reference data was last checked {newest} ({age} days ago, more than {max_age}): "
                "gpu verdicts may miss newer requirements",
                evidence=ev,
            )
            return
        yield self.passed(f"the NVIDIA reference data was checked {newest} ({age} days ago)", evidence=ev)
