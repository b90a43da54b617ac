"""The host firewall as a model with stated semantics: can a new packet from this host leave the site?

The one question every egress check asks of the firewall. The packet in question is a *new* connection
(conntrack state ``new``) from this host (the ``output`` path) or forwarded by it (the ``forward`` path), of
IP version 4 or 6, to a destination outside the allowed networks, on a given outgoing device (or any).

Sources, read once and merged once:

* ``nft -j list ruleset`` -- every table except dormant ones, and except the tables ``iptables-nft`` owns
  when those are read from ``iptables-nft-save`` (the same chains are never read twice);
* ``iptables-save``/``ip6tables-save`` (whichever backend they use) and ``iptables-legacy-save`` /
  ``ip6tables-legacy-save`` when the legacy backend is separate: legacy rules are hooks of their own.

Semantics (netfilter's): a packet leaves only if *every* base chain on its path lets it through, so the
path is sealed when at least one base chain is proven to drop every such packet. The base chains on the
output path are the ``output`` and ``postrouting`` hooks (ip, ip6, inet; any type but nat) and the netdev
``egress`` hook of the outgoing device; on the forward path, ``forward`` and ``postrouting``. A chain is
walked rule by rule; each rule's match is judged for the packet as ALWAYS, NEVER, SOME or UNKNOWN:

* ``accept`` that may match: a *hole* (a rule that lets some packet out);
* ``drop``/``reject`` that ALWAYS matches and is not rate-limited (``limit``, ``quota``): the walk ends, dropped;
  any other drop is conditional and seals nothing;
* ``jump``/``goto`` are followed (``goto``'s fall-through returns to the caller, for a base chain its
  policy), ``return`` likewise; packets a *conditional* goto or return sends back skip the rest of the
  chain, so a later drop does not seal them; verdict maps (``vmap``) are walked entry by entry;
* the end of a base chain applies its policy.

A construct the model does not understand (an ``xt`` match, an unreadable set, a ``queue`` verdict, an
unknown iptables match) is UNKNOWN: a chain holding one in its way is never proven sealed, and the checks
say "cannot prove sealed", naming the construct.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class M(Enum):
    """How a rule's match applies to the packet in question."""

    ALWAYS = "always"
    NEVER = "never"
    SOME = "some"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Pkt:
    """The packet in question: IP version, path (``output`` or ``forward``) and outgoing device (or None)."""

    version: int
    path: str = "output"
    dev: str | None = None


Cond = Callable[[Pkt], tuple[M, str | None]]  # (match, construct not understood)


def _and(results: Iterable[tuple[M, str | None]]) -> tuple[M, list[str]]:
    out = M.ALWAYS
    unknown: list[str] = []
    for m, what in results:
        if m is M.NEVER:
            return M.NEVER, []
        if m is M.UNKNOWN:
            out = M.UNKNOWN
            if what:
                unknown.append(what)
        elif m is M.SOME and out is M.ALWAYS:
            out = M.SOME
    return out, unknown


@dataclass
class Rule:
    where: str  # "nft inet edge out: <text>" / "iptables-save filter OUTPUT: <line>"
    conds: list[Cond]
    verdict: str  # accept drop reject jump goto return continue vmap unknown none
    target: str | None = None
    limited: bool = False  # limit / quota: a drop that does not always drop
    vmap: list[tuple[list[Cond], str, str | None]] = field(default_factory=list)
    unknown_stmt: str | None = None

    def match(self, pkt: Pkt) -> tuple[M, list[str]]:
        m, unknown = _and(c(pkt) for c in self.conds)
        if self.unknown_stmt and m is not M.NEVER:
            return M.UNKNOWN, [*unknown, self.unknown_stmt]
        return m, unknown


@dataclass
class Chain:
    name: str  # "nft inet edge out", "iptables-save filter OUTPUT"
    rules: list[Rule]
    hook: str | None = None  # output forward postrouting egress ... (None: a regular chain)
    policy: str = "accept"
    versions: tuple[int, ...] = (4, 6)
    devs: tuple[str, ...] | None = None  # the devices of a netdev egress chain (None: not readable)
    kind: str = "filter"


@dataclass
class Walk:
    dropped: bool = False  # the walk ended at a drop every remaining packet meets
    early_return: bool = False  # some packets left the chain before that (a conditional return or goto)
    holes: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def drops_all(self) -> bool:
        """Every packet that entered the chain (and no hole accepted) is dropped."""
        return self.dropped and not self.early_return


