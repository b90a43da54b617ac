"""Elasticsearch side of the pipeline: index templates, ILM, ingest pipeline; ``push`` and ``ship``.

Generated objects (``render(...)`` is pure; ``push`` installs them with elasticsearch-py 8.x):

* component template ``<prefix>-ecs``: ECS 8.17 mappings of every field edgesec and the generated
  syslog-ng config produce (types as ECS defines them; ``auditd.log`` is ``flattened``, the raw
  key/value pairs of auditd as Elastic's module keeps them);
* component template ``<prefix>-settings-<kind>``: ILM policy and default ingest pipeline;
* one composable index template per kind (``audit``, ``auditd``, ``checkpoint``, ``journald``,
  ``syslog``, ``deadletter``) matching ``<prefix>-<kind>-*``;
* ILM policy ``<prefix>-retention``: hot, then lower priority after 90 days (PCI DSS 10.5.1 wants the last
  three months immediately available; never read-only, so a late event still lands), deleted a month
  after the retention the site profile requires has passed from the index's creation, so that the newest
  event of a monthly index is kept the whole retention (see :func:`delete_after_days`);
* ingest pipeline ``<prefix>-ingest``: sets ``event.ingested``; any failure moves the document to
  ``<prefix>-deadletter-ingest`` with the reason, because syslog-ng 3.38 does not read bulk responses
  and a rejected document would otherwise vanish; for the same reason every index sets
  ``index.mapping.ignore_malformed`` (a malformed value is kept but not indexed, never the document lost).

``ship`` bulk-indexes the trail itself (a backfill, or a site without syslog-ng): ``create`` actions
with the record's hash as ``_id`` into the same index syslog-ng would use, so the two paths and any
rerun never duplicate a record; it resumes after the last record Elasticsearch acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesec._fs import FileLock, atomic_write, read_input_file
from edgesec.auditing.canonical import line_hash_ok
from edgesec.auditing.syslogng import KINDS
from edgesec.auditing.trail import GENESIS, trail_files
from edgesec.errors import InputError, OperationFailed, VerificationError

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


# -- client ------------------------------------------------------------------------------------------


def make_client(url: str, *, ca: str | None, cert: str | None, key: str | None, timeout: float = 30.0) -> Any:
    """An elasticsearch-py 8.x client (the 9.x one sends a compatibility header ES 8 rejects)."""
    from importlib.metadata import version

    import elasticsearch

    installed = version("elasticsearch")
    if int(installed.split(".")[0]) != 8:
        raise InputError(f"elasticsearch-py {installed} is installed; edgesec needs 8.x for ES 8")
    if url.startswith("http://"):
        raise InputError(
            f"refusing to send audit records in clear text: {url}",
            hint="use https:// with --ca, --cert and --key (mutual TLS)",
        )
    if not url.startswith("https://"):
        raise InputError(f"not an Elasticsearch URL: {url}")
    for what, p in (("CA file", ca), ("client certificate", cert), ("client key", key)):
        if p is not None and not Path(p).is_file():
            raise InputError(f"{what} not found: {p}")
    if not ca:
        raise InputError("an https Elasticsearch URL needs --ca (the site trust bundle)")
    tls: dict[str, Any] = {
        k: v for k, v in (("ca_certs", ca), ("client_cert", cert), ("client_key", key)) if v
    }
    return elasticsearch.Elasticsearch(
        url,
        **tls,
        verify_certs=True,
        request_timeout=timeout,
        max_retries=2,
        retry_on_timeout=True,
    )


def _es_errors() -> tuple[type[BaseException], ...]:
    import elastic_transport
    import elasticsearch

    return (elasticsearch.ApiError, elastic_transport.TransportError, elasticsearch.UnsupportedProductError)


def push(client: Any, o: ElasticOptions) -> list[dict[str, str]]:
    """Install (or update in place) every object. PUT is idempotent: a rerun leaves the same state."""
    done = []
    for path, body in render(o).items():
        kind, name = path.strip("/").split("/", 1)
        try:
            if kind == "_component_template":
                client.cluster.put_component_template(name=name, **body)
            elif kind == "_index_template":
                client.indices.put_index_template(name=name, **body)
            elif kind == "_ilm":
                client.ilm.put_lifecycle(name=name.split("/", 1)[1], **body)
            elif kind == "_ingest":
                client.ingest.put_pipeline(id=name.split("/", 1)[1], **body)
            else:  # pragma: no cover - render() only produces the four kinds above
                raise AssertionError(path)
        except _es_errors() as exc:
            raise OperationFailed(f"Elasticsearch refused PUT {path}: {_short(exc)}") from None
        done.append({"path": path, "status": "installed"})
    return done


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# -- ship --------------------------------------------------------------------------------------------


@dataclass
class ShipState:
    """The last record Elasticsearch acknowledged."""

    seq: int = 0
    hash: str = GENESIS

    @classmethod
    def load(cls, path: Path) -> ShipState:
        if not path.exists():
            return cls()
        try:
            d = json.loads(read_input_file(path, what="ship state"))
            return cls(int(d["seq"]), str(d["hash"]))
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"ship state {path} is unreadable; move it away to re-ship (ids de-duplicate)"
            ) from None

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps({"seq": self.seq, "hash": self.hash}) + "\n")


def index_for(prefix: str, doc: dict[str, Any]) -> str:
    """The same index syslog-ng uses: ``<prefix>-audit-YYYY.MM`` from the record's own date."""
    ts = str(doc.get("@timestamp", ""))
    if len(ts) < 7 or ts[4] != "-":
        raise VerificationError(f"record {doc.get('event', {}).get('sequence')} has no usable @timestamp")
    return f"{prefix}-audit-{ts[0:4]}.{ts[5:7]}"


