"""Model integrity: ``edgesec model sign|verify|scan`` and the ``models`` check family."""

from __future__ import annotations

from edgesec.checks.interface import Check

CHECKS: list[type[Check]] = []
