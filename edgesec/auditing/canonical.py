"""Canonical JSON and the record-hash rule: the one home of both (it imports nothing else of edgesec).

Canonical JSON: keys sorted, no whitespace, UTF-8, no NaN/Infinity (``json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=False)``). A trail line *is* the canonical form of its
record, so a verifier needs no re-encoding.

The hash rule: a record's ``event.hash`` is the SHA-256 (hex) of the canonical record *without*
``event.hash``. Because ``event`` is a JSON object written with sorted keys, the canonical record with its
hash differs from the hashed body only by the pair :func:`hash_pair` writes, placed before the first
``event`` key that sorts after ``hash``. Every writer and reader uses :func:`body_digest` for the digest and
:func:`hash_pair` for the pair:

* :func:`record_hash` -- from a nested document (re-encodes it);
* :func:`seal` -- sets ``event.hash`` on a nested document and returns its line, with one encoding;
* ``prepared.RecordShape.seal`` -- the same line from a compiled template;
* :func:`line_hash_ok` -- checks a line against its own ``event.hash`` on the raw bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "HASH_KEY",
    "HASH_PAIR_PREFIX",
    "body_digest",
    "canonical",
    "canonical_value",
    "hash_pair",
    "line_hash_ok",
    "record_hash",
    "seal",
]

#: The key under ``event`` that holds the record's hash (and that the hash does not cover).
HASH_KEY = "hash"
#: What precedes the digest in :func:`hash_pair` (where a compiled template cuts the pair out).
HASH_PAIR_PREFIX = f',"{HASH_KEY}":'

# One encoder for every record: ``json.dumps`` with options builds a new JSONEncoder (and the C
# encoder under it) per call, which costs about as much as hashing the record. The C encoder is the
# one JSONEncoder.encode would build for these options, so the output is the same; it is made without
# the circular-reference table (records are trees: JSON parsed from a line, or built field by field),
# which saves a dictionary update per nested object.
_canonical_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_canonical: Callable[[Any, int], Any] | None = (
    _c_make_encoder(
        None,
        _canonical_encoder.default,
        json.encoder.encode_basestring,  # what ensure_ascii=False selects
        None,
        ":",
        ",",
        True,
        False,
        False,  # allow_nan: NaN and Infinity are not JSON (Elasticsearch refuses them)
    )
    if _c_make_encoder is not None
    else None
)


def canonical_value(value: Any) -> str:
    """The canonical JSON of any value (a record's field): the text ``canonical`` writes for it in place."""
    if _c_canonical is not None:
        return "".join(_c_canonical(value, 0))
    return _canonical_encoder.encode(value)


def canonical(doc: Mapping[str, Any]) -> str:
    """The canonical JSON of a document (a trail record is this text and a newline)."""
    return canonical_value(doc) if type(doc) is dict else _canonical_encoder.encode(doc)


def body_digest(body: bytes) -> str:
    """The record hash of a hashed body: the canonical record's UTF-8 bytes without ``event.hash``."""
    return hashlib.sha256(body).hexdigest()


def hash_pair(digest: str) -> str:
    """The text a record's line has and its hashed body has not: ``,"hash":"<digest>"`` inside ``event``."""
    return f'{HASH_PAIR_PREFIX}"{digest}"'


@functools.lru_cache(maxsize=256)
def _key_marker(key: str) -> bytes:
    """``,"<key>":`` as canonical JSON writes a following key (event keys are few: cached)."""
    return b"," + _canonical_encoder.encode(key).encode("utf-8") + b":"


def record_hash(doc: Mapping[str, Any]) -> str:
    """The record hash of ``doc``: :func:`body_digest` of its canonical form without ``event.hash``."""
    event = dict(doc.get("event") or {})
    event.pop(HASH_KEY, None)
    body = dict(doc)
    body["event"] = event
    return body_digest(canonical(body).encode("utf-8"))


def line_hash_ok(raw: bytes, doc: Mapping[str, Any]) -> bool:
    """Does a trail line (without its newline) hash to its own ``event.hash``? The one record check
    that ``auditlog verify`` and ``auditlog ship`` both use.

    The writer hashed the canonical record without ``event.hash``, and wrote the canonical record with
    it; the two differ only by the :func:`hash_pair` inside ``event`` (never its last key: ``kind``
    follows). So the check works on the raw bytes: one SHA-256, no re-encoding. Any other byte
    change, re-formatting included, changes the digest. (Inside a JSON string every quote is escaped,
    so the pair cannot be matched there.)
    """
    h = str(doc["event"][HASH_KEY])
    # The pair read with the comma after it rather than before: the same bytes once cut out.
    needle = hash_pair(h)[1:].encode("utf-8", "replace") + b","
    if needle not in raw:
        return False
    return body_digest(raw.replace(needle, b"", 1)) == h


_SCALARS = (str, int, float, bool, type(None))


def _flat(v: Any) -> bool:
    """A scalar, or a list of scalars: no nested object where a key could hide."""
    if isinstance(v, list | tuple):
        return all(isinstance(x, _SCALARS) for x in v)
    return isinstance(v, _SCALARS)


def _all_flat(values: Iterable[Any]) -> bool:
    """``all(map(_flat, values))``, with the exact types records hold tested first (it runs per record)."""
    for v in values:
        t = type(v)
        if t is str or t is int:
            continue
        if t is list:
            for x in v:
                if type(x) is not str and not isinstance(x, _SCALARS):
                    return False
            continue
        if not _flat(v):
            return False
    return True


def seal(doc: dict[str, Any]) -> tuple[str, bytes]:
    """Set ``event.hash`` on ``doc``; return the hash and the record's line (canonical JSON + newline).

    Equal to ``record_hash`` then ``canonical``, with one JSON encoding instead of two: the canonical
    record differs from the hashed body only by :func:`hash_pair` placed before the first ``event`` key
    that sorts after ``hash``. A structural ``,"<key>":`` cannot occur inside a JSON string (every quote
    there is escaped), so the first one after ``"event":{`` is the place -- provided every ``event``
    value is a scalar or a list of scalars and keys sort on both sides of ``hash``; otherwise the two
    encodings are done the plain way.
    """
    event = doc["event"]
    event.pop(HASH_KEY, None)
    later = [k for k in event if k > HASH_KEY]
    if later and any(k < HASH_KEY for k in event) and _all_flat(event.values()):
        body = canonical(doc).encode("utf-8")
        digest = body_digest(body)
        start = body.find(b'"event":{')
        nxt = body.find(_key_marker(min(later)), start)
        if start >= 0 and nxt > start:
            event[HASH_KEY] = digest
            return digest, body[:nxt] + hash_pair(digest).encode("ascii") + body[nxt:] + b"\n"
    digest = record_hash(doc)
    event[HASH_KEY] = digest
    return digest, (canonical(doc) + "\n").encode("utf-8")
