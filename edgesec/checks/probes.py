"""Probe interfaces: the only way checks see the system.

Three implementations of each probe:

* live -- reads the real host (``LiveSystem``, ``LiveClock``);
* recording -- wraps a live probe and keeps every answer (``Recorder``), so a real run can be saved
  as a fixture (e.g. on a GPU host);
* replay -- answers from a recording, or from a built system in a test (``ReplaySystem``,
  ``BuiltSystem``, ``FixedClock``). Asking a replay for something it never saw raises
  :class:`ProbeNotRecorded`, which the runner reports as an ERROR finding, never a silent answer.

Every answer is plain JSON data so recordings are files.
"""

from __future__ import annotations

import datetime as dt
import glob as _glob
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgesec.errors import EdgesecError

RECORDING_VERSION = 1


class ProbeNotRecorded(EdgesecError):
    """A replayed system was asked something the recording does not hold."""

    kind = "probe-not-recorded"


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and returned. ``returncode`` 127: not installed; -1: timed out."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "returncode": self.returncode,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CommandResult:
        return cls(tuple(d["argv"]), int(d["returncode"]), str(d["stdout"]), str(d.get("stderr", "")))


@dataclass(frozen=True)
class FileStat:
    """The parts of ``lstat`` checks use."""

    mode: int  # full st_mode
    uid: int
    gid: int
    size: int
    mtime: float
    is_dir: bool
    is_link: bool

    @property
    def perms(self) -> int:
        return self.mode & 0o7777

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FileStat:
        return cls(**{k: d[k] for k in ("mode", "uid", "gid", "size", "mtime", "is_dir", "is_link")})


class SystemProbe(Protocol):
    """Files, commands, environment and processes of the host."""

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None: ...
    def listdir(self, path: str) -> list[str] | None: ...
    def glob(self, pattern: str) -> list[str]: ...
    def stat(self, path: str) -> FileStat | None: ...
    def readlink(self, path: str) -> str | None: ...
    def run(self, argv: Sequence[str], timeout: float = 10.0) -> CommandResult: ...
    def which(self, name: str) -> str | None: ...
    def environ(self) -> dict[str, str]: ...
    def hostname(self) -> str: ...
    def euid(self) -> int: ...
    def connect(self, host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]: ...
    def netlink(self, op: str, *args: Any) -> dict[str, Any]: ...


class Clock(Protocol):
    """The time checks judge by (expiry, EOL dates): live, recorded or fixed."""

    def now(self) -> dt.datetime: ...


class NvmlProbe(Protocol):
    """NVML as data: ``call("nvmlDeviceGetMigMode", 0)``; the gpu family implements live and replay."""

    def call(self, fn: str, *args: Any) -> Any: ...


class LiveClock:
    """The host's clock, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class FixedClock:
    """A clock stopped at ``at`` (replays and tests)."""

    at: dt.datetime

    def now(self) -> dt.datetime:
        return self.at


class LiveSystem:
    """The real host. ``root`` re-roots file reads (a built file system in a test); commands are real."""

    def __init__(self, root: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self._env = dict(env) if env is not None else None

    def _p(self, path: str) -> str:
        if self.root:
            return os.path.join(self.root, path.lstrip("/"))
        return path

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        try:
            with open(self._p(path), "rb") as fh:
                return fh.read(limit).decode("utf-8", errors="replace")
        except (
            FileNotFoundError,
            NotADirectoryError,
            IsADirectoryError,
            PermissionError,
            ProcessLookupError,
        ):
            return None
        except OSError:
            return None

    def listdir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(self._p(path)))
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        hits = sorted(_glob.glob(self._p(pattern)))
        if self.root:
            return ["/" + os.path.relpath(h, self.root) for h in hits]
        return hits

    def stat(self, path: str) -> FileStat | None:
        try:
            st = os.lstat(self._p(path))
        except OSError:
            return None
        import stat as _s

        return FileStat(
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_mtime,
            _s.S_ISDIR(st.st_mode),
            _s.S_ISLNK(st.st_mode),
        )

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self._p(path))
        except OSError:
            return None

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        argv_t = tuple(argv)
        if shutil.which(argv_t[0]) is None:
            return CommandResult(argv_t, 127, "", f"{argv_t[0]}: not installed")
        try:
            cp = subprocess.run(
                list(argv_t),
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired:
            return CommandResult(argv_t, -1, "", f"timed out after {timeout}s")
        except OSError as exc:
            return CommandResult(argv_t, 126, "", str(exc))
        return CommandResult(
            argv_t,
            cp.returncode,
            cp.stdout.decode("utf-8", "replace"),
            cp.stderr.decode("utf-8", "replace")[-4000:],
        )

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def environ(self) -> dict[str, str]:
        return dict(self._env) if self._env is not None else dict(os.environ)

    def hostname(self) -> str:
        return socket.gethostname()

    def euid(self) -> int:
        return os.geteuid()

    def connect(self, host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]:
        """One short connection attempt (the opt-in egress probe): ``{"outcome", "detail"}``.

        ``outcome`` is ``reachable`` (TCP handshake done, or a DNS answer came back), ``refused``
        (a RST or ICMP came back: packets do leave), ``blocked`` (silence until the timeout, or no route),
        ``unresolved`` (the name does not resolve: nothing was tried) or ``error`` (the attempt itself failed).
        """
        return active_probe(host, port, protocol, timeout)

    def netlink(self, op: str, *args: Any) -> dict[str, Any]:
        """The kernel's routing state and FIB lookups (:mod:`edgesec.checks.netlink`)."""
        from edgesec.checks.netlink import query

        return query(op, *args)