@dataclass
class PathVerdict:
    sealed: bool
    sealed_by: list[str]
    holes: list[str]
    unknown: list[str]
    chains: list[str]


@dataclass
class Ruleset:
    """Every chain read, by name, and what could not be read."""

    chains: dict[str, Chain] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # dormant tables, tables read from another source

    @property
    def readable(self) -> bool:
        return bool(self.sources)

    def base_chains(self, pkt: Pkt) -> list[Chain]:
        hooks = ("output", "postrouting") if pkt.path == "output" else ("forward", "postrouting")
        out = []
        for c in self.chains.values():
            if c.hook is None or c.kind == "nat" or pkt.version not in c.versions:
                continue
            if c.hook in hooks:
                out.append(c)
            elif c.hook == "egress" and c.devs is not None and pkt.dev is not None and pkt.dev in c.devs:
                out.append(c)  # a device's egress hook sees only that device's packets
        return out

    def walk(self, chain: Chain, pkt: Pkt, depth: int = 0) -> Walk:
        w = Walk()
        if depth > 32:
            w.unknown.append(f"{chain.name}: jumps nested deeper than 32")
            return w
        for r in chain.rules:
            m, unknown = r.match(pkt)
            if m is M.NEVER:
                continue
            w.unknown.extend(f"{r.where} ({u})" for u in unknown)
            branches: list[tuple[M, str, str | None]]
            if r.verdict == "vmap":
                branches = []
                for conds, verdict, target in r.vmap:
                    em, eu = _and([*(c(pkt) for c in r.conds), *(c(pkt) for c in conds)])
                    w.unknown.extend(f"{r.where} ({u})" for u in eu)
                    if em is not M.NEVER:
                        branches.append(
                            (M.SOME if em is M.ALWAYS and len(r.vmap) > 1 else em, verdict, target)
                        )
            else:
                branches = [(m, r.verdict, r.target)]
            for bm, verdict, target in branches:
                always = bm is M.ALWAYS and not r.limited
                if verdict == "accept":
                    if bm is M.UNKNOWN:
                        w.unknown.append(f"{r.where} (an accept whose match is not understood)")
                    else:
                        w.holes.append(r.where)
                    if always:
                        return w
                elif verdict in ("drop", "reject"):
                    if always:
                        w.dropped = True
                        return w
                elif verdict in ("jump", "goto"):
                    sub_chain = self.chains.get(_sibling(chain.name, target))
                    if sub_chain is None:
                        w.unknown.append(f"{r.where} (jump to a chain that was not read: {target})")
                        continue
                    sub = self.walk(sub_chain, pkt, depth + 1)
                    w.holes.extend(sub.holes)
                    w.unknown.extend(sub.unknown)
                    if always and sub.drops_all:
                        w.dropped = True
                        return w
                    if verdict == "goto" and not sub.drops_all:
                        # What falls through a goto's chain returns to this chain's caller (for a base
                        # chain: its policy), skipping the rest of this chain.
                        if always:
                            return w
                        w.early_return = True
                    # A jump's fall-through (and its chain's returns) come back here: the walk goes on.
                elif verdict == "return":
                    if always:
                        return w
                    w.early_return = True  # some packets return to the caller (or meet the policy)
                elif verdict in ("continue", "none"):
                    continue
                else:
                    w.unknown.append(f"{r.where} (verdict {verdict})")
        return w

    def judge(self, pkt: Pkt) -> PathVerdict:
        """Whether every new packet of ``pkt``'s kind is dropped before it leaves."""
        sealed_by: list[str] = []
        holes: list[str] = []
        unknown: list[str] = []
        names = []
        for c in self.base_chains(pkt):
            names.append(c.name)
            w = self.walk(c, pkt)
            # What returns early or falls off the end meets the chain's policy.
            dropped = c.policy == "drop" or w.drops_all
            if c.policy != "drop" and w.dropped and w.early_return:
                w.holes.append(f"{c.name}: packets that return early meet its policy accept")
            if dropped and not w.holes and not w.unknown:
                sealed_by.append(c.name)
            elif dropped or w.dropped:
                holes.extend(w.holes)
                unknown.extend(w.unknown)
        sealed = bool(sealed_by)
        return PathVerdict(
            sealed,
            sealed_by,
            [] if sealed else _dedup(holes),
            [] if sealed else _dedup(unknown),
            names,
        )


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _sibling(chain_name: str, target: str | None) -> str:
    """The full name of a chain ``target`` in the same table as ``chain_name``."""
    return chain_name.rsplit(" ", 1)[0] + " " + str(target)


