"""What the pipeline installs in Elasticsearch: ECS mappings, component and index templates, ILM, the ingest
pipeline (``render(...)`` is pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgesec.auditing.syslogng import KINDS
from edgesec.errors import InputError

HOT_DAYS = 90
#: The longest month: what the newest event of a monthly index can be younger than the index.
MONTH_DAYS = 31

# ECS 8.17 types of the fields edgesec writes (its trail) and the generated syslog-ng config produces.
ECS_MAPPED: dict[str, str] = {
    "@timestamp": "date",
    "message": "match_only_text",
    "tags": "keyword",
    "labels": "object",
    "ecs.version": "keyword",
    "event.kind": "keyword",
    "event.category": "keyword",
    "event.type": "keyword",
    "event.action": "keyword",
    "event.outcome": "keyword",
    "event.severity": "long",
    "event.dataset": "keyword",
    "event.module": "keyword",
    "event.sequence": "long",
    "event.hash": "keyword",
    "event.original": "keyword",
    "event.ingested": "date",
    "event.id": "keyword",
    "event.reason": "keyword",
    "event.risk_score": "float",
    "event.duration": "long",
    "log.level": "keyword",
    "log.syslog.facility.name": "keyword",
    "log.syslog.severity.name": "keyword",
    "host.name": "keyword",
    "process.pid": "long",
    "process.name": "keyword",
    "process.executable": "keyword",
    "process.working_directory": "keyword",
    "process.title": "keyword",
    "destination.ip": "ip",
    "user.group.id": "keyword",
    "service.name": "keyword",
    "service.type": "keyword",
    "service.version": "keyword",
    "user.id": "keyword",
    "user.name": "keyword",
    "user.email": "keyword",
    "user.domain": "keyword",
    "user.roles": "keyword",
    "user.effective.id": "keyword",
    "user.effective.group.id": "keyword",
    "user.effective.name": "keyword",
    "user.target.id": "keyword",
    "user.target.name": "keyword",
    "group.id": "keyword",
    "process.args": "keyword",
    "process.args_count": "long",
    "source.ip": "ip",
    "source.port": "long",
    "client.ip": "ip",
    "url.path": "wildcard",
    "url.original": "wildcard",
    "url.query": "keyword",
    "url.domain": "keyword",
    "http.request.method": "keyword",
    "http.response.status_code": "long",
    "tls.client.x509.serial_number": "keyword",
    "tls.client.x509.subject.common_name": "keyword",
    "tls.client.x509.issuer.common_name": "keyword",
    "tls.client.x509.not_after": "date",
    "tls.client.hash.sha256": "keyword",
    "file.path": "keyword",
    "file.name": "keyword",
    "file.size": "long",
    "file.hash.sha256": "keyword",
    "file.x509.serial_number": "keyword",
    "file.x509.subject.common_name": "keyword",
    "file.x509.not_after": "date",
    "rule.name": "keyword",
    "rule.id": "keyword",
    "rule.ruleset": "keyword",
    "error.message": "match_only_text",
    "error.type": "keyword",
    "organization.name": "keyword",
    "observer.name": "keyword",
}
# Custom fields (ECS asks for their own top-level name).
CUSTOM_MAPPED: dict[str, dict[str, Any]] = {
    "edgesec.site": {"type": "keyword"},
    "edgesec.part": {"type": "keyword"},
    "edgesec.trail.prev": {"type": "keyword"},
    "edgesec.deadletter.source": {"type": "keyword"},
    "edgesec.checkpoint": {"type": "flattened"},
    "auditd.log": {"type": "flattened"},
    # Not ECS: the fields Filebeat's auditd module adds under user.* (its fields.yml), which the
    # generated syslog-ng config writes the same way.
    "user.audit.id": {"type": "keyword"},
    "user.saved.id": {"type": "keyword"},
    "user.saved.group.id": {"type": "keyword"},
    "user.filesystem.id": {"type": "keyword"},
    "user.filesystem.group.id": {"type": "keyword"},
    "user.terminal": {"type": "keyword"},
}
#: The fields above that are not under a custom root of their own.
AUDITD_EXTENSION_FIELDS = tuple(k for k in CUSTOM_MAPPED if k.startswith("user."))


def _nest(flat: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"a.b": {...}}`` -> ``{"a": {"properties": {"b": {...}}}}`` (ES mapping form)."""
    root: dict[str, Any] = {}
    for name in sorted(flat):
        parts = name.split(".")
        cur = root
        for p in parts[:-1]:
            cur = cur.setdefault(p, {}).setdefault("properties", {})
        leaf = dict(flat[name])
        if leaf.get("type") == "object":
            leaf = {"type": "object", "dynamic": True}
        cur.setdefault(parts[-1], {}).update(leaf)
    return root


def _field_mapping(ftype: str) -> dict[str, Any]:
    m: dict[str, Any] = {"type": ftype}
    if ftype == "keyword":
        m["ignore_above"] = 1024
    return m


@dataclass(frozen=True)
class ElasticOptions:
    """What the generated Elasticsearch objects depend on."""

    index_prefix: str = "edgesec"
    retention_days: int = 365
    retention_reason: str = ""
    shards: int = 1
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise InputError("retention must be at least one day")


