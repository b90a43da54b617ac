"""edgesec.auditing: the audit trail every part writes to, and the pipeline that ships it.

Every part records what it did through one function::

    from edgesec.auditing import AuditEvent, emit
    emit(AuditEvent(action="pki.certificate.issued", category=("iam",), type=("creation",), part="pki",
                    fields={"file.x509.serial_number": serial}))

``emit()`` appends to the host's hash-chained trail (see :mod:`edgesec.auditing.trail`) with the
durability the site config sets (``[auditing] durability``; default ``fsync``: durable on return),
and, with ``[auditing] syslog = "unix" | "tcp" | "tls"``, also sends each record as RFC 5424.
Nothing else in edgesec knows about syslog or Elasticsearch.

Importing this package is cheap: the trail writer (and its exit and fork hooks) loads on first use, so
``import edgesec.config`` (which reads ``edgesec.auditing.settings``) does not load it. Library code never
reads the CLI's state: the trail comes from :func:`configure` / :func:`configure_from`, else from the config
:func:`use_config` names (the CLI names its own at start), else from :func:`edgesec.config.load_config`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesec import audit_sink

if TYPE_CHECKING:
    from edgesec.auditing.ecs import AuditEvent, EventTemplate
    from edgesec.auditing.trail import Trail, TrailWriteFailed
    from edgesec.config import LoadedConfig

_LAZY = {
    "AuditEvent": "edgesec.auditing.ecs",
    "EventTemplate": "edgesec.auditing.ecs",
    "Trail": "edgesec.auditing.trail",
    "TrailWriteFailed": "edgesec.auditing.trail",
}


def __getattr__(name: str) -> Any:
    """``AuditEvent``, ``Trail``... load their modules on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "TRAIL_SINK",
    "AuditEvent",
    "EventTemplate",
    "Trail",
    "TrailWriteFailed",
    "configure",
    "configure_from",
    "configured",
    "current_trail",
    "emit",
    "flush",
    "site",
    "trail_error",
    "trail_failing",
    "use_config",
]

_lock = threading.Lock()
_trail: Trail | None = None
_site: str | None = None
_config_source: Callable[[], LoadedConfig] | None = None


def configure(
    trail_dir: Path,
    *,
    durability: str = "fsync",
    group_commit_ms: int = 50,
    site: str | None = None,
    rotate_bytes: int | None = None,
    rotate_daily: bool = False,
) -> Trail:
    """Point ``emit()`` at a trail directory (the CLI and services call this once at start)."""
    from edgesec.auditing.trail import Trail

    global _trail, _site
    with _lock:
        old = _trail
        new = Trail(
            Path(trail_dir),
            durability=durability,
            group_commit_ms=group_commit_ms,
            rotate_bytes=rotate_bytes,
            rotate_daily=rotate_daily,
        )
        if old is not None and old.dir == new.dir:
            # Same trail, other settings (authz switching to group commit): keep its listeners
            # (the RFC 5424 forwarder) rather than closing them with the old object.
            new.listeners, old.listeners = old.listeners, []
        _trail = new
        _site = site
    if old is not None:
        old.close()
    return new


def use_config(source: Callable[[], LoadedConfig] | None) -> Callable[[], LoadedConfig] | None:
    """Name where the site config comes from when ``emit()`` first needs a trail (the CLI passes its
    lazily loaded config at start, so a command that records nothing loads nothing); returns the
    previous source, for the caller to put back. ``None``: :func:`edgesec.config.load_config`."""
    global _config_source
    with _lock:
        previous, _config_source = _config_source, source
    return previous


def configure_from(cfg: LoadedConfig) -> Trail:
    """Point ``emit()`` at the trail ``cfg`` describes (``[auditing]``), with its RFC 5424 forwarder."""
    from edgesec.auditing.syslog import Forwarder, sender_from_settings

    a = cfg.settings.auditing
    trail = configure(
        cfg.path_in_home(a.trail_dir, "audit"),
        durability=a.durability,
        group_commit_ms=a.group_commit_ms,
        site=cfg.settings.site.name,
        rotate_bytes=a.rotate_bytes,
        rotate_daily=a.rotate_daily,
    )
    sender = sender_from_settings(a)
    if sender is not None:
        trail.listeners.append(Forwarder(sender))
    return trail


