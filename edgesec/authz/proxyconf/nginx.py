"""An nginx config read back: parsed with its ``include`` files, every server judged for mutual TLS and ForwardAuth."""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgesec.authz.headers import (
    fold,
    nginx_client_headers,
)
from edgesec.authz.proxyconf.report import (
    Globber,
    ProxyReport,
    Reader,
    SiteTrust,
    judge_ca_file,
)


@dataclass
class Directive:
    """One nginx directive with its arguments and, for block directives, its children."""

    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class NginxSyntaxError(ValueError):
    """The config cannot be tokenised (unbalanced braces or quotes)."""


def _tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """(token, line, quoted) of an nginx config; ``{``, ``}`` and ``;`` are their own tokens."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            yield c, line, False
            i += 1
        elif c in "\"'":
            start_line, j, buf = line, i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if text[j] == "\n":
                    line += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise NginxSyntaxError(f"unterminated quote starting on line {start_line}")
            yield "".join(buf), start_line, True
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "{};":
                j += 1
            yield text[i:j], line, False
            i = j


def parse_nginx(text: str, file: str) -> list[Directive]:
    """Parse one nginx config file into directives (includes are not expanded here)."""
    stack: list[list[Directive]] = [[]]
    cur: list[tuple[str, int]] = []
    for tok, line, quoted in _tokens(text):
        if not quoted and tok == ";":
            if cur:
                stack[-1].append(Directive(cur[0][0], [t for t, _ in cur[1:]], file, cur[0][1]))
            cur = []
        elif not quoted and tok == "{":
            if not cur:
                raise NginxSyntaxError(f"{file}:{line}: block without a directive name")
            d = Directive(cur[0][0], [t for t, _ in cur[1:]], file, cur[0][1], [])
            stack[-1].append(d)
            assert d.block is not None
            stack.append(d.block)
            cur = []
        elif not quoted and tok == "}":
            if len(stack) == 1 or cur:
                raise NginxSyntaxError(f"{file}:{line}: unexpected '}}'")
            stack.pop()
        else:
            cur.append((tok, line))
    if len(stack) != 1 or cur:
        raise NginxSyntaxError(f"{file}: unbalanced braces or a directive without ';' at the end")
    return stack[0]


def load_nginx(path: str, read: Reader, glob: Globber, _depth: int = 0) -> tuple[list[Directive], list[str]]:
    """Parse ``path`` and expand its ``include`` directives (relative to the main file's directory)."""
    files: list[str] = []
    base = posixpath.dirname(path)

    def load(p: str, depth: int) -> list[Directive]:
        if depth > 10:
            raise NginxSyntaxError(f"{p}: include nesting deeper than 10")
        text = read(p)
        if text is None:
            raise NginxSyntaxError(f"{p}: cannot be read")
        files.append(p)
        return expand(parse_nginx(text, p), depth)

    def expand(ds: list[Directive], depth: int) -> list[Directive]:
        out: list[Directive] = []
        for d in ds:
            if d.name == "include" and d.args and d.block is None:
                pattern = d.args[0] if d.args[0].startswith("/") else posixpath.join(base, d.args[0])
                matches = glob(pattern) if any(ch in pattern for ch in "*?[") else [pattern]
                for m in sorted(matches):
                    if m.endswith("mime.types") or m.endswith(".types"):
                        continue  # type maps carry no routing
                    out.extend(load(m, depth + 1))
                continue
            if d.block is not None:
                d.block = expand(d.block, depth)
            out.append(d)
        return out

    return load(path, _depth), files


def _find(ds: Iterable[Directive], name: str) -> list[Directive]:
    return [d for d in ds if d.name == name]


def _is_loopback_listen(args: list[str]) -> bool:
    addr = args[0] if args else ""
    host = addr.rsplit(":", 1)[0] if ":" in addr and not addr.startswith("[") else addr
    if addr.startswith("["):
        host = addr[1 : addr.index("]")]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_port(args: list[str]) -> int | None:
    addr = args[0] if args else ""
    tail = addr.rsplit(":", 1)[-1] if ":" in addr else addr
    return int(tail) if tail.isdigit() else None


_PASS = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "root", "alias")