def active_probe(host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]:
    """Try ``host:port`` once over TCP, or send one DNS query over UDP; never retries."""
    import errno as _errno

    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM if protocol == "dns" else socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        # Nothing was tried: a name that does not resolve proves nothing about the path out.
        return {"outcome": "unresolved", "detail": f"name does not resolve here: {exc.strerror}"}
    family, stype, proto, _canon, addr = infos[0]
    peer = ":".join((str(addr[0]), str(addr[1])))
    with socket.socket(family, stype, proto) as s:
        s.settimeout(timeout)
        try:
            if protocol == "dns":
                # A minimal query for "." NS: any answer at all proves the path is open.
                query = bytes.fromhex("edc5010000010000000000000000020001")
                s.sendto(query, addr)
                data, _peer = s.recvfrom(512)
                return {"outcome": "reachable", "detail": f"DNS answer of {len(data)} bytes from {peer}"}
            s.connect(addr)
            return {"outcome": "reachable", "detail": f"TCP handshake with {peer} completed"}
        except TimeoutError:
            return {"outcome": "blocked", "detail": f"no answer within {timeout}s"}
        except ConnectionRefusedError:
            return {"outcome": "refused", "detail": "connection refused: packets reach the destination"}
        except OSError as exc:
            if exc.errno in (_errno.ENETUNREACH, _errno.EHOSTUNREACH, _errno.EPERM, _errno.EACCES):
                return {"outcome": "blocked", "detail": exc.strerror or str(exc)}
            return {"outcome": "error", "detail": f"{type(exc).__name__}: {exc.strerror or exc}"}


def call_key(method: str, *args: Any) -> str:
    """The recording key of one probe call (a recording file maps these keys to answers)."""
    return method + ":" + json.dumps(list(args), sort_keys=True, default=str)


_ENCODE: dict[str, Callable[[Any], Any]] = {
    "stat": lambda v: None if v is None else v.to_json(),
    "run": lambda v: v.to_json(),
}
_DECODE: dict[str, Callable[[Any], Any]] = {
    "stat": lambda v: None if v is None else FileStat.from_json(v),
    "run": CommandResult.from_json,
}


class Recorder:
    """Keeps the answers of every probe call: ``{"version", "calls": {key: answer}, "clock"}``."""

    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}
        self.clock: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORDING_VERSION, "clock": self.clock, "calls": self.calls}

    def save(self, path: Path) -> None:
        from edgesec._fs import atomic_write

        atomic_write(path, json.dumps(self.to_json(), indent=1, sort_keys=True), mode=0o644)


_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE)", re.I)
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def redact_env_value(name: str, value: str) -> str:
    """What a recording keeps of one environment variable: secrets never leave the host in a fixture."""
    if _SECRET_NAME.search(name):
        return "<redacted>"
    return _USERINFO.sub("***@", value)


def _redact_environ_blob(raw: str) -> str:
    out = []
    for kv in raw.split("\0"):
        name, sep, value = kv.partition("=")
        out.append(f"{name}{sep}{redact_env_value(name, value)}" if sep else kv)
    return "\0".join(out)