def _pending(trail_dir: Path, after: ShipState) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Records after ``after``, checking each record's hash and the chain's sequence and links as they
    are read.

    A writer may rotate while we read: a file that vanished, or a gap at the start of the new
    ``trail.jsonl``, means "list the files again" (the records are in a new rotated file) -- only a gap
    that stays after that is a broken trail.
    """
    seq, prev = after.seq, after.hash
    for _ in range(100):
        files = trail_files(trail_dir)
        relist = False
        for f in files:
            name = f.name
            if name.startswith("trail.") and "-" in name:
                try:
                    last = int(name[len("trail.") : -len(".jsonl")].split("-")[1])
                except (ValueError, IndexError):
                    last = None
                if last is not None and last <= seq:
                    continue
            try:
                fh = open(f, "rb")
            except FileNotFoundError:
                relist = True
                break
            with fh:
                for lineno, raw in enumerate(fh, start=1):
                    if not raw.endswith(b"\n"):
                        return  # a record still being written
                    try:
                        doc = json.loads(raw)
                        s = int(doc["event"]["sequence"])
                        link = doc["edgesec"]["trail"]["prev"]
                    except (ValueError, KeyError, TypeError):
                        s, link = -1, None
                    if 0 <= s <= seq:
                        continue
                    if s != seq + 1 or link != prev:
                        if s > seq + 1 and trail_files(trail_dir) != files:
                            relist = True
                            break
                        raise VerificationError(
                            f"the trail is broken at record {seq + 1} ({f.name}); nothing after it is shipped",
                            hint="run `edgesec auditlog verify`",
                        )
                    if not line_hash_ok(raw[:-1], doc):
                        # An edited record keeps its genuine hash (its _id): sending it would index
                        # the forgery under that id.
                        raise VerificationError(
                            f"record {s} ({f.name}:{lineno}) does not match its hash (edited); "
                            "it and the records after it are not shipped",
                            hint="run `edgesec auditlog verify` and keep the trail as evidence",
                        )
                    seq, prev = s, doc["event"]["hash"]
                    yield raw[:-1], doc
            if relist:
                break
        if not relist:
            return
    raise OperationFailed(f"the trail in {trail_dir} keeps rotating under `ship`; run it again")


def ship(
    client: Any,
    trail_dir: Path,
    state_path: Path,
    *,
    prefix: str = "edgesec",
    batch: int = 500,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Bulk-index every record after the saved state; advance the state after each acknowledged batch."""
    with FileLock(state_path.with_name(state_path.name + ".lock"), timeout=0.5):
        state = ShipState.load(state_path)
        start = state.seq
        created = dup = 0
        buf: list[tuple[bytes, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal created, dup
            if not buf:
                return
            body = bytearray()
            for raw, doc in buf:
                action = {"create": {"_index": index_for(prefix, doc), "_id": doc["event"]["hash"]}}
                body += json.dumps(action).encode() + b"\n" + raw + b"\n"
            try:
                resp = client.bulk(operations=bytes(body))
            except _es_errors() as exc:
                raise OperationFailed(
                    f"Elasticsearch bulk failed after record {state.seq}: {_short(exc)}",
                    hint="rerun `edgesec auditlog ship`: it resumes from the last acknowledged record",
                ) from None
            items = resp["items"]
            if len(items) != len(buf):
                raise OperationFailed("Elasticsearch answered a different number of bulk items than sent")
            for (_, doc), item in zip(buf, items, strict=True):
                r = item.get("create") or item.get("index") or {}
                status = int(r.get("status", 0))
                if status == 409:
                    dup += 1  # already there (an earlier run, or syslog-ng): the same _id, the same record
                elif 200 <= status < 300:
                    created += 1
                else:
                    state.save(state_path)
                    err = r.get("error") or {}
                    raise OperationFailed(
                        f"Elasticsearch rejected record {doc['event']['sequence']}: {err.get('type')}: {err.get('reason')}",
                        hint="fix the mapping or pipeline, then rerun; earlier records are kept as acknowledged",
                    )
                state.seq, state.hash = int(doc["event"]["sequence"]), doc["event"]["hash"]
            state.save(state_path)
            if on_batch is not None:
                on_batch(state.seq)
            buf.clear()

        try:
            for raw, doc in _pending(trail_dir, state):
                buf.append((raw, doc))
                if len(buf) >= batch:
                    flush()
        except VerificationError:
            flush()  # the records before the bad one are good: they go, then the error is reported
            raise
        flush()
        return {"from": start, "to": state.seq, "created": created, "already_present": dup}


# -- reconcile -----------------------------------------------------------------------------------------

#: How much of a refused document its dead letter carries (the whole item stays in the journal).
DEADLETTER_ORIGINAL_BYTES = 16 * 1024


@dataclass
class _Item:
    file: str
    end: int  # offset just after the item's document line
    action: bytes
    doc: bytes
    index: str
    id: str


def _journal_items(journal: Path, done: dict[str, int]) -> Iterator[_Item]:
    """The _bulk items of the syslog-ng journal (``<archive>/bulk/*.ndjson``) after the offsets in ``done``.

    A file's last item may still be being written: an item is read only once both of its lines end.
    """
    for f in sorted(journal.glob("*.ndjson")):
        start = done.get(f.name, 0)
        with open(f, "rb") as fh:
            fh.seek(start)
            offset = start
            while True:
                action = fh.readline()
                doc = fh.readline()
                if not action.endswith(b"\n") or not doc.endswith(b"\n"):
                    break
                offset += len(action) + len(doc)
                try:
                    meta = json.loads(action)["create"]
                    index, _id = str(meta["_index"]), str(meta["_id"])
                except (ValueError, KeyError, TypeError):
                    raise InputError(
                        f"{f}: the item ending at byte {offset} is not a _bulk create action; "
                        "is this a journal written by the generated syslog-ng config?"
                    ) from None
                yield _Item(f.name, offset, action[:-1], doc[:-1], index, _id)


def _deadletter_doc(prefix: str, item: _Item, status: int, reason: str) -> tuple[str, str, bytes]:
    """(index, _id, document) of the dead letter for a refused item; the same item gives the same id."""
    import datetime as dt
    import hashlib

    now = dt.datetime.now(dt.UTC)
    original = item.doc[:DEADLETTER_ORIGINAL_BYTES].decode("utf-8", "replace")
    doc = {
        "@timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "ecs": {"version": "8.17.0"},
        "message": f"Elasticsearch refused {item.index}/{item.id} ({status}): {reason}"[:1024],
        "event": {"kind": "pipeline_error", "original": original},
        "error": {"message": reason[:1024], "code": str(status)},
        "edgesec": {
            "deadletter": {
                "source": "reconcile",
                "index": item.index,
                "id": item.id,
                "bytes": len(item.doc),
                "sha256": hashlib.sha256(item.doc).hexdigest(),
                "journal": item.file,
            }
        },
    }
    _id = hashlib.sha256(b"reconcile\0" + item.index.encode() + b"\0" + item.id.encode()).hexdigest()
    return f"{prefix}-deadletter-{now:%Y.%m}", _id, json.dumps(doc, separators=(",", ":")).encode()


def reconcile(
    client: Any, journal: Path, state_path: Path, *, prefix: str = "edgesec", batch: int = 200
) -> dict[str, int]:
    """Offer every journalled _bulk item to Elasticsearch again, by ``_id``, reading each item's status.

    ``create`` of an item already there is answered 409 (nothing changes); one that is missing -- refused
    inside a ``200`` (syslog-ng 3.38 ignores per-item statuses), or in a batch syslog-ng dropped after
    ``retries()`` -- is created now (201); one Elasticsearch refuses again (a 4xx per item, or a request
    refused whole: 400, 413 -- such a batch is split down to single items) gets a dead letter in
    ``<prefix>-deadletter-*`` naming its index, ``_id``, status and reason. Nothing is left unaccounted
    for: each item ends present, created or dead-lettered, and the counts say how many of each. Resumes
    after the last item accounted for (offsets per journal file in ``state_path``).
    """
    with FileLock(state_path.with_name(state_path.name + ".lock"), timeout=0.5):
        try:
            done: dict[str, int] = (
                {str(k): int(v) for k, v in json.loads(state_path.read_bytes()).items()}
                if state_path.exists()
                else {}
            )
        except (ValueError, TypeError, AttributeError):
            raise InputError(
                f"reconcile state {state_path} is unreadable; move it away to start over"
            ) from None
        counts = {"items": 0, "present": 0, "created": 0, "dead_lettered": 0}

        def bulk(items: list[_Item]) -> list[tuple[int, str]]:
            body = b"".join(it.action + b"\n" + it.doc + b"\n" for it in items)
            try:
                resp = client.bulk(operations=body)
            except _es_errors() as exc:
                status = int(getattr(getattr(exc, "meta", None), "status", 0) or 0)
                if status in (400, 413) and len(items) > 1:
                    half = len(items) // 2
                    return bulk(items[:half]) + bulk(items[half:])
                if status in (400, 413):
                    return [(status, _short(exc))]
                raise OperationFailed(
                    f"Elasticsearch bulk failed during reconcile: {_short(exc)}",
                    hint="rerun `edgesec auditlog reconcile`: it resumes after the last item accounted for",
                ) from None
            got = resp["items"]
            if len(got) != len(items):
                raise OperationFailed("Elasticsearch answered a different number of bulk items than sent")
            out = []
            for r in got:
                r = next(iter(r.values()), {}) if isinstance(r, dict) else {}
                err = r.get("error") or {}
                reason = f"{err.get('type')}: {err.get('reason')}" if err else ""
                out.append((int(r.get("status", 0)), reason))
            return out

        def settle(items: list[_Item]) -> None:
            if not items:
                return
            dead: list[tuple[_Item, int, str]] = []
            for it, (status, reason) in zip(items, bulk(items), strict=True):
                counts["items"] += 1
                if status == 409:
                    counts["present"] += 1
                elif 200 <= status < 300:
                    counts["created"] += 1
                else:
                    dead.append((it, status, reason or f"status {status}"))
            if dead:
                body = bytearray()
                for it, status, reason in dead:
                    index, _id, doc = _deadletter_doc(prefix, it, status, reason)
                    body += (
                        json.dumps({"create": {"_index": index, "_id": _id}}).encode() + b"\n" + doc + b"\n"
                    )
                try:
                    resp = client.bulk(operations=bytes(body))
                except _es_errors() as exc:
                    raise OperationFailed(
                        f"Elasticsearch refused the dead letters of {len(dead)} item(s): {_short(exc)}"
                    ) from None
                for (it, _, _), r in zip(dead, resp["items"], strict=True):
                    one: dict[str, Any] = next(iter(r.values()), {}) if isinstance(r, dict) else {}
                    st = int(one.get("status", 0))
                    if not (200 <= st < 300 or st == 409):
                        raise OperationFailed(
                            f"Elasticsearch refused item {it.index}/{it.id} and its dead letter ({st})",
                            hint="the item is kept in the journal; fix the dead-letter index and rerun",
                        )
                counts["dead_lettered"] += len(dead)
            for it in items:
                done[it.file] = it.end
            atomic_write(state_path, json.dumps(done, sort_keys=True) + "\n")

        pending: list[_Item] = []
        for item in _journal_items(journal, done):
            pending.append(item)
            if len(pending) >= batch:
                settle(pending)
                pending = []
        settle(pending)
        return counts
