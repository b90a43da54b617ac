"""Shared fixtures and markers.

* ``@pytest.mark.real("nginx")`` -- needs a real tool on PATH. Skips when missing, unless
  ``EDGESEC_REQUIRE_REAL=1`` (CI), where a missing tool fails the test.
* ``@pytest.mark.root`` -- needs root (network namespaces, nft); same skip/fail rule.
* ``conformance`` -- the path in ``$EDGESEC_CONFORMANCE_DATA`` (schemas, specs, vectors).
* ``home`` -- an isolated edgesec home and config search path for each test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

REQUIRE_REAL = os.environ.get("EDGESEC_REQUIRE_REAL") == "1"


def _missing(reason: str) -> None:
    if REQUIRE_REAL:
        pytest.fail(f"EDGESEC_REQUIRE_REAL=1 and {reason}")
    pytest.skip(reason)


def require_tool(*names: str) -> None:
    """Skip (or fail under EDGESEC_REQUIRE_REAL=1) unless every tool is on PATH."""
    for name in names:
        if shutil.which(name) is None:
            _missing(f"{name} is not installed")


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("this test needs root")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("real"):
        require_tool(*mark.args)
    if item.get_closest_marker("root"):
        require_root()


@pytest.fixture(scope="session")
def conformance() -> Path:
    p = os.environ.get("EDGESEC_CONFORMANCE_DATA")
    if not p:
        default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        if default.is_dir():
            return default
        _missing("EDGESEC_CONFORMANCE_DATA is not set")
    path = Path(p or "")
    if not path.is_dir():
        _missing(f"EDGESEC_CONFORMANCE_DATA={p} is not a directory")
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads /etc/edgesec or the user's config, or writes the real home."""
    import edgesec.config as config

    base = tmp_path_factory.mktemp("edgesec-home")
    monkeypatch.setattr(config, "SEARCH_PATH", ())
    monkeypatch.delenv("EDGESEC_CONFIG", raising=False)
    monkeypatch.setenv("EDGESEC_HOME", str(base))
    # Library calls outside the CLI share one lazily loaded AppState (its config decides the trail's home):
    # give each test its own, so events land in that test's home.
    from edgesec._console import AppState, reset_state, set_state

    token = set_state(AppState())
    yield
    reset_state(token)
    from edgesec import auditing

    auditing.flush()
    auditing._trail = None


@pytest.fixture
def home() -> Path:
    return Path(os.environ["EDGESEC_HOME"])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the CLI in-process: ``code, out, err = cli("pki", "list")``."""
    from edgesec._cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
