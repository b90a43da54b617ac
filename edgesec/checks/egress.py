"""The ``egress`` check family: prove the site has no way out.

Each check reads one kind of evidence through the probes: routes in every table (v4 and v6) and the policy
rules (``ip -j``); the firewall's output and forward policy (``nft -j list ruleset``, ``iptables-save``);
DNS resolvers; proxy variables (environment, systemd units, apt, running processes); established
connections to peers outside the allowed networks; wireless, VPN and tunnel interfaces; telemetry
switches of running model servers; and, only when the site config names targets, an active probe.

"Allowed networks" are ``[checks] allowed_networks`` (CIDRs); loopback, link-local and multicast are
never egress.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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


def _net_internal(net: Net, allowed: Iterable[Net]) -> bool:
    if net.is_loopback or net.is_link_local or net.is_multicast:
        return True
    return any(net.version == n.version and net.subnet_of(n) for n in allowed)  # type: ignore[arg-type]


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else []
    except ValueError:
        return None


# --- routes and firewall -------------------------------------------------------------------------------

_NON_FORWARDING = {
    "local",
    "broadcast",
    "multicast",
    "unreachable",
    "prohibit",
    "blackhole",
    "throw",
    "anycast",
    "nat",
}


def outbound_routes(
    ctx: CheckContext, version: int, allowed: list[Net]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Routes (any table) that carry traffic to destinations outside the allowed networks."""
    r = ctx.system.run(["ip", "-j", f"-{version}", "route", "show", "table", "all"])
    ev: dict[str, Any] = {"command": " ".join(r.argv), "returncode": r.returncode}
    if r.returncode == 127:
        raise _Unavailable("the ip command (iproute2) is not installed")
    routes = _json(r.stdout)
    if not r.ok or not isinstance(routes, list):
        raise _Unavailable(f"'{' '.join(r.argv)}' failed: {r.stderr.strip()[:200]}")
    out = []
    for rt in routes:
        if (
            not isinstance(rt, dict)
            or rt.get("type", "unicast") in _NON_FORWARDING
            or rt.get("table") == "local"
        ):
            continue
        dst = rt.get("dst", "")
        if dst == "default":
            net: Net = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
        else:
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
        # A route through a gateway (or a default route on a point-to-point link) leads beyond this
        # segment; an on-link route to an internal segment does not.
        via = rt.get("gateway") or rt.get("via")
        leaves = net.prefixlen == 0 or (via is not None and not _net_internal(net, allowed))
        if net.prefixlen <= 1 and not via:
            leaves = True  # default or split-default (0/1 + 128/1, a VPN trick) straight onto a link
        if leaves:
            out.append(
                {
                    "dst": dst,
                    "gateway": via,
                    "dev": rt.get("dev"),
                    "table": rt.get("table", "main"),
                    "protocol": rt.get("protocol"),
                }
            )
    ev["stats"] = {"routes_seen": len(routes)}
    return out, ev


def policy_rules(ctx: CheckContext, version: int) -> list[dict[str, Any]]:
    """Non-standard policy routing rules (anything beyond local/main/default lookups)."""
    r = ctx.system.run(["ip", "-j", f"-{version}", "rule", "show"])
    rules = _json(r.stdout) if r.ok else None
    if not isinstance(rules, list):
        return []
    return [x for x in rules if isinstance(x, dict) and x.get("table") not in ("local", "main", "default")]


@dataclass
class FirewallView:
    """Whether output/forward traffic is dropped by default, per IP version, and why we think so.

    A base chain "drops by default" when its policy is drop (or its last rule drops everything). Its
    accept rules are classified: return traffic (``ct state established,related``), loopback and
    destinations inside the allowed networks are safe; anything else (a port, an outside address, an
    interface) is a *hole* that lets traffic out. Traffic is blocked when at least one base chain on the
    hook drops by default with no hole: every base chain must accept a packet for it to leave.
    """

    output_drop: dict[int, bool] = field(default_factory=lambda: {4: False, 6: False})
    forward_drop: dict[int, bool] = field(default_factory=lambda: {4: False, 6: False})
    output_holes: dict[int, list[str]] = field(default_factory=lambda: {4: [], 6: []})
    sources: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    readable: bool = False

    def add_chain(self, hook: str, versions: Iterable[int], drop: bool, holes: list[str]) -> None:
        target = self.output_drop if hook == "output" else self.forward_drop
        for v in versions:
            if drop and not holes:
                target[v] = True
            elif drop and hook == "output":
                self.output_holes[v].extend(holes)

    def finish(self) -> None:
        for v in (4, 6):
            if self.output_drop[v]:
                self.output_holes[v] = []  # another chain drops what this one's holes let through


