"""Hot reload under load: ``wrk`` hammers a real ``edgesec authz serve`` while the policy is rewritten,
broken and SIGHUP'd; not one request may fail or change its answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests._net import free_port
from tests._wait import wait_until
from tests.authz.conftest import HOST, SiteCA, bank_files

LUA = """
wrk.method = "GET"
wrk.headers["X-Forwarded-Method"] = "POST"
wrk.headers["X-Forwarded-Uri"] = "/v1/chat-messages"
wrk.headers["X-Forwarded-Host"] = "{host}"
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["X-Forwarded-Tls-Client-Cert"] = "{cert}"
"""


def _wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("serve did not start")


def _serve(tmp_path: Path, home: Path, authz: str) -> tuple[subprocess.Popen[str], str, Path]:
    """``edgesec authz serve`` as a real subprocess, on a free port, with ``authz`` under ``[authz]``."""
    port = free_port()
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f"[authz]\nport = {port}\n{authz}")
    cfg.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesec", "--config", str(cfg), "authz", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGESEC_HOME": str(home)},
    )
    return proc, f"http://127.0.0.1:{port}", cfg


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.mark.real("wrk")
@pytest.mark.slow
def test_reload_under_wrk_load_fails_no_request(site_ca: SiteCA, tmp_path: Path, home: Path) -> None:
    files = bank_files(tmp_path)
    proc, url, _cfg = _serve(
        tmp_path,
        home,
        f"""policy_dir = "{files.policy.parent}"
trust_dir = "{site_ca.trust}"
identity_order = ["cert"]
reload_interval_s = 0.1
[authz.tenant_hosts]
"{HOST}" = "branch"
""",
    )
    try:
        _wait_ready(url, proc)
        lua = tmp_path / "auth.lua"
        lua.write_text(LUA.format(host=HOST, cert=site_ca.der_b64("alice")))
        good = files.policy.read_text()
        stop = threading.Event()
        changes = {"writes": 0, "broken": 0, "hups": 0}

        def churn() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                tmp = files.policy.with_suffix(".tmp")
                if i % 5 == 0:
                    files.policy.write_text(good + "\np, role:teller, branch\n")  # broken: last good stays
                    changes["broken"] += 1
                else:
                    tmp.write_text(good + f"\np, role:teller, branch, /extra/{i}, GET, allow\n")
                    os.replace(tmp, files.policy)
                    changes["writes"] += 1
                if i % 3 == 0:
                    proc.send_signal(signal.SIGHUP)
                    changes["hups"] += 1
                time.sleep(0.15)

        t = threading.Thread(target=churn)
        t.start()
        try:
            w = subprocess.run(
                ["wrk", "-t1", "-c4", "-d4s", "--timeout", "5s", "-s", str(lua), f"{url}/auth"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            stop.set()
            t.join()
        assert w.returncode == 0, w.stderr
        out = w.stdout
        assert "requests in" in out, out
        requests = int(out.split(" requests in")[0].split()[-1])
        assert requests > 100, out
        assert "Non-2xx" not in out, out
        assert "Socket errors" not in out, out
        assert changes["writes"] >= 5 and changes["broken"] >= 1 and changes["hups"] >= 2
        files.policy.write_text(good)
        ready = wait_until(
            lambda: (r := httpx.get(url + "/readyz", timeout=5).json())["policy"]["ok"] is True and r,
            "the good policy to be live again",
        )
        assert ready["policy"]["ok"] is True and ready["policy"]["generation"] > 3
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert 'edgesec_authz_reloads_total{kind="policy",result="error"}' in metrics
        assert 'edgesec_authz_decisions_total{outcome="deny"}' not in metrics or (
            'edgesec_authz_decisions_total{outcome="deny"} 0.0' in metrics
        )
        print(f"wrk: {requests} requests, 0 failed, while {changes} policy changes")
    finally:
        _stop(proc)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_every_worker(site_ca: SiteCA, tmp_path: Path, home: Path, workers: int) -> None:
    """With file polling effectively off, SIGHUP alone must reload the policy in every worker."""
    files = bank_files(tmp_path)
    proc, url, _cfg = _serve(
        tmp_path,
        home,
        f'workers = {workers}\npolicy_dir = "{files.policy.parent}"\n'
        f'trust_dir = "{site_ca.trust}"\nreload_interval_s = 3600\n',
    )
    try:
        _wait_ready(url, proc)
        time.sleep(0.5)  # every worker past its lifespan startup (the handler is installed there)
        files.policy.write_text(files.policy.read_text() + "\np, role:teller, branch, /extra, GET, allow\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        seen: dict[int, int] = {}  # worker pid -> policy generation
        while time.time() < deadline:
            doc = httpx.get(url + "/readyz", timeout=5).json()
            seen[doc["process"]] = doc["policy"]["generation"]
            if len(seen) == workers and set(seen.values()) == {2}:
                break
            time.sleep(0.05)
        assert len(seen) == workers and set(seen.values()) == {2}, seen
        assert proc.poll() is None  # SIGHUP did not kill anything
    finally:
        _stop(proc)


DENIED_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/auth", {{
    ["X-Forwarded-Method"] = "GET",
    ["X-Forwarded-Uri"] = string.format("/console/api/apps/denied-%d", n),
    ["X-Forwarded-Host"] = "{host}",
    ["X-Forwarded-Proto"] = "https",
    ["X-Forwarded-Tls-Client-Cert"] = "{cert}",
  }})
end
"""


