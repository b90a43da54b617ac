"""Read a site's proxy configuration back and judge it: is every route behind ForwardAuth and mutual TLS?

The generators in :mod:`edgesec.authz.gen` write configs that are right; sites edit them afterwards. These
functions parse what a proxy actually runs with -- an nginx config with its ``include`` files, a
Caddyfile, a Traefik dynamic (and static) config -- and report each way a request could reach the app
without the site's client certificate or without a ForwardAuth decision. They are pure functions of file
contents (a ``read`` callable), so the checks feed them through the probe and tests feed them text.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import posixpath
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgesec.authz.headers import (
    CERT_HEADER_DEFAULT,
    IDENTITY_DEFAULT,
    TRAEFIK_SETS,
    fold,
    nginx_client_headers,
    strip_list,
)

Reader = Callable[[str], str | None]
Globber = Callable[[str], list[str]]

# Headers authz answers with and a client must never be able to set itself (one definition: authz.headers).
IDENTITY_HEADERS = IDENTITY_DEFAULT
CERT_HEADER = CERT_HEADER_DEFAULT


@dataclass(frozen=True)
class Issue:
    """One way the proxy config falls short: ``level`` is ``fail`` or ``warn``; ``where`` is ``file:line``."""

    level: str
    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "where": self.where, "message": self.message}


@dataclass
class ProxyReport:
    """What was read and what is wrong with it."""

    kind: str
    path: str
    issues: list[Issue] = field(default_factory=list)
    routes: int = 0
    files: list[str] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        self.issues.append(Issue("fail", where, message))

    def warn(self, where: str, message: str) -> None:
        self.issues.append(Issue("warn", where, message))

    @property
    def failed(self) -> bool:
        return any(i.level == "fail" for i in self.issues)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "routes": self.routes,
            "files": self.files,
            "issues": [i.to_json() for i in self.issues],
        }


@dataclass(frozen=True)
class SiteTrust:
    """What the proxy config is judged against: the site CA certificates and the ForwardAuth address."""

    ca_fingerprints: frozenset[str]
    auth_url: str | None = None
    identity_headers: tuple[str, ...] = IDENTITY_HEADERS
    cert_header: str = CERT_HEADER

    @classmethod
    def from_pem(
        cls,
        pem: str | None,
        auth_url: str | None,
        headers: Sequence[str] = IDENTITY_HEADERS,
        cert_header: str = CERT_HEADER,
    ) -> SiteTrust:
        return cls(frozenset(fingerprints(pem or "")), auth_url, tuple(headers), cert_header)

    def strip(self, keep: Sequence[str] = ()) -> tuple[str, ...]:
        """Every client header spelling the proxy must delete (:func:`edgesec.authz.headers.strip_list`)."""
        return strip_list(self.identity_headers, self.cert_header, keep)

    def protected(self) -> set[str]:
        """The folded names of every protected header."""
        return {fold(h) for h in self.strip()} - {"connection"}

    def auth_port(self) -> int | None:
        if not self.auth_url:
            return None
        u = urlsplit(self.auth_url)
        return u.port or (443 if u.scheme == "https" else 80)


def fingerprints(pem: str) -> list[str]:
    """SHA-256 fingerprints of every certificate in a PEM text (unparsable blocks are skipped)."""
    out = []
    for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]:
        body = "-----BEGIN CERTIFICATE-----" + block.split("-----END CERTIFICATE-----")[0]
        try:
            cert = x509.load_pem_x509_certificate((body + "-----END CERTIFICATE-----\n").encode())
        except ValueError:
            continue
        out.append(hashlib.sha256(cert.public_bytes(_DER)).hexdigest())
    return out


_DER = Encoding.DER


def judge_ca_file(path: str, text: str | None, trust: SiteTrust) -> str | None:
    """Why the client CA file ``path`` does not verify against the site CA; ``None`` when it does."""
    if text is None:
        return f"client CA file {path} cannot be read"
    if not trust.ca_fingerprints:
        return None  # nothing to compare with: the caller reports the missing trust bundle once
    found = fingerprints(text)
    if not found:
        return f"client CA file {path} holds no certificate"
    foreign = [f for f in found if f not in trust.ca_fingerprints]
    if foreign:
        return (
            f"client CA file {path} trusts {len(foreign)} certificate(s) that are not the site CA: "
            "any client they issue is accepted"
        )
    return None


# -- nginx ---------------------------------------------------------------------------------------------


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


# -- Caddy ---------------------------------------------------------------------------------------------


@dataclass
class CaddyNode:
    """A Caddyfile line (directive and arguments) with its block."""

    args: list[str]
    line: int
    block: list[CaddyNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.args[0] if self.args else ""


def parse_caddyfile(text: str) -> list[CaddyNode]:
    """A Caddyfile as nested nodes (enough to judge it: no snippets, env or placeholders expanded)."""
    root: list[CaddyNode] = []
    stack: list[list[CaddyNode]] = [root]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "" if raw.lstrip().startswith("#") else raw.strip()
        if " #" in line:
            line = line[: line.index(" #")].strip()
        if not line:
            continue
        opens = line.endswith("{")
        if opens:
            line = line[:-1].strip()
        if line == "}":
            if len(stack) == 1:
                raise ValueError(f"line {lineno}: unexpected '}}'")
            stack.pop()
            continue
        node = CaddyNode(line.split(), lineno)
        if line or opens:
            stack[-1].append(node)
        if opens:
            stack.append(node.block)
    if len(stack) != 1:
        raise ValueError("unbalanced braces")
    return root


_CADDY_HANDLERS = ("reverse_proxy", "file_server", "respond", "php_fastcgi", "static_response")


def check_caddy(path: str, read: Reader, trust: SiteTrust) -> ProxyReport:
    """Judge a Caddyfile: every site requires and verifies a site client certificate, strips client-sent
    identity headers, and runs ``forward_auth`` before whatever serves the request."""
    rep = ProxyReport("caddy", path, files=[path])
    text = read(path)
    if text is None:
        rep.fail(path, "cannot be read")
        return rep
    try:
        nodes = parse_caddyfile(text)
    except ValueError as exc:
        rep.fail(path, f"cannot parse: {exc}")
        return rep
    # Caddy's phone-home equivalent: automatic HTTPS asks a public ACME CA for certificates.
    glob_opts = [c for n in nodes if not n.args for c in n.block]
    if not any(c.args[:2] == ["auto_https", "off"] for c in glob_opts):
        rep.warn(
            path,
            "automatic HTTPS is not off (global option auto_https off): Caddy may contact a public ACME CA "
            "from a sealed site",
        )
    # The global options block has no address; "(name)" blocks are snippets.
    for site in nodes:
        if not site.args or site.name.startswith("("):
            continue
        where = f"{path}:{site.line}"
        handlers = list(_caddy_find(site.block, _CADDY_HANDLERS))
        if not handlers:
            continue
        rep.routes += 1
        if site.name.startswith("http://"):
            rep.fail(where, f"site {site.name} is plain HTTP: no client certificate is required")
        else:
            _caddy_tls(site, path, read, trust, rep)
        _caddy_auth(site, path, trust, rep)
    return rep


def _few(names: Sequence[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _caddy_find(block: list[CaddyNode], names: Sequence[str]) -> Iterator[CaddyNode]:
    for n in block:
        if n.name in names:
            yield n
        if n.block and n.name not in names:
            yield from _caddy_find(n.block, names)


def _caddy_tls(site: CaddyNode, path: str, read: Reader, trust: SiteTrust, rep: ProxyReport) -> None:
    where = f"{path}:{site.line}"
    tls = [n for n in site.block if n.name == "tls"]
    client = [c for t in tls for c in t.block if c.name == "client_auth"]
    if not client:
        rep.fail(where, f"site {site.name} has no tls client_auth: a client certificate is not required")
        return
    ca = client[-1]
    opts = {c.name: c.args[1:] for c in ca.block}
    mode = (opts.get("mode") or ["request"])[0]
    if mode != "require_and_verify":
        rep.fail(f"{path}:{ca.line}", f"client_auth mode is {mode}, not require_and_verify")
    files = [c for c in ca.block if c.name == "trusted_ca_cert_file" and len(c.args) > 1]
    inline = [c for c in ca.block if c.name == "trusted_ca_cert" and len(c.args) > 1]
    if not files and not inline:
        rep.fail(
            f"{path}:{ca.line}",
            "client_auth names no trusted_ca_cert(_file): the site CA is not what verifies clients",
        )
    for f in files:
        text = read(f.args[1])
        why = judge_ca_file(f.args[1], text, trust)
        if why:
            rep.fail(f"{path}:{f.line}", why)
        elif text is not None and len(fingerprints(text)) > 1:
            rep.warn(
                f"{path}:{f.line}",
                f"Caddy 2.6 reads only the first certificate of {f.args[1]}: a client that sends only its leaf "
                "is refused (edgesec authz gen caddy names every certificate with trusted_ca_cert)",
            )
    for c in inline:
        pem = "-----BEGIN CERTIFICATE-----\n" + c.args[1] + "\n-----END CERTIFICATE-----\n"
        why = judge_ca_file(f"trusted_ca_cert on line {c.line}", pem, trust)
        if why:
            rep.fail(f"{path}:{c.line}", why)


def _caddy_auth(site: CaddyNode, path: str, trust: SiteTrust, rep: ProxyReport) -> None:
    """forward_auth before every handler, in a route that first strips the identity headers."""

    def check_seq(block: list[CaddyNode], ordered: bool) -> None:
        authed = False
        stripped: set[str] = set()
        for n in block:
            if n.name == "route" or n.name == "handle" or n.name == "handle_path":
                check_seq(n.block, True)
                continue
            if n.name == "request_header" and len(n.args) >= 2 and n.args[1].startswith("-"):
                stripped.add(n.args[1][1:].lower())
            if n.name == "forward_auth":
                authed = True
                # Go proxies store and delete a header by its canonical name: case does not matter.
                missing = [h for h in trust.strip() if h.lower() not in stripped]
                if not ordered:
                    rep.fail(
                        f"{path}:{n.line}",
                        "forward_auth outside a route block: Caddy before 2.11.2 passes client-sent identity "
                        "headers on, and a site-level strip would also delete authz's",
                    )
                elif missing:
                    rep.fail(
                        f"{path}:{n.line}",
                        f"headers {_few(missing)} are not stripped before forward_auth: a client can send its "
                        "own (an underscore spelling is the same header to a WSGI backend)",
                    )
                if trust.auth_url and len(n.args) > 1:
                    want, got = (
                        urlsplit(trust.auth_url),
                        urlsplit(n.args[1] if "://" in n.args[1] else "http://" + n.args[1]),
                    )
                    if (got.hostname, got.port) != (want.hostname, want.port):
                        rep.warn(
                            f"{path}:{n.line}",
                            f"forward_auth asks {n.args[1]}, not [authz] url {trust.auth_url}",
                        )
            if n.name in _CADDY_HANDLERS and not authed:
                rep.fail(f"{path}:{n.line}", f"{n.name} serves requests with no forward_auth before it")

    has_auth = any(True for _ in _caddy_find(site.block, ("forward_auth",)))
    if not has_auth:
        rep.fail(f"{path}:{site.line}", f"site {site.name} has no forward_auth: requests are not authorised")
        return
    check_seq(site.block, False)


# -- Traefik -------------------------------------------------------------------------------------------


def load_structured(path: str, text: str) -> Any:
    """A Traefik config file as data: TOML, JSON or YAML (YAML needs PyYAML)."""
    if path.endswith(".toml"):
        return tomllib.loads(text)
    if path.endswith(".json"):
        return json.loads(text)
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - PyYAML ships with every Traefik-using distro we know
        raise ValueError("reading YAML needs PyYAML (pip install pyyaml), or use a TOML file") from None
    return yaml.safe_load(text)


_OPEN_NETS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _d(x: Any) -> dict[str, Any]:
    """``x`` if it is a mapping, else empty: a config of the wrong shape is judged as missing that part."""
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def check_traefik(
    dynamic: Sequence[str], static: str | None, read: Reader, trust: SiteTrust, cwd: str = "/"
) -> ProxyReport:
    """Judge Traefik configs: every router goes through a forwardAuth middleware; ``trustForwardHeader``
    only with an entrypoint that trusts named IPs; every router's TLS options require and verify a
    client certificate from the site CA (a relative ``caFiles`` entry is Traefik's ``cwd``'s)."""
    rep = ProxyReport("traefik", ", ".join(dynamic), files=list(dynamic))
    routers: dict[str, tuple[str, dict[str, Any]]] = {}
    middlewares: dict[str, Any] = {}
    tls_options: dict[str, Any] = {}
    for p in dynamic:
        doc = _load_or_report(p, read, rep, "fail")
        if doc is None:
            continue
        http = _d(_d(doc).get("http"))
        for name, r in _d(http.get("routers")).items():
            routers[str(name)] = (p, _d(r))
        middlewares.update(_d(http.get("middlewares")))
        tls_options.update(_d(_d(_d(doc).get("tls")).get("options")))
        for proto in ("tcp", "udp"):
            for name in _d(_d(_d(doc).get(proto)).get("routers")):
                rep.fail(
                    f"{p}: {proto} router {name}",
                    "TCP and UDP routers cannot run forwardAuth (or verify a site client certificate for "
                    "the app): their connections reach the service without an authz decision",
                )
    entry: dict[str, Any] = {}
    if static is not None:
        sdoc = _load_or_report(static, read, rep, "warn")
        entry = _d(_d(sdoc).get("entryPoints"))
        if sdoc is not None:
            _traefik_telemetry(static, _d(_d(sdoc).get("global")), rep)
            _traefik_unjudged(static, _d(sdoc), rep)
    for name, (p, r) in sorted(routers.items()):
        rep.routes += 1
        where = f"{p}: router {name}"
        flat = [m for x in _l(r.get("middlewares")) for m in _flatten(str(x), middlewares, 0)]
        fas = [_d(m["forwardAuth"]) for m in flat if "forwardAuth" in m]
        if not fas:
            rep.fail(where, "no forwardAuth middleware: requests reach the service without an authz decision")
        else:
            first = next(i for i, m in enumerate(flat) if "forwardAuth" in m)
            deleted = {
                str(k).lower()
                for m in flat[:first]
                for k, v in _d(_d(m.get("headers")).get("customRequestHeaders")).items()
                if v == ""
            }
            missing = [h for h in trust.strip(TRAEFIK_SETS) if h.lower() not in deleted]
            if missing:
                rep.fail(
                    where,
                    f'headers {_few(missing)} are not deleted (headers.customRequestHeaders "") before '
                    "forwardAuth: a client can send its own (an underscore spelling is the same header to a "
                    "WSGI backend)",
                )
        if trust.auth_url:
            want = urlsplit(trust.auth_url)
            for fa in fas:
                addr = str(fa.get("address") or "")
                got = urlsplit(addr)
                if (got.hostname, got.port) != (want.hostname, want.port):
                    rep.warn(
                        where, f"forwardAuth.address {addr or '(none)'} is not [authz] url {trust.auth_url}"
                    )
        if any(fa.get("trustForwardHeader") is True for fa in fas):
            _traefik_trusted(where, r, entry, static, rep)
        tls = r.get("tls")
        if tls is None:
            rep.fail(where, "no tls: the router serves plain HTTP without a client certificate")
            continue
        opt_name = str(_d(tls).get("options") or "default").split("@", 1)[0]
        opt = tls_options.get(opt_name)
        if not isinstance(opt, dict):
            rep.fail(
                where,
                f"TLS options {opt_name!r} are not defined: Traefik's default does not ask for a client certificate",
            )
            continue
        ca = _d(opt.get("clientAuth"))
        if ca.get("clientAuthType") != "RequireAndVerifyClientCert":
            rep.fail(
                where,
                f"TLS options {opt_name}: clientAuthType is {ca.get('clientAuthType') or 'NoClientCert'}, "
                "not RequireAndVerifyClientCert",
            )
        files = _l(ca.get("caFiles"))
        if not files:
            rep.fail(
                where, f"TLS options {opt_name}: no caFiles: clients are not verified against the site CA"
            )
        for f in files:
            f = posixpath.join(cwd, str(f))
            why = judge_ca_file(f, read(f), trust)
            if why:
                rep.fail(where, why)
    if not routers:
        rep.warn(rep.path, "no HTTP routers found")
    return rep


def _load_or_report(path: str, read: Reader, rep: ProxyReport, level: str) -> Any:
    text = read(path)
    if text is None:
        rep.issues.append(Issue(level, path, "cannot be read"))
        return None
    try:
        return load_structured(path, text)
    except Exception as exc:  # noqa: BLE001 - YAML, TOML and JSON errors alike: one line, never a crash
        rep.issues.append(
            Issue(level, path, f"cannot parse: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        )
        return None


def _flatten(name: str, middlewares: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    """A router's middleware ``name`` as the definitions it runs, in order (chains expanded)."""
    m = _d(middlewares.get(name.split("@", 1)[0]))
    if "chain" in m:
        if depth >= 5:
            return []
        subs = _l(_d(m["chain"]).get("middlewares"))
        return [x for sub in subs for x in _flatten(str(sub), middlewares, depth + 1)]
    return [m] if m else []