_FAMILY_VERSIONS = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}
_SAFE_CT = {"established", "related"}


def _rule_verdict(expr: list[Any]) -> tuple[str | None, bool]:
    """(verdict, unconditional) of an nft rule in JSON form."""
    verdict = None
    matches = 0
    for e in expr:
        if not isinstance(e, dict):
            continue
        for k in ("accept", "drop", "reject"):
            if k in e:
                verdict = k
        if "match" in e:
            matches += 1
    return verdict, matches == 0


def _describe_match(expr: list[Any]) -> str:
    parts = []
    for e in expr:
        if isinstance(e, dict) and "match" in e:
            m = e["match"]
            left = json.dumps(m.get("left"), sort_keys=True)
            parts.append(f"{left} {m.get('op')} {json.dumps(m.get('right'), sort_keys=True)}")
    return " and ".join(parts)[:300] or "(any)"


def _nft_networks(right: Any) -> list[Net] | None:
    """The networks an nft match's right-hand side names, or None if it is not a plain address list."""
    items = right.get("set") if isinstance(right, dict) and "set" in right else right
    if not isinstance(items, list):
        items = [items]
    out: list[Net] = []
    for it in items:
        try:
            if isinstance(it, str):
                out.append(ipaddress.ip_network(it, strict=False))
            elif isinstance(it, dict) and isinstance(it.get("prefix"), dict):
                p = it["prefix"]
                out.append(ipaddress.ip_network(f"{p.get('addr')}/{p.get('len')}", strict=False))
            else:
                return None
        except ValueError:
            return None
    return out


def nft_accept_is_safe(expr: list[Any], allowed: list[Net]) -> bool:
    """True when an accept rule cannot let new traffic leave the site (see :class:`FirewallView`)."""
    for e in expr:
        if not isinstance(e, dict) or not isinstance(e.get("match"), dict):
            continue
        m = e["match"]
        left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
        if op not in ("==", "in"):
            continue
        if not isinstance(left, dict):
            continue
        ct, meta, payload = left.get("ct"), left.get("meta"), left.get("payload")
        if isinstance(ct, dict) and ct.get("key") == "state":
            states = set(right if isinstance(right, list) else [right])
            if states and {str(x) for x in states} <= _SAFE_CT:
                return True
        if isinstance(meta, dict) and meta.get("key") in ("oifname", "oif") and right in ("lo", 1):
            return True
        if isinstance(payload, dict) and payload.get("field") == "daddr":
            nets = _nft_networks(right)
            if nets and all(_net_internal(n, allowed) for n in nets):
                return True
    return False


def iptables_accept_is_safe(line: str, allowed: list[Net]) -> bool:
    toks = line.split()
    if "-o" in toks and toks[toks.index("-o") + 1 : toks.index("-o") + 2] == ["lo"]:
        return True
    for flag in ("--ctstate", "--state"):
        if flag in toks and toks.index(flag) + 1 < len(toks):
            states = {x.lower() for x in toks[toks.index(flag) + 1].split(",")}
            if states <= _SAFE_CT:
                return True
    if "-d" in toks and toks.index("-d") + 1 < len(toks):
        try:
            nets = [ipaddress.ip_network(x, strict=False) for x in toks[toks.index("-d") + 1].split(",")]
        except ValueError:
            return False
        return all(_net_internal(n, allowed) for n in nets)
    return False


