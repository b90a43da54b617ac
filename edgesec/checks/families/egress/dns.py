"""``egress.dns``: the resolvers the host uses are on the site."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from edgesec.checks.families.egress._base import (
    EgressCheck,
    Unavailable,
    allowed_networks,
    is_internal,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity


class Dns(EgressCheck):
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
                raise Unavailable(f"{f} exists but could not be read")
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
