"""The ``gpu`` check family: driver/CUDA/cuDNN alignment, GPU isolation and GPU health.

Checks read NVML through ``ctx.nvml`` (:mod:`edgesec.checks.families.gpu.nvml`: live, recording, replay) and the
host through ``ctx.system``; without an NVIDIA driver every check that needs one SKIPs with the reason.
Reference data (driver minimums, cuDNN matrix, branch end of life) is in ``policies/reference``.
"""

from __future__ import annotations

from edgesec.checks.families.gpu.alignment import (
    CudaDriverAlignment,
    CudnnAlignment,
    DriverBranchEol,
    ReferenceData,
)
from edgesec.checks.families.gpu.hardening import ContainerToolkit, DeviceNodes, ProfilingAdminOnly
from edgesec.checks.families.gpu.health import (
    DcgmExporter,
    EccErrors,
    EccMode,
    MemoryRemap,
    PersistenceMode,
    XidErrors,
)
from edgesec.checks.families.gpu.processes import GpuProcesses
from edgesec.checks.families.gpu.sharing import ComputeMode, MigIsolation, MpsSharing
from edgesec.checks.families.gpu.visibility import VisibleDevices
from edgesec.checks.interface import Check

CHECKS: list[type[Check]] = [
    ReferenceData,
    CudaDriverAlignment,
    CudnnAlignment,
    DriverBranchEol,
    MigIsolation,
    ComputeMode,
    GpuProcesses,
    MpsSharing,
    VisibleDevices,
    DeviceNodes,
    ProfilingAdminOnly,
    ContainerToolkit,
    EccMode,
    EccErrors,
    MemoryRemap,
    XidErrors,
    PersistenceMode,
    DcgmExporter,
]