def read_firewall(ctx: CheckContext, allowed: list[Net] | None = None) -> FirewallView:
    allowed = allowed if allowed is not None else allowed_networks(ctx)
    fw = FirewallView()
    r = ctx.system.run(["nft", "-j", "list", "ruleset"])
    if r.returncode not in (0, 127):
        fw.errors.append(f"nft: {(r.stderr.strip() or f'exit {r.returncode}')[:200]}")
    doc = _json(r.stdout) if r.ok else None
    if isinstance(doc, dict) and isinstance(doc.get("nftables"), list):
        fw.readable = True
        fw.sources.append("nft -j list ruleset")
        chains: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
        rules: dict[tuple[Any, Any, Any], list[list[Any]]] = {}
        for item in doc["nftables"]:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("chain"), dict):
                c = item["chain"]
                chains[(c.get("family"), c.get("table"), c.get("name"))] = c
            elif isinstance(item.get("rule"), dict):
                ru = item["rule"]
                expr = ru.get("expr", [])
                rules.setdefault((ru.get("family"), ru.get("table"), ru.get("chain")), []).append(
                    expr if isinstance(expr, list) else []
                )
        for k, c in chains.items():
            hook = c.get("hook")
            if hook not in ("output", "forward") or c.get("type", "filter") != "filter":
                continue
            versions = _FAMILY_VERSIONS.get(str(c.get("family", "")), ())
            rs = rules.get(k, [])
            drop = c.get("policy") == "drop"
            if rs:
                last_verdict, last_uncond = _rule_verdict(rs[-1])
                if last_verdict in ("drop", "reject") and last_uncond:
                    drop = True
            holes: list[str] = []
            name = f"nft {c.get('family')} {c.get('table')} {c.get('name')}"
            if drop:
                for ex in rs:
                    v, uncond = _rule_verdict(ex)
                    jumps = any(isinstance(e, dict) and ("jump" in e or "goto" in e) for e in ex)
                    if v == "accept" and uncond:
                        holes.append(f"{name}: accept (every packet)")
                    elif v == "accept" or jumps:
                        desc = f"{name}: {'accept' if v == 'accept' else 'jump'} {_describe_match(ex)}"
                        fw.exceptions.append(desc)
                        if hook == "output" and (jumps or not nft_accept_is_safe(ex, allowed)):
                            holes.append(desc)
            fw.detail.append(
                f"{name} hook {hook} policy {c.get('policy', 'accept')}"
                + (" (drops by default)" if drop else "")
                + (f", {len(holes)} rule(s) let traffic out" if holes else "")
            )
            fw.add_chain(str(hook), versions, drop, holes)
    for version, cmd in ((4, "iptables-save"), (6, "ip6tables-save")):
        r = ctx.system.run([cmd])
        if r.returncode not in (0, 127):
            fw.errors.append(f"{cmd}: {(r.stderr.strip() or f'exit {r.returncode}')[:200]}")
        if not r.ok or not r.stdout.strip():
            continue
        fw.readable = True
        fw.sources.append(cmd)
        table = None
        policy: dict[str, str] = {}
        accepts: dict[str, list[str]] = {"OUTPUT": [], "FORWARD": []}
        final_drop: dict[str, bool] = {"OUTPUT": False, "FORWARD": False}
        for line in r.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif table != "filter":
                continue
            elif line.startswith(":"):
                parts = line[1:].split()
                if len(parts) >= 2 and parts[0] in accepts:
                    policy[parts[0]] = parts[1]
            elif m := re.match(r"^-A (OUTPUT|FORWARD) (.*)$", line):
                chain, rest = m.group(1), m.group(2).strip()
                if re.fullmatch(r"-j (DROP|REJECT)", rest):
                    final_drop[chain] = True
                elif not final_drop[chain] and re.search(r"-j (ACCEPT|[A-Za-z][\w-]*)\s*$", rest):
                    target = rest.split("-j", 1)[1].split()[0]
                    if target not in ("DROP", "REJECT", "LOG", "RETURN"):
                        accepts[chain].append(rest)
        for chain in ("OUTPUT", "FORWARD"):
            if chain not in policy:
                continue
            drop = policy[chain] in ("DROP", "REJECT") or final_drop[chain]
            holes = [
                f"{cmd} {chain}: {a}"
                for a in accepts[chain]
                if not (a.endswith("-j ACCEPT") and iptables_accept_is_safe(a, allowed))
            ]
            if drop:
                fw.exceptions.extend(f"{cmd} {chain}: {a}" for a in accepts[chain])
            fw.detail.append(
                f"{cmd} filter {chain} policy {policy[chain]}"
                + (" (drops by default)" if drop else "")
                + (f", {len(holes)} rule(s) let traffic out" if drop and holes and chain == "OUTPUT" else "")
            )
            fw.add_chain(chain.lower(), (version,), drop, holes if chain == "OUTPUT" else [])
    fw.finish()
    return fw


class _Unavailable(Exception):
    """The evidence a check needs cannot be read here (tool missing): the check SKIPs with this reason."""


class _EgressCheck(Check):
    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        try:
            yield from self.evaluate(ctx)
        except _Unavailable as exc:
            yield self.skipped(str(exc))

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        raise NotImplementedError


