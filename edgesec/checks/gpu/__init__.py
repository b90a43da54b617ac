"""The ``gpu`` check family: driver/CUDA/cuDNN alignment, GPU isolation and health."""

from __future__ import annotations

from edgesec.checks.interface import Check

CHECKS: list[type[Check]] = []
