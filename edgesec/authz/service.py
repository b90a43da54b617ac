"""The ForwardAuth decision path and the HTTP service around it.

:meth:`Authorizer.authorize` is the whole decision for one ``/auth`` call, as a plain function of the
request headers and the peer address, so the FastAPI app built by :func:`create_app` and a bare ASGI
wrapper can share it. It answers only 200 (with all four identity headers), 401 or 403: nginx turns any
other status into a 500, and a crash must never become an allow.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from edgesec import auditing
from edgesec.auditing import AuditEvent, EventTemplate, emit
from edgesec.auditing.ecs import ip_text
from edgesec.authz.identity import (
    CertIdentity,
    IdentityRejected,
    JwtVerifier,
    TokenIdentity,
    role_clash,
)
from edgesec.authz.metrics import SharedMetrics
from edgesec.authz.policy import PolicyFiles, PolicyHolder, policy_files
from edgesec.authz.request import ForwardedRequest, RequestRejected, collect_headers, parse_forwarded
from edgesec.authz.settings import AuthzSettings
from edgesec.authz.trust import TrustState
from edgesec.errors import ConfigError, EdgesecError

__all__ = ["Authorizer", "Outcome", "audit_decision", "create_app"]

Headers = list[tuple[str, str]]


log = logging.getLogger("edgesec.authz.service")

#: ``[pki] crl_grace_hours``'s default, for an Authorizer built without a site config.
DEFAULT_CRL_GRACE_HOURS = 24.0


@dataclass
class Outcome:
    """What one call decided, for the answer, the audit event and the metrics."""

    status: int = 403
    reason: str = "denied"
    user: str = ""
    roles: tuple[str, ...] = ()
    tenant: str = ""
    auth_method: str = ""
    request: ForwardedRequest | None = None
    rule: tuple[str, ...] | None = None
    serial: str | None = None
    token_presented: bool = False
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Authorizer:
    """Identity, canonical request and casbin decision for ``/auth``; holds the reloadable state."""

    def __init__(
        self,
        settings: AuthzSettings,
        *,
        files: PolicyFiles | None = None,
        trust_dir: Path | None = None,
        clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.policy = PolicyHolder(files or policy_files(settings), on_reload=self._policy_reloaded)
        self.trust: TrustState | None = None
        if "cert" in settings.identity_order:
            if trust_dir is None:
                raise ConfigError(
                    "authz: client certificates are enabled but no trust bundle directory is set"
                )
            grace = settings.crl_grace_hours
            self.trust = TrustState(
                trust_dir, grace_hours=DEFAULT_CRL_GRACE_HOURS if grace is None else grace, clock=clock
            )
        self.notes: list[str] = []
        self.jwt: JwtVerifier | None = None
        if "jwt" in settings.identity_order:
            if settings.jwt.jwks_file or settings.jwt.public_key_files:
                self.jwt = JwtVerifier(settings.jwt)
            else:
                # The default order names jwt; with no key configured no token could ever verify.
                self.notes.append("bearer tokens are not accepted: no [authz.jwt] key is configured")
        self._jwt_seen = self._jwt_stamp()
        h = settings.headers
        self._names = (h.user, h.roles, h.tenant, h.method)
        self._break_glass = frozenset(settings.break_glass_roles)
        self._cert_header = settings.cert_header.lower()
        self._cookie = settings.jwt.cookie
        self.metrics = _Metrics()
        self.metrics.engine = lambda: self.policy.engine
        self._rand = random.Random()  # noqa: S311 -- sampling, not security

    # -- reload -----------------------------------------------------------------------------------

    def _policy_reloaded(self, ok: bool, error: str | None) -> None:
        self.metrics.reload("policy", ok)
        if not ok:
            log.error(
                "policy reload failed, the last good policy is kept: %s: %s", self.policy.files.policy, error
            )
        _audit_safely(
            AuditEvent(
                action="authz.policy.reloaded" if ok else "authz.policy.reload_failed",
                category=("configuration",),
                type=("change",) if ok else ("error",),
                outcome="success" if ok else "failure",
                severity="info" if ok else "high",
                part="authz",
                message="policy reloaded" if ok else f"policy reload failed, last good policy kept: {error}",
                fields={
                    "file.path": str(self.policy.files.policy),
                    "edgesec.authz.policy_generation": self.policy.generation,
                    **({"error.message": error} if error else {}),
                },
            )
        )

    def _jwt_files(self) -> list[Path]:
        j = self.settings.jwt
        return [
            Path(f).expanduser() for f in ([j.jwks_file] if j.jwks_file else []) + list(j.public_key_files)
        ]

    def _jwt_stamp(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for f in self._jwt_files():
            try:
                st = f.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((-1, -1, -1))
        return tuple(out)

    def _reload_jwt(self, force: bool = False) -> None:
        """Re-read the token keys when their files changed (key rotation); keep the old keys on error."""
        if self.jwt is None:
            return
        stamp = self._jwt_stamp()
        if stamp == self._jwt_seen and not force:
            return
        self._jwt_seen = stamp
        try:
            self.jwt = JwtVerifier(self.settings.jwt)
        except EdgesecError as exc:
            self.metrics.reload("jwt", False)
            _audit_safely(
                AuditEvent(
                    action="authz.jwt_keys.reload_failed",
                    category=("configuration",),
                    type=("error",),
                    outcome="failure",
                    severity="high",
                    part="authz",
                    message=f"token keys did not reload, the previous keys are kept: {exc.message}",
                    fields={"error.message": exc.message},
                )
            )
            return
        self.metrics.reload("jwt", True)

    def check_reload(self) -> None:
        """Poll the policy, trust and token key files (the watcher thread calls this)."""
        self._reload_jwt()
        self.policy.check()
        if self.trust is not None:
            changed = self.trust.check()
            if changed is not None:
                self.metrics.reload("trust", changed)

    def force_reload(self) -> None:
        """SIGHUP: reload policy, trust bundle and token keys now, changed or not."""
        self._reload_jwt(force=True)
        self.policy.reload()
        if self.trust is not None:
            self.metrics.reload("trust", self.trust.reload())

    # -- the decision -----------------------------------------------------------------------------

    def authorize(self, headers: Iterable[tuple[str, str]], client_ip: str | None) -> tuple[int, Headers]:
        """Decide one forward-auth call: ``(status, response headers)``; status is 200, 401 or 403."""
        t0 = time.perf_counter()
        out = Outcome()
        try:
            self._decide(headers, out)
        except Exception as exc:  # noqa: BLE001 -- fail closed: any fault in the decision is a denial
            out.status, out.reason, out.detail = 403, "internal-error", f"{type(exc).__name__}: {exc}"
        answer = self._answer(out)
        self.metrics.observe(out, time.perf_counter() - t0)
        try:
            self._audit(out, client_ip, headers)
        except Exception:  # noqa: BLE001 -- an audit fault must not become a 500 or an unaudited break-glass
            out.extra["audit_failed"] = bool(out.extra.get("break_glass"))
        # The audit of a break-glass use must be on disk before the request goes through, and while
        # the trail cannot be written nothing is allowed (fail closed; /readyz answers 503).
        if out.status == 200 and (out.extra.get("audit_failed") or auditing.trail_failing()):
            out.status, out.reason = 403, "audit-failed"
            return self._answer(out)
        return answer

    def _decide(self, raw_headers: Iterable[tuple[str, str]], out: Outcome) -> None:
        hdrs: dict[str, str]
        try:
            hdrs, dups = collect_headers(raw_headers)
            req = parse_forwarded(hdrs, dups)
        except RequestRejected as exc:
            out.reason, out.detail = exc.reason, str(exc)
            return
        out.request = req
        out.extra["forwarded_for"] = hdrs.get("x-forwarded-for")
        cert: CertIdentity | None = None
        token: TokenIdentity | None = None
        try:
            if self.trust is not None and self._cert_header in hdrs:
                cert = self.trust.verify_header(hdrs[self._cert_header], self.settings.cert_identity)
                out.serial = cert.serial
            if self.jwt is not None:
                raw_token = self._token(hdrs)
                if raw_token is not None:
                    out.token_presented = True
                    token = self.jwt.verify(raw_token)
        except IdentityRejected as exc:
            out.status, out.reason, out.detail = 401, exc.reason, str(exc)
            return
        if cert is None and token is None:
            out.status, out.reason = 401, "no-identity"
            return
        if cert is not None and token is not None and cert.user != token.user:
            out.reason, out.detail = (
                "identity-mismatch",
                f"certificate names {cert.user}, token names {token.user}",
            )
            return
        user = ""
        for kind in self.settings.identity_order:
            if kind == "cert" and cert is not None:
                user, out.auth_method = cert.user, "cert" if token is None else "cert+jwt"
                break
            if kind == "jwt" and token is not None:
                user, out.auth_method = token.user, "jwt" if cert is None else "jwt+cert"
                break
        out.user = user
        engine = self.policy.engine
        clash = role_clash(user, engine.role_names)
        if clash is not None:
            out.status, out.reason, out.detail = 401, "identity-names-role", clash
            return
        tenant = self._tenant(req, token, out)
        if tenant is None:
            return
        out.tenant = tenant
        decision = engine.decide(user, tenant, req.path, req.method)
        out.roles = tuple(decision.roles)
        out.rule = tuple(decision.rule) if decision.rule is not None else None
        if not decision.allowed:
            out.reason = "policy-deny" if decision.effect == "deny" else "no-matching-rule"
            return
        # Spellings a backend may treat as the same resource must not dodge an explicit deny rule.
        for variant in _variants(req.path):
            d = engine.denies(user, tenant, variant, req.method)
            if d is not None:
                out.rule = tuple(d.rule) if d.rule is not None else None
                out.reason, out.detail = "policy-deny-variant", f"denied for the equivalent path {variant}"
                return
        out.status, out.reason = 200, "allowed"
        if self._break_glass.intersection(out.roles):
            out.extra["break_glass"] = True

    def _token(self, hdrs: dict[str, str]) -> str | None:
        bearer = None
        auth = hdrs.get("authorization")
        if auth is not None:
            scheme, _, rest = auth.partition(" ")
            if scheme.lower() == "bearer":
                bearer = rest.strip()
                if not bearer:
                    raise IdentityRejected("jwt-malformed", "empty bearer token")
        cookie_tok = None
        if self._cookie and "cookie" in hdrs:
            found = [
                v.strip()
                for k, _, v in (c.strip().partition("=") for c in hdrs["cookie"].split(";"))
                if k.strip() == self._cookie
            ]
            if len(found) > 1:
                raise IdentityRejected("jwt-ambiguous", "the token cookie is set more than once")
            cookie_tok = found[0] if found else None
        if bearer is not None and cookie_tok is not None and bearer != cookie_tok:
            raise IdentityRejected("jwt-ambiguous", "bearer header and cookie carry different tokens")
        return bearer if bearer is not None else cookie_tok

    def _tenant(self, req: ForwardedRequest, token: TokenIdentity | None, out: Outcome) -> str | None:
        s = self.settings
        from_host = s.tenant_hosts.get(req.host) if req.host is not None else None
        if s.tenant_hosts and req.host is not None and from_host is None and s.default_tenant is None:
            out.reason, out.detail = "unknown-host", f"host {req.host} maps to no tenant"
            return None
        from_claim = token.tenant if token is not None else None
        if from_host is not None and from_claim is not None and from_host != from_claim:
            out.reason, out.detail = "tenant-mismatch", f"host says {from_host}, token says {from_claim}"
            return None
        tenant = from_host or from_claim or s.default_tenant
        if not tenant:
            out.reason = "no-tenant"
            return None
        return tenant

    def _answer(self, out: Outcome) -> tuple[int, Headers]:
        if out.status == 200:
            n_user, n_roles, n_tenant, n_method = self._names
            return 200, [
                (n_user, out.user),
                (n_roles, ",".join(out.roles)),
                (n_tenant, out.tenant),
                (n_method, out.auth_method),
                ("Cache-Control", "no-store"),
            ]
        hdrs: Headers = [("Cache-Control", "no-store")]
        if out.status == 401 and self.jwt is not None:
            if out.token_presented:
                hdrs.append(("WWW-Authenticate", 'Bearer realm="edgesec", error="invalid_token"'))
            else:
                hdrs.append(("WWW-Authenticate", 'Bearer realm="edgesec"'))
        return out.status, hdrs

    def _audit(self, out: Outcome, client_ip: str | None, headers: Iterable[tuple[str, str]]) -> None:
        allowed = out.status == 200
        glass = bool(out.extra.get("break_glass"))
        rate = self.settings.allow_sample_rate
        if allowed and not glass and not (rate > 0 and self._rand.random() < rate):
            return
        if not audit_decision(out, client_ip) and glass:
            out.extra["audit_failed"] = True


def audit_decision(out: Outcome, client_ip: str | None) -> bool:
    """Write the audit event of a decision to the trail; False if it could not be written.

    With group commit the field values go straight into the event kind's record shape (no event
    object or nested document per denial); values of another type than declared, or another
    durability, go through :class:`AuditEvent` and ``emit``. Both give the same record."""
    allowed = out.status == 200
    glass = bool(out.extra.get("break_glass"))
    trail = auditing.current_trail()
    source, peer = _addresses(out, client_ip)
    template = _decision_event(glass, allowed, out.status == 401)
    message = _message(out, allowed)
    try:
        keys, values, checked = _record_fields(out, source, peer, allowed)
        rec = None
        if checked and trail.durability == "group":
            rec = template.record(keys, values, message, site=auditing.site())
        if rec is None:  # values to check, another durability, or no shape: the event itself
            emit(template.event(keys, values, message))
        else:
            trail.submit(rec)
    except (OSError, EdgesecError):
        return False
    return True


def _message(out: Outcome, allowed: bool) -> str:
    req = out.request
    return (
        f"{'allow' if allowed else 'deny'} {out.user or '-'} {req.method if req else '-'} "
        f"{req.path if req else '-'}: {out.reason}"
    )


def _record_fields(
    out: Outcome, source: str | None, peer: str | None, allowed: bool
) -> tuple[tuple[str, ...], list[Any], bool]:
    """The audit fields of a decision: keys, values, and whether the values are as ``to_document``
    writes them (strings; the roles strings, in a tuple that is written as a list; the status an
    int) -- otherwise they go through the event's own checks."""
    req = out.request
    roles = tuple(out.roles)
    fields = [
        f
        for f in (
            # The two values that are not strings first (never None: the check below counts on it).
            ("user.roles", roles),
            ("http.response.status_code", out.status),
            ("user.id", out.user or None),
            ("edgesec.authz.tenant", out.tenant),
            ("edgesec.authz.decision", "allow" if allowed else "deny"),
            ("edgesec.authz.reason", out.reason),
            ("edgesec.authz.auth_method", out.auth_method),
            ("rule.name", ", ".join(out.rule) if out.rule else None),
            ("tls.client.x509.serial_number", out.serial),
            ("http.request.method", req.method if req is not None else None),
            ("url.domain", req.host if req is not None and req.host else None),
            ("url.path", req.path if req is not None else None),
            ("url.original", req.raw_uri[:2048] if req is not None else None),
            ("edgesec.authz.detail", out.detail[:512] if out.detail else None),
            ("source.ip", source),
            ("client.ip", peer),
        )
        if f[1] is not None
    ]
    keys = tuple([k for k, _ in fields])
    values: list[Any] = [v for _, v in fields]
    checked = (
        type(out.status) is int
        and set(map(type, roles)) <= _STR_ONLY
        and set(map(type, values[2:])) <= _STR_ONLY
    )
    return keys, values, checked