class Routes(_EgressCheck):
    """A route out (default or via a gateway to outside networks) with nothing dropping the traffic."""

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
        fw = read_firewall(ctx, allowed)
        for version in (4, 6):
            routes, ev = outbound_routes(ctx, version, allowed)
            rules = policy_rules(ctx, version)
            evidence = {
                **ev,
                "outbound_routes": routes,
                "policy_rules": rules,
                "firewall": fw.detail,
                "firewall_output_drops": fw.output_drop[version],
                "firewall_exceptions": fw.exceptions,
                "firewall_holes": fw.output_holes[version],
                "allowed_networks": [str(n) for n in allowed],
            }
            res = f"IPv{version}"
            if not routes:
                yield self.passed(f"IPv{version}: no route leaves the site", resource=res, evidence=evidence)
            elif fw.output_drop[version]:
                yield self.passed(
                    f"IPv{version}: {len(routes)} route(s) out exist but the firewall drops outbound traffic by "
                    "default",
                    resource=res,
                    evidence=evidence,
                )
            else:
                desc = ", ".join(
                    f"{r['dst']} via {r['gateway'] or 'link'} dev {r['dev']} (table {r['table']})"
                    for r in routes[:4]
                )
                holes = fw.output_holes[version]
                if holes:
                    why = f"the firewall drops by default but lets traffic out through {len(holes)} rule(s): {holes[0]}"
                elif fw.errors and not fw.readable:
                    # Unverified is not sealed: without the ruleset the route must count as open.
                    why = f"the firewall could not be read ({fw.errors[0]}); run the audit as root"
                else:
                    why = "no firewall drops outbound traffic"
                yield self.failed(
                    f"IPv{version} egress is open: {desc}; {why}", resource=res, evidence=evidence
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


class Firewall(_EgressCheck):
    """Output and forward default policy of the host firewall."""

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
        fw = read_firewall(ctx, allowed)
        if not fw.readable:
            if fw.errors:
                yield Finding(
                    self.meta.id,
                    Status.ERROR,
                    f"the firewall ruleset could not be read ({fw.errors[0]}); run the audit as root",
                    evidence={"errors": fw.errors},
                )
                return
            have = [t for t in ("nft", "iptables-save") if ctx.system.which(t)]
            if not have:
                raise _Unavailable("neither nft nor iptables-save is installed: the firewall cannot be read")
        ev = {"sources": fw.sources, "chains": fw.detail, "output_exceptions": fw.exceptions}
        for version in (4, 6):
            try:
                routes, _ = outbound_routes(ctx, version, allowed)
            except _Unavailable:
                routes = []
            res = f"IPv{version} output"
            holes = fw.output_holes[version]
            if fw.output_drop[version]:
                yield self.passed(f"IPv{version} output is dropped by default", resource=res, evidence=ev)
            elif holes:
                yield self.failed(
                    f"IPv{version} output is dropped by default but {len(holes)} rule(s) let traffic leave the "
                    f"site: {'; '.join(holes[:3])}",
                    resource=res,
                    evidence={**ev, "holes": holes},
                    severity=None if routes else Severity.MEDIUM,
                )
            elif routes:
                yield self.failed(
                    f"IPv{version} output is accepted by default and a route out exists",
                    resource=res,
                    evidence=ev,
                )
            else:
                yield self.warned(
                    f"IPv{version} output is accepted by default (no route out today: routing alone keeps it sealed)",
                    resource=res,
                    evidence=ev,
                    severity=Severity.MEDIUM,
                )
            fwd_on = (
                ctx.system.read_text(
                    "/proc/sys/net/ipv4/ip_forward"
                    if version == 4
                    else "/proc/sys/net/ipv6/conf/all/forwarding"
                )
                or "0"
            ).strip() == "1"
            res = f"IPv{version} forward"
            fev = {**ev, "forwarding_enabled": fwd_on}
            if not fwd_on:
                yield self.passed(f"IPv{version} forwarding is disabled", resource=res, evidence=fev)
            elif fw.forward_drop[version]:
                yield self.passed(
                    f"IPv{version} forwarding is on; forward is dropped by default",
                    resource=res,
                    evidence=fev,
                )
            else:
                yield self.failed(
                    f"IPv{version} forwarding is on and forwarded traffic is accepted by default",
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


_PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "rsync_proxy", "grpc_proxy")
_ASSIGN_RE = re.compile(
    r"""(?:^|[\s"';=])(?:export\s+)?(?P<name>(?i:(?:http|https|ftp|all|rsync|grpc)_proxy))=(?P<value>"[^"]*"|'[^']*'|[^\s"';]*)""",
    re.MULTILINE,
)
_APT_PROXY_RE = re.compile(r"""Acquire::(?:https?|ftp)::Proxy\s+"([^"]+)"\s*;""", re.IGNORECASE)
# Docker daemon ("proxies": {"http-proxy": ...}) and client config ("httpProxy"): containers inherit these.
_JSON_PROXY_RE = re.compile(r'"((?:https?|ftp|all)[-_]?proxy)"\s*:\s*"([^"]+)"', re.IGNORECASE)


def redact(value: str) -> str:
    """Hide credentials in a proxy URL (``http://user:pass@host`` -> ``http://***@host``)."""
    return re.sub(r"(?<=//)[^/@\s]+@", "***@", value)


def _proxies_in_environ(env: dict[str, str]) -> dict[str, str]:
    return {k: redact(v) for k, v in env.items() if k.lower() in _PROXY_VARS and v.strip()}


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
        for path in self._files(ctx):
            text = ctx.system.read_text(path, 1 << 18)
            if text is None:
                continue
            scanned_files += 1
            found = {
                m.group("name"): redact(m.group("value").strip("'\"")) for m in _ASSIGN_RE.finditer(text)
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
            raw = ctx.system.read_text(env_path, 1 << 17)
            if raw is None:
                # Gone since the listing, or another user's process read without root.
                unreadable += ctx.system.stat(f"/proc/{pid}") is not None
                continue
            procs += 1
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
        if unreadable and ctx.system.euid() != 0:
            yield self.warned(
                f"the environment of {unreadable} running processes could not be read; run the audit as root",
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


class Connections(_EgressCheck):
    """Established outbound TCP connections to peers outside the allowed networks."""

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
        rows = []
        read_any = False
        for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
            text = ctx.system.read_text(path)
            if text is not None:
                read_any = True
                rows.extend(_parse_proc_net(text, v6))
        if not read_any:
            raise _Unavailable("/proc/net/tcp is not readable here")
        listening = {lp for (_la, lp, _ra, _rp, st, _u) in rows if st == "0A"}
        bad: list[dict[str, Any]] = []
        for la, lp, ra, rp, st, uid in rows:
            if st != "01" or lp in listening:  # 01 ESTABLISHED; a local listening port means inbound
                continue
            if is_internal(ra, allowed):
                continue
            bad.append({"local": f"{la}:{lp}", "remote": f"{ra}:{rp}", "uid": int(uid)})
        owners = self._owners(ctx) if bad else {}
        for b in bad:
            b["process"] = owners.get((str(b["local"]), str(b["remote"])))
            who = f" by {b['process']}" if b["process"] else f" (uid {b['uid']})"
            yield self.failed(
                f"established connection {b['local']} -> {b['remote']}{who}", resource=b["remote"], evidence=b
            )
        if not bad:
            yield self.passed(
                "no established outbound connection to outside the allowed networks",
                evidence={
                    "stats": {"connections_seen": len(rows)},
                    "allowed_networks": [str(n) for n in allowed],
                },
            )

    @staticmethod
    def _owners(ctx: CheckContext) -> dict[tuple[str, str], str]:
        r = ctx.system.run(["ss", "-H", "-t", "-n", "-p", "state", "established"])
        out = {}
        for line in r.stdout.splitlines() if r.ok else []:
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
        r = ctx.system.run(["ip", "-j", "-d", "link", "show"])
        if r.returncode == 127:
            raise _Unavailable("the ip command (iproute2) is not installed")
        links = _json(r.stdout) if r.ok else None
        if not isinstance(links, list):
            raise _Unavailable(f"'ip -j -d link show' failed: {r.stderr.strip()[:200]}")
        found = 0
        for link in links:
            name = link.get("ifname", "?")
            kind = (link.get("linkinfo") or {}).get("info_kind")
            what = _TUNNEL_KINDS.get(kind or "") or (
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
            state = link.get("operstate", "UNKNOWN")
            up = "UP" in (link.get("flags") or []) or state == "UP"
            ev = {
                "ifname": name,
                "kind": kind,
                "link_type": link.get("link_type"),
                "operstate": state,
                "flags": link.get("flags"),
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
        for cmd_path in ctx.system.glob("/proc/[0-9]*/cmdline"):
            pid = cmd_path.split("/")[2]
            cmdline = (ctx.system.read_text(cmd_path, 1 << 14) or "").replace("\0", " ").strip()
            if not cmdline or "edgesec" in cmdline:
                continue
            exe = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1]
            first_args = " ".join(cmdline.split()[:4])
            match = next((n for n in servers if n in exe or n in first_args), None)
            if match is None:
                continue
            seen += 1
            raw = ctx.system.read_text(f"/proc/{pid}/environ", 1 << 17)
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
        if not seen:
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
            else:
                yield self.failed(f"{res} is reachable: {ans.get('detail')}", resource=res, evidence=ev)


CHECKS: list[type[Check]] = [Routes, Firewall, Dns, ProxyEnv, Connections, Interfaces, Telemetry, ActiveProbe]
