"""Reading ``nft -j list ruleset`` into the firewall model."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from edgesec.checks.families.egress._firewall.model import (
    Chain,
    Cond,
    M,
    Net,
    Rule,
    Ruleset,
    ct_cond,
    dest_cond,
    oif_cond,
    some_cond,
    unknown_cond,
    version_cond,
)

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
