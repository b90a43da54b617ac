"""``ship``: the trail itself bulk-indexed (a backfill, or a site without syslog-ng), resuming after the last
record Elasticsearch acknowledged."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesec._fs import FileLock, atomic_write, read_input_file
from edgesec.auditing.canonical import line_hash_ok
from edgesec.auditing.elastic.client import es_errors, short_error
from edgesec.auditing.elastic.reconcile import BulkItem, send_dead_letters
from edgesec.auditing.trail import GENESIS, trail_files
from edgesec.errors import InputError, OperationFailed, VerificationError


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
) -> dict[str, Any]:
    """Bulk-index every record after the saved state; advance the state after each acknowledged batch.

    A record Elasticsearch refuses (a per-item error other than 409) gets a dead letter naming it, and
    shipping goes on; ``dead_lettered`` lists their sequence numbers."""
    with FileLock(state_path.with_name(state_path.name + ".lock"), timeout=0.5):
        state = ShipState.load(state_path)
        start = state.seq
        created = dup = 0
        dead_lettered: list[int] = []  # sequence numbers of records Elasticsearch refused
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
            except es_errors() as exc:
                raise OperationFailed(
                    f"Elasticsearch bulk failed after record {state.seq}: {short_error(exc)}",
                    hint="rerun `edgesec auditlog ship`: it resumes from the last acknowledged record",
                ) from None
            items = resp["items"]
            if len(items) != len(buf):
                raise OperationFailed("Elasticsearch answered a different number of bulk items than sent")
            refused: list[tuple[BulkItem, int, str]] = []
            for (raw, doc), item in zip(buf, items, strict=True):
                r = item.get("create") or item.get("index") or {}
                status = int(r.get("status", 0))
                if status == 409:
                    dup += 1  # already there (an earlier run, or syslog-ng): the same _id, the same record
                elif 200 <= status < 300:
                    created += 1
                else:
                    # One refused record must not hold back the ones after it: it gets a dead letter
                    # naming it (the record itself stays in the trail) and shipping goes on.
                    err = r.get("error") or {}
                    index, _id = index_for(prefix, doc), str(doc["event"]["hash"])
                    line = json.dumps({"create": {"_index": index, "_id": _id}}).encode()
                    seq = int(doc["event"]["sequence"])
                    refused.append(
                        (BulkItem(f"trail record {seq}", seq, line, raw, index, _id), status,
                         f"{err.get('type')}: {err.get('reason')}")
                    )  # fmt: skip
            if refused:
                send_dead_letters(client, prefix, refused)
                dead_lettered.extend(it.end for it, _, _ in refused)
            last = buf[-1][1]
            state.seq, state.hash = int(last["event"]["sequence"]), last["event"]["hash"]
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
        return {
            "from": start,
            "to": state.seq,
            "created": created,
            "already_present": dup,
            "dead_lettered": dead_lettered,
        }


# -- reconcile -----------------------------------------------------------------------------------------
