"""The ``egress`` check family: prove the site has no way out.

Each check reads one kind of evidence through the probes: the kernel's routes, rules and FIB answers over
netlink (:mod:`edgesec.checks.egress._netlink`; no ``ip`` binary needed); the firewall as a model
(:mod:`edgesec.checks.egress._firewall`: nft and both iptables backends, read once); DNS resolvers; proxy variables
(environment, systemd units, apt, running processes); established TCP connections and connected UDP flows
to peers outside the allowed networks; wireless, VPN and tunnel interfaces; telemetry switches of running
model servers; and, only when the site config names targets, an active probe.

"Allowed networks" are ``[checks] allowed_networks`` (CIDRs); loopback, link-local and multicast are
never egress. A check PASSes only on evidence: what it cannot read is ERROR "not assessed" (the run is
incomplete), and what the firewall model does not understand is WARN "cannot prove sealed".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from edgesec.checks.egress._firewall import PathVerdict, Pkt, Ruleset, read_ruleset
from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity, Status

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

EGRESS_CONTROLS = ("pci-dss-4.0:1.3.2", "mlps-2.0-l3:8.1.3.1", "iec-62443-3-3:SR 5.2")


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


# --- routes and firewall -------------------------------------------------------------------------------


class _Unavailable(Exception):
    """The evidence a check needs cannot be read here: the check is not assessed (ERROR, run incomplete)."""


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
    for a in _netlink_rows(ctx.system.netlink("addrs"), "the interface addresses"):
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
    routes = _netlink_rows(sys_.netlink("routes", version), "the routing table")
    rules = _netlink_rows(sys_.netlink("rules", version), "the policy routing rules")
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
        raise _Unavailable(f"the kernel's route lookup failed over netlink ({lans.get('error')})")
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


def _netlink_rows(ans: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(ans, dict) or not ans.get("ok"):
        err = ans.get("error") if isinstance(ans, dict) else ans
        raise _Unavailable(f"{what} could not be read over netlink ({err})")
    data = ans.get("data")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise _Unavailable(f"{what} read over netlink is not a list of entries")
    return data


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


def _describe_routes(out: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{r['dst']} via {r['gateway'] or 'link'} dev {r['dev']} (table {r['table']})" for r in out[:4]
    ) + (f" and {len(out) - 4} more" if len(out) > 4 else "")


def _firewall_for(ctx: CheckContext, allowed: list[Net]) -> Ruleset:
    """The firewall model, with the same internal destinations the routes are judged by."""
    segments = [n for v in (4, 6) for n in site_addresses(ctx, v)[1]]
    return read_ruleset(ctx.system, [*allowed, *segments])


class _EgressCheck(Check):
    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        try:
            yield from self.evaluate(ctx)
        except _Unavailable as exc:
            yield Finding(self.meta.id, Status.ERROR, f"not assessed: {exc}", evidence={"not_assessed": True})

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        raise NotImplementedError


def _fw_evidence(rs: Ruleset) -> dict[str, Any]:
    return {
        "sources": rs.sources,
        "chains": sorted(f"{c.name} hook {c.hook} policy {c.policy}" for c in rs.chains.values() if c.hook),
        "accept_rules": [r.where for c in rs.chains.values() for r in c.rules if r.verdict == "accept"],
        "not_read": rs.skipped,
        "errors": rs.errors,
    }


class Routes(_EgressCheck):
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
        rs = _firewall_for(ctx, allowed) if any(v.out for v in views) else Ruleset()
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
            evidence["firewall"] = _fw_evidence(rs)
            evidence["firewall_sealed_by"] = {d: v.sealed_by for d, v in verdicts.items()}
            holes = _dedup_all(v.holes for v in verdicts.values())
            unknown = _dedup_all(v.unknown for v in verdicts.values())
            evidence["firewall_holes"] = holes
            evidence["firewall_unknown"] = unknown
            desc = _describe_routes(view.out)
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


def _dedup_all(lists: Iterable[list[str]]) -> list[str]:
    return list(dict.fromkeys(x for xs in lists for x in xs))


def _merge(verdicts: list[PathVerdict]) -> PathVerdict:
    """Sealed only when every path is."""
    return PathVerdict(
        all(v.sealed for v in verdicts),
        _dedup_all(v.sealed_by for v in verdicts),
        _dedup_all(v.holes for v in verdicts),
        _dedup_all(v.unknown for v in verdicts),
        _dedup_all(v.chains for v in verdicts),
    )


class Firewall(_EgressCheck):
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
        rs = _firewall_for(ctx, allowed)
        if not rs.readable:
            if rs.errors:
                raise _Unavailable(
                    f"the firewall ruleset could not be read ({rs.errors[0]}); run the audit as root"
                )
            raise _Unavailable("neither nft nor iptables-save is installed: the firewall cannot be read")
        ev = _fw_evidence(rs)
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


class Dns(_EgressCheck):
    """Resolvers the host uses must be on the site."""

    meta = CheckMeta(
        id="egress.dns",
        title="DNS resolvers are on the site",
        severity=Severity.MEDIUM,
        rationale="A resolver outside the site forwards every lookup out, and DNS is a classic tunnel for "
        "data exfiltration even when TCP is blocked.",
        remediation="Point /etc/resolv.conf (or systemd-resolved's DNS=) at a resolver inside the site's "
        "allowed networks, or at loopback with no upstream.",
        controls=("pci-dss-4.0:1.3.2", "mlps-2.0-l3:8.1.3.1"),
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        allowed = allowed_networks(ctx)
        files = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
        servers: dict[str, str] = {}
        for f in files:
            text = ctx.system.read_text(f)
            if text is None and ctx.system.stat(f) is not None:
                raise _Unavailable(f"{f} exists but could not be read")
            for line in (text or "").splitlines():
                m = re.match(r"^\s*nameserver\s+(\S+)", line)
                if m:
                    servers.setdefault(m.group(1).split("%", 1)[0], f)
        if not servers:
            yield self.passed("no DNS resolver is configured", evidence={"files": files})
            return
        for srv, src in sorted(servers.items()):
            ev = {"source": src, "allowed_networks": [str(n) for n in allowed]}
            try:
                addr = ipaddress.ip_address(srv)
            except ValueError:
                yield self.warned(
                    f"resolver {srv!r} in {src} is not an IP address", resource=srv, evidence=ev
                )
                continue
            if is_internal(addr, allowed):
                yield self.passed(f"resolver {srv} is on the site", resource=srv, evidence=ev)
            else:
                yield self.failed(
                    f"resolver {srv} (from {src}) is outside the allowed networks", resource=srv, evidence=ev
                )


# Any variable named like a proxy: http(s)/ftp/all/rsync/grpc/socks_proxy, PIP_PROXY, npm_config_(https_)proxy,
# YARN_HTTPS_PROXY, ... -- but not no_proxy (a list of exceptions, not a way out).
_PROXY_NAME = re.compile(r"(?i)^(?![a-z0-9_]*no_proxy$)[a-z0-9_]*proxy$")
_ASSIGN_RE = re.compile(
    r"""(?<![A-Za-z0-9_])(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?=(?P<value>"[^"]*"|'[^']*'|[^\s"';]*))""",
    re.MULTILINE,
)
_APT_PROXY_RE = re.compile(r"""Acquire::(?:https?|ftp)::Proxy\s+"([^"]+)"\s*;""", re.IGNORECASE)
# Docker daemon ("proxies": {"http-proxy": ...}) and client config ("httpProxy"): containers inherit these.
_JSON_PROXY_RE = re.compile(r'"((?:https?|ftp|all)[-_]?proxy)"\s*:\s*"([^"]+)"', re.IGNORECASE)


