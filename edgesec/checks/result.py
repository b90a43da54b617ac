"""The canonical audit result: one versioned JSON document every report is rendered from.

Schema ``edgesec.audit-result`` version 1, documented field by field as a JSON Schema shipped in the
package (``edgesec/checks/reports/audit-result.schema.json``; :func:`json_schema` loads it). Top-level keys:

* ``schema``, ``schema_version`` -- ``"edgesec.audit-result"``, ``1``;
* ``run`` -- id, start/end (UTC ISO 8601), duration, host, edgesec version, profile, ``only`` filters,
  ``fail_on``, ``mode`` (``live``, ``replay``), config file;
* ``summary`` -- ``verdict`` (``pass``, ``fail``, ``incomplete``), ``exit_code``, counts of findings by
  status, counts of FAIL findings by severity, the failing findings at or above ``fail_on``;
* ``checks`` -- one entry per check run: metadata, effective severity, controls, ``status`` (worst of its
  findings), ``duration_s``, ``findings`` (status, message, resource, evidence, severity, remediation, waiver);
* ``frameworks`` -- per framework: controls with their status, and the ``score`` with the ``method``;
* ``waivers`` -- every waiver given, with ``state`` (active, expired) and what it waived;
* ``changes`` -- the diff against the previous run (or ``--baseline``): new failures, fixed, changed
  evidence, status changes.

The exit code rule (ARCHITECTURE.md): 3 when any check errored (the verdict is incomplete), else 1 when a
FAIL finding has a severity at or above ``fail_on``, else 0. WARN and WAIVED findings never fail a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from edgesec.checks.interface import Severity, Status

SCHEMA = "edgesec.audit-result"
SCHEMA_VERSION = 1


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of this result version."""
    import json
    from importlib import resources

    text = (resources.files("edgesec.checks.reports") / "audit-result.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


# Worst first: the status of a check is the worst of its findings.
STATUS_ORDER: tuple[Status, ...] = (
    Status.ERROR,
    Status.FAIL,
    Status.WARN,
    Status.WAIVED,
    Status.PASS,
    Status.SKIP,
)
FAILING = frozenset({"FAIL", "WARN", "ERROR"})


def worst(statuses: Iterable[str]) -> str:
    present = set(statuses)
    for s in STATUS_ORDER:
        if s.value in present:
            return s.value
    return Status.SKIP.value


def summarize(checks: list[dict[str, Any]], fail_on: Severity) -> dict[str, Any]:
    """Counts, verdict and exit code of a run's checks."""
    by_status: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    blocking: list[dict[str, Any]] = []
    for c in checks:
        for f in c["findings"]:
            by_status[f["status"]] += 1
            if f["status"] == "FAIL":
                by_severity[f["severity"]] += 1
                if Severity.parse(f["severity"]) >= fail_on:
                    blocking.append(
                        {"check_id": f["check_id"], "resource": f["resource"], "message": f["message"]}
                    )
    errored = by_status["ERROR"] > 0
    exit_code = 3 if errored else (1 if blocking else 0)
    verdict = "incomplete" if errored else ("fail" if blocking else "pass")
    return {
        "verdict": verdict,
        "exit_code": exit_code,
        "fail_on": fail_on.label(),
        "checks": len(checks),
        "findings": sum(by_status.values()),
        "by_status": {s.value: by_status[s.value] for s in STATUS_ORDER},
        "fail_by_severity": {s.label(): by_severity[s.label()] for s in reversed(Severity)},
        "blocking": blocking,
    }


def score_frameworks(
    frameworks: Iterable[Mapping[str, Any]],
    check_status: Mapping[str, str],
    available: Iterable[str],
    meta_controls: Mapping[str, Iterable[str]] | None = None,
    housekeeping: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Score each framework as the share of its mapped controls whose checks all pass.

    A control's checks are those the profile names (ids, families, patterns) plus every check whose own
    metadata references ``<framework id>:<control id>``, so a new check that declares its controls counts
    without editing every profile. Housekeeping checks (``CheckMeta.housekeeping``: edgesec's own data,
    such as the age of its reference tables) bear on no control and are never counted, whatever a
    pattern names.

    A control *passes* when every mapped check that ran is PASS or WAIVED and at least one of them ran
    (was not SKIP); it *fails* when any is FAIL or WARN; when none fails but one is ERROR (it could not
    read its evidence), or none ran, it is *not assessed*. The score is passed / all mapped controls: a
    control that could not be assessed counts against it, so a score never hides what was not checked.
    """
    from edgesec.checks.profiles import expand

    skip = set(housekeeping)
    avail = [a for a in available if a not in skip]
    out: list[dict[str, Any]] = []
    for fw in frameworks:
        controls = []
        for ctl in fw["controls"]:
            ref = f"{fw['id']}:{ctl['id']}"
            by_meta = [cid for cid, refs in (meta_controls or {}).items() if ref in refs]
            ids = sorted((set(expand(ctl["checks"], avail)) | set(by_meta)) - skip)
            statuses = {i: check_status[i] for i in ids if i in check_status}
            ran = {i: s for i, s in statuses.items() if s != "SKIP"}
            if any(s in ("FAIL", "WARN") for s in ran.values()):
                st = "failed"
            elif ran and all(s in ("PASS", "WAIVED") for s in ran.values()):
                st = "passed"
            else:
                st = "not_assessed"  # nothing ran, or a check could not read its evidence (ERROR)
            controls.append(
                {
                    "id": ctl["id"],
                    "title": ctl["title"],
                    "title_zh": ctl.get("title_zh"),
                    "status": st,
                    "checks": statuses,
                    "mapped": list(ctl["checks"]),
                }
            )
        n = len(controls)
        passed = sum(1 for c in controls if c["status"] == "passed")
        failed = sum(1 for c in controls if c["status"] == "failed")
        out.append(
            {
                "id": fw["id"],
                "title": fw["title"],
                "title_zh": fw.get("title_zh"),
                "controls_total": n,
                "controls_passed": passed,
                "controls_failed": failed,
                "controls_not_assessed": n - passed - failed,
                "score": round(passed / n, 4) if n else 0.0,
                "method": (
                    "score = controls passed / controls mapped; a control passes when every mapped check "
                    "that ran is PASS or WAIVED and at least one ran; FAIL or WARN fails it; an ERROR "
                    "(evidence not readable), or only skipped, missing or housekeeping checks, leave it not "
                    "assessed, which counts as not passed"
                ),
                "controls": controls,
            }
        )
    return out


def _finding_map(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in result.get("checks", []):
        for f in c.get("findings", []):
            out[f"{f['check_id']}|{f.get('resource') or ''}"] = f
    return out


def _stable(evidence: Any) -> Any:
    """Evidence without its ``stats`` (counters such as processes scanned, which change every run)."""
    if isinstance(evidence, dict):
        return {k: v for k, v in evidence.items() if k != "stats"}
    return evidence


#: A check with this status did not assess anything this run (it errored, or did not apply).
NOT_ASSESSED = frozenset({"ERROR", "SKIP"})


def _assessed(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["id"]: c for c in result.get("checks", []) if c.get("status") not in NOT_ASSESSED}


def diff(previous: Mapping[str, Any] | None, current: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """What changed between two results, compared only over checks *assessed* in both.

    A check that errored or was skipped in either run has no known state to compare: it is never
    "fixed" (or "new") because of that run. One assessed last time but not this time is listed under
    ``not_assessed`` instead.
    """
    if previous is None:
        return {
            "against": None,
            "source": source,
            "new_failures": [],
            "fixed": [],
            "changed_evidence": [],
            "status_changes": [],
            "not_assessed": [],
        }
    prev_checks, cur_checks = _assessed(previous), _assessed(current)
    both = set(prev_checks) & set(cur_checks)
    not_assessed = []
    for c in current.get("checks", []):
        if c["id"] in prev_checks and c["id"] not in cur_checks:
            why = next(
                (f.get("message") for f in c.get("findings", []) if f.get("status") == c["status"]), None
            )
            not_assessed.append(
                {
                    "check_id": c["id"],
                    "resource": None,
                    "before": prev_checks[c["id"]].get("status"),
                    "after": c.get("status"),
                    "message": why,
                }
            )
    pm, cm = _finding_map(previous), _finding_map(current)
    new_failures, fixed, changed, status_changes = [], [], [], []
    for key in sorted(set(pm) | set(cm)):
        check_id = key.split("|", 1)[0]
        if check_id not in both:
            continue
        p, c = pm.get(key), cm.get(key)
        ps = p["status"] if p else None
        cs = c["status"] if c else None
        ref = {
            "check_id": check_id,
            "resource": (c or p or {}).get("resource"),
            "before": ps,
            "after": cs,
            "message": (c or p or {}).get("message"),
        }
        if cs in FAILING and ps not in FAILING:
            new_failures.append(ref)
        elif ps in FAILING and cs not in FAILING:
            fixed.append(ref)
        elif ps != cs:
            status_changes.append(ref)
        elif p and c and _stable(p.get("evidence")) != _stable(c.get("evidence")):
            changed.append({**ref, "evidence_before": p.get("evidence"), "evidence_after": c.get("evidence")})
    return {
        "against": previous.get("run", {}).get("id"),
        "against_started": previous.get("run", {}).get("started"),
        "source": source,
        "new_failures": new_failures,
        "fixed": fixed,
        "changed_evidence": changed,
        "status_changes": status_changes,
        "not_assessed": not_assessed,
    }
