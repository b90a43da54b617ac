"""Trail records written from a compiled template: the canonical line without a nested dict per record.

A trail record is the canonical JSON of a nested document (keys sorted, no whitespace, UTF-8; see
:mod:`edgesec.auditing.trail`). The order of its keys, and so every byte of it that is not a value,
depends only on *which* dotted fields the record has -- its shape -- never on their values. Busy writers
(the authz ``/auth`` path writes an event for every denial) produce the same few shapes over and over,
so a shape is compiled once into a template: the canonical encoder itself writes a document of that
shape whose values are unique placeholders, and the text between the placeholders is kept. A record of
that shape is then its values, each encoded by the same canonical encoder, put between those pieces.
Because a JSON object's canonical form is its keys in order with each value's own canonical form, the
line is byte for byte what ``canonical`` writes for the nested document -- the hypothesis tests in
``tests/auditing/test_prepared.py`` hold the two equal -- at a fraction of the cost (no dict per
record, no sort, no recursive walk).

The trail adds three fields to every record: ``event.sequence``, ``edgesec.trail.prev`` and
``event.hash`` (SHA-256 of the canonical record without ``event.hash``). A shape always has them; the
hashed body is the template without the ``,"hash":"..."`` pair, and the line on disk is the body with
the pair put back at its sorted place.

Anything a template cannot express falls back to the dict path, which stays the reference: a dotted
name that is a prefix of another (``labels`` and ``labels.x``), a name given twice, a name with a NUL,
a shape in which ``event.hash`` would be the first key of ``event``.
"""

from __future__ import annotations

import itertools
import operator
import re
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from json.encoder import encode_basestring as _encode_str  # what ensure_ascii=False writes strings with
from typing import Any

from edgesec.auditing.canonical import HASH_PAIR_PREFIX, body_digest, canonical_value, hash_pair

__all__ = ["TRAIL_KEYS", "Prepared", "RecordShape", "shape_for"]

#: The fields the trail writer sets on every record, in the order :meth:`RecordShape.render` takes them.
TRAIL_KEYS = ("event.sequence", "edgesec.trail.prev", "event.hash")
_PLACEHOLDER = re.compile(r'"\\u0000(\d+)\\u0000"')
#: Shapes kept per process. Field names come from code, so a process sees a handful; the bound guards
#: against a caller that makes names from data (such shapes are still written, through the dict path).
MAX_SHAPES = 1024


