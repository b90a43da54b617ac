"""Shared fixtures and markers.

* ``@pytest.mark.real("nginx")`` -- needs a real tool on PATH. Skips when missing, unless
  ``EDGESEC_REQUIRE_REAL=1`` (CI), where a missing tool fails the test.
* ``@pytest.mark.root`` -- needs root (network namespaces, nft); same skip/fail rule.
* ``conformance`` -- the path in ``$EDGESEC_CONFORMANCE_DATA`` (schemas, specs, vectors).
* ``home`` -- an isolated edgesec home and config search path for each test.

Host guard (``tests/_hostguard.py``): ``EDGESEC_HOME`` and the config search path point at a session
temporary home from conftest import time, before any fixture of any scope; the session fails if
``/var/lib/edgesec``, ``/etc/edgesec`` or the user's edgesec dirs changed while it ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests import _hostguard

# Before any fixture of any scope (module-scoped PKI fixtures run before function-scoped autouse ones):
# no code in this session defaults to the host's real home or reads the host's config.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="edgesec-test-session-"))
os.environ["EDGESEC_HOME"] = str(_SESSION_HOME)
os.environ.pop("EDGESEC_CONFIG", None)

import edgesec.config as _config  # noqa: E402

_config.SEARCH_PATH = ()
_GUARD_BEFORE: _hostguard.Snapshot = {}

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


def pytest_sessionstart(session: pytest.Session) -> None:
    _GUARD_BEFORE.update(_hostguard.snapshot(_hostguard.guarded_dirs()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = _hostguard.changes(_GUARD_BEFORE, _hostguard.snapshot(_hostguard.guarded_dirs()))
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
    if not found:
        return
    shown = "\n  ".join(found[:50]) + (f"\n  ... and {len(found) - 50} more" if len(found) > 50 else "")
    msg = f"host guard: the test session changed the host's real edgesec state:\n  {shown}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(msg, red=True)
    else:
        print(msg)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


def _loopback_only(address: object) -> None:
    """Refuse a destination that is not on this host: the tests' network rule, enforced."""
    import ipaddress

    if not isinstance(address, tuple) or not address:  # AF_UNIX paths, abstract sockets
        return
    host = str(address[0]).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None and host in ("localhost", "localhost.localdomain"):
        return
    if ip is None or not ip.is_loopback:
        raise PermissionError(
            f"network rule: a test tried to reach {address!r}; tests talk only to loopback here "
            "(anything else runs in a test-made network namespace, in a subprocess)"
        )


def _local_name(host: object) -> bool:
    import ipaddress
    import socket

    if host is None or host in ("", "localhost", "localhost.localdomain", socket.gethostname()):
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return name.endswith(".localhost")
    return True  # a literal address resolves without asking anyone; connect() judges it


@pytest.fixture(scope="session", autouse=True)
def _network_rule() -> Iterator[None]:
    """In the test process, sockets reach loopback only and no name goes to a resolver.

    Egress tests that need an "outside" run their probes in subprocesses inside network namespaces
    the test creates, so they are unaffected.
    """
    import socket

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_sendmsg = socket.socket.sendmsg
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        _loopback_only(address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        _loopback_only(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    def sendto(self: socket.socket, data: bytes, *args: object) -> int:
        _loopback_only(args[-1])
        return real_sendto(self, data, *args)  # type: ignore[arg-type,call-overload,no-any-return]

    def sendmsg(self: socket.socket, buffers: object, *args: object) -> int:
        if len(args) >= 3 and args[2] is not None:  # (ancdata, flags, address)
            _loopback_only(args[2])
        return real_sendmsg(self, buffers, *args)  # type: ignore[arg-type,no-any-return]

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _local_name(host):
            raise PermissionError(
                f"network rule: a test tried to resolve {host!r} (no resolver is asked in tests)"
            )
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket.socket, "sendto", sendto)
        mp.setattr(socket.socket, "sendmsg", sendmsg)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads /etc/edgesec or the user's config, or writes the real home."""
    import edgesec.config as config

    base = tmp_path_factory.mktemp("edgesec-home")
    monkeypatch.setattr(config, "SEARCH_PATH", ())
    monkeypatch.delenv("EDGESEC_CONFIG", raising=False)
    monkeypatch.setenv("EDGESEC_HOME", str(base))
    # Each test its own CLI state; library calls outside the CLI load the config themselves
    # (edgesec.config.load_config: this test's EDGESEC_HOME), so events land in this test's home.
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
