"""``egress.firewall``: the output and forward paths of the host firewall, judged by the firewall model
(:mod:`edgesec.checks.families.egress._firewall`).
"""

from __future__ import annotations

from collections.abc import Iterator

from edgesec.checks.families.egress._base import (
    EgressCheck,
    Unavailable,
    allowed_networks,
    dedup_all,
)
from edgesec.checks.families.egress._firewall import PathVerdict, Pkt
from edgesec.checks.families.egress._routing import (
    firewall_for,
    fw_evidence,
    kernel_routes_out,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity, Status


def _merge(verdicts: list[PathVerdict]) -> PathVerdict:
    """Sealed only when every path is."""
    return PathVerdict(
        all(v.sealed for v in verdicts),
        dedup_all(v.sealed_by for v in verdicts),
        dedup_all(v.holes for v in verdicts),
        dedup_all(v.unknown for v in verdicts),
        dedup_all(v.chains for v in verdicts),
    )


class Firewall(EgressCheck):
    """Output and forward paths of the host firewall, judged by the firewall model."""

    meta = CheckMeta(
        id="egress.firewall",
        title="Firewall drops outbound and forwarded traffic by default",
        severity=Severity.HIGH,
        rationale="Routing alone is one mistake away from open egress (a DHCP lease, a VPN, a cable); a "
        "default-deny output policy keeps the site sealed, and a host that forwards packets must not "
        "forward them out.",
        remediation="Add an nftables inet filter table whose output chain has 'policy drop' with accept rules "
        "only for loopback and the site's networks; set the forward chain policy to drop (or disable "
        "net.ipv4.ip_forward).",
        controls=("pci-dss-4.0:1.3.2", "pci-dss-4.0:1.3.1", "mlps-2.0-l3:8.1.3.2", "iec-62443-3-3:SR 5.2"),
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        allowed = allowed_networks(ctx)
        rs = firewall_for(ctx, allowed)
        if not rs.readable:
            if rs.errors:
                raise Unavailable(
                    f"the firewall ruleset could not be read ({rs.errors[0]}); run the audit as root"
                )
            raise Unavailable("neither nft nor iptables-save is installed: the firewall cannot be read")
        ev = fw_evidence(rs)
        for version in (4, 6):
            view = kernel_routes_out(ctx, version, allowed)
            res = f"IPv{version} output"
            # Judged per device the routes out use (a netdev egress hook seals only its device).
            devs: list[str | None] = [*sorted({str(r["dev"]) for r in view.out if r.get("dev")})] or [None]
            pv = _merge([rs.judge(Pkt(version, "output", d)) for d in devs])
            pev = {**ev, "sealed_by": pv.sealed_by, "holes": pv.holes, "unknown": pv.unknown}
            if pv.sealed:
                yield self.passed(f"IPv{version} output is dropped by default", resource=res, evidence=pev)
            elif pv.holes:
                yield self.failed(
                    f"IPv{version} output is dropped by default but {len(pv.holes)} rule(s) let traffic leave "
                    f"the site: {'; '.join(pv.holes[:3])}",
                    resource=res,
                    evidence=pev,
                    severity=None if view.out else Severity.MEDIUM,
                )
            elif pv.unknown:
                yield self.warned(
                    f"IPv{version} output: cannot prove sealed: {pv.unknown[0]}",
                    resource=res,
                    evidence=pev,
                )
            elif view.out:
                yield self.failed(
                    f"IPv{version} output is accepted by default and a route out exists",
                    resource=res,
                    evidence=pev,
                )
            else:
                yield self.warned(
                    f"IPv{version} output is accepted by default (no route out today: routing alone keeps it sealed)",
                    resource=res,
                    evidence=pev,
                    severity=Severity.MEDIUM,
                )
            path = (
                "/proc/sys/net/ipv4/ip_forward" if version == 4 else "/proc/sys/net/ipv6/conf/all/forwarding"
            )
            raw = ctx.system.read_text(path)
            res = f"IPv{version} forward"
            if raw is None:
                yield Finding(
                    self.meta.id,
                    Status.ERROR,
                    f"not assessed: IPv{version} forwarding state could not be read ({path})",
                    resource=res,
                    evidence={"not_assessed": True},
                )
                continue
            fwd_on = raw.strip() == "1"
            fv = rs.judge(Pkt(version, "forward", None))
            fev = {**ev, "forwarding_enabled": fwd_on, "sealed_by": fv.sealed_by, "holes": fv.holes}
            if not fwd_on:
                yield self.passed(f"IPv{version} forwarding is disabled", resource=res, evidence=fev)
            elif fv.sealed:
                yield self.passed(
                    f"IPv{version} forwarding is on; forward is dropped by default",
                    resource=res,
                    evidence=fev,
                )
            elif fv.unknown and not fv.holes:
                yield self.warned(
                    f"IPv{version} forwarding is on; cannot prove forward sealed: {fv.unknown[0]}",
                    resource=res,
                    evidence={**fev, "unknown": fv.unknown},
                )
            else:
                yield self.failed(
                    f"IPv{version} forwarding is on and forwarded traffic is accepted by default"
                    + (f" ({len(fv.holes)} rule(s) let it out: {fv.holes[0]})" if fv.holes else ""),
                    resource=res,
                    evidence=fev,
                )
