"""End to end through real Caddy and real nginx, with mutual TLS and the generated configs, on 127.0.0.1.

client --mTLS--> proxy (generated config) --/auth--> authz (uvicorn) ; proxy --> echo backend

What must hold: allowed, denied and unauthenticated requests answer as the policy says; a revoked client
certificate is denied although the proxy accepted the handshake; no client-sent identity header and no
unreplaced ``{http.reverse_proxy...}`` placeholder reaches the backend; the backend receives exactly the
identity authz decided.
"""

from __future__ import annotations

import http.client
import json
import os
import posixpath
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import jwt
import pytest

from edgesec.authz import headers as hdr
from edgesec.authz.gen import (
    ProxySite,
    render_caddy,
    render_nginx,
    render_traefik_dynamic,
    render_traefik_static,
)
from edgesec.authz.service import Authorizer, create_app
from tests._net import free_port
from tests.authz.conftest import SiteCA, bank_files, running, settings
from tests.authz.test_bypass import CORPUS, broad_files
from tests.authz.test_identity import _attacks, claims, jwt_settings, keys  # noqa: F401 -- keys: a fixture

IDENTITY = ("x-user-id", "x-roles", "x-tenant", "x-auth-method")


class _Tee:
    """The request's input stream, recording every header line exactly as the proxy sent its bytes."""

    def __init__(self, raw: Any, lines: list[bytes]) -> None:
        self.raw, self.lines, self.done = raw, lines, False

    def readline(self, *a: Any) -> bytes:
        line: bytes = self.raw.readline(*a)
        if not self.done:
            self.lines.append(line)
            self.done = line in (b"\r\n", b"\n", b"")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class Backend:
    """A real WSGI backend (wsgiref, which folds ``_`` and ``-`` into ``HTTP_X_USER_ID`` as most frameworks
    do) that also records the raw header bytes of every request the proxy sent it.

    ``seen`` holds each request's headers as (lower-case name as sent, value); ``raw`` the header bytes;
    ``environ`` the ``HTTP_*`` variables the application read.
    """

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, str]]] = []
        self.raw: list[bytes] = []
        self.environ: list[dict[str, str]] = []
        backend = self

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            backend.environ.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})
            n = int(environ.get("CONTENT_LENGTH") or 0)
            if n:
                environ["wsgi.input"].read(n)
            body = json.dumps({"path": environ.get("PATH_INFO")}).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]

        class Handler(WSGIRequestHandler):
            def setup(self) -> None:
                super().setup()
                self.lines: list[bytes] = []
                self.rfile = _Tee(self.rfile, self.lines)  # type: ignore[assignment]

            def get_environ(self) -> dict[str, Any]:
                backend.raw.append(b"".join(self.lines))
                backend.seen.append([(k.lower(), v) for k, v in self.headers.items()])
                return super().get_environ()  # type: ignore[no-any-return]

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.set_app(app)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Backend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("proxy did not start listening")


