"""What is installed and what is in use: driver, CUDA toolkits and runtimes, cuDNN, GPU processes.

Everything is read through the probes (``ctx.system``, ``ctx.nvml``) so a recording replays it. Each
thing found carries where it was found, because a verdict's evidence must name every version and its
source. Sources:

* driver -- NVML (``nvmlSystemGetDriverVersion``, ``nvmlSystemGetCudaDriverVersion_v2``);
* toolkits -- ``/usr/local/cuda*/version.json`` (``version.txt`` before 11.1) and ``nvcc --version``;
* in use -- ``/proc/<pid>/maps`` of running processes (``libcudart.so.*``, ``libcudnn*.so.*``,
  ``libtorch_cuda.so``);
* Python environments -- ``nvidia-*`` wheels (``nvidia_cudnn_cu12-9.1.0.70.dist-info``) and torch's
  ``METADATA`` and ``torch/version.py``, read as text: torch is never imported;
* cuDNN -- ``cudnn_version.h`` and ``libcudnn.so.<version>``, with the CUDA major its package names
  (``dpkg-query -S`` / ``rpm -qf`` for system files, the wheel name for pip).

One inventory per check context, computed once and shared by the checks of that run.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from edgesec.checks.families.gpu.nvml import NvmlError, NvmlUnavailable
from edgesec.checks.families.gpu.versions import (
    Version,
    cuda_from_int,
    cuda_from_torch_tag,
    cuda_major_from_package,
)

if TYPE_CHECKING:
    from edgesec.checks.interface import CheckContext
    from edgesec.checks.probes import SystemProbe

T = TypeVar("T")

TOOLKIT_GLOBS = ("/usr/local/cuda*/version.json", "/usr/local/cuda*/version.txt", "/opt/cuda*/version.json")
SITE_GLOBS = (
    "/usr/lib/python3*/site-packages",
    "/usr/lib/python3/dist-packages",
    "/usr/local/lib/python3*/site-packages",
    "/usr/local/lib/python3*/dist-packages",
    "/opt/*/lib/python3*/site-packages",
    "/opt/*/.venv/lib/python3*/site-packages",
    "/opt/*/venv/lib/python3*/site-packages",
    "/srv/*/.venv/lib/python3*/site-packages",
    "/srv/*/venv/lib/python3*/site-packages",
    "/opt/conda/lib/python3*/site-packages",
    "/opt/conda/envs/*/lib/python3*/site-packages",
)
CUDNN_HEADER_GLOBS = (
    "/usr/include/cudnn_version*.h",
    "/usr/include/*/cudnn_version*.h",
    "/usr/local/cuda*/include/cudnn_version*.h",
    "/usr/local/cuda*/targets/*/include/cudnn_version*.h",
)
CUDNN_LIB_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libcudnn.so.*",
    "/usr/lib/aarch64-linux-gnu/libcudnn.so.*",
    "/usr/lib64/libcudnn.so.*",
    "/usr/local/cuda*/lib64/libcudnn.so.*",
    "/usr/local/cuda*/targets/*/lib/libcudnn.so.*",
)

_CUDART_RE = re.compile(r"/libcudart\.so\.(\d+(?:\.\d+){0,2})$")
_CUDNN_RE = re.compile(r"/libcudnn(?:_[a-z_]+)?\.so\.(\d+(?:\.\d+){0,2})$")
_TORCH_CUDA_RE = re.compile(r"/libtorch_cuda\.so$")
# cuda-compat's user-space driver (forward compatibility): /usr/local/cuda-13.1/compat/libcuda.so.590.44.01
_COMPAT_RE = re.compile(r"/compat/libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")
_SITE_RE = re.compile(r"^(.*?/(?:site|dist)-packages)/")
_NVCC_RE = re.compile(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)")
_DIST_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[0-9][^-/]*)\.dist-info$")
_HEADER_DEFINE_RE = re.compile(r"^\s*#\s*define\s+CUDNN_(MAJOR|MINOR|PATCHLEVEL)\s+(\d+)", re.MULTILINE)
_TORCH_VERSION_PY_RE = re.compile(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([0-9.]+)['\"]", re.MULTILINE)


@dataclass(frozen=True)
class Found:
    """One CUDA runtime, toolkit or cuDNN found on the host, and where.

    ``cuda_major`` is the CUDA major it targets (a runtime's own major; for cuDNN what its package name
    says, None when nothing says). ``pid`` is set when a running process has it loaded.
    """

    kind: str  # "runtime" or "cudnn"
    version: Version
    source: str  # process | toolkit | nvcc | wheel | torch | header | library
    where: str
    cuda_major: int | None
    package: str | None = None
    pid: int | None = None
    note: str | None = None
    compat: str | None = None  # the cuda-compat libcuda a process loaded instead of the driver's

    @property
    def in_use(self) -> bool:
        return self.pid is not None

    def evidence(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": str(self.version), "source": self.source, "where": self.where}
        if self.package:
            d["package"] = self.package
        if self.cuda_major is not None:
            d["cuda_major"] = self.cuda_major
        if self.pid is not None:
            d["pid"] = self.pid
        if self.note:
            d["note"] = self.note
        if self.compat:
            d["forward_compat_libcuda"] = self.compat
        return d

    def compat_version(self) -> Version | None:
        m = _COMPAT_RE.search(self.compat or "")
        return Version.parse(m.group(1)) if m else None


@dataclass(frozen=True)
class Driver:
    """The NVIDIA driver as NVML reports it."""

    version: Version
    cuda: Version  # the highest CUDA version the driver supports
    cuda_raw: int

    def evidence(self) -> dict[str, Any]:
        return {
            "driver": {"version": str(self.version), "source": "NVML nvmlSystemGetDriverVersion"},
            "driver_cuda": {
                "version": str(self.cuda),
                "source": f"NVML nvmlSystemGetCudaDriverVersion_v2 = {self.cuda_raw}",
            },
        }


@dataclass(frozen=True)
class ProcInfo:
    """A process: its owner, executable, cgroup (container or systemd unit) and CUDA libraries."""

    pid: int
    comm: str | None
    exe: str | None
    uid: int | None
    user: str | None
    cgroup: str | None
    unit: str | None
    container: str | None
    libs: tuple[str, ...] = ()

    def evidence(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pid": self.pid, "comm": self.comm, "exe": self.exe, "uid": self.uid}
        d["user"] = self.user
        if self.unit:
            d["unit"] = self.unit
        if self.container:
            d["container"] = self.container
        if self.cgroup:
            d["cgroup"] = self.cgroup
        return d


@dataclass
class Inventory:
    """Everything discovery found; ``notes`` say what could not be read and why."""

    runtimes: list[Found] = field(default_factory=list)
    cudnn: list[Found] = field(default_factory=list)
    processes: dict[int, ProcInfo] = field(default_factory=dict)  # processes with CUDA libraries loaded
    sites: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- one inventory per context ------------------------------------------------------------------------------
# Keyed by the context's id (a context is one run and is not hashable); the entry goes with the context.
_cache: dict[int, dict[str, Any]] = {}
_cache_lock = threading.Lock()


def cached(ctx: CheckContext, name: str, compute: Callable[[], T]) -> T:
    """Compute ``name`` once per check context (one run), even when checks run in parallel."""
    with _cache_lock:
        slot = _cache.get(id(ctx))
        if slot is None:
            slot = _cache[id(ctx)] = {}
            weakref.finalize(ctx, _cache.pop, id(ctx), None)
        lock = slot.setdefault("_lock:" + name, threading.Lock())
    with lock:
        if name not in slot:
            slot[name] = compute()
        return slot[name]  # type: ignore[no-any-return]


# -- driver -----------------------------------------------------------------------------------------------
def driver(ctx: CheckContext) -> Driver:
    """The driver; raises :class:`NvmlUnavailable` when there is none (checks SKIP)."""

    def compute() -> Driver:
        if ctx.nvml is None:
            raise NvmlUnavailable("NVML is not available to this run")
        ver = Version.parse(str(ctx.nvml.call("nvmlSystemGetDriverVersion")))
        raw = int(ctx.nvml.call("nvmlSystemGetCudaDriverVersion_v2"))
        return Driver(ver, cuda_from_int(raw), raw)

    try:
        return cached(ctx, "driver", compute)
    except NvmlUnavailable:
        raise
    except NvmlError as exc:
        raise NvmlUnavailable(f"the driver version cannot be read: {exc.message}") from None


def gpu_count(ctx: CheckContext) -> int:
    assert ctx.nvml is not None
    return cached(ctx, "gpu_count", lambda: int(ctx.nvml.call("nvmlDeviceGetCount")))  # type: ignore[union-attr]


def gpu_uuid(ctx: CheckContext, index: int | str) -> str:
    assert ctx.nvml is not None
    return cached(ctx, f"uuid:{index}", lambda: str(ctx.nvml.call("nvmlDeviceGetUUID", index)))  # type: ignore[union-attr]


def nvml_or(ctx: CheckContext, fn: str, *args: Any, default: Any = None) -> Any:
    """An NVML answer, or ``default`` when the GPU answers NotSupported / NotFound."""
    assert ctx.nvml is not None
    try:
        return ctx.nvml.call(fn, *args)
    except NvmlError as exc:
        if exc.name in ("NotSupported", "NotFound", "FunctionNotFound"):
            return default
        raise


# -- helpers over the system probe ------------------------------------------------------------------------
def resolve(system: SystemProbe, path: str, hops: int = 8) -> str:
    """Follow symbolic links (alternatives, ``libcudnn.so.9`` → ``libcudnn.so.9.14.0``) through the probe."""
    import posixpath

    for _ in range(hops):
        target = system.readlink(path)
        if target is None:
            return path
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return path


def owning_package(ctx: CheckContext, path: str) -> str | None:
    """The OS package that installed ``path`` (``libcudnn9-cuda-13``), or None."""
    sys_ = ctx.system

    def compute() -> str | None:
        if sys_.which("dpkg-query"):
            r = sys_.run(["dpkg-query", "-S", path], 10.0)
            if r.ok and ":" in r.stdout:
                # "libcudnn9-cuda-13: /usr/lib/..." (or "pkg:amd64: /path" on multiarch)
                first = r.stdout.strip().splitlines()[0]
                return first.rsplit(": ", 1)[0].split(":")[0].strip()
        if sys_.which("rpm"):
            r = sys_.run(["rpm", "-qf", "--qf", "%{NAME}", path], 10.0)
            if r.ok and r.stdout.strip() and "not owned" not in r.stdout:
                return r.stdout.strip().splitlines()[0]
        return None

    return cached(ctx, "pkg:" + path, compute)


def users(ctx: CheckContext) -> dict[int, str]:
    def compute() -> dict[int, str]:
        out: dict[int, str] = {}
        text = ctx.system.read_text("/etc/passwd") or ""
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].isdigit():
                out.setdefault(int(parts[2]), parts[0])
        return out

    return cached(ctx, "users", compute)


_UNIT_RE = re.compile(r"/([A-Za-z0-9@_.\\:-]+\.(?:service|scope))(?:/|$)")
_CONTAINER_RE = re.compile(r"(?:docker[-/]|cri-containerd-|crio-|libpod-|containerd/)([0-9a-f]{12,64})")


def proc_info(ctx: CheckContext, pid: int, libs: Iterable[str] = ()) -> ProcInfo:
    """Owner, executable and cgroup of a process, read from ``/proc/<pid>``."""
    sys_ = ctx.system
    status = sys_.read_text(f"/proc/{pid}/status", 8192) or ""
    uid: int | None = None
    m = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    if m:
        uid = int(m.group(1))
    comm = (sys_.read_text(f"/proc/{pid}/comm", 256) or "").strip() or None
    exe = sys_.readlink(f"/proc/{pid}/exe")
    cgroup_text = (sys_.read_text(f"/proc/{pid}/cgroup", 8192) or "").strip()
    # cgroup v2: one "0::/path" line; v1: several. Keep the most specific path.
    paths = [line.split(":", 2)[2] for line in cgroup_text.splitlines() if line.count(":") >= 2]
    cg = max(paths, key=len) if paths else None
    unit = None
    container = None
    if cg:
        units = _UNIT_RE.findall(cg)
        unit = units[-1] if units else None
        mc = _CONTAINER_RE.search(cg)
        container = mc.group(1)[:12] if mc else None
    user = users(ctx).get(uid) if uid is not None else None
    return ProcInfo(pid, comm, exe, uid, user, cg, unit, container, tuple(sorted(set(libs))))


def _parse_dist(dirname: str) -> tuple[str, str] | None:
    m = _DIST_RE.match(dirname)
    if not m:
        return None
    return m.group("name"), m.group("version")


def _wheel_for(ctx: CheckContext, site: str, prefixes: tuple[str, ...]) -> tuple[str, str] | None:
    """The first ``nvidia_*`` distribution in ``site`` whose name starts with one of ``prefixes``."""
    for name, version in site_dists(ctx, site):
        low = name.lower().replace("-", "_")
        if any(low.startswith(p) for p in prefixes):
            return name, version
    return None


def site_dists(ctx: CheckContext, site: str) -> list[tuple[str, str]]:
    """The ``nvidia_*`` and ``torch`` distributions installed in one site-packages directory."""

    def compute() -> list[tuple[str, str]]:
        out = []
        for path in [
            *ctx.system.glob(site + "/nvidia_*.dist-info"),
            *ctx.system.glob(site + "/torch-*.dist-info"),
        ]:
            parsed = _parse_dist(path.rsplit("/", 1)[-1])
            if parsed:
                out.append(parsed)
        return sorted(out)

    return cached(ctx, "dists:" + site, compute)


# -- the inventory ---------------------------------------------------------------------------------------------
def inventory(ctx: CheckContext) -> Inventory:
    """Everything discovery finds, once per run."""
    return cached(ctx, "inventory", lambda: _discover(ctx))


def _discover(ctx: CheckContext) -> Inventory:
    inv = Inventory()
    _toolkits(ctx, inv)
    _processes(ctx, inv)
    _sites(ctx, inv)
    _cudnn_files(ctx, inv)
    inv.runtimes = _dedupe(inv.runtimes)
    inv.cudnn = _dedupe(inv.cudnn)
    return inv


def _dedupe(items: list[Found]) -> list[Found]:
    # The same toolkit is often reachable as /usr/local/cuda, cuda-13 and cuda-13.0: keep one, name all.
    seen: dict[tuple[Any, ...], Found] = {}
    for f in items:
        k = (f.kind, f.source, f.version, f.cuda_major, f.pid, f.package if f.source != "toolkit" else None)
        if k in seen:
            prev = seen[k]
            if f.where not in prev.where.split(", "):
                seen[k] = Found(
                    prev.kind, prev.version, prev.source, prev.where + ", " + f.where, prev.cuda_major,
                    prev.package, prev.pid, prev.note,
                )  # fmt: skip
        else:
            seen[k] = f
    return list(seen.values())


def _toolkits(ctx: CheckContext, inv: Inventory) -> None:
    sys_ = ctx.system
    for pattern in TOOLKIT_GLOBS:
        for path in sys_.glob(pattern):
            text = sys_.read_text(path, 65536)
            if text is None:
                continue
            version: str | None = None
            if path.endswith(".json"):
                try:
                    doc = json.loads(text)
                    version = str(doc.get("cuda", {}).get("version", "")) or None
                except (ValueError, AttributeError):
                    inv.notes.append(f"{path}: not valid JSON")
            else:
                m = re.search(r"CUDA Version (\d+\.\d+(?:\.\d+)?)", text)
                version = m.group(1) if m else None
            if not version:
                continue
            try:
                v = Version.parse(version)
            except ValueError:
                inv.notes.append(f"{path}: unreadable version {version!r}")
                continue
            inv.runtimes.append(Found("runtime", v, "toolkit", path, v.major))
    nvcc = sys_.which("nvcc")
    for cand in [nvcc, *sys_.glob("/usr/local/cuda*/bin/nvcc")]:
        if not cand:
            continue
        r = sys_.run([cand, "--version"], 10.0)
        m = _NVCC_RE.search(r.stdout)
        if r.ok and m:
            # "release 13.0" is the toolkit; "V13.0.88" is the compiler's own build number.
            v = Version.parse(m.group(1))
            inv.runtimes.append(
                Found("runtime", v, "nvcc", f"{cand} --version", v.major, note=f"nvcc V{m.group(2)}")
            )
        break  # the first nvcc found is the one builds use


def _processes(ctx: CheckContext, inv: Inventory) -> None:
    sys_ = ctx.system
    unreadable = 0
    for maps_path in sys_.glob("/proc/[0-9]*/maps"):
        name = maps_path.split("/")[2]
        if not name.isdigit():
            continue
        pid = int(name)
        text = sys_.read_text(maps_path, 4 << 20)
        if text is None:
            unreadable += 1
            continue
        libs = set()
        for line in text.splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/") and ".so" in parts[5]:
                p = parts[5].removesuffix(" (deleted)")
                # The runtime and cuDNN, not libcuda.so: the driver library is loaded by NVML users too
                # (this audit among them) and says nothing about the CUDA a process was built with.
                if "cudart" in p or "cudnn" in p or "torch_cuda" in p or _COMPAT_RE.search(p):
                    libs.add(p)
        if not libs:
            continue
        info = proc_info(ctx, pid, libs)
        inv.processes[pid] = info
        for lib in sorted(libs):
            _from_loaded_lib(ctx, inv, pid, info, lib)
    if unreadable:
        inv.notes.append(
            f"{unreadable} processes' /proc/<pid>/maps could not be read"
            + (" (run as root to see every process)" if sys_.euid() != 0 else "")
        )


def _site_of(path: str) -> str | None:
    m = _SITE_RE.match(path)
    return m.group(1) if m else None


def _from_loaded_lib(ctx: CheckContext, inv: Inventory, pid: int, info: ProcInfo, lib: str) -> None:
    who = f"pid {pid} ({info.exe or info.comm or '?'})"
    site = _site_of(lib)
    m = _CUDART_RE.search(lib)
    if m:
        compat = next((x for x in sorted(info.libs) if _COMPAT_RE.search(x)), None)
        v = Version.parse(m.group(1))
        pkg = None
        if len(v.parts) < 2 and site:
            wheel = _wheel_for(ctx, site, ("nvidia_cuda_runtime",))
            if wheel:
                pkg = f"{wheel[0]}-{wheel[1]}"
                v = Version.parse(wheel[1]).major_minor()
        if len(v.parts) < 2:
            inv.runtimes.append(
                Found(
                    "runtime",
                    v,
                    "process",
                    f"{who}: {lib}",
                    v.major,
                    pkg,
                    pid,
                    "minor version unknown",
                    compat,
                )
            )
        else:
            inv.runtimes.append(
                Found("runtime", v.major_minor(), "process", f"{who}: {lib}", v.major, pkg, pid, None, compat)
            )
        return
    m = _CUDNN_RE.search(lib)
    if m and "/libcudnn" in lib:
        # Only the main library names the version reliably; sub-libraries share it.
        if not re.search(r"/libcudnn\.so\.", lib) and any(
            re.search(r"/libcudnn\.so\.", x) for x in info.libs
        ):
            return
        v = Version.parse(m.group(1))
        pkg, major = _cudnn_package(ctx, lib, site)
        if site and len(v.parts) < 3:
            wheel = _wheel_for(ctx, site, ("nvidia_cudnn",))
            if wheel:
                v = Version.parse(".".join(wheel[1].split(".")[:3]))
        inv.cudnn.append(Found("cudnn", v, "process", f"{who}: {lib}", major, pkg, pid))
        return
    if _TORCH_CUDA_RE.search(lib) and site and not any(_CUDART_RE.search(x) for x in info.libs):
        # torch with its runtime mapped is judged by that runtime; this covers a statically linked one.
        tv = torch_cuda(ctx, site)
        if tv:
            inv.runtimes.append(
                Found(
                    "runtime",
                    tv[0],
                    "process",
                    f"{who}: {lib} (torch {tv[1]})",
                    tv[0].major,
                    f"torch-{tv[1]}",
                    pid,
                )
            )


def _cudnn_package(ctx: CheckContext, path: str, site: str | None) -> tuple[str | None, int | None]:
    """The package a cuDNN file came from and the CUDA major its name says."""
    if site:
        wheel = _wheel_for(ctx, site, ("nvidia_cudnn",))
        if wheel:
            return f"{wheel[0]}-{wheel[1]}", cuda_major_from_package(wheel[0])
        return None, None
    pkg = owning_package(ctx, resolve(ctx.system, path))
    return pkg, cuda_major_from_package(pkg) if pkg else None


def torch_cuda(ctx: CheckContext, site: str) -> tuple[Version, str] | None:
    """torch's CUDA version in ``site`` from its metadata and ``torch/version.py``, never importing it."""

    def compute() -> tuple[Version, str] | None:
        for name, version in site_dists(ctx, site):
            if name.lower() != "torch":
                continue
            text = ctx.system.read_text(f"{site}/torch/version.py", 65536) or ""
            m = _TORCH_VERSION_PY_RE.search(text)
            if m:
                try:
                    return Version.parse(m.group(1)).major_minor(), version
                except ValueError:
                    pass
            # No version.py answer: the package metadata. Its Version carries the local tag (+cu124)
            # even when the dist-info directory name does not; Requires-Dist pins the runtime wheel.
            meta = ctx.system.read_text(f"{site}/{name}-{version}.dist-info/METADATA", 65536) or ""
            mv = re.search(r"^Version:\s*(\S+)", meta, re.MULTILINE)
            full = mv.group(1) if mv else version
            tag = cuda_from_torch_tag(full)
            if tag:
                return tag, full
            rd = re.search(
                r"^Requires-Dist:\s*nvidia-cuda-runtime(?:-cu\d+)?\s*==\s*([0-9.]+)", meta, re.MULTILINE
            )
            if rd:
                try:
                    return Version.parse(rd.group(1)).major_minor(), full
                except ValueError:
                    return None
            return None
        return None

    return cached(ctx, "torch:" + site, compute)


