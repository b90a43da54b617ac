"""NVML as data: the live probe (nvidia-ml-py), a recording wrapper and a replay.

Every probe answers ``call(fn, *args)`` with plain JSON data, so a run on a GPU host can be saved and
replayed in CI with the same check code. Devices are named by data, not handles: the first argument of
a ``nvmlDevice*`` call is a GPU index (``0``) or a MIG device reference ``"0/1"`` (MIG device 1 of GPU 0),
as returned by ``call("nvmlDeviceGetMigDeviceHandleByIndex", 0, 1)``.

Errors are data too: an NVML error (``NotSupported`` on a Hopper GPU asked for retired pages) raises
:class:`NvmlError` live and is recorded, so replay raises the same; no driver at all raises
:class:`NvmlUnavailable`, which checks turn into SKIP with the reason, never ERROR.

Only getters are allowed (``nvmlSystemGet*``, ``nvmlDeviceGet*``): the probe can never change a GPU
setting.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgesec.checks.probes import ProbeNotRecorded, Recorder
from edgesec.errors import EdgesecError

KEY_PREFIX = "nvml:"
_READ_ONLY_RE = re.compile(r"^nvml(System|Device)Get[A-Za-z0-9_]+$")
_MIG_REF_RE = re.compile(r"^(\d{1,3})/(\d{1,3})$")

# Enum values used by the checks (nvml.h); named here so the checks need not import pynvml.
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
COMPUTE_MODES = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}


class NvmlUnavailable(EdgesecError):
    """NVML cannot be used on this host: no NVIDIA driver, no library, or no bindings installed."""

    kind = "nvml-unavailable"


class NvmlError(EdgesecError):
    """One NVML call answered an error (``name`` as in ``NVMLError_<name>``: NotSupported, NoPermission...)."""

    kind = "nvml-error"

    def __init__(self, fn: str, name: str, code: int, message: str = "") -> None:
        super().__init__(f"{fn}: NVML error {name} ({code}){': ' + message if message else ''}")
        self.fn = fn
        self.name = name
        self.code = code

    @property
    def not_supported(self) -> bool:
        return self.name == "NotSupported"


def key(fn: str, *args: Any) -> str:
    """The recording key of one call; the prefix keeps NVML apart from the system probe's keys."""
    return KEY_PREFIX + fn + ":" + json.dumps(list(args), sort_keys=True)


