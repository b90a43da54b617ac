"""Where checks come from: the built-in families and the ``edgesec.checks`` entry-point group.

Each built-in family module exposes ``CHECKS: list[type[Check]]``. A site's own checks are
published by a package under the entry-point group ``edgesec.checks`` (each entry point names a module
with ``CHECKS`` or a single ``Check`` subclass). The runner part owns the loading logic.
"""

from __future__ import annotations

BUILTIN_FAMILY_MODULES: tuple[str, ...] = (
    "edgesec.checks.egress",
    "edgesec.checks.host",
    "edgesec.checks.pki",
    "edgesec.checks.gpu",
    "edgesec.checks.models",
)
ENTRY_POINT_GROUP = "edgesec.checks"
