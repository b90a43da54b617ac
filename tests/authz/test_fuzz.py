"""Hypothesis fuzzing of the whole /auth handler: a 200 always means the policy allows the request.

The oracles are independent of the code under test: plain ``casbin.Enforcer`` on the canonical path, and
on the path as a lenient backend would read it (fully percent-decoded, dot segments and empty segments
removed, case folded), which must not be explicitly denied either.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from urllib.parse import unquote

import casbin
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgesec.authz.service import Authorizer, create_app
from tests.authz.conftest import HOST, SiteCA, bank_files
from tests.authz.conftest import settings as authz_settings
from tests.authz.test_bypass import BROAD

SEGMENTS = [
    "public",
    "admin",
    "Admin",
    "ADMIN",
    "internal",
    "7",
    "secret",
    "Secret",
    "docs",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2E.",
    ".%2e",
    "%2e",
    "%2f",
    "%2F",
    "%5c",
    "%00",
    ";x",
    "%3b",
    "%23",
    "#",
    "?",
    "%3f",
    "%25",
    "%252e",
    "%61dmin",
    "%41DMIN",
    "a%20b",
    "\\",
    "x",
    "%",
    "%zz",
    "admin;",
    "..;",
    "%c0%ae",
    "..%2fadmin",
    "%2e%2e%2fadmin",
    "..%5cadmin",
    "public%2f..%2fadmin",
    "..%252fadmin",
    "admin%00",
    "admin#",
]
CERTS = ["@alice", "@alice", "@erin", "@revoked-rita", "@stranger", "garbage", ""]
METHODS = ["GET", "POST", "DELETE", "PUT", "get", "", "GET ", "HEAD"]
EXTRA_NAMES = [
    "X-Original-URI",
    "X-Original-Method",
    "X_Forwarded_Uri",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "Connection",
    "X-Forwarded-Prefix",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Host",
    "Authorization",
    "Cookie",
    "X-User-ID",
    "X-Forwarded-Tls-Client-Cert",
    "X-Original-URL",
    "Host",
]
# RFC 7230 field values without CR/LF (what can reach us through a proxy or an HTTP parser).
VALUE_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40
)

uris = st.builds(
    lambda segs, q: "/" + "/".join(segs) + q,
    st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(alphabet="abc/.%2eE;#?", max_size=6)), max_size=6),
    st.one_of(st.just(""), st.sampled_from(["?a=1", "?/../admin", "?x=/public#y", "?"])),
)
wild = st.builds(
    lambda method, uri, host, cert, extra, order: _order(
        [
            ("X-Forwarded-Method", method),
            ("X-Forwarded-Uri", uri),
            ("X-Forwarded-Host", host),
            ("X-Forwarded-Tls-Client-Cert", cert),
            *extra,
        ],
        order,
    ),
    st.one_of(st.sampled_from(METHODS), VALUE_TEXT),
    st.one_of(uris, VALUE_TEXT),
    st.sampled_from([HOST, HOST.upper(), HOST + ":443", "evil.example", "", f"x@{HOST}", HOST + "."]),
    st.sampled_from(CERTS),
    st.lists(
        st.tuples(st.sampled_from(EXTRA_NAMES), st.one_of(uris, VALUE_TEXT, st.sampled_from(CERTS))),
        max_size=3,
    ),
    st.randoms(use_true_random=False),
)
# Mostly well-formed requests by the one user who has a role, with one twist: where the allows are.
near_valid = st.builds(
    lambda method, segs, q, extra: [
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Uri", "/" + "/".join(segs) + q),
        ("X-Forwarded-Host", HOST),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Tls-Client-Cert", "@alice"),
        *extra,
    ],
    st.sampled_from(["GET", "POST", "GET", "DELETE"]),
    st.lists(
        st.one_of(
            st.sampled_from(
                ["public", "docs", "x", "v1", "admin", "Admin", "internal", "7", "secret", "..", ".", ""]
            ),
            st.sampled_from(["..%2fadmin", "%2e%2e/admin", "..%5cadmin", "%2f..%2fadmin", "admin/", "ADMIN"]),
            st.sampled_from(SEGMENTS),
        ),
        max_size=5,
    ),
    st.sampled_from(["", "?a=1", "?/../admin"]),
    st.lists(st.tuples(st.sampled_from(EXTRA_NAMES), st.one_of(uris, st.sampled_from(CERTS))), max_size=1),
)
header_lists = st.one_of(near_valid, near_valid, near_valid, wild)


def _order(headers: list[tuple[str, str]], rnd) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    out = [h for h in headers if h[1] != "" or rnd.random() < 0.5]
    rnd.shuffle(out)
    return out


def _lenient(path: str) -> str:
    p = unquote(unquote(path)).replace("\\", "/")
    p = re.sub("/+", "/", p)
    p = posixpath.normpath(p)
    return "/" if p in (".", "//") else p


@pytest.fixture(scope="module")
def fuzz_env(
    site_ca: SiteCA, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Authorizer, casbin.Enforcer, SiteCA]:
    files = bank_files(tmp_path_factory.mktemp("fuzz"))
    files.policy.write_text(BROAD)
    a = Authorizer(authz_settings(), files=files, trust_dir=site_ca.trust)
    oracle = casbin.Enforcer(str(files.model), str(files.policy))
    return a, oracle, site_ca


def _resolve(site_ca: SiteCA, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, site_ca.der_b64(v[1:]) if v[1:] in site_ca.certs else v) for k, v in headers]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(headers=header_lists)
def test_200_implies_the_policy_allows(fuzz_env, headers: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    a, oracle, site_ca = fuzz_env
    hs = _resolve(site_ca, headers)
    status, answer = a.authorize(hs, "127.0.0.1")
    event(f"status {status}")
    assert status in (200, 401, 403)
    if status != 200:
        assert not any(k == "X-User-ID" for k, _ in answer)
        return
    d = dict(answer)
    assert d["X-User-ID"] == "alice" and d["X-Tenant"] == "branch" and d["X-Roles"] == "role:staff"
    sent = {k.lower(): v for k, v in hs}
    method = sent["x-forwarded-method"]
    uri = sent["x-forwarded-uri"]
    assert sent["x-forwarded-tls-client-cert"] == site_ca.der_b64("alice")
    path = uri.split("?", 1)[0]
    from edgesec.authz.request import canonical_path

    assert oracle.enforce("alice", "branch", canonical_path(path), method)
    backend = _lenient(path)
    for view in (backend, backend.lower(), backend + "/"):
        assert oracle.enforce("alice", "branch", view, method), (uri, view)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(headers=header_lists)
def test_http_handler_answers_only_200_401_403(fuzz_env, headers: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    a, _, site_ca = fuzz_env
    app = create_app(a.settings, authorizer=a, watch=False)
    hs = [(k, v) for k, v in _resolve(site_ca, headers) if k.lower() != "host"]

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://authz") as c:
            r = await c.get("/auth", headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in hs])
            return r.status_code

    assert asyncio.run(go()) in (200, 401, 403)


def test_the_oracle_can_fail(fuzz_env) -> None:  # type: ignore[no-untyped-def]
    _, oracle, _ = fuzz_env
    assert oracle.enforce("alice", "branch", "/public", "GET")
    assert not oracle.enforce("alice", "branch", "/admin/x", "GET")
    assert _lenient("/public/..%2fadmin") == "/admin"
