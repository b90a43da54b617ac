"""Audit results in Elasticsearch: the index template, and one document per finding per run.

A fleet asks questions across sites -- "which branches fail PCI DSS 10.6.1 tonight?", "since when does
site X fail ``models.signature``?" -- so each finding of each ``edgesec audit`` run becomes one document
in ``<prefix>-results-YYYY.MM`` (the run's month), carrying the site, the profile, the check, its
status and severity, and the control ids of every framework the profile maps the check to. The
document ``_id`` is ``<run id>:<finding index>`` so shipping the same run twice creates nothing new.

The template uses the same ILM policy as the other edgesec indices (``<prefix>-retention``), ECS field
names where ECS has them (``@timestamp``, ``host.name``, ``rule.*``, ``event.*``, ``observer.*``) and
``edgesec.*`` for the rest. :func:`render_template` and :func:`result_documents` are pure; the CLI
(``edgesec site results-template`` / ``edgesec site results-docs``) writes the files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from edgesec.errors import InputError

ECS_VERSION = "8.17.0"
KIND = "results"

_KEYWORD = {"type": "keyword", "ignore_above": 1024}

# Field -> mapping. Dotted names are nested when the template is rendered.
FIELDS: dict[str, dict[str, Any]] = {
    "@timestamp": {"type": "date"},
    "ecs.version": _KEYWORD,
    "message": {"type": "match_only_text"},
    "event.kind": _KEYWORD,
    "event.category": _KEYWORD,
    "event.type": _KEYWORD,
    "event.outcome": _KEYWORD,
    "event.dataset": _KEYWORD,
    "event.module": _KEYWORD,
    "event.severity": {"type": "long"},
    "event.start": {"type": "date"},
    "event.end": {"type": "date"},
    "event.ingested": {"type": "date"},
    "host.name": _KEYWORD,
    "observer.product": _KEYWORD,
    "observer.version": _KEYWORD,
    "rule.id": _KEYWORD,
    "rule.name": _KEYWORD,
    "rule.category": _KEYWORD,
    "rule.ruleset": _KEYWORD,
    "rule.reference": _KEYWORD,
    "edgesec.site": _KEYWORD,
    "edgesec.result.run_id": _KEYWORD,
    "edgesec.result.profile": _KEYWORD,
    "edgesec.result.verdict": _KEYWORD,
    "edgesec.result.exit_code": {"type": "integer"},
    "edgesec.result.status": _KEYWORD,
    "edgesec.result.check_status": _KEYWORD,
    "edgesec.result.severity": _KEYWORD,
    "edgesec.result.severity_rank": {"type": "integer"},
    "edgesec.result.resource": _KEYWORD,
    "edgesec.result.controls": _KEYWORD,
    "edgesec.result.frameworks": _KEYWORD,
    "edgesec.result.waived": {"type": "boolean"},
    "edgesec.result.waiver_owner": _KEYWORD,
    "edgesec.result.waiver_expires": {"type": "date"},
    "edgesec.result.remediation": {"type": "match_only_text"},
    # Evidence differs per check: kept whole in _source, never mapped field by field (mapping explosion).
    "edgesec.result.evidence": {"type": "object", "enabled": False},
}

_SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def _nest(flat: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for name, mapping in flat.items():
        parts = name.split(".") if name != "@timestamp" else [name]
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {"properties": {}})["properties"]
        node[parts[-1]] = dict(mapping)
    return root


def index_pattern(prefix: str = "edgesec") -> str:
    return f"{prefix}-{KIND}-*"


def render_template(prefix: str = "edgesec", *, shards: int = 1, replicas: int = 1) -> dict[str, Any]:
    """The composable index template (``PUT /_index_template/<prefix>-results``)."""
    if not prefix or prefix != prefix.lower() or not prefix.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"index prefix must be lowercase letters, digits, - or _: {prefix!r}")
    return {
        "index_patterns": [index_pattern(prefix)],
        "priority": 200,
        "version": 1,
        "_meta": {"managed_by": "edgesec", "ecs_version": ECS_VERSION, "kind": KIND},
        "template": {
            "settings": {
                "index.number_of_shards": shards,
                "index.number_of_replicas": replicas,
                # The same retention as the audit indices: results are audit evidence too.
                "index.lifecycle.name": f"{prefix}-retention",
            },
            "mappings": {
                "dynamic": "strict",
                "properties": _nest(FIELDS),
            },
        },
    }


def result_documents(
    result: Mapping[str, Any], *, site: str, prefix: str = "edgesec"
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(index, _id, document)`` for every finding of an ``edgesec.audit-result`` document."""
    if result.get("schema") != "edgesec.audit-result":
        raise InputError("not an edgesec audit result (schema is not edgesec.audit-result)")
    run = result.get("run") or {}
    started = str(run.get("started") or "")
    if len(started) < 7:
        raise InputError("the audit result has no run.started time")
    run_id = str(run.get("id") or hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:16])
    index = f"{prefix}-{KIND}-{started[0:4]}.{started[5:7]}"
    summary = result.get("summary") or {}
    controls_of = _controls_by_check(result)
    n = 0
    for check in result.get("checks") or []:
        cid = str(check.get("id"))
        ctrl = sorted(set(controls_of.get(cid, [])) | set(check.get("controls") or []))
        for f in check.get("findings") or []:
            n += 1
            status = str(f.get("status"))
            sev = str(f.get("severity") or check.get("severity") or "info")
            waiver = f.get("waiver") if isinstance(f.get("waiver"), dict) else None
            doc: dict[str, Any] = {
                "@timestamp": started,
                "ecs": {"version": ECS_VERSION},
                "message": str(f.get("message") or ""),
                "event": {
                    "kind": "state",
                    "category": ["configuration"],
                    "type": ["info"],
                    "outcome": {"PASS": "success", "FAIL": "failure", "ERROR": "failure"}.get(
                        status, "unknown"
                    ),
                    "dataset": "edgesec.results",
                    "module": "edgesec",
                    "severity": _SEVERITY_RANK.get(sev, 0),
                    "start": started,
                    **({"end": run["finished"]} if run.get("finished") else {}),
                },
                "host": {"name": str(run.get("host") or "")},
                "observer": {
                    "product": "edgesec",
                    "version": str(run.get("edgesec_version") or run.get("version") or ""),
                },
                "rule": {
                    "id": cid,
                    "name": str(check.get("title") or cid),
                    "category": cid.split(".", 1)[0],
                    "ruleset": str(run.get("profile") or ""),
                },
                "edgesec": {
                    "site": site,
                    "result": {
                        "run_id": run_id,
                        "profile": str(run.get("profile") or ""),
                        "verdict": str(summary.get("verdict") or ""),
                        "exit_code": int(summary.get("exit_code") or 0),
                        "status": status,
                        "check_status": str(check.get("status") or status),
                        "severity": sev,
                        "severity_rank": _SEVERITY_RANK.get(sev, 0),
                        "resource": f.get("resource"),
                        "controls": ctrl,
                        "frameworks": sorted({c.split(":", 1)[0] for c in ctrl}),
                        "waived": status == "WAIVED",
                        "remediation": f.get("remediation") or check.get("remediation"),
                        "evidence": f.get("evidence") or {},
                    },
                },
            }
            if waiver:
                doc["edgesec"]["result"]["waiver_owner"] = waiver.get("owner")
                doc["edgesec"]["result"]["waiver_expires"] = waiver.get("expires")
            yield index, f"{run_id}:{n}", _drop_none(doc)


def _controls_by_check(result: Mapping[str, Any]) -> dict[str, list[str]]:
    """``framework:control`` ids the profile maps each check to (from the result's frameworks)."""
    out: dict[str, list[str]] = {}
    for fw in result.get("frameworks") or []:
        fid = str(fw.get("id"))
        for ctl in fw.get("controls") or []:
            checks = ctl.get("checks")
            ids = list(checks) if isinstance(checks, dict) else list(checks or [])
            for cid in ids:
                out.setdefault(str(cid), []).append(f"{fid}:{ctl.get('id')}")
    return out


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


def bulk_body(result: Mapping[str, Any], *, site: str, prefix: str = "edgesec") -> str:
    """NDJSON for ``POST /_bulk``: one ``create`` action and document per finding."""
    lines = []
    for index, doc_id, doc in result_documents(result, site=site, prefix=prefix):
        lines.append(json.dumps({"create": {"_index": index, "_id": doc_id}}, separators=(",", ":")))
        lines.append(json.dumps(doc, separators=(",", ":"), default=str))
    return "\n".join(lines) + "\n" if lines else ""
