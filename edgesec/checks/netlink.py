"""The kernel's routing state over netlink (``pyroute2``): no ``ip`` binary needed.

:func:`query` answers one request as plain JSON data (so a recording can replay it):

* ``("routes", version)`` -- every route in every table: ``table``, ``dst`` (``default`` or CIDR),
  ``type``, ``protocol``, ``dev``, ``gateway``, ``nhid`` and ``nexthops`` (multipath legs);
* ``("rules", version)`` -- the policy routing rules with their selectors;
* ``("addrs",)`` -- the host's interface addresses;
* ``("links",)`` -- the interfaces: name, kind (``wireguard``, ``tun``...), link type, state;
* ``("lookup", version, [[dst, {"src": ..., "mark": ..., "uid": ...}], ...])`` -- the kernel's own FIB
  lookup (``RTM_GETROUTE``, what ``ip route get`` asks) for each destination with those selectors.

Every answer is ``{"ok": true, "data": ...}`` or ``{"ok": false, "error": "..."}``: a netlink failure is
data the check reports, never an exception.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import Any

RTN_TYPES = {
    0: "unspec",
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
    11: "xresolve",
}
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}
PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 16: "dhcp", 186: "bgp"}
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def table_name(num: int) -> str:
    return TABLE_NAMES.get(num, str(num))


def _attrs(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in msg.get("attrs", []) or []:
        try:
            k, v = pair[0], pair[1]
        except (TypeError, IndexError):
            continue
        out.setdefault(str(k), v)
    return out


def _links(ipr: Any) -> dict[int, str]:
    names: dict[int, str] = {}
    for link in ipr.get_links():
        names[int(link["index"])] = str(_attrs(link).get("IFLA_IFNAME", link["index"]))
    return names


def _route(msg: Any, names: dict[int, str], version: int) -> dict[str, Any]:
    a = _attrs(msg)
    table = int(a.get("RTA_TABLE", msg.get("table", 0)))
    dst_len = int(msg.get("dst_len", 0))
    dst = "default" if dst_len == 0 else f"{a.get('RTA_DST')}/{dst_len}"
    legs = []
    for leg in a.get("RTA_MULTIPATH") or []:
        la = _attrs(leg)
        gw = la.get("RTA_GATEWAY")
        via = la.get("RTA_VIA")
        if gw is None and isinstance(via, dict):
            gw = via.get("addr")
        legs.append({"gateway": gw, "dev": names.get(int(leg.get("oif", 0)), None)})
    gw = a.get("RTA_GATEWAY")
    via = a.get("RTA_VIA")
    if gw is None and isinstance(via, dict):
        gw = via.get("addr")  # an IPv6 next hop for an IPv4 route (RFC 5549)
    oif = a.get("RTA_OIF")
    return {
        "table": table_name(table),
        "dst": dst,
        "type": RTN_TYPES.get(int(msg.get("type", 0)), str(msg.get("type"))),
        "protocol": PROTOCOLS.get(int(msg.get("proto", 0)), str(msg.get("proto"))),
        "scope": int(msg.get("scope", 0)),
        "dev": None if oif is None else names.get(int(oif), str(oif)),
        "gateway": gw,
        "nhid": a.get("RTA_NH_ID"),
        "nexthops": legs,
        "version": version,
    }


def _uid_range(uid: Any) -> list[int] | None:
    if isinstance(uid, dict):
        return [int(uid.get("start", 0)), int(uid.get("end", 0))]
    if isinstance(uid, str) and ":" in uid:
        lo, hi = uid.split(":", 1)
        return [int(lo), int(hi)]
    return None


def _rule(msg: Any, version: int) -> dict[str, Any]:
    a = _attrs(msg)
    table = int(a.get("FRA_TABLE", msg.get("table", 0)))
    uid = a.get("FRA_UID_RANGE")
    action = int(msg.get("action", 1))
    return {
        "priority": a.get("FRA_PRIORITY", 0),
        "table": table_name(table),
        "action": {1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}.get(
            action, str(action)
        ),
        "src": None if not msg.get("src_len") else f"{a.get('FRA_SRC')}/{msg['src_len']}",
        "dst": None if not msg.get("dst_len") else f"{a.get('FRA_DST')}/{msg['dst_len']}",
        "fwmark": a.get("FRA_FWMARK"),
        "iif": a.get("FRA_IIFNAME"),
        "oif": a.get("FRA_OIFNAME"),
        "uidrange": _uid_range(uid),
        "ipproto": a.get("FRA_IP_PROTO"),
        "sport": a.get("FRA_SPORT_RANGE"),
        "dport": a.get("FRA_DPORT_RANGE"),
        "tos": msg.get("tos", 0),
        "invert": bool(int(msg.get("flags", 0)) & 0x2),
        "l3mdev": bool(a.get("FRA_L3MDEV")),
        "version": version,
    }


def _lookup(ipr: Any, names: dict[int, str], dst: str, sel: dict[str, Any]) -> dict[str, Any]:
    from pyroute2.netlink.exceptions import NetlinkError

    kw: dict[str, Any] = {"dst": dst}
    if sel.get("src"):
        kw["src"] = sel["src"]
    if sel.get("mark") is not None:
        kw["mark"] = int(sel["mark"])
    if sel.get("uid") is not None:
        kw["uid"] = int(sel["uid"])
    try:
        ans = ipr.route("get", **kw)
    except NetlinkError as exc:
        return {"dst": dst, **sel, "error": errno.errorcode.get(exc.code, str(exc.code))}
    if not ans:
        return {"dst": dst, **sel, "error": "no answer"}
    r = _route(ans[0], names, 6 if ":" in dst else 4)
    a = _attrs(ans[0])
    return {
        "dst": dst,
        **sel,
        "type": r["type"],
        "table": r["table"],
        "dev": r["dev"],
        "gateway": r["gateway"],
        "prefsrc": a.get("RTA_PREFSRC"),
    }


def query(op: str, *args: Any) -> dict[str, Any]:
    """Answer one netlink request (see the module docstring)."""
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:  # pragma: no cover - pyroute2 is a dependency
        return {"ok": False, "error": f"pyroute2 is not importable: {exc}"}
    try:
        with IPRoute() as ipr:
            names = _links(ipr)
            if op == "routes":
                version = int(args[0])
                msgs = ipr.route("dump", family=_FAMILY[version])
                return {"ok": True, "data": [_route(m, names, version) for m in msgs]}
            if op == "rules":
                version = int(args[0])
                return {
                    "ok": True,
                    "data": [_rule(m, version) for m in ipr.get_rules(family=_FAMILY[version])],
                }
            if op == "addrs":
                data = []
                for m in ipr.get_addr():
                    a = _attrs(m)
                    data.append(
                        {
                            "ifname": names.get(int(m.get("index", 0)), None),
                            "family": 4 if m.get("family") == socket.AF_INET else 6,
                            "address": a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"),
                            # A point-to-point address names its peer here (IFA_ADDRESS != IFA_LOCAL).
                            "peer": (
                                a.get("IFA_ADDRESS")
                                if a.get("IFA_LOCAL") and a.get("IFA_ADDRESS") != a.get("IFA_LOCAL")
                                else None
                            ),
                            "prefixlen": int(m.get("prefixlen", 0)),
                            "scope": int(m.get("scope", 0)),
                        }
                    )
                return {"ok": True, "data": data}
            if op == "links":
                links = []
                for m in ipr.get_links():
                    a = _attrs(m)
                    info = _attrs(a.get("IFLA_LINKINFO") or {})
                    flags = int(m.get("flags", 0))
                    links.append(
                        {
                            "ifname": a.get("IFLA_IFNAME"),
                            "kind": info.get("IFLA_INFO_KIND"),
                            "link_type": "ppp" if int(m.get("ifi_type", 0)) == 512 else None,
                            "operstate": a.get("IFLA_OPERSTATE"),
                            "up": bool(flags & 1),
                        }
                    )
                return {"ok": True, "data": links}
            if op == "lookup":
                pairs: Sequence[Any] = args[1]
                return {"ok": True, "data": [_lookup(ipr, names, str(d), dict(s or {})) for d, s in pairs]}
            return {"ok": False, "error": f"unknown netlink request {op!r}"}
    except OSError as exc:
        return {"ok": False, "error": f"netlink: {exc.strerror or exc}"}
    except Exception as exc:  # noqa: BLE001 - a library failure is evidence that could not be read
        return {"ok": False, "error": f"netlink: {type(exc).__name__}: {exc}"[:300]}
