"""Audit trail and pipeline throughput, each against a baseline measured in the same run.

1. ``emit()`` at the default durability (``fsync``: durable on return) against a bare
   ``json.dumps`` + append + ``fdatasync`` of the same document -- what any durable logger must pay.
   Target: ratio >= 0.5. Also the ``group`` durability, against the bare append with one
   ``fdatasync`` per batch of the same size.
2. End to end: trail records through a real syslog-ng running the generated config, over mutual TLS,
   into the loopback Elasticsearch endpoint of the tests (it samples 1 document in 100 for the ECS
   check so that the endpoint, not the pipeline, is not what is measured). Target >= 10,000 events/s.
   Baseline: the same endpoint fed directly by one Python client posting pre-built bulk bodies.

Usage: ``python bench/auditlog.py [--quick] [--json FILE]``. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgesec import auditing  # noqa: E402
from edgesec.auditing.ecs import AuditEvent  # noqa: E402


def event(i: int) -> AuditEvent:
    return AuditEvent(
        action="authz.decision",
        category=("iam",),
        type=("allowed",),
        part="authz",
        fields={"user.id": f"user{i % 50}", "source.ip": "127.0.0.1", "url.path": f"/v1/models/{i % 9}"},
    )


def bench_emit(tmp: Path, n: int, durability: str) -> float:
    tmp.mkdir(parents=True, exist_ok=True)
    d = tmp / f"emit-{durability}"
    with auditing.configured(d, durability=durability, group_commit_ms=5):
        t0 = time.perf_counter()
        for i in range(n):
            auditing.emit(event(i))
        auditing.flush()
        dt = time.perf_counter() - t0
    return n / dt


def bench_bare(tmp: Path, n: int, batch: int) -> float:
    """json.dumps + O_APPEND write + fdatasync every ``batch`` records: the floor for a durable log."""
    doc = event(0).to_document()
    fd = os.open(tmp / f"bare-{batch}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        t0 = time.perf_counter()
        pending = 0
        for _ in range(n):
            os.write(fd, (json.dumps(doc) + "\n").encode())
            pending += 1
            if pending >= batch:
                os.fdatasync(fd)
                pending = 0
        os.fdatasync(fd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def write_trail(d: Path, n: int) -> None:
    with auditing.configured(d, durability="none"):
        for i in range(n):
            auditing.emit(event(i))


def bench_e2e(tmp: Path, n: int) -> dict[str, float]:
    from edgesec.auditing.syslogng import PipelineOptions, render
    from tests._net import free_port
    from tests.auditing.esmock import FakeElasticsearch
    from tests.auditing.sitepki import make_site_pki
    from tests.auditing.sng import SyslogNg

    conformance = Path(os.environ.get("EDGESEC_CONFORMANCE_DATA", ROOT.parent / "shared" / "data"))
    pki = make_site_pki(tmp / "pki")
    trail = tmp / "trail"
    write_trail(trail, n)
    es = FakeElasticsearch(conformance, pki.server.cert, pki.server.key, pki.ca_bundle, validate_every=100)
    es.start()
    opts = PipelineOptions(
        trail_file=str(trail / "trail.jsonl"),
        audit_log=None,
        local_syslog="tcp",
        local_syslog_port=free_port(),
        es_urls=(es.url,),
        ca_file=str(pki.ca_bundle),
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
        archive_dir=str(tmp / "archive"),
        disk_buffer_dir=str(tmp / "buffer"),
    )
    conf = tmp / "syslog-ng.conf"
    conf.write_text(render(opts)["syslog-ng.conf"])
    sng = SyslogNg(conf, tmp / "sng")
    try:
        t0 = time.perf_counter()
        sng.start()
        deadline = time.monotonic() + 300
        while es.count("edgesec-audit-") < n and time.monotonic() < deadline:
            time.sleep(0.05)
        pipeline = es.count("edgesec-audit-") / (time.perf_counter() - t0)
    finally:
        sng.stop()
    violations = list(es.violations)
    # Baseline: the same endpoint, fed bulk bodies of 500 records by one client (no syslog-ng).
    lines = [ln for f in sorted(trail.glob("trail*.jsonl")) for ln in f.read_bytes().splitlines()]
    es.indices.clear()
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    ctx.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    bodies = []
    for k in range(0, len(lines), 500):
        chunk = lines[k : k + 500]
        bodies.append(
            b"".join(
                b'{"create":{"_index":"base-audit-x","_id":"%d"}}\n' % (k + j) + ln + b"\n"
                for j, ln in enumerate(chunk)
            )
        )
    t0 = time.perf_counter()
    for body in bodies:
        req = urllib.request.Request(
            es.url + "/_bulk", data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(req, context=ctx) as r:
            r.read()
    direct = len(lines) / (time.perf_counter() - t0)
    es.stop()
    return {
        "pipeline_eps": pipeline,
        "direct_eps": direct,
        "events": float(n),
        "violations": float(len(violations)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    n_emit = 500 if args.quick else 3000
    n_e2e = 20_000 if args.quick else 100_000
    results: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="edgesec-bench-"))
    try:
        # Interleaved rounds, median: the disk and the CPU are shared, so one round can be unlucky.
        rounds = 3
        pairs = [
            (bench_emit(tmp / f"r{r}", n_emit, "fsync"), bench_bare(tmp, n_emit, 1)) for r in range(rounds)
        ]
        fsync, bare = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        ratio = statistics.median(p[0] / p[1] for p in pairs)
        results.update(emit_fsync_eps=fsync, bare_fsync_eps=bare, emit_fsync_ratio=ratio)
        print(
            f"emit() fsync:  {fsync:9.0f} events/s   bare dumps+append+fdatasync: {bare:9.0f}/s   ratio {ratio:.2f} (target >= 0.5; median of {rounds})"
        )
        pairs = [
            (bench_emit(tmp / f"g{r}", n_emit * 10, "group"), bench_bare(tmp, n_emit * 10, 200))
            for r in range(rounds)
        ]
        group, bare_g = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        gratio = statistics.median(p[0] / p[1] for p in pairs)
        results.update(emit_group_eps=group, bare_group_eps=bare_g, emit_group_ratio=gratio)
        print(
            f"emit() group:  {group:9.0f} events/s   bare, fdatasync per 200:     {bare_g:9.0f}/s   ratio {gratio:.2f}"
        )
        if shutil.which("syslog-ng"):
            e2e = bench_e2e(tmp / "e2e", n_e2e)
            results.update({f"e2e_{k}": v for k, v in e2e.items()})
            print(
                f"end to end:    {e2e['pipeline_eps']:9.0f} events/s through syslog-ng -> mTLS -> endpoint"
                f" (target >= 10000); endpoint fed directly: {e2e['direct_eps']:.0f}/s;"
                f" ratio {e2e['pipeline_eps'] / e2e['direct_eps']:.2f}; {int(e2e['violations'])} spec violations"
            )
        else:
            print("syslog-ng not found: end-to-end benchmark skipped")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