class RecordingSystem:
    """Wraps a :class:`SystemProbe` and records every call into a :class:`Recorder`.

    Environment values whose names look secret (tokens, keys, passwords) and credentials inside URLs are
    redacted in the recording (not in what the live checks see), so a recording can become a test fixture.
    """

    def __init__(self, inner: SystemProbe, recorder: Recorder) -> None:
        self.inner = inner
        self.rec = recorder

    def _do(self, method: str, *args: Any) -> Any:
        value = getattr(self.inner, method)(*args)
        enc = _ENCODE.get(method, lambda v: v)
        self.rec.calls[call_key(method, *args)] = enc(value)
        return value

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        value = self.inner.read_text(path, limit)
        kept = value
        if value is not None and path.startswith("/proc/") and path.endswith("/environ"):
            kept = _redact_environ_blob(value)
        self.rec.calls[call_key("read_text", path, limit)] = kept
        return value

    def listdir(self, path: str) -> list[str] | None:
        return self._do("listdir", path)  # type: ignore[no-any-return]

    def glob(self, pattern: str) -> list[str]:
        return self._do("glob", pattern)  # type: ignore[no-any-return]

    def stat(self, path: str) -> FileStat | None:
        return self._do("stat", path)  # type: ignore[no-any-return]

    def readlink(self, path: str) -> str | None:
        return self._do("readlink", path)  # type: ignore[no-any-return]

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        value = self.inner.run(argv, timeout)
        self.rec.calls[call_key("run", list(argv))] = value.to_json()
        return value

    def which(self, name: str) -> str | None:
        return self._do("which", name)  # type: ignore[no-any-return]

    def environ(self) -> dict[str, str]:
        value = self.inner.environ()
        self.rec.calls[call_key("environ")] = {k: redact_env_value(k, v) for k, v in value.items()}
        return value

    def hostname(self) -> str:
        return self._do("hostname")  # type: ignore[no-any-return]

    def euid(self) -> int:
        return self._do("euid")  # type: ignore[no-any-return]

    def connect(self, host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]:
        value = self.inner.connect(host, port, protocol, timeout)
        self.rec.calls[call_key("connect", host, port, protocol)] = value
        return value

    def netlink(self, op: str, *args: Any) -> dict[str, Any]:
        return self._do("netlink", op, *args)  # type: ignore[no-any-return]


class ReplaySystem:
    """Answers from a recording; anything not recorded raises :class:`ProbeNotRecorded`."""

    def __init__(self, calls: Mapping[str, Any]) -> None:
        self.calls = dict(calls)

    @classmethod
    def load(cls, path: Path) -> ReplaySystem:
        doc = json.loads(Path(path).read_text())
        return cls(doc["calls"])

    def _get(self, method: str, *args: Any) -> Any:
        k = call_key(method, *args)
        if k not in self.calls:
            raise ProbeNotRecorded(f"the recording has no answer for {k}")
        return _DECODE.get(method, lambda v: v)(self.calls[k])

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        return self._get("read_text", path, limit)  # type: ignore[no-any-return]

    def listdir(self, path: str) -> list[str] | None:
        return self._get("listdir", path)  # type: ignore[no-any-return]

    def glob(self, pattern: str) -> list[str]:
        return self._get("glob", pattern)  # type: ignore[no-any-return]

    def stat(self, path: str) -> FileStat | None:
        return self._get("stat", path)  # type: ignore[no-any-return]

    def readlink(self, path: str) -> str | None:
        return self._get("readlink", path)  # type: ignore[no-any-return]

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        return self._get("run", list(argv))  # type: ignore[no-any-return]

    def which(self, name: str) -> str | None:
        return self._get("which", name)  # type: ignore[no-any-return]

    def environ(self) -> dict[str, str]:
        return self._get("environ")  # type: ignore[no-any-return]

    def hostname(self) -> str:
        return self._get("hostname")  # type: ignore[no-any-return]

    def euid(self) -> int:
        return self._get("euid")  # type: ignore[no-any-return]

    def connect(self, host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]:
        return self._get("connect", host, port, protocol)  # type: ignore[no-any-return]

    def netlink(self, op: str, *args: Any) -> dict[str, Any]:
        return self._get("netlink", op, *args)  # type: ignore[no-any-return]


