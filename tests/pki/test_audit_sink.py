"""pki records its events through the one audit API (``edgesec.audit_sink``), which ``auditing`` implements:
the same trail and site name as ``auditing.emit``, and no change without its record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesec import audit_sink, auditing
from edgesec.errors import InputError, OperationFailed
from edgesec.pki.api import CertificateAuthority

from .conftest import PASSPHRASE


def _trail(d: Path) -> list[dict]:  # type: ignore[type-arg]
    auditing.flush()
    f = d / "trail.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def test_importing_auditing_installs_its_trail_as_the_sink() -> None:
    assert audit_sink.sink() is auditing.TRAIL_SINK


def test_journaled_and_direct_events_carry_the_site(ca: CertificateAuthority, tmp_path: Path) -> None:
    with auditing.configured(tmp_path / "t", site="ward-3-site"):
        ca.issue_client("alice")
        with pytest.raises(InputError):
            ca.issue_client("bad name/with slash")
        docs = _trail(tmp_path / "t")
    by_action = {d["event"]["action"]: d for d in docs}
    assert set(by_action) >= {"pki.certificate.issued", "pki.certificate.refused"}
    for d in by_action.values():
        assert d["edgesec"]["site"] == "ward-3-site"
        assert d["service"]["type"] == "pki" and d["user"]["id"]


def test_no_sink_no_change(ca: CertificateAuthority) -> None:
    """Fail closed: with no audit sink the change is refused and the store keeps nothing of it."""
    previous = audit_sink.install(None)
    try:
        with pytest.raises(OperationFailed, match="no audit trail"):
            ca.issue_client("bob")
    finally:
        audit_sink.install(previous)
    assert [r.name for r in ca.list_certificates()] == []


def test_an_event_the_sink_rejects_changes_nothing(home: Path) -> None:
    """The sink validates events against ECS when it builds the document, inside the change's transaction."""
    c = CertificateAuthority.init(home, org="Acme", site="s", passphrase=PASSPHRASE)
    try:

        class Rejecting:
            def document(self, event: audit_sink.Event) -> dict:  # type: ignore[type-arg]
                raise InputError(f"event.category {event.category[0]!r} is not an ECS 8.17 allowed value")

            def write(self, documents: object) -> None:
                raise AssertionError("nothing reaches the trail when the document cannot be built")

        previous = audit_sink.install(Rejecting())
        try:
            with pytest.raises(InputError, match="ECS"):
                c.issue_client("carol")
        finally:
            audit_sink.install(previous)
        assert [r.name for r in c.list_certificates()] == []
    finally:
        c.close()
