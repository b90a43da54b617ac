"""Report renderers: pure functions of the canonical result (``render(result, lang) -> str``).

Only the CLI writes their output to files. Each format has a default file name used when ``--out`` is a
directory or absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Renderer:
    """A report format: its renderer and its default file name."""

    name: str
    filename: str
    render: Callable[[Mapping[str, Any], str], str]


def renderers() -> dict[str, Renderer]:
    from edgesec.checks.reports import html, junit, prom, sarif
    from edgesec.checks.reports import json_ as json_report

    return {
        "html": Renderer("html", "edgesec-report.html", html.render),
        "json": Renderer("json", "edgesec-result.json", json_report.render),
        "sarif": Renderer("sarif", "edgesec-report.sarif", sarif.render),
        "junit": Renderer("junit", "edgesec-report.junit.xml", junit.render),
        "prom": Renderer("prom", "edgesec-report.prom", prom.render),
    }


FORMATS: tuple[str, ...] = ("html", "json", "sarif", "junit", "prom")