class BuiltSystem:
    """A system described in a test: files (path -> text, or a FileStat), commands, environment.

    Unlike :class:`ReplaySystem`, what is not described simply does not exist (missing file,
    command not installed), which is what a built file system means.
    """

    def __init__(
        self,
        files: Mapping[str, str] | None = None,
        commands: Mapping[tuple[str, ...], CommandResult | str] | None = None,
        environ: Mapping[str, str] | None = None,
        stats: Mapping[str, FileStat] | None = None,
        links: Mapping[str, str] | None = None,
        hostname: str = "built-host",
        euid: int = 0,
        network: Mapping[tuple[str, int, str], Mapping[str, Any]] | None = None,
        netlink: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.files = dict(files or {})
        self.commands = {tuple(k): v for k, v in (commands or {}).items()}
        self.env = dict(environ or {})
        self.stats = dict(stats or {})
        self.links = dict(links or {})
        self._hostname = hostname
        self._euid = euid
        self.network = {k: dict(v) for k, v in (network or {}).items()}
        self._netlink = netlink

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        v = self.files.get(path)
        return None if v is None else v[:limit]

    def listdir(self, path: str) -> list[str] | None:
        prefix = path.rstrip("/") + "/"
        names = {
            p[len(prefix) :].split("/", 1)[0]
            for p in [*self.files, *self.stats, *self.links]
            if p.startswith(prefix)
        }
        return sorted(names) if names else None

    def glob(self, pattern: str) -> list[str]:
        import fnmatch

        return sorted(p for p in {*self.files, *self.stats, *self.links} if fnmatch.fnmatchcase(p, pattern))

    def stat(self, path: str) -> FileStat | None:
        if path in self.stats:
            return self.stats[path]
        if path in self.files:
            return FileStat(0o100644, 0, 0, len(self.files[path]), 0.0, False, False)
        return None

    def readlink(self, path: str) -> str | None:
        return self.links.get(path)

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        v = self.commands.get(tuple(argv))
        if v is None:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: not installed")
        if isinstance(v, str):
            return CommandResult(tuple(argv), 0, v)
        return v

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if any(k[0] == name for k in self.commands) else None

    def environ(self) -> dict[str, str]:
        return dict(self.env)

    def hostname(self) -> str:
        return self._hostname

    def euid(self) -> int:
        return self._euid

    def connect(self, host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]:
        # An undescribed destination behaves like a sealed site: silence.
        return dict(self.network.get((host, port, protocol), {"outcome": "blocked", "detail": "no answer"}))

    def netlink(self, op: str, *args: Any) -> dict[str, Any]:
        # Undescribed, netlink is what a sandbox without it gives: an error the check must report.
        if self._netlink is None:
            return {"ok": False, "error": "netlink: Operation not permitted"}
        return self._netlink(op, *args)


class RecordingClock:
    """The live clock, with the run's start time kept in the recording (replay uses it as a FixedClock)."""

    def __init__(self, inner: Clock, recorder: Recorder) -> None:
        self.inner = inner
        self.rec = recorder

    def now(self) -> dt.datetime:
        value = self.inner.now()
        if self.rec.clock is None:
            self.rec.clock = value.isoformat()
        return value


def load_recording(path: Path) -> dict[str, Any]:
    """Read a recording written by ``edgesec audit --record``; one clear InputError when it is unusable."""
    from edgesec._fs import read_input_file
    from edgesec.errors import InputError

    raw = read_input_file(Path(path), what="recording")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"recording {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("calls"), dict):
        raise InputError(f"recording {path} has no 'calls' object: not an edgesec recording")
    if doc.get("version") != RECORDING_VERSION:
        raise InputError(
            f"recording {path} has version {doc.get('version')!r}; this edgesec reads {RECORDING_VERSION}"
        )
    if doc.get("clock") is not None:
        try:
            dt.datetime.fromisoformat(str(doc["clock"]))
        except ValueError:
            raise InputError(f"recording {path}: clock {doc['clock']!r} is not an ISO 8601 time") from None
    return doc


class CachingSystem:
    """One answer per command per run: checks that read the same tool output (``ip route``, ``nft``) share it.

    Commands are snapshots of the host taken once per audit, which also keeps checks consistent with each
    other. Concurrent askers of the same command wait for the first one instead of running it again.
    """

    def __init__(self, inner: SystemProbe) -> None:
        import threading

        self.inner = inner
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, ...], CommandResult] = {}
        self._pending: dict[tuple[str, ...], threading.Lock] = {}
        self._netlink: dict[tuple[str, str], dict[str, Any]] = {}

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        import threading

        key = tuple(argv)
        with self._lock:
            if key in self._runs:
                return self._runs[key]
            gate = self._pending.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._runs:
                    return self._runs[key]
            value = self.inner.run(argv, timeout)
            with self._lock:
                self._runs[key] = value
            return value

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        return self.inner.read_text(path, limit)

    def listdir(self, path: str) -> list[str] | None:
        return self.inner.listdir(path)

    def glob(self, pattern: str) -> list[str]:
        return self.inner.glob(pattern)

    def stat(self, path: str) -> FileStat | None:
        return self.inner.stat(path)

    def readlink(self, path: str) -> str | None:
        return self.inner.readlink(path)

    def which(self, name: str) -> str | None:
        return self.inner.which(name)

    def environ(self) -> dict[str, str]:
        return self.inner.environ()

    def hostname(self) -> str:
        return self.inner.hostname()

    def euid(self) -> int:
        return self.inner.euid()

    def connect(self, host: str, port: int, protocol: str, timeout: float) -> dict[str, Any]:
        return self.inner.connect(host, port, protocol, timeout)

    def netlink(self, op: str, *args: Any) -> dict[str, Any]:
        key = ("\0netlink", call_key(op, *args))
        with self._lock:
            if key in self._netlink:
                return self._netlink[key]
        value = self.inner.netlink(op, *args)
        with self._lock:
            self._netlink[key] = value
        return value
