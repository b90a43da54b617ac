"""The ECS 8.17 event model edgesec writes.

Our own model of the Elastic Common Schema fields edgesec uses (names, types and the allowed values
of ``event.kind``/``category``/``type``/``outcome`` as ECS 8.17.0 defines them). Custom fields live
under the top-level ``edgesec.*`` name, as ECS asks for custom fields. Every part builds events with
:class:`AuditEvent` and hands them to :func:`edgesec.auditing.emit`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ipaddress
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edgesec.auditing.canonical import canonical_value
from edgesec.auditing.prepared import TRAIL_KEYS, Prepared, RecordShape, shape_for
from edgesec.errors import InputError

ECS_VERSION = "8.17.0"

EVENT_KINDS = frozenset(
    {"alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error", "signal"}
)
EVENT_CATEGORIES = frozenset(
    {
        "api",
        "authentication",
        "configuration",
        "database",
        "driver",
        "email",
        "file",
        "host",
        "iam",
        "intrusion_detection",
        "library",
        "malware",
        "network",
        "package",
        "process",
        "registry",
        "session",
        "threat",
        "vulnerability",
        "web",
    }
)
EVENT_TYPES = frozenset(
    {
        "access",
        "admin",
        "allowed",
        "change",
        "connection",
        "creation",
        "deletion",
        "denied",
        "end",
        "error",
        "group",
        "indicator",
        "info",
        "installation",
        "protocol",
        "start",
        "user",
    }
)
EVENT_OUTCOMES = frozenset({"failure", "success", "unknown"})

# ECS fields edgesec sets, with their ECS types. "keyword[]" means an array of keywords.
FIELD_TYPES: Mapping[str, str] = {
    "user.id": "keyword",
    "user.name": "keyword",
    "user.email": "keyword",
    "user.domain": "keyword",
    "user.roles": "keyword[]",
    "user.effective.id": "keyword",
    "source.ip": "ip",
    "source.port": "long",
    "client.ip": "ip",
    "url.path": "keyword",
    "url.original": "keyword",
    "url.query": "keyword",
    "url.domain": "keyword",
    "http.request.method": "keyword",
    "http.response.status_code": "long",
    "tls.client.x509.serial_number": "keyword",
    "tls.client.x509.subject.common_name": "keyword[]",
    "tls.client.x509.issuer.common_name": "keyword[]",
    "tls.client.x509.not_after": "date",
    "tls.client.hash.sha256": "keyword",
    "file.path": "keyword",
    "file.name": "keyword",
    "file.size": "long",
    "file.hash.sha256": "keyword",
    "file.x509.serial_number": "keyword",
    "file.x509.subject.common_name": "keyword[]",
    "file.x509.not_after": "date",
    "rule.name": "keyword",
    "rule.id": "keyword",
    "rule.ruleset": "keyword",
    "error.message": "text",
    "error.type": "keyword",
    "organization.name": "keyword",
    "process.name": "keyword",
    "process.executable": "keyword",
    "event.reason": "keyword",
    "event.risk_score": "float",
    "event.duration": "long",
    "event.id": "keyword",
    "service.version": "keyword",
    "observer.name": "keyword",
    "labels": "object",
    "tags": "keyword[]",
}

Severity = Literal["info", "low", "medium", "high", "critical"]
_SEVERITY_NUM = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_LOG_LEVEL = {"info": "info", "low": "notice", "medium": "warning", "high": "error", "critical": "critical"}


#: This process's pid (a list, so a forked child can set its own): no system call per event.
_PID = [os.getpid()]


def _forked() -> None:
    _PID[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)


@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    # One system call per process, not per event: denial events sit on the authz hot path.
    return socket.gethostname()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def isotime(t: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds, as Elasticsearch's ``date`` type and syslog-ng both read it."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# The formatted second of the last ``now_isotime`` call: events come many per second on the authz
# hot path, and strftime of an aware datetime costs more than the rest of the timestamp.
_last_second: tuple[int, str] = (-1, "")


def now_isotime() -> str:
    """``isotime(utcnow())``, the same string, without building a datetime for every event."""
    global _last_second
    ns = time.time_ns()
    sec, rest = divmod(ns, 1_000_000_000)
    cached = _last_second
    if cached[0] != sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
        cached = _last_second = (sec, prefix)
    return f"{cached[1]}{rest // 1_000_000:03d}Z"


@functools.lru_cache(maxsize=4096)
def ip_text(value: str) -> str | None:
    """``str(ipaddress.ip_address(value))``, ``None`` if it is no address (cached: few clients, many
    events). A dotted quad goes through the C parser: the same answers (a test compares them on random
    strings) for a tenth of the cost, which counts when every request comes from another address."""
    if "." in value and ":" not in value:
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value))
        except (OSError, ValueError, UnicodeError):
            return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def _key_parts(key: str) -> tuple[str, ...]:
    # Field names come from code, a few dozen of them: split each once per process.
    return tuple(key.split("."))


def _check_value(key: str, ftype: str, value: Any) -> Any:
    if value is None:
        return None
    if ftype == "keyword[]":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
        raise InputError(f"ECS field {key} must be a string or list of strings")
    if ftype in ("keyword", "text"):
        if not isinstance(value, str):
            return str(value)
        return value
    if ftype == "long":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"ECS field {key} must be an integer")
        return value
    if ftype == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"ECS field {key} must be a number")
        if not math.isfinite(value):
            raise InputError(f"ECS field {key} must be a finite number (NaN and Infinity are not JSON)")
        return float(value)
    if ftype == "ip":
        text = ip_text(str(value))
        if text is None:
            raise InputError(f"ECS field {key} must be an IP address, got {value!r}")
        return text
    if ftype == "date":
        if isinstance(value, dt.datetime):
            return isotime(value)
        return str(value)
    if ftype == "object":
        if not isinstance(value, Mapping):
            raise InputError(f"ECS field {key} must be an object")
        return {str(k): str(v) for k, v in value.items()}
    raise AssertionError(ftype)


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _check_json(key: str, value: Any) -> None:
    """An ``edgesec.*`` field is set as given: it must be JSON data the trail can write."""
    try:
        canonical_value(value)
    except (TypeError, ValueError, RecursionError):
        raise InputError(
            f"audit field {key} must be JSON data (strings, numbers, booleans, lists, objects)"
        ) from None


def set_dotted(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested document."""
    parts = _key_parts(key)
    cur = doc
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def get_dotted(doc: Mapping[str, Any], key: str) -> Any:
    cur: Any = doc
    for p in key.split("."):
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    return cur