_STR_ONLY = frozenset({str})


@functools.cache
def _decision_event(glass: bool, allowed: bool, unauthenticated: bool) -> EventTemplate:
    """The audit event of a decision, but its fields and message."""
    return EventTemplate(
        action="authz.break_glass" if glass else "authz.decision",
        category=("web", "authentication") if unauthenticated else ("web", "iam"),
        type=("access", "allowed") if allowed else ("access", "denied"),
        outcome="success" if allowed else "failure",
        severity="high" if glass else ("info" if allowed else "medium"),
        part="authz",
    )


def _variants(path: str) -> Iterator[str]:
    """Other spellings of ``path`` that case-insensitive or slash-lenient backends serve the same."""
    seen = {path}
    base = path.rstrip("/") or "/"
    for v in (path.lower(), base, base + "/" if base != "/" else "/", base.lower()):
        if v not in seen:
            seen.add(v)
            yield v


def _addresses(out: Outcome, client_ip: str | None) -> tuple[str | None, str | None]:
    """``source.ip`` and ``client.ip`` of a decision's event. The proxy appends the address it saw to
    X-Forwarded-For: its last entry is the client; the peer of this connection is the proxy itself
    (and the source when nothing was forwarded)."""
    peer = _valid_ip(client_ip)
    xff = out.extra.get("forwarded_for")
    source = _valid_ip(xff.rsplit(",", 1)[-1].strip()) if isinstance(xff, str) and xff else None
    return source or peer, peer


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    return ip_text(value)