class RecordShape:
    """The compiled template of one shape.

    ``keys`` are the dotted fields whose values vary from record to record, ending with
    :data:`TRAIL_KEYS`; ``fixed`` fields (the same in every record of the shape: the host, the part,
    the action...) are written into the template itself. A record is made in two steps:
    :meth:`fill` writes the values of the varying keys but the trail's (in ``keys`` order) into the
    four pieces of text around the trail's three fields -- done by the caller, while its values are
    still in the processor's caches -- and :meth:`seal` puts the sequence number, the previous hash
    and the record's own hash between them, under the trail's lock.
    """

    __slots__ = ("_hash_at", "_lits", "_prev_at", "_segments", "_seq_at", "keys")

    def __init__(self, keys: tuple[str, ...], lits: list[str], segments: tuple[Any, ...],
                 trail_order: tuple[int, ...]) -> None:  # fmt: skip
        self.keys = keys
        self._lits = lits
        self._segments = segments
        # Where each trail field goes in [piece, field, piece, field, piece, field, piece].
        n = len(keys)
        self._seq_at = 1 + 2 * trail_order.index(n - 3)
        self._prev_at = 1 + 2 * trail_order.index(n - 2)
        self._hash_at = 1 + 2 * trail_order.index(n - 1)

    @classmethod
    def compile(cls, keys: tuple[str, ...], fixed: Mapping[str, Any] | None = None) -> RecordShape | None:
        """The template for records with these varying and fixed fields; ``None`` if none can be made."""
        fixed = fixed or {}
        names = (*keys, *fixed)
        if keys[-3:] != TRAIL_KEYS or len(set(names)) != len(names) or any("\x00" in k for k in names):
            return None
        given = set(names)
        for name in names:
            parts = name.split(".")
            if any(".".join(parts[:i]) in given for i in range(1, len(parts))):
                return None  # a field is a prefix of another one
        doc: dict[str, Any] = {}
        items = [(key, f"\x00{i}\x00") for i, key in enumerate(keys)] + list(fixed.items())
        for key, value in items:
            *parents, leaf = key.split(".")
            cur = doc
            for p in parents:
                cur = cur.setdefault(p, {})  # always one made here: no name is a prefix of another
            cur[leaf] = value
        try:
            text = canonical_value(doc)
        except (TypeError, ValueError, RecursionError):
            return None  # a fixed value that is not JSON data: the dict path reports it
        pieces = _PLACEHOLDER.split(text)
        literals, slots = pieces[0::2], [int(s) for s in pieces[1::2]]
        n = len(keys)
        if sorted(slots) != list(range(n)):
            return None  # (a fixed value that looks like a placeholder)
        h = slots.index(n - 1)  # the event.hash slot
        if not literals[h].endswith(HASH_PAIR_PREFIX):
            return None  # event.hash first in event: no pair to cut out (event.action sorts before it)
        literals[h] = literals[h][: -len(HASH_PAIR_PREFIX)]  # the pair is put back whole by seal()
        # Four pieces of text: before, between and after the trail's fields. Each is the join of
        # literal text and encoded values, picked in order (by one itemgetter) from the list of the
        # values followed by the literals: no format string to parse, no Python loop per value.
        nv = n - 3
        lits = [*literals, ""]
        empty = nv + len(lits) - 1
        at = [i for i, slot in enumerate(slots) if slot >= nv]
        segments = []
        for lo, hi in itertools.pairwise([-1, *at, len(slots)]):
            order = [nv + lo + 1]
            for k in range(lo + 1, hi):
                order += [slots[k], nv + k + 1]
            if len(order) == 1:
                order.append(empty)  # an itemgetter of one index returns the item, not a tuple
            segments.append(operator.itemgetter(*order))
        return cls(keys, lits, tuple(segments), tuple(slots[i] for i in at))

    def fill(self, values: Sequence[Any]) -> tuple[str, str, str, str]:
        """The record's text but the trail's fields, ``values`` in ``keys`` order: four pieces."""
        es, cv = _encode_str, canonical_value
        # Strings and integers, nearly every value, without a call of ours; anything else through
        # the canonical encoder itself.
        enc = [
            es(v) if type(v) is str else int.__repr__(v) if type(v) is int else cv(v)
            for v in values
        ]  # fmt: skip
        enc += self._lits
        g0, g1, g2, g3 = self._segments
        j = "".join
        return j(g0(enc)), j(g1(enc)), j(g2(enc)), j(g3(enc))

    def seal(self, pieces: Sequence[str], seq: int, prev: str) -> tuple[str, bytes]:
        """The record's hash and its line (canonical JSON and a newline) from :meth:`fill`'s pieces."""
        parts = [pieces[0], "", pieces[1], "", pieces[2], "", pieces[3]]
        parts[self._seq_at] = int.__repr__(seq)
        parts[self._prev_at] = _encode_str(prev)
        digest = body_digest("".join(parts).encode("utf-8"))  # without event.hash
        parts[self._hash_at] = hash_pair(digest)
        parts.append("\n")
        return digest, "".join(parts).encode("utf-8")

    def render(self, values: Sequence[Any], seq: int, prev: str) -> tuple[str, bytes]:
        """``seal(fill(values), seq, prev)``."""
        return self.seal(self.fill(values), seq, prev)


class Prepared:
    """A record waiting for the trail: its shape and its text but the trail's fields (``shape.fill``)."""

    __slots__ = ("pieces", "shape")

    def __init__(self, shape: RecordShape, pieces: tuple[str, str, str, str]) -> None:
        self.shape = shape
        self.pieces = pieces


_shapes: dict[Hashable, RecordShape | None] = {}
_shapes_lock = threading.Lock()


def shape_for(
    key: Hashable, describe: Callable[[], tuple[tuple[str, ...], Mapping[str, Any] | None]]
) -> RecordShape | None:
    """The compiled shape cached under ``key``; on a miss ``describe()`` gives its varying keys and
    fixed fields. ``None`` when such records must be written through the dict path."""
    try:
        return _shapes[key]
    except KeyError:
        pass
    keys, fixed = describe()
    shape = RecordShape.compile(keys, fixed)
    with _shapes_lock:
        if len(_shapes) < MAX_SHAPES:
            _shapes[key] = shape
    return shape