@dataclass(frozen=True)
class AuditEvent:
    """One audit event, validated against ECS 8.17 when built.

    ``action`` names what happened in the part's own words (``pki.certificate.issued``,
    ``authz.decision``); ``fields`` holds further ECS fields by dotted name (``user.id``,
    ``source.ip``) or custom ones under ``edgesec.`` (``edgesec.authz.matched_rule``).
    """

    action: str
    category: tuple[str, ...]
    type: tuple[str, ...]
    outcome: str = "success"
    message: str = ""
    kind: str = "event"
    severity: Severity = "info"
    part: str = "core"
    fields: Mapping[str, Any] = field(default_factory=dict)
    timestamp: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not self.action or len(self.action) > 256:
            raise InputError("audit event action must be 1..256 characters")
        if self.kind not in EVENT_KINDS:
            raise InputError(f"event.kind {self.kind!r} is not an ECS 8.17 allowed value")
        if not EVENT_CATEGORIES.issuperset(self.category):
            c = next(c for c in self.category if c not in EVENT_CATEGORIES)
            raise InputError(f"event.category {c!r} is not an ECS 8.17 allowed value")
        if not EVENT_TYPES.issuperset(self.type):
            t = next(t for t in self.type if t not in EVENT_TYPES)
            raise InputError(f"event.type {t!r} is not an ECS 8.17 allowed value")
        if self.outcome not in EVENT_OUTCOMES:
            raise InputError(f"event.outcome {self.outcome!r} is not an ECS 8.17 allowed value")
        if self.severity not in _SEVERITY_NUM:
            raise InputError(f"severity {self.severity!r} is not one of {sorted(_SEVERITY_NUM)}")
        for key in self.fields:
            if key not in FIELD_TYPES and not key.startswith("edgesec."):
                raise InputError(f"audit field {key!r} is neither a modelled ECS field nor under edgesec.*")

    def to_document(self, *, site: str | None = None, host: str | None = None) -> dict[str, Any]:
        """The ECS document (nested objects), without the trail's sequence and hashes."""
        doc: dict[str, Any] = {
            "@timestamp": isotime(self.timestamp) if self.timestamp else now_isotime(),
            "ecs": {"version": ECS_VERSION},
            "message": self.message or self.action,
            "event": {
                "kind": self.kind,
                "category": list(self.category),
                "type": list(self.type),
                "action": self.action,
                "outcome": self.outcome,
                "severity": _SEVERITY_NUM[self.severity],
                "dataset": "edgesec.audit",
                "module": "edgesec",
            },
            "log": {"level": _LOG_LEVEL[self.severity]},
            "host": {"name": host or _hostname()},
            "process": {"pid": _PID[0]},
            "service": {"name": "edgesec", "type": self.part},
            "edgesec": {"part": self.part},
        }
        if site:
            doc["edgesec"]["site"] = site
        for _key, (_ftype, parents, leaf), value in _checked_items(self.fields):
            # set_dotted, inlined: a denial event sets about fifteen fields on the authz hot path.
            cur = doc
            for p in parents:
                nxt = cur.get(p)
                if not isinstance(nxt, dict):
                    nxt = cur[p] = {}
                cur = nxt
            cur[leaf] = value
        return doc

    def prepare(self, *, site: str | None = None, host: str | None = None) -> Prepared | None:
        """The record ``to_document`` describes, as values against a compiled shape (see
        :mod:`edgesec.auditing.prepared`): the trail writes it without building the nested dict.

        The fields that describe the kind of event (action, category, outcome, part, site, host...)
        are fixed in the shape; the timestamp, the message and ``fields`` are its values. ``None``
        when the dict path must be used: a field that names one every event has, or a shape that
        cannot be compiled. Raises ``InputError`` for a bad field value, as ``to_document`` does.
        """
        values: list[Any] = [
            isotime(self.timestamp) if self.timestamp else now_isotime(),
            self.message or self.action,
        ]
        keys: list[str] = []
        plain = False
        for key, _plan_of_key, value in _checked_items(self.fields):
            if key in _RESERVED:
                plain = True  # overrides a field of every event: the dict path says what that means
            keys.append(key)
            values.append(value)
        if plain:
            return None
        shape = _shape_of(_head_of(self, site, host or _hostname()), tuple(keys))
        return None if shape is None else Prepared(shape, shape.fill(values))


