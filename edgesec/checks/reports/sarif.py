"""SARIF 2.1.0: one run, one rule per check, one result per finding (validated against the OASIS schema).

Mapping: FAIL and WARN are ``kind: fail`` with a level from the severity (critical/high: error, medium:
warning, low/info: note); WAIVED is a ``fail`` with an accepted external suppression naming the waiver;
PASS is ``pass``, SKIP ``notApplicable``, ERROR ``review`` plus a tool execution notification (the check
broke, so the invocation is not successful).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def _location(resource: str | None) -> list[dict[str, Any]]:
    if not resource:
        return []
    if resource.startswith("/"):
        return [{"physicalLocation": {"artifactLocation": {"uri": "file://" + quote(resource)}}}]
    return [{"logicalLocations": [{"name": resource[:1000], "kind": "resource"}]}]


def _result(f: Mapping[str, Any], rule_index: int, waivers: Mapping[str, Any]) -> dict[str, Any]:
    status = f["status"]
    # Stable across runs (check + resource), so tools that track results over time match them up.
    fingerprint = hashlib.sha256(f"{f['check_id']}|{f.get('resource') or ''}".encode()).hexdigest()
    r: dict[str, Any] = {
        "ruleId": f["check_id"],
        "ruleIndex": rule_index,
        "partialFingerprints": {"edgesecFinding/v1": fingerprint},
        "message": {"text": f["message"] or status},
        "properties": {"edgesec.status": status, "edgesec.evidence": f.get("evidence") or {}},
    }
    if status in ("FAIL", "WARN", "WAIVED"):
        r["kind"] = "fail"
        r["level"] = _LEVEL.get(f["severity"], "warning") if status != "WARN" else "warning"
    elif status == "PASS":
        r["kind"], r["level"] = "pass", "none"
    elif status == "SKIP":
        r["kind"], r["level"] = "notApplicable", "none"
    else:
        r["kind"], r["level"] = "review", "none"
    if status == "WAIVED":
        w = waivers.get(f.get("waiver") or "", {})
        r["suppressions"] = [
            {
                "kind": "external",
                "status": "accepted",
                "justification": f"{w.get('justification', '')} (waiver {f.get('waiver')}, owner "
                f"{w.get('owner', '?')}, approver {w.get('approver', '?')}, expires {w.get('expires', '?')})",
            }
        ]
    loc = _location(f.get("resource"))
    if loc:
        r["locations"] = loc
    return r


def render(result: Mapping[str, Any], lang: str = "en") -> str:
    checks = result["checks"]
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for c in checks:
        index[c["id"]] = len(rules)
        rules.append(
            {
                "id": c["id"],
                "name": c["id"].replace(".", "/"),
                "shortDescription": {"text": c["title"]},
                "fullDescription": {"text": c["rationale"]},
                "help": {"text": c["remediation"]},
                "defaultConfiguration": {"level": _LEVEL.get(c["severity"], "warning")},
                "properties": {
                    "tags": ["security", c["family"], *c["controls"]],
                    "security-severity": _SECURITY_SEVERITY.get(c["severity"], "5.5"),
                },
            }
        )
    waivers = {w["id"]: w for w in result.get("waivers", [])}
    results = [_result(f, index[c["id"]], waivers) for c in checks for f in c["findings"]]
    notes = [
        {
            "level": "error",
            "message": {"text": f"{f['check_id']}: {f['message']}"},
            "descriptor": {"id": f["check_id"]},
        }
        for c in checks
        for f in c["findings"]
        if f["status"] == "ERROR"
    ]
    run = result["run"]
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "edgesec",
                        "version": run["edgesec_version"],
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": f"edgesec/audit/{run['profile']}/{run['id']}"},
                "invocations": [
                    {
                        "executionSuccessful": not notes,
                        "startTimeUtc": run["started"],
                        "endTimeUtc": run["finished"],
                        "toolExecutionNotifications": notes,
                        "machine": run["host"],
                    }
                ],
                "results": results,
                "properties": {"edgesec.verdict": result["summary"]["verdict"]},
            }
        ],
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
