"""The decision service: answers, audit events, metrics, readiness, hot reload, CRL freshness."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgesec import auditing
from edgesec.auditing.trail import trail_files
from edgesec.authz.service import create_app
from tests.authz.conftest import bank_files, fwd, running, settings, write_settled


def events(trail: Path) -> list[dict[str, Any]]:
    auditing.flush()
    out = []
    for f in trail_files(trail):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture
def trail(tmp_path: Path):  # type: ignore[no-untyped-def]
    with auditing.configured(tmp_path / "audit", durability="none"):
        yield tmp_path / "audit"


def test_allow_answers_all_four_headers_with_configured_names(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    names = {
        "user": "X-Edge-User",
        "roles": "X-Edge-Roles",
        "tenant": "X-Edge-Tenant",
        "method": "X-Edge-Via",
    }
    a = make_authorizer(headers=names)
    st, h = a.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), "127.0.0.1")
    assert st == 200
    d = dict(h)
    assert d["X-Edge-User"] == "alice" and d["X-Edge-Roles"] == "role:teller"
    assert d["X-Edge-Tenant"] == "branch" and d["X-Edge-Via"] == "cert"
    assert "X-User-ID" not in d


def test_nginx_style_headers(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    from urllib.parse import quote

    h = [
        ("X-Original-Method", "POST"),
        ("X-Original-URI", "/v1/chat-messages?stream=1"),
        ("X-Forwarded-Host", "dify.branch.local"),
        ("X-Forwarded-Tls-Client-Cert", quote(site_ca.pem("alice"), safe="")),
    ]
    assert a.authorize(h, None)[0] == 200
    h[1] = ("X-Original-URI", "/console/api/apps")
    assert a.authorize(h, None)[0] == 403


def test_denials_are_audited_and_allows_sampled(make_authorizer, site_ca, trail) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    a.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), "10.1.2.3")
    a.authorize(
        [
            *fwd("DELETE", "/console/api/apps/7", cert=site_ca.der_b64("alice")),
            ("X-Forwarded-For", "198.51.100.1, 192.0.2.7"),
        ],
        "10.1.2.3",
    )
    a.authorize(fwd("GET", "/v1/parameters"), "10.1.2.4")
    evs = [e for e in events(trail) if e["event"]["action"] == "authz.decision"]
    assert len(evs) == 2  # the allow is not sampled at rate 0
    deny = evs[0]
    assert deny["event"]["outcome"] == "failure"
    assert deny["user"]["id"] == "alice" and deny["user"]["roles"] == ["role:teller"]
    assert deny["http"]["request"]["method"] == "DELETE" and deny["url"]["path"] == "/console/api/apps/7"
    assert deny["source"]["ip"] == "192.0.2.7" and deny["client"]["ip"] == "10.1.2.3"
    assert deny["tls"]["client"]["x509"]["serial_number"] == f"{site_ca.certs['alice'].serial_number:x}"
    assert deny["edgesec"]["authz"]["tenant"] == "branch"
    assert deny["edgesec"]["authz"]["decision"] == "deny"
    unauth = evs[1]
    assert unauth["http"]["response"]["status_code"] == 401
    assert "authentication" in unauth["event"]["category"]
    b = make_authorizer(allow_sample_rate=1.0)
    b.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), "10.1.2.3")
    allow = [e for e in events(trail) if e["event"]["action"] == "authz.decision"][-1]
    assert allow["event"]["outcome"] == "success"
    assert allow["rule"]["name"] == "role:teller, branch, /v1/chat-messages, POST, allow"


def test_break_glass_use_is_a_high_severity_event(make_authorizer, site_ca, trail) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    st, h = a.authorize(fwd("DELETE", "/console/api/apps/7", cert=site_ca.der_b64("emergency-1")), "10.9.9.9")
    assert st == 200 and dict(h)["X-Roles"] == "role:breakglass"
    glass = [e for e in events(trail) if e["event"]["action"] == "authz.break_glass"]
    assert len(glass) == 1
    assert glass[0]["event"]["severity"] == 4 and glass[0]["user"]["id"] == "emergency-1"


def test_break_glass_is_refused_when_its_audit_cannot_be_written(
    make_authorizer, site_ca, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from edgesec.auditing.trail import Trail

    a = make_authorizer()

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk full")

    # The trail cannot be written, whichever durability and record form the decision path uses.
    monkeypatch.setattr(Trail, "append", broken)
    monkeypatch.setattr(Trail, "submit", broken)
    st, _ = a.authorize(fwd("DELETE", "/console/api/apps/7", cert=site_ca.der_b64("emergency-1")), None)
    assert st == 403
    assert a.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), None)[0] == 200


def test_any_internal_fault_is_a_denial(make_authorizer, site_ca, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()

    def boom(*_: Any) -> Any:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(a.policy.engine, "decide", boom, raising=False)
    st, h = a.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), None)
    assert st == 403 and "X-User-ID" not in dict(h)


def test_hot_reload_swaps_and_a_broken_file_keeps_the_last_good_policy(
    make_authorizer, site_ca, tmp_path, trail
) -> None:  # type: ignore[no-untyped-def]
    files = bank_files(tmp_path)
    a = make_authorizer(files=files)
    cert = site_ca.der_b64("alice")
    assert a.authorize(fwd("GET", "/audit/logins", cert=cert), None)[0] == 403
    good = files.policy.read_text()
    write_settled(files.policy, good + "\np, role:teller, branch, /audit/*, GET, allow\n")
    assert a.policy.check() is True
    assert a.authorize(fwd("GET", "/audit/logins", cert=cert), None)[0] == 200
    assert a.policy.generation == 2
    write_settled(files.policy, good + "\np, role:teller, branch\n")  # broken line
    assert a.policy.check() is False
    assert a.policy.last_error
    assert a.authorize(fwd("GET", "/audit/logins", cert=cert), None)[0] == 200  # last good still enforced
    write_settled(files.policy, "# emptied by a half-finished save\n")
    assert a.policy.check() is False and "no rules" in (a.policy.last_error or "")
    assert a.authorize(fwd("GET", "/audit/logins", cert=cert), None)[0] == 200
    app = create_app(settings(), trust_dir=site_ca.trust, authorizer=a, watch=False)
    with running(app) as url, httpx.Client(base_url=url) as c:
        body = c.get("/readyz").json()
        assert body["policy"]["ok"] is False and "error" in body["policy"]
    evs = [e["event"]["action"] for e in events(trail)]
    assert "authz.policy.reloaded" in evs and "authz.policy.reload_failed" in evs
    write_settled(files.policy, good)
    assert a.policy.check() is True and a.policy.last_error is None
    assert a.authorize(fwd("GET", "/audit/logins", cert=cert), None)[0] == 403


def test_watcher_and_sighup_path_reload(make_authorizer, site_ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = bank_files(tmp_path)
    a = make_authorizer(files=files, reload_interval_s=0.05)
    app = create_app(settings(reload_interval_s=0.05), authorizer=a, watch=True)
    cert = site_ca.der_b64("alice")
    with running(app):
        files.policy.write_text(files.policy.read_text() + "\np, role:teller, branch, /audit/*, GET, allow\n")
        deadline = time.time() + 10
        while a.authorize(fwd("GET", "/audit/x", cert=cert), None)[0] != 200 and time.time() < deadline:
            time.sleep(0.05)
        assert a.authorize(fwd("GET", "/audit/x", cert=cert), None)[0] == 200
        gen = a.policy.generation
        app.state.watcher.hup()  # what the SIGHUP handler does
        deadline = time.time() + 10
        while a.policy.generation == gen and time.time() < deadline:
            time.sleep(0.05)
        assert a.policy.generation == gen + 1


def test_http_endpoints(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    app = create_app(settings(), authorizer=a, watch=False)
    with running(app) as url, httpx.Client(base_url=url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True
        assert r.json()["policy"]["indexed"] is True and r.json()["policy"]["rules"] == 18
        r = c.get("/auth", headers=dict(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice"))))
        assert (
            r.status_code == 200 and r.headers["x-user-id"] == "alice" and r.headers["x-tenant"] == "branch"
        )
        r = c.post("/auth", headers=dict(fwd("POST", "/console/api/apps", cert=site_ca.der_b64("alice"))))
        assert r.status_code == 403 and "x-user-id" not in r.headers
        r = c.get("/auth")
        assert r.status_code == 403
        r = c.get("/auth", headers=dict(fwd("GET", "/v1/parameters")))
        assert r.status_code == 401
        m = c.get("/metrics").text
        assert 'edgesec_authz_decisions_total{outcome="allow"} 1.0' in m
        assert 'edgesec_authz_decisions_total{outcome="deny"} 2.0' in m
        assert 'edgesec_authz_decisions_total{outcome="unauthenticated"} 1.0' in m
        assert "edgesec_authz_decision_seconds_bucket" in m
        assert "edgesec_authz_engine_cache_hits_total" in m


def test_stale_crl_alarms_first_then_denies_after_the_grace(make_authorizer, site_ca, trail) -> None:  # type: ignore[no-untyped-def]
    crl_next = min(rl.next_update for rl in site_ca.ca.trust_bundle().crls.values())
    in_grace = crl_next.timestamp() + 3600
    a = make_authorizer(clock=lambda: in_grace, crl_grace_hours=24)
    cert = site_ca.der_b64("alice")
    assert a.authorize(fwd("POST", "/v1/chat-messages", cert=cert), None)[0] == 200
    app = create_app(settings(), authorizer=a, watch=False)
    with running(app) as url, httpx.Client(base_url=url) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and any(c["stale"] for c in r.json()["trust"]["crls"])
    a.check_reload()
    stale = [e for e in events(trail) if e["event"]["action"] == "authz.crl.stale"]
    assert stale and stale[0]["event"]["severity"] == 4
    past = crl_next.timestamp() + 25 * 3600
    b = make_authorizer(clock=lambda: past, crl_grace_hours=24)
    st, _ = b.authorize(fwd("POST", "/v1/chat-messages", cert=cert), None)
    assert st == 401


def test_missing_trust_bundle_is_not_ready_and_refuses_certs(site_ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgesec.authz.service import Authorizer

    a = Authorizer(settings(), files=bank_files(tmp_path), trust_dir=tmp_path / "nothing")
    assert a.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), None)[0] == 401
    app = create_app(settings(), authorizer=a, watch=False)
    with running(app) as url, httpx.Client(base_url=url) as c:
        assert c.get("/readyz").status_code == 503


def test_revocation_takes_effect_on_the_next_reload(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    """A remembered identity never outlives the bundle it was verified against."""
    import base64

    from cryptography.hazmat.primitives import serialization

    cert, _ = site_ca.ca.issue_client("teller-tom")
    site_ca.ca.publish(run_hooks=False)
    a = make_authorizer(files=None)
    write_settled(
        a.policy.files.policy, a.policy.files.policy.read_text() + "\ng, teller-tom, role:teller, branch\n"
    )
    assert a.policy.check() is True
    header = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    req = fwd("POST", "/v1/chat-messages", cert=header)
    assert a.authorize(req, None)[0] == 200
    assert a.authorize(req, None)[0] == 200  # from the identity cache
    site_ca.ca.revoke("teller-tom", "key-compromise")
    a.check_reload()
    st, _ = a.authorize(req, None)
    assert st == 401


def test_broken_trust_bundle_keeps_the_last_good_one(site_ca, tmp_path, trail) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from edgesec.authz.service import Authorizer

    trust = tmp_path / "trust"
    shutil.copytree(site_ca.trust, trust)
    a = Authorizer(settings(), files=bank_files(tmp_path), trust_dir=trust)
    req = fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice"))
    assert a.authorize(req, None)[0] == 200
    (trust / "crl.pem").write_text("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    a.check_reload()
    assert a.trust is not None and a.trust.error and a.trust.status()["ok"] is False
    assert a.authorize(req, None)[0] == 200
    assert "authz.trust.reload_failed" in [e["event"]["action"] for e in events(trail)]
