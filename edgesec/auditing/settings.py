"""The ``[auditing]`` section of ``edgesec.toml``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Durability = Literal["fsync", "group", "none"]


class AuditingSettings(BaseModel):
    """Where the audit trail lives and how durable each ``emit()`` is.

    ``durability``:
      * ``fsync`` (default) -- ``emit()`` returns after the record is written and fdatasync'd;
      * ``group`` -- ``emit()`` queues the record; a writer thread writes and fdatasyncs batches, so a
        record is on disk within ``group_commit_ms`` (plus one write) of ``emit()``; ``flush()`` waits;
      * ``none`` -- written with ``write()`` only; an OS crash may lose the last records.

    ``edgesec authz serve`` audits its decisions by ``group`` commit unless this key is set explicitly in
    the site config, in which case the site's choice is honoured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    trail_dir: str | None = Field(None, description="audit trail directory (default: <home>/audit)")
    durability: Durability = "fsync"
    group_commit_ms: int = Field(50, ge=1, le=10_000)
    rotate_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    rotate_daily: bool = True
    syslog: Literal["off", "unix", "tcp", "tls"] = "off"
    syslog_socket: str = "/dev/log"
    syslog_host: str = "127.0.0.1"
    syslog_port: int = Field(6514, ge=1, le=65535)
    syslog_tls_ca: str | None = Field(None, description="CA bundle that verifies the syslog receiver (tls)")
    syslog_tls_cert: str | None = Field(None, description="client certificate for mutual TLS to syslog-ng")
    syslog_tls_key: str | None = Field(None, description="its private key")
    checkpoint_cert: str | None = Field(None, description="signing certificate (PEM) for trail checkpoints")
    checkpoint_key: str | None = Field(None, description="its private key (PEM)")
    checkpoint_signer: str | None = Field(
        None,
        description="or: the name of a signing certificate in the site CA store (pki issue signing NAME)",
    )
    ship_state: str | None = Field(
        None, description="ship resume state file (default: <trail_dir>/ship.state)"
    )
    elasticsearch_urls: list[str] = Field(default_factory=list)
    elasticsearch_cert: str | None = Field(
        None, description="client certificate (PEM) for mutual TLS to Elasticsearch (ship, push)"
    )
    elasticsearch_key: str | None = Field(None, description="its private key (PEM)")
    index_prefix: str = "edgesec"
    archive_dir: str = "/var/log/edgesec/archive"
    retention_days: int | None = Field(None, ge=1, description="default: from the site profile")
