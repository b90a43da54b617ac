"""Waivers: a named person accepts a failing check (optionally for one resource) until a date.

A waiver file is JSON (``{"version": 1, "waivers": [...]}``) or TOML (``[[waivers]]`` tables); ``edgesec
waiver add`` keeps ``<home>/checks/waivers.json``. A waiver turns a FAIL or WARN into WAIVED while it is in
force; from its expiry date on it waives nothing and is reported as expired. Granting a waiver and a run
that finds one expired are audit events.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import secrets
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgesec._fs import atomic_write, ensure_private_dir, locked, read_input_file
from edgesec.errors import InputError

WAIVERS_VERSION = 1


class Waiver(BaseModel):
    """One accepted risk. ``expires`` is the first day it no longer applies (UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    check: str = Field(min_length=3, max_length=200)
    resource: str | None = Field(None, max_length=1000, description="exact resource or fnmatch pattern")
    justification: str = Field(min_length=10, max_length=4000)
    owner: str = Field(min_length=1, max_length=200)
    approver: str = Field(min_length=1, max_length=200)
    expires: dt.date
    granted: dt.datetime | None = None

    def state(self, today: dt.date) -> str:
        return "expired" if today >= self.expires else "active"

    def covers(self, check_id: str, resource: str | None) -> bool:
        if self.check != check_id:
            return False
        if self.resource is None:
            return True
        return resource is not None and (
            resource == self.resource or fnmatch.fnmatchcase(resource, self.resource)
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse_waivers(raw: bytes, source: str) -> list[Waiver]:
    """Parse a waiver file (JSON or TOML); every problem is one InputError line naming the entry."""
    text = raw.decode("utf-8", errors="replace")
    doc: Any
    try:
        doc = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"waiver file {source}: cannot parse: {exc}") from None
    items = doc.get("waivers") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise InputError(f"waiver file {source}: expected a 'waivers' list")
    out: list[Waiver] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            w = Waiver.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise InputError(f"waiver file {source}: waiver #{i + 1}: {loc}: {err['msg']}") from None
        if w.id in seen:
            raise InputError(f"waiver file {source}: duplicate waiver id {w.id}")
        seen.add(w.id)
        out.append(w)
    return out


def load_waivers(path: Path) -> list[Waiver]:
    return parse_waivers(read_input_file(path, what="waiver file"), str(path))


def store_path(home: Path) -> Path:
    return home / "checks" / "waivers.json"


def load_store(home: Path) -> list[Waiver]:
    p = store_path(home)
    return load_waivers(p) if p.exists() else []


def add_waiver(
    home: Path,
    *,
    check: str,
    resource: str | None,
    justification: str,
    owner: str,
    approver: str,
    expires: dt.date,
    now: dt.datetime,
) -> Waiver:
    """Append a waiver to the home's store (locked, atomic) and return it."""
    if expires <= now.date():
        raise InputError(f"expiry {expires.isoformat()} is not in the future")
    d = ensure_private_dir(home / "checks")
    with locked(d / "waivers.lock", timeout=30):
        existing = load_store(home)
        try:
            w = Waiver(
                id=f"w-{now:%Y%m%d}-{secrets.token_hex(3)}",
                check=check,
                resource=resource,
                justification=justification,
                owner=owner,
                approver=approver,
                expires=expires,
                granted=now.replace(microsecond=0),
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(f"waiver {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
        doc = {"version": WAIVERS_VERSION, "waivers": [x.to_json() for x in [*existing, w]]}
        atomic_write(store_path(home), json.dumps(doc, indent=2, sort_keys=True) + "\n", mode=0o600)
    return w
