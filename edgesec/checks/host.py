"""The ``host`` check family."""

from __future__ import annotations

from edgesec.checks.interface import Check

CHECKS: list[type[Check]] = []