def _head_of(e: AuditEvent, site: str | None, host: str) -> tuple[Any, ...]:
    """What a shape fixes of an event besides its fields (the key its shapes are cached under)."""
    return (e.kind, e.category, e.type, e.action, e.outcome, e.severity, e.part, site or None, host, _PID[0])


def _shape_of(head: tuple[Any, ...], keys: tuple[str, ...]) -> RecordShape | None:
    """The shape of events with this head and these fields (after the timestamp and message)."""
    return shape_for((head, keys), lambda: (("@timestamp", "message", *keys, *TRAIL_KEYS), _fixed(head)))


def _fixed(head: tuple[Any, ...]) -> dict[str, Any]:
    """The fields of every event that ``prepare`` fixes in a shape, from its ``head`` tuple."""
    kind, category, type_, action, outcome, severity, part, site, host, pid = head
    fixed = {
        "ecs.version": ECS_VERSION,
        "event.kind": kind,
        "event.category": list(category),
        "event.type": list(type_),
        "event.action": action,
        "event.outcome": outcome,
        "event.severity": _SEVERITY_NUM[severity],
        "event.dataset": "edgesec.audit",
        "event.module": "edgesec",
        "log.level": _LOG_LEVEL[severity],
        "host.name": host,
        "process.pid": pid,
        "service.name": "edgesec",
        "service.type": part,
        "edgesec.part": part,
    }
    if site:
        fixed["edgesec.site"] = site
    return fixed


