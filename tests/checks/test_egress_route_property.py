"""Property: over random route tables and policy rules built in a fresh network namespace (root), the
routes ``egress.routes`` finds agree with the kernel's own ``ip route get`` answers.

* every destination ``ip route get`` sends out (unicast, not ``lo``, outside the site's segment) -- tried
  without a source, from the site address and with fwmark 7 -- means the check finds a route out (no false
  PASS);
* every route out the check reports is confirmed by ``ip route get`` for the destination and selector it
  names (no invented route).

Nothing is sent: lookups only.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.root, pytest.mark.real("ip")]

REPO = Path(__file__).resolve().parents[2]
SITE = "198.51.100.2"
GW = "198.51.100.1"
PREFIXES = [
    "0.0.0.0/0",
    "0.0.0.0/1",
    "128.0.0.0/1",
    "203.0.113.0/24",
    "203.0.113.10/32",
    "192.0.2.0/24",
    "10.0.0.0/8",
    "198.51.100.128/25",
]
KINDS = ["via", "dev", "blackhole", "unreachable", "prohibit", "throw"]
TABLES = ["main", "100", "local"]
SELECTORS = ["from 198.51.100.2", "to 203.0.113.0/24", "fwmark 7", "not from 198.51.100.2", "from all"]
ACTIONS = ["lookup 100", "prohibit", "blackhole", "lookup main"]
PROBES = ["203.0.113.10", "203.0.113.77", "192.0.2.1", "10.1.2.3", "1.2.3.4", "200.1.1.1", "100.64.0.1"]

CHECK = """
import datetime as dt, json
from edgesec.checks import egress
from edgesec.checks.interface import CheckContext
from edgesec.checks.probes import FixedClock, LiveSystem
from edgesec.config import load_config
ctx = CheckContext(system=LiveSystem(), clock=FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), config=load_config())
print(json.dumps(egress.kernel_routes_out(ctx, 4, []).out))
"""


def run(*argv: str, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input_, capture_output=True, text=True, timeout=60, check=False)


def _hosts(cidr: str) -> list[str]:
    import ipaddress

    net = ipaddress.ip_network(cidr)
    if net.num_addresses <= 2:
        return [str(net.network_address)]
    return [
        str(net.network_address + 1),
        str(net.network_address + net.num_addresses // 2),
        str(net.broadcast_address - 1),
    ]


def kernel_out(ns: str, dst: str, sel: list[str]) -> bool:
    cp = run("ip", "-n", ns, "-j", "route", "get", dst, *sel)
    if cp.returncode != 0:
        return False
    ans = json.loads(cp.stdout)[0]
    internal = dst.startswith("198.51.100.")
    return ans.get("type", "unicast") == "unicast" and ans.get("dev") not in (None, "lo") and not internal


routes_st = st.lists(
    st.tuples(st.sampled_from(PREFIXES), st.sampled_from(KINDS), st.sampled_from(TABLES)), max_size=6
)
rules_st = st.lists(
    st.tuples(st.sampled_from(SELECTORS), st.sampled_from(ACTIONS), st.integers(1, 30000)), max_size=3
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routes=routes_st, rules=rules_st)
def test_check_agrees_with_ip_route_get(routes: list[Any], rules: list[Any]) -> None:
    ns = f"es-prop-{secrets.token_hex(3)}"
    assert run("ip", "netns", "add", ns).returncode == 0
    try:
        batch = [
            "link add vp0 type veth peer name vp1",
            "link set vp0 up",
            "link set vp1 up",
            "link set lo up",
            f"addr add {SITE}/24 dev vp0",
        ]
        for prefix, kind, table in routes:
            spec = {"via": f"{prefix} via {GW}", "dev": f"{prefix} dev vp0"}.get(kind, f"{kind} {prefix}")
            batch.append(f"route replace {spec} table {table}")
        for sel, action, prio in rules:
            batch.append(f"rule add {sel} {action} priority {prio}")
        run("ip", "-n", ns, "-force", "-batch", "-", input_="\n".join(batch) + "\n")
        cp = run("ip", "netns", "exec", ns, "env", f"PYTHONPATH={REPO}", sys.executable, "-c", CHECK)
        assert cp.returncode == 0, cp.stderr
        found = json.loads(cp.stdout)
        dests = {h for p in PREFIXES for h in _hosts(p)} | set(PROBES)
        selectors = [[], ["from", SITE], ["mark", "7"]]
        truth = [(d, s) for d in sorted(dests) for s in selectors if kernel_out(ns, d, s)]
        assert bool(found) == bool(truth), (routes, rules, truth[:3], found[:3])
        for r in found:
            sel = r["lookup"]
            args = (
                []
                if sel == "no source"
                else (["from", sel["src"]] if "src" in sel else ["mark", str(sel["mark"])])
            )
            assert kernel_out(ns, r["to"], args), (r, routes, rules)
    finally:
        run("ip", "netns", "del", ns)
