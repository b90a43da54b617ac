"""The audit API's interface, in the foundation, so that a part below ``auditing`` (pki) records its events
through the one audit API without importing it.

A part describes what happened as an :class:`Event` (plain data) and hands it to :func:`sink`:

- ``sink().document(event)``: the ECS document the event becomes, validated and carrying the site name,
  without writing it (a change journals its documents in the transaction that makes it);
- ``sink().write(documents)``: those documents appended to the trail, durable on return.

``edgesec.auditing`` implements the interface (its trail writer) and installs it when it is imported; the CLI
imports it at start. Nothing is dropped silently: with no sink installed, :func:`sink` raises.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgesec.errors import OperationFailed

__all__ = ["AuditSink", "Event", "install", "sink"]


@dataclass(frozen=True)
class Event:
    """One audit event as a part states it; the sink validates it against ECS when it builds the document."""

    action: str
    category: tuple[str, ...]
    type: tuple[str, ...]
    message: str
    part: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    outcome: str = "success"


class AuditSink(Protocol):
    def document(self, event: Event) -> dict[str, Any]:
        """The ECS document ``event`` becomes (with the site name), not yet written."""
        ...

    def write(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Append ``documents`` to the trail as one group, durable on return (raises when they cannot be)."""
        ...


_lock = threading.Lock()
_sink: AuditSink | None = None


def install(new: AuditSink | None) -> AuditSink | None:
    """Make ``new`` the sink every part writes to; returns the previous one, for the caller to put back."""
    global _sink
    with _lock:
        previous, _sink = _sink, new
    return previous


def sink() -> AuditSink:
    """The installed sink; raises :class:`OperationFailed` when there is none (no event is dropped)."""
    s = _sink
    if s is None:
        raise OperationFailed(
            "no audit trail is configured: nothing can record this change",
            hint="import edgesec.auditing (the CLI does) or install a sink with edgesec.audit_sink.install()",
        )
    return s
