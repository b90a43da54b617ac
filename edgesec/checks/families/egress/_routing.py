"""What the kernel would route out (its own FIB answers over netlink) and the firewall model with the same
internal destinations: shared by ``egress.routes`` and ``egress.firewall``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from edgesec.checks.families.egress._base import (
    Addr,
    Net,
    Unavailable,
    is_internal,
    netlink_rows,
)
from edgesec.checks.families.egress._firewall import Ruleset, read_ruleset
from edgesec.checks.interface import CheckContext


def _v4_samples() -> list[str]:
    # One address in every /8 (spread across the second and third octets): "the rest of the Internet".
    return [f"{i}.{(i * 37 + 11) % 256}.{(i * 91 + 7) % 256}.{1 + (i * 13) % 250}" for i in range(1, 256)]


def _v6_samples() -> list[str]:
    out = [f"{0x2000 + i * 0x1F3:x}:{(i * 0x3B1) % 0xFFFF:x}::{i + 1:x}" for i in range(64)]
    return [*out, "64:ff9b::c633:6401", "fc00::1", "fd00::1", "2001:db8::1", "2002:c000:201::1"]


def _hosts_of(net: Net) -> list[str]:
    """Addresses a lookup for ``net`` asks about: its first, middle and last host."""
    if net.num_addresses <= 2:
        return [str(net.network_address)]
    first = net.network_address + 1
    last = net.broadcast_address - 1
    mid = net.network_address + net.num_addresses // 2
    return [str(first), str(mid), str(last)]


def _route_net(rt: dict[str, Any], version: int) -> Net | None:
    dst = str(rt.get("dst", ""))
    try:
        return ipaddress.ip_network(("0.0.0.0/0" if version == 4 else "::/0") if dst == "default" else dst)
    except ValueError:
        return None


_FORWARDING = {"unicast"}
_STANDARD_TABLES = ("local", "main", "default")


@dataclass
class RouteView:
    """What the kernel answers: the destinations outside the site it would send a packet to."""

    version: int
    out: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    routes_seen: int
    lookups: int
    sources: list[str]


def site_addresses(ctx: CheckContext, version: int) -> tuple[list[str], list[Net]]:
    """The host's own addresses of ``version`` (lookup sources) and the site segments they sit on.

    A segment is the site unless its address names a peer (point-to-point: the far end is elsewhere) or its
    prefix is too broad to be a segment (broader than /16 or /48 and not private: a public /1 on a link is
    a way out). Destinations on a site segment are internal to routes and firewall alike.
    """
    own: list[str] = []
    segments: list[Net] = []
    for a in netlink_rows(ctx.system.netlink("addrs"), "the interface addresses"):
        if a.get("family") != version or a.get("address") is None:
            continue
        try:
            ip = ipaddress.ip_address(str(a["address"]))
            seg = ipaddress.ip_network(f"{ip}/{int(a.get('prefixlen', ip.max_prefixlen))}", strict=False)
        except (ValueError, TypeError):
            continue
        if ip.is_loopback or ip.is_link_local:
            continue
        own.append(str(ip))
        narrow = seg.prefixlen >= (16 if version == 4 else 48) or seg.is_private
        if not a.get("peer") and narrow:
            segments.append(seg)
    return own, segments


def kernel_routes_out(ctx: CheckContext, version: int, allowed: list[Net]) -> RouteView:
    """Ask the kernel's own FIB (``RTM_GETROUTE``) about every candidate outside destination.

    Candidates: three hosts of every route's own prefix in every table, the prefixes policy rules name, and
    one address in every /8 (IPv4) or a spread of global addresses (IPv6), minus the internal ones (the
    allowed networks, loopback, link-local, multicast, and the segments of the host's own addresses when
    they are not point-to-point and not broader than /16 (IPv4) or /48 (IPv6) unless private).
    Each is looked up without a source, from each of the host's addresses, and with each rule's fwmark. An
    answer of type unicast on a device other than ``lo`` is a route out, whatever table, rule, nexthop
    object or device produced it. A rule with selectors the lookup cannot carry (uid range, ports, ip
    protocol, tos, interfaces) counts every route of its table that reaches outside.
    """
    sys_ = ctx.system
    routes = netlink_rows(sys_.netlink("routes", version), "the routing table")
    rules = netlink_rows(sys_.netlink("rules", version), "the policy routing rules")
    own, segments = site_addresses(ctx, version)
    internal = [*allowed, *segments]
    cands: list[str] = []
    for rt in routes:
        net = _route_net(rt, version)
        if net is not None and net.prefixlen > 0:
            cands.extend(_hosts_of(net))
    for ru in rules:
        if ru.get("dst"):
            try:
                cands.extend(_hosts_of(ipaddress.ip_network(str(ru["dst"]), strict=False)))
            except ValueError:
                pass
    cands.extend(_v4_samples() if version == 4 else _v6_samples())
    todo = []
    for c in dict.fromkeys(cands):
        addr = ipaddress.ip_address(c)
        if addr.version == version and not is_internal(addr, internal) and not addr.is_reserved:
            todo.append(c)
    selectors: list[dict[str, Any]] = [{}, *({"src": a} for a in own)]
    selectors += [
        {"mark": int(r["fwmark"])} for r in rules if isinstance(r.get("fwmark"), int) and r["fwmark"]
    ]
    pairs = [[d, s] for s in selectors for d in todo]
    lans = sys_.netlink("lookup", version, pairs)
    if not lans.get("ok"):
        raise Unavailable(f"the kernel's route lookup failed over netlink ({lans.get('error')})")
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for a in lans.get("data") or []:
        if (
            not isinstance(a, dict)
            or a.get("error")
            or a.get("type") not in _FORWARDING
            or a.get("dev") == "lo"
        ):
            continue
        to = ipaddress.ip_address(str(a["dst"]))
        via = _longest_match(routes, to, version, a)
        sel = {k: a[k] for k in ("src", "mark") if a.get(k) is not None}
        key = (via.get("dst") if via else None, a.get("table"), a.get("gateway"), a.get("dev"))
        if key in found:
            continue
        found[key] = {
            "dst": via.get("dst") if via else str(to),
            "to": str(to),
            "gateway": a.get("gateway"),
            "dev": a.get("dev"),
            "table": a.get("table"),
            "protocol": via.get("protocol") if via else None,
            "lookup": sel or "no source",
        }
    for ru in rules:
        hidden = [k for k in ("uidrange", "ipproto", "sport", "dport") if ru.get(k)]
        hidden += [k for k in ("iif", "oif") if ru.get(k) not in (None, "lo")]
        hidden += ["tos"] if ru.get("tos") else []
        hidden += ["l3mdev (VRF)"] if ru.get("l3mdev") else []
        if not hidden or (ru.get("action") != "lookup" and not ru.get("l3mdev")):
            continue
        for rt in routes:
            net = _route_net(rt, version)
            # An l3mdev rule looks up the table of whichever VRF a socket is bound to: any VRF table.
            in_table = (
                rt.get("table") not in _STANDARD_TABLES
                if ru.get("l3mdev")
                else rt.get("table") == ru.get("table")
            )
            if not in_table or rt.get("type") not in _FORWARDING or net is None:
                continue
            if net.prefixlen and all(is_internal(ipaddress.ip_address(h), internal) for h in _hosts_of(net)):
                continue
            legs = rt.get("nexthops") or [{"gateway": rt.get("gateway"), "dev": rt.get("dev")}]
            for leg in legs:
                if leg.get("dev") == "lo":
                    continue
                key = (rt.get("dst"), rt.get("table"), leg.get("gateway"), leg.get("dev"))
                found.setdefault(
                    key,
                    {
                        "dst": rt.get("dst"),
                        "to": None,
                        "gateway": leg.get("gateway"),
                        "dev": leg.get("dev"),
                        "table": rt.get("table"),
                        "protocol": rt.get("protocol"),
                        "lookup": f"rule {ru.get('priority')} ({', '.join(hidden)}: not simulated)",
                    },
                )
    nonstd = [r for r in rules if r.get("table") not in _STANDARD_TABLES or r.get("action") != "lookup"]
    return RouteView(version, list(found.values()), nonstd, len(routes), len(pairs), own)


def _longest_match(
    routes: list[dict[str, Any]], to: Addr, version: int, ans: dict[str, Any]
) -> dict[str, Any]:
    best: dict[str, Any] = {}
    best_len = -1
    for prefer_table in (True, False):
        for rt in routes:
            if prefer_table and rt.get("table") != ans.get("table"):
                continue
            if rt.get("type") not in _FORWARDING:
                continue
            net = _route_net(rt, version)
            if net is not None and to in net and net.prefixlen > best_len:
                best, best_len = rt, net.prefixlen
        if best:
            return best
    return best


def describe_routes(out: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{r['dst']} via {r['gateway'] or 'link'} dev {r['dev']} (table {r['table']})" for r in out[:4]
    ) + (f" and {len(out) - 4} more" if len(out) > 4 else "")


def firewall_for(ctx: CheckContext, allowed: list[Net]) -> Ruleset:
    """The firewall model, with the same internal destinations the routes are judged by."""
    segments = [n for v in (4, 6) for n in site_addresses(ctx, v)[1]]
    return read_ruleset(ctx.system, [*allowed, *segments])


def fw_evidence(rs: Ruleset) -> dict[str, Any]:
    return {
        "sources": rs.sources,
        "chains": sorted(f"{c.name} hook {c.hook} policy {c.policy}" for c in rs.chains.values() if c.hook),
        "accept_rules": [r.where for c in rs.chains.values() for r in c.rules if r.verdict == "accept"],
        "not_read": rs.skipped,
        "errors": rs.errors,
    }
