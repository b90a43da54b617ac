"""The cheaper per-event paths of the denial audit give exactly what the plain ones give.

A denial's audit event is built on the ``/auth`` path and serialised in the trail's writer, so both
were made cheaper (per-process caches of field plans and addresses, one formatted timestamp per
second, one JSON encoder). These tests hold each fast path equal to the straightforward code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import re
import time
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesec.auditing import canonical, configured, ecs
from edgesec.auditing.ecs import FIELD_TYPES, AuditEvent, _check_value, isotime, now_isotime, set_dotted
from edgesec.authz.request import ForwardedRequest
from edgesec.authz.service import Outcome, audit_decision
from edgesec.errors import InputError


def plain_document(event: AuditEvent, site: str | None) -> dict[str, Any]:
    """``to_document`` written the plain way (field by field through set_dotted and _check_value)."""
    doc = dataclasses.replace(event, fields={}).to_document(site=site)
    for key, value in event.fields.items():
        if key.startswith("edgesec."):
            set_dotted(doc, key, value)
            continue
        checked = _check_value(key, FIELD_TYPES[key], value)
        if checked is not None:
            set_dotted(doc, key, checked)
    return doc


SCALAR = st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 5), st.booleans())
VALUE = st.one_of(
    SCALAR, st.lists(st.text(max_size=4), max_size=3), st.sampled_from(["10.0.0.1", "::1", "x"])
)
KEYS = st.sampled_from(
    [k for k in FIELD_TYPES if not k.startswith(("process.", "service.", "host.", "event.", "ecs."))]
    + ["edgesec.authz.tenant", "edgesec.authz.reason", "edgesec.x.y.z"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUE, max_size=12), st.sampled_from([None, "branch-7"]))
def test_to_document_is_the_plain_field_by_field_document(fields: dict[str, Any], site: str | None) -> None:
    event = AuditEvent(action="authz.decision", category=("web",), type=("denied",), fields=fields)
    try:
        expected = plain_document(event, site)
    except InputError as exc:
        with pytest.raises(InputError, match=re.escape(str(exc).split(" must ")[0])):
            event.to_document(site=site)
        return
    got = event.to_document(site=site)
    got.pop("@timestamp")
    expected.pop("@timestamp")
    assert got == expected


def test_bad_ip_fields_are_still_refused_after_being_cached() -> None:
    for _ in range(2):
        with pytest.raises(InputError, match=r"source\.ip must be an IP address"):
            AuditEvent(
                action="a", category=("web",), type=("denied",), fields={"source.ip": "nope"}
            ).to_document()
    doc = AuditEvent(
        action="a", category=("web",), type=("denied",), fields={"source.ip": "::ffff:0:0:1"}
    ).to_document()
    assert doc["source"]["ip"] == "::ffff:0:0:1"


def test_now_isotime_is_isotime_of_now() -> None:
    for _ in range(2000):
        before = ecs.utcnow()
        got = now_isotime()
        after = ecs.utcnow()
        assert len(got) == len(isotime(before))
        # Same format, and the instant lies between the two readings (millisecond resolution).
        parsed = dt.datetime.strptime(got, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        assert before - dt.timedelta(milliseconds=1) <= parsed <= after
        assert isotime(parsed) == got


def test_an_event_without_timestamp_is_stamped_now() -> None:
    t0 = time.time()
    doc = AuditEvent(action="a", category=("web",), type=("denied",)).to_document()
    stamped = dt.datetime.strptime(doc["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert t0 - 0.002 <= stamped.timestamp() <= time.time() + 0.001
    fixed = dt.datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=dt.UTC)
    doc = AuditEvent(action="a", category=("web",), type=("denied",), timestamp=fixed).to_document()
    assert doc["@timestamp"] == "2026-01-02T03:04:05.678Z"


JSONISH = st.recursive(
    # NaN and Infinity are not JSON: canonical refuses them (tests/auditing/test_trail_durability.py).
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_canonical_is_json_dumps_sorted_compact(value: Any) -> None:
    assert canonical.canonical({"v": value}) == json.dumps(
        {"v": value}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_canonical_refuses_non_json_floats(bad: float) -> None:
    """NaN and Infinity are not JSON (Elasticsearch refuses them): canonical JSON never writes them."""
    with pytest.raises(ValueError):
        canonical.canonical({"v": bad})


class Text(str):
    """A str subclass: not the exact type the fast path tests first."""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(VALUE, st.dictionaries(st.text(max_size=3), SCALAR, max_size=2), st.builds(Text))))
def test_all_flat_is_all_of_flat(values: list[Any]) -> None:
    assert canonical._all_flat(values) == all(map(canonical._flat, values))


# -- the decision event: field values straight into a trail record --------------------------------

IDENT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10)
OUTCOMES = st.builds(
    Outcome,
    status=st.sampled_from([200, 401, 403]),
    reason=IDENT,
    user=IDENT,
    roles=st.lists(IDENT, max_size=3).map(tuple),
    tenant=IDENT,
    auth_method=st.sampled_from(["", "cert", "jwt"]),
    request=st.none()
    | st.builds(
        ForwardedRequest,
        method=st.sampled_from(["GET", "POST"]),
        path=IDENT.map(lambda p: "/" + p),
        query=st.just(""),
        host=st.none() | st.just("") | IDENT,
        proto=st.just("https"),
        raw_uri=st.text(max_size=3000),
        source=st.just("forwarded"),
    ),
    rule=st.none() | st.lists(IDENT, min_size=1, max_size=4).map(tuple),
    serial=st.none() | st.text("0123456789abcdef", min_size=1, max_size=40),
    detail=st.just("") | st.text(max_size=600),
    extra=st.fixed_dictionaries(
        {},
        optional={
            "break_glass": st.booleans(),
            "forwarded_for": st.sampled_from(["10.0.0.7", "1.2.3.4, 2001:db8::1", "junk", ""]),
        },
    ),
)


@settings(max_examples=200, deadline=None)
@given(OUTCOMES, st.sampled_from([None, "127.0.0.1", "::ffff:10.0.0.1", "not-an-ip"]), st.booleans())
def test_a_decision_record_is_the_event_the_plain_path_writes(
    tmp_path_factory: pytest.TempPathFactory, out: Outcome, client_ip: str | None, odd: bool
) -> None:
    """``audit_decision`` with group commit writes values straight into a shape's template; the
    record must be the one the same event written through ``AuditEvent`` and the dict path gives."""
    if odd:  # a value of another type than declared: the fast path must hand it to the event's checks
        out = dataclasses.replace(out, tenant=7)  # type: ignore[arg-type]
    base = tmp_path_factory.mktemp("decision")
    lines = {}
    with mock.patch.object(ecs, "now_isotime", lambda: "2026-11-29T10:00:00.123Z"):
        for mode in ("group", "fsync"):
            with configured(base / mode, durability=mode, site="branch-9") as trail:
                for _ in range(3):
                    assert audit_decision(out, client_ip)
                trail.flush()
            lines[mode] = (base / mode / "trail.jsonl").read_bytes()
    assert lines["group"] == lines["fsync"]
    assert lines["group"].count(b"\n") == 3


def _reference_ip_text(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        st.text(st.sampled_from(list("0123456789.:abcdefABCDEF%x \x00\u0661\n")), max_size=20),
        st.ip_addresses().map(str),
        st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
        st.lists(st.sampled_from(["0", "00", "01", "1", "255", "256", "001"]), min_size=4, max_size=4).map(
            ".".join
        ),
    )
)
def test_ip_text_is_what_ipaddress_says(value: str) -> None:
    """The C parser that dotted quads go through accepts and writes exactly what ``ipaddress`` does."""
    ecs.ip_text.cache_clear()
    assert ecs.ip_text(value) == _reference_ip_text(value)
