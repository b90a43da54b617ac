"""``/metrics`` with several workers: every scrape sums all workers, and no counter ever goes backwards.

Before, each forked worker answered with its own counters, so the decision counter read 18 -> 29 -> 18
depending on which worker took the scrape (Prometheus reads that as counter resets).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import httpx

from edgesec.authz import metrics as m
from tests.authz.conftest import HOST, SiteCA, bank_files
from tests.authz.test_reload_load import _serve, _stop, _wait_ready


def parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_forked_processes_add_to_one_block() -> None:
    shared = m.SharedMetrics()
    pids = []
    for slot in (0, 1, 2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                m.set_worker_slot(slot)
                for _ in range(100 * (slot + 1)):
                    shared.observe(200 if slot else 403, 0.0003)
                shared.reload("policy", slot != 2)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    t = shared.totals()
    assert t["decisions:allow"] == 500 and t["decisions:deny"] == 100
    assert t["latency_bucket:2"] == 600  # 0.0003 s falls in the (0.00025, 0.0005] bucket
    assert t["reloads:policy:ok"] == 2 and t["reloads:policy:error"] == 1


def test_engine_cache_counters_survive_a_reloaded_engine() -> None:
    shared = m.SharedMetrics()
    first, second = object(), object()
    shared.publish_engine(first, 10, 4)
    shared.publish_engine(first, 25, 5)
    shared.publish_engine(second, 1, 1)  # a reload: the new engine's counters start again
    t = shared.totals()
    assert (t["cache_hits"], t["cache_misses"]) == (26, 6)


def test_two_workers_concurrent_scrapes_never_go_backwards(
    site_ca: SiteCA, tmp_path: Path, home: Path
) -> None:
    files = bank_files(tmp_path)
    proc, url, _cfg = _serve(
        tmp_path,
        home,
        f'workers = 2\npolicy_dir = "{files.policy.parent}"\ntrust_dir = "{site_ca.trust}"\n'
        'identity_order = ["cert"]\n'
        f'[authz.tenant_hosts]\n"{HOST}" = "branch"\n',
    )
    cert = site_ca.der_b64("alice")
    allowed = {
        "X-Forwarded-Method": "POST",
        "X-Forwarded-Uri": "/v1/chat-messages",
        "X-Forwarded-Host": HOST,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Tls-Client-Cert": cert,
    }
    denied = dict(allowed, **{"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/console/api/apps/7"})
    sent = {"allow": 0, "deny": 0}
    lock = threading.Lock()
    stop = threading.Event()
    scrapes: list[list[dict[str, float]]] = [[], []]
    pids: set[int] = set()
    errors: list[BaseException] = []

    def load(n: int) -> None:
        try:
            with httpx.Client(timeout=10) as c:
                for i in range(n):
                    h, kind = (allowed, "allow") if i % 3 else (denied, "deny")
                    st = c.get(url + "/auth", headers=h).status_code
                    assert st == (200 if kind == "allow" else 403), st
                    with lock:
                        sent[kind] += 1
        except BaseException as exc:
            errors.append(exc)

    def scrape(k: int) -> None:
        try:
            while not stop.is_set() or len(scrapes[k]) < 10:
                # A new connection each time: the listening socket hands it to either worker.
                scrapes[k].append(parse(httpx.get(url + "/metrics", timeout=10).text))
                pids.add(httpx.get(url + "/readyz", timeout=10).json()["process"])
        except BaseException as exc:
            errors.append(exc)

    try:
        _wait_ready(url, proc)
        time.sleep(0.5)
        loaders = [threading.Thread(target=load, args=(250,)) for _ in range(4)]
        scrapers = [threading.Thread(target=scrape, args=(k,)) for k in range(2)]
        for t in (*loaders, *scrapers):
            t.start()
        for t in loaders:
            t.join()
        stop.set()
        for t in scrapers:
            t.join()
        assert not errors, errors
        assert len(pids) == 2, pids  # both workers answered scrapes
        for seq in scrapes:
            assert len(seq) >= 10
            for before, after in itertools.pairwise(seq):
                for name, value in before.items():
                    if name.endswith(("_total", "_bucket", "_count", "_sum")) or "_total{" in name:
                        assert after.get(name, 0.0) >= value, (name, value, after.get(name))
        final = parse(httpx.get(url + "/metrics", timeout=10).text)
        assert final['edgesec_authz_decisions_total{outcome="allow"}'] == sent["allow"]
        assert final['edgesec_authz_decisions_total{outcome="deny"}'] == sent["deny"]
        assert final["edgesec_authz_decision_seconds_count"] == sent["allow"] + sent["deny"]
    finally:
        stop.set()
        _stop(proc)
