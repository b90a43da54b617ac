"""The lean /auth path: same answers as the service, certificate cache bounds, group-committed audit."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgesec import auditing
from edgesec._fs import FileLock, ensure_private_dir
from edgesec.auditing.trail import LOCK, trail_files
from edgesec.authz.hotpath import CertVerifyCache, cert_cache_of, create_hot_app
from edgesec.authz.identity import IdentityRejected, parse_cert_header
from edgesec.authz.service import create_app
from edgesec.authz.trust import TrustState
from edgesec.pki.ca import CertificateAuthority
from tests.authz.conftest import SiteCA, bank_files, fwd, running, settings


def trail_events(trail_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in trail_files(trail_dir):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture(autouse=True)
def _unfreeze():  # type: ignore[no-untyped-def]
    # The hot app freezes the heap (gc.freeze); give the rest of the test session its collector back.
    yield
    gc.unfreeze()


@pytest.fixture
def trail(tmp_path: Path):  # type: ignore[no-untyped-def]
    # The site default durability; the hot path switches the process to group commit.
    with auditing.configured(tmp_path / "audit", durability="fsync"):
        yield tmp_path / "audit"
        auditing.current_trail().close()


def test_hot_app_answers_exactly_like_the_service(site_ca: SiteCA, tmp_path: Path, trail: Path) -> None:
    files = bank_files(tmp_path)
    hot = create_hot_app(settings(), trust_dir=site_ca.trust, files=files, watch=False)
    plain = create_app(settings(), trust_dir=site_ca.trust, files=files, watch=False)
    cases = [
        fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")),
        fwd("HEAD", "/v1/conversations", cert=site_ca.der_b64("alice")),
        fwd("GET", "/console/api/apps", cert=site_ca.der_b64("alice")),
        fwd("DELETE", "/console/api/apps/7", cert=site_ca.der_b64("erin")),
        fwd("GET", "/v1/parameters", cert=site_ca.der_b64("revoked-rita")),
        fwd("GET", "/v1/parameters", cert=site_ca.der_b64("stranger")),
        fwd("GET", "/v1/parameters"),
        fwd("GET", "/v1/chat-messages/../../console/api/apps", cert=site_ca.der_b64("alice")),
        [
            (k, v)
            for k, v in fwd("GET", "/v1/parameters", cert=site_ca.der_b64("alice"))
            if k != "X-Forwarded-Uri"
        ],
    ]
    keep = ("x-user-id", "x-roles", "x-tenant", "x-auth-method", "cache-control", "www-authenticate")
    with running(hot) as hot_url, running(plain) as plain_url:
        with httpx.Client() as client:
            for headers in cases:
                for method in ("GET", "HEAD"):
                    a = client.request(method, hot_url + "/auth", headers=headers)
                    b = client.request(method, plain_url + "/auth", headers=headers)
                    assert a.status_code == b.status_code, headers
                    assert a.content == b.content
                    assert {k: a.headers.get(k) for k in keep} == {k: b.headers.get(k) for k in keep}
            statuses = {client.get(hot_url + "/auth", headers=h).status_code for h in cases}
            assert statuses == {200, 401, 403}
            assert client.get(hot_url + "/healthz").json() == {"status": "ok"}
            ready = client.get(hot_url + "/readyz").json()
            assert ready["policy"]["ok"] is True and "trust" in ready
            metrics = client.get(hot_url + "/metrics").text
            assert 'edgesec_authz_decisions_total{outcome="allow"}' in metrics
            assert (
                client.post(hot_url + "/auth", headers=cases[0], content=b"ignored body").status_code == 200
            )
    cache = cert_cache_of(hot)
    assert cache is not None and cache.hits > 0
    # alice and erin were verified once each; failed verifications are not cached: rita's revoked and
    # the stranger's untrusted certificate were verified on each of their three calls.
    assert cache.misses == 2 + 2 * 3


def test_revocation_takes_effect_at_the_reload_although_cached(tmp_path: Path, trail: Path) -> None:
    ca = CertificateAuthority.init(
        tmp_path / "ca", org="Hot Bank", encrypt=False, trust_dir=tmp_path / "trust"
    )
    try:
        cert, _key = ca.issue_client("alice")
        import base64

        from cryptography.hazmat.primitives import serialization

        b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        app = create_hot_app(
            settings(), trust_dir=tmp_path / "trust", files=bank_files(tmp_path), watch=False
        )
        authz = app.authorizer  # type: ignore[attr-defined]
        request = fwd("POST", "/v1/chat-messages", cert=b64)
        assert authz.authorize(request, None)[0] == 200
        assert authz.authorize(request, None)[0] == 200
        cache = cert_cache_of(app)
        assert cache is not None and (cache.hits, cache.misses) == (1, 1)
        ca.revoke("alice", "key-compromise")  # publishes the new CRL to the trust directory
        # Until the watcher notices the new files the cached verification stands (the stated bound is
        # the watcher's interval); the poll that loads them clears the cache.
        authz.check_reload()
        status, _ = authz.authorize(request, None)
        assert status == 401
        assert cache.hits == 1
    finally:
        ca.close()


class Clocks:
    """A wall clock and a monotonic clock the test moves."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_cached_verifications_end_with_the_ttl_expiry_and_crl_grace(site_ca: SiteCA) -> None:
    chain = parse_cert_header(site_ca.der_b64("alice"))
    clocks = Clocks(time.time())
    trust = TrustState(site_ca.trust, grace_hours=1.0, clock=lambda: clocks.wall)
    cache = CertVerifyCache(trust, ttl_s=30, monotonic=lambda: clocks.mono)
    assert cache.verify(chain, "cn").user == "alice"
    clocks.advance(29)
    cache.verify(chain, "cn")
    assert (cache.hits, cache.misses) == (1, 1)
    clocks.advance(2)  # past the TTL: verified again
    cache.verify(chain, "cn")
    assert (cache.hits, cache.misses) == (1, 2)
    # Past every CRL's nextUpdate + grace: denied at once although the entry is fresh.
    assert trust.bundle is not None
    next_update = min(rl.next_update for rl in trust.bundle.crls.values() if rl.next_update is not None)
    fresh_wall = clocks.wall
    clocks.wall = next_update.timestamp() + 3600 + 1
    with pytest.raises(IdentityRejected, match=r"stale|CRL"):
        cache.verify(chain, "cn")
    assert (cache.hits, cache.misses) == (1, 3)
    # Without a TTL, an entry still ends at the certificate's expiry or the CRL deadline, whichever first.
    clocks.wall = fresh_wall
    long = CertVerifyCache(trust, ttl_s=1e9, monotonic=lambda: clocks.mono)
    long.verify(chain, "cn")
    ((_, until),) = long._entries.values()
    lifetime = until - clocks.mono
    assert lifetime <= chain[0].not_valid_after_utc.timestamp() - fresh_wall + 1e-6
    assert lifetime <= next_update.timestamp() + 3600 - fresh_wall + 1e-6
    assert lifetime > 0


