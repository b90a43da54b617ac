"""The test session cannot change the host's real edgesec state (issue #20, attack 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgesec.config as config
from tests import _hostguard

REPO = Path(__file__).resolve().parents[2]
VICTIM = Path(__file__).with_name("hostguard_victim.py")


@pytest.fixture(scope="module")
def module_home() -> Iterator[Path]:
    """What a module-scoped fixture sees: it runs before the per-test isolation fixture."""
    from edgesec._console import AppState

    yield AppState().config().home


def test_module_scoped_fixtures_already_see_a_temporary_home(module_home: Path) -> None:
    assert "edgesec-test-session-" in str(module_home)
    assert module_home != config.default_home()
    assert config.SEARCH_PATH == ()


def _child(tmp_path: Path, guarded: Path, write: Path | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGESEC_TEST_GUARD_DIRS=str(guarded), PYTHONPATH=str(REPO))
    env.pop("VICTIM_WRITE", None)
    env.pop("EDGESEC_HOME", None)  # the child's conftest must set it itself
    if write is not None:
        env["VICTIM_WRITE"] = str(write)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(VICTIM)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_session_that_writes_into_a_guarded_dir_fails_naming_the_path(tmp_path: Path) -> None:
    guarded = tmp_path / "var-lib-edgesec"
    guarded.mkdir()
    (guarded / "existing").write_text("x")
    r = _child(tmp_path, guarded, guarded / "trail.jsonl")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    assert f"created: {guarded / 'trail.jsonl'}" in r.stdout
    # The module-scoped fixture's audit event did not land in the guarded dir.
    assert sorted(p.name for p in guarded.iterdir()) == ["existing", "trail.jsonl"]


def test_a_session_that_leaves_the_guarded_dir_alone_passes(tmp_path: Path) -> None:
    guarded = tmp_path / "etc-edgesec"  # absent at start and at end
    r = _child(tmp_path, guarded, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not guarded.exists()


def test_changes_names_created_modified_and_removed(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "b").write_text("1")
    before = _hostguard.snapshot([tmp_path])
    (tmp_path / "a").write_text("22")
    (tmp_path / "b").unlink()
    (tmp_path / "c").write_text("3")
    os.chmod(tmp_path / "c", 0o600)
    found = _hostguard.changes(before, _hostguard.snapshot([tmp_path]))
    assert f"modified: {tmp_path / 'a'}" in found
    assert f"removed: {tmp_path / 'b'}" in found
    assert f"created: {tmp_path / 'c'}" in found
