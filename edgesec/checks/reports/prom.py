"""Prometheus text exposition format (for node_exporter's textfile collector on scheduled runs)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in kw.items()) + "}"


def render(result: Mapping[str, Any], lang: str = "en") -> str:
    run = result["run"]
    s = result["summary"]
    prof = run["profile"]
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{lbl} {val:g}" for lbl, val in samples)

    finished = dt.datetime.fromisoformat(run["finished"]).timestamp()
    metric(
        "edgesec_audit_last_run_timestamp_seconds",
        "gauge",
        "When the last audit finished (Unix time).",
        [(_labels(profile=prof), finished)],
    )
    metric(
        "edgesec_audit_duration_seconds",
        "gauge",
        "Wall time of the last audit.",
        [(_labels(profile=prof), float(run["duration_s"]))],
    )
    metric(
        "edgesec_audit_exit_code",
        "gauge",
        "Exit code of the last audit (0 pass, 1 fail, 3 incomplete).",
        [(_labels(profile=prof), float(s["exit_code"]))],
    )
    metric(
        "edgesec_audit_findings",
        "gauge",
        "Findings of the last audit by status.",
        [(_labels(profile=prof, status=k), float(v)) for k, v in s["by_status"].items()],
    )
    metric(
        "edgesec_audit_failures",
        "gauge",
        "FAIL findings of the last audit by severity.",
        [(_labels(profile=prof, severity=k), float(v)) for k, v in s["fail_by_severity"].items()],
    )
    metric(
        "edgesec_check_passing",
        "gauge",
        "1 when the check's worst status is PASS or WAIVED, 0 for FAIL, WARN or ERROR; "
        "a skipped check has no sample here (see edgesec_check_skipped).",
        [
            (
                _labels(profile=prof, check=c["id"], status=c["status"]),
                1.0 if c["status"] in ("PASS", "WAIVED") else 0.0,
            )
            for c in result["checks"]
            if c["status"] != "SKIP"
        ],
    )
    metric(
        "edgesec_check_skipped",
        "gauge",
        "1 for each check that was skipped (not applicable here): neither passing nor failing.",
        [(_labels(profile=prof, check=c["id"]), 1.0) for c in result["checks"] if c["status"] == "SKIP"],
    )
    metric(
        "edgesec_framework_score_ratio",
        "gauge",
        "Share of a framework's mapped controls that pass.",
        [(_labels(profile=prof, framework=f["id"]), float(f["score"])) for f in result["frameworks"]],
    )
    ch = result.get("changes") or {}
    metric(
        "edgesec_audit_drift_findings",
        "gauge",
        "What changed since the previous run (alert on new_failures > 0).",
        [
            (_labels(profile=prof, change=k), float(len(ch.get(k) or [])))
            for k in ("new_failures", "fixed", "changed_evidence", "status_changes")
        ],
    )
    expired = sum(1 for w in result.get("waivers", []) if w["state"] == "expired")
    metric(
        "edgesec_waivers_expired",
        "gauge",
        "Waivers past their expiry date.",
        [(_labels(profile=prof), expired)],
    )
    return "\n".join(out) + "\n"