@pytest.mark.real("wrk")
@pytest.mark.slow
def test_every_denial_under_load_is_in_one_verified_chain_even_at_shutdown(
    site_ca: SiteCA, tmp_path: Path, home: Path
) -> None:
    """Two workers answer a stream of distinct denials by group commit; after SIGTERM, every 403 that
    wrk saw (and no other request) is in the trail, once, and the chain verifies -- including the events
    still queued when the workers were told to stop."""
    files = bank_files(tmp_path)
    proc, url, cfg = _serve(
        tmp_path,
        home,
        f"""workers = 2
policy_dir = "{files.policy.parent}"
trust_dir = "{site_ca.trust}"
identity_order = ["cert"]
[authz.tenant_hosts]
"{HOST}" = "branch"
""",
    )
    try:
        _wait_ready(url, proc)
        lua = tmp_path / "denied.lua"
        # alice is a teller: the admin console is denied to her.
        lua.write_text(DENIED_LUA.format(host=HOST, cert=site_ca.der_b64("alice")))
        wrk = subprocess.Popen(
            ["wrk", "-t1", "-c8", "-d4s", "--timeout", "5s", "-s", str(lua), f"{url}/auth"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
    finally:
        # Stop the service in the middle of the stream: the last events are still queued.
        _stop(proc)
    out, _err = wrk.communicate(timeout=60)
    assert "requests in" in out, out
    denied = int(out.split("Non-2xx or 3xx responses: ")[1].split()[0])  # every answer read was a 403
    assert denied > 200, out
    trail = home / "audit"
    paths = [
        rec["url"]["path"]
        for f in sorted(trail.glob("trail*.jsonl"))
        for line in f.read_text().splitlines()
        if (rec := json.loads(line))["event"]["action"] == "authz.decision"
    ]
    assert len(paths) == len(set(paths))  # each request once
    assert all(p.startswith("/console/api/apps/denied-") for p in paths)
    # Every 403 that went out is on the record; at most the 8 in flight were decided but not read.
    assert denied <= len(paths) <= denied + 8, (denied, len(paths))
    v = subprocess.run(
        [sys.executable, "-m", "edgesec", "--config", str(cfg), "--json", "auditlog", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGESEC_HOME": str(home)},
        timeout=120,
    )
    assert v.returncode == 0, v.stdout + v.stderr
