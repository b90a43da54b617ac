"""The generated syslog-ng pipeline at its edges, run by a real syslog-ng into the spec-checking loopback
Elasticsearch: forged attribution, lines that used to produce invalid JSON, arbitrary auditd lines, and
documents or whole requests Elasticsearch refuses -- each one ends indexed or dead-lettered, counted by id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.syslogng import PipelineOptions, render
from edgesec.auditing.trail import trail_files

from .esmock import FakeElasticsearch
from .sitepki import SitePki, make_site_pki
from .sng import SyslogNg, syntax_check

pytestmark = [pytest.mark.real("syslog-ng"), pytest.mark.slow]


@dataclass
class Pipe:
    pki: SitePki
    es: FakeElasticsearch
    sng: SyslogNg
    trail: Path
    audit_log: Path
    archive: Path

    def write(self, lines: list[bytes]) -> None:
        with open(self.audit_log, "ab") as fh:
            fh.write(b"".join(ln + b"\n" for ln in lines))

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                counts = {k: len(v) for k, v in self.es.indices.items()}
                raise AssertionError(
                    f"timed out waiting for {what}; indices {counts}; refused {self.es.refused};"
                    f" violations {self.es.violations[:3]}; syslog-ng: {self.sng.log.read_text()[-1500:]}"
                )
            time.sleep(0.1)

    def journal(self) -> list[tuple[dict[str, Any], bytes]]:
        out = []
        for f in sorted((self.archive / "bulk").glob("*.ndjson")):
            lines = f.read_bytes().split(b"\n")
            for action, doc in zip(lines[0::2], lines[1::2], strict=False):
                if action:
                    out.append((json.loads(action)["create"], doc))
        return out


def _pipe(tmp: Path, conformance: Path) -> Iterator[Pipe]:
    pki = make_site_pki(tmp / "pki")
    es = FakeElasticsearch(conformance, pki.server.cert, pki.server.key, pki.ca_bundle)
    trail = tmp / "audit"
    trail.mkdir(mode=0o700)
    audit_log = tmp / "audit.log"
    audit_log.touch()
    opts = PipelineOptions(
        trail_file=str(trail / "trail.jsonl"),
        audit_log=str(audit_log),
        local_syslog="off",
        es_urls=(es.url,),
        ca_file=str(pki.ca_bundle),
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
        archive_dir=str(tmp / "archive"),
        disk_buffer_dir=str(tmp / "buffer"),
        disk_buffer_bytes=64 * 1024 * 1024,
        batch_lines=50,
        batch_timeout_ms=200,
        workers=1,
        time_reopen=1,
        retries=2,
        site="branch-7",
    )
    conf = tmp / "syslog-ng.conf"
    conf.write_text(render(opts)["syslog-ng.conf"])
    syntax_check(conf)
    es.start()
    sng = SyslogNg(conf, tmp / "sng-state")
    sng.start()
    try:
        yield Pipe(pki, es, sng, trail, audit_log, tmp / "archive")
    finally:
        sng.stop()
        es.stop()


@pytest.fixture
def pipe(tmp_path: Path, conformance: Path) -> Iterator[Pipe]:
    yield from _pipe(tmp_path, conformance)


@pytest.fixture(scope="module")
def shared_pipe(tmp_path_factory: pytest.TempPathFactory, conformance_dir: Path) -> Iterator[Pipe]:
    yield from _pipe(tmp_path_factory.mktemp("pipe"), conformance_dir)


@pytest.fixture(scope="module")
def conformance_dir() -> Path:
    import os

    from tests.conftest import _missing

    d = os.environ.get("EDGESEC_CONFORMANCE_DATA")
    if not d or not Path(d).is_dir():
        _missing("EDGESEC_CONFORMANCE_DATA is not set")
        pytest.skip("no conformance data")
    return Path(d)


def by_sequence(es: FakeElasticsearch) -> dict[int, dict[str, Any]]:
    return {d["event"]["sequence"]: d for d in es.docs("edgesec-auditd-").values()}


FORGED = [
    # user space (auditctl -m, a PAM module) names other kernel fields inside msg='...'
    b"type=USER_CMD msg=audit(1700000000.100:900001): pid=300 uid=1000 auid=1000 ses=3"
    b" msg='cwd=\"/\" cmd=6C73 auid=0 uid=0 pid=1 ses=0 terminal=pts/0 res=success'",
    # ... and closes the quote early (the kernel does not escape it), then forges "outer" fields
    b"type=USER_AVC msg=audit(1700000000.200:900002): pid=301 uid=1000 auid=1000 ses=3"
    b" msg='avc: x' auid=0 pid=1 uid=0 ses=0 res=success y='z'",
    # a kernel pid that is not a number: the document must stay JSON (it was `"process":{,"name":"z"}`)
    b"type=SYSCALL msg=audit(1700000000.300:900003): arch=c000003e syscall=59 success=yes exit=0"
    b' pid=abc uid=0 auid=1000 ses=3 comm="z" exe="/usr/bin/z"',
    # a non-numeric pid inside msg='...' must neither reach process.pid nor break the document
    b"type=USER_LOGIN msg=audit(1700000000.400:900004): pid=302 uid=0 auid=1000 ses=3"
    b' msg=\'op=login pid=abc acct="bob" exe="/usr/sbin/sshd" hostname=? addr=10.0.0.9 terminal=ssh res=failed\'',
    # a leading zero: int64(0998) would be written as 0998, which is not JSON (found by the property test)
    b"type=SYSCALL msg=audit(1700000000.500:900005): syscall=1 pid=0998 uid=0 auid=1000 ses=3",
    # a 0x1D inside msg='...' posing as auditd's ENRICHED translation (UID="root" -> user.name)
    b"type=USER_CMD msg=audit(1700000000.700:900007): pid=304 uid=1000 auid=1000 ses=3"
    b' msg=\'cmd=6C73 res=success\x1dUID="root" AUID="root"\'',
]


def test_user_space_text_cannot_set_kernel_fields(pipe: Pipe) -> None:
    pipe.write([*FORGED, b"type=SYSCALL msg=audit(1700000000.600:0900006): syscall=1 pid=1 uid=0"])
    pipe.wait(lambda: pipe.es.count("edgesec-auditd-") == 6, 30, "6 auditd records")
    pipe.wait(lambda: pipe.es.count("edgesec-deadletter-") == 1, 30, "the serial with a leading zero")
    assert pipe.es.violations == [] and pipe.es.refused == []
    docs = by_sequence(pipe.es)
    for seq, pid in ((900001, 300), (900002, 301), (900004, 302)):
        d = docs[seq]
        assert d["process"]["pid"] == pid, d
        assert d["auditd"]["log"]["auid"] == "1000" and d["auditd"]["log"]["uid"] in ("1000", "0")
        assert d["auditd"]["log"]["ses"] == "3"
        ids = json.dumps(d.get("user", {}))
        assert '"0"' not in ids or seq == 900004, ids  # 900004's kernel uid is 0; nothing from msg
    assert docs[900001]["user"]["audit"]["id"] == "1000" and docs[900001]["user"]["id"] == "1000"
    assert docs[900002]["event"]["outcome"] == "success"
    assert "pid" not in docs[900003].get("process", {})
    assert docs[900003]["auditd"]["log"]["pid"] == "abc"  # kept as auditd wrote it, not as process.pid
    assert "pid" not in docs[900005].get("process", {}) and docs[900005]["auditd"]["log"]["pid"] == "0998"
    assert "name" not in docs[900007].get("user", {}) and "enriched" not in docs[900007]["auditd"]["log"]
    login = docs[900004]
    assert login["source"]["ip"] == "10.0.0.9" and login["event"]["outcome"] == "failure"
    assert login["user"]["name"] == "bob" and login["process"]["executable"] == "/usr/sbin/sshd"


# -- arbitrary auditd lines -----------------------------------------------------------------------------

_TYPES = st.sampled_from(["SYSCALL", "USER_CMD", "USER_LOGIN", "PATH", "EXECVE", "PROCTITLE", "CWD", "X"])
_KEYS = st.sampled_from(
    ["pid", "uid", "auid", "ses", "comm", "exe", "name", "proctitle", "addr", "res", "success", "acct", "a0",
     "cwd", "cmd", "msg", "key", "op", "hostname", "terminal", "gid", "euid", "dst", "src", "a1", "a2", "id"]
)  # fmt: skip
_VALUE = st.one_of(
    st.binary(max_size=24).filter(lambda b: b"\n" not in b and b"\x00" not in b and b"\r" not in b),
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r\x00"), max_size=24).map(str.encode),
    st.binary(min_size=1, max_size=16).map(lambda b: b.hex().upper().encode()),  # hex, as auditd encodes
    st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
    st.sampled_from(
        [
            b"4294967295",
            b"(null)",
            b"?",
            b'"quoted"',
            b"'",
            b"''",
            b"{,}",
            b"\\",
            b"\x1d",
            b"0998",
            b"-1",
            b'"a,b"',
            b"2F746D7020782C7922",
            b"2F",
            b"22",
            b"5C",
        ]
    ),
)
_FIELDS = st.lists(st.tuples(_KEYS, _VALUE), max_size=8).map(
    lambda kv: b" ".join(k.encode() + b"=" + v for k, v in kv)
)
_LINE = st.tuples(_TYPES, _FIELDS, st.one_of(st.none(), _FIELDS)).map(lambda t: (t[0].encode(), t[1], t[2]))


# Each failing example costs a wait: no shrinking (the journal and the endpoint show the bad document).
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(st.lists(_LINE, min_size=40, max_size=40))
def test_arbitrary_auditd_lines_are_indexed_or_dead_lettered(shared_pipe: Pipe, lines: list[Any]) -> None:
    """Every line is valid JSON at the endpoint and ends in exactly one place: indexed or a dead letter."""
    pipe = shared_pipe
    base = pipe.es.count("edgesec-auditd-") + pipe.es.count("edgesec-deadletter-")
    raw = []
    for i, (rtype, fields, nested) in enumerate(lines):
        serial = 10_000 * (base + 1) + i  # unique per line: each has its own _id
        line = b"type=" + rtype + b" msg=audit(1700000000.5:%d): " % serial + fields
        if nested is not None:
            line += b" msg='" + nested + b"'"
        raw.append(line)
    pipe.write(raw)
    n = len(raw)
    pipe.wait(
        lambda: (
            pipe.es.count("edgesec-auditd-") + pipe.es.count("edgesec-deadletter-") >= base + n
            or bool(pipe.es.refused or pipe.es.bad_bodies)
        ),
        60,
        f"{n} more lines indexed or dead-lettered",
    )
    time.sleep(0.5)
    assert pipe.es.count("edgesec-auditd-") + pipe.es.count("edgesec-deadletter-") == base + n
    assert pipe.es.violations == [] and pipe.es.bad_bodies == [] and pipe.es.refused == []
    # Counted by id: every journalled item is in its index under its _id.
    for meta, _doc in pipe.journal():
        assert meta["_id"] in pipe.es.indices[meta["_index"]], meta


# -- refusals -------------------------------------------------------------------------------------------


def test_refused_documents_and_requests_end_in_dead_letters(pipe: Pipe, cli) -> None:  # type: ignore[no-untyped-def]
    """Per-item 400s inside a 200, a request refused whole (400) and one too large (413): syslog-ng gives
    up after retries() (its internal() log says so, kept in the archive) and `auditlog reconcile` finds
    every refused item by _id and dead-letters it; everything else ends indexed."""
    es = pipe.es
    es.refuse_marker = b"REFUSE-THIS-REQUEST"
    es.max_request_bytes = 200_000
    with auditing.configured(pipe.trail, durability="fsync"):
        recs = [
            auditing.emit(AuditEvent(action="test.ok", category=("host",), type=("info",), fields={"user.id": f"u{i}"}))
            for i in range(60)
        ]  # fmt: skip
        big = auditing.emit(
            AuditEvent(action="test.big", category=("host",), type=("info",), message="x" * 300_000)
        )
    rejected = {r["event"]["hash"] for r in recs[5:8] if r is not None}
    es.reject_ids = set(rejected)
    audit_lines = [
        b"type=USER_CMD msg=audit(1700000001.1:%d): pid=%d uid=0 auid=1000 ses=1 msg='cmd=6C73 res=success'" % (7000 + i, 100 + i)
        for i in range(20)
    ]  # fmt: skip
    audit_lines[7] += b" REFUSE-THIS-REQUEST"
    pipe.write(audit_lines)
    total = 61 + 20
    pipe.wait(lambda: len(pipe.journal()) == total, 30, f"{total} journalled items")
    # syslog-ng gives up on the refused batches after retries(2): bounded, and said in its own log.
    internal = pipe.archive / "internal"
    pipe.wait(
        lambda: sum(f.read_bytes().count(b"message(s) dropped") for f in internal.glob("*.log")) >= 2,
        60,
        "syslog-ng's messages that it dropped the two refused batches",
    )
    assert 413 in es.refused and 400 in es.refused
    args = ["--es", es.url, "--ca", str(pipe.pki.ca_bundle), "--cert", str(pipe.pki.client.cert),
            "--key", str(pipe.pki.client.key)]  # fmt: skip
    code, out, err = cli("--json", "auditlog", "reconcile", "--journal", str(pipe.archive / "bulk"), *args)
    rep = json.loads(out)["result"]
    assert code == 1, err  # dead letters were written: someone must look
    assert rep["items"] == total and rep["dead_lettered"] == len(rejected) + 2
    dead = {
        d["edgesec"]["deadletter"]["id"]: d
        for d in es.docs("edgesec-deadletter-").values()
        if d["edgesec"]["deadletter"]["source"] == "reconcile"
    }
    marker_id = next(m["_id"] for m, doc in pipe.journal() if b"REFUSE-THIS-REQUEST" in doc)
    assert set(dead) == rejected | {big["event"]["hash"], marker_id}  # type: ignore[index]
    assert dead[big["event"]["hash"]]["error"]["code"] == "413"  # type: ignore[index]
    # Every journalled item is now indexed or dead-lettered, by id; none twice.
    for meta, _doc in pipe.journal():
        assert (meta["_id"] in es.indices[meta["_index"]]) != (meta["_id"] in dead), meta
    hashes = {
        json.loads(ln)["event"]["hash"] for f in trail_files(pipe.trail) for ln in f.read_bytes().splitlines()
    }
    assert hashes - set(es.docs("edgesec-audit-")) == rejected | {big["event"]["hash"]}  # type: ignore[index]
    # A second run has nothing new to do.
    code, out, _ = cli("--json", "auditlog", "reconcile", "--journal", str(pipe.archive / "bulk"), *args)
    assert code == 0 and json.loads(out)["result"]["items"] == 0
