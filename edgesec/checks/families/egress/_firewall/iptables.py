"""Reading ``iptables-save`` (either backend) into the firewall model."""

from __future__ import annotations

import ipaddress
import shlex

from edgesec.checks.families.egress._firewall.model import (
    Chain,
    Net,
    Rule,
    Ruleset,
    ct_cond,
    dest_cond,
    oif_cond,
    some_cond,
    unknown_cond,
)

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