ENVIRON_LIMIT = 1 << 24  # far above what execve accepts by default (a quarter of an 8 MiB stack)


def redact(value: str) -> str:
    """Hide credentials in a proxy URL (``http://user:pass@host`` -> ``http://***@host``)."""
    return re.sub(r"(?<=//)[^/@\s]+@", "***@", value)


def _proxies_in_environ(env: dict[str, str]) -> dict[str, str]:
    return {k: redact(v) for k, v in env.items() if _PROXY_NAME.match(k) and v.strip()}


class ProxyEnv(_EgressCheck):
    """Proxy variables anywhere a process could pick them up."""

    meta = CheckMeta(
        id="egress.proxy",
        title="No proxy is configured for outbound traffic",
        severity=Severity.HIGH,
        rationale="A proxy variable gives a process a way out even when routing and firewall are closed to "
        "it directly; model servers and hub libraries honour HTTP(S)_PROXY and will fetch or report through it.",
        remediation="Remove the proxy variables from the environment, systemd units (Environment=, drop-ins), "
        "/etc/environment, profile scripts and apt configuration, then restart the processes listed.",
        controls=EGRESS_CONTROLS,
    )

    def _files(self, ctx: CheckContext) -> list[str]:
        pats = [
            "/etc/environment",
            "/etc/profile",
            "/etc/profile.d/*.sh",
            "/etc/bash.bashrc",
            "/etc/systemd/system.conf",
            "/etc/systemd/system.conf.d/*.conf",
            "/etc/systemd/system/*.service",
            "/etc/systemd/system/*.service.d/*.conf",
            "/etc/systemd/system/*/*.service",
            "/lib/systemd/system/*.service.d/*.conf",
            "/run/systemd/system/*.service.d/*.conf",
            "/etc/default/*",
            "/etc/apt/apt.conf",
            "/etc/apt/apt.conf.d/*",
            "/etc/environment.d/*.conf",
            "/etc/docker/daemon.json",
            "/root/.docker/config.json",
            "/etc/systemd/system/docker.service.d/*.conf",
            "/etc/containerd/config.toml",
        ]
        out: list[str] = []
        for p in pats:
            out.extend(ctx.system.glob(p) if "*" in p else [p])
        return sorted(set(out))

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        hits = 0
        scanned_files = 0
        unreadable_files: list[str] = []
        for path in self._files(ctx):
            text = ctx.system.read_text(path, 1 << 18)
            if text is None:
                st = ctx.system.stat(path)
                if st is not None and not st.is_dir:
                    unreadable_files.append(path)  # there, but not read: not shown free of proxies
                continue
            scanned_files += 1
            found = {
                m.group("name"): redact(m.group("value").strip("'\""))
                for m in _ASSIGN_RE.finditer(text)
                if _PROXY_NAME.match(m.group("name"))
            }
            found = {k: v for k, v in found.items() if v}
            for m in _APT_PROXY_RE.finditer(text):
                found["Acquire::Proxy"] = redact(m.group(1))
            if path.endswith(".json"):
                for m in _JSON_PROXY_RE.finditer(text):
                    found[m.group(1)] = redact(m.group(2))
            if found:
                hits += 1
                yield self.failed(
                    f"{path} sets {', '.join(sorted(found))}", resource=path, evidence={"variables": found}
                )
        own = _proxies_in_environ(ctx.system.environ())
        if own:
            hits += 1
            yield self.failed(
                f"the auditing process's environment has {', '.join(sorted(own))}",
                resource="environment",
                evidence={"variables": own},
            )
        procs = 0
        unreadable = 0
        for env_path in ctx.system.glob("/proc/[0-9]*/environ"):
            pid = env_path.split("/")[2]
            raw = ctx.system.read_text(env_path, ENVIRON_LIMIT + 1)
            if raw is None:
                # Gone since the listing, or another user's process read without root.
                unreadable += ctx.system.stat(f"/proc/{pid}") is not None
                continue
            procs += 1
            if len(raw) > ENVIRON_LIMIT:
                hits += 1
                comm = (ctx.system.read_text(f"/proc/{pid}/comm") or "?").strip()
                yield self.warned(
                    f"running process {pid} ({comm}) has an environment over {ENVIRON_LIMIT >> 20} MiB: "
                    "not read to the end, so it cannot be shown free of proxy variables",
                    resource=f"pid {pid} ({comm})",
                    evidence={"pid": int(pid), "comm": comm, "read_bytes": ENVIRON_LIMIT},
                )
            env = dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)
            found = _proxies_in_environ(env)
            if found:
                hits += 1
                comm = (ctx.system.read_text(f"/proc/{pid}/comm") or "?").strip()
                yield self.failed(
                    f"running process {pid} ({comm}) has {', '.join(sorted(found))} in its environment",
                    resource=f"pid {pid} ({comm})",
                    evidence={"pid": int(pid), "comm": comm, "variables": found},
                )
        stats = {
            "files_scanned": scanned_files,
            "processes_scanned": procs,
            "processes_unreadable": unreadable,
        }
        if unreadable_files:
            hits += 1
            yield self.warned(
                f"{len(unreadable_files)} configuration file(s) could not be read: {', '.join(unreadable_files[:3])}",
                evidence={"unreadable": unreadable_files},
            )
        if unreadable:
            hint = "; run the audit as root" if ctx.system.euid() != 0 else ""
            yield self.warned(
                f"the environment of {unreadable} running processes could not be read{hint}",
                evidence={"stats": stats},
            )
        elif not hits:
            yield self.passed("no proxy variable found", evidence={"stats": stats})


