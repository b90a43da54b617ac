"""A Caddyfile read back: every site judged for ``tls client_auth`` and ``forward_auth``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgesec.authz.proxyconf.report import (
    ProxyReport,
    Reader,
    SiteTrust,
    few,
    fingerprints,
    judge_ca_file,
)


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
                        f"headers {few(missing)} are not stripped before forward_auth: a client can send its "
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