# --- judging matches ------------------------------------------------------------------------------------

_NEW_STATES = {"new", "untracked"}


def _internal(net: Net, allowed: list[Net]) -> bool:
    if net.is_loopback or net.is_link_local or net.is_multicast:
        return True
    return any(net.version == n.version and net.subnet_of(n) for n in allowed)  # type: ignore[arg-type]


def _all_space(nets: list[Net]) -> bool:
    return any(n.prefixlen == 0 for n in nets)


def dest_cond(
    nets: list[Net] | None, negated: bool, version: int | None, allowed: list[Net], what: str
) -> Cond:
    """``daddr in nets`` (or not), for ``version`` only (``ip daddr`` in an inet table)."""

    def cond(pkt: Pkt) -> tuple[M, str | None]:
        if version is not None and pkt.version != version:
            return M.NEVER, None  # an ip match does not match an ip6 packet
        if nets is None:
            return M.UNKNOWN, what
        mine = [n for n in nets if n.version == pkt.version]
        if not mine:
            return (M.ALWAYS if negated else M.NEVER), None
        inside = all(_internal(n, allowed) for n in mine)
        if _all_space(mine):
            return (M.NEVER if negated else M.ALWAYS), None
        if inside:
            return (M.ALWAYS if negated else M.NEVER), None
        return M.SOME, None

    return cond


def ct_cond(states: set[str], negated: bool) -> Cond:
    """A new outbound packet is ``new``, or ``untracked`` when a raw-table ``notrack`` saw it first."""

    def cond(_pkt: Pkt) -> tuple[M, str | None]:
        every = _NEW_STATES <= states  # matches the packet in question whichever state it has
        none = not (states & _NEW_STATES)
        if negated:
            every, none = none, every
        return (M.ALWAYS if every else M.NEVER if none else M.SOME), None

    return cond


def oif_cond(names: set[str], negated: bool) -> Cond:
    def cond(pkt: Pkt) -> tuple[M, str | None]:
        if names <= {"lo", "1"}:
            return (M.ALWAYS if negated else M.NEVER), None
        if pkt.dev is not None:
            hit = pkt.dev in names or any(n.endswith("*") and pkt.dev.startswith(n[:-1]) for n in names)
            return (M.ALWAYS if hit != negated else M.NEVER), None
        return M.SOME, None

    return cond


def version_cond(version: int, negated: bool = False) -> Cond:
    def cond(pkt: Pkt) -> tuple[M, str | None]:
        return (M.ALWAYS if (pkt.version == version) != negated else M.NEVER), None

    return cond


def some_cond(_pkt: Pkt) -> tuple[M, str | None]:
    return M.SOME, None


def unknown_cond(what: str) -> Cond:
    def cond(_pkt: Pkt) -> tuple[M, str | None]:
        return M.UNKNOWN, what

    return cond


# --- nft -j list ruleset -----------------------------------------------------------------------------------

_FAMILY_VERSIONS = {"ip": (4,), "ip6": (6,), "inet": (4, 6), "netdev": (4, 6), "bridge": (4, 6)}
IPTABLES_TABLES = {"filter", "mangle", "raw", "security", "nat"}


def _nets(right: Any, sets: dict[str, list[Any]]) -> list[Net] | None:
    if isinstance(right, str) and right.startswith("@"):
        elems = sets.get(right[1:])
        return None if elems is None else _nets({"set": elems}, sets)
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
            elif isinstance(it, dict) and isinstance(it.get("range"), list) and len(it["range"]) == 2:
                lo, hi = (ipaddress.ip_address(x) for x in it["range"])
                out.extend(ipaddress.summarize_address_range(lo, hi))  # type: ignore[arg-type]
            elif isinstance(it, dict) and "elem" in it:
                sub = _nets([it["elem"].get("val")], sets)
                if sub is None:
                    return None
                out.extend(sub)
            else:
                return None
        except (ValueError, TypeError):
            return None
    return out


