"""What every gpu check shares: SKIP without a driver, per-GPU iteration, profile parameters."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from edgesec.checks.families.gpu.discovery import driver, gpu_count, gpu_uuid
from edgesec.checks.families.gpu.nvml import NvmlError, NvmlUnavailable
from edgesec.checks.interface import Check, CheckContext, Finding


class GpuCheck(Check):
    """A gpu check: turns "no NVIDIA driver" into one SKIP finding with the reason, never an ERROR."""

    needs_driver: ClassVar[bool] = True

    def run(self, ctx: CheckContext) -> Iterable[Finding]:
        try:
            if self.needs_driver:
                driver(ctx)
            return list(self.check(ctx))
        except NvmlUnavailable as exc:
            return [self.skipped(exc.message, evidence={"nvml": exc.message})]
        except NvmlError as exc:
            # A lost GPU is a finding about the GPU, not a broken check; missing rights are a reason to skip.
            if exc.name == "GpuIsLost":
                return [
                    self.failed(
                        f"a GPU is lost (fallen off the bus): {exc.message}", evidence={"nvml": exc.message}
                    )
                ]
            if exc.name == "NoPermission":
                return [self.skipped(f"NVML refused the query (run as root): {exc.message}")]
            raise

    @abstractmethod
    def check(self, ctx: CheckContext) -> Iterable[Finding]: ...

    def param(self, ctx: CheckContext, name: str, default: Any) -> Any:
        """A profile parameter: the check's own (``[checks."gpu.mig"]``), else the family's (``[checks.gpu]``)."""
        return ctx.param(self.meta.id, name, default)


def gpus(ctx: CheckContext) -> Iterator[tuple[int, str, str]]:
    """``(index, uuid, resource label)`` of every GPU NVML sees."""
    assert ctx.nvml is not None
    for i in range(gpu_count(ctx)):
        uuid = gpu_uuid(ctx, i)
        try:
            name = str(ctx.nvml.call("nvmlDeviceGetName", i))
        except NvmlError:
            name = "GPU"
        yield i, uuid, f"gpu{i} {name} {uuid}"
