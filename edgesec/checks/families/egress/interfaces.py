"""``egress.interfaces``: wireless, VPN and tunnel interfaces, paths out that bypass the site's cabling."""

from __future__ import annotations

from collections.abc import Iterator

from edgesec.checks.families.egress._base import (
    EGRESS_CONTROLS,
    EgressCheck,
    netlink_rows,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity

_TUNNEL_KINDS = {
    "wireguard": "VPN",
    "tun": "VPN/tunnel",
    "ipip": "tunnel",
    "gre": "tunnel",
    "gretap": "tunnel",
    "ip6gre": "tunnel",
    "ip6gretap": "tunnel",
    "sit": "tunnel",
    "ip6tnl": "tunnel",
    "vti": "VPN (IPsec)",
    "vti6": "VPN (IPsec)",
    "xfrm": "VPN (IPsec)",
    "vxlan": "overlay tunnel",
    "geneve": "overlay tunnel",
    "l2tp": "tunnel",
    "ppp": "point-to-point (modem/VPN)",
}


class Interfaces(EgressCheck):
    """Wireless, VPN and tunnel interfaces: paths out that bypass the site's cabling."""

    meta = CheckMeta(
        id="egress.interfaces",
        title="No wireless, VPN or tunnel interface",
        severity=Severity.HIGH,
        rationale="A Wi-Fi card, a cellular modem, a VPN or a tunnel is a path off the site that the wired "
        "network's controls never see.",
        remediation="Remove or disable the interface (and its driver or service: wpa_supplicant, "
        "ModemManager, wg-quick, openvpn); block the kernel modules if the hardware cannot be removed.",
        controls=(*EGRESS_CONTROLS, "iec-62443-3-3:SR 5.1"),
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        links = netlink_rows(ctx.system.netlink("links"), "the interfaces")
        found = 0
        for link in links:
            name = str(link.get("ifname") or "?")
            kind = link.get("kind")
            what = _TUNNEL_KINDS.get(str(kind or "")) or (
                "point-to-point (modem/VPN)" if link.get("link_type") == "ppp" else None
            )
            wireless = (
                ctx.system.stat(f"/sys/class/net/{name}/wireless") is not None
                or ctx.system.stat(f"/sys/class/net/{name}/phy80211") is not None
            )
            if wireless:
                what = "wireless"
            if what is None:
                continue
            found += 1
            state = link.get("operstate") or "UNKNOWN"
            up = bool(link.get("up")) or state == "UP"
            ev = {
                "ifname": name,
                "kind": kind,
                "link_type": link.get("link_type"),
                "operstate": state,
                "up": up,
            }
            if up:
                yield self.failed(f"{what} interface {name} is up", resource=name, evidence=ev)
            else:
                yield self.warned(
                    f"{what} interface {name} exists (down)",
                    resource=name,
                    evidence=ev,
                    severity=Severity.MEDIUM,
                )
        if not found:
            yield self.passed(
                f"no wireless, VPN or tunnel interface among {len(links)} interfaces",
                evidence={"interfaces": [x.get("ifname") for x in links]},
            )