def _parse_proc_net(text: str, v6: bool) -> list[tuple[Addr, int, Addr, int, str, str]]:
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            local, remote, state, uid = parts[1], parts[2], parts[3], parts[7]
            la, lp = local.split(":")
            ra, rp = remote.split(":")
            rows.append((_hex_addr(la, v6), int(lp, 16), _hex_addr(ra, v6), int(rp, 16), state, uid))
        except (ValueError, IndexError):
            continue
    return rows


def _hex_addr(h: str, v6: bool) -> Addr:
    raw = bytes.fromhex(h)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.IPv6Address(words) if v6 else ipaddress.IPv4Address(words)


def _listens(listening: set[tuple[Addr, int]], la: Addr, lp: int) -> bool:
    if (la, lp) in listening:
        return True
    mapped = la.ipv4_mapped if isinstance(la, ipaddress.IPv6Address) else None
    for addr, port in listening:
        if port == lp and (addr.is_unspecified or (mapped is not None and addr == mapped)):
            return True
    return False


class Connections(_EgressCheck):
    """Established outbound TCP connections and connected UDP flows to peers outside the allowed networks."""

    meta = CheckMeta(
        id="egress.connections",
        title="No established connection to outside the site",
        severity=Severity.HIGH,
        rationale="An established outbound connection to a peer outside the site is egress happening now, "
        "whatever the configuration says.",
        remediation="Identify the process (ss -tnp), stop it or remove its outbound configuration, and close "
        "the path it used (route, firewall, proxy).",
        controls=EGRESS_CONTROLS,
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        allowed = allowed_networks(ctx)
        bad: list[dict[str, Any]] = []
        seen = 0
        for proto in ("tcp", "udp"):
            rows = []
            read_any = False
            for path, v6 in ((f"/proc/net/{proto}", False), (f"/proc/net/{proto}6", True)):
                text = ctx.system.read_text(path)
                if text is not None:
                    read_any = True
                    rows.extend(_parse_proc_net(text, v6))
            if not read_any:
                raise _Unavailable(f"/proc/net/{proto} is not readable here")
            seen += len(rows)
            # A connection is inbound when a socket listens on its local address and port (or on the
            # wildcard address of that port); an outbound one merely sharing a port number is not.
            listening = {(la, lp) for (la, lp, _ra, _rp, st, _u) in rows if proto == "tcp" and st == "0A"}
            for la, lp, ra, rp, st, uid in rows:
                # TCP 01 ESTABLISHED; UDP 01 is a connected socket (a fixed peer: a flow out).
                if st != "01":
                    continue
                if proto == "tcp" and _listens(listening, la, lp):
                    continue
                if is_internal(ra, allowed):
                    continue
                bad.append(
                    {"protocol": proto, "local": f"{la}:{lp}", "remote": f"{ra}:{rp}", "uid": int(uid)}
                )
        owners = self._owners(ctx) if bad else {}
        for b in bad:
            b["process"] = owners.get((str(b["local"]), str(b["remote"])))
            who = f" by {b['process']}" if b["process"] else f" (uid {b['uid']})"
            what = "established connection" if b["protocol"] == "tcp" else "connected UDP flow"
            yield self.failed(f"{what} {b['local']} -> {b['remote']}{who}", resource=b["remote"], evidence=b)
        if not bad:
            yield self.passed(
                "no established outbound TCP connection or connected UDP flow to outside the allowed networks",
                evidence={"stats": {"sockets_seen": seen}, "allowed_networks": [str(n) for n in allowed]},
            )

    @staticmethod
    def _owners(ctx: CheckContext) -> dict[tuple[str, str], str]:
        lines: list[str] = []
        for proto in ("-t", "-u"):
            r = ctx.system.run(["ss", "-H", proto, "-n", "-p", "state", "established"])
            lines.extend(r.stdout.splitlines() if r.ok else [])
        out = {}
        for line in lines:
            parts = line.split()
            if len(parts) >= 4:
                m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
                local = parts[2].replace("[", "").replace("]", "").replace("::ffff:", "")
                remote = parts[3].replace("[", "").replace("]", "").replace("::ffff:", "")
                if m:
                    out[(local, remote)] = f"{m.group(1)} (pid {m.group(2)})"
        return out


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


class Interfaces(_EgressCheck):
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
        links = _netlink_rows(ctx.system.netlink("links"), "the interfaces")
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


# name pattern of the process -> switches that must be set, as (variable, accepted values)
_SERVERS: dict[str, tuple[str, ...]] = {
    "vllm": ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE"),
    "text-generation": ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "sglang": ("HF_HUB_OFFLINE", "DO_NOT_TRACK"),
    "tritonserver": ("HF_HUB_OFFLINE",),
    "trtllm-serve": ("HF_HUB_OFFLINE", "DO_NOT_TRACK"),
    "llama-server": (),
    "ollama": (),
    "gradio": ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE"),
    "transformers": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "huggingface": ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "dify": ("HF_HUB_OFFLINE",),
}
_ON = {"1", "true", "yes", "on"}
_SWITCH_OK: dict[str, set[str]] = {
    "HF_HUB_OFFLINE": _ON,
    "TRANSFORMERS_OFFLINE": _ON,
    "HF_HUB_DISABLE_TELEMETRY": _ON,
    "DO_NOT_TRACK": _ON,
    "VLLM_NO_USAGE_STATS": _ON,
    "GRADIO_ANALYTICS_ENABLED": {"0", "false", "no", "off"},
}


class Telemetry(_EgressCheck):
    """Telemetry and hub switches of running model servers."""

    meta = CheckMeta(
        id="egress.telemetry",
        title="Model servers run with telemetry and hub access switched off",
        severity=Severity.MEDIUM,
        rationale="Model servers and hub libraries phone home (usage statistics, model downloads, update "
        "checks) unless told not to; on a sealed site that is a failed connection at best and a leak at worst.",
        remediation="Set the listed variables in the service's unit or container environment "
        "(e.g. HF_HUB_OFFLINE=1, DO_NOT_TRACK=1, VLLM_NO_USAGE_STATS=1) and restart it.",
        controls=("pci-dss-4.0:1.3.2", "mlps-2.0-l3:8.1.3.1"),
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        servers = dict(_SERVERS)
        servers.update({k: tuple(v) for k, v in ctx.param(self.meta.id, "servers", {}).items()})
        seen = 0
        unreadable = 0
        for cmd_path in ctx.system.glob("/proc/[0-9]*/cmdline"):
            pid = cmd_path.split("/")[2]
            raw_cmd = ctx.system.read_text(cmd_path, 1 << 14)
            if raw_cmd is None:
                unreadable += ctx.system.stat(f"/proc/{pid}") is not None  # gone since the listing is fine
                continue
            cmdline = raw_cmd.replace("\0", " ").strip()
            if not cmdline or "edgesec" in cmdline:
                continue
            exe = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1]
            first_args = " ".join(cmdline.split()[:4])
            match = next((n for n in servers if n in exe or n in first_args), None)
            if match is None:
                continue
            seen += 1
            raw = ctx.system.read_text(f"/proc/{pid}/environ", ENVIRON_LIMIT)
            if raw is None:
                yield self.warned(
                    f"model server {exe} (pid {pid}): its environment is not readable",
                    resource=f"pid {pid} ({exe})",
                )
                continue
            env = dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)
            missing = [
                s for s in servers[match] if env.get(s, "").strip().lower() not in _SWITCH_OK.get(s, _ON)
            ]
            ev = {
                "pid": int(pid),
                "cmdline": cmdline[:300],
                "server": match,
                "required": list(servers[match]),
                "set": {s: env.get(s) for s in servers[match]},
            }
            if missing:
                yield self.failed(
                    f"model server {match} (pid {pid}) runs without {', '.join(missing)}",
                    resource=f"pid {pid} ({match})",
                    evidence=ev,
                )
            else:
                yield self.passed(
                    f"model server {match} (pid {pid}) has its telemetry switches set",
                    resource=f"pid {pid} ({match})",
                    evidence=ev,
                )
        if unreadable:
            yield self.warned(
                f"the command line of {unreadable} running processes could not be read: a model server among "
                "them would be unseen",
                evidence={"stats": {"processes_unreadable": unreadable}},
            )
        elif not seen:
            yield self.skipped(
                "no running model server recognised (vLLM, TGI, SGLang, Triton, TensorRT-LLM, llama.cpp, Ollama)"
            )


class ActiveProbe(_EgressCheck):
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
                raise _Unavailable(f"the probe of {res} gave no known outcome ({ans.get('outcome')!r})")
            else:
                yield self.failed(f"{res} is reachable: {ans.get('detail')}", resource=res, evidence=ev)


CHECKS: list[type[Check]] = [Routes, Firewall, Dns, ProxyEnv, Connections, Interfaces, Telemetry, ActiveProbe]