def _strings(right: Any, sets: dict[str, list[Any]]) -> set[str] | None:
    if isinstance(right, str) and right.startswith("@"):
        elems = sets.get(right[1:])
        return None if elems is None else _strings({"set": elems}, sets)
    items = right.get("set") if isinstance(right, dict) and "set" in right else right
    if not isinstance(items, list):
        items = [items]
    out = set()
    for it in items:
        if isinstance(it, str | int):
            out.add(str(it))
        else:
            return None
    return out


def _nft_cond(match: dict[str, Any], family: str, allowed: list[Net], sets: dict[str, list[Any]]) -> Cond:
    left, right, op = match.get("left"), match.get("right"), str(match.get("op", "=="))
    negated = op == "!="
    text = f"{json.dumps(left, sort_keys=True)} {op} {json.dumps(right, sort_keys=True)}"[:200]
    if op not in ("==", "!=", "in"):
        return some_cond if op in ("<", ">", "<=", ">=") else unknown_cond(f"match operator {op}")
    if not isinstance(left, dict):
        return unknown_cond(f"match {text}")
    if isinstance(left.get("payload"), dict):
        p = left["payload"]
        if p.get("field") == "daddr" and p.get("protocol") in ("ip", "ip6"):
            version = 4 if p["protocol"] == "ip" else 6
            nets = _nets(right, sets)
            return dest_cond(nets, negated, version, allowed, f"daddr set not readable: {text}")
        if p.get("protocol") in ("ip", "ip6"):
            version = 4 if p["protocol"] == "ip" else 6
            return lambda pkt: (M.NEVER, None) if pkt.version != version else (M.SOME, None)
        return some_cond  # ports, protocols, saddr, flags: some packets
    if isinstance(left.get("ct"), dict):
        key = left["ct"].get("key")
        if key == "state":
            states = _strings(right, sets)
            if states is None:
                return unknown_cond(f"ct state {text}")
            return ct_cond({s.lower() for s in states}, negated)
        return some_cond
    if isinstance(left.get("meta"), dict):
        key = left["meta"].get("key")
        if key in ("oifname", "oif"):
            names = _strings(right, sets)
            if names is None:
                return unknown_cond(f"oif set not readable: {text}")
            return oif_cond(names, negated)
        if key == "nfproto":
            vals = _strings(right, sets) or set()
            if vals <= {"ipv4", "ipv6"} and len(vals) == 1:
                return version_cond(4 if "ipv4" in vals else 6, negated)
            return some_cond
        return some_cond  # skuid, l4proto, mark, ...: some packets
    if "fib" in left or "socket" in left or "rt" in left or "osf" in left:
        return some_cond
    return unknown_cond(f"match {text}")


def _nft_rule(
    ru: dict[str, Any], chain_name: str, allowed: list[Net], sets: dict[str, list[Any]], family: str
) -> Rule:
    expr = ru.get("expr", [])
    expr = expr if isinstance(expr, list) else []
    rule = Rule(f"{chain_name}: {_nft_text(expr)}", [], "none")
    for e in expr:
        if not isinstance(e, dict) or len(e) != 1:
            rule.unknown_stmt = f"statement {json.dumps(e)[:80]}"
            continue
        ((k, v),) = e.items()
        if k == "match" and isinstance(v, dict):
            rule.conds.append(_nft_cond(v, family, allowed, sets))
        elif k in ("accept", "drop", "reject", "return", "continue"):
            rule.verdict = k
        elif k in ("jump", "goto") and isinstance(v, dict):
            rule.verdict, rule.target = k, str(v.get("target"))
        elif k in ("limit", "quota"):
            rule.limited = True
        elif k in ("counter", "log", "comment", "mangle", "notrack", "ct helper", "meter", "set", "ct count"):
            if k in ("meter", "ct count"):
                rule.limited = True
        elif k == "vmap" and isinstance(v, dict):
            rule.verdict = "vmap"
            key_cond = _vmap_conds(v, family, allowed, sets)
            if key_cond is None:
                rule.unknown_stmt = f"verdict map not readable: {json.dumps(v)[:120]}"
            else:
                rule.vmap = key_cond
        elif k in ("queue", "xt", "dup", "fwd"):
            rule.unknown_stmt = f"{k} statement"
            if k == "xt":
                rule.conds.append(unknown_cond("xt (iptables-compat) expression"))
        else:
            rule.unknown_stmt = f"{k} statement"
    return rule


