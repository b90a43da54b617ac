"""The JSON report: the canonical result itself, with sorted keys (byte-stable for signing and diffing)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def canonical(result: Mapping[str, Any]) -> str:
    return json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def render(result: Mapping[str, Any], lang: str = "en") -> str:
    return canonical(result)
