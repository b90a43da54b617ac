"""RFC 5424 output: trail records and checkpoints as structured syslog messages.

Format (RFC 5424 section 6)::

    <PRI>1 TIMESTAMP HOSTNAME edgesec PROCID MSGID [edgesec@32473 seq="N" hash="..." part="pki"] BOM{json}

* facility 13 ("log audit"); severity from the record's ``log.level``;
* MSGID ``audit`` for trail records, ``checkpoint`` for signed checkpoints;
* the SD-ID uses enterprise number 32473, the number RFC 5612 reserves for documentation, because
  edgesec has no IANA number of its own; the values repeat the chain position so a receiver can
  index them without parsing the message;
* MSG is the record's canonical JSON after a UTF-8 BOM, as section 6.4 asks for UTF-8 text.

Transports: a Unix socket (datagram, else stream with a newline after each message -- ``/dev/log`` or
syslog-ng's ``unix-stream()``), TCP, or TLS (RFC 5425); TCP and TLS frame each message with octet
counting (``LEN SP MSG``, RFC 6587 section 3.4.1), which syslog-ng's ``syslog()`` source reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgesec.errors import InputError, OperationFailed

FACILITY_LOG_AUDIT = 13
SD_ID = "edgesec@32473"
_SEVERITY = {
    "emergency": 0,
    "alert": 1,
    "critical": 2,
    "error": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
BOM = b"\xef\xbb\xbf"


def _sd_escape(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' must be escaped inside PARAM-VALUE.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """PRINTUSASCII without spaces (RFC 5424 6.2), or the NILVALUE."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def format_rfc5424(
    body: str,
    *,
    msgid: str,
    level: str = "info",
    params: Mapping[str, Any] | None = None,
    hostname: str | None = None,
    procid: int | str | None = None,
    timestamp: dt.datetime | None = None,
) -> bytes:
    """One RFC 5424 message (no transport framing)."""
    pri = FACILITY_LOG_AUDIT * 8 + _SEVERITY.get(level, 6)
    ts = (timestamp or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = _header_token(hostname or socket.gethostname(), 255)
    proc = _header_token(str(procid) if procid is not None else "-", 128)
    sd = "-"
    if params:
        pairs = " ".join(
            f'{_header_token(k, 32)}="{_sd_escape(str(v))}"' for k, v in params.items() if v is not None
        )
        sd = f"[{SD_ID} {pairs}]"
    head = f"<{pri}>1 {ts} {host} edgesec {proc} {_header_token(msgid, 32)} {sd} "
    return head.encode("ascii") + BOM + body.encode("utf-8")


def record_message(doc: Mapping[str, Any], line: str) -> bytes:
    """The RFC 5424 message for one trail record (``line`` is its canonical JSON)."""
    ev = doc.get("event") or {}
    ts_raw = doc.get("@timestamp")
    ts = None
    if isinstance(ts_raw, str):
        with contextlib.suppress(ValueError):
            ts = dt.datetime.fromisoformat(ts_raw.replace("Z", "+00:00"))
    return format_rfc5424(
        line,
        msgid="audit",
        level=str((doc.get("log") or {}).get("level", "info")),
        params={
            "seq": ev.get("sequence"),
            "hash": ev.get("hash"),
            "action": ev.get("action"),
            "part": (doc.get("edgesec") or {}).get("part"),
        },
        hostname=(doc.get("host") or {}).get("name"),
        procid=(doc.get("process") or {}).get("pid"),
        timestamp=ts,
    )


class SyslogSender:
    """Sends RFC 5424 messages over one transport; reconnects once per message on a broken connection."""

    def __init__(
        self,
        mode: str,
        *,
        socket_path: str = "/dev/log",
        host: str = "127.0.0.1",
        port: int = 6514,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if mode not in ("unix", "tcp", "tls"):
            raise InputError(f"syslog transport must be unix, tcp or tls, not {mode!r}")
        if mode == "tls" and tls is None:
            raise InputError("syslog over TLS needs a CA file (and a client certificate for mutual TLS)")
        self.mode = mode
        self.socket_path = socket_path
        self.host = host
        self.port = port
        self.tls = tls
        self.server_name = server_name or host
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._dgram = False
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        if self.mode == "unix":
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_UNIX, kind)
                s.settimeout(self.timeout)
                try:
                    s.connect(self.socket_path)
                except OSError as exc:
                    s.close()
                    if exc.errno == 91 or isinstance(exc, ConnectionRefusedError | FileNotFoundError):
                        last: OSError = exc
                        continue  # EPROTOTYPE: the socket is of the other kind
                    raise
                self._dgram = kind == socket.SOCK_DGRAM
                return s
            raise last
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        if self.mode == "tls":
            assert self.tls is not None
            try:
                return self.tls.wrap_socket(raw, server_hostname=self.server_name)
            except (ssl.SSLError, OSError):
                raw.close()
                raise
        return raw

    def _frame(self, msg: bytes) -> bytes:
        if self.mode == "unix":
            return msg if self._dgram else msg + b"\n"
        return str(len(msg)).encode("ascii") + b" " + msg

    def send(self, msg: bytes) -> None:
        """Send one message; raise :class:`OperationFailed` when the receiver cannot be reached."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._sock is None:
                        self._sock = self._connect()
                    self._sock.sendall(self._frame(msg))
                    return
                except (OSError, ssl.SSLError) as exc:
                    self.close_locked()
                    if attempt == 2:
                        where = self.socket_path if self.mode == "unix" else f"{self.host}:{self.port}"
                        raise OperationFailed(f"cannot send to syslog ({self.mode} {where}): {exc}") from None

    def close_locked(self) -> None:
        if self._sock is None:
            return
        sock, self._sock = self._sock, None
        if not self._dgram:
            # Half-close, then read what the receiver still sent (TLS 1.3 session tickets): closing a
            # socket with unread input makes the kernel send a reset, and the receiver may then drop
            # our last messages unread.
            with contextlib.suppress(OSError, ssl.SSLError):
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(1.0)
                while sock.recv(4096):
                    pass
        with contextlib.suppress(OSError):
            sock.close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` and presents ``cert``/``key``."""
    if not ca:
        raise InputError("syslog over TLS needs syslog_tls_ca (the trust bundle)")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
    try:
        ctx.load_verify_locations(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load syslog TLS files: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def sender_from_settings(settings: Any) -> SyslogSender | None:
    """The sender the ``[auditing]`` settings ask for, or ``None`` for ``syslog = "off"``."""
    mode = settings.syslog
    if mode == "off":
        return None
    tls = None
    if mode == "tls":
        tls = tls_context(settings.syslog_tls_ca, settings.syslog_tls_cert, settings.syslog_tls_key)
    path = str(Path(settings.syslog_socket))
    return SyslogSender(mode, socket_path=path, host=settings.syslog_host, port=settings.syslog_port, tls=tls)


class Forwarder:
    """A trail listener that sends every written record to syslog as RFC 5424.

    The trail stays the record of truth: a receiver that is down does not fail ``emit()``. Failures
    are counted (``failures``) and the last one kept (``last_error``); ``auditlog verify`` and the
    auditing checks read the trail itself, and syslog-ng also tails the trail file, so nothing is lost.
    After a failure the forwarder rests (1 s, doubling up to ``max_backoff``) instead of trying every
    record: a receiver that times out must not stall the trail's writer, and with it every ``emit()``.
    """

    def __init__(self, sender: SyslogSender, *, max_backoff: float = 60.0) -> None:
        self.sender = sender
        self.sent = 0
        self.failures = 0
        self.attempts = 0
        self.last_error: str | None = None
        self.max_backoff = max_backoff
        self._backoff = 0.0
        self._resume_at = 0.0

    def close(self) -> None:
        self.sender.close()

    def __call__(self, docs: list[dict[str, Any]], lines: list[bytes]) -> None:
        for i, (doc, line) in enumerate(zip(docs, lines, strict=True)):
            if time.monotonic() < self._resume_at:
                self.failures += len(docs) - i  # resting: these stay in the trail (and its file source)
                return
            self.attempts += 1
            try:
                self.sender.send(record_message(doc, line.decode("utf-8").rstrip("\n")))
            except OperationFailed as exc:
                self.failures += 1
                self.last_error = exc.message
                self._backoff = min(self.max_backoff, max(1.0, self._backoff * 2))
                self._resume_at = time.monotonic() + self._backoff
                continue
            self.sent += 1
            self._backoff = 0.0