def _vmap_conds(
    v: dict[str, Any], family: str, allowed: list[Net], sets: dict[str, list[Any]]
) -> list[tuple[list[Cond], str, str | None]] | None:
    data = v.get("data")
    elems = sets.get(data[1:]) if isinstance(data, str) and data.startswith("@") else None
    if elems is None and isinstance(data, dict):
        elems = data.get("set")
    if not isinstance(elems, list):
        return None
    out: list[tuple[list[Cond], str, str | None]] = []
    for el in elems:
        if not (isinstance(el, list) and len(el) == 2 and isinstance(el[1], dict) and len(el[1]) == 1):
            return None
        key, verdict = el
        ((vk, vv),) = verdict.items()
        target = str(vv.get("target")) if isinstance(vv, dict) else None
        cond = _nft_cond({"left": v.get("key"), "right": key, "op": "=="}, family, allowed, sets)
        out.append(([cond], vk, target))
    return out


def _nft_text(expr: list[Any]) -> str:
    parts = []
    for e in expr:
        if isinstance(e, dict) and isinstance(e.get("match"), dict):
            m = e["match"]
            parts.append(
                f"{json.dumps(m.get('left'), sort_keys=True)} {m.get('op')} {json.dumps(m.get('right'), sort_keys=True)}"
            )
        elif isinstance(e, dict):
            parts.extend(k if v is None else f"{k} {json.dumps(v, sort_keys=True)}" for k, v in e.items())
    return " ".join(parts)[:300] or "(empty rule)"


_TABLE_FLAGS = {"owner", "persist"}


def add_nft(
    rs: Ruleset,
    doc: Any,
    allowed: list[Net],
    skip_tables: set[tuple[str, str]],
    table_text: Callable[[str, str], str | None] | None = None,
) -> None:
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        rs.errors.append("nft -j list ruleset: not an nftables JSON document")
        return
    rs.sources.append("nft -j list ruleset")
    dormant: set[tuple[str, str]] = set()
    sets: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for it in items:
        if not isinstance(it, dict):
            continue
        t = it.get("table")
        if isinstance(t, dict) and "flags" in t:
            ft = (str(t.get("family")), str(t.get("name")))
            flags = t["flags"]
            flags = [flags] if isinstance(flags, str) else flags
            if isinstance(flags, list) and "dormant" in flags:
                dormant.add(ft)
            elif not (isinstance(flags, list) and set(map(str, flags)) <= _TABLE_FLAGS):
                # nft 1.0.6 prints the table's name as its "flags" in JSON: ask the text form instead.
                text = table_text(*ft) if table_text else None
                if text is None:
                    dormant.add(ft)
                    rs.errors.append(
                        f"nft {ft[0]} {ft[1]}: table flags not readable; its chains are not counted"
                    )
                elif re.search(r"^\s*flags\s+.*\bdormant\b", text, re.MULTILINE):
                    dormant.add(ft)
        for kind in ("set", "map"):
            s = it.get(kind)
            if isinstance(s, dict):
                elems = s.get("elem")
                if elems is None and "elem" not in s:
                    elems = []  # an empty set lists no elements
                if isinstance(elems, list):
                    sets.setdefault((str(s.get("family")), str(s.get("table"))), {})[str(s.get("name"))] = (
                        elems
                    )
    for fam_tab in sorted(dormant):
        rs.skipped.append(f"nft {fam_tab[0]} {fam_tab[1]}: dormant table (its chains do not run)")
    for fam_tab in sorted(skip_tables):
        rs.skipped.append(f"nft {fam_tab[0]} {fam_tab[1]}: read from iptables-nft-save instead")
    for it in items:
        if not isinstance(it, dict):
            continue
        c = it.get("chain")
        if isinstance(c, dict):
            ft = (str(c.get("family")), str(c.get("table")))
            if ft in dormant or ft in skip_tables:
                continue
            name = f"nft {ft[0]} {ft[1]} {c.get('name')}"
            devs: tuple[str, ...] | None = None
            dev = c.get("dev", c.get("devices"))
            if isinstance(dev, str):
                devs = (dev,)
            elif isinstance(dev, list) and all(isinstance(d, str) for d in dev):
                devs = tuple(dev)
            elif ft[0] == "netdev" and c.get("hook") == "egress" and table_text is not None:
                # nft 1.0.6 leaves the device out of its JSON: read it from the text form.
                devs = _netdev_devices(table_text(*ft), str(c.get("name")))
            if ft[0] == "netdev" and c.get("hook") == "egress" and devs is None:
                rs.errors.append(
                    f"{name}: the egress hook's device is not readable; the chain is not counted"
                )
            rs.chains[name] = Chain(
                name,
                [],
                hook=str(c["hook"]) if c.get("hook") else None,
                policy=str(c.get("policy", "accept")),
                versions=_FAMILY_VERSIONS.get(ft[0], ()),
                devs=devs,
                kind=str(c.get("type", "filter")),
            )
    for it in items:
        ru = it.get("rule") if isinstance(it, dict) else None
        if not isinstance(ru, dict):
            continue
        ft = (str(ru.get("family")), str(ru.get("table")))
        name = f"nft {ft[0]} {ft[1]} {ru.get('chain')}"
        if name in rs.chains:
            rs.chains[name].rules.append(_nft_rule(ru, name, allowed, sets.get(ft, {}), ft[0]))


