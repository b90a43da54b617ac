"""Shipped data (``policies/``): found inside the wheel, or beside the package in a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import edgesec


def policies_root() -> Path:
    """The shipped ``policies/`` directory (casbin models and policies, profiles, reference tables).

    In a built wheel it is ``edgesec/_policies`` (hatch force-include); in an editable install or a
    source checkout it is the repository's top-level ``policies/``.
    """
    packaged = resources.files(edgesec) / "_policies"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(edgesec.__file__).resolve().parent.parent / "policies"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("edgesec's shipped policies/ directory is missing from this installation")


def policy_file(*parts: str) -> Path:
    return policies_root().joinpath(*parts)
