"""Records rendered from a compiled shape are byte for byte the records the dict path writes.

``edgesec.auditing.prepared`` writes a record's canonical line from a template compiled once per shape
(the set of dotted fields). The dict path -- build the nested document, ``seal`` it -- is the reference;
these tests hold the two equal on random shapes and values, and check that the trail writes both kinds
into one verifiable chain.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesec.auditing import configured, emit, prepared
from edgesec.auditing.canonical import canonical_value, seal
from edgesec.auditing.ecs import FIELD_TYPES, AuditEvent, set_dotted
from edgesec.auditing.prepared import TRAIL_KEYS, Prepared, RecordShape, shape_for
from edgesec.auditing.trail import GENESIS, Trail, trail_files, verify_chain
from edgesec.errors import InputError

TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(list('"\\%\x00\n\u2028/')),
    max_size=12,
)
LEAF = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(
        allow_nan=False, allow_infinity=False
    )  # NaN and Infinity are not JSON: refused (test_trail_durability)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
SEGMENT = st.sampled_from(["a", "b", "event", "hash", "edgesec", "trail", "z", "%s", "Ä", "a_b", "A"])
DOTTED = st.lists(SEGMENT, min_size=1, max_size=3).map(".".join)


def nested(keys: tuple[str, ...], values: list[Any], seq: int, prev: str) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in zip(keys, [*values, seq, prev], strict=False):
        set_dotted(doc, key, value)
    return doc


@settings(max_examples=500, deadline=None)
@given(
    st.lists(DOTTED, max_size=8, unique=True),
    st.data(),
    st.integers(1, 2**40),
    st.sampled_from([GENESIS, "ab" * 32]),
)
def test_a_shape_renders_what_seal_writes(fields: list[str], data: Any, seq: int, prev: str) -> None:
    # Each field is either a value of the record or fixed in the shape.
    fixed_names = [f for f in fields if data.draw(st.booleans())]
    varying = ("event.action", *[f for f in fields if f not in fixed_names], *TRAIL_KEYS)
    fixed = {f: data.draw(LEAF) for f in fixed_names}
    shape = RecordShape.compile(varying, fixed)
    names = [*varying, *fixed]
    clash = len(set(names)) != len(names) or any(o.startswith(k + ".") for k in names for o in names)
    if clash:
        assert shape is None  # a prefix of another field, or a trail field given twice
        return
    assert shape is not None
    values = [data.draw(LEAF) for _ in varying[:-3]]
    digest, line = shape.render(values, seq, prev)
    doc = nested(varying, values, seq, prev)
    for key, value in fixed.items():
        set_dotted(doc, key, value)
    assert (digest, line) == seal(doc)
    assert (canonical_value(json.loads(line)) + "\n").encode() == line  # read back, it is canonical


def test_a_fixed_value_that_is_not_json_or_mimics_a_placeholder_is_refused() -> None:
    keys = ("event.action", "a", *TRAIL_KEYS)
    assert RecordShape.compile(keys, {"b": object()}) is None
    assert RecordShape.compile(keys, {"b": "\x001\x00"}) is None
    assert RecordShape.compile(keys, {"b": "\x00x\x00 %s %%"}) is not None


KEYS = st.sampled_from(
    [k for k in FIELD_TYPES if k not in ("labels",)]
    + ["labels", "edgesec.authz.tenant", "edgesec.authz.reason", "edgesec.x.y.z", "edgesec.site"]
)
VALUE = st.one_of(
    st.none(),
    TEXT,
    st.integers(-5, 5),
    st.booleans(),
    st.lists(TEXT, max_size=3),
    st.sampled_from(["10.0.0.1", "::1", "x", dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)]),
    st.dictionaries(TEXT, TEXT, max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(KEYS, VALUE, max_size=12), st.sampled_from([None, "branch-7"]), st.integers(1, 99))
def test_a_prepared_event_is_the_sealed_document(fields: dict[str, Any], site: str | None, seq: int) -> None:
    stamp = dt.datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=dt.UTC)
    event = AuditEvent(
        action="authz.decision",
        category=("web", "iam"),
        type=("access", "denied"),
        outcome="failure",
        severity="medium",
        part="authz",
        message='deny % "x" \u2028',
        fields=fields,
        timestamp=stamp,
    )
    try:
        doc = event.to_document(site=site, host="edge-1")
    except InputError as exc:
        with pytest.raises(InputError, match=re.escape(str(exc).split(" must ")[0])):
            event.prepare(site=site, host="edge-1")
        return
    rec = event.prepare(site=site, host="edge-1")
    if "edgesec.site" in fields or ("labels" in fields and any(k.startswith("labels.") for k in fields)):
        assert rec is None  # overrides a field of every event / a prefix clash: the dict path writes it
        return
    assert rec is not None
    doc.setdefault("event", {})["sequence"] = seq
    doc.setdefault("edgesec", {}).setdefault("trail", {})["prev"] = GENESIS
    assert rec.shape.seal(rec.pieces, seq, GENESIS) == seal(doc)


def test_shapes_are_compiled_once_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def describe(i: int) -> tuple[tuple[str, ...], dict[str, Any]]:
        calls.append(i)
        return ("event.action", f"edgesec.n{i}", *TRAIL_KEYS), {"x": 1}

    fresh: dict[Any, Any] = {}
    monkeypatch.setattr(prepared, "_shapes", fresh)
    assert shape_for("k0", lambda: describe(0)) is shape_for("k0", lambda: describe(0))
    assert calls == [0]
    monkeypatch.setattr(prepared, "MAX_SHAPES", 2)
    for i in range(1, 5):
        assert shape_for(f"k{i}", lambda i=i: describe(i)) is not None  # type: ignore[misc]
    assert len(fresh) == 2  # later shapes still compile, they are not kept


def test_a_shape_without_the_trail_fields_or_with_a_nul_is_refused() -> None:
    assert RecordShape.compile(("event.action", "a")) is None
    assert RecordShape.compile(("event.action", "a\x00b", *TRAIL_KEYS)) is None
    assert RecordShape.compile(("event.a", *TRAIL_KEYS)) is not None


def test_the_hash_first_in_event_falls_back() -> None:
    # Only sequence and hash in "event": "hash" is its first key, so there is no ',"hash":' to cut out.
    assert RecordShape.compile(("x", *TRAIL_KEYS)) is None


def ev(i: int, **fields: Any) -> AuditEvent:
    return AuditEvent(
        action="authz.decision",
        category=("web",),
        type=("denied",),
        part="authz",
        fields={"user.id": f"u{i}", "url.path": f"/p/{i}", **fields},
    )


def test_group_commit_writes_prepared_and_plain_records_into_one_chain(tmp_path: Path) -> None:
    seen: list[tuple[list[dict[str, Any]], list[bytes]]] = []
    with configured(tmp_path, durability="group", group_commit_ms=5, rotate_bytes=4096) as trail:
        trail.listeners.append(lambda docs, lines: seen.append((docs, lines)))
        for i in range(300):
            # every third one overrides a field every event has: the dict path writes it
            emit(ev(i, **({"edgesec.site": "other"} if i % 3 == 0 else {})))
        trail.flush()
    files = trail_files(tmp_path)
    assert len(files) > 3  # rotated in the middle of batches
    report = verify_chain(files)
    assert report.records == 300
    lines = [line for f in files for line in f.read_bytes().splitlines(keepends=True)]
    records = [json.loads(line) for line in lines]
    assert [r["user"]["id"] for r in records] == [f"u{i}" for i in range(300)]
    assert {r["edgesec"].get("site") for r in records[::3]} == {"other"}
    # listeners get the records as written, for prepared ones too
    docs = [d for batch, _ in seen for d in batch]
    assert docs == records
    assert [line for _, ls in seen for line in ls] == lines


def test_a_failing_write_keeps_prepared_records_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail = Trail(tmp_path, durability="group", group_commit_ms=5)
    real = Trail._write_lines
    calls = {"n": 0}

    def flaky(self: Trail, *args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trail, "_write_lines", flaky)
    rec = ev(1).prepare()
    assert isinstance(rec, Prepared)
    trail.submit(rec)
    with pytest.raises(Exception, match="No space left"):
        trail.flush(timeout=5)
    for _ in range(200):  # the writer retries after group_commit_ms: nothing was dropped
        try:
            if trail.flush(timeout=5):
                break
        except Exception:
            time.sleep(0.01)
    else:
        pytest.fail("the queued record was never written")
    trail.close()
    assert verify_chain(trail_files(tmp_path)).records == 1
