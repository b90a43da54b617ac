"""The auditd mapping against Filebeat's own expected documents, field by field, through the real pipeline.

Every raw line of the conformance files that have Filebeat expected output (``auditd/filebeat-expected/``)
(as Filebeat's ``event.original`` holds it) goes through the generated syslog-ng config into the loopback Elasticsearch; each indexed document is
compared with Filebeat's for the fields both describe. The agreement table is printed (``-s``) and the
counts are held: a field the mapping follows must agree wherever Filebeat sets it, bar the documented
differences listed in DIFFERENCES.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_pipeline_edges import Pipe, _pipe

pytestmark = [pytest.mark.real("syslog-ng"), pytest.mark.slow]

FILES = {
    "test.log": "test.log-expected.jsonl",
    "useradd.log": "useradd.log-expected.jsonl",
    "audit-cent7-node.log": "audit-cent7-node.log-expected.jsonl",
    "execve-hex-arg.log": "execve-hex-arg-expected.jsonl",
}
FIELDS = (
    "@timestamp",
    "event.action",
    "event.category",
    "event.type",
    "event.outcome",
    "user.id",
    "user.audit.id",
    "user.effective.id",
    "user.name",
    "user.terminal",
    "user.target.id",
    "group.id",
    "process.pid",
    "process.name",
    "process.executable",
    "process.working_directory",
    "process.args",
    "process.args_count",
    "source.ip",
    "file.path",
    "auditd.log.sequence",
)
#: Where the mapping differs from Filebeat's documents, and why (README "Differences from Filebeat").
DIFFERENCES = {
    # Filebeat passes res=1 through as "1"; ECS allows success/failure/unknown, so 1 is "success".
    "event.outcome",
    # useradd.log's documents (a later Filebeat) put auid into user.id and uid into user.effective.id for
    # user-space account records; the module's documented rule, followed here and by test.log's documents,
    # is uid -> user.id, euid -> user.effective.id, auid -> user.audit.id.
    "user.id",
    "user.effective.id",
    # Filebeat takes VIRT_CONTROL's user= as user.name; only acct= (and ENRICHED UID=) are taken here.
    "user.name",
    # Filebeat calls an EXECVE record's a0 (argv[0], any text) process.executable; an absolute path only here.
    "process.executable",
}


def flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def norm(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, list):
        if not v:
            return None
        items = sorted(str(x) for x in v)
        return items[0] if len(items) == 1 else tuple(items)
    return str(v)


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Pipe, list[tuple[bytes, dict[str, Any]]]]]:
    data = Path(os.environ.get("EDGESEC_CONFORMANCE_DATA", "/nonexistent")) / "auditd"
    if not data.is_dir():
        from tests.conftest import _missing

        _missing("EDGESEC_CONFORMANCE_DATA is not set")
        pytest.skip("no conformance data")
    pairs: list[tuple[bytes, dict[str, Any]]] = []
    for raw_name, exp_name in FILES.items():
        raws = [ln for ln in (data / raw_name).read_bytes().splitlines() if ln.strip()]
        exps = [json.loads(ln) for ln in (data / "filebeat-expected" / exp_name).read_bytes().splitlines()]

        # One expected document per raw line, matched by record type and msg=audit(...) header. The line fed
        # is Filebeat's own event.original (one test.log line differs from the raw file in an address:
        # the two were transcribed from different commits).
        def head(line: bytes) -> bytes:
            return line.split(b"): ", 1)[0]

        assert sorted(map(head, raws)) == sorted(head(e["event.original"].encode()) for e in exps), raw_name
        pairs += [(e["event.original"].encode(), e) for e in exps]
    for pipe in _pipe(tmp_path_factory.mktemp("filebeat"), data.parent):
        pipe.write([raw for raw, _ in pairs])
        pipe.wait(lambda: pipe.es.count("edgesec-auditd-") >= len(pairs), 60, f"{len(pairs)} auditd records")
        yield pipe, pairs


def agreement(pipe: Pipe, pairs: list[tuple[bytes, dict[str, Any]]]) -> dict[str, tuple[int, int]]:
    ours = {d["event"]["original"].encode(): flat(d) for d in pipe.es.docs("edgesec-auditd-").values()}
    table: dict[str, tuple[int, int]] = {}
    for field in FIELDS:
        agree = compared = 0
        for raw, exp in pairs:
            theirs = norm(exp.get(field))
            mine = norm(ours[raw].get(field))
            if field == "@timestamp" and mine is not None:
                mine = mine.replace("+00:00", "Z")
            if theirs is None and mine is None:
                continue
            compared += 1
            agree += theirs == mine
            if theirs != mine and os.environ.get("EDGESEC_SHOW_DISAGREEMENT"):
                print(f"  {field}: filebeat {theirs!r} ours {mine!r} <- {raw[:90]!r}")
        table[field] = (agree, compared)
    return table


def test_agreement_with_filebeat(indexed: tuple[Pipe, list[tuple[bytes, dict[str, Any]]]]) -> None:
    pipe, pairs = indexed
    assert pipe.es.violations == []
    table = agreement(pipe, pairs)
    print("\nfield | agree / compared (documents where either side sets the field)")
    for field, (a, c) in table.items():
        print(f"{field} | {a} / {c}")
    for field, (a, c) in table.items():
        if field not in DIFFERENCES:
            assert a == c, (field, a, c)
    assert table["event.action"][1] == 34 and table["user.audit.id"][1] == 29  # compared, not skipped