def check_nginx(path: str, read: Reader, glob: Globber, trust: SiteTrust) -> ProxyReport:
    """Judge an nginx config: every TLS server requires a site client certificate; every location that
    serves anything runs ``auth_request``, and no client-sent identity header reaches the backend."""
    rep = ProxyReport("nginx", path)
    try:
        tree, rep.files = load_nginx(path, read, glob)
    except NginxSyntaxError as exc:
        rep.fail(path, f"cannot parse: {exc}")
        return rep
    http_blocks = [d for d in tree if d.name == "http" and d.block is not None]
    # A conf.d snippet read on its own holds bare server blocks.
    servers: list[tuple[Directive, list[Directive]]] = []
    for h in http_blocks:
        assert h.block is not None
        servers += [(s, h.block) for s in _find(h.block, "server") if s.block is not None]
    servers += [(s, []) for s in _find(tree, "server") if s.block is not None]
    auth_port = trust.auth_port()
    balancers: set[int] = set()
    for srv, http_ctx in servers:
        assert srv.block is not None
        listens = _find(srv.block, "listen")
        ports = {_listen_port(listen.args) for listen in listens}
        if auth_port is not None and auth_port in ports and all(_is_loopback_listen(x.args) for x in listens):
            # The internal load balancer in front of the ForwardAuth replicas: it is what gets asked.
            balancers.add(id(srv))
            continue
        tls = any("ssl" in listen.args for listen in listens)
        serves = any(True for _ in _serving_locations(srv.block))
        if not serves:
            continue
        if not tls:
            if listens and all(_is_loopback_listen(x.args) for x in listens):
                rep.warn(srv.where, "server on loopback without TLS serves requests (no client certificate)")
            else:
                rep.fail(srv.where, "server without TLS serves requests: no client certificate is required")
        else:
            _nginx_mtls(srv, http_ctx, read, trust, rep)
        _nginx_auth(srv, http_ctx, trust, rep)
    _nginx_hygiene(tree, trust, rep, balancers)
    if not servers:
        rep.warn(path, "no server block found")
    return rep


def _last(ds: Iterable[Directive], name: str) -> Directive | None:
    found = _find(ds, name)
    return found[-1] if found else None


def _nginx_mtls(
    srv: Directive, http_ctx: list[Directive], read: Reader, trust: SiteTrust, rep: ProxyReport
) -> None:
    assert srv.block is not None
    verify = _last(srv.block, "ssl_verify_client") or _last(http_ctx, "ssl_verify_client")
    if verify is None or verify.args[:1] != ["on"]:
        mode = verify.args[0] if verify and verify.args else "off (default)"
        rep.fail((verify or srv).where, f"ssl_verify_client is {mode}: a client certificate is not required")
    ca = _last(srv.block, "ssl_client_certificate") or _last(http_ctx, "ssl_client_certificate")
    if ca is None or not ca.args:
        rep.fail(
            srv.where, "no ssl_client_certificate: client certificates are not checked against the site CA"
        )
    else:
        why = judge_ca_file(ca.args[0], read(ca.args[0]), trust)
        if why:
            rep.fail(ca.where, why)


def _serving_locations(block: list[Directive]) -> Iterator[Directive]:
    for d in block:
        if d.name == "location" and d.block is not None:
            if _find(d.block, "internal"):
                continue
            if any(_find(d.block, n) for n in _PASS):
                yield d
            yield from _serving_locations(d.block)


