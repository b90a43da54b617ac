"""One real nginx for the pki tests: a mutual-TLS server on loopback that verifies clients against the site's
CA bundle and CRL, as a site's proxy does (``ssl_verify_client on``, ``ssl_crl``), and a client that reads the
status it answers."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MTLS_CONF = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {server_name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca_bundle};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_crl {crl};
        location / {{ return 200 "hello $ssl_client_s_dn\\n"; }}
    }}
}}
"""


def write_conf(
    prefix: Path, port: int, *, cert: Path, key: Path, ca_bundle: Path, crl: Path, server_name: str
) -> Path:
    """Write ``prefix/nginx.conf`` (and its temp directory) for a mutual-TLS server; returns the path."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        MTLS_CONF.format(
            prefix=prefix,
            port=port,
            cert=cert,
            key=key,
            ca_bundle=ca_bundle,
            crl=crl,
            server_name=server_name,
        )
    )
    return conf


@contextmanager
def running(prefix: Path, conf: Path) -> Iterator[None]:
    """nginx on ``conf`` for the block's duration; stopped (and waited for) afterwards."""
    p = subprocess.run(["nginx", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    try:
        yield
    finally:
        subprocess.run(["nginx", "-p", str(prefix), "-c", str(conf), "-s", "quit"], capture_output=True)
        for _ in range(100):
            if not (prefix / "nginx.pid").exists():
                break
            time.sleep(0.05)


def status(port: int, *, cafile: Path, cert: Path, key: Path, host: str | None = None) -> int:
    """The HTTP status nginx answers a client presenting ``cert``/``key`` (400: its certificate was refused)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host} if host else {})
        return conn.getresponse().status
    finally:
        conn.close()