def _sites(ctx: CheckContext, inv: Inventory) -> None:
    sys_ = ctx.system
    sites: list[str] = []
    for pattern in SITE_GLOBS:
        sites.extend(sys_.glob(pattern))
    for proc in inv.processes.values():
        for lib in proc.libs:
            s = _site_of(lib)
            if s:
                sites.append(s)
    sites.extend(ctx.config.settings.gpu.python_envs)
    inv.sites = list(dict.fromkeys(sites))
    for site in inv.sites:
        for name, version in site_dists(ctx, site):
            low = name.lower()
            where = f"{site}/{name}-{version}.dist-info"
            try:
                v = Version.parse(version.split("+")[0])
            except ValueError:
                inv.notes.append(f"{where}: unreadable version")
                continue
            if low.startswith("nvidia_cuda_runtime"):
                inv.runtimes.append(
                    Found("runtime", v.major_minor(), "wheel", where, v.major, f"{name}-{version}")
                )
            elif low.startswith("nvidia_cudnn"):
                major = cuda_major_from_package(name)
                inv.cudnn.append(
                    Found("cudnn", Version(v.parts[:3]), "wheel", where, major, f"{name}-{version}")
                )
            elif low == "torch":
                tv = torch_cuda(ctx, site)
                if tv:
                    inv.runtimes.append(
                        Found(
                            "runtime",
                            tv[0],
                            "torch",
                            f"{site}/torch/version.py",
                            tv[0].major,
                            f"torch-{version}",
                        )
                    )
        header = f"{site}/nvidia/cudnn/include/cudnn_version.h"
        _cudnn_header(ctx, inv, header, site)


