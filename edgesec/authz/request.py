"""The forwarded request: read the proxy's headers and canonicalize the URI before any policy match.

Every rule here fails closed. A proxy sends the original method, URI and host in headers
(``X-Forwarded-Method``/``-Uri``/``-Host``/``-Proto`` from Traefik and Caddy, ``X-Original-Method``/``-URI``
from nginx). What reaches the policy is the *canonical* path: unreserved percent-escapes decoded, dot
segments resolved, ``//`` collapsed. Whatever a backend could read in two ways is refused rather than
guessed at: encoded ``/`` ``\\`` ``?`` ``#`` ``;`` ``%`` and NUL, path parameters, raw control characters,
duplicated or conflicting headers, underscore aliases of the headers we read, and a ``Connection`` header
that asks a proxy to drop one of them (the classes of public forward-auth bypasses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from edgesec.authz.headers import fold

__all__ = [
    "READ_HEADERS",
    "ForwardedRequest",
    "RequestRejected",
    "canonical_path",
    "collect_headers",
    "parse_forwarded",
]


class RequestRejected(Exception):
    """The forwarded request is missing, malformed or ambiguous: always a denial.

    ``reason`` is a short machine-readable class (``encoded-slash``, ``dot-segment``...) for the audit
    event; the message says what was seen.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# Headers whose meaning we rely on. A second copy, an underscore alias (``X_Forwarded_Uri``) or a
# ``Connection`` token naming one of them is ambiguity a proxy or backend could resolve differently.
FORWARDED = ("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto")
ORIGINAL = ("x-original-method", "x-original-uri")
READ_HEADERS = frozenset(
    (
        *FORWARDED,
        *ORIGINAL,
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-for",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-tls-client-cert",
        "x-forwarded-tls-client-cert-info",
        "authorization",
        "cookie",
        "host",
        "connection",
    )
)

_LIST_HEADERS = {"cookie": "; ", "x-forwarded-for": ", "}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Escapes that decode to a character with a path meaning, or to another escape (double encoding).
_FORBIDDEN_ESCAPES = {
    "2F": "encoded-slash",
    "5C": "encoded-backslash",
    "00": "encoded-nul",
    "3B": "path-parameter",
    "3F": "encoded-query",
    "23": "fragment",
    "25": "double-encoding",
}
# RFC 3986 pchar minus ';' (path parameters are refused), '%' handled as escapes, plus the characters
# browsers leave unescaped in a path (WHATWG URL: '|', '^', '[', ']'), which no proxy or backend treats as
# a separator.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/%|^\[\]]*")
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?")
_MAX_URI = 8192


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """The canonical request a decision is made about."""

    method: str
    path: str
    query: str
    host: str | None
    proto: str | None
    raw_uri: str
    source: str  # "forwarded" (Traefik, Caddy) or "original" (nginx)