def test_a_denial_is_answered_before_its_event_is_durable_then_made_durable(
    site_ca: SiteCA, tmp_path: Path, trail: Path
) -> None:
    app = create_hot_app(settings(), trust_dir=site_ca.trust, files=bank_files(tmp_path), watch=False)
    authz = app.authorizer  # type: ignore[attr-defined]
    group = auditing.current_trail()
    assert group.durability == "group" and group.dir == trail
    denied = fwd("GET", "/console/api/apps/secret-denial", cert=site_ca.der_b64("alice"))
    answered = threading.Event()
    ensure_private_dir(trail)
    # Hold the trail's lock, as a slow disk or another writer would: the writer cannot write.
    with FileLock(trail / LOCK):
        result: list[int] = []

        def call() -> None:
            result.append(authz.authorize(denied, "127.0.0.1")[0])
            answered.set()

        threading.Thread(target=call).start()
        assert answered.wait(10), "the 403 waited for the audit trail"
        assert result == [403]
        on_disk = [
            e
            for e in trail_events(trail)
            if e.get("url", {}).get("path") == "/console/api/apps/secret-denial"
        ]
        assert on_disk == []
    # Lock released: the writer commits the queued event (within group_commit_ms plus one fdatasync).
    assert group.flush(timeout=10)
    on_disk = [
        e for e in trail_events(trail) if e.get("url", {}).get("path") == "/console/api/apps/secret-denial"
    ]
    assert len(on_disk) == 1
    assert on_disk[0]["event"]["outcome"] == "failure" and on_disk[0]["user"]["id"] == "alice"