def to_json(value: Any) -> Any:
    """Turn what pynvml returns (ctypes structures, friendly objects, bytes, tuples) into JSON data."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, ctypes.Array):
        return [to_json(v) for v in value]
    if isinstance(value, ctypes.Structure):
        return {name: to_json(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, ctypes._SimpleCData):
        return to_json(value.value)
    if hasattr(value, "__dict__"):
        # pynvml's nvmlFriendlyObject: a bag of attributes.
        return {k: to_json(v) for k, v in vars(value).items() if not k.startswith("_")}
    raise TypeError(f"cannot turn NVML value of type {type(value).__name__} into data")


def _encode_error(exc: EdgesecError) -> dict[str, Any]:
    if isinstance(exc, NvmlError):
        return {"error": {"name": exc.name, "code": exc.code, "message": exc.message}}
    return {"unavailable": exc.message}


def _decode(fn: str, answer: Mapping[str, Any]) -> Any:
    if "ok" in answer:
        return answer["ok"]
    if "error" in answer:
        e = answer["error"]
        raise NvmlError(fn, str(e["name"]), int(e["code"]))
    if "unavailable" in answer:
        raise NvmlUnavailable(str(answer["unavailable"]))
    raise ProbeNotRecorded(f"the recorded answer of {fn} is malformed")


class LiveNvml:
    """The host's NVML through nvidia-ml-py (module ``pynvml``), initialised on first use.

    Construction never fails; a host without a driver makes every call raise :class:`NvmlUnavailable`
    with the reason (library not found, driver not loaded), which checks report as SKIP.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._unavailable: str | None = None
        self._pynvml: Any = None

    def _init(self) -> Any:
        with self._lock:
            if self._ready:
                return self._pynvml
            if self._unavailable is not None:
                raise NvmlUnavailable(self._unavailable)
            try:
                import pynvml
            except ImportError:
                self._unavailable = "nvidia-ml-py (module pynvml) is not installed"
                raise NvmlUnavailable(self._unavailable) from None
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                name = _error_name(exc)
                if name == "LibraryNotFound":
                    reason = "no NVIDIA driver: the NVML library (libnvidia-ml.so.1) is not installed"
                elif name == "DriverNotLoaded":
                    reason = "no NVIDIA driver: the kernel module is not loaded"
                else:
                    reason = f"NVML cannot start: {name} ({exc})"
                self._unavailable = reason
                raise NvmlUnavailable(reason) from None
            self._pynvml = pynvml
            self._ready = True
            return pynvml

    def _handle(self, nv: Any, ref: Any) -> Any:
        if isinstance(ref, int) and not isinstance(ref, bool):
            return nv.nvmlDeviceGetHandleByIndex(ref)
        m = _MIG_REF_RE.match(str(ref))
        if m:
            parent = nv.nvmlDeviceGetHandleByIndex(int(m.group(1)))
            return nv.nvmlDeviceGetMigDeviceHandleByIndex(parent, int(m.group(2)))
        raise ValueError(f"a device is a GPU index or a MIG reference 'gpu/mig', not {ref!r}")

    def call(self, fn: str, *args: Any) -> Any:
        if not _READ_ONLY_RE.match(fn):
            # A check must never change a GPU setting: only getters pass.
            raise ValueError(f"{fn} is not a read-only NVML query")
        nv = self._init()
        try:
            if fn == "nvmlDeviceGetMigDeviceHandleByIndex":
                self._handle(nv, f"{int(args[0])}/{int(args[1])}")
                return f"{int(args[0])}/{int(args[1])}"
            func = getattr(nv, fn, None)
            if func is None:
                raise NvmlError(fn, "FunctionNotFound", 13, "not in this nvidia-ml-py")
            call_args = list(args)
            if fn.startswith("nvmlDevice") and fn != "nvmlDeviceGetCount" and call_args:
                call_args[0] = self._handle(nv, call_args[0])
            return to_json(func(*call_args))
        except nv.NVMLError as exc:
            raise NvmlError(fn, _error_name(exc), int(getattr(exc, "value", -1))) from None


def _error_name(exc: BaseException) -> str:
    name = type(exc).__name__
    return name.removeprefix("NVMLError_") if name.startswith("NVMLError_") else "Unknown"


class RecordingNvml:
    """Wraps an NVML probe and keeps every answer, errors included, in a :class:`Recorder`."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self.inner = inner
        self.rec = recorder
        self._lock = threading.Lock()

    def call(self, fn: str, *args: Any) -> Any:
        k = key(fn, *args)
        try:
            value = self.inner.call(fn, *args)
        except (NvmlError, NvmlUnavailable) as exc:
            with self._lock:
                self.rec.calls[k] = _encode_error(exc)
            raise
        with self._lock:
            self.rec.calls[k] = {"ok": value}
        return value


class ReplayNvml:
    """Answers from a recording (the whole ``calls`` map of a :class:`Recorder`; only ``nvml:`` keys count).

    An NVML call the recording does not hold raises :class:`ProbeNotRecorded` (an ERROR finding).
    """

    def __init__(self, calls: Mapping[str, Any]) -> None:
        self.calls = {k: v for k, v in calls.items() if k.startswith(KEY_PREFIX)}

    @classmethod
    def load(cls, path: Path) -> ReplayNvml:
        return cls(json.loads(Path(path).read_text())["calls"])

    def call(self, fn: str, *args: Any) -> Any:
        k = key(fn, *args)
        if k not in self.calls:
            raise ProbeNotRecorded(f"the recording has no answer for {k}")
        return _decode(fn, self.calls[k])
