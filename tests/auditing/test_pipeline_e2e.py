"""The generated syslog-ng pipeline, run by a real syslog-ng, into a spec-checking loopback Elasticsearch.

What this shows: trail events and raw auditd lines (every file in the conformance data, the ENRICHED
sample included) arrive over mutual TLS as valid ECS documents with the expected values; nothing is
lost when the endpoint goes away mid-stream and syslog-ng itself restarts (counted by id); a line that
cannot be parsed lands in the dead-letter index and file; a checkpoint sent through RFC 5424 syslog
reaches its own index.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.syslogng import NetworkSource, PipelineOptions, render
from edgesec.auditing.trail import trail_files
from edgesec.errors import OperationFailed
from tests._net import free_port

from .esmock import FakeElasticsearch
from .sitepki import SitePki, make_site_pki
from .sng import SyslogNg, syntax_check

pytestmark = [pytest.mark.real("syslog-ng"), pytest.mark.slow]


def wait_for(pred: Callable[[], bool], timeout: float, what: str, rig: Rig | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            diag = ""
            if rig is not None:
                counts = {k: len(v) for k, v in rig.es.indices.items()}
                diag = (
                    f"; indices {counts}; {len(rig.es.requests)} requests; violations {rig.es.violations[:3]};"
                    f" syslog-ng said: {rig.sng.log.read_text()[-1500:]}"
                )
            raise AssertionError(f"timed out waiting for {what}{diag}")
        time.sleep(0.1)


def audit_lines(conformance: Path) -> list[bytes]:
    out: list[bytes] = []
    for f in sorted((conformance / "auditd").glob("*.log")):
        out += [ln for ln in f.read_bytes().splitlines() if ln.strip()]
    return out


@dataclass
class Rig:
    """A running pipeline: site PKI, loopback Elasticsearch, syslog-ng and the files it reads and writes."""

    pki: SitePki
    es: FakeElasticsearch
    sng: SyslogNg
    trail: Path
    audit_log: Path
    archive: Path
    conf: Path
    syslog_port: int
    network_port: int


@pytest.fixture(params=["http", "elasticsearch-http"])
def rig(request: pytest.FixtureRequest, tmp_path: Path, conformance: Path) -> Iterator[Rig]:
    pki = make_site_pki(tmp_path / "pki")
    es = FakeElasticsearch(conformance, pki.server.cert, pki.server.key, pki.ca_bundle)
    trail = tmp_path / "audit"
    trail.mkdir(mode=0o700)
    audit_log = tmp_path / "audit.log"
    audit_log.touch()
    port, net_port = free_port(), free_port()
    opts = PipelineOptions(
        network=NetworkSource(
            port=net_port,
            ip="127.0.0.1",
            ca_file=str(pki.ca_bundle),
            cert_file=str(pki.server.cert),
            key_file=str(pki.server.key),
            trusted_dn=("*, O=edgesec test",),
        ),
        trail_file=str(trail / "trail.jsonl"),
        audit_log=str(audit_log),
        local_syslog="tcp",
        local_syslog_port=port,
        es_urls=(es.url,),
        ca_file=str(pki.ca_bundle),
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
        archive_dir=str(tmp_path / "archive"),
        disk_buffer_dir=str(tmp_path / "buffer"),
        disk_buffer_bytes=64 * 1024 * 1024,
        batch_lines=200,
        batch_timeout_ms=200,
        workers=2,
        time_reopen=1,
        site="branch-7",
        driver=request.param,
    )
    conf = tmp_path / "syslog-ng.conf"
    conf.write_text(render(opts)["syslog-ng.conf"])
    syntax_check(conf)
    es.start()
    sng = SyslogNg(conf, tmp_path / "sng-state")
    sng.start()
    try:
        yield Rig(pki, es, sng, trail, audit_log, tmp_path / "archive", conf, port, net_port)
    finally:
        sng.stop()
        es.stop()


def emit_many(trail: Path, start: int, n: int) -> None:
    with auditing.configured(trail, durability="group", rotate_bytes=20_000):
        for i in range(start, start + n):
            auditing.emit(
                AuditEvent(
                    action="authz.decision",
                    category=("iam",),
                    type=("denied" if i % 3 == 0 else "allowed",),
                    outcome="failure" if i % 3 == 0 else "success",
                    part="authz",
                    fields={"user.id": f"user{i}", "source.ip": "127.0.0.1", "url.path": f"/v1/models/{i}"},
                )
            )


def archived_hashes(rig: Rig) -> set[str]:
    """The hashes of the trail records in the pipeline's archive so far (whole lines only)."""
    out = set()
    for day in (p for p in rig.archive.glob("*/*/*") if p.is_dir()):
        for f in day.glob("audit.log"):
            for line in f.read_bytes().split(b"\n")[:-1]:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out.add(json.loads(line)["event"]["hash"])
    return out


