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
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgesec.authz.gen import ProxySite, render_caddy, render_nginx
from edgesec.authz.service import Authorizer, create_app
from tests.authz.conftest import SiteCA, bank_files, free_port, running, settings

IDENTITY = ("x-user-id", "x-roles", "x-tenant", "x-auth-method")


class Backend:
    """An echo backend that records the headers of every request it receives."""

    def __init__(self) -> None:
        seen: list[list[tuple[str, str]]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append([(k.lower(), v) for k, v in self.headers.items()])
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
def stack(site_ca: SiteCA, tmp_path: Path) -> Iterator[dict[str, Any]]:
    a = Authorizer(
        settings(tenant_hosts={"localhost": "branch"}), files=bank_files(tmp_path), trust_dir=site_ca.trust
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
    return site


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