def _nginx_auth(srv: Directive, http_ctx: list[Directive], trust: SiteTrust, rep: ProxyReport) -> None:
    assert srv.block is not None
    internal = {
        d.args[-1]: d
        for d in _find(srv.block, "location")
        if d.block is not None and _find(d.block, "internal")
    }

    def walk(block: list[Directive], inherited: Directive | None, headers: list[Directive]) -> None:
        own = _last(block, "auth_request")
        ar = own if own is not None else inherited
        # nginx inherits proxy_set_header only into a block that sets none itself.
        hdrs = _find(block, "proxy_set_header") or headers
        for d in block:
            if d.name != "location" or d.block is None or _find(d.block, "internal"):
                continue
            inner = _last(d.block, "auth_request") or ar
            inner_hdrs = _find(d.block, "proxy_set_header") or hdrs
            if any(_find(d.block, n) for n in _PASS):
                rep.routes += 1
                if inner is None or inner.args[:1] == ["off"]:
                    rep.fail(
                        d.where,
                        f"location {' '.join(d.args)} is served without auth_request (no ForwardAuth)",
                    )
                else:
                    _nginx_auth_target(inner, internal, trust, rep)
                    _nginx_identity(d, inner_hdrs, rep, trust)
            walk(d.block, inner, hdrs)

    walk(srv.block, _last(http_ctx, "auth_request"), _find(http_ctx, "proxy_set_header"))


def _nginx_auth_target(
    ar: Directive, internal: dict[str, Directive], trust: SiteTrust, rep: ProxyReport
) -> None:
    target = ar.args[0] if ar.args else ""
    loc = internal.get(target)
    if loc is None or loc.block is None:
        rep.warn(ar.where, f"auth_request {target}: no internal location of that name in this server")
        return
    pp = _last(loc.block, "proxy_pass")
    if pp is None or not pp.args:
        rep.fail(loc.where, f"auth location {target} does not proxy_pass to the ForwardAuth service")
        return
    if trust.auth_url:
        want = urlsplit(trust.auth_url)
        got = urlsplit(pp.args[0])
        if (got.hostname, got.port) != (want.hostname, want.port) and not _is_upstream_name(got.hostname):
            rep.warn(
                pp.where,
                f"auth location sends to {pp.args[0]}, not the configured [authz] url {trust.auth_url}",
            )


def _is_upstream_name(host: str | None) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host != "localhost" and "." not in host
    return False


def _nginx_identity(loc: Directive, effective: list[Directive], rep: ProxyReport, trust: SiteTrust) -> None:
    """The backend must get authz's identity headers, never the client's: every protected header must be
    set explicitly (``""`` sends none); its underscore spellings are dropped by nginx itself."""
    assert loc.block is not None
    if not _find(loc.block, "proxy_pass"):
        return
    set_headers = {fold(d.args[0]) for d in effective if d.args}
    missing = [h for h in trust.strip() if "_" not in h and h != "Connection" and fold(h) not in set_headers]
    if missing:
        rep.fail(
            loc.where,
            f"location {' '.join(loc.args)} passes client-sent {', '.join(missing)} to the backend "
            '(set the identity from auth_request_set, the others to "")',
        )


def _nginx_hygiene(tree: list[Directive], trust: SiteTrust, rep: ProxyReport, skip: set[int]) -> None:
    """Settings that let a client header through whatever the locations set: underscore spellings kept
    (``underscores_in_headers on`` or ``ignore_invalid_headers off``), or a protected header copied from
    the client's own (``proxy_set_header X-User-ID $http_x_user_id``)."""
    protected = trust.protected()

    def walk(ds: list[Directive]) -> None:
        for d in ds:
            if d.name == "underscores_in_headers" and d.args[:1] == ["on"]:
                rep.fail(
                    d.where,
                    "underscores_in_headers on: X_User_ID reaches a backend that reads it as X-User-ID",
                )
            elif d.name == "ignore_invalid_headers" and d.args[:1] == ["off"]:
                rep.fail(
                    d.where,
                    "ignore_invalid_headers off: X_User_ID reaches a backend that reads it as X-User-ID",
                )
            elif d.name in ("proxy_set_header", "auth_request_set", "set", "fastcgi_param", "uwsgi_param"):
                copied = [h for a in d.args[1:] for h in nginx_client_headers(a) if h in protected]
                if copied:
                    rep.fail(
                        d.where,
                        f"{d.name} {' '.join(d.args[:1])} copies the client's own {', '.join(copied)}: "
                        "a client chooses it",
                    )
            if d.block is not None and id(d) not in skip:  # skip: the internal balancer between proxies
                walk(d.block)

    walk(tree)