def trail_records(trail: Path) -> dict[str, bytes]:
    out = {}
    for f in trail_files(trail):
        for line in f.read_bytes().splitlines():
            out[json.loads(line)["event"]["hash"]] = line
    return out


def test_pipeline_delivers_ecs_without_loss(rig: Rig, conformance: Path, cli) -> None:  # type: ignore[no-untyped-def]
    es = rig.es
    # 1. trail events and every raw auditd line
    emit_many(rig.trail, 0, 300)
    lines = audit_lines(conformance)
    with open(rig.audit_log, "ab") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    wait_for(lambda: es.count("edgesec-audit-") == 300, 60, "300 trail events", rig)
    wait_for(lambda: es.count("edgesec-auditd-") == len(lines), 60, f"{len(lines)} auditd records", rig)
    assert es.violations == []
    assert any(
        "syslog-ng-client" in s for s in es.client_subjects
    )  # mutual TLS, the client cert from the site PKI

    # The trail record arrives byte for byte, under its own hash as _id.
    recs = trail_records(rig.trail)
    for (index, _id), raw in list(es.raw.items()):
        if index.startswith("edgesec-audit-"):
            assert recs[_id] == raw

    by_seq = {d["event"]["sequence"]: d for d in es.docs("edgesec-auditd-").values()}
    syscall = by_seq[4242]  # the ENRICHED sample
    assert syscall["@timestamp"].startswith("2023-11-14T22:13:20.123")
    # Filebeat's auditd semantics: uid -> user.id, auid -> user.audit.id, euid -> user.effective.id.
    assert syscall["user"]["id"] == "0" and syscall["user"]["audit"] == {"id": "1000"}
    assert syscall["user"]["name"] == "root" and syscall["user"]["effective"] == {
        "id": "0",
        "group": {"id": "0"},
    }
    assert syscall["event"]["category"] == ["process"] and syscall["event"]["type"] == ["info"]
    assert syscall["process"] == {
        "pid": 1001,
        "name": "id",
        "executable": "/usr/bin/id",
    }
    assert syscall["event"]["action"] == "syscall" and syscall["event"]["outcome"] == "success"
    assert syscall["event"]["module"] == "auditd" and syscall["auditd"]["log"]["record_type"] == "SYSCALL"
    assert "\x1d" in syscall["event"]["original"] and "\x1d" not in syscall["message"]
    login = by_seq[4243]
    assert login["source"]["ip"] == "10.0.0.5" and login["event"]["outcome"] == "success"
    assert login["process"]["executable"] == "/usr/sbin/sshd" and login["event"]["action"] == "logged-in"
    ipsec = by_seq[18877201]  # MAC_IPSEC_EVENT: src/dst networks
    assert ipsec["source"]["ip"] == "192.168.2.0" and ipsec["destination"]["ip"] == "192.168.0.0"
    titles = {
        d["process"].get("title") for d in by_seq.values() if d["auditd"]["log"]["record_type"] == "PROCTITLE"
    }
    assert "bash" in titles and "sshd: burn [priv]" in titles  # hex-decoded by linux-audit-parser
    cwd = [d for d in by_seq.values() if d.get("process", {}).get("working_directory") == "/home/alice"]
    assert cwd
    failed = [d for d in by_seq.values() if d["auditd"]["log"].get("res") == "failed"]
    assert failed and all(d["event"]["outcome"] == "failure" for d in failed)
    unset = [d for d in by_seq.values() if d["auditd"]["log"].get("auid") == "4294967295"]
    assert unset and all(d["user"]["audit"]["id"] == "4294967295" for d in unset)  # as Filebeat keeps it
    assert all(d["host"]["name"] and d["edgesec"]["site"] == "branch-7" for d in by_seq.values())

    # 2. the endpoint goes away mid-stream; events keep coming; syslog-ng restarts during the outage
    es.stop()
    emit_many(rig.trail, 300, 200)
    # syslog-ng has read these (its archive, a file destination, has them) before it is stopped.
    wait_for(lambda: len(archived_hashes(rig)) >= 500, 60, "500 trail events in the archive", rig)
    rig.sng.stop()
    emit_many(rig.trail, 500, 200)
    rig.sng.start()
    emit_many(rig.trail, 700, 100)
    # Not a fixed sleep before the negative assertion: every record has been read and archived, so
    # whatever could have been sent to Elasticsearch has been tried.
    wait_for(lambda: len(archived_hashes(rig)) == 800, 90, "all 800 trail events in the archive", rig)
    assert es.count("edgesec-audit-") == 300  # nothing could arrive while it was down
    es.start()
    wait_for(lambda: es.count("edgesec-audit-") == 800, 90, "all 800 trail events after the outage", rig)
    assert set(es.docs("edgesec-audit-")) == set(trail_records(rig.trail))  # every one, by id; none extra
    assert len(rotated := [f for f in trail_files(rig.trail) if f.name != "trail.jsonl"]) >= 2, rotated
    assert es.violations == []

    # 3. a line that is no audit record goes to the dead-letter index and file, not nowhere
    with open(rig.audit_log, "ab") as fh:
        fh.write(b"this is not an audit record\n")
    wait_for(lambda: es.count("edgesec-deadletter-") == 1, 30, "the dead letter", rig)
    dead = next(iter(es.docs("edgesec-deadletter-").values()))
    assert dead["event"]["original"] == "this is not an audit record"
    assert dead["event"]["kind"] == "pipeline_error" and dead["edgesec"]["deadletter"]["source"] == "auditd"
    dl_files = list((rig.archive / "deadletter").glob("*.log"))
    assert dl_files and b"this is not an audit record" in dl_files[0].read_bytes()

    # 4. the archive holds everything, privately, in per-day directories
    day_dirs = [p for p in rig.archive.glob("*/*/*") if p.is_dir()]
    assert day_dirs
    for p in rig.archive.rglob("*"):
        assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"
    archived = b"".join(p.read_bytes() for d in day_dirs for p in d.glob("audit.log"))
    assert len({json.loads(ln)["event"]["hash"] for ln in archived.splitlines()}) == 800
    assert es.violations == []
    # The archive is a copy off the host the trail can be verified against.
    archive_files = [str(p) for d in day_dirs for p in d.glob("audit.log")]
    code, out, err = cli(
        "auditlog", "verify", "--trail", str(rig.trail), *[a for f in archive_files for a in ("--shipped", f)]
    )
    assert code == 0 and "800 shipped record(s) matched" in out, err
    # `auditlog ship` and syslog-ng agree on index and _id: shipping the same trail adds nothing.
    tls = [
        "--es",
        es.url,
        "--ca",
        str(rig.pki.ca_bundle),
        "--cert",
        str(rig.pki.client.cert),
        "--key",
        str(rig.pki.client.key),
    ]
    code, out, err = cli(
        "--json",
        "auditlog",
        "ship",
        *tls,
        "--trail",
        str(rig.trail),
        "--state",
        str(rig.trail.parent / "ship.state"),
    )
    assert code == 0, err
    assert json.loads(out)["result"] == {"from": 0, "to": 800, "created": 0, "already_present": 800}
    assert es.count("edgesec-audit-") == 800


