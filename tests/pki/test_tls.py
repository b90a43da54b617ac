"""Real mutual-TLS handshakes with certificates from the store: Python ``ssl`` and a real nginx.

nginx runs on 127.0.0.1 with a free port, reads the published trust bundle (``ssl_client_certificate``
and ``ssl_crl``), and is reloaded by the store's reload hook whenever the bundle changes.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesec.pki.api import CertificateAuthority, TrustBundle, verify_certificate
from edgesec.pki.settings import PkiSettings
from edgesec.pki.trust import utcnow
from tests._net import free_port
from tests.pki import _nginx as nginx

from .conftest import PASSPHRASE


def _client_ctx(ca: CertificateAuthority, export: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca.trust_dir / "root.pem"))
    if export is not None:
        ctx.load_cert_chain(str(export / "fullchain.pem"), str(export / "key.pem"))
    return ctx


def _expired_client(ca: CertificateAuthority, name: str) -> None:
    real = ca.clock
    ca.clock = lambda: utcnow() - dt.timedelta(days=10)
    try:
        ca.issue_client(name, days=1)
    finally:
        ca.clock = real


def _wrong_ca_export(tmp: Path) -> Path:
    """A client certificate from another CA with the same names: must be refused."""
    other_home = tmp / "other-home"
    other = CertificateAuthority.init(
        other_home, org="Acme Clinic", site="ward-3", passphrase=PASSPHRASE, publish=False
    )
    other.issue_client("mallory")
    return Path(other.export_pem("mallory", tmp / "wrong-ca")["cert.pem"]).parent


# --- Python ssl -------------------------------------------------------------------------------------------


class _Server:
    """A one-shot-per-connection TLS server that requires a client certificate and checks the CRL."""

    def __init__(self, ca: CertificateAuthority, export: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(export / "fullchain.pem"), str(export / "key.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(ca.trust_dir / "root.pem"))
        ctx.load_verify_locations(cafile=str(ca.trust_dir / "intermediates.pem"))
        ctx.load_verify_locations(cafile=str(ca.trust_dir / "crl.pem"))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[bytes | None] = []
        self.errors: list[str] = []
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.peers.append(tls.getpeercert(binary_form=True))
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(str(exc))
                conn.close()

    def close(self) -> None:
        self.sock.close()


def _connect(port: int, ctx: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as s,
        ctx.wrap_socket(s, server_hostname="llm.clinic.local") as tls,
    ):
        return tls.recv(10)


def test_python_ssl_mutual_tls(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.issue_server("llm", ["DNS:llm.clinic.local", "IP:127.0.0.1"])
    ca.issue_client("alice", email="alice@clinic.local")
    ca.issue_client("bob")
    _expired_client(ca, "old")
    server_export = tmp_path / "srv"
    ca.export_pem("llm", server_export)
    exports = {n: tmp_path / n for n in ("alice", "bob", "old")}
    for n, d in exports.items():
        ca.export_pem(n, d)
    ca.revoke("bob", "key-compromise")
    srv = _Server(ca, server_export)
    try:
        assert _connect(srv.port, _client_ctx(ca, exports["alice"])) == b"ok"
        # The service then maps the identity through pki's verify, as authz does.
        from cryptography import x509

        peer = x509.load_der_x509_certificate(srv.peers[-1] or b"")
        v = verify_certificate(peer, purpose="client", trust=TrustBundle.load(ca.trust_dir))
        assert v.common_name == "alice" and v.sans.emails == ("alice@clinic.local",)
        for bad in (exports["bob"], exports["old"], server_export, _wrong_ca_export(tmp_path), None):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                _connect(srv.port, _client_ctx(ca, bad))
        # The server thread records each refusal after the client has already seen it fail: wait for all five.
        deadline = time.monotonic() + 10
        while len(srv.errors) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        joined = " | ".join(srv.errors)
        assert "revoked" in joined
        assert "expired" in joined
        assert "unsuitable certificate purpose" in joined
        assert "unable to get local issuer certificate" in joined
        assert "peer did not return a certificate" in joined
    finally:
        srv.close()


# --- nginx ------------------------------------------------------------------------------------------------


@pytest.fixture
def nginx_site(home: Path, tmp_path: Path) -> Iterator[tuple[CertificateAuthority, int, Path]]:
    prefix = tmp_path / "nginx"
    conf = prefix / "nginx.conf"
    port = free_port()
    settings = PkiSettings(reload_hooks=[f"nginx -p {prefix} -c {conf} -s reload"])
    ca = CertificateAuthority.init(
        home, org="Acme Clinic", site="ward-3", passphrase=PASSPHRASE, settings=settings, publish=False
    )
    ca.publish(run_hooks=False)
    ca.issue_server("llm", ["DNS:llm.clinic.local", "IP:127.0.0.1"])
    srv = Path(ca.export_pem("llm", tmp_path / "srv")["cert.pem"]).parent
    trust = Path(ca.trust_dir)
    nginx.write_conf(
        prefix, port, cert=srv / "fullchain.pem", key=srv / "key.pem", ca_bundle=trust / "ca-bundle.pem",
        crl=trust / "crl.pem", server_name="llm.clinic.local",
    )  # fmt: skip
    with nginx.running(prefix, conf):
        yield ca, port, prefix


def _get(ca: CertificateAuthority, port: int, export: Path | None) -> tuple[int, str]:
    ctx = _client_ctx(ca, export)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn._context.check_hostname = False  # type: ignore[attr-defined]
    try:
        conn.request("GET", "/", headers={"Host": "llm.clinic.local"})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _until(fn, expect: int, timeout: float = 10.0) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """nginx reloads asynchronously: poll until new workers answer."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got[0] == expect or time.monotonic() > deadline:
            return got  # type: ignore[no-any-return]
        time.sleep(0.1)


