"""URI canonicalization and forwarded-header parsing, unit and property tests."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesec.authz.request import RequestRejected, canonical_path, collect_headers, parse_forwarded


@pytest.mark.parametrize(
    ("raw", "canon"),
    [
        ("/", "/"),
        ("/v1/chat-messages", "/v1/chat-messages"),
        ("/a/b/../c", "/a/c"),
        ("/a/./b", "/a/b"),
        ("/../../a", "/a"),
        ("/a//b///c", "/a/b/c"),
        ("/a/b/", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/%61%64min", "/admin"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E./b", "/b"),
        ("/x%7e", "/x~"),
        ("/x%20y", "/x%20y"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/.well-known/x", "/.well-known/x"),
    ],
)
def test_canonical_examples(raw: str, canon: str) -> None:
    assert canonical_path(raw) == canon


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("a/b", "not-origin-form"),
        ("/a%2fb", "encoded-slash"),
        ("/a%5cb", "encoded-backslash"),
        ("/a\\b", "backslash"),
        ("/a%00", "encoded-nul"),
        ("/a;b", "path-parameter"),
        ("/a%3bb", "path-parameter"),
        ("/a%252e", "double-encoding"),
        ("/a%23", "fragment"),
        ("/a%3f", "encoded-query"),
        ("/a%0d", "encoded-control"),
        ("/a%", "bad-escape"),
        ("/a%g0", "bad-escape"),
        ("/a b", "bad-character"),
        ('/a"b', "bad-character"),
        # Percent-escapes that are not UTF-8: overlong '.' and '/' (a lenient decoder's dot segment or
        # separator), a stray continuation byte, a lone lead byte, an encoded surrogate.
        ("/v1/chat-messages/%c0%ae%c0%ae/console/api/apps", "invalid-utf8"),
        ("/v1/%c0%af..%c0%afconsole", "invalid-utf8"),
        ("/a/%e0%80%ae%e0%80%ae/b", "invalid-utf8"),
        ("/a/%f0%80%80%af", "invalid-utf8"),
        ("/a%80", "invalid-utf8"),
        ("/caf%c3", "invalid-utf8"),
        ("/a%ed%a0%80", "invalid-utf8"),
    ],
)
def test_canonical_refusals(raw: str, reason: str) -> None:
    with pytest.raises(RequestRejected) as exc:
        canonical_path(raw)
    assert exc.value.reason == reason


PATHS = st.lists(
    st.one_of(
        st.sampled_from(
            ["a", "b", "..", ".", "", "%2e", "%2E%2e", "%41", "x%20y", "%7E", "%c3%a9", ".hidden"]
        ),
        st.text(alphabet="abc.%2eE7f", max_size=5),
    ),
    max_size=8,
).map(lambda segs: "/" + "/".join(segs))


@given(st.binary(min_size=1, max_size=6))
def test_escaped_bytes_pass_exactly_when_they_are_utf8(raw: bytes) -> None:
    path = "/x" + "".join(f"%{b:02X}" for b in raw)
    try:
        canonical_path(path)
        reason = None
    except RequestRejected as exc:
        reason = exc.reason
    # Bytes with a path meaning or control characters are refused for that, whatever the encoding.
    special = any(b < 0x20 or b == 0x7F or chr(b) in "/\\;?#%" for b in raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert reason == "invalid-utf8" or (reason is not None and special), (raw, reason)
        return
    assert reason is None or (special and reason != "invalid-utf8"), (raw, reason)


@given(PATHS)
def test_canonical_is_idempotent_and_clean(raw: str) -> None:
    try:
        c = canonical_path(raw)
    except RequestRejected:
        return
    assert canonical_path(c) == c
    assert c.startswith("/")
    assert "//" not in c
    assert not re.search(r"/\.\.?(/|$)", c)
    # Whatever a backend decodes, it reaches the same resource (ignoring a trailing slash).
    lenient = posixpath.normpath(re.sub("/+", "/", unquote(raw)))
    lenient = "/" if lenient in (".", "//") else lenient
    assert unquote(c).rstrip("/") == lenient.rstrip("/") or (lenient == "/" and c == "/")


def test_header_collection_and_sources() -> None:
    h, dup = collect_headers([("X-Forwarded-Uri", "/a"), ("x-forwarded-uri", "/b"), ("Accept", "*/*")])
    assert dup == {"x-forwarded-uri"} and h["x-forwarded-uri"] == "/a"
    with pytest.raises(RequestRejected):
        parse_forwarded(h, dup)
    with pytest.raises(RequestRejected):
        collect_headers([("X_Original_URI", "/")])
    # List-valued headers are joined, not refused (HTTP/2 sends one cookie per line).
    h, dup = collect_headers(
        [
            ("Cookie", "a=1"),
            ("cookie", "b=2"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
        ]
    )
    assert not dup and h["cookie"] == "a=1; b=2" and h["x-forwarded-for"] == "10.0.0.1, 10.0.0.2"
    h, dup = collect_headers([("X-Original-Method", "GET"), ("X-Original-URI", "/a/../b?x=1")])
    req = parse_forwarded(h, dup)
    assert (req.method, req.path, req.query, req.source) == ("GET", "/b", "x=1", "original")
    h, dup = collect_headers([("X-Original-Method", "GET"), ("X-Original-URI", '/b?q={"a":[1|2]}^')])
    assert parse_forwarded(h, dup).query == 'q={"a":[1|2]}^'  # unescaped but harmless in a query
    h, dup = collect_headers(
        [
            ("X-Forwarded-Method", "PUT"),
            ("X-Forwarded-Uri", "/x"),
            ("X-Forwarded-Host", "Dify.Branch.Local:8443"),
        ]
    )
    req = parse_forwarded(h, dup)
    assert req.host == "dify.branch.local" and req.source == "forwarded"
    h, dup = collect_headers(
        [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "/"), ("X-Forwarded-Host", "[::1]:80")]
    )
    assert parse_forwarded(h, dup).host == "[::1]"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=12))
def test_visible_ascii_check_refuses_exactly_the_characters_outside_0x21_0x7e(value: str) -> None:
    from edgesec.authz.request import _check_ascii

    visible = all(0x21 <= ord(c) <= 0x7E for c in value)
    try:
        _check_ascii(value, "the value")
    except RequestRejected as exc:
        assert not visible
        assert exc.reason == "control-character"
    else:
        assert visible