def test_checkpoint_reaches_its_index(rig: Rig, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emit_many(rig.trail, 0, 20)
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[auditing]\ntrail_dir = "{rig.trail}"\nsyslog = "tcp"\nsyslog_port = {rig.syslog_port}\n'
        f'checkpoint_cert = "{rig.pki.signing.cert}"\ncheckpoint_key = "{rig.pki.signing.key}"\n'
        # The signer is checked against the site's trust bundle before it signs (no bundle: refused).
        f'[pki]\ntrust_bundle_dir = "{rig.pki.trust}"\n'
    )
    code, _, err = cli("--config", str(cfg), "auditlog", "checkpoint")
    assert code == 0, err
    wait_for(lambda: rig.es.count("edgesec-checkpoint-") == 1, 30, "the checkpoint", rig)
    doc = next(iter(rig.es.docs("edgesec-checkpoint-").values()))
    assert (
        doc["event"]["action"] == "trail.checkpoint"
        and doc["event"]["hash"] == doc["edgesec"]["checkpoint"]["hash"]
    )
    assert str(doc["edgesec"]["checkpoint"]["seq"]) == "20"
    # The off-host copy is a checkpoint `verify` accepts.
    from edgesec.auditing.checkpoint import parse_checkpoint

    cp = parse_checkpoint(doc["message"].encode(), "es")
    assert cp.seq == 20
    archived = list(rig.archive.glob("*/*/*/checkpoint.log"))
    assert archived and b'"seq":20' in archived[0].read_bytes()
    assert rig.es.violations == []


