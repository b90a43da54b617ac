"""One audit run end to end: build the context (live, recording or replay), run, diff, keep history.

:func:`run_audit` is what ``edgesec audit`` calls; it returns the canonical result and writes nothing but
history (under a lock), the optional recording and audit events. Reports are rendered by the CLI.
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesec._fs import ensure_private_dir, locked
from edgesec.checks import history
from edgesec.checks.interface import CheckContext, Severity
from edgesec.checks.probes import (
    CachingSystem,
    FixedClock,
    LiveClock,
    LiveSystem,
    NvmlProbe,
    Recorder,
    RecordingClock,
    RecordingSystem,
    ReplaySystem,
    SystemProbe,
    load_recording,
)
from edgesec.checks.profiles import Profile, load_profile
from edgesec.checks.registry import Catalog, load_catalog
from edgesec.checks.result import diff
from edgesec.checks.runner import build_result, plan, run_checks
from edgesec.checks.waivers import Waiver, load_store, load_waivers
from edgesec.config import LoadedConfig
from edgesec.errors import InputError


@dataclass
class AuditOptions:
    """What the operator asked for (the CLI's flags, already parsed)."""

    profile: str | None = None
    only: Sequence[str] = ()
    fail_on: str | None = None
    waivers_file: Path | None = None
    baseline: Path | None = None
    record: Path | None = None
    replay: Path | None = None
    timeout_s: float | None = None
    keep_history: bool = True
    catalog: Catalog | None = None  # tests hand in their own checks
    extra: dict[str, Any] = field(default_factory=dict)


def choose_profile(cfg: LoadedConfig, requested: str | None) -> Profile:
    if requested:
        return load_profile(requested)
    checks_profile = cfg.settings.checks.profile
    if cfg.source_of("checks.profile") != "default":
        return load_profile(checks_profile)
    return load_profile(cfg.settings.site.profile)


def _nvml(mode: str, recorder: Recorder | None, calls: dict[str, Any] | None) -> NvmlProbe | None:
    """The gpu family's NVML probe, imported lazily; None when that module or the library is absent."""
    try:
        nv = importlib.import_module("edgesec.checks.families.gpu.nvml")
    except ImportError:
        return None
    if mode == "replay":
        return nv.ReplayNvml(calls or {})  # type: ignore[no-any-return]
    live = nv.LiveNvml()
    if recorder is not None:
        return nv.RecordingNvml(live, recorder)  # type: ignore[no-any-return]
    return live  # type: ignore[no-any-return]


def collect_waivers(cfg: LoadedConfig, explicit: Path | None) -> list[Waiver]:
    out = list(load_store(cfg.home))
    configured = cfg.settings.checks.waivers_file
    for src in [Path(configured).expanduser()] if configured else []:
        out.extend(load_waivers(src))
    if explicit is not None:
        out.extend(load_waivers(explicit))
    seen: set[str] = set()
    unique = []
    for w in out:
        if w.id not in seen:
            seen.add(w.id)
            unique.append(w)
    return unique


def run_audit(cfg: LoadedConfig, opts: AuditOptions) -> dict[str, Any]:
    """Run the audit and return the canonical result (with ``changes``); raises on bad input (exit 2)."""
    if opts.record and opts.replay:
        raise InputError("--record and --replay cannot be used together")
    profile = choose_profile(cfg, opts.profile)
    # --fail-on, then the site's own [checks] fail_on if it set one, then the profile's, then the default.
    site_fail_on = cfg.settings.checks.fail_on if cfg.source_of("checks.fail_on") != "default" else None
    fail_on = Severity.parse(opts.fail_on or site_fail_on or profile.fail_on or cfg.settings.checks.fail_on)
    waivers = collect_waivers(cfg, opts.waivers_file)
    baseline = history.load_result(opts.baseline) if opts.baseline else None
    catalog = opts.catalog or load_catalog()
    the_plan = plan(catalog, profile, opts.only)

    recorder: Recorder | None = None
    system: SystemProbe
    mode = "live"
    if opts.replay:
        rec = load_recording(opts.replay)
        system = ReplaySystem(rec["calls"])
        if rec.get("clock") is None:
            raise InputError(f"recording {opts.replay} has no clock")
        clock: Any = FixedClock(dt.datetime.fromisoformat(rec["clock"]))
        mode = "replay"
        calls = rec["calls"]
    else:
        system = LiveSystem()
        clock = LiveClock()
        calls = None
        if opts.record:
            recorder = Recorder()
            system = RecordingSystem(system, recorder)
            clock = RecordingClock(clock, recorder)
        system = CachingSystem(system)
    started = clock.now()
    t0 = time.monotonic()
    selected_families = {c.meta.family for c in the_plan.checks}
    nvml = _nvml(mode, recorder, calls) if "gpu" in selected_families else None
    ctx = CheckContext(
        system=system, clock=clock, config=cfg, nvml=nvml, profile=profile.id, params=profile.params()
    )
    timeout = opts.timeout_s or cfg.settings.checks.check_timeout_s
    per = {k: v.timeout_s for k, v in profile.checks.items() if v.timeout_s}
    outcomes = run_checks(
        the_plan.checks, ctx, timeout_s=timeout, workers=cfg.settings.checks.workers, timeouts=per
    )
    # Wall time from the monotonic clock: a replayed run's clock is frozen at the recorded start.
    finished = started + dt.timedelta(seconds=time.monotonic() - t0)
    run_id = history.new_run_id()
    host = system.hostname() if mode == "live" else _replay_hostname(system)
    result = build_result(
        run_id=run_id,
        started=started,
        finished=finished,
        outcomes=outcomes,
        catalog=catalog,
        plan_=the_plan,
        profile=profile,
        fail_on=fail_on,
        waivers=waivers,
        only=list(opts.only),
        host=host,
        mode=mode,
        config_path=str(cfg.path) if cfg.path else None,
        today=started.date(),
    )
    if recorder is not None and opts.record:
        recorder.save(opts.record)
    if opts.keep_history:
        ensure_private_dir(cfg.home / "checks")
        with locked(cfg.home / "checks" / "history.lock", timeout=60):
            if baseline is not None:
                result["changes"] = diff(baseline, result, source=f"baseline {opts.baseline}")
            else:
                result["changes"] = diff(history.previous(cfg.home, run_id), result, source="previous run")
            history.store(cfg.home, result, cfg.settings.checks.history_keep)
    else:
        result["changes"] = diff(baseline, result, source=f"baseline {opts.baseline}" if baseline else "none")
    _emit_events(result, _newly_expired(cfg, result))
    return result


def _newly_expired(cfg: LoadedConfig, result: dict[str, Any]) -> set[str]:
    """Expired waivers not announced before: the expiry event is recorded once, not on every nightly run."""
    import json

    from edgesec._fs import atomic_write

    expired = {w["id"] for w in result["waivers"] if w["state"] == "expired"}
    if not expired:
        return set()
    d = ensure_private_dir(cfg.home / "checks")
    seen_path = d / "waivers-expired.json"
    with locked(d / "waivers.lock", timeout=30):
        try:
            seen = set(json.loads(seen_path.read_text()))
        except (OSError, ValueError, TypeError):
            seen = set()
        new = expired - seen
        if new:
            atomic_write(seen_path, json.dumps(sorted(seen | new)) + "\n", mode=0o600)
    return new


def _replay_hostname(system: SystemProbe) -> str:
    try:
        return system.hostname()
    except InputError:
        return "replayed-host"
    except Exception:  # noqa: BLE001 - ProbeNotRecorded and kin: the host name is cosmetic here
        return "replayed-host"


def _emit_events(result: dict[str, Any], newly_expired: set[str]) -> None:
    from edgesec.auditing import AuditEvent, emit

    s = result["summary"]
    run = result["run"]
    for w in result["waivers"]:
        if w["id"] in newly_expired:
            emit(
                AuditEvent(
                    action="checks.waiver.expired",
                    category=("configuration",),
                    type=("info",),
                    outcome="failure",
                    severity="medium",
                    part="checks",
                    message=f"waiver {w['id']} for {w['check']} expired on {w['expires']}; it no longer waives",
                    fields={
                        "edgesec.checks.waiver.id": w["id"],
                        "edgesec.checks.waiver.check": w["check"],
                        "edgesec.checks.waiver.expires": w["expires"],
                        "edgesec.checks.run_id": run["id"],
                    },
                )
            )
    emit(
        AuditEvent(
            action="checks.audit.completed",
            category=("configuration",),
            type=("info",),
            outcome="success" if s["verdict"] == "pass" else "failure",
            severity="info" if s["verdict"] == "pass" else "high",
            part="checks",
            message=f"audit {run['id']} ({run['profile']}): {s['verdict']}, "
            f"{s['by_status']['FAIL']} failed, {s['by_status']['ERROR']} errored",
            fields={
                "edgesec.checks.run_id": run["id"],
                "edgesec.checks.profile": run["profile"],
                "edgesec.checks.verdict": s["verdict"],
                "edgesec.checks.failed": s["by_status"]["FAIL"],
                "edgesec.checks.errored": s["by_status"]["ERROR"],
                "edgesec.checks.mode": run["mode"],
            },
        )
    )