class EventTemplate:
    """Many events of one kind: an :class:`AuditEvent` without fields, message or time, validated once.

    For a writer that emits the same kind of event at a high rate with field values its own code
    produced (the authz decision on every denial): :meth:`record` makes the trail record from a
    timestamp, a message and the values, with no event object, validation pass or nested document per
    event. The values must be what ``to_document`` would write for them -- already checked: a ``str``
    for a keyword, a list of ``str`` for a keyword array, an ``int`` for a long, an address as
    ``ipaddress`` prints it, no ``None``. :meth:`event` gives the plain :class:`AuditEvent` of the
    same fields, the reference that the tests hold :meth:`record` equal to, and the fallback.
    """

    __slots__ = ("_heads", "template")

    def __init__(
        self,
        *,
        action: str,
        category: tuple[str, ...],
        type: tuple[str, ...],
        outcome: str = "success",
        kind: str = "event",
        severity: Severity = "info",
        part: str = "core",
    ) -> None:
        self.template = AuditEvent(
            action=action,
            category=category,
            type=type,
            outcome=outcome,
            kind=kind,
            severity=severity,
            part=part,
        )
        self._heads: dict[tuple[str | None, int], tuple[Any, ...]] = {}

    def event(self, keys: Sequence[str], values: Sequence[Any], message: str) -> AuditEvent:
        """The same event as an :class:`AuditEvent` (validated field by field)."""
        return dataclasses.replace(
            self.template, message=message, fields=dict(zip(keys, values, strict=True))
        )

    def record(
        self, keys: tuple[str, ...], values: list[Any], message: str, *, site: str | None = None
    ) -> Prepared | None:
        """The trail record of this event with these fields; ``None`` where only the dict path can write
        it (a key that names a field every event has, a key that is a prefix of another)."""
        shape = _shape_of(self._head(site), keys)
        return None if shape is None else self.prepared(shape, values, message)

    def prepared(self, shape: RecordShape, values: list[Any], message: str) -> Prepared:
        """The record, stamped now, of a shape this template made: its values but the fixed ones."""
        return Prepared(shape, shape.fill([now_isotime(), message or self.template.action, *values]))

    def _head(self, site: str | None) -> tuple[Any, ...]:
        pid = _PID[0]  # part of the shape: a forked worker writes its own pid
        head = self._heads.get((site, pid))
        if head is None:
            head = self._heads[(site, pid)] = _head_of(self.template, site, _hostname())
        return head


#: The fields ``to_document`` sets on every event (a field of the same name goes the dict path).
_RESERVED = frozenset(
    (
        "@timestamp",
        "message",
        *_fixed(("event", (), (), "a", "success", "info", "core", "site", "host", 0)),
        *TRAIL_KEYS,
    )
)


def _checked_items(fields: Mapping[str, Any]) -> Iterator[tuple[str, _Plan, Any]]:
    """Each field's name, plan and value as the record holds it (checked; ``None`` dropped for typed
    fields; raises ``InputError`` for a value its ECS type does not allow)."""
    plans = _PLANS
    for key, value in fields.items():
        plan = plans.get(key)
        if plan is None:
            plan = _plan(key)
        ftype = plan[0]
        # A string for a keyword field is kept as it is, the common case: no call for it.
        if ftype is not None and (ftype != "keyword" or type(value) is not str):
            value = _check_value(key, ftype, value)
            if value is None:
                continue
        elif ftype is None and (
            type(value) not in _JSON_SCALARS or (type(value) is float and not math.isfinite(value))
        ):
            _check_json(key, value)
        yield key, plan, value


_Plan = tuple[str | None, tuple[str, ...], str]

# Per field name: (ECS type, or None for edgesec.* fields, which are set as given; parent keys; leaf key).
_PLANS: dict[str, tuple[str | None, tuple[str, ...], str]] = {}


def _plan(key: str) -> tuple[str | None, tuple[str, ...], str]:
    *parents, leaf = _key_parts(key)
    plan = (None if key.startswith("edgesec.") else FIELD_TYPES[key], tuple(parents), leaf)
    if len(_PLANS) < 4096:  # field names come from code; the bound is only a guard
        _PLANS[key] = plan
    return plan
