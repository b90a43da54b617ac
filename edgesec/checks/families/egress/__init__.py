"""The ``egress`` check family: prove the site has no way out.

Each check reads one kind of evidence through the probes: the kernel's routes, rules and FIB answers over
netlink (:mod:`edgesec.checks.netlink`; no ``ip`` binary needed); the firewall as a model
(:mod:`edgesec.checks.families.egress._firewall`: nft and both iptables backends, read once); DNS resolvers; proxy variables
(environment, systemd units, apt, running processes); established TCP connections and connected UDP flows
to peers outside the allowed networks; wireless, VPN and tunnel interfaces; telemetry switches of running
model servers; and, only when the site config names targets, an active probe.

"Allowed networks" are ``[checks] allowed_networks`` (CIDRs); loopback, link-local and multicast are
never egress. A check PASSes only on evidence: what it cannot read is ERROR "not assessed" (the run is
incomplete), and what the firewall model does not understand is WARN "cannot prove sealed".

Layout: one module per check (``routes``, ``firewall``, ``dns``, ``proxy``, ``connections``, ``interfaces``,
``telemetry``, ``probe``); what they share is in ``_base`` (allowed networks, "not assessed") and ``_routing``
(the kernel's routes out, the firewall model read with the same internal destinations); ``_firewall`` is the
firewall model (``model``; readers ``nft``, ``iptables``). The netlink reader the probes call is framework: :mod:`edgesec.checks.netlink`.
"""

from __future__ import annotations

from edgesec.checks.families.egress.connections import Connections
from edgesec.checks.families.egress.dns import Dns
from edgesec.checks.families.egress.firewall import Firewall
from edgesec.checks.families.egress.interfaces import Interfaces
from edgesec.checks.families.egress.probe import ActiveProbe
from edgesec.checks.families.egress.proxy import ProxyEnv
from edgesec.checks.families.egress.routes import Routes
from edgesec.checks.families.egress.telemetry import Telemetry
from edgesec.checks.interface import Check

CHECKS: list[type[Check]] = [Routes, Firewall, Dns, ProxyEnv, Connections, Interfaces, Telemetry, ActiveProbe]
