"""The bypass corpus: requests modelled on public forward-auth bypasses; none may be allowed.

Each case names the class of advisory it models (REFERENCE.md list). The policy is the hardest kind to
defend: a broad allow (``/*``) with explicit deny rules, so that any mis-canonicalized path that dodges
the deny rule would come out allowed. Controls prove the same identity is allowed where it should be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgesec.authz.policy import PolicyFiles
from tests.authz.conftest import HOST, bank_files, fwd

BROAD = """\
p, role:staff, branch, /*, GET|POST, allow
p, role:staff, branch, /admin, .*, deny
p, role:staff, branch, /admin/*, .*, deny
p, role:staff, branch, /internal/:id/secret, .*, deny
g, alice, role:staff, branch
"""


def broad_files(tmp: Path) -> PolicyFiles:
    files = bank_files(tmp)
    files.policy.write_text(BROAD)
    return files


@dataclass(frozen=True)
class Case:
    cls: str
    desc: str
    headers: list[tuple[str, str]]


def C(cls: str, desc: str, method: str = "GET", uri: str = "/admin", **kw: str) -> Case:
    return Case(cls, desc, fwd(method, uri, cert="@alice", **kw))


def raw(cls: str, desc: str, headers: list[tuple[str, str]]) -> Case:
    return Case(cls, desc, headers)


CORPUS: list[Case] = [
    # Dot segments and their encodings (Traefik CVE-2025-32431, Envoy CVE-2019-9901)
    C("dot-segment", "plain ../ out of an allowed prefix", uri="/public/../admin"),
    C("dot-segment", "../ above the root", uri="/../admin/users"),
    C("dot-segment", "./ segments", uri="/./admin/./users"),
    C("dot-segment", "trailing /.. lands on the admin dir", uri="/admin/users/.."),
    C("encoded-dot", "%2e%2e lower case", uri="/public/%2e%2e/admin"),
    C("encoded-dot", "%2E%2E upper case", uri="/public/%2E%2E/admin/users"),
    C("encoded-dot", "mixed .%2e", uri="/public/.%2e/admin"),
    C("encoded-dot", "mixed %2e.", uri="/public/%2e./admin"),
    C("encoded-dot", "%2e single dot segments", uri="/%2e/admin"),
    # Encoded / \ NUL ; ? # (GHSA-gm3x-23wp-hc2c, CVE-2026-34908 ..%2f)
    C("encoded-slash", "..%2f after an allowed prefix", uri="/public/..%2fadmin"),
    C("encoded-slash", "%2F as separator", uri="/admin%2Fusers"),
    C("encoded-slash", "%2f lower case", uri="/public%2f..%2fadmin"),
    C("encoded-backslash", "%5c as separator", uri="/public/..%5cadmin"),
    C("backslash", "raw backslash", uri="/public/..\\admin"),
    C("encoded-nul", "%00 truncation", uri="/admin%00/public"),
    C("path-parameter", "; matrix parameter before ..", uri="/public;/../admin"),
    C("path-parameter", "; jsessionid style", uri="/admin;jsessionid=1"),
    C("path-parameter", "%3b encoded", uri="/admin%3bx=/public"),
    C("encoded-query", "%3f encoded question mark", uri="/admin%3f/public"),
    # Double encoding
    C("double-encoding", "%252e%252e", uri="/public/%252e%252e/admin"),
    C("double-encoding", "%252f", uri="/public%252f..%252fadmin"),
    C("double-encoding", "%25 alone", uri="/admin%25"),
    # Fragments
    C("fragment", "# then dots", uri="/public#/../admin"),
    C("fragment", "%23 encoded", uri="/admin%23/public"),
    # Trailing slash and case (keycloak-client#234)
    C("trailing-slash", "trailing slash on an exact deny", uri="/admin/"),
    C("trailing-slash", "double trailing slash", uri="/admin//"),
    C("trailing-slash", "empty segments", uri="//admin///users"),
    C("case", "upper-case dir", uri="/ADMIN"),
    C("case", "mixed-case dir", uri="/Admin/users"),
    C("case", "mixed-case parameter rule", uri="/Internal/7/Secret"),
    C("case", "percent-encoded letters", uri="/%61dmin/users"),
    # Query string or # matched as path (CVE-2025-54576, CVE-2026-41059)
    C("query-trick", "allowed path in the query", uri="/admin?/public"),
    C("query-trick", "dots in the query", uri="/admin?x=/../public"),
    C("query-trick", "encoded ? then path", uri="/admin%3F/../public"),
    # Spoofed X-Forwarded-* / X-Original-* (oauth2-proxy CVE-2026-40575, CVE-2026-35051, CVE-2026-54764)
    raw(
        "spoofed-forwarded",
        "second X-Forwarded-Uri",
        [*fwd("GET", "/admin", cert="@alice"), ("X-Forwarded-Uri", "/public")],
    ),
    raw(
        "spoofed-forwarded",
        "X-Original-URI beside X-Forwarded-Uri",
        [*fwd("GET", "/admin", cert="@alice"), ("X-Original-URI", "/public")],
    ),
    raw(
        "spoofed-forwarded",
        "X-Original-Method beside X-Forwarded-Method",
        [*fwd("DELETE", "/admin", cert="@alice"), ("X-Original-Method", "GET")],
    ),
    C("spoofed-forwarded", "X-Forwarded-Prefix", uri="/admin", X_Forwarded_Prefix="/public"),
    C("spoofed-forwarded", "X-Forwarded-Port junk", uri="/public", X_Forwarded_Port="443, 80"),
    C("spoofed-forwarded", "X-Original-URL override", uri="/public", X_Original_URL="/admin"),
    C("spoofed-forwarded", "X-Rewrite-URL override", uri="/public", X_Rewrite_URL="/admin"),
    raw(
        "spoofed-forwarded",
        "unknown host (no tenant)",
        fwd("GET", "/public", host="evil.example", cert="@alice"),
    ),
    raw("spoofed-forwarded", "two hosts", fwd("GET", "/public", host=f"{HOST}, evil.example", cert="@alice")),
    raw(
        "spoofed-forwarded",
        "X-Forwarded-Proto junk",
        [
            *fwd("GET", "/public", cert="@alice")[:3],
            ("X-Forwarded-Proto", "gopher"),
            ("X-Forwarded-Tls-Client-Cert", "@alice"),
        ],
    ),
    # user@host confusion (CVE-2026-40574)
    raw(
        "userinfo-host",
        "a@evil.com@company.com",
        fwd("GET", "/public", host=f"a@evil.com@{HOST}", cert="@alice"),
    ),
    raw(
        "userinfo-host",
        "absolute-form URI",
        fwd("GET", "http://evil@dify.branch.local/public", cert="@alice"),
    ),
    # Underscore header aliases (CVE-2026-39858, CVE-2025-64484)
    raw(
        "underscore-alias",
        "X_Forwarded_Uri beside X-Forwarded-Uri",
        [*fwd("GET", "/admin", cert="@alice"), ("X_Forwarded_Uri", "/public")],
    ),
    raw(
        "underscore-alias",
        "X_Forwarded_Method",
        [*fwd("DELETE", "/public", cert="@alice"), ("X_Forwarded_Method", "GET")],
    ),
    raw(
        "underscore-alias",
        "X_Forwarded_Tls_Client_Cert",
        [*fwd("GET", "/public"), ("X_Forwarded_Tls_Client_Cert", "@alice")],
    ),
    # Connection header removing X-Forwarded-* (CVE-2024-45410)
    raw(
        "connection-header",
        "Connection names X-Forwarded-Uri",
        [*fwd("GET", "/public", cert="@alice"), ("Connection", "close, X-Forwarded-Uri")],
    ),
    raw(
        "connection-header",
        "Connection names X_Forwarded_Uri (a folding proxy drops X-Forwarded-Uri)",
        [*fwd("GET", "/public", cert="@alice"), ("Connection", "close, X_Forwarded_Uri")],
    ),
    raw(
        "connection-header",
        "Connection names the cert header",
        [*fwd("GET", "/public", cert="@alice"), ("Connection", "X-Forwarded-Tls-Client-Cert")],
    ),
    raw(
        "connection-header",
        "URI header dropped by a proxy",
        [h for h in fwd("GET", "/public", cert="@alice") if h[0] != "X-Forwarded-Uri"],
    ),
    raw(
        "connection-header",
        "method header dropped by a proxy",
        [h for h in fwd("GET", "/public", cert="@alice") if h[0] != "X-Forwarded-Method"],
    ),
    # Malformed input answered 200 (Authelia CVE-2021-32637, Authentik CVE-2026-25748)
    C("malformed", "lower-case method", method="get", uri="/public"),
    C("malformed", "method with space", method="GET ", uri="/public"),
    C("malformed", "unknown method", method="PROPFIND", uri="/public"),
    C("malformed", "empty method", method="", uri="/public"),
    C("malformed", "empty URI", uri=""),
    C("malformed", "asterisk URI", uri="*"),
    C("malformed", "space in URI", uri="/public /admin"),
    C("malformed", "CRLF in URI", uri="/public\r\nX-Forwarded-Uri: /admin"),
    C("malformed", "non-ASCII in URI", uri="/pub\u00e4lic"),
    C("malformed", "truncated escape", uri="/public%2"),
    C("malformed", "bad hex escape", uri="/public%zz"),
    C("malformed", "encoded control char", uri="/public%0a"),
    C("malformed", "very long URI", uri="/public/" + "a" * 9000),
    raw("malformed", "garbage certificate", fwd("GET", "/public", cert="not-a-cert")),
    raw("malformed", "certificate of an untrusted CA", fwd("GET", "/public", cert="@stranger")),
    raw("malformed", "revoked certificate", fwd("GET", "/public", cert="@revoked-rita")),
    raw("malformed", "no identity", fwd("GET", "/public")),
    raw(
        "malformed",
        "duplicate certificate header",
        [*fwd("GET", "/public", cert="@alice"), ("X-Forwarded-Tls-Client-Cert", "@alice")],
    ),
]


def _resolve(site_ca, headers):  # type: ignore[no-untyped-def]
    out = []
    for k, v in headers:
        if v.startswith("@"):
            v = site_ca.der_b64(v[1:])
        out.append((k, v))
    return out


@pytest.fixture
def broad(make_authorizer, tmp_path):  # type: ignore[no-untyped-def]
    return make_authorizer(files=broad_files(tmp_path))


def test_controls_are_allowed_and_denied_as_the_policy_says(broad, site_ca) -> None:  # type: ignore[no-untyped-def]
    ok = broad.authorize(_resolve(site_ca, fwd("GET", "/public/docs?q=1", cert="@alice")), "127.0.0.1")
    assert ok[0] == 200
    assert broad.authorize(_resolve(site_ca, fwd("GET", "/admin", cert="@alice")), "127.0.0.1")[0] == 403
    assert (
        broad.authorize(_resolve(site_ca, fwd("GET", "/admin/users", cert="@alice")), "127.0.0.1")[0] == 403
    )
    # Dot segments are resolved, not refused: a harmless one still reaches an allowed path.
    assert (
        broad.authorize(_resolve(site_ca, fwd("GET", "/a/../public", cert="@alice")), "127.0.0.1")[0] == 200
    )


@pytest.mark.parametrize("case", CORPUS, ids=[f"{c.cls}:{c.desc}" for c in CORPUS])
def test_bypass_case_is_not_allowed(case: Case, broad, site_ca) -> None:  # type: ignore[no-untyped-def]
    status, headers = broad.authorize(_resolve(site_ca, case.headers), "127.0.0.1")
    assert status in (401, 403), f"{case.cls}: {case.desc} was answered {status}"
    assert not any(k == "X-User-ID" for k, _ in headers)


def test_every_reference_class_is_covered() -> None:
    classes = {c.cls for c in CORPUS}
    for needed in (
        "dot-segment",
        "encoded-dot",
        "encoded-slash",
        "encoded-backslash",
        "encoded-nul",
        "path-parameter",
        "double-encoding",
        "fragment",
        "trailing-slash",
        "case",
        "query-trick",
        "spoofed-forwarded",
        "underscore-alias",
        "connection-header",
        "malformed",
        "userinfo-host",
    ):
        assert needed in classes


def test_bank_policy_corpus_against_default_deny(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    """The same tricks against the shipped bank policy: a teller never reaches the console API."""
    a = make_authorizer()
    for uri in (
        "/v1/chat-messages/../../console/api/apps",
        "/v1/chat-messages/%2e%2e/%2e%2e/console/api/apps",
        "/v1/chat-messages/..%2f..%2fconsole/api/apps",
        "/v1/datasets/x",
        "/V1/Datasets/x",
        "/models/v1/chat/completions",
    ):
        st, _ = a.authorize(_resolve(site_ca, fwd("POST", uri, cert="@alice")), "127.0.0.1")
        assert st == 403, uri
    assert (
        a.authorize(_resolve(site_ca, fwd("POST", "/v1/chat-messages", cert="@alice")), "127.0.0.1")[0] == 200
    )