def test_break_glass_is_durable_before_the_allow_and_denied_if_it_cannot_be(
    site_ca: SiteCA, tmp_path: Path, trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_hot_app(settings(), trust_dir=site_ca.trust, files=bank_files(tmp_path), watch=False)
    authz = app.authorizer  # type: ignore[attr-defined]
    request = fwd("DELETE", "/console/api/apps/7", cert=site_ca.der_b64("emergency-1"))
    ensure_private_dir(trail)
    answered = threading.Event()
    result: list[int] = []

    def call() -> None:
        result.append(authz.authorize(request, "127.0.0.1")[0])
        answered.set()

    with FileLock(trail / LOCK):  # the writer cannot commit: the break-glass allow must wait
        threading.Thread(target=call).start()
        assert not answered.wait(0.5)
    assert answered.wait(10)
    assert result == [200]
    # No flush here: the event was on disk when the 200 was answered.
    glass = [e for e in trail_events(trail) if e["event"]["action"] == "authz.break_glass"]
    assert len(glass) == 1
    group = auditing.current_trail()
    monkeypatch.setattr(group, "flush", lambda timeout=None: False)
    assert authz.authorize(request, "127.0.0.1")[0] == 403


def test_an_identity_that_cannot_be_a_header_fails_closed(
    site_ca: SiteCA, tmp_path: Path, trail: Path
) -> None:
    hot = create_hot_app(settings(), trust_dir=site_ca.trust, files=bank_files(tmp_path), watch=False)
    # A certificate CN outside latin-1 cannot travel in a header value: the answer must not be a 200.
    hot.authorizer.authorize = lambda headers, ip: (200, [("X-User-ID", "\u0101lice")])  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/auth", "method": "GET", "headers": [], "client": ("127.0.0.1", 1)}
    asyncio.run(hot(scope, receive, send))
    assert sent[0]["status"] == 403
    assert not any(k == b"x-user-id" for k, _ in sent[0]["headers"])
    assert sent[1]["body"] == b""  # answers are headers only
    # Any other fault, or a status nginx would turn into a 500, is a 403 too.
    for broken in (lambda headers, ip: 1 / 0, lambda headers, ip: (500, [])):
        hot.authorizer.authorize = broken  # type: ignore[attr-defined]
        sent.clear()
        asyncio.run(hot(scope, receive, send))
        assert sent[0]["status"] == 403
        assert (b"content-length", b"0") in sent[0]["headers"]


def test_the_heap_is_frozen_after_start_and_after_each_reload(
    site_ca: SiteCA, tmp_path: Path, trail: Path
) -> None:
    files = bank_files(tmp_path)
    app = create_hot_app(settings(), trust_dir=site_ca.trust, files=files, watch=False)
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    authz = app.authorizer  # type: ignore[attr-defined]
    files.policy.write_text(files.policy.read_text() + "p, role:teller, branch, /v1/extra, GET, allow\n")
    authz.force_reload()
    assert gc.get_freeze_count() > 0
    assert authz.policy.engine.rule_count > 0