@pytest.fixture
def stack(site_ca: SiteCA, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """authz (real uvicorn) and the backend; ``param``: ``bank`` (default), ``broad`` (the bypass corpus'
    allow-everything-but-deny-rules policy) or ``jwt`` (bank, with bearer tokens accepted before the
    certificate, the JWT attack corpus' keys)."""
    kind = getattr(request, "param", "bank")
    files = broad_files(tmp_path) if kind == "broad" else bank_files(tmp_path)
    extra: dict[str, Any] = {}
    if kind == "jwt":
        extra = {"identity_order": ["jwt", "cert"], "jwt": jwt_settings(request.getfixturevalue("keys"))}
    a = Authorizer(
        settings(tenant_hosts={"localhost": "branch"}, **extra), files=files, trust_dir=site_ca.trust
    )
    app = create_app(a.settings, authorizer=a, watch=False)
    with running(app) as auth_url, Backend() as backend:
        yield {"auth_url": auth_url, "backend": backend, "authorizer": a}


def _site(site_ca: SiteCA, stack: dict[str, Any], port: int) -> ProxySite:
    site = ProxySite(
        server_name="localhost",
        backend=f"http://127.0.0.1:{stack['backend'].port}",
        auth_url=stack["auth_url"],
        ca_file=str(site_ca.files / "ca-bundle.pem"),
        cert_file=str(site_ca.cert_file("server")),
        key_file=str(site_ca.key_file("server")),
        listen=f"127.0.0.1:{port}",
    )
    site.validate()
    return site.with_ca_certs()  # as `authz gen` does


@pytest.fixture
def caddy(site_ca: SiteCA, stack: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    port = free_port()
    cf = tmp_path / "Caddyfile"
    cf.write_text(render_caddy(_site(site_ca, stack, port)))
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    log = tmp_path / "caddy.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["caddy", "run", "--config", str(cf), "--adapter", "caddyfile"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_port(port, proc, log)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def nginx(site_ca: SiteCA, stack: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "server.conf").write_text(render_nginx(_site(site_ca, stack, port)))
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/server.conf;
}}
"""
    )
    test = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(prefix)], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    log = prefix / "error.log"
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc, log)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def traefik(site_ca: SiteCA, stack: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    yield from _traefik(site_ca, stack, tmp_path, ())


@pytest.fixture
def traefik_trusting_loopback(site_ca: SiteCA, stack: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    """Traefik generated with ``--trusted-ip 127.0.0.1/32``: the test client itself is a trusted hop."""
    yield from _traefik(site_ca, stack, tmp_path, ("127.0.0.1/32",))


def _traefik(
    site_ca: SiteCA, stack: dict[str, Any], tmp_path: Path, trusted: tuple[str, ...]
) -> Iterator[int]:
    port = free_port()
    site = replace(_site(site_ca, stack, port), trusted_ips=trusted)
    dyn = tmp_path / "edgesec-dynamic.yml"
    dyn.write_text(render_traefik_dynamic(site))
    static = tmp_path / "traefik.yml"
    static.write_text(render_traefik_static(site, str(dyn)))
    log = tmp_path / "traefik.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["traefik", f"--configFile={static}"], stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        wait_port(port, proc, log)
        # The file provider loads the routers just after the entrypoint opens: wait for a real answer.
        deadline = time.time() + 20
        while True:
            try:
                st, _ = request(site_ca, port, "alice", "GET", "/v1/chat-messages")
            except (OSError, http.client.HTTPException):
                st = 0
            if st not in (0, 404) or time.time() > deadline:
                break
            time.sleep(0.1)
        stack["backend"].seen.clear()
        stack["backend"].raw.clear()
        stack["backend"].environ.clear()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def tls(site_ca: SiteCA, who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(site_ca.files / "ca-bundle.pem"))
    if who is not None:
        ctx.load_cert_chain(str(site_ca.cert_file(who)), str(site_ca.key_file(who)))
    return ctx


def request(
    site_ca: SiteCA, port: int, who: str | None, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=tls(site_ca, who), timeout=20)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


SPOOF = {
    "X-User-ID": "erin",
    "X-Roles": "role:admin",
    "X-Tenant": "branch",
    "X-Auth-Method": "jwt",
    "X-Original-URI": "/v1/chat-messages",
    "X-Original-Method": "POST",
}


def _run_scenarios(site_ca: SiteCA, stack: dict[str, Any], port: int, proxy: str) -> None:
    backend: Backend = stack["backend"]
    # Allowed: the backend gets exactly the identity authz decided.
    st, body = request(site_ca, port, "alice", "POST", "/v1/chat-messages")
    assert st == 200, (proxy, st, body)
    h = backend.seen[-1]
    for name, want in zip(IDENTITY, ("alice", "role:teller", "branch", "cert"), strict=True):
        assert [v for k, v in h if k == name] == [want], (proxy, name, h)
    # Denied by the policy: 403, the backend is not reached.
    n = len(backend.seen)
    st, _ = request(site_ca, port, "alice", "GET", "/console/api/apps")
    assert st == 403 and len(backend.seen) == n, proxy
    # Bypass attempts through the proxy (raw request targets).
    for target in (
        "/v1/chat-messages/../../console/api/apps",
        "/v1/chat-messages/..%2f..%2fconsole/api/apps",
        "/v1/chat-messages/%2e%2e/%2e%2e/console/api/apps",
        "/console/api/apps;/v1/chat-messages",
    ):
        st, _ = request(site_ca, port, "alice", "GET", target)
        assert st in (400, 401, 403, 404), (proxy, target, st)
    assert len(backend.seen) == n, (proxy, backend.seen[n:])
    # Revoked: the proxy accepts the handshake (it checks no CRL), authz refuses.
    st, _ = request(site_ca, port, "revoked-rita", "POST", "/v1/chat-messages")
    assert st == 401, proxy
    assert len(backend.seen) == n
    # Unauthenticated: no client certificate, or one from a CA the site does not trust.
    for who in (None, "stranger"):
        try:
            st, _ = request(site_ca, port, who, "POST", "/v1/chat-messages")
        except (ssl.SSLError, ConnectionError, http.client.HTTPException):
            st = 0  # the handshake itself was refused
        assert st in (0, 400, 401, 403), (proxy, who, st)
    assert len(backend.seen) == n
    # Spoofed identity headers (and a forged certificate header) never reach the backend.
    spoof = dict(SPOOF, **{"X-Forwarded-Tls-Client-Cert": site_ca.der_b64("erin")})
    st, _ = request(site_ca, port, "alice", "POST", "/v1/chat-messages", spoof)
    assert st == 200, proxy
    h = backend.seen[-1]
    for name, want in zip(IDENTITY, ("alice", "role:teller", "branch", "cert"), strict=True):
        assert [v for k, v in h if k == name] == [want], (proxy, name, h)
    assert not any(site_ca.der_b64("erin") in v for _, v in h), "a client-sent certificate header got through"
    assert not any("{http." in v or "{http." in k for k, v in h), h
    assert not any(k in ("x-original-uri", "x-original-method") for k, _ in h), h
    # The spoofed headers must not get a denied request through either.
    n = len(backend.seen)
    st, _ = request(site_ca, port, "alice", "DELETE", "/console/api/apps/1", spoof)
    assert st == 403 and len(backend.seen) == n, proxy
    # erin really is an admin: her own certificate gets through with her identity.
    st, _ = request(site_ca, port, "erin", "GET", "/console/api/apps")
    assert st == 200 and [v for k, v in backend.seen[-1] if k == "x-user-id"] == ["erin"]


@pytest.mark.real("caddy")
def test_caddy_end_to_end(site_ca: SiteCA, stack: dict[str, Any], caddy: int) -> None:
    _run_scenarios(site_ca, stack, caddy, "caddy")


@pytest.mark.real("nginx")
def test_nginx_end_to_end(site_ca: SiteCA, stack: dict[str, Any], nginx: int) -> None:
    _run_scenarios(site_ca, stack, nginx, "nginx")


@pytest.mark.real("traefik")
def test_traefik_end_to_end(site_ca: SiteCA, stack: dict[str, Any], traefik: int) -> None:
    _run_scenarios(site_ca, stack, traefik, "traefik")


# -- header hygiene: every spelling of every protected header, through each proxy, to both backends ------

DECIDED = dict(zip(IDENTITY, ("alice", "role:teller", "branch", "cert"), strict=True))
MARK = "evil"


def _spoof_value(name: str) -> str:
    key = hdr.fold(name)
    if key == "x-roles":
        return f"role:admin,{MARK}"
    if key.endswith(("-uri", "-url", "-prefix")):
        return f"/{MARK}/console/api/apps"
    if "method" in key:
        return "DELETE"
    if key.endswith("-for") or key == "x-real-ip":
        return "10.6.6.6"
    return f"{MARK}-erin"


def variants() -> list[tuple[str, str]]:
    """Every protected header: ``_``/``-`` at each separator, in three cases, plus a duplicate."""
    out: list[tuple[str, str]] = []
    for name in hdr.protected(IDENTITY_NAMES, "X-Forwarded-Tls-Client-Cert"):
        for sp in hdr.spellings(name):
            for v in (sp, sp.lower(), sp.upper()):
                out.append((v, _spoof_value(name)))
        out.append((name, _spoof_value(name)))  # the exact name twice: a duplicate
    return out


IDENTITY_NAMES = ("X-User-ID", "X-Roles", "X-Tenant", "X-Auth-Method")


def raw_request(
    site_ca: SiteCA, port: int, method: str, path: str, headers: list[tuple[str, str]]
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("localhost", port, context=tls(site_ca, "alice"), timeout=30)
    try:
        conn.putrequest(method, path)
        body = b"{}" if method == "POST" else b""
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _assert_clean(backend: Backend, proxy: str, case: str) -> None:
    """The last request reached the backend with exactly the decided identity and no client-set value."""
    seen, raw, env = backend.seen[-1], backend.raw[-1], backend.environ[-1]
    protected = {hdr.fold(h) for h in hdr.protected(IDENTITY_NAMES, "X-Forwarded-Tls-Client-Cert")}
    for name, value in seen:
        if hdr.fold(name) in protected:
            assert MARK not in value and value not in ("DELETE", "10.6.6.6"), (proxy, case, name, value)
            assert "_" not in name, (proxy, case, name)
    for name, want in DECIDED.items():
        assert [v for k, v in seen if hdr.fold(k) == name] == [want], (proxy, case, name, seen)
        # What a folding framework reads: the decided value, nothing appended.
        assert env.get("HTTP_" + name.upper().replace("-", "_")) == want, (proxy, case, name, env)
    assert MARK.encode() not in raw and b"10.6.6.6" not in raw, (proxy, case, raw)
    for key, value in env.items():
        if hdr.fold(key.removeprefix("HTTP_")) in protected:
            assert MARK not in value and "DELETE" not in value, (proxy, case, key, value)


def _hygiene(site_ca: SiteCA, stack: dict[str, Any], port: int, proxy: str) -> dict[str, int]:
    backend: Backend = stack["backend"]
    counts = {"variants": 0, "requests": 0}
    every = variants()
    counts["variants"] = len(every)
    # 1. All variants at once on an allowed request: 200, and the backend sees only what authz decided.
    st, body = raw_request(site_ca, port, "POST", "/v1/chat-messages", every)
    assert st == 200, (proxy, st, body)
    _assert_clean(backend, proxy, "all variants")
    # 2. Each protected header's variants on their own (a proxy may refuse a huge request as a whole).
    for name in hdr.protected(IDENTITY_NAMES, "X-Forwarded-Tls-Client-Cert"):
        group = [(k, v) for k, v in every if hdr.fold(k) == hdr.fold(name)]
        st, body = raw_request(site_ca, port, "POST", "/v1/chat-messages", group)
        assert st == 200, (proxy, name, st, body)
        _assert_clean(backend, proxy, name)
        counts["requests"] += 1
    # 3. Connection names the identity headers (hop-by-hop deletion of what the proxy copied in), with
    #    the underscore twins ready to take their place.
    twins = [("X_User_ID", "admin"), ("X_Roles", "role:admin")]
    st, body = raw_request(
        site_ca, port, "POST", "/v1/chat-messages", [("Connection", "close, X-User-ID, X-Roles"), *twins]
    )
    assert st == 200, (proxy, st, body)
    seen = backend.seen[-1]
    assert [v for k, v in seen if hdr.fold(k) == "x-user-id"] == ["alice"], (proxy, seen)
    assert backend.environ[-1].get("HTTP_X_ROLES") == "role:teller", (proxy, backend.environ[-1])
    # 4. Client-chosen request attributes never decide: a denied request stays denied whatever
    #    X-Forwarded-*/X-Original-*/override headers (any spelling) say.
    n = len(backend.seen)
    for k in ("X-Forwarded-Uri", "X-Forwarded-Method", "X-Original-URI", "X-Original-Method"):
        for sp in hdr.spellings(k):
            value = "POST" if "method" in k.lower() else "/v1/chat-messages"
            st, _ = raw_request(site_ca, port, "DELETE", "/console/api/apps/1", [(sp, value)])
            assert st in (400, 401, 403), (proxy, sp, st)
            counts["requests"] += 1
    assert len(backend.seen) == n, (proxy, backend.seen[n:])
    # 5. obs-fold (a continuation line), where the proxy accepts it at all.
    try:
        st, _ = raw_request(
            site_ca, port, "POST", "/v1/chat-messages", [("X-Roles", "role:teller\r\n role:admin")]
        )
    except (OSError, http.client.HTTPException):
        st = 0
    assert st in (0, 200, 400), (proxy, st)
    if st == 200:
        _assert_clean(backend, proxy, "obs-fold")
    counts["obs-fold"] = st
    print(f"\nheader hygiene through {proxy}: {counts}")
    return counts


@pytest.mark.real("caddy")
def test_caddy_passes_no_header_variant(site_ca: SiteCA, stack: dict[str, Any], caddy: int) -> None:
    _hygiene(site_ca, stack, caddy, "caddy")


@pytest.mark.real("nginx")
def test_nginx_passes_no_header_variant(site_ca: SiteCA, stack: dict[str, Any], nginx: int) -> None:
    _hygiene(site_ca, stack, nginx, "nginx")


@pytest.mark.real("traefik")
def test_traefik_passes_no_header_variant(site_ca: SiteCA, stack: dict[str, Any], traefik: int) -> None:
    _hygiene(site_ca, stack, traefik, "traefik")


# -- the bypass corpus, the JWT attacks and the spoofing cases through each real proxy -------------------

PROXIES = [
    pytest.param("caddy", marks=pytest.mark.real("caddy")),
    pytest.param("nginx", marks=pytest.mark.real("nginx")),
    pytest.param("traefik", marks=pytest.mark.real("traefik")),
]
_FWD = {"x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto"}
FORBIDDEN = re.compile(r"^/admin(/|$)|^/internal/[^/]+/secret(/|$)")


def _lenient(path: str) -> str:
    """The resource a lenient backend would serve for ``path``: decoded until stable, ``\\`` as ``/``,
    path parameters dropped, dot segments resolved, lower case."""
    p = path.split("?", 1)[0].split("#", 1)[0]
    for _ in range(3):
        p = unquote(p)
    p = re.sub(r";[^/]*", "", p.replace("\\", "/").replace("\x00", ""))
    p = posixpath.normpath("/" + p.lstrip("/")).lower()
    return "/" if p in (".", "//") else p


def _send(
    site_ca: SiteCA, port: int, who: str | None, method: str, target: str, extra: list[tuple[str, str]]
) -> int:
    """One request as a client would send it; 0 when the client library or the TLS handshake refuses."""
    try:
        conn = http.client.HTTPSConnection("localhost", port, context=tls(site_ca, who), timeout=20)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for k, v in extra:
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()
    except (ValueError, OSError, http.client.HTTPException):
        return 0


@pytest.mark.parametrize("stack", ["broad"], indirect=True)
@pytest.mark.parametrize("proxy", PROXIES)
def test_bypass_corpus_through_the_proxy(
    site_ca: SiteCA, stack: dict[str, Any], proxy: str, request: pytest.FixtureRequest
) -> None:
    """Each corpus case as a client would send it: the request target and method, the certificate the
    case names, every other header as a client header. The backend never serves a forbidden resource
    (under any decoding a lenient backend might apply)."""
    port = request.getfixturevalue(proxy)
    backend: Backend = stack["backend"]
    assert _send(site_ca, port, "alice", "GET", "/public/docs", []) == 200  # control
    assert _send(site_ca, port, "alice", "GET", "/admin", []) == 403  # control
    counts = {"cases": 0, "proxy-refused": 0, "authz-refused": 0, "served-harmless": 0, "unsendable": 0}
    for case in CORPUS:
        counts["cases"] += 1
        h = {k.lower(): v for k, v in case.headers}
        method = h.get("x-forwarded-method", "GET")
        target = h.get("x-forwarded-uri", "/")
        who: str | None = None
        cert = h.get("x-forwarded-tls-client-cert")
        if cert is not None:
            who = cert[1:] if cert.startswith("@") else "alice"
        extra = [
            (k, site_ca.der_b64(v[1:]) if v.startswith("@") else v)
            for k, v in case.headers[len([1 for k, _ in case.headers[:5] if k.lower() in _FWD]) :]
            if not (k == "X-Forwarded-Tls-Client-Cert" and v == cert)
        ]
        if h.get("x-forwarded-host", "dify.branch.local") != "dify.branch.local":
            extra.append(("Host", h["x-forwarded-host"]))
        n = len(backend.seen)
        st = _send(site_ca, port, who, method, target, extra)
        served = backend.environ[n:]
        for env in served:
            path = env.get("PATH_INFO", "")
            assert not FORBIDDEN.search(_lenient(path)), (proxy, case.desc, path)
        if st == 0:
            counts["unsendable"] += 1
        elif st in (401, 403):
            counts["authz-refused"] += 1
        elif 200 <= st < 300 and served:
            counts["served-harmless"] += 1
        else:
            counts["proxy-refused"] += 1
    print(f"\nbypass corpus through {proxy}: {counts}")


@pytest.mark.parametrize("stack", ["jwt"], indirect=True)
@pytest.mark.parametrize("proxy", PROXIES)
def test_jwt_attacks_through_the_proxy(
    site_ca: SiteCA, stack: dict[str, Any], proxy: str, request: pytest.FixtureRequest
) -> None:
    """Every token of the JWT attack corpus, as a bearer token through the proxy: 401, backend not reached;
    a good token gets through with its subject."""
    port = request.getfixturevalue(proxy)
    jwt_keys: dict[str, Any] = request.getfixturevalue("keys")
    backend: Backend = stack["backend"]
    good = jwt.encode(claims(tenant="branch"), jwt_keys["ec"], algorithm="ES256", headers={"kid": "ec"})
    assert (
        _send(site_ca, port, "alice", "POST", "/v1/chat-messages", [("Authorization", f"Bearer {good}")])
        == 200
    )
    assert [v for k, v in backend.seen[-1] if k == "x-auth-method"] == ["jwt+cert"]
    n = len(backend.seen)
    refused = 0
    for name, token in _attacks(jwt_keys).items():
        st = _send(
            site_ca, port, "alice", "POST", "/v1/chat-messages", [("Authorization", f"Bearer {token}")]
        )
        # 403: a token naming another user than the certificate; oversized: a proxy may refuse it first.
        assert st in (400, 401, 403, 431, 494), (proxy, name, st)
        refused += 1
    assert len(backend.seen) == n, (proxy, backend.seen[n:])
    print(
        f"\nJWT attacks through {proxy}: {refused} of {len(_attacks(jwt_keys))} refused, 0 reached the backend"
    )


def leaf_only(site_ca: SiteCA, who: str) -> ssl.SSLContext:
    """A client context that sends only its leaf: OpenSSL completes a client's chain from the verify store,
    so this one has none (it does not check the proxy; the proxy's check of the client is under test)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(site_ca.cert_file(who)), str(site_ca.key_file(who)))
    return ctx


@pytest.mark.parametrize("proxy", PROXIES)
def test_client_sending_only_its_leaf_is_accepted(
    site_ca: SiteCA, stack: dict[str, Any], proxy: str, request: pytest.FixtureRequest
) -> None:
    """The proxy trusts every certificate of the site bundle (Caddy 2.6 reads only the first of a file)."""
    port = request.getfixturevalue(proxy)
    conn = http.client.HTTPSConnection("localhost", port, context=leaf_only(site_ca, "alice"), timeout=20)
    try:
        conn.request("POST", "/v1/chat-messages", body=b"{}")
        r = conn.getresponse()
        assert r.status == 200, (proxy, r.status, r.read())
    finally:
        conn.close()
    assert [v for k, v in stack["backend"].seen[-1] if k == "x-user-id"] == ["alice"]
    # A leaf from a CA the site does not trust is still refused in the handshake (or by authz).
    conn = http.client.HTTPSConnection("localhost", port, context=leaf_only(site_ca, "stranger"), timeout=20)
    try:
        conn.request("POST", "/v1/chat-messages", body=b"{}")
        st = conn.getresponse().status
    except (ssl.SSLError, ConnectionError, http.client.HTTPException):
        st = 0
    finally:
        conn.close()
    assert st in (0, 400, 401), (proxy, st)


@pytest.mark.real("traefik")
def test_traefik_trusted_hop_still_cannot_choose_what_authz_decides(
    site_ca: SiteCA, stack: dict[str, Any], traefik_trusting_loopback: int
) -> None:
    """With a named trusted hop (here the test client's own address) Traefik keeps that hop's X-Forwarded-For,
    -Host and -Proto, but the URI and method authz decides on are still Traefik's own: the strip middleware
    deletes every spelling of X-Forwarded-Uri/-Method/-Prefix before forwardAuth."""
    port = traefik_trusting_loopback
    backend: Backend = stack["backend"]
    n = len(backend.seen)
    for headers in (
        [("X-Forwarded-Uri", "/v1/chat-messages"), ("X-Forwarded-Method", "POST")],
        [("X_Forwarded_Uri", "/v1/chat-messages"), ("X-Forwarded_Method", "POST")],
        [("X-Forwarded-Prefix", "/v1/chat-messages")],
    ):
        st = _send(site_ca, port, "alice", "DELETE", "/console/api/apps/1", headers)
        assert st == 403, (headers, st)
    assert len(backend.seen) == n
    st = _send(site_ca, port, "alice", "POST", "/v1/chat-messages", [("X-Forwarded-For", "10.9.9.9")])
    assert st == 200
    # The trusted hop's client address is kept (that is what naming it means).
    assert any(k == "x-forwarded-for" and "10.9.9.9" in v for k, v in backend.seen[-1])
