"""The ``authz`` check family (runner side): is the ForwardAuth service set up and answering?

Deeper authz checks (policy lint, identity headers end to end) come with the end-to-end work; this one
tells an operator whether the service the site relies on is there at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from urllib.parse import urlsplit

from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity


class ForwardAuthUp(Check):
    """The configured ForwardAuth endpoint accepts connections (loopback only)."""

    meta = CheckMeta(
        id="authz.forwardauth",
        title="The ForwardAuth service is reachable",
        severity=Severity.HIGH,
        rationale="Every request to the site's AI services is authorised by ForwardAuth; if it is down the "
        "proxy fails closed (an outage) or, misconfigured, open.",
        remediation="Start the service ('edgesec authz serve', or its systemd unit) and check [authz] url.",
        controls=("pci-dss-4.0:8.2.1", "hipaa:164.312(a)(1)", "mlps-2.0-l3:8.1.3.2", "iec-62443-3-3:SR 2.1"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        url = ctx.config.settings.authz.url
        if not url:
            yield self.skipped("ForwardAuth is not set up here ([authz] url is not configured)")
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            # The audit only talks to loopback services; a remote authz is checked on its own host.
            yield self.skipped(f"[authz] url {url} is not on loopback; check it on the host that runs it")
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ans = ctx.system.connect(host, port, "tcp", 2.0)
        ev = {"url": url, **ans}
        if ans.get("outcome") == "reachable":
            yield self.passed(f"ForwardAuth accepts connections at {host}:{port}", resource=url, evidence=ev)
        else:
            yield self.failed(
                f"ForwardAuth at {host}:{port} does not answer: {ans.get('detail')}",
                resource=url,
                evidence=ev,
            )


CHECKS: list[type[Check]] = [ForwardAuthUp]
