"""``edgesec demo``: a complete example site in one directory, built with edgesec's own commands.

What :class:`DemoSite` builds under ``DIR`` (nothing outside it; every port is a free loopback port):

* ``edgesec.toml`` and ``home/`` -- the site config (profile ``bank``) and the edgesec home;
* the PKI -- root, intermediate, the proxy's server certificate, client certificates for a teller
  (``alice``, ``bob``) and an auditor (``dave``), syslog-ng's client certificate and a signing
  certificate (``model-publisher``), exported under ``certs/NAME/``;
* ``policy/`` -- the bank policy and its test table (``authz policy init``);
* two ForwardAuth replicas (``edgesec authz serve``) behind an internal nginx load balancer with
  ``proxy_next_upstream``, which is the address the proxies (and Traefik's forwardAuth) ask;
* real nginx and real Caddy in front of a stand-in Dify-style app, both with mutual TLS against the
  site CA (``authz gen nginx|caddy``);
* syslog-ng running the generated pipeline: the trail and checkpoints into ``archive/``;
* ``models/teller-assistant`` -- a small model directory signed with the site signing certificate;
* ``reports/`` -- ``edgesec audit --profile bank --report html --report json``.

:meth:`DemoSite.stop` ends every process it started (process groups, by pid) and waits for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesec._fs import atomic_write, ensure_private_dir
from edgesec.errors import InputError, OperationFailed

SERVER_NAME = "app.demo.test"
TENANT = "branch"
# Users of the shipped bank policy: alice and bob are tellers, dave is an auditor.
CLIENTS = {"alice": "teller", "bob": "teller", "dave": "auditor"}
SIGNER = "model-publisher"
# Host-level checks an example site in a temp directory cannot satisfy (no time daemon, egress open,
# auditd not locked, no GPU): expected findings, named so nobody mistakes them for demo faults.
HOST_FAMILIES = ("egress", "host", "gpu")
HOST_CHECKS = ("auditing.auditd-immutable",)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path | None, timeout: float = 60
) -> None:
    """Wait until ``127.0.0.1:port`` accepts connections; one clear error if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise OperationFailed(
                f"{what} exited with status {proc.returncode} while starting: {tail.strip()[-400:]}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise OperationFailed(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class Response:
    """One HTTP answer as the demo client saw it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DemoSite:
    """The example site: build once, start, use, stop. A context manager stops it for you."""

    dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    python: str = sys.executable

    # -- layout ------------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.dir / "edgesec.toml"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def trust(self) -> Path:
        return self.home / "trust"

    @property
    def trail(self) -> Path:
        return self.home / "audit"

    @property
    def archive(self) -> Path:
        return self.dir / "archive"

    @property
    def model_dir(self) -> Path:
        return self.dir / "models" / "teller-assistant"

    @property
    def reports(self) -> Path:
        return self.dir / "reports"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def cert(self, name: str) -> tuple[Path, Path]:
        """The exported certificate (full chain) and key of ``name``."""
        d = self.dir / "certs" / name
        return d / "fullchain.pem", d / "key.pem"

    def env(self) -> dict[str, str]:
        """The environment every child process gets: this site's config and home, nothing else of ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESEC_")}
        env.update(EDGESEC_CONFIG=str(self.config), EDGESEC_HOME=str(self.home), NO_COLOR="1")
        # Children run this same edgesec, installed or from a checkout.
        import edgesec

        pkg_root = str(Path(edgesec.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(x for x in (pkg_root, env.get("PYTHONPATH", "")) if x)
        return env

    def edgesec(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``edgesec ARGS`` against this site, as an operator would type it."""
        argv = [self.python, "-m", "edgesec", "--config", str(self.config), "--home", str(self.home), *args]
        cp = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and cp.returncode != 0:
            last = (cp.stderr.strip().splitlines() or ["no output"])[-1]
            raise OperationFailed(
                f"demo step 'edgesec {' '.join(args)}' failed (exit {cp.returncode}): {last}"
            )
        return cp

    # -- build -------------------------------------------------------------------------------------

    def build(self) -> None:
        """Write the config, create the PKI, policy, proxy and pipeline configs and the signed model."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.config.exists():
            raise InputError(f"{self.dir} already holds a demo site", hint="choose an empty directory")
        for d in (
            self.logs,
            self.dir / "run",
            self.dir / "secrets",
            self.dir / "certs",
            self.dir / "offline-root",
        ):
            ensure_private_dir(d)
        for name in ("lb", "authz-a", "authz-b", "nginx", "caddy", "backend", "syslog", "es"):
            self.ports[name] = free_port()
        atomic_write(self.dir / "secrets" / "ca-passphrase", secrets.token_urlsafe(24) + "\n", mode=0o600)
        atomic_write(self.dir / "run" / "ports.json", json.dumps(self.ports, indent=2) + "\n", mode=0o644)
        self._write_config()
        # The root key goes to "removable media" (a directory here): only the intermediate signs day to day.
        self.edgesec(
            "pki", "init", "--org", "Demo Bank", "--site", "demo-branch", "--offline-root", str(self.dir / "offline-root")
        )  # fmt: skip
        self.edgesec(
            "pki", "issue", "server", "proxy", "--san", f"DNS:{SERVER_NAME},DNS:localhost,IP:127.0.0.1"
        )
        # For a central Elasticsearch on the demo's "es" port (the fleet test stands one up there).
        self.edgesec("pki", "issue", "server", "es", "--san", "DNS:localhost,IP:127.0.0.1")
        for user in CLIENTS:
            self.edgesec("pki", "issue", "client", user)
        self.edgesec("pki", "issue", "client", "syslog-ng")
        self.edgesec("pki", "issue", "signing", SIGNER)
        for name in ("proxy", "es", *CLIENTS, "syslog-ng", SIGNER):
            self.edgesec("pki", "export", name, "--pem", str(self.dir / "certs" / name))
        self.edgesec("authz", "policy", "init", str(self.dir / "policy"), "--example", "bank")
        self._write_proxies()
        self._write_pipeline()
        self._write_model()
        self.edgesec("model", "sign", str(self.model_dir), "--signer", SIGNER)

    def _write_config(self) -> None:
        p = self.ports
        signer_cert, signer_key = self.cert(SIGNER)
        text = f"""# edgesec demo site -- generated by `edgesec demo`; every path is inside this directory.
[site]
name = "demo-branch"
org = "Demo Bank"
profile = "bank"

[pki]
passphrase_file = "{self.dir / "secrets" / "ca-passphrase"}"

[authz]
host = "127.0.0.1"
port = {p["authz-a"]}
workers = 1
policy_dir = "{self.dir / "policy"}"
identity_order = ["cert"]
default_tenant = "{TENANT}"
# The internal load balancer in front of both replicas: what the proxies' forward auth asks.
url = "http://127.0.0.1:{p["lb"]}"
# Every decision, allowed or not, is in the trail (a busy site samples allows instead).
allow_sample_rate = 1.0
reload_interval_s = 0.5

[auditing]
durability = "fsync"
syslog = "tcp"
syslog_host = "127.0.0.1"
syslog_port = {p["syslog"]}
checkpoint_cert = "{signer_cert}"
checkpoint_key = "{signer_key}"
archive_dir = "{self.archive}"
# Nothing listens here in the demo: syslog-ng keeps the documents in its reliable disk buffer.
elasticsearch_urls = ["https://127.0.0.1:{p["es"]}"]

[checks]
profile = "bank"

[models]
dirs = ["{self.model_dir}"]
"""
        atomic_write(self.config, text, mode=0o600)

    def _write_proxies(self) -> None:
        p = self.ports
        cert, key = self.cert("proxy")
        backend = f"http://127.0.0.1:{p['backend']}"
        ngx = self.dir / "nginx"
        for d in (ngx / "conf.d", ngx / "tmp", self.dir / "caddy" / "state"):
            d.mkdir(parents=True, exist_ok=True)
        common = ["--server-name", SERVER_NAME, "--backend", backend, "--cert", str(cert), "--key", str(key)]
        self.edgesec(
            "authz",
            "gen",
            "nginx",
            *common,
            "--listen",
            f"127.0.0.1:{p['nginx']}",
            "--out",
            str(ngx / "conf.d" / "edgesec.conf"),
        )
        self.edgesec(
            "authz",
            "gen",
            "caddy",
            *common,
            "--listen",
            f"127.0.0.1:{p['caddy']}",
            "--out",
            str(self.dir / "caddy" / "Caddyfile"),
        )
        atomic_write(ngx / "nginx.conf", render_nginx_main(self.dir, p), mode=0o644)

    def _write_pipeline(self) -> None:
        cert, key = self.cert("syslog-ng")
        out = self.dir / "syslog-ng"
        self.edgesec(
            "auditlog", "gen", "syslog-ng", "--out", str(out), "--audit-log", "",
            "--cert", str(cert), "--key", str(key), "--buffer-dir", str(out / "buffer"),
        )  # fmt: skip

    def _write_model(self) -> None:
        d = self.model_dir
        d.mkdir(parents=True, exist_ok=True)
        # A real (tiny) safetensors file: header length, JSON header, then the tensor bytes.
        data = bytes(range(64)) * 4
        header = json.dumps(
            {
                "lm_head.weight": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, len(data)]},
                "__metadata__": {"format": "pt"},
            },
            separators=(",", ":"),
        ).encode()
        header += b" " * (-len(header) % 8)
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
        (d / "config.json").write_text(json.dumps({"model_type": "demo", "hidden_size": 8}) + "\n")
        (d / "tokenizer.json").write_text(
            json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}) + "\n"
        )

    # -- run ---------------------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env or self.env(),
                cwd=self.dir,
                start_new_session=True,  # its own process group: stop() ends its children too
            )
        self.procs[name] = proc
        atomic_write(self.dir / "run" / f"{name}.pid", f"{proc.pid}\n", mode=0o644)
        return proc

    def start(self) -> None:
        """Start the backend, both authz replicas, nginx (front + load balancer), Caddy and syslog-ng."""
        if not self.ports:
            self.ports = json.loads((self.dir / "run" / "ports.json").read_text())
        p = self.ports
        try:
            self._start_syslog_ng()
            b = self._spawn("backend", [self.python, "-m", "edgesec.deploy.backend", str(p["backend"])])
            wait_port(p["backend"], b, "the demo app", self.logs / "backend.log")
            for name in ("authz-a", "authz-b"):
                self.start_replica(name)
            ngx = self.dir / "nginx"
            # -e: the error log nginx opens before it reads its config goes inside DIR too.
            argv = [
                "nginx",
                "-p",
                str(ngx),
                "-c",
                str(ngx / "nginx.conf"),
                "-e",
                str(self.logs / "nginx-startup.log"),
            ]
            n = self._spawn("nginx", [*argv, "-g", "daemon off;"])
            wait_port(p["nginx"], n, "nginx", self.logs / "nginx.log")
            wait_port(p["lb"], n, "nginx (authz load balancer)", self.logs / "nginx.log")
            cenv = self.env()
            state = self.dir / "caddy" / "state"
            cenv.update(
                HOME=str(state), XDG_DATA_HOME=str(state / "data"), XDG_CONFIG_HOME=str(state / "config")
            )
            c = self._spawn(
                "caddy",
                ["caddy", "run", "--config", str(self.dir / "caddy" / "Caddyfile"), "--adapter", "caddyfile"],
                env=cenv,
            )
            wait_port(p["caddy"], c, "caddy", self.logs / "caddy.log")
        except BaseException:
            self.stop()
            raise

    def start_replica(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) one ForwardAuth replica and wait until it is ready."""
        port = self.ports[name]
        proc = self._spawn(
            name, [self.python, "-m", "edgesec", "authz", "serve", "--port", str(port), "--workers", "1"]
        )
        wait_port(port, proc, f"edgesec authz serve ({name})", self.logs / f"{name}.log")
        return proc

    def _start_syslog_ng(self) -> None:
        st = self.dir / "syslog-ng" / "state"
        st.mkdir(parents=True, exist_ok=True)
        ctl = st / "ctl"
        proc = self._spawn(
            "syslog-ng",
            [
                "syslog-ng", "-F", "--no-caps", "-f", str(self.dir / "syslog-ng" / "syslog-ng.conf"),
                "-R", str(st / "persist"), "-p", str(st / "pid"), "-c", str(ctl),
            ],
        )  # fmt: skip
        wait_port(self.ports["syslog"], proc, "syslog-ng", self.logs / "syslog-ng.log")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one service's process group (the replica-failure drill uses SIGKILL)."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop every process this site started, newest first; wait for each."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                sig = signal.SIGQUIT if name == "nginx" else signal.SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            # Anything the group left behind (a uvicorn worker, an nginx worker) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "run" / f"{name}.pid").unlink()
        self.procs.clear()

    def __enter__(self) -> DemoSite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------------------

    def request(
        self,
        proxy: str,
        method: str,
        path: str,
        *,
        user: str | None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 15,
    ) -> Response:
        """One HTTPS request through ``proxy`` (``nginx`` or ``caddy``) with ``user``'s client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.trust / "ca-bundle.pem"))
        if user is not None:
            cert, key = self.cert(user)
            ctx.load_cert_chain(str(cert), str(key))
        hdrs = {
            "Host": SERVER_NAME,
            "Connection": "close",
            "Content-Length": str(len(body)),
            **(headers or {}),
        }
        raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        with socket.create_connection(("127.0.0.1", self.ports[proxy]), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=SERVER_NAME) as tls:
                tls.sendall(raw.encode() + body)
                chunks = []
                with contextlib.suppress(ssl.SSLError, ConnectionResetError):
                    while True:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
        if not chunks:
            # TLS 1.3: a refused client certificate shows up after the handshake, as a closed connection.
            raise ConnectionError(f"{proxy} closed the connection without an answer")
        return parse_response(b"".join(chunks))

    def checkpoint(self) -> dict[str, Any]:
        """Sign the trail head now (and send the checkpoint through syslog-ng)."""
        cp = self.edgesec("--json", "auditlog", "checkpoint")
        return dict(json.loads(cp.stdout)["result"])

    def audit(self, *extra: str) -> tuple[int, dict[str, Any]]:
        """``edgesec audit --profile bank --report html --report json``: (exit code, the JSON result)."""
        self.reports.mkdir(exist_ok=True)
        cp = self.edgesec(
            "audit", "--profile", "bank", "--report", "html", "--report", "json", "--out", str(self.reports), *extra,
            check=False, timeout=600,
        )  # fmt: skip
        if cp.returncode not in (0, 1, 3):
            last = (cp.stderr.strip().splitlines() or ["no output"])[-1]
            raise OperationFailed(f"edgesec audit failed (exit {cp.returncode}): {last}")
        jsons = sorted(self.reports.glob("*.json"), key=lambda q: q.stat().st_mtime)
        if not jsons:
            raise OperationFailed(f"edgesec audit wrote no JSON report in {self.reports}")
        return cp.returncode, json.loads(jsons[-1].read_text())

    def html_report(self) -> Path:
        found = sorted(self.reports.glob("*.html"), key=lambda q: q.stat().st_mtime)
        if not found:
            raise OperationFailed(f"no HTML report in {self.reports}")
        return found[-1]


