"""What a site chooses for its syslog-ng pipeline (validated: bad input is an InputError), and syslog-ng quoting."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgesec.auditing.trail import MAX_RECORD_BYTES
from edgesec.errors import InputError

KINDS = ("audit", "auditd", "checkpoint", "journald", "syslog", "deadletter")
#: syslog-ng's log-msg-size(): a trail record (at most MAX_RECORD_BYTES) and its RFC 5424 header fit.
LOG_MSG_SIZE = MAX_RECORD_BYTES + 64 * 1024
#: A value int64() is given only after it matched this (so no cast can fail). No leading zero: 3.38 writes
#: int64(0998) as the literal 0998, which is not JSON.
INT64 = "^(0|[1-9][0-9]{0,17})$"


@dataclass(frozen=True)
class NetworkSource:
    """A TLS syslog listener for other hosts (RFC 5425), clients verified against the site CA."""

    port: int = 6514
    ip: str = "0.0.0.0"  # noqa: S104 - a listener for other hosts is the point of this source
    ca_file: str = "/etc/edgesec/trust/ca-bundle.pem"
    cert_file: str = "/etc/edgesec/syslog-server/fullchain.pem"
    key_file: str = "/etc/edgesec/syslog-server/key.pem"
    trusted_dn: tuple[str, ...] = ()
    crl_dir: str | None = None


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the generated configuration depends on (paths are the target host's)."""

    trail_file: str = "/var/lib/edgesec/audit/trail.jsonl"
    audit_log: str | None = "/var/log/audit/audit.log"
    journald: bool = False
    network: NetworkSource | None = None
    # edgesec's own RFC 5424 output: "tcp" or "tls" on loopback, "unix" on a socket, or "off".
    local_syslog: str = "tcp"
    local_syslog_port: int = 6514
    local_syslog_socket: str = "/run/edgesec/syslog.sock"
    es_urls: tuple[str, ...] = ("https://127.0.0.1:9200",)
    ca_file: str = "/etc/edgesec/trust/ca-bundle.pem"
    cert_file: str = "/etc/edgesec/syslog-ng/fullchain.pem"
    key_file: str = "/etc/edgesec/syslog-ng/key.pem"
    index_prefix: str = "edgesec"
    archive_dir: str = "/var/log/edgesec/archive"
    disk_buffer_dir: str = "/var/lib/syslog-ng/edgesec"
    disk_buffer_bytes: int = 1024 * 1024 * 1024
    batch_lines: int = 500
    batch_timeout_ms: int = 1000
    retries: int = 5
    workers: int = 4
    time_reopen: int = 10
    site: str = "edge-site"
    slog: bool = False
    # "http": our own _bulk body with create actions (needs only syslog-ng-mod-http);
    # "elasticsearch-http": the SCL wrapper (Debian: syslog-ng-scl), index actions with the same _ids.
    driver: str = "http"
    slog_key: str = "/etc/syslog-ng/slog/host.key"
    slog_mac: str = "/var/log/edgesec/archive/slog.mac"
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.driver not in ("http", "elasticsearch-http"):
            raise InputError(f"driver must be http or elasticsearch-http, not {self.driver!r}")
        if self.local_syslog not in ("off", "unix", "tcp", "tls"):
            raise InputError(
                f"local syslog transport must be off, unix, tcp or tls, not {self.local_syslog!r}"
            )
        if not self.es_urls:
            raise InputError(
                "at least one Elasticsearch URL is needed ([auditing] elasticsearch_urls or --es)"
            )
        for u in self.es_urls:
            if not u.startswith("https://"):
                raise InputError(f"Elasticsearch URL must use https (mutual TLS): {u}")
        for p in (
            self.trail_file,
            self.archive_dir,
            self.disk_buffer_dir,
            self.ca_file,
            self.cert_file,
            self.key_file,
        ):
            check_path(p)
        if (
            not self.index_prefix.replace("-", "").replace("_", "").isalnum()
            or self.index_prefix != self.index_prefix.lower()
        ):
            raise InputError(f"index prefix must be lowercase letters, digits, - or _: {self.index_prefix!r}")


def check_path(p: str) -> None:
    if not p.startswith("/") or any(c in p for c in "\"'\n\\`$"):
        raise InputError(f"path for the syslog-ng config must be absolute and free of quotes and $: {p!r}")


def quote(s: str) -> str:
    """A syslog-ng double-quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def squote(s: str) -> str:
    """A syslog-ng single-quoted string (no escapes inside; we never need a single quote)."""
    if "'" in s:
        raise InputError(f"cannot single-quote {s!r}")
    return "'" + s + "'"