def test_other_hosts_over_mutual_tls(rig: Rig) -> None:
    """RFC 5425 from another host: a client of the site CA is accepted and mapped to ECS; a stranger is not."""
    from edgesec.auditing.syslog import SyslogSender, format_rfc5424, tls_context

    good = SyslogSender(
        "tls",
        host="127.0.0.1",
        port=rig.network_port,
        tls=tls_context(str(rig.pki.ca_bundle), str(rig.pki.client.cert), str(rig.pki.client.key)),
        server_name="localhost",
    )
    for i in range(5):
        good.send(
            format_rfc5424(f"login failed for user{i}", msgid="auth", hostname="gpu-node-2", procid=4242 + i)
        )
    good.close()
    wait_for(lambda: rig.es.count("edgesec-syslog-") == 5, 30, "5 messages from another host", rig)
    docs = list(rig.es.docs("edgesec-syslog-").values())
    assert {d["host"]["name"] for d in docs} == {"gpu-node-2"}
    assert sorted(d["process"]["pid"] for d in docs) == [4242, 4243, 4244, 4245, 4246]
    assert all(d["process"]["name"] == "edgesec" and d["message"].startswith("login failed") for d in docs)
    assert rig.es.violations == []
    stranger = SyslogSender(
        "tls",
        host="127.0.0.1",
        port=rig.network_port,
        tls=tls_context(
            str(rig.pki.ca_bundle), str(rig.pki.other_signing.cert), str(rig.pki.other_signing.key)
        ),
        server_name="localhost",
    )
    with contextlib.suppress(OperationFailed):
        stranger.send(format_rfc5424("let me in", msgid="auth", hostname="intruder"))
    stranger.close()
    # Not a fixed sleep before the negative assertion: a marker sent after the stranger by a trusted
    # client arrives, so the pipeline has handled what came before it; the stranger's message is not there.
    marker = SyslogSender(
        "tls",
        host="127.0.0.1",
        port=rig.network_port,
        tls=tls_context(str(rig.pki.ca_bundle), str(rig.pki.client.cert), str(rig.pki.client.key)),
        server_name="localhost",
    )
    marker.send(format_rfc5424("marker after the stranger", msgid="auth", hostname="gpu-node-2", procid=4300))
    marker.close()
    wait_for(lambda: rig.es.count("edgesec-syslog-") >= 6, 30, "the marker after the stranger", rig)
    messages = [d["message"] for d in rig.es.docs("edgesec-syslog-").values()]
    assert len(messages) == 6 and not any("let me in" in m for m in messages), messages


def test_rfc5424_records_over_the_unix_socket(tmp_path: Path, conformance: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """emit() with [auditing] syslog = "unix" into the pipeline's unix-stream source (no file tailing)."""
    pki = make_site_pki(tmp_path / "pki")
    sock = tmp_path / "edgesec.sock"
    watched = (
        tmp_path / "watched"
    )  # the pipeline tails another, empty trail: records can only come via the socket
    watched.mkdir()
    opts = PipelineOptions(
        trail_file=str(watched / "trail.jsonl"),
        audit_log=None,
        local_syslog="unix",
        local_syslog_socket=str(sock),
        ca_file=str(pki.ca_bundle),
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
        archive_dir=str(tmp_path / "archive"),
        disk_buffer_dir=str(tmp_path / "buffer"),
        disk_buffer_bytes=64 * 1024 * 1024,
        batch_timeout_ms=200,
        es_urls=("https://127.0.0.1:1",),  # replaced below, once the endpoint has its port
    )
    with FakeElasticsearch(conformance, pki.server.cert, pki.server.key, pki.ca_bundle) as es:
        conf = tmp_path / "syslog-ng.conf"
        conf.write_text(render(replace(opts, es_urls=(es.url,)))["syslog-ng.conf"])
        syntax_check(conf)
        sng = SyslogNg(conf, tmp_path / "state")
        sng.start()
        try:
            trail = tmp_path / "trail"
            cfg = tmp_path / "edgesec.toml"
            cfg.write_text(f'[auditing]\ntrail_dir = "{trail}"\nsyslog = "unix"\nsyslog_socket = "{sock}"\n')
            from edgesec.config import load_config

            previous = auditing.use_config(lambda: load_config(str(cfg)))
            try:
                auditing._trail = None
                for i in range(25):
                    auditing.emit(
                        AuditEvent(
                            action="test.unix",
                            category=("host",),
                            type=("info",),
                            fields={"user.id": f"u{i}"},
                        )
                    )
                auditing.current_trail().close()
            finally:
                auditing.use_config(previous)
                auditing._trail = None
            deadline = time.monotonic() + 30
            while es.count("edgesec-audit-") < 25 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            sng.stop()
        assert set(es.docs("edgesec-audit-")) == set(trail_records(trail))
        assert es.violations == []