def _netdev_devices(text: str | None, chain: str) -> tuple[str, ...] | None:
    if not text:
        return None
    m = re.search(r"chain\s+" + re.escape(chain) + r"\s*\{(.*?)\}", text, re.DOTALL)
    if m is None:
        return None
    body = m.group(1)
    one = re.search(r'hook\s+egress\s+device\s+"?([^\s";]+)"?', body)
    if one:
        return (one.group(1),)
    many = re.search(r"devices\s*=\s*\{([^}]*)\}", body)
    if many:
        return tuple(d.strip().strip('"') for d in many.group(1).split(",") if d.strip())
    return None


# --- iptables-save ---------------------------------------------------------------------------------------

_IPT_HOOKS = {"OUTPUT": "output", "FORWARD": "forward", "POSTROUTING": "postrouting"}
# Match options whose meaning for the packet in question is "some packets" (ports, protocols, owners...).
_IPT_SOME = {
    "-p",
    "--protocol",
    "-s",
    "--source",
    "--dport",
    "--sport",
    "--dports",
    "--sports",
    "--destination-port",
    "--source-port",
    "--uid-owner",
    "--gid-owner",
    "--mark",
    "--tcp-flags",
    "--syn",
    "--icmp-type",
    "--icmpv6-type",
    "-i",
    "--in-interface",
    "--src-type",
    "--dst-type",
    "--length",
    "--pkt-type",
    "--cgroup",
    "--path",
    "--socket-exists",
}
_IPT_MODULES_OK = {
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "icmpv6",
    "multiport",
    "owner",
    "mark",
    "comment",
    "conntrack",
    "state",
    "addrtype",
    "length",
    "pkttype",
    "cgroup",
    "limit",
    "quota",
    "hashlimit",
    "connlimit",
    "sctp",
    "socket",
}


def _ipt_nets(text: str) -> list[Net] | None:
    try:
        return [ipaddress.ip_network(x, strict=False) for x in text.split(",")]
    except ValueError:
        return None


def _ipt_rule(line: str, chain: str, version: int, allowed: list[Net], declared: set[str]) -> Rule:
    try:
        toks = shlex.split(line)
    except ValueError:
        toks = line.split()
    rule = Rule(f"{chain}: {line}", [], "none")
    i, neg = 2, False  # skip "-A CHAIN"
    while i < len(toks):
        t = toks[i]
        arg = toks[i + 1] if i + 1 < len(toks) else ""
        if t == "!":
            neg = True
            i += 1
            continue
        step = 2
        if t in ("-j", "--jump", "-g", "--goto"):
            target = arg
            if target in ("ACCEPT", "DROP", "REJECT", "RETURN"):
                rule.verdict = target.lower()
            elif target in ("LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE", "AUDIT", "TCPMSS"):
                rule.verdict = "none"
            elif target in declared:
                rule.verdict = "goto" if t in ("-g", "--goto") else "jump"
                rule.target = target
            else:
                rule.verdict = "unknown"
                rule.unknown_stmt = f"target {target}"
            # target options (--reject-with ...) follow; they do not change the verdict
            i = len(toks)
            break
        if t in ("-d", "--destination"):
            rule.conds.append(dest_cond(_ipt_nets(arg), neg, version, allowed, f"-d {arg}"))
        elif t in ("-o", "--out-interface"):
            rule.conds.append(oif_cond({arg.replace("+", "*")}, neg))
        elif t in ("--ctstate", "--state"):
            rule.conds.append(ct_cond({s.lower() for s in arg.split(",")}, neg))
        elif t in ("-m", "--match"):
            if arg in ("limit", "quota", "hashlimit", "connlimit"):
                rule.limited = True
            elif arg not in _IPT_MODULES_OK:
                rule.conds.append(unknown_cond(f"iptables match -m {arg}"))
        elif t in (
            "--limit",
            "--limit-burst",
            "--quota",
            "--hashlimit",
            "--hashlimit-upto",
            "--hashlimit-name",
            "--hashlimit-mode",
            "--hashlimit-burst",
            "--connlimit-above",
            "--connlimit-upto",
            "--connlimit-mask",
            "--comment",
        ):
            pass
        elif t in _IPT_SOME:
            rule.conds.append(some_cond)
            if t == "--syn":
                step = 1
        elif t.startswith("-"):
            rule.conds.append(unknown_cond(f"iptables option {t}"))
        else:
            step = 1
        neg = False
        i += step
    return rule


