"""Run history: every audit result is kept under ``<home>/checks/history/<run-id>.json``.

Run ids sort by the wall-clock time they were made, to the microsecond (``20261129T090000.123456Z-1a2b3c``;
a replayed run's clock is frozen, so the id never uses it), and the previous run is the last one stored.
Writes are atomic and exclusive (a result is never replaced); the oldest runs beyond ``history_keep`` are
pruned after a new one is stored.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

from edgesec._fs import atomic_write, ensure_private_dir, read_input_file
from edgesec.errors import InputError


def history_dir(home: Path) -> Path:
    return home / "checks" / "history"


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(3)}"


def runs(home: Path) -> list[Path]:
    d = history_dir(home)
    return sorted(d.glob("*.json")) if d.is_dir() else []


def load_result(path: Path) -> dict[str, Any]:
    """Read a stored or handed-in result; one InputError line if it is not an edgesec result."""
    raw = read_input_file(path, what="result")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"result {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "edgesec.audit-result":
        raise InputError(f"{path} is not an edgesec audit result (no schema 'edgesec.audit-result')")
    if not isinstance(doc.get("checks"), list):
        raise InputError(f"result {path} has no checks list")
    return doc


def previous(home: Path, before: str) -> dict[str, Any] | None:
    """The newest stored run older than ``before`` (a run id), if any readable one exists."""
    for p in reversed(runs(home)):
        if p.stem < before:
            try:
                return load_result(p)
            except InputError:
                continue  # a damaged history file is skipped, never fatal to a new audit
    return None


def store(home: Path, result: dict[str, Any], keep: int) -> Path:
    d = ensure_private_dir(history_dir(home))
    path = d / f"{result['run']['id']}.json"
    atomic_write(path, json.dumps(result, indent=1, sort_keys=True) + "\n", mode=0o600, exclusive=True)
    old = runs(home)
    for p in old[: max(0, len(old) - keep)]:
        p.unlink(missing_ok=True)
    return path
