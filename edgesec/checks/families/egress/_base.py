"""What every egress check shares: the allowed networks, "internal", and ERROR "not assessed" for
evidence that cannot be read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any

from edgesec.checks.interface import Check, CheckContext, Finding, Status

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

EGRESS_CONTROLS = ("pci-dss-4.0:1.3.2", "mlps-2.0-l3:8.1.3.1", "iec-62443-3-3:SR 5.2")
ENVIRON_LIMIT = 1 << 24  # far above what execve accepts by default (a quarter of an 8 MiB stack)


def allowed_networks(ctx: CheckContext) -> list[Net]:
    nets: list[Net] = []
    for cidr in [*ctx.config.settings.checks.allowed_networks, *ctx.param("egress", "allowed_networks", [])]:
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue  # the config schema is the place to reject it; a check never crashes on it
    return nets


def is_internal(addr: Addr, allowed: Iterable[Net]) -> bool:
    """Loopback, link-local, multicast, unspecified, or inside an allowed network."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified:
        return True
    return any(addr.version == n.version and addr in n for n in allowed)


class Unavailable(Exception):
    """The evidence a check needs cannot be read here: the check is not assessed (ERROR, run incomplete)."""


class EgressCheck(Check):
    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        try:
            yield from self.evaluate(ctx)
        except Unavailable as exc:
            yield Finding(self.meta.id, Status.ERROR, f"not assessed: {exc}", evidence={"not_assessed": True})

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        raise NotImplementedError


def netlink_rows(ans: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(ans, dict) or not ans.get("ok"):
        err = ans.get("error") if isinstance(ans, dict) else ans
        raise Unavailable(f"{what} could not be read over netlink ({err})")
    data = ans.get("data")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise Unavailable(f"{what} read over netlink is not a list of entries")
    return data


def dedup_all(lists: Iterable[list[str]]) -> list[str]:
    return list(dict.fromkeys(x for xs in lists for x in xs))
