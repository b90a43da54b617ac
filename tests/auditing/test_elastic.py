"""gen elastic, push (real elasticsearch-py 8 client) and ship (killed mid-run, rerun: each record once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgesec import auditing
from edgesec.auditing.ecs import FIELD_TYPES, AuditEvent
from edgesec.auditing.elastic import ECS_MAPPED, ElasticOptions, render
from edgesec.auditing.trail import trail_files

from .esmock import FakeElasticsearch
from .sitepki import SitePki


@pytest.fixture
def es(pki: SitePki, conformance: Path) -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch(conformance, pki.server.cert, pki.server.key, pki.ca_bundle) as e:
        yield e


def tls_args(es: FakeElasticsearch, pki: SitePki) -> list[str]:
    return [
        "--es",
        es.url,
        "--ca",
        str(pki.ca_bundle),
        "--cert",
        str(pki.client.cert),
        "--key",
        str(pki.client.key),
    ]


def test_mappings_follow_ecs(conformance: Path) -> None:
    flat = yaml.safe_load((conformance / "ecs" / "v8.17.0" / "ecs_flat.yml").read_text())
    for name, ftype in ECS_MAPPED.items():
        assert name in flat, name
        assert flat[name]["type"] == ftype, (name, ftype, flat[name]["type"])
    # Every ECS field an AuditEvent may carry has a mapping.
    assert set(FIELD_TYPES) - {"labels"} <= set(ECS_MAPPED)


def test_gen_elastic_files(cli, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text('[site]\nprofile = "bank"\n')
    code, out, err = cli(
        "--config", str(cfg), "--json", "auditlog", "gen", "elastic", "--out", str(tmp_path / "es")
    )
    assert code == 0, err
    res = json.loads(out)["result"]
    assert res["retention_days"] == 365 and "10.5.1" in res["retention_reason"]
    manifest = json.loads((tmp_path / "es" / "manifest.json").read_text())
    paths = [r["path"] for r in manifest["requests"]]
    assert "/_ilm/policy/edgesec-retention" in paths and "/_ingest/pipeline/edgesec-ingest" in paths
    ilm = json.loads((tmp_path / "es" / "_ilm__policy__edgesec-retention.json").read_text())
    # A monthly index is created no earlier than its month's first event; its newest event is up to 31 days
    # younger: deleting at 365 + 31 days keeps every event of the month at least the 12 months PCI asks.
    assert ilm["policy"]["phases"]["delete"]["min_age"] == "396d"
    # Never read-only: a late event (a drained disk buffer, a backfill) must still be accepted.
    assert all(
        not {"readonly", "forcemerge", "shrink"} & set(ph["actions"])
        for ph in ilm["policy"]["phases"].values()
    )
    # Re-running with the same content is a no-op; a different existing file is refused.
    assert cli("--config", str(cfg), "auditlog", "gen", "elastic", "--out", str(tmp_path / "es"))[0] == 0
    cfg.write_text('[site]\nprofile = "factory"\n')
    code, _, err = cli("--config", str(cfg), "auditlog", "gen", "elastic", "--out", str(tmp_path / "es"))
    assert code == 1 and "refusing to overwrite" in err


def test_pipeline_routes_failures_to_dead_letter() -> None:
    objs = render(ElasticOptions(index_prefix="site1"))
    pipe = objs["/_ingest/pipeline/site1-ingest"]
    assert pipe["processors"][0]["set"]["field"] == "event.ingested"
    assert {"set": {"field": "_index", "value": "site1-deadletter-ingest"}} in pipe["on_failure"]
    dead = objs["/_component_template/site1-settings-deadletter"]["template"]["settings"]
    assert "index.default_pipeline" not in dead  # no failure loop
    audit = objs["/_component_template/site1-settings-audit"]["template"]["settings"]
    assert audit["index.default_pipeline"] == "site1-ingest"
    assert all(
        body["template"]["settings"]["index.mapping.ignore_malformed"] is True
        for path, body in objs.items()
        if path.startswith("/_component_template/site1-settings-")
    )


def test_push_is_valid_and_idempotent(cli, es: FakeElasticsearch, pki: SitePki) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("--json", "auditlog", "push", *tls_args(es, pki))
    assert code == 0, err
    assert es.violations == []
    first = json.dumps(es.resources, sort_keys=True)
    assert len(es.resources) == len(render(ElasticOptions(retention_days=180)))
    assert cli("auditlog", "push", *tls_args(es, pki))[0] == 0
    assert json.dumps(es.resources, sort_keys=True) == first
    assert es.violations == []


def test_push_errors_are_one_line(cli, es: FakeElasticsearch, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("auditlog", "push", "--es", es.url, "--ca", str(tmp_path / "missing.pem"))
    assert code == 2 and "CA file not found" in err and "Traceback" not in err
    code, _, err = cli("auditlog", "push", "--es", "http://127.0.0.1:9200", "--ca", str(pki.ca_bundle))
    assert code == 2 and "clear text" in err
    code, _, err = cli("auditlog", "ship", "--es", "ftp://x")
    assert code == 2
    # Without a client certificate the TLS handshake fails: exit 1, one line.
    code, _, err = cli("auditlog", "push", "--es", es.url, "--ca", str(pki.ca_bundle))
    assert code == 1 and "refused" in err and "Traceback" not in err
    assert es.handshake_failures > 0 and es.resources == {}


def _emit(trail: Path, n: int) -> None:
    with auditing.configured(trail, durability="group", rotate_bytes=50_000):
        for i in range(n):
            auditing.emit(
                AuditEvent(
                    action="pki.certificate.issued",
                    category=("iam",),
                    type=("creation",),
                    part="pki",
                    fields={"user.id": f"op{i % 7}", "file.x509.serial_number": f"{i:x}"},
                )
            )


def _hashes(trail: Path) -> set[str]:
    return {json.loads(ln)["event"]["hash"] for f in trail_files(trail) for ln in f.read_bytes().splitlines()}


def test_ship_killed_and_rerun_holds_each_record_once(
    cli, es: FakeElasticsearch, pki: SitePki, tmp_path: Path, home: Path
) -> None:  # type: ignore[no-untyped-def]
    trail = tmp_path / "trail"
    _emit(trail, 1500)
    state = trail / "ship.state"
    es.bulk_delay = 0.15
    argv = [
        sys.executable,
        "-m",
        "edgesec",
        "--home",
        str(home),
        "auditlog",
        "ship",
        *tls_args(es, pki),
        "--trail",
        str(trail),
        "--batch",
        "100",
    ]
    p = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"}
    )
    deadline = time.monotonic() + 60
    while not (state.exists() and json.loads(state.read_text())["seq"] >= 300):
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    acked = json.loads(state.read_text())["seq"]
    assert 300 <= acked < 1500
    assert es.count("edgesec-audit-") < 1500
    es.bulk_delay = 0
    code, out, err = cli(
        "--json", "auditlog", "ship", *tls_args(es, pki), "--trail", str(trail), "--batch", "100"
    )
    assert code == 0, err
    rep = json.loads(out)["result"]
    assert rep["from"] == acked and rep["to"] == 1500
    assert rep["already_present"] <= 100  # at most the one batch in flight when it was killed
    assert set(es.docs("edgesec-audit-")) == _hashes(trail)
    assert es.count("edgesec-audit-") == 1500
    # A third run has nothing to do.
    code, out, _ = cli("--json", "auditlog", "ship", *tls_args(es, pki), "--trail", str(trail))
    assert json.loads(out)["result"]["created"] == 0 and code == 0
    assert es.violations == []


def test_ship_refuses_a_broken_trail(cli, es: FakeElasticsearch, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trail = tmp_path / "trail"
    _emit(trail, 50)
    cur = trail / "trail.jsonl"
    lines = cur.read_bytes().splitlines(keepends=True)
    del lines[10]
    cur.write_bytes(b"".join(lines))
    code, _, err = cli("auditlog", "ship", *tls_args(es, pki), "--trail", str(trail))
    assert code == 1 and "broken at record" in err


def test_ship_refuses_an_edited_record_and_names_it(
    cli, es: FakeElasticsearch, pki: SitePki, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """An edited record keeps its genuine hash and links: ship must check the hash itself, send the
    records before it, and never index the forgery under the genuine _id."""
    trail = tmp_path / "trail"
    _emit(trail, 50)
    cur = trail / "trail.jsonl"
    lines = cur.read_bytes().splitlines(keepends=True)
    forged = json.loads(lines[20])
    genuine_id = forged["event"]["hash"]
    forged["user"]["id"] = "root"
    lines[20] = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    cur.write_bytes(b"".join(lines))
    code, _, err = cli("auditlog", "ship", *tls_args(es, pki), "--trail", str(trail))
    assert code == 1
    assert "record 21 (trail.jsonl:21) does not match its hash" in err
    shipped = es.docs("edgesec-audit-")
    assert genuine_id not in shipped and len(shipped) == 20
    code, _, _ = cli("auditlog", "verify", "--trail", str(trail))
    assert code == 1
