"""The lean ``/auth`` path: a bare ASGI app, a certificate-verification cache and group-committed audit.

Every request of the site costs one ``/auth`` call, so this path avoids the per-request work that is
not the decision itself:

* **No framework routing.** ``/auth`` is answered by a plain ASGI callable that hands the raw headers
  to :meth:`edgesec.authz.service.Authorizer.authorize` -- the same decision function as the FastAPI
  app, run inline on the event loop (it never waits on I/O; see the audit point below). Everything
  else (``/healthz``, ``/readyz``, ``/metrics``, and the lifespan that starts the policy watcher) goes
  to the FastAPI app of :func:`edgesec.authz.service.create_app`.
* **Verified certificates are cached** by the forwarded header value (or, for a parsed chain, by
  the certificates' DER encoding, which ``Certificate`` hashes and compares), in
  :class:`CertVerifyCache`; a hit skips parsing and verification. A cached verification is
  dropped, whichever comes first:

  1. at once when the trust bundle or its CRLs are reloaded (any new bundle clears the cache). The
     watcher polls the files every ``authz.reload_interval_s`` (default 1 s) and SIGHUP reloads at
     once, so **a revocation takes effect within ``reload_interval_s`` of the new CRL being published
     -- the same bound as without the cache**;
  2. when the certificate expires;
  3. when any CRL of the bundle passes nextUpdate + grace (from then on every certificate is denied);
  4. ``cert_cache_ttl_s`` (default 30 s) after it was verified, in any case.

  Failed verifications are never cached.
* **Audit events by group commit.** The process's audit trail is switched to the foundation's
  ``group`` durability: ``emit()`` queues the event and the trail's writer thread writes and
  fdatasyncs whatever has queued, in one batch. A 403 is therefore answered before its event is on
  disk; **the event is durable within ``group_commit_ms`` (default 50 ms) plus one write and fdatasync
  of the batch**, and a failing disk surfaces on the next event. The one exception is break-glass: an
  allowed break-glass request is answered only after its event is durable (flushed), and denied if it
  cannot be made durable -- as the service promises without the hot path.
* **Cheap denial records.** A decision's event is not built as an event object and a nested document:
  its field values are filled into the text of a record shape compiled once (see
  :mod:`edgesec.auditing.prepared`), and the writer only adds the sequence number and the two hashes.
  Once a client has been denied the same way a few times (same user, roles, rule, addresses...),
  those values are fixed into a shape of their own and a denial fills in only its path. The record
  on disk is byte for byte the one the plain event path writes (hypothesis-tested).
* **Headers only.** Every answer, 200, 401 or 403, has an empty body: the status says it, and a
  body would cost a second ``send()`` per denial (about a fifth of the denial rate here).
* **No collector stalls.** Once the app is built, and after each policy reload, the heap is frozen
  (``gc.freeze``): full collections no longer walk the policy (about 100 ms with 10,000 rules here,
  during which every queued request waits; 4 ms after freezing).
"""

from __future__ import annotations

import datetime as dt
import gc
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from edgesec import auditing
from edgesec.authz.identity import CertIdentity, parse_cert_header
from edgesec.authz.policy import PolicyFiles
from edgesec.authz.service import Authorizer, Outcome, create_app
from edgesec.authz.settings import AuthzSettings
from edgesec.authz.trust import TrustState
from edgesec.errors import EdgesecError

__all__ = [
    "DEFAULT_CERT_CACHE_TTL_S",
    "CertVerifyCache",
    "HotAuthorizer",
    "create_hot_app",
    "use_group_commit",
]

DEFAULT_CERT_CACHE_TTL_S = 30.0
#: How long an allowed break-glass request waits for its event to be durable before it is denied.
BREAK_GLASS_FLUSH_TIMEOUT_S = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class CertVerifyCache:
    """``TrustState.verify`` with successful verifications cached by certificate chain.

    Stands in for the :class:`TrustState` it wraps (every other attribute is the wrapped one's), so
    the service's watcher, ``/readyz`` and reloads work unchanged. See the module docstring for when a
    cached verification is dropped.
    """

    def __init__(
        self,
        trust: TrustState,
        *,
        ttl_s: float = DEFAULT_CERT_CACHE_TTL_S,
        max_entries: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trust = trust
        self.ttl_s = float(ttl_s)
        self.max_entries = max(0, max_entries)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._bundle: object = None
        self._bundle_deadline = float("inf")  # wall-clock time when the first CRL passes nextUpdate+grace
        self._entries: dict[tuple[Any, ...], tuple[CertIdentity, float]] = {}
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trust, name)

    def _sync_bundle(self) -> None:
        bundle = self._trust.bundle
        if bundle is self._bundle:
            return
        with self._lock:
            if bundle is self._bundle:
                return
            # A new bundle (new CRL, new CA): nothing verified against the old one counts any more.
            self._entries = {}
            deadline = float("inf")
            if bundle is not None:
                for rl in bundle.crls.values():
                    if rl.next_update is not None:
                        deadline = min(deadline, (rl.next_update + self._trust.grace).timestamp())
            self._bundle_deadline = deadline
            self._bundle = bundle

    def verify(self, chain: Sequence[x509.Certificate], identity_source: str) -> CertIdentity:
        """The identity of a verified chain; raises ``IdentityRejected`` (never cached)."""
        return self._cached(
            ("chain", tuple(chain), identity_source), lambda: self._trust.verify(chain, identity_source)
        )

    def verify_header(self, value: str, identity_source: str) -> CertIdentity:
        """The identity of a client-certificate header value (keyed by the value: no parsing on a hit)."""
        inner = getattr(self._trust, "verify_header", None)
        if inner is not None:
            miss: Callable[[], CertIdentity] = lambda: inner(value, identity_source)  # noqa: E731
        else:
            miss = lambda: self._trust.verify(parse_cert_header(value), identity_source)  # noqa: E731
        return self._cached(("header", value, identity_source), miss)

    def _cached(self, key: tuple[Any, ...], verify: Callable[[], CertIdentity]) -> CertIdentity:
        self._sync_bundle()
        now = self._monotonic()
        entries = self._entries
        hit = entries.get(key)
        if hit is not None and hit[1] > now and self._trust.clock() < self._bundle_deadline:
            self.hits += 1
            return hit[0]
        self.misses += 1
        identity = verify()
        if not self.max_entries:
            return identity
        wall = self._trust.clock()
        lifetime = min(self.ttl_s, self._bundle_deadline - wall)
        try:
            not_after = dt.datetime.fromisoformat(identity.not_after).timestamp()
            lifetime = min(lifetime, not_after - wall)
        except ValueError:
            lifetime = 0.0  # an expiry we cannot read: do not cache
        if lifetime > 0:
            if len(entries) >= self.max_entries:
                entries.clear()  # bounded: refilling costs one verification per client
            entries[key] = (identity, now + lifetime)
        return identity

    def clear(self) -> None:
        """Forget every cached verification."""
        with self._lock:
            self._entries = {}


