"""The firewall model: packets, rules, chains, the walk along a path and its verdict, and how a match is
judged (ALWAYS, NEVER, SOME, UNKNOWN). Semantics: :mod:`edgesec.checks.families.egress._firewall`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

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