def retention_for(profile: str, kept: tuple[int, str] | None, override: int | None) -> tuple[int, str]:
    """Days to keep the archive and why: the site's override, else what the profile's ``[audit_log]`` says."""
    if override is not None:
        return override, "[auditing] retention_days in the site config"
    if kept is None:
        raise InputError(
            f"no log retention known for profile {profile!r}",
            hint="set [audit_log] in the profile (or extends = a shipped one), or [auditing] retention_days",
        )
    return kept


def pipeline_id(o: ElasticOptions) -> str:
    return f"{o.index_prefix}-ingest"


def delete_after_days(o: ElasticOptions) -> int:
    """When ILM deletes an index, counted from its creation: the retention plus the longest month.

    Indices hold a month each (``<prefix>-<kind>-YYYY.MM``, named from the events' own date) and ILM counts
    from the index's creation, which is no earlier than its month's first event; its newest event can be
    up to a month younger. Deleting at creation + retention would keep the month's last events about 11
    months on a 12-month retention. Deleting a month later keeps every event at least the retention.
    """
    return o.retention_days + MONTH_DAYS


def ilm_name(o: ElasticOptions) -> str:
    return f"{o.index_prefix}-retention"


def render(o: ElasticOptions) -> dict[str, dict[str, Any]]:
    """Every object, keyed by the REST path it is PUT to."""
    p = o.index_prefix
    mappings = {
        "dynamic": True,
        # Strings nobody mapped stay keywords; nothing becomes an analysed text field by accident.
        "dynamic_templates": [
            {
                "strings_as_keyword": {
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024},
                }
            }
        ],
        "properties": _nest({**{k: _field_mapping(v) for k, v in ECS_MAPPED.items()}, **CUSTOM_MAPPED}),
    }
    meta = {"managed_by": "edgesec", "ecs_version": "8.17.0"}
    out: dict[str, dict[str, Any]] = {
        f"/_component_template/{p}-ecs": {"template": {"mappings": mappings}, "_meta": meta, "version": 1},
        f"/_ilm/policy/{ilm_name(o)}": {
            "policy": {
                "_meta": {**meta, "retention": o.retention_reason or f"{o.retention_days} days"},
                "phases": {
                    "hot": {"min_age": "0ms", "actions": {"set_priority": {"priority": 100}}},
                    # No readonly or forcemerge (which also blocks writes): a late event (a disk
                    # buffer drained after an outage, a `ship` backfill) still lands in its month.
                    "warm": {
                        "min_age": f"{min(HOT_DAYS, o.retention_days)}d",
                        "actions": {"set_priority": {"priority": 50}},
                    },
                    "delete": {"min_age": f"{delete_after_days(o)}d", "actions": {"delete": {}}},
                },
            }
        },
        f"/_ingest/pipeline/{pipeline_id(o)}": {
            "description": "edgesec: stamp event.ingested; send any failure to the dead-letter index",
            "processors": [
                {"set": {"field": "event.ingested", "value": "{{{_ingest.timestamp}}}", "tag": "ingested"}},
            ],
            "on_failure": [
                {"set": {"field": "error.message", "value": "{{{_ingest.on_failure_message}}}"}},
                {"set": {"field": "edgesec.deadletter.source", "value": "{{{_index}}}"}},
                {"set": {"field": "event.kind", "value": "pipeline_error"}},
                {"set": {"field": "_index", "value": f"{p}-deadletter-ingest"}},
            ],
            "_meta": meta,
        },
    }
    for kind in KINDS:
        settings: dict[str, Any] = {
            "index.number_of_shards": o.shards,
            "index.number_of_replicas": o.replicas,
            "index.lifecycle.name": ilm_name(o),
            # A value of the wrong type is kept in _source and left unindexed instead of rejecting the
            # whole document: syslog-ng 3.38 cannot see a per-item rejection, so it would be lost.
            "index.mapping.ignore_malformed": True,
        }
        if kind != "deadletter":  # the dead-letter index takes documents as they are: no loop
            settings["index.default_pipeline"] = pipeline_id(o)
        out[f"/_component_template/{p}-settings-{kind}"] = {
            "template": {"settings": settings},
            "_meta": meta,
            "version": 1,
        }
        out[f"/_index_template/{p}-{kind}"] = {
            "index_patterns": [f"{p}-{kind}-*"],
            "composed_of": [f"{p}-ecs", f"{p}-settings-{kind}"],
            "priority": 200,
            "version": 1,
            "_meta": {**meta, "kind": kind},
        }
    return out


def render_files(o: ElasticOptions) -> dict[str, str]:
    """The same objects as files (one JSON document each) plus an ordered manifest for ``push``."""
    objs = render(o)
    files: dict[str, str] = {}
    order = []
    for path, body in objs.items():
        name = path.strip("/").replace("/", "__") + ".json"
        files[name] = json.dumps(body, indent=2, sort_keys=True) + "\n"
        order.append({"method": "PUT", "path": path, "file": name})
    files["manifest.json"] = (
        json.dumps({"generated_by": "edgesec auditlog gen elastic", "requests": order}, indent=2) + "\n"
    )
    return files
