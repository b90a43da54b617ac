"""Two ForwardAuth replicas as one service: shared policy, one trail, and a failure nobody notices."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import threading
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgesec._fs import atomic_write
from edgesec.deploy.demo import DemoSite
from tests.e2e.conftest import trail_records

pytestmark = pytest.mark.real("nginx", "caddy", "syslog-ng", "curl")
REPLICAS = ("authz-a", "authz-b")


def ask(site: DemoSite, port: int, user: str, method: str, uri: str) -> int:
    """One /auth call straight to a replica, as Traefik's forwardAuth would send it."""
    pem = site.cert(user)[0].read_bytes()
    der = x509.load_pem_x509_certificates(pem)[0].public_bytes(Encoding.DER)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "GET",
            "/auth",
            headers={
                "X-Forwarded-Method": method,
                "X-Forwarded-Uri": uri,
                "X-Forwarded-Host": "app.demo.test",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Tls-Client-Cert": base64.b64encode(der).decode(),
            },
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_a_policy_change_reaches_both_replicas_within_seconds(site: DemoSite) -> None:
    policy = site.dir / "policy" / "policy.csv"
    original = policy.read_text()
    ports = [site.ports[r] for r in REPLICAS]
    assert [ask(site, p, "alice", "GET", "/audit/logins") for p in ports] == [403, 403]
    # An operator grants tellers the audit views: one atomic write to the shared policy directory.
    atomic_write(policy, original + "p, role:teller, branch, /audit/*, GET, allow\n", mode=0o644)
    t0 = time.monotonic()
    seen: dict[int, float] = {}
    try:
        while time.monotonic() - t0 < 10 and len(seen) < 2:
            for p in ports:
                if p not in seen and ask(site, p, "alice", "GET", "/audit/logins") == 200:
                    seen[p] = time.monotonic() - t0
            time.sleep(0.05)
    finally:
        atomic_write(policy, original, mode=0o644)
    print(f"policy change seen by the replicas after {sorted(round(v, 2) for v in seen.values())} s")
    assert set(seen) == set(ports), f"policy change reached only {seen} within 10 s"
    assert max(seen.values()) < 5.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(ask(site, p, "alice", "GET", "/audit/logins") == 403 for p in ports):
            break
        time.sleep(0.05)
    assert [ask(site, p, "alice", "GET", "/audit/logins") for p in ports] == [403, 403]


def test_both_replicas_append_to_one_unbroken_chain(site: DemoSite) -> None:
    marker = uuid.uuid4().hex[:10]
    pids = {site.procs[r].pid for r in REPLICAS}
    errors: list[BaseException] = []

    def hammer(replica: str) -> None:
        try:
            for i in range(25):
                ask(site, site.ports[replica], "alice", "GET", f"/v1/messages?m={marker}-{replica}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(r,)) for r in REPLICAS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    recs = [r for r in trail_records(site) if marker in str(r.get("url", {}).get("original", ""))]
    assert len(recs) == 50
    assert {r["process"]["pid"] for r in recs} == pids, "both replicas must have written"
    seqs = [r["event"]["sequence"] for r in trail_records(site)]
    assert seqs == list(range(1, len(seqs) + 1))
    out = json.loads(site.edgesec("--json", "auditlog", "verify").stdout)
    assert out["ok"] and out["result"]["records"] == len(seqs)


def test_the_load_balancer_uses_both_replicas(site: DemoSite) -> None:
    """Both replicas serve in normal operation (the load balancer spreads the calls)."""
    marker = uuid.uuid4().hex[:10]
    for i in range(10):
        assert site.request("nginx", "GET", f"/v1/parameters?m={marker}-{i}", user="alice").status == 200
    pids = {
        r["process"]["pid"]
        for r in trail_records(site)
        if marker in str(r.get("url", {}).get("original", ""))
    }
    assert pids == {site.procs[r].pid for r in REPLICAS}


def test_killing_a_replica_under_load_fails_no_request(site: DemoSite) -> None:
    """Load through nginx's mTLS front (auth_request -> load balancer -> replicas); SIGKILL one replica."""
    stop = threading.Event()
    statuses: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            try:
                st = site.request("nginx", "POST", "/v1/chat-messages", user="alice", body=b"{}").status
            except OSError as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                statuses.append(st)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        before = len(statuses)
        victim = site.procs["authz-a"]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        time.sleep(2.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"replica drill: {len(statuses)} requests through nginx, {before} before the SIGKILL, all answered")
    assert before > 0 and len(statuses) > before, "load must run before and after the kill"
    assert failures == []
    assert [s for s in statuses if s != 200] == [], "a request failed while a replica died"
    # The surviving replica kept the chain whole (the killed one may have died mid-append).
    site.start_replica("authz-a")
    out = json.loads(site.edgesec("--json", "auditlog", "verify", check=False).stdout)
    assert out["ok"], out.get("error")


@pytest.mark.real("wrk")
def test_wrk_on_the_load_balancer_while_a_replica_dies(site: DemoSite) -> None:
    """Bounded wrk load straight at the internal load balancer (what Traefik's forwardAuth would call)."""
    import subprocess

    der = x509.load_pem_x509_certificates(site.cert("alice")[0].read_bytes())[0].public_bytes(Encoding.DER)
    headers = {
        "X-Forwarded-Method": "POST",
        "X-Forwarded-Uri": "/v1/chat-messages",
        "X-Forwarded-Host": "app.demo.test",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Tls-Client-Cert": base64.b64encode(der).decode(),
    }
    argv = ["wrk", "-t2", "-c8", "-d4s", *[a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]]
    victim = site.procs["authz-b"]
    killer = threading.Timer(1.5, lambda: os.kill(victim.pid, signal.SIGKILL))
    killer.start()
    try:
        cp = subprocess.run(
            [*argv, f"http://127.0.0.1:{site.ports['lb']}/auth"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        killer.join()
        victim.wait(10)
    print(cp.stdout)
    assert cp.returncode == 0, cp.stderr
    assert "requests in" in cp.stdout
    assert "Non-2xx" not in cp.stdout, "a forward-auth call failed while a replica died"
    assert "Socket errors" not in cp.stdout
