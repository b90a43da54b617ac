"""``egress.connections``: established outbound TCP connections and connected UDP flows to peers outside
the allowed networks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any

from edgesec.checks.families.egress._base import (
    EGRESS_CONTROLS,
    Addr,
    EgressCheck,
    Unavailable,
    allowed_networks,
    is_internal,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity


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


class Connections(EgressCheck):
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
                raise Unavailable(f"/proc/net/{proto} is not readable here")
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
