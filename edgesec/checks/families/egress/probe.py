"""``egress.probe``: the opt-in active probe of the outside targets the site config names."""

from __future__ import annotations

from collections.abc import Iterator

from edgesec.checks.families.egress._base import (
    EGRESS_CONTROLS,
    EgressCheck,
    Unavailable,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity, Status


class ActiveProbe(EgressCheck):
    """Opt-in: try to reach the targets the site config names; each must be blocked."""

    meta = CheckMeta(
        id="egress.probe",
        title="Configured outside targets are unreachable (active probe)",
        severity=Severity.CRITICAL,
        rationale="Configuration can be misread; one real connection attempt to an outside target shows "
        "whether the site is sealed. It is opt-in: nothing is sent unless the site config names targets.",
        remediation="Close the path the probe used: remove the route, drop outbound traffic in the firewall, "
        "or remove the proxy.",
        controls=EGRESS_CONTROLS,
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        settings = ctx.config.settings.checks
        targets = settings.probe_targets
        if not targets:
            yield self.skipped(
                "no probe targets are configured ([checks] probe_targets): the active probe is opt-in"
            )
            return
        for t in targets:
            port = 53 if t.protocol == "dns" and t.port == 443 else t.port
            res = f"{t.protocol}://{t.host}:{port}"
            ans = ctx.system.connect(t.host, port, t.protocol, settings.probe_timeout_s)
            ev = {"target": res, "timeout_s": settings.probe_timeout_s, **ans}
            if ans.get("outcome") == "blocked":
                yield self.passed(f"{res} is blocked ({ans.get('detail')})", resource=res, evidence=ev)
            elif ans.get("outcome") in ("unresolved", "error"):
                yield Finding(
                    self.meta.id,
                    Status.ERROR,
                    f"not assessed: {res} was not tried ({ans.get('detail')}); name a target by IP address",
                    resource=res,
                    evidence={**ev, "not_assessed": True},
                )
            elif ans.get("outcome") not in ("reachable", "refused"):
                raise Unavailable(f"the probe of {res} gave no known outcome ({ans.get('outcome')!r})")
            else:
                yield self.failed(f"{res} is reachable: {ans.get('detail')}", resource=res, evidence=ev)