def _from_config() -> Trail:
    source = _config_source
    if source is None:
        from edgesec.config import load_config

        return configure_from(load_config())
    return configure_from(source())


def current_trail() -> Trail:
    """The configured trail, or the one the site config (or home) names."""
    t = _trail
    if t is None:
        t = _from_config()
    return t


def emit(event: AuditEvent, *, wait: bool | None = None) -> dict[str, Any] | None:
    """Record ``event`` in the host's trail.

    With ``fsync``/``none`` durability the record is written before returning and is returned. With
    ``group`` it is queued and ``None`` returned, unless ``wait=True`` asks to block until it is durable.
    """
    trail = current_trail()
    if trail.durability == "group":
        # Queued as values against a compiled shape: the writer thread renders the canonical line
        # without a nested dict per record (the authz hot path queues one per denial).
        ticket = trail.submit(event.prepare(site=_site) or event.to_document(site=_site))
        if wait:
            trail.wait_durable(ticket)
        return None
    return trail.append(event.to_document(site=_site))


def trail_error() -> str | None:
    """Why the configured trail cannot be written now, or ``None`` (for ``/readyz`` and health checks)."""
    t = _trail
    return None if t is None else t.error()


def trail_failing() -> bool:
    """Whether the configured trail's last write failed (cheap: the authz decision path asks it)."""
    t = _trail
    return t is not None and t.failing


def site() -> str | None:
    """The site name events are written with (``[site] name``); configures the trail as :func:`emit` would,
    so a document built ahead of its write (a journaled event) carries the same site."""
    if _trail is None:
        current_trail()
    return _site


def flush(timeout: float = 30.0) -> None:
    """Wait until every queued event is durable (no-op when nothing is queued). Raises
    :class:`~edgesec.auditing.trail.TrailWriteFailed`, naming how many events are not on disk, when
    they cannot be written or are not written within ``timeout``."""
    t = _trail
    if t is not None and not t.flush(timeout):
        from edgesec.auditing.trail import TrailWriteFailed

        raise TrailWriteFailed(f"audit trail {t.path}: queued events not written within {timeout:g} s")


@contextmanager
def configured(trail_dir: Path, **kwargs: Any) -> Iterator[Trail]:
    """Temporarily point ``emit()`` at another trail (tests, tools)."""
    from edgesec.auditing.trail import Trail

    global _trail, _site
    site = kwargs.pop("site", None)
    trail = Trail(
        Path(trail_dir), **kwargs
    )  # its own object: the saved trail and its listeners stay as they are
    with _lock:
        saved = (_trail, _site)
        _trail, _site = trail, site
    try:
        yield trail
    finally:
        trail.close()
        with _lock:
            _trail, _site = saved


class TrailSink:
    """The audit API as :class:`edgesec.audit_sink.AuditSink`: how the parts below ``auditing`` (pki) write to
    the same trail as :func:`emit`, with the same site name, without importing this package."""

    def document(self, event: audit_sink.Event) -> dict[str, Any]:
        from edgesec.auditing.ecs import AuditEvent

        ev = AuditEvent(
            action=event.action,
            category=event.category,
            type=event.type,
            outcome=event.outcome,
            message=event.message,
            part=event.part,
            fields=event.fields,
        )
        return ev.to_document(site=site())

    def write(self, documents: Sequence[Mapping[str, Any]]) -> None:
        trail = current_trail()
        ticket = 0
        for d in documents:
            ticket = trail.submit(d if isinstance(d, dict) else dict(d))
        if documents and trail.durability != "none":
            trail.wait_durable(ticket)


TRAIL_SINK = TrailSink()
# Importing the audit API makes its trail the sink of every part (the CLI imports it at start).
audit_sink.install(TRAIL_SINK)
