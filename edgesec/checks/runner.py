"""The check runner: select checks, run them in parallel with a per-check timeout, build the result.

Each check runs in its own daemon thread (at most ``workers`` at a time). A check that raises becomes an
ERROR finding with the exception; one that is still running at its deadline becomes an ERROR finding
("timed out") and its thread is abandoned -- a daemon thread cannot keep the process alive, so one hang
never stops the run or the exit. Nothing here prints or writes files: the CLI does.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgesec import __version__
from edgesec.checks.interface import Check, CheckContext, Finding, Severity, Status
from edgesec.checks.profiles import Profile, expand
from edgesec.checks.registry import KNOWN_FAMILIES, Catalog
from edgesec.checks.result import SCHEMA, SCHEMA_VERSION, score_frameworks, summarize, worst
from edgesec.checks.waivers import Waiver
from edgesec.errors import UsageError


@dataclass
class Outcome:
    """What one check produced, and how long it took."""

    check_id: str
    findings: list[Finding]
    duration_s: float


@dataclass
class RunPlan:
    """Which checks run, and the families that are selected but have nothing installed."""

    checks: list[type[Check]]
    empty_families: list[str] = field(default_factory=list)


def plan(catalog: Catalog, profile: Profile, only: Sequence[str] = ()) -> RunPlan:
    """The checks a profile selects, narrowed by ``--only`` (ids or families; each must name something)."""
    ids = sorted(catalog.checks)
    selected = [i for i in ids if profile.selects(i)]
    families = {f for f in profile.families() if f in KNOWN_FAMILIES or f == "*"}
    if "*" in families:
        families = set(KNOWN_FAMILIES)
    if only:
        known = set(ids) | set(catalog.families)
        for o in only:
            if o not in known and not expand([o], ids):
                raise UsageError(
                    f"--only {o!r} names no check or family",
                    hint=f"families: {', '.join(catalog.families)}; see 'edgesec checks list'",
                )
        selected = [i for i in ids if expand(only, [i])]
        families = {o for o in only if o in KNOWN_FAMILIES}
    present = {catalog.checks[i].meta.family for i in selected}
    return RunPlan([catalog.checks[i] for i in selected], sorted(families - present))


def _execute(cls: type[Check], ctx: CheckContext) -> list[Finding]:
    cid = cls.meta.id
    try:
        produced = list(cls().run(ctx))
    except Exception as exc:  # noqa: BLE001 - by design: a crashing check is an ERROR finding, not a crashed run
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return [
            Finding(
                cid,
                Status.ERROR,
                f"check raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                evidence={"traceback": "".join(tb[-3:])[-2000:]},
            )
        ]
    bad = [f for f in produced if not isinstance(f, Finding) or f.check_id != cid]
    if bad:
        return [Finding(cid, Status.ERROR, f"check returned {len(bad)} invalid findings (wrong type or id)")]
    if not produced:
        # A check that says nothing must not read as a pass.
        return [Finding(cid, Status.ERROR, "check returned no findings")]
    return produced


def run_checks(
    checks: Sequence[type[Check]],
    ctx: CheckContext,
    *,
    timeout_s: float,
    workers: int,
    timeouts: Mapping[str, float] | None = None,
) -> list[Outcome]:
    """Run ``checks`` in parallel; every check yields an :class:`Outcome`, whatever it does."""
    done: queue.Queue[tuple[str, list[Finding], float]] = queue.Queue()
    pending = list(checks)
    running: dict[str, tuple[float, float]] = {}  # id -> (start, deadline)
    outcomes: dict[str, Outcome] = {}
    per = dict(timeouts or {})

    def work(cls: type[Check]) -> None:
        t0 = time.monotonic()
        findings = _execute(cls, ctx)
        done.put((cls.meta.id, findings, time.monotonic() - t0))

    while pending or running:
        while pending and len(running) < workers:
            cls = pending.pop(0)
            limit = per.get(cls.meta.id) or cls.meta.timeout_s or timeout_s
            now = time.monotonic()
            running[cls.meta.id] = (now, now + limit)
            threading.Thread(target=work, args=(cls,), name=f"check-{cls.meta.id}", daemon=True).start()
        next_deadline = min(d for _s, d in running.values())
        try:
            cid, findings, took = done.get(timeout=max(0.0, next_deadline - time.monotonic()))
            if cid in running:  # a late answer from an abandoned check is ignored
                del running[cid]
                outcomes[cid] = Outcome(cid, findings, took)
        except queue.Empty:
            pass
        now = time.monotonic()
        for cid, (start, deadline) in list(running.items()):
            if now >= deadline:
                del running[cid]
                outcomes[cid] = Outcome(
                    cid,
                    [
                        Finding(
                            cid,
                            Status.ERROR,
                            f"check timed out after {deadline - start:.1f}s and was abandoned",
                            evidence={"timeout_s": round(deadline - start, 3)},
                        )
                    ],
                    now - start,
                )
    return [outcomes[c.meta.id] for c in checks]


def _apply_waivers(
    findings: list[dict[str, Any]], waivers: Sequence[Waiver], today: dt.date, used: dict[str, int]
) -> None:
    for f in findings:
        if f["status"] not in ("FAIL", "WARN"):
            continue
        for w in waivers:
            if w.covers(f["check_id"], f["resource"]) and w.state(today) == "active":
                f["waived_status"] = f["status"]
                f["status"] = Status.WAIVED.value
                f["waiver"] = w.id
                used[w.id] = used.get(w.id, 0) + 1
                break


def build_result(
    *,
    run_id: str,
    started: dt.datetime,
    finished: dt.datetime,
    outcomes: Sequence[Outcome],
    catalog: Catalog,
    plan_: RunPlan,
    profile: Profile,
    fail_on: Severity,
    waivers: Sequence[Waiver],
    only: Sequence[str],
    host: str,
    mode: str,
    config_path: str | None,
    today: dt.date,
) -> dict[str, Any]:
    """Assemble the canonical result (without ``changes``; the CLI adds the diff against history)."""
    used: dict[str, int] = {}
    checks_out: list[dict[str, Any]] = []
    for o in outcomes:
        meta = catalog.checks[o.check_id].meta
        sev = profile.severity_of(meta.id, meta.severity)
        findings = []
        for f in o.findings:
            d = f.to_dict()
            d["severity"] = (f.severity or sev).label()
            d["remediation"] = f.remediation or (
                meta.remediation if f.status in (Status.FAIL, Status.WARN) else None
            )
            findings.append(d)
        _apply_waivers(findings, waivers, today, used)
        checks_out.append(
            {
                "id": meta.id,
                "family": meta.family,
                "title": meta.title,
                "severity": sev.label(),
                "rationale": meta.rationale,
                "remediation": meta.remediation,
                "controls": list(meta.controls),
                "origin": catalog.origin.get(meta.id, ""),
                "status": worst(f["status"] for f in findings),
                "duration_s": round(o.duration_s, 4),
                "findings": findings,
            }
        )
    for fam in plan_.empty_families:
        checks_out.append(
            {
                "id": f"{fam}.installed",
                "family": fam,
                "title": f"{fam} checks",
                "severity": "info",
                "rationale": f"The profile selects the {fam} family.",
                "remediation": f"Install an edgesec build that includes the {fam} checks.",
                "controls": [],
                "origin": "runner",
                "status": "SKIP",
                "duration_s": 0.0,
                "findings": [
                    {
                        "check_id": f"{fam}.installed",
                        "status": "SKIP",
                        "message": f"no {fam} checks are installed in this edgesec build",
                        "resource": None,
                        "evidence": {},
                        "severity": "info",
                        "remediation": None,
                    }
                ],
            }
        )
    for prob in catalog.problems:
        cid = "runner.load"
        checks_out.append(
            {
                "id": f"{cid}.{len(checks_out)}",
                "family": "runner",
                "title": f"load {prob.source}",
                "severity": "high",
                "rationale": "Every installed check must load; a check that cannot load leaves a gap.",
                "remediation": "Fix or remove the plug-in named in the message.",
                "controls": [],
                "origin": prob.source,
                "status": "ERROR",
                "duration_s": 0.0,
                "findings": [
                    {
                        "check_id": f"{cid}.{len(checks_out)}",
                        "status": "ERROR",
                        "message": f"{prob.source}: {prob.message}",
                        "resource": prob.source,
                        "evidence": {},
                        "severity": "high",
                        "remediation": None,
                    }
                ],
            }
        )
    status_of = {c["id"]: c["status"] for c in checks_out}
    waiver_out = []
    for w in waivers:
        d = w.to_json()
        d["state"] = w.state(today)
        d["days_left"] = (w.expires - today).days
        d["waived_findings"] = used.get(w.id, 0)
        waiver_out.append(d)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "run": {
            "id": run_id,
            "started": started.isoformat(),
            "finished": finished.isoformat(),
            "duration_s": round((finished - started).total_seconds(), 3),
            "host": host,
            "edgesec_version": __version__,
            "profile": profile.id,
            "profile_title": profile.title,
            "profile_title_zh": profile.title_zh,
            "only": list(only),
            "mode": mode,
            "config": config_path,
        },
        "summary": summarize(checks_out, fail_on),
        "checks": checks_out,
        "frameworks": score_frameworks(
            [fw.model_dump() for fw in profile.frameworks],
            status_of,
            list(catalog.checks),
            {cid: cls.meta.controls for cid, cls in catalog.checks.items()},
            [cid for cid, cls in catalog.checks.items() if cls.meta.housekeeping],
        ),
        "waivers": waiver_out,
        "changes": None,
    }
