"""Run only by test_hostguard.py in a child pytest session (not collected by name: no ``test_`` prefix)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_trail() -> Iterator[Path]:
    """A module-scoped fixture writing an audit event before any function-scoped fixture exists."""
    from edgesec import auditing
    from edgesec.auditing.ecs import AuditEvent

    auditing.emit(AuditEvent("pki.ca.initialized", ("configuration",), ("creation",), message="victim"))
    auditing.flush()
    trail = auditing.current_trail()
    yield trail.dir
    auditing.flush()


def test_module_fixture_wrote_into_the_session_home(module_trail: Path) -> None:
    assert "edgesec-test-session-" in str(module_trail)


def test_writes_into_a_guarded_dir() -> None:
    target = os.environ.get("VICTIM_WRITE")
    if target:
        Path(target).write_text("planted\n")
