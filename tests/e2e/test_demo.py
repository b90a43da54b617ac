"""The demo site driven as its users would: tellers, auditors, a revoked card, a forger, an auditor of logs.

Every request goes over real mutual TLS into real nginx or Caddy, whose forward auth asks the internal
nginx load balancer, which asks one of two ``edgesec authz serve`` replicas; the app behind is a stand-in
that echoes who it was told the caller is.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgesec.deploy.demo import DemoSite, site_failures, site_problems
from tests.e2e.conftest import archive_lines, trail_records

PROXIES = ("nginx", "caddy")
pytestmark = pytest.mark.real("nginx", "caddy", "syslog-ng", "curl")


def _identity(r: object) -> dict[str, list[str]]:
    return r.json()["identity"]  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("proxy", PROXIES)
def test_teller_reaches_the_chat_api_and_not_the_admin_console(site: DemoSite, proxy: str) -> None:
    r = site.request(proxy, "POST", "/v1/chat-messages", user="alice", body=b'{"query": "opening hours?"}')
    assert r.status == 200, r.body
    assert r.json()["answer"]
    assert _identity(r) == {
        "X-User-ID": ["alice"],
        "X-Roles": ["role:teller"],
        "X-Tenant": ["branch"],
        "X-Auth-Method": ["cert"],
    }
    for path in (
        "/console/api/apps",
        "/admin/users",
        "/v1/datasets/kb/documents",
        "/models/v1/chat/completions",
    ):
        assert site.request(proxy, "GET", path, user="alice").status == 403, path
    # A dot-segment walk from an allowed path to the console is refused, not normalised into an allow.
    assert site.request(proxy, "GET", "/v1/conversations/../../console/api/apps", user="alice").status in (
        400,
        403,
    )


@pytest.mark.parametrize("proxy", PROXIES)
def test_auditor_reaches_the_audit_views_read_only(site: DemoSite, proxy: str) -> None:
    r = site.request(proxy, "GET", "/audit/logins", user="dave")
    assert r.status == 200
    assert _identity(r)["X-User-ID"] == ["dave"] and _identity(r)["X-Roles"] == ["role:auditor"]
    assert site.request(proxy, "GET", "/console/api/apps/7/workflow-runs", user="dave").status == 200
    assert site.request(proxy, "DELETE", "/audit/logins", user="dave").status == 403
    assert site.request(proxy, "POST", "/v1/chat-messages", user="dave", body=b"{}").status == 403


@pytest.mark.parametrize("proxy", PROXIES)
def test_no_client_certificate_no_entry(site: DemoSite, proxy: str) -> None:
    try:
        r = site.request(proxy, "GET", "/v1/parameters", user=None)
    except (ssl.SSLError, ConnectionError):
        return  # Caddy ends the handshake
    assert r.status == 400  # nginx: "No required SSL certificate was sent"
    assert b"demo-dify" not in r.body


def _der_b64(pem_path: Path) -> str:
    cert = x509.load_pem_x509_certificates(pem_path.read_bytes())[0]
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


@pytest.mark.parametrize("proxy", PROXIES)
def test_spoofed_identity_headers_are_refused(site: DemoSite, proxy: str) -> None:
    forged = {
        "X-User-ID": "erin",
        "X-Roles": "role:admin",
        "X-Tenant": "branch",
        "X-Auth-Method": "cert",
        # Another user's certificate, as a proxy would forward it: the real one replaces it.
        "X-Forwarded-Tls-Client-Cert": _der_b64(site.cert("dave")[0]),
        "X-Forwarded-Uri": "/audit/logins",
        "X-Original-URI": "/audit/logins",
        "X-Forwarded-Method": "GET",
    }
    assert site.request(proxy, "GET", "/console/api/apps", user="alice", headers=forged).status == 403
    assert site.request(proxy, "GET", "/admin/users", user="alice", headers=forged).status == 403
    r = site.request(proxy, "POST", "/v1/chat-messages", user="alice", headers=forged, body=b"{}")
    assert r.status == 200
    body = r.json()
    assert _identity(r) == {
        "X-User-ID": ["alice"],
        "X-Roles": ["role:teller"],
        "X-Tenant": ["branch"],
        "X-Auth-Method": ["cert"],
    }
    assert body["client_cert_header"] in (None, "")


def test_revoked_certificate_is_refused_on_both_proxies(site: DemoSite) -> None:
    for proxy in PROXIES:
        assert site.request(proxy, "POST", "/v1/chat-messages", user="bob", body=b"{}").status == 200
    out = site.edgesec("--json", "pki", "revoke", "bob", "--reason", "key-compromise")
    assert json.loads(out.stdout)["ok"]
    deadline = time.monotonic() + 15
    refused: dict[str, int] = {}
    while time.monotonic() < deadline and len(refused) < len(PROXIES):
        for proxy in PROXIES:
            st = site.request(proxy, "POST", "/v1/chat-messages", user="bob", body=b"{}").status
            if st in (401, 403):
                refused[proxy] = st
        time.sleep(0.3)
    assert set(refused) == set(PROXIES), "the replicas did not pick up the new CRL within 15 s"
    # Refused for being revoked, and audited as such; others are unaffected.
    denials = [
        r
        for r in trail_records(site)
        if r.get("user", {}).get("id") in (None, "", "bob") and r["event"]["action"] == "authz.decision"
    ]
    assert any("revoked" in json.dumps(r.get("edgesec", {}).get("authz", {})) for r in denials[-6:])
    assert site.request("nginx", "POST", "/v1/chat-messages", user="alice", body=b"{}").status == 200


def test_every_decision_in_order_in_the_trail_and_in_what_syslog_ng_delivered(site: DemoSite) -> None:
    marker = uuid.uuid4().hex[:12]
    sent = []
    for i in range(12):
        user, method, path = [
            ("alice", "GET", "/v1/conversations"),
            ("alice", "GET", "/console/api/apps"),
            ("dave", "GET", "/audit/logins"),
            ("dave", "DELETE", "/audit/logins"),
        ][i % 4]
        proxy = PROXIES[i % 2]
        uri = f"{path}?m={marker}-{i:02d}"
        st = site.request(proxy, method, uri, user=user).status
        sent.append((uri, user, "allow" if st == 200 else "deny"))
    recs = [r for r in trail_records(site) if marker in str(r.get("url", {}).get("original", ""))]
    got = [(r["url"]["original"], r["user"]["id"], r["edgesec"]["authz"]["decision"]) for r in recs]
    assert got == sent, "the trail must hold every decision, once, in the order they were made"
    assert [r["event"]["sequence"] for r in recs] == sorted(r["event"]["sequence"] for r in recs)
    verify = site.edgesec("--json", "auditlog", "verify")
    assert json.loads(verify.stdout)["result"]["ok"] is True
    # syslog-ng reads the trail and archives each record byte for byte, in the same order.
    trail_lines = {
        json.loads(ln)["event"]["hash"]: ln for ln in (site.trail / "trail.jsonl").read_text().splitlines()
    }
    wanted = [trail_lines_for(trail_lines, r) for r in recs]
    deadline = time.monotonic() + 20
    delivered: list[str] = []
    while time.monotonic() < deadline:
        delivered = [ln for ln in archive_lines(site) if marker in ln]
        if len(delivered) >= len(wanted):
            break
        time.sleep(0.3)
    assert delivered == wanted


def trail_lines_for(lines: dict[str, str], rec: dict[str, object]) -> str:
    return lines[rec["event"]["hash"]]  # type: ignore[index]


def test_tampering_with_the_model_or_the_trail_turns_the_report_red(site: DemoSite) -> None:
    assert site.request("nginx", "POST", "/v1/chat-messages", user="alice", body=b"{}").status == 200
    site.checkpoint()
    code, before = site.audit()
    assert code in (0, 1)
    assert site_problems(before, site.dir, site.ports) == [], [
        (c["id"], [f["message"] for f in c["findings"]]) for c in site_problems(before, site.dir, site.ports)
    ]
    failing_before = site_failures(before, site.dir, site.ports)

    weights = site.model_dir / "model.safetensors"
    original_weights = weights.read_bytes()
    trail = site.trail / "trail.jsonl"
    raw = trail.read_bytes()
    # Edit one past decision in place (same length): allow -> "deny!" is what an insider would try.
    at = raw.index(b'"decision":"allow"')
    with open(trail, "r+b") as fh:
        fh.seek(at)
        fh.write(b'"decision":"deny!"')
    weights.write_bytes(original_weights[:-1] + bytes([original_weights[-1] ^ 0xFF]))
    try:
        code, after = site.audit()
        html = site.html_report().read_text()
    finally:
        weights.write_bytes(original_weights)
        with open(trail, "r+b") as fh:
            fh.seek(at)
            fh.write(b'"decision":"allow"')
    assert code == 1
    # Host checks (egress, time, auditd, other proxies) watch a machine shared with other work: compare
    # the site's own findings.
    new = site_failures(after, site.dir, site.ports)
    assert new == {"models.signature", "auditing.trail"}, (new, failing_before)
    trail_check = next(c for c in after["checks"] if c["id"] == "auditing.trail")
    assert "edited" in json.dumps(trail_check["findings"])
    assert "auditing.trail" in html and "models.signature" in html
    # Put back, the evidence verifies again.
    assert json.loads(site.edgesec("--json", "auditlog", "verify").stdout)["ok"]
    assert site.edgesec("model", "verify", str(site.model_dir), check=False).returncode == 0


def test_signed_checkpoints_leave_through_syslog_ng_and_catch_a_cut_trail(
    site: DemoSite, tmp_path: Path
) -> None:
    for proxy in PROXIES:
        site.request(proxy, "GET", "/v1/parameters", user="alice")
    cp = site.checkpoint()
    assert cp["sent"] is True
    deadline = time.monotonic() + 20
    shipped: list[str] = []
    while time.monotonic() < deadline and not shipped:
        for f in site.archive.glob("*/*/*/checkpoint.log"):
            shipped += [ln for ln in f.read_text().splitlines() if f'"hash":"{cp["hash"]}"' in ln]
        time.sleep(0.3)
    assert shipped, "the checkpoint did not reach the archive through syslog-ng"
    off_host = tmp_path / "checkpoint.json"
    off_host.write_text(shipped[0] + "\n")
    ok = site.edgesec("--json", "auditlog", "verify", "--checkpoint", str(off_host), "--no-local-checkpoints")
    assert json.loads(ok.stdout)["ok"]
    # Someone cuts the tail off a copy of the trail (and its local checkpoints): the shipped one notices.
    copy = tmp_path / "trail"
    copy.mkdir()
    lines = (site.trail / "trail.jsonl").read_bytes().splitlines(keepends=True)
    (copy / "trail.jsonl").write_bytes(b"".join(lines[: cp["seq"] - 3]))
    bad = site.edgesec(
        "--json",
        "auditlog",
        "verify",
        "--trail",
        str(copy),
        "--checkpoint",
        str(off_host),
        "--no-local-checkpoints",
        check=False,
    )
    assert bad.returncode == 1
    assert "truncated" in json.loads(bad.stdout)["error"]["message"]
