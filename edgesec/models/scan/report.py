"""The value types of a scan: one finding, one report, and the one-line error of a malformed header."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgesec.models.hashing import printable

__all__ = ["BLOCKING", "MEANING", "SEVERITIES", "Bad", "ScanFinding", "ScanReport", "printable"]

SEVERITIES = ("info", "low", "medium", "high", "critical")
BLOCKING = ("high", "critical")

MEANING = {
    "critical": "runs code when loaded",
    "high": "blocks: unsafe, unassessed or not allowed",
    "medium": "suspicious, worth a look",
    "low": "informational",
    "info": "informational",
}
"""What each severity means to the person reading a scan (the README's table says the same)."""


@dataclass(frozen=True)
class ScanFinding:
    """One problem with one file."""

    path: str
    rule: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One line for a person: names are escaped so that no file name can print a line of its own."""
        return f"{self.severity.upper()} {printable(self.path)}: {printable(self.message)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rule": self.rule,
            "severity": self.severity,
            "meaning": MEANING.get(self.severity, ""),
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class ScanReport:
    """All findings of one scan, and what was looked at."""

    root: str
    files_scanned: int = 0
    formats: dict[str, str] = field(default_factory=dict)
    findings: list[ScanFinding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Entries not read (only a top-level ``.git``), named so that nothing is left out silently."""

    def blocking(self) -> list[ScanFinding]:
        return [f for f in self.findings if f.severity in BLOCKING]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "clean": not self.blocking(),
            "files_scanned": self.files_scanned,
            "formats": self.formats,
            "skipped": self.skipped,
            "findings": [f.to_dict() for f in self.findings],
        }


class Bad(Exception):
    """A malformed header: the message is the one line a person reads."""
