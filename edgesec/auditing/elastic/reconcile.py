"""``reconcile``: the items syslog-ng journalled offered again by ``_id``; what is missing is created, what is
refused goes to the dead-letter index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesec._fs import FileLock, atomic_write
from edgesec.auditing.elastic.client import es_errors, short_error
from edgesec.errors import InputError, OperationFailed

DEADLETTER_ORIGINAL_BYTES = 16 * 1024


@dataclass
class BulkItem:
    file: str
    end: int  # offset just after the item's document line
    action: bytes
    doc: bytes
    index: str
    id: str


def _journal_items(journal: Path, done: dict[str, int]) -> Iterator[BulkItem]:
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
                yield BulkItem(f.name, offset, action[:-1], doc[:-1], index, _id)


def _deadletter_doc(prefix: str, item: BulkItem, status: int, reason: str) -> tuple[str, str, bytes]:
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


def send_dead_letters(client: Any, prefix: str, dead: list[tuple[BulkItem, int, str]]) -> None:
    """Index the dead letters of refused items (``(item, status, reason)``); one that is refused as well
    is an error naming the item (it is not lost: it stays where it was read from)."""
    body = bytearray()
    for it, status, reason in dead:
        index, _id, doc = _deadletter_doc(prefix, it, status, reason)
        body += json.dumps({"create": {"_index": index, "_id": _id}}).encode() + b"\n" + doc + b"\n"
    try:
        resp = client.bulk(operations=bytes(body))
    except es_errors() as exc:
        raise OperationFailed(
            f"Elasticsearch refused the dead letters of {len(dead)} item(s): {short_error(exc)}"
        ) from None
    for (it, _, _), r in zip(dead, resp["items"], strict=True):
        one: dict[str, Any] = next(iter(r.values()), {}) if isinstance(r, dict) else {}
        st = int(one.get("status", 0))
        if not (200 <= st < 300 or st == 409):
            raise OperationFailed(
                f"Elasticsearch refused item {it.index}/{it.id} and its dead letter ({st})",
                hint="the item is kept where it was read from; fix the dead-letter index and rerun",
            )


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

        def bulk(items: list[BulkItem]) -> list[tuple[int, str]]:
            body = b"".join(it.action + b"\n" + it.doc + b"\n" for it in items)
            try:
                resp = client.bulk(operations=body)
            except es_errors() as exc:
                status = int(getattr(getattr(exc, "meta", None), "status", 0) or 0)
                if status in (400, 413) and len(items) > 1:
                    half = len(items) // 2
                    return bulk(items[:half]) + bulk(items[half:])
                if status in (400, 413):
                    return [(status, short_error(exc))]
                raise OperationFailed(
                    f"Elasticsearch bulk failed during reconcile: {short_error(exc)}",
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

        def settle(items: list[BulkItem]) -> None:
            if not items:
                return
            dead: list[tuple[BulkItem, int, str]] = []
            for it, (status, reason) in zip(items, bulk(items), strict=True):
                counts["items"] += 1
                if status == 409:
                    counts["present"] += 1
                elif 200 <= status < 300:
                    counts["created"] += 1
                else:
                    dead.append((it, status, reason or f"status {status}"))
            if dead:
                send_dead_letters(client, prefix, dead)
                counts["dead_lettered"] += len(dead)
            for it in items:
                done[it.file] = it.end
            atomic_write(state_path, json.dumps(done, sort_keys=True) + "\n")

        pending: list[BulkItem] = []
        for item in _journal_items(journal, done):
            pending.append(item)
            if len(pending) >= batch:
                settle(pending)
                pending = []
        settle(pending)
        return counts
