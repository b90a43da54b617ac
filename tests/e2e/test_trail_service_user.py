"""Issue #20 attack 1: the hardened replica's denials reach the host's one trail, or the service says so.

A real non-root account made for the test runs ``edgesec authz serve``; root-run commands write the same
trail before and after it. With the trail shared the way ``edgesec site units`` sets it up (its
tmpfiles.d entry, applied by the real ``systemd-tmpfiles``), every denial is in the verified chain. With
the trail private to root (the old layout), ``/readyz`` is not ready, names the trail error, and the
error is in the service log at the first failed write -- not only at shutdown.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._net import free_port
from tests._serviceuser import as_user, env_for_service, service_user

pytestmark = [pytest.mark.root, pytest.mark.real("systemd-tmpfiles", "setpriv", "useradd")]

EMIT = (
    "from edgesec import auditing; from edgesec.auditing import AuditEvent; "
    "auditing.emit(AuditEvent(action='pki.certificate.issued', category=('configuration',), "
    "type=('creation',), part='pki', message='root-run command')); auditing.flush()"
)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _root_cmd(site: dict[str, Any], argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=site["env"], capture_output=True, text=True, timeout=120, check=False, cwd=site["dir"]
    )


@pytest.fixture
def site(tmp_path: Path, cli: Any) -> Iterator[dict[str, Any]]:
    d = tmp_path / "site"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    home = d / "home"
    home.mkdir()
    policy = d / "policy"
    assert cli("authz", "policy", "init", str(policy), "--example", "bank")[0] == 0
    port = free_port()
    cfg = d / "edgesec.toml"
    cfg.write_text(
        f'[site]\nname = "branch-042"\n[authz]\nport = {port}\npolicy_dir = "{policy}"\n'
        'identity_order = ["jwt"]\n'
    )
    cfg.chmod(0o644)
    env = env_for_service(str(home), str(cfg))
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    with service_user() as user:
        yield {
            "dir": d,
            "home": home,
            "trail": home / "audit",
            "cfg": cfg,
            "port": port,
            "user": user,
            "env": env,
        }


def _serve(site: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    argv = as_user(
        site["user"],
        [sys.executable, "-m", "edgesec", "authz", "serve", "--host", "127.0.0.1", "--workers", "1"],
    )
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, env=site["env"], stdout=fh, stderr=subprocess.STDOUT, cwd="/")
    base = f"http://127.0.0.1:{site['port']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {log.read_text()}")
        try:
            if _get(base + "/healthz")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve did not start: {log.read_text()}")


def _deny_four(site: dict[str, Any]) -> None:
    for path in ("/", "/console/api/apps", "/v1/chat-messages", "/audit/logins"):
        req = urllib.request.Request(
            f"http://127.0.0.1:{site['port']}/auth",
            headers={"X-Forwarded-Method": "GET", "X-Forwarded-Uri": path, "X-Forwarded-Host": "dify.local"},
        )
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("an unauthenticated request was allowed")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _records(trail: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (trail / "trail.jsonl").read_text().splitlines() if x.strip()]


def test_shared_trail_records_every_denial_of_the_service_user(site: dict[str, Any], cli: Any) -> None:
    units = site["dir"] / "units"
    code, _out, err = cli(
        "--config", str(site["cfg"]), "--home", str(site["home"]),
        "--json", "site", "units", "--out", str(units), "--user", site["user"], "--executable", sys.executable,
    )  # fmt: skip
    assert code == 0, err
    tmpfiles = units / "edgesec-authz.tmpfiles.conf"
    assert f"d {site['trail']} 2770 root {site['user']}" in tmpfiles.read_text()
    # Root wrote the trail first (the CA, say), with root's usual umask, before the units were applied.
    r = _root_cmd(site, [sys.executable, "-c", EMIT])
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["systemd-tmpfiles", "--create", str(tmpfiles)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    st = site["trail"].stat()
    assert stat.S_IMODE(st.st_mode) == 0o2770
    log = site["dir"] / "serve.log"
    proc = _serve(site, log)
    try:
        _deny_four(site)
        status, body = _get(f"http://127.0.0.1:{site['port']}/readyz")
        doc = json.loads(body)
        assert status == 200 and doc["ready"] is True and doc["audit"]["ok"] is True, doc
    finally:
        _stop(proc)
    # Root appends after the service (the service may have created or re-moded files meanwhile).
    r = _root_cmd(site, [sys.executable, "-c", EMIT])
    assert r.returncode == 0, r.stderr
    recs = _records(site["trail"])
    denials = [
        x for x in recs if x["event"]["action"] == "authz.decision" and x["event"]["outcome"] == "failure"
    ]
    assert len(denials) == 4, [x["event"]["action"] for x in recs]
    assert [x["event"]["action"] for x in recs].count("pki.certificate.issued") == 2
    for f in ("trail.jsonl", "trail.lock"):
        fst = (site["trail"] / f).stat()
        assert stat.S_IMODE(fst.st_mode) == 0o660 and fst.st_gid == st.st_gid, (f, oct(fst.st_mode))
    r = _root_cmd(site, [sys.executable, "-m", "edgesec", "--json", "auditlog", "verify"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cannot write" not in log.read_text()


def test_a_trail_the_service_cannot_write_is_not_ready_and_logged_at_once(
    site: dict[str, Any], cli: Any
) -> None:
    # The layout before #20: root's private trail, nothing giving the service account access.
    r = _root_cmd(site, [sys.executable, "-c", EMIT])
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(site["trail"].stat().st_mode) == 0o700
    before = (site["trail"] / "trail.jsonl").read_bytes()
    log = site["dir"] / "serve.log"
    proc = _serve(site, log)
    try:
        _deny_four(site)
        deadline = time.monotonic() + 10
        while True:
            status, body = _get(f"http://127.0.0.1:{site['port']}/readyz")
            doc = json.loads(body)
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 503 and doc["ready"] is False, doc
        assert doc["audit"]["ok"] is False and "Permission" in doc["audit"]["error"], doc
        assert doc["audit"]["trail"] == str(site["trail"])
        # Logged while running, at the first failure, naming the trail.
        assert f"audit trail {site['trail']}: cannot write" in log.read_text()
        assert (site["trail"] / "trail.jsonl").read_bytes() == before
        # The operator shares the trail as `edgesec site units` says: the kept denials are written.
        units = site["dir"] / "units"
        code, _, err = cli(
            "--config", str(site["cfg"]), "--home", str(site["home"]),
            "site", "units", "--out", str(units), "--user", site["user"], "--executable", sys.executable,
        )  # fmt: skip
        assert code == 0, err
        r = subprocess.run(
            ["systemd-tmpfiles", "--create", str(units / "edgesec-authz.tmpfiles.conf")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 15
        while _get(f"http://127.0.0.1:{site['port']}/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(f"http://127.0.0.1:{site['port']}/readyz")[0] == 200
    finally:
        _stop(proc)
    recs = _records(site["trail"])
    denials = [
        x for x in recs if x["event"]["action"] == "authz.decision" and x["event"]["outcome"] == "failure"
    ]
    assert len(denials) == 4, [x["event"]["action"] for x in recs]  # none dropped while it could not write
