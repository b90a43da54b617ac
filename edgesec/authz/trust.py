"""The trust bundle as authz sees it: verify forwarded client certificates, watch the CRL's freshness.

Verification is pki's :func:`~edgesec.pki.api.verify_certificate` (chain to the site root, clientAuth,
CRL of every CA below the root). A CRL past its nextUpdate is an alarm at once (``/readyz`` turns
not-ready, one high-severity audit event) and a denial of every certificate after the configured grace.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from edgesec.auditing import AuditEvent, emit
from edgesec.authz.identity import CertIdentity, IdentityRejected, identity_from_cert, parse_cert_header
from edgesec.errors import EdgesecError
from edgesec.pki.api import TrustBundle, verify_certificate

__all__ = ["TrustState"]

_CACHE_TTL_S = 1.0
_CACHE_MAX = 4096


class TrustState:
    """The current trust bundle (reloaded when its files change) and its health."""

    def __init__(
        self, directory: Path, *, grace_hours: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.grace = dt.timedelta(hours=grace_hours)
        self.clock = clock
        self.bundle: TrustBundle | None = None
        self.error: str | None = None
        self.loaded_at = 0.0
        self._lock = threading.Lock()
        self._alarmed: set[str] = set()
        self._cache: dict[tuple[str, str], tuple[TrustBundle | None, float, CertIdentity]] = {}
        self.reload()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def reload(self) -> bool:
        """Load the bundle from disk; on failure keep the previous one and record the error."""
        try:
            bundle = TrustBundle.load(self.directory, crl_grace=self.grace)
        except EdgesecError as exc:
            with self._lock:
                repeated = self.error == exc.message
                self.error = exc.message
            if not repeated:
                self._event(
                    "authz.trust.reload_failed",
                    "high",
                    f"trust bundle {self.directory} did not load"
                    + (", the last good one is kept" if self.bundle is not None else "")
                    + f": {exc.message}",
                )
            return False
        with self._lock:
            self.bundle = bundle
            self.error = None
            self.loaded_at = self.clock()
        return True

    def check(self) -> bool | None:
        """Reload when the published files changed (``None`` when they did not); alarm on a stale CRL."""
        b = self.bundle
        changed: bool | None
        if b is None or b.changed_on_disk():
            changed = self.reload()
        else:
            changed = None
        self._alarm_stale()
        return changed

    def verify_header(self, value: str, identity_source: str) -> CertIdentity:
        """The identity of the client certificate header ``value``; raises :class:`IdentityRejected`.

        A verified identity is remembered for at most a second (and never past the certificate's
        notAfter), per header value and per loaded bundle: a proxy sends the same header for every
        request of a client, and a new CRL (a new bundle) takes effect at once.
        """
        bundle = self.bundle
        now = self.clock()
        key = (value, identity_source)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is bundle and now < hit[1]:
            return hit[2]
        ident = self.verify(parse_cert_header(value), identity_source)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (bundle, min(now + _CACHE_TTL_S, ident.not_after_ts), ident)
        return ident

    def verify(self, chain: Sequence[x509.Certificate], identity_source: str) -> CertIdentity:
        """The identity of a verified client chain; raises :class:`IdentityRejected`."""
        bundle = self.bundle
        if bundle is None:
            raise IdentityRejected("no-trust-bundle", f"no trust bundle loaded: {self.error}")
        try:
            v = verify_certificate(list(chain), purpose="client", trust=bundle, at=self._now())
        except EdgesecError as exc:
            msg = exc.message
            reason = "cert-revoked" if "revoked" in msg else "crl-stale" if "stale" in msg else "cert-invalid"
            raise IdentityRejected(reason, msg) from None
        user = identity_from_cert(v.certificate, identity_source)
        return CertIdentity(
            user=user,
            serial=v.serial,
            subject=v.subject,
            not_after=v.not_after.isoformat(),
            not_after_ts=v.not_after.timestamp(),
        )

    def status(self) -> dict[str, Any]:
        """Health for ``/readyz``: ok only with a bundle whose every CRL is before its nextUpdate."""
        bundle = self.bundle
        out: dict[str, Any] = {"directory": str(self.directory), "ok": bundle is not None}
        if self.error:
            out["error"] = self.error
            out["ok"] = False
        if bundle is None:
            return out
        now = self._now()
        crls = []
        for rl in bundle.crls.values():
            stale = rl.next_update is not None and now > rl.next_update
            denying = rl.next_update is not None and now > rl.next_update + self.grace
            crls.append(
                {
                    "issuer": rl.crl.issuer.rfc4514_string(),
                    "number": rl.number,
                    "next_update": rl.next_update.isoformat() if rl.next_update else None,
                    "stale": stale,
                    "denying": denying,
                }
            )
            if stale:
                out["ok"] = False
        if not crls:
            out["ok"] = False
            out["error"] = "the trust bundle has no CRL: no client certificate can be checked for revocation"
        out["crls"] = crls
        return out

    def _event(self, action: str, severity: Any, message: str) -> None:
        try:
            emit(
                AuditEvent(
                    action=action,
                    category=("configuration",),
                    type=("error",),
                    outcome="failure",
                    severity=severity,
                    part="authz",
                    message=message,
                    fields={"file.path": str(self.directory)},
                )
            )
        except (OSError, EdgesecError):
            pass

    def _alarm_stale(self) -> None:
        """One high-severity audit event per stale CRL (per CRL number), before denials start."""
        bundle = self.bundle
        if bundle is None:
            return
        now = self._now()
        for rl in bundle.crls.values():
            if rl.next_update is None or now <= rl.next_update:
                continue
            key = f"{rl.issuer_fingerprint}:{rl.number}"
            if key in self._alarmed:
                continue
            self._alarmed.add(key)
            denying = now > rl.next_update + self.grace
            try:
                emit(
                    AuditEvent(
                        action="authz.crl.stale",
                        category=("configuration",),
                        type=("error",),
                        outcome="failure",
                        severity="critical" if denying else "high",
                        part="authz",
                        message=(
                            f"CRL of {rl.crl.issuer.rfc4514_string()} passed nextUpdate "
                            f"{rl.next_update.isoformat()}; "
                            + (
                                "client certificates are now denied"
                                if denying
                                else f"certificates are denied after {self.grace} grace"
                            )
                        ),
                        fields={"edgesec.authz.crl_next_update": rl.next_update.isoformat()},
                    )
                )
            except (OSError, EdgesecError):
                self._alarmed.discard(key)