def add_iptables(rs: Ruleset, text: str, source: str, version: int, allowed: list[Net]) -> None:
    rs.sources.append(source)
    table = None
    declared: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:].strip()
            declared = set()
        elif table is None or line.startswith("#") or not line:
            continue
        elif line.startswith(":"):
            parts = line[1:].split()
            if not parts:
                continue
            name = f"{source} {table} {parts[0]}"
            declared.add(parts[0])
            hook = _IPT_HOOKS.get(parts[0]) if parts[1:2] != ["-"] else None
            rs.chains[name] = Chain(
                name,
                [],
                hook=hook,
                policy=(parts[1].lower() if len(parts) > 1 and parts[1] != "-" else "accept"),
                versions=(version,),
                kind="nat" if table == "nat" else "filter",
            )
        elif line.startswith("-A "):
            parts = line.split()
            name = f"{source} {table} {parts[1]}"
            if name not in rs.chains:
                rs.chains[name] = Chain(name, [], versions=(version,))
            rs.chains[name].rules.append(_ipt_rule(line, name, version, allowed, declared))


def read_ruleset(system: Any, allowed: list[Net]) -> Ruleset:
    """Read nft and both iptables backends once, each chain from exactly one source."""
    rs = Ruleset()
    texts: list[tuple[str, int, str]] = []
    skip_tables: set[tuple[str, str]] = set()
    for version, tool in ((4, "iptables"), (6, "ip6tables")):
        by_backend: dict[str, tuple[str, str]] = {}
        for cmd in (f"{tool}-save", f"{tool}-nft-save", f"{tool}-legacy-save"):
            r = system.run([cmd])
            if r.returncode == 127:
                continue
            if r.ok and not r.stdout.strip():
                continue  # this backend holds no tables
            if not r.ok:
                if "incompatible" not in r.stderr:  # nft-native tables iptables cannot show: nft reads them
                    rs.errors.append(f"{cmd}: {(r.stderr.strip() or f'exit {r.returncode}')[:200]}")
                continue
            header = next((ln for ln in r.stdout.splitlines() if ln.startswith("# Generated by")), "")
            backend = "nft" if "nf_tables" in header or "-nft-" in cmd else "legacy"
            by_backend.setdefault(backend, (cmd, r.stdout))
        for backend, (cmd, text) in sorted(by_backend.items()):
            if not text.strip():
                continue
            texts.append((cmd, version, text))
            if backend == "nft":
                fam = "ip" if version == 4 else "ip6"
                skip_tables |= {(fam, ln[1:].strip()) for ln in text.splitlines() if ln.startswith("*")}
    r = system.run(["nft", "-j", "list", "ruleset"])
    if r.returncode not in (0, 127):
        rs.errors.append(f"nft: {(r.stderr.strip() or f'exit {r.returncode}')[:200]}")
    elif r.ok:
        try:
            doc = json.loads(r.stdout) if r.stdout.strip() else {"nftables": []}
        except ValueError:
            doc = None

        def table_text(family: str, name: str) -> str | None:
            t = system.run(["nft", "list", "table", family, name])
            return t.stdout if t.ok else None

        add_nft(rs, doc, allowed, skip_tables, table_text)
    for cmd, version, text in texts:
        add_iptables(rs, text, cmd, version, allowed)
    return rs