@pytest.mark.real("nginx", "openssl")
def test_nginx_mutual_tls_with_crl_and_rotation(
    nginx_site: tuple[CertificateAuthority, int, Path], tmp_path: Path
) -> None:
    ca, port, _prefix = nginx_site
    for n in ("alice", "bob"):
        ca.issue_client(n)
        ca.export_pem(n, tmp_path / n)
    _expired_client(ca, "old")
    ca.export_pem("old", tmp_path / "old")

    status, body = _get(ca, port, tmp_path / "alice")
    assert status == 200 and "CN=alice" in body
    assert _get(ca, port, tmp_path / "bob")[0] == 200

    # Refused: expired, another CA, a server certificate used as a client, no certificate at all.
    assert _get(ca, port, tmp_path / "old")[0] == 400
    assert _get(ca, port, _wrong_ca_export(tmp_path))[0] == 400
    assert _get(ca, port, tmp_path / "srv")[0] == 400
    assert _get(ca, port, None)[0] == 400

    # Revocation republishes the CRL and runs the reload hook; nginx then refuses bob.
    ca.revoke("bob", "key-compromise")
    assert ca.hook_results and ca.hook_results[0]["exit_code"] == 0
    assert _until(lambda: _get(ca, port, tmp_path / "bob"), 400)[0] == 400
    assert _get(ca, port, tmp_path / "alice")[0] == 200

    # Rotation: the old intermediate's clients keep working, the new one's work after the reload.
    ca.rotate_intermediate()
    ca.issue_client("carol")
    ca.export_pem("carol", tmp_path / "carol")
    assert _until(lambda: _get(ca, port, tmp_path / "carol"), 200)[0] == 200
    assert _get(ca, port, tmp_path / "alice")[0] == 200
    assert _get(ca, port, tmp_path / "bob")[0] == 400
    # Revoking a certificate of the new intermediate reaches nginx through the new intermediate's CRL.
    ca.revoke("carol")
    assert _until(lambda: _get(ca, port, tmp_path / "carol"), 400)[0] == 400
    assert _get(ca, port, tmp_path / "alice")[0] == 200
