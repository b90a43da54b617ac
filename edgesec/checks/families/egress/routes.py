"""``egress.routes``: a destination outside the site the kernel would route to, with nothing dropping it;
and IPv6 router advertisements that could add such a route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgesec.checks.families.egress._base import (
    EGRESS_CONTROLS,
    EgressCheck,
    allowed_networks,
    dedup_all,
)
from edgesec.checks.families.egress._firewall import Pkt, Ruleset
from edgesec.checks.families.egress._routing import (
    describe_routes,
    firewall_for,
    fw_evidence,
    kernel_routes_out,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity


class Routes(EgressCheck):
    """A destination outside the site the kernel would route a packet to, with nothing dropping it."""

    meta = CheckMeta(
        id="egress.routes",
        title="No route leads off the site",
        severity=Severity.CRITICAL,
        rationale="A zero-egress site must have no working path to outside networks: a default route or a "
        "gateway route to non-site networks lets any process (a model server, a compromised library) "
        "send data out unless the firewall drops it.",
        remediation="Remove the default route (and gateway routes to non-site networks) from every routing "
        "table, or drop outbound traffic by default in the firewall (nft output chain policy drop), allowing "
        "only the site's networks.",
        controls=EGRESS_CONTROLS,
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        allowed = allowed_networks(ctx)
        views = [kernel_routes_out(ctx, v, allowed) for v in (4, 6)]
        rs = firewall_for(ctx, allowed) if any(v.out for v in views) else Ruleset()
        for view in views:
            version = view.version
            res = f"IPv{version}"
            evidence: dict[str, Any] = {
                "source": "netlink (RTM_GETROUTE lookups)",
                "outbound_routes": view.out,
                "policy_rules": view.rules,
                "site_addresses": view.sources,
                "allowed_networks": [str(n) for n in allowed],
                "stats": {"routes_seen": view.routes_seen, "lookups": view.lookups},
            }
            if not view.out:
                yield self.passed(
                    f"IPv{version}: no route leaves the site (the kernel routes none of "
                    f"{view.lookups} outside lookups)",
                    resource=res,
                    evidence=evidence,
                )
                continue
            devs = sorted({str(r["dev"]) for r in view.out if r.get("dev")}) or [""]
            verdicts = {d: rs.judge(Pkt(version, "output", d or None)) for d in devs}
            evidence["firewall"] = fw_evidence(rs)
            evidence["firewall_sealed_by"] = {d: v.sealed_by for d, v in verdicts.items()}
            holes = dedup_all(v.holes for v in verdicts.values())
            unknown = dedup_all(v.unknown for v in verdicts.values())
            evidence["firewall_holes"] = holes
            evidence["firewall_unknown"] = unknown
            desc = describe_routes(view.out)
            if all(v.sealed for v in verdicts.values()):
                yield self.passed(
                    f"IPv{version}: {len(view.out)} route(s) out exist but the firewall drops outbound traffic "
                    "by default",
                    resource=res,
                    evidence=evidence,
                )
            elif not rs.readable:
                why = (
                    f"the firewall could not be read ({rs.errors[0]}); run the audit as root"
                    if rs.errors
                    else "no firewall tool (nft, iptables) is installed to show a drop"
                )
                yield self.failed(
                    f"IPv{version} egress is open: {desc}; {why}", resource=res, evidence=evidence
                )
            elif holes:
                yield self.failed(
                    f"IPv{version} egress is open: {desc}; the firewall drops by default but lets traffic out "
                    f"through {len(holes)} rule(s): {holes[0]}",
                    resource=res,
                    evidence=evidence,
                )
            elif unknown:
                yield self.warned(
                    f"IPv{version}: {len(view.out)} route(s) out exist ({desc}); cannot prove sealed: "
                    f"{unknown[0]}",
                    resource=res,
                    evidence=evidence,
                )
            else:
                yield self.failed(
                    f"IPv{version} egress is open: {desc}; no firewall drops outbound traffic",
                    resource=res,
                    evidence=evidence,
                )
        yield from self._router_advertisements(ctx)

    def _router_advertisements(self, ctx: CheckContext) -> Iterator[Finding]:
        """An interface that accepts IPv6 router advertisements can be handed a default route at any time."""
        risky = []
        for conf in ctx.system.glob("/proc/sys/net/ipv6/conf/*/accept_ra"):
            ifname = conf.split("/")[-2]
            if ifname in ("all", "default", "lo"):
                continue
            base = conf.rsplit("/", 1)[0]

            def val(name: str, default: str = "0", base: str = base) -> str:
                return (ctx.system.read_text(f"{base}/{name}", 16) or default).strip()

            ra, defrtr = val("accept_ra"), val("accept_ra_defrtr", "1")
            forwarding, disabled = val("forwarding"), val("disable_ipv6")
            # accept_ra 1 applies only while not forwarding; 2 applies always.
            if disabled != "1" and defrtr != "0" and (ra == "2" or (ra == "1" and forwarding != "1")):
                risky.append({"ifname": ifname, "accept_ra": ra, "accept_ra_defrtr": defrtr})
        if risky:
            names = ", ".join(r["ifname"] for r in risky)
            yield self.warned(
                f"IPv6 router advertisements are accepted on {names}: any router on the segment can add a "
                "default route (set net.ipv6.conf.<if>.accept_ra=0)",
                resource="IPv6 router advertisements",
                evidence={"interfaces": risky},
                severity=Severity.MEDIUM,
            )