def collect_headers(raw: Iterable[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    """Lower-case header map, and the names that came more than once.

    Underscore spellings of a header we read are refused here: nginx drops them but other proxies
    and WSGI stacks fold ``_`` into ``-``, so one client header could become another.
    """
    out: dict[str, str] = {}
    dup: set[str] = set()
    for name, value in raw:
        key = name.lower()
        if "_" in key and fold(key) in READ_HEADERS:
            raise RequestRejected("underscore-alias", f"underscore alias header {name!r}")
        if key in out:
            joiner = _LIST_HEADERS.get(key)
            if joiner is not None:
                # List-valued by definition (HTTP/2 splits cookies; proxies may add a hop line).
                out[key] = out[key] + joiner + value
                continue
            dup.add(key)
            # Keep the first; the caller refuses duplicates of the headers it reads.
            continue
        out[key] = value
    return out, dup


def _check_ascii(value: str, what: str) -> None:
    # Visible ASCII is exactly: ASCII, printable (0x20-0x7E) and no space. Three C scans instead of a
    # Python loop over every character of the URI.
    if value.isascii() and value.isprintable() and " " not in value:
        return
    for ch in value:
        o = ord(ch)
        if o < 0x21 or o > 0x7E:
            raise RequestRejected(
                "control-character", f"{what} holds a control, space or non-ASCII character"
            )


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _decode_escape(m: re.Match[str]) -> str:
    up = m.group(1).upper()
    cls = _FORBIDDEN_ESCAPES.get(up)
    if cls is not None:
        raise RequestRejected(cls, f"%{up} in the path")
    code = int(up, 16)
    if code < 0x20 or code == 0x7F:
        raise RequestRejected("encoded-control", f"%{up} (control character) in the path")
    c = chr(code)
    return c if c in _UNRESERVED else "%" + up


def canonical_path(path: str) -> str:
    """The canonical form of a raw (still escaped) absolute path; raises :class:`RequestRejected`.

    Unreserved escapes are decoded (``%61`` is ``a``, ``%2e`` is ``.``, so ``%2e%2e`` is a dot
    segment), other escapes are kept with upper-case hex; then dot segments are resolved and
    empty segments dropped, as RFC 3986 5.2.4 and the proxies' own normalisation do.
    """
    if not path.startswith("/"):
        raise RequestRejected("not-origin-form", "the forwarded URI does not start with '/'")
    if "\\" in path:
        raise RequestRejected("backslash", "backslash in the path")
    if ";" in path:
        raise RequestRejected("path-parameter", "';' path parameter in the path")
    if "#" in path:
        raise RequestRejected("fragment", "'#' fragment in the forwarded URI")
    if not _PATH_CHARS.fullmatch(path):
        raise RequestRejected("bad-character", "the path holds characters outside RFC 3986")
    if "%" in path:
        if _BAD_ESCAPE.search(path):
            raise RequestRejected("bad-escape", "malformed percent-escape in the path")
        decoded = _ESCAPE.sub(_decode_escape, path)
        try:
            # The escaped bytes must be UTF-8: overlong forms (%C0%AE is '.', %C0%AF is '/', %E0%80%AE)
            # and stray bytes are text to one component and a separator to another.
            unquote_to_bytes(decoded).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRejected(
                "invalid-utf8", "the path's percent-escapes are not UTF-8 (overlong or stray bytes)"
            ) from None
    else:
        decoded = path
    if "/." not in decoded and "//" not in decoded:
        return decoded  # already canonical: the common case costs two scans
    segments: list[str] = []
    for seg in decoded.split("/")[1:]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    trailing = decoded.endswith("/") or decoded.endswith("/.") or decoded.endswith("/..")
    result = "/" + "/".join(segments)
    if trailing and segments:
        result += "/"
    return result


def _split_uri(uri: str) -> tuple[str, str]:
    if len(uri) > _MAX_URI:
        raise RequestRejected("too-long", "the forwarded URI is too long")
    _check_ascii(uri, "the forwarded URI")
    if "#" in uri:
        raise RequestRejected("fragment", "'#' fragment in the forwarded URI")
    # The query never takes part in the decision, so any visible ASCII is accepted there (browsers
    # send '{', '|' and '^' unescaped); the path before the first '?' is held to RFC 3986.
    path, _, query = uri.partition("?")
    return path, query


def _host(value: str | None) -> str | None:
    if value is None:
        return None
    _check_ascii(value, "the forwarded host")
    host = value.lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not re.fullmatch(r":[0-9]{1,5}", host[end + 1 :])):
            raise RequestRejected("bad-host", "malformed forwarded host")
        return host[: end + 1]
    name, sep, port = host.partition(":")
    if sep and not re.fullmatch(r"[0-9]{1,5}", port):
        raise RequestRejected("bad-host", "malformed port in the forwarded host")
    if not _HOST.fullmatch(name) or len(name) > 253:
        raise RequestRejected("bad-host", "malformed forwarded host")
    return name.rstrip(".")


def parse_forwarded(headers: Mapping[str, str], duplicates: set[str]) -> ForwardedRequest:
    """Read the original request from the proxy's headers; raises :class:`RequestRejected`."""
    for name in duplicates:
        if name in READ_HEADERS:
            raise RequestRejected("duplicate-header", f"header {name} sent more than once")
    conn = headers.get("connection")
    if conn is not None:
        for token in conn.split(","):
            t = fold(token)
            if t in READ_HEADERS or t.startswith(("x-forwarded-", "x-original-")):
                raise RequestRejected(
                    "connection-header", f"Connection header names {t!r}, which a proxy would drop"
                )
    for name in ("x-original-url", "x-rewrite-url"):
        if name in headers:
            raise RequestRejected("rewrite-header", f"{name} is not accepted (rewrite override)")
    if "x-forwarded-prefix" in headers:
        raise RequestRejected(
            "forwarded-prefix", "X-Forwarded-Prefix is not accepted: put forward auth before prefix stripping"
        )
    has_fwd = "x-forwarded-uri" in headers or "x-forwarded-method" in headers
    has_orig = "x-original-uri" in headers or "x-original-method" in headers
    if has_fwd and has_orig:
        raise RequestRejected(
            "conflicting-headers", "both X-Forwarded-Uri/-Method and X-Original-URI/-Method were sent"
        )
    if has_orig:
        source = "original"
        method = headers.get("x-original-method")
        uri = headers.get("x-original-uri")
    else:
        source = "forwarded"
        method = headers.get("x-forwarded-method")
        uri = headers.get("x-forwarded-uri")
    if not method:
        raise RequestRejected("missing-method", "no forwarded method header")
    if not uri:
        raise RequestRejected("missing-uri", "no forwarded URI header")
    if method not in METHODS:
        raise RequestRejected("bad-method", "the forwarded method is not a standard upper-case HTTP method")
    proto = headers.get("x-forwarded-proto")
    if proto is not None and proto not in ("http", "https"):
        raise RequestRejected("bad-proto", "X-Forwarded-Proto is neither http nor https")
    port = headers.get("x-forwarded-port")
    if port is not None and not re.fullmatch(r"[0-9]{1,5}", port):
        raise RequestRejected("bad-port", "X-Forwarded-Port is not a port number")
    raw_path, query = _split_uri(uri)
    path = canonical_path(raw_path)
    return ForwardedRequest(
        method=method,
        path=path,
        query=query,
        host=_host(headers.get("x-forwarded-host")),
        proto=proto,
        raw_uri=uri,
        source=source,
    )