def _traefik_telemetry(static: str, glob_: dict[str, Any], rep: ProxyReport) -> None:
    """A sealed site's proxy never phones home: Traefik's update check is on unless turned off."""
    if glob_.get("checkNewVersion") is not False:
        rep.fail(
            static,
            "global.checkNewVersion is not false (Traefik's default is true): the proxy asks the internet "
            "for new versions",
        )
    if glob_.get("sendAnonymousUsage") is True:
        rep.fail(static, "global.sendAnonymousUsage is true: the proxy reports usage to the internet")


def _traefik_unjudged(static: str, sdoc: dict[str, Any], rep: ProxyReport) -> None:
    """What serves requests past the file provider's routers: another provider's routers (not read here)
    and ``api.insecure`` (the API and dashboard on entrypoint ``traefik``, no forward auth)."""
    for prov in _d(sdoc.get("providers")):
        if prov not in ("file", "providersThrottleDuration"):
            rep.warn(
                static,
                f"providers.{prov} is enabled: its routers are not judged (only the file provider's are)",
            )
    if _d(sdoc.get("api")).get("insecure") is True:
        rep.fail(
            static,
            "api.insecure is true: Traefik serves its API and dashboard on entrypoint traefik without forward "
            "auth or a client certificate",
        )


def _traefik_trusted(
    where: str, router: dict[str, Any], entry: dict[str, Any], static: str | None, rep: ProxyReport
) -> None:
    eps = [str(e) for e in _l(router.get("entryPoints"))] or list(entry)
    if static is None:
        rep.warn(
            where,
            "trustForwardHeader is true and no static config was found to show the entrypoint's trustedIPs",
        )
        return
    for ep in eps:
        fh = _d(_d(entry.get(ep)).get("forwardedHeaders"))
        if fh.get("insecure") is True:
            rep.fail(
                where,
                f"trustForwardHeader with entrypoint {ep} forwardedHeaders.insecure: any client can forge X-Forwarded-*",
            )
            continue
        ips = _l(fh.get("trustedIPs"))
        # No trustedIPs: the entrypoint trusts no peer and replaces every X-Forwarded-* with its own.
        for ip in ips:
            try:
                net = ipaddress.ip_network(str(ip), strict=False)
            except ValueError:
                rep.fail(where, f"entrypoint {ep} trustedIPs entry {ip!r} is not an address or network")
                continue
            if net in _OPEN_NETS or net.prefixlen < 8:
                rep.fail(where, f"entrypoint {ep} trusts X-Forwarded-* from {ip}: effectively anyone")