def _flush_audit(timeout: float = 10.0) -> None:
    """Make every queued audit event durable; a trail that cannot be written is logged, not raised."""
    try:
        auditing.flush(timeout)
    except (OSError, EdgesecError) as exc:
        log.error("audit events queued at shutdown could not be written: %s", exc)


def _audit_safely(event: AuditEvent) -> bool:
    """Emit; a trail that cannot be written is reported, never a crash of the decision path."""
    try:
        emit(event)
    except (OSError, EdgesecError):
        return False
    return True


class _Metrics:
    """Prometheus metrics of the service: counters in a block shared by every worker
    (:mod:`edgesec.authz.metrics`), summed on scrape; its own registry, so tests can build many apps."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.shared = SharedMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.engine: Callable[[], Any] = lambda: None
        self.registry.register(self.shared.collector(self._engine_gauges))

    def observe(self, out: Outcome, seconds: float) -> None:
        self.shared.observe(out.status, seconds)

    def reload(self, kind: str, ok: bool) -> None:
        self.shared.reload(kind, ok)

    def publish_engine(self) -> None:
        """This worker's engine cache counters into the shared block (on scrape and on each reload poll)."""
        engine = self.engine()
        stats = _stats_of(engine)
        hits, misses = stats.get("cache_hits"), stats.get("cache_misses")
        if isinstance(hits, int | float) and isinstance(misses, int | float):
            self.shared.publish_engine(engine, float(hits), float(misses))

    def _engine_gauges(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        self.publish_engine()
        rules = _stats_of(self.engine()).get("rules")
        if isinstance(rules, int):
            yield GaugeMetricFamily("edgesec_authz_policy_rules", "Rules in the enforced policy", value=rules)


def _stats_of(engine: Any) -> dict[str, Any]:
    stats = getattr(engine, "stats", None)
    return dict(stats()) if callable(stats) else {}


class _Watcher:
    """Polls the policy and trust files; SIGHUP wakes it for an immediate reload."""

    def __init__(self, authorizer: Authorizer, interval: float) -> None:
        self.authorizer = authorizer
        self.interval = interval
        self._stop = threading.Event()
        self._force = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgesec-authz-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def hup(self) -> None:
        # Runs in a signal handler: only set flags, the thread does the work.
        self._force.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                # The engine that is about to be replaced has its last cache counts recorded first.
                self.authorizer.metrics.publish_engine()
                if self._force.is_set():
                    self._force.clear()
                    self.authorizer.force_reload()
                else:
                    self.authorizer.check_reload()
            except Exception:  # noqa: BLE001,S112 -- the watcher must survive; the next poll retries
                continue


def create_app(
    settings: AuthzSettings,
    *,
    trust_dir: Path | None = None,
    files: PolicyFiles | None = None,
    watch: bool = True,
    authorizer: Authorizer | None = None,
) -> Any:
    """The FastAPI app: ``/auth``, ``/healthz``, ``/readyz``, ``/metrics``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    authz = authorizer or Authorizer(settings, files=files, trust_dir=trust_dir)
    watcher = _Watcher(authz, settings.reload_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if watch:
            watcher.start()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGHUP, lambda *_: watcher.hup())
        try:
            yield
        finally:
            if watch:
                watcher.stop()
            # Events queued by group commit are written before the process goes (a worker leaves by
            # os._exit, which runs no exit handlers).
            _flush_audit()

    app = FastAPI(title="edgesec authz", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.authorizer = authz
    app.state.watcher = watcher

    def auth(request: Request) -> Response:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        client = request.client.host if request.client else None
        status, hdrs = authz.authorize(raw, client)
        resp = Response(content=b"", status_code=status)  # headers only, as the lean path answers
        for k, v in hdrs:
            resp.headers[k] = v
        return resp

    app.add_api_route(
        "/auth",
        auth,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"],
        include_in_schema=False,
    )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        body = readiness(authz)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(content=generate_latest(authz.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def readiness(authz: Authorizer) -> dict[str, Any]:
    """What ``/readyz`` answers: ready only with a policy and a fresh trust bundle and CRL."""
    p = authz.policy
    engine = p.engine
    policy: dict[str, Any] = {
        "ok": p.last_error is None,
        "generation": p.generation,
        "loaded_at": p.loaded_at,
        "rules": getattr(engine, "rule_count", None),
        "indexed": getattr(engine, "indexed", None),
        "engine": getattr(engine, "note", ""),
        "file": str(p.files.policy),
    }
    if p.last_error:
        policy["error"] = p.last_error
        policy["note"] = "the last good policy is still enforced"
    body: dict[str, Any] = {"ready": True, "process": os.getpid(), "policy": policy}
    if authz.notes:
        body["notes"] = list(authz.notes)
    # A decision that cannot be recorded is a gap in the evidence: not ready until the trail takes writes.
    trail = auditing.current_trail()
    body["audit"] = {"ok": True, "trail": str(trail.dir)}
    audit_error = trail.error()
    if audit_error is not None:
        body["audit"].update(ok=False, error=audit_error, note="allows are denied until the trail is written")
        body["ready"] = False
    if authz.trust is not None:
        t = authz.trust.status()
        body["trust"] = t
        if not t["ok"]:
            body["ready"] = False
    return body