def parse_response(raw: bytes) -> Response:
    """A raw HTTP/1.1 response (``Connection: close``; chunked bodies are joined)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise OperationFailed(f"not an HTTP response: {raw[:80]!r}")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return Response(status, headers, body)


def render_nginx_main(root: Path, ports: dict[str, int]) -> str:
    """nginx.conf of the demo: the internal authz load balancer, and the generated mTLS server block."""
    tmp = root / "nginx" / "tmp"
    return f"""# nginx for the edgesec demo (run with: nginx -p {root / "nginx"} -c {root / "nginx" / "nginx.conf"})
worker_processes 1;
pid {root / "run" / "nginx-master.pid"};
error_log {root / "logs" / "nginx-error.log"} warn;
events {{ worker_connections 512; }}

http {{
    access_log {root / "logs" / "nginx-access.log"};
    client_body_temp_path {tmp / "body"};
    proxy_temp_path {tmp / "proxy"};
    fastcgi_temp_path {tmp / "fastcgi"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};
    server_tokens off;

    # The ForwardAuth replicas. Traefik's forwardAuth (and the proxies below) ask one address: this one.
    upstream edgesec_authz {{
        # max_fails=0: never mark a replica down. A dead one refuses the connection at once and the
        # call is retried on the other; marking it down for fail_timeout would make a restarted replica
        # unusable for that long, and the other dying in that window an outage.
        server 127.0.0.1:{ports["authz-a"]} max_fails=0;
        server 127.0.0.1:{ports["authz-b"]} max_fails=0;
        keepalive 16;
    }}

    # Internal load balancer: loopback only; a replica that fails is retried on the other at once.
    server {{
        listen 127.0.0.1:{ports["lb"]};
        location / {{
            proxy_pass http://edgesec_authz;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
            # Only errors where no answer was given are retried: a 401/403 is a decision, not a failure.
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries 2;
        }}
    }}

    # The app, behind mutual TLS and auth_request (generated by `edgesec authz gen nginx`).
    include {root / "nginx" / "conf.d"}/*.conf;
}}
"""


BAD = ("FAIL", "WARN", "ERROR")


def is_host_check(check_id: str) -> bool:
    return check_id.split(".", 1)[0] in HOST_FAMILIES or check_id in HOST_CHECKS


def belongs_to(finding: dict[str, Any], site_dir: Path, ports: dict[str, int]) -> bool:
    """Is a finding about this demo site, or about something else running on the host?

    The proxy and pipeline checks judge every nginx, Caddy, Traefik and syslog-ng on the host, and the
    readiness check every replica: findings about files outside the demo directory, or services on
    ports the demo did not start, are about the host's other services.
    """
    res = str(finding.get("resource") or "")
    if res.startswith("/"):
        return Path(res).is_relative_to(site_dir)
    if res.startswith("http://") or res.startswith("https://"):
        from urllib.parse import urlsplit

        return urlsplit(res).port in set(ports.values())
    return True


def _split(
    result: dict[str, Any], site_dir: Path | None, ports: dict[str, int]
) -> tuple[list[Any], list[Any]]:
    host: list[dict[str, Any]] = []
    site: list[dict[str, Any]] = []
    for c in result.get("checks", []):
        if c.get("status") not in BAD:
            continue
        if is_host_check(c["id"]):
            host.append(c)
            continue
        bad = [f for f in c.get("findings", []) if f.get("status") in BAD]
        if site_dir is not None and bad and not any(belongs_to(f, site_dir, ports) for f in bad):
            host.append(c)
        else:
            site.append(c)
    return host, site


def expected_host_findings(
    result: dict[str, Any], site_dir: Path | None = None, ports: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """FAIL/WARN/ERROR checks about the host, not the demo site: time sync, egress, auditd, and the
    host's other proxies or pipelines when ``site_dir`` is given."""
    return _split(result, site_dir, ports or {})[0]


def site_problems(
    result: dict[str, Any], site_dir: Path | None = None, ports: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """FAIL/WARN/ERROR checks of the site itself (pki, authz, auditing, models)."""
    return _split(result, site_dir, ports or {})[1]


def site_failures(result: dict[str, Any], site_dir: Path, ports: dict[str, int]) -> set[str]:
    """Ids of site checks with a FAIL finding about this site."""
    return {
        c["id"]
        for c in result.get("checks", [])
        if not is_host_check(c["id"])
        and any(f.get("status") == "FAIL" and belongs_to(f, site_dir, ports) for f in c.get("findings", []))
    }


def which_missing() -> list[str]:
    """Tools the demo needs that this machine lacks."""
    return [t for t in ("nginx", "caddy", "syslog-ng") if shutil.which(t) is None]


@contextlib.contextmanager
def running(directory: Path) -> Iterator[DemoSite]:
    """Build, start, yield, and always stop a demo site in ``directory``."""
    site = DemoSite(directory)
    site.build()
    try:
        site.start()
        yield site
    finally:
        site.stop()
