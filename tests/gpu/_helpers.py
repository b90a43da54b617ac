"""Helpers for gpu tests: contexts over replayed or edited recordings, and finding lookups."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgesec.checks.families.gpu import CHECKS
from edgesec.checks.families.gpu.nvml import ReplayNvml
from edgesec.checks.families.gpu.nvml import key as nvml_key
from edgesec.checks.interface import Check, CheckContext, Finding, Status
from edgesec.checks.probes import FixedClock, ReplaySystem, call_key
from edgesec.checks.profiles import available_profiles, load_profile
from edgesec.config import load_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gpu" / "h200"
BY_ID: dict[str, type[Check]] = {c.meta.id: c for c in CHECKS}

# Every read limit the gpu checks use, so an edited file answers whichever read asks for it.
_LIMITS = (256, 4096, 8192, 65536, 1 << 18, 1 << 20, 4 << 20)


def recording(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"recording-{name}.json").read_text())


class Calls:
    """A recording's calls, edited for a scenario: every edit is a plain replacement of one answer."""

    def __init__(self, calls: Mapping[str, Any]) -> None:
        self.calls = dict(calls)

    def nvml(self, fn: str, *args: Any, ok: Any = None, error: str | None = None) -> Calls:
        self.calls[nvml_key(fn, *args)] = {"error": {"name": error, "code": 3}} if error else {"ok": ok}
        return self

    def nvml_get(self, fn: str, *args: Any) -> Any:
        return self.calls[nvml_key(fn, *args)]["ok"]

    def driver(self, version: str, cuda_raw: int) -> Calls:
        return self.nvml("nvmlSystemGetDriverVersion", ok=version).nvml(
            "nvmlSystemGetCudaDriverVersion_v2", ok=cuda_raw
        )

    def file(self, path: str, text: str | None) -> Calls:
        for limit in _LIMITS:
            self.calls[call_key("read_text", path, limit)] = text
        return self

    def read(self, path: str) -> str | None:
        for limit in _LIMITS:
            k = call_key("read_text", path, limit)
            if k in self.calls:
                return self.calls[k]  # type: ignore[no-any-return]
        return None

    def glob(self, pattern: str, hits: list[str]) -> Calls:
        self.calls[call_key("glob", pattern)] = hits
        return self

    def stat(self, path: str, mode: int, uid: int = 0, gid: int = 0) -> Calls:
        self.calls[call_key("stat", path)] = {
            "mode": mode, "uid": uid, "gid": gid, "size": 0, "mtime": 0.0, "is_dir": False, "is_link": False,
        }  # fmt: skip
        return self

    def command(self, argv: list[str], stdout: str, returncode: int = 0) -> Calls:
        self.calls[call_key("run", argv)] = {
            "argv": argv,
            "returncode": returncode,
            "stdout": stdout,
            "stderr": "",
        }
        return self

    def which(self, name: str, path: str | None) -> Calls:
        self.calls[call_key("which", name)] = path
        return self

    def readlink(self, path: str, target: str | None) -> Calls:
        self.calls[call_key("readlink", path)] = target
        return self

    def gpu_pids(self) -> list[int]:
        return [int(p["pid"]) for p in self.nvml_get("nvmlDeviceGetComputeRunningProcesses", 0)]

    def pid_of_user(self, uid: int) -> int:
        for pid in self.gpu_pids():
            status = self.read(f"/proc/{pid}/status") or ""
            if any(
                line.split()[1:2] == [str(uid)] for line in status.splitlines() if line.startswith("Uid:")
            ):
                return pid
        raise AssertionError(f"no GPU process of uid {uid} in the recording")


def context(
    calls: Calls | Mapping[str, Any],
    *,
    profile: str = "baseline",
    at: dt.datetime | None = None,
    config_text: str | None = None,
    tmp: Path | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> CheckContext:
    raw = calls.calls if isinstance(calls, Calls) else dict(calls)
    cfg_path = None
    if config_text is not None:
        assert tmp is not None
        cfg_path = tmp / "edgesec.toml"
        cfg_path.write_text(config_text)
    return CheckContext(
        system=ReplaySystem(raw),
        clock=FixedClock(at or dt.datetime(2026, 11, 29, 9, 14, tzinfo=dt.UTC)),
        config=load_config(cfg_path),
        nvml=ReplayNvml(raw),
        profile=profile,
        # As the runner builds it: the named shipped profile's rules, unless the test gives its own.
        params=params if params is not None else _shipped_params(profile),
    )


def _shipped_params(profile: str) -> dict[str, dict[str, Any]]:
    return load_profile(profile).params() if profile in available_profiles() else {}


def run(check_id: str, ctx: CheckContext) -> list[Finding]:
    return list(BY_ID[check_id]().run(ctx))


def statuses(findings: Iterable[Finding]) -> set[Status]:
    return {f.status for f in findings}


def only(findings: Iterable[Finding], needle: str) -> Finding:
    hits = [f for f in findings if needle in (f.resource or "") or needle in f.message]
    assert len(hits) == 1, [f.message for f in findings]
    return hits[0]
