"""The site ships to a central Elasticsearch: its trail and checkpoints through syslog-ng, its audit results.

No Elasticsearch can run here, so the stand-in from the auditing tests plays the central cluster on the
demo's ``es`` port: it checks every request against the Elasticsearch REST spec and every document
against ECS, requires a client certificate from the site CA, and answers ``409`` to a duplicate id.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest

from edgesec.auditing.results_template import bulk_body, render_template
from edgesec.deploy.demo import DemoSite

pytestmark = pytest.mark.real("nginx", "caddy", "syslog-ng", "curl")


def test_trail_checkpoints_and_results_reach_the_central_cluster(site: DemoSite, conformance: Path) -> None:
    pytest.importorskip("yaml")
    from tests.auditing.esmock import FakeElasticsearch

    cert, key = site.cert("es")
    es = FakeElasticsearch(conformance, cert, key, site.trust / "ca-bundle.pem", port=site.ports["es"])
    with es:
        marker = uuid.uuid4().hex[:10]
        for proxy in ("nginx", "caddy"):
            site.request(proxy, "GET", f"/v1/parameters?m={marker}", user="alice")
            site.request(proxy, "GET", f"/console/api/apps?m={marker}", user="alice")
        cp = site.checkpoint()
        lines = [ln for ln in (site.trail / "trail.jsonl").read_text().splitlines() if ln.strip()]
        want = {json.loads(ln)["event"]["hash"]: ln for ln in lines}
        # syslog-ng retries a failed destination every time-reopen (10 s) and then drains its disk buffer.
        deadline = time.monotonic() + 60
        got: dict[str, object] = {}
        while time.monotonic() < deadline:
            got = es.docs("edgesec-audit-")
            cps = es.docs("edgesec-checkpoint-")
            if set(want) <= set(got) and any(cp["hash"] in json.dumps(d) for d in cps.values()):
                break
            time.sleep(0.5)
        assert es.violations == []
        missing = set(want) - set(got)
        assert not missing, f"{len(missing)} of {len(want)} trail records did not reach the cluster"
        # The central copy is the record itself (ids are the records' hashes: retries never duplicate).
        for h, ln in want.items():
            assert got[h] == json.loads(ln)
            assert got[h]["edgesec"].get("site") == "demo-branch", got[h]  # type: ignore[index]
        assert any(cp["hash"] in json.dumps(d) for d in es.docs("edgesec-checkpoint-").values())

        # Audit results: the template, then one document per finding, over the same mutual TLS.
        _, result = site.audit("--only", "authz", "--only", "auditing", "--only", "models")
        ctx = ssl.create_default_context(cafile=str(site.trust / "ca-bundle.pem"))
        c, k = site.cert("syslog-ng")
        ctx.load_cert_chain(str(c), str(k))
        with httpx.Client(base_url=es.url, verify=ctx, timeout=30) as http:
            r = http.put("/_index_template/edgesec-results", json=render_template("edgesec"))
            assert r.status_code == 200, r.text
            body = bulk_body(result, site="demo-branch")
            r = http.post("/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
            assert r.status_code == 200 and r.json()["errors"] is False, r.text
            again = http.post("/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
            assert all(next(iter(i.values()))["status"] == 409 for i in again.json()["items"])
        n = sum(len(ch["findings"]) for ch in result["checks"])
        docs = es.docs("edgesec-results-")
        assert len(docs) == n
        assert {d["rule"]["id"] for d in docs.values()} == {ch["id"] for ch in result["checks"]}
        assert es.violations == []