def _cudnn_header(ctx: CheckContext, inv: Inventory, path: str, site: str | None) -> None:
    text = ctx.system.read_text(path, 65536)
    if text is None:
        return
    parts = dict(_HEADER_DEFINE_RE.findall(text))
    if "MAJOR" not in parts or "MINOR" not in parts:
        return
    v = Version((int(parts["MAJOR"]), int(parts["MINOR"]), int(parts.get("PATCHLEVEL", "0"))))
    pkg, major = _cudnn_package(ctx, path, site)
    inv.cudnn.append(Found("cudnn", v, "header", path, major, pkg))


def _cudnn_files(ctx: CheckContext, inv: Inventory) -> None:
    sys_ = ctx.system
    headers: list[str] = []
    for pattern in CUDNN_HEADER_GLOBS:
        headers.extend(sys_.glob(pattern))
    for path in dict.fromkeys(headers):
        # cudnn_version.h is often an alternatives link to cudnn_version_v9.h: judge the real file once.
        real = resolve(sys_, path)
        if real != path and real in headers:
            continue
        _cudnn_header(ctx, inv, real, None)
    for pattern in CUDNN_LIB_GLOBS:
        for path in sys_.glob(pattern):
            m = re.search(r"/libcudnn\.so\.(\d+\.\d+\.\d+)$", path)
            if not m:
                continue  # libcudnn.so.9 is a link to the versioned file, found on its own
            pkg, major = _cudnn_package(ctx, path, None)
            inv.cudnn.append(Found("cudnn", Version.parse(m.group(1)), "library", path, major, pkg))