def use_group_commit() -> auditing.Trail:
    """Switch this process's audit trail to group commit (same directory, chain and rotation)."""
    trail = auditing.current_trail()
    if trail.durability == "group":
        return trail
    return auditing.configure(
        trail.dir,
        durability="group",
        group_commit_ms=max(1, round(trail.interval * 1000)),
        site=auditing._site,
        rotate_bytes=trail.rotate_bytes,
        rotate_daily=trail.rotate_daily,
    )


def _freeze_heap() -> None:
    """Move everything alive now (the loaded policy above all) out of the cyclic collector's way.

    A full collection otherwise walks every object of the policy: about 100 ms with 10,000 rules here,
    a stall of every request queued meanwhile, and it comes back as the decision cache fills. Frozen
    objects are still freed by reference counting when a reload drops them; collecting first leaves no
    unreachable cycle behind in the frozen set.
    """
    gc.collect()
    gc.freeze()


class HotAuthorizer(Authorizer):
    """The service's :class:`Authorizer`, with break-glass events made durable before the answer.

    With group commit ``emit()`` returns before the event is on disk; for a break-glass allow that is
    not enough, so the trail is flushed, and a flush that fails or times out turns the allow into a 403
    (``Authorizer.authorize`` checks ``audit_failed``).
    """

    def _policy_reloaded(self, ok: bool, error: str | None) -> None:
        super()._policy_reloaded(ok, error)
        if ok:
            _freeze_heap()

    def _audit(self, out: Outcome, client_ip: str | None, headers: Iterable[tuple[str, str]]) -> None:
        super()._audit(out, client_ip, headers)
        if out.status == 200 and out.extra.get("break_glass") and not out.extra.get("audit_failed"):
            try:
                durable = auditing.current_trail().flush(BREAK_GLASS_FLUSH_TIMEOUT_S)
            except (OSError, EdgesecError):
                durable = False
            if not durable:
                out.extra["audit_failed"] = True


#: The answer to a fault: a 403 (never a 500, which nginx would pass on, nor an allow).
_FAULT_HEADERS = [(b"cache-control", b"no-store"), (b"content-length", b"0")]
_NO_BODY = {"type": "http.response.body", "body": b""}


def create_hot_app(
    settings: AuthzSettings,
    *,
    trust_dir: Path | None = None,
    files: PolicyFiles | None = None,
    watch: bool = True,
    cert_cache_ttl_s: float = DEFAULT_CERT_CACHE_TTL_S,
    group_commit: bool = True,
) -> ASGIApp:
    """The service with the lean ``/auth`` path; the same arguments as ``create_app``."""
    if group_commit:
        use_group_commit()
    authz = HotAuthorizer(settings, files=files, trust_dir=trust_dir)
    if authz.trust is not None and cert_cache_ttl_s > 0:
        authz.trust = CertVerifyCache(authz.trust, ttl_s=cert_cache_ttl_s)  # type: ignore[assignment]
    inner = create_app(settings, trust_dir=trust_dir, files=files, watch=watch, authorizer=authz)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/auth":
            await inner(scope, receive, send)
            return
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        client = scope.get("client")
        try:
            status, hdrs = authz.authorize(raw, client[0] if client else None)
            if status not in (200, 401, 403):  # nginx turns anything else into a 500
                raise ValueError(status)
            out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in hdrs]
            out.append((b"content-length", b"0"))
        except UnicodeEncodeError:
            # An identity that cannot be sent as a header value: fail closed.
            status, out = 403, _FAULT_HEADERS
        except Exception:  # noqa: BLE001 -- fail closed: a fault is a 403, never a 500 or an allow
            status, out = 403, _FAULT_HEADERS
        # Every answer is headers only: the status says it all (a proxy passes a 401/403 on to the
        # client as it is), and a body would cost uvicorn a second send() for every denial.
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send(_NO_BODY)

    _freeze_heap()
    app.authorizer = authz  # type: ignore[attr-defined]
    app.state = inner.state  # type: ignore[attr-defined]
    app.inner = inner  # type: ignore[attr-defined]
    return app


def cert_cache_of(app: Any) -> CertVerifyCache | None:
    """The certificate cache of an app built by :func:`create_hot_app` (None without certificates)."""
    trust = getattr(getattr(app, "authorizer", None), "trust", None)
    return trust if isinstance(trust, CertVerifyCache) else None
