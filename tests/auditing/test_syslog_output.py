"""RFC 5424 output of emit(): Unix datagram socket and mutual TLS, configured in the site config."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.syslog import BOM, Forwarder
from tests._net import free_port

from .sitepki import SitePki
from .test_checkpoint import RFC5424


def _emit_via_config(cli, cfg: Path, n: int) -> None:  # type: ignore[no-untyped-def]
    # As the CLI does: name the config; emit() configures the trail (and forwarder) from it on first use.
    from edgesec.config import load_config

    previous = auditing.use_config(lambda: load_config(str(cfg)))
    try:
        auditing._trail = None
        for i in range(n):
            auditing.emit(
                AuditEvent(
                    action="test.syslog",
                    category=("host",),
                    type=("info",),
                    part="test",
                    fields={"user.id": f"u{i}"},
                )
            )
    finally:
        auditing.use_config(previous)


def _check(messages: list[bytes], trail: Path, n: int) -> None:
    lines = (trail / "trail.jsonl").read_bytes().splitlines()
    assert len(messages) == n == len(lines)
    for msg, line in zip(messages, lines, strict=True):
        m = RFC5424.match(msg)
        assert m, msg[:120]
        assert m["msgid"] == b"audit"
        body = m["msg"]
        assert body.startswith(BOM) and body[len(BOM) :] == line
        doc = json.loads(line)
        assert f'seq="{doc["event"]["sequence"]}"'.encode() in m["sd"]
        assert f'hash="{doc["event"]["hash"]}"'.encode() in m["sd"]


def test_unix_datagram(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock_path = tmp_path / "log.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(sock_path))
    srv.settimeout(5)
    trail = tmp_path / "trail"
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[auditing]\ntrail_dir = "{trail}"\nsyslog = "unix"\nsyslog_socket = "{sock_path}"\n')
    _emit_via_config(cli, cfg, 5)
    got = [srv.recv(65536) for _ in range(5)]
    auditing.current_trail().close()
    srv.close()
    _check(got, trail, 5)


def test_mutual_tls(cli, pki: SitePki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_bundle))
    ctx.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    received: list[bytes] = []
    peers: list[str] = []

    def serve() -> None:
        buf = b""
        lsock.settimeout(10)
        while True:  # the sender may reconnect; read every connection until the listener closes
            try:
                conn, _ = lsock.accept()
            except OSError:
                break
            with ctx.wrap_socket(conn, server_side=True) as tls:
                peers.append(str(tls.getpeercert()["subject"]))
                while chunk := tls.recv(65536):
                    buf += chunk
        while buf:  # octet counting: LEN SP MSG
            n, _, rest = buf.partition(b" ")
            received.append(rest[: int(n)])
            buf = rest[int(n) :]

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    trail = tmp_path / "trail"
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[auditing]\ntrail_dir = "{trail}"\nsyslog = "tls"\nsyslog_host = "127.0.0.1"\nsyslog_port = {port}\n'
        f'syslog_tls_ca = "{pki.ca_bundle}"\nsyslog_tls_cert = "{pki.client.cert}"\nsyslog_tls_key = "{pki.client.key}"\n'
    )
    _emit_via_config(cli, cfg, 4)
    fwd = auditing.current_trail().listeners[0]
    assert isinstance(fwd, Forwarder) and fwd.sent == 4
    auditing.current_trail().close()
    lsock.shutdown(socket.SHUT_RDWR)
    lsock.close()
    t.join(10)
    assert len(peers) == 1, peers  # one connection for every record
    assert peers and "syslog-ng-client" in peers[0]
    _check(received, trail, 4)


def test_receiver_down_never_fails_emit(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # nobody listens there
    trail = tmp_path / "trail"
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[auditing]\ntrail_dir = "{trail}"\nsyslog = "tcp"\nsyslog_port = {port}\n')
    _emit_via_config(cli, cfg, 3)
    fwd = auditing.current_trail().listeners[0]
    assert isinstance(fwd, Forwarder) and fwd.failures == 3 and fwd.sent == 0
    assert fwd.attempts == 1  # then it rests instead of trying every record
    assert "cannot send to syslog" in (fwd.last_error or "")
    assert len((trail / "trail.jsonl").read_bytes().splitlines()) == 3  # the trail has every record
    auditing.current_trail().close()


def test_reconfiguring_the_same_trail_keeps_the_forwarder(tmp_path: Path) -> None:
    sock_path = tmp_path / "log.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(sock_path))
    srv.settimeout(5)
    from edgesec.auditing.syslog import SyslogSender

    t = auditing.configure(tmp_path / "trail")
    t.listeners.append(Forwarder(SyslogSender("unix", socket_path=str(sock_path))))
    # authz switches the same trail to group commit: the forwarder moves along, open
    t2 = auditing.configure(tmp_path / "trail", durability="group")
    assert t2.listeners and not t.listeners
    auditing.emit(AuditEvent(action="test.keep", category=("host",), type=("info",)), wait=True)
    assert RFC5424.match(srv.recv(65536))
    t2.close()
    srv.close()


def test_forwarder_resumes_after_its_rest(tmp_path: Path) -> None:
    import time

    from edgesec.auditing.syslog import SyslogSender

    from .test_checkpoint import SyslogCatcher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = Forwarder(SyslogSender("tcp", host="127.0.0.1", port=port))
    with auditing.configured(tmp_path / "trail") as trail:
        trail.listeners.append(fwd)
        auditing.emit(AuditEvent(action="test.rest", category=("host",), type=("info",)))
        assert (fwd.attempts, fwd.failures) == (1, 1)
        catcher = SyslogCatcher(port)  # the receiver comes back
        auditing.emit(AuditEvent(action="test.rest", category=("host",), type=("info",)))
        assert (fwd.attempts, fwd.failures) == (1, 2)  # still resting
        time.sleep(1.1)
        auditing.emit(AuditEvent(action="test.rest", category=("host",), type=("info",)))
        assert (fwd.attempts, fwd.sent) == (2, 1)
    catcher.close()
