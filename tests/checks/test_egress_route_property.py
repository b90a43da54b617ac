"""Property: over random route tables and policy rules (IPv4 or IPv6) built in a fresh network namespace
(root), the routes ``egress.routes`` finds agree with the kernel's own ``ip route get`` answers.

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
from hypothesis import HealthCheck, example, given, settings
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
V6 = {
    "site": "2001:db8:5::2",
    "gw": "2001:db8:5::1",
    "prefixes": [
        "::/0",
        "::/1",
        "8000::/1",
        "2001:db8:7::/48",
        "2001:db8:7::10/128",
        "3fff::/20",
        "fd00::/8",
        "2001:db8:5:0:8000::/65",
    ],
    "selectors": [
        "from 2001:db8:5::2",
        "to 2001:db8:7::/48",
        "fwmark 7",
        "not from 2001:db8:5::2",
        "from all",
    ],
    "probes": ["2001:db8:7::10", "2001:db8:7::77", "3fff::1", "fd00::1", "2400::1", "2a00::1"],
}
V4 = {"site": SITE, "gw": GW, "prefixes": PREFIXES, "selectors": SELECTORS, "probes": PROBES}

CHECK = """
import datetime as dt, json
from edgesec.checks.families.egress._routing import kernel_routes_out
from edgesec.checks.interface import CheckContext
from edgesec.checks.probes import FixedClock, LiveSystem
from edgesec.config import load_config
ctx = CheckContext(system=LiveSystem(), clock=FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), config=load_config())
print(json.dumps(kernel_routes_out(ctx, int(__import__("sys").argv[1]), []).out))
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


def kernel_out(ns: str, dst: str, sel: list[str], version: int, site: str) -> bool:
    import ipaddress

    cp = run("ip", "-n", ns, f"-{version}", "-j", "route", "get", dst, *sel)
    if cp.returncode != 0:
        return False
    ans = json.loads(cp.stdout)[0]
    segment = ipaddress.ip_network(f"{site}/{24 if version == 4 else 64}", strict=False)
    internal = ipaddress.ip_address(dst) in segment
    return ans.get("type", "unicast") == "unicast" and ans.get("dev") not in (None, "lo") and not internal


def routes_st(prefixes: list[str]) -> Any:
    return st.lists(
        st.tuples(st.sampled_from(prefixes), st.sampled_from(KINDS), st.sampled_from(TABLES)), max_size=6
    )


def rules_st(selectors: list[str]) -> Any:
    return st.lists(
        st.tuples(st.sampled_from(selectors), st.sampled_from(ACTIONS), st.integers(1, 30000)), max_size=3
    )


@st.composite
def tables(draw: Any) -> tuple[int, list[Any], list[Any]]:
    version = draw(st.sampled_from([4, 6]))
    p = V4 if version == 4 else V6
    return version, draw(routes_st(p["prefixes"])), draw(rules_st(p["selectors"]))


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tables())
@example(case=(6, [("::/0", "via", "main")], []))
@example(case=(4, [("0.0.0.0/0", "via", "100")], [("fwmark 7", "lookup 100", 100)]))
def test_check_agrees_with_ip_route_get(case: tuple[int, list[Any], list[Any]]) -> None:
    version, routes, rules = case
    p: dict[str, Any] = V4 if version == 4 else V6
    ns = f"es-prop-{secrets.token_hex(3)}"
    assert run("ip", "netns", "add", ns).returncode == 0
    try:
        plen = 24 if version == 4 else 64
        batch = [
            "link add vp0 type veth peer name vp1",
            "link set vp0 up",
            "link set vp1 up",
            "link set lo up",
            f"addr add {p['site']}/{plen} dev vp0" + (" nodad" if version == 6 else ""),
        ]
        for prefix, kind, table in routes:
            spec = {"via": f"{prefix} via {p['gw']}", "dev": f"{prefix} dev vp0"}.get(
                kind, f"{kind} {prefix}"
            )
            batch.append(f"-{version} route replace {spec} table {table}")
        for sel, action, prio in rules:
            batch.append(f"-{version} rule add {sel} {action} priority {prio}")
        run("ip", "-n", ns, "-force", "-batch", "-", input_="\n".join(batch) + "\n")
        cp = run(
            "ip", "netns", "exec", ns, "env", f"PYTHONPATH={REPO}", sys.executable, "-c", CHECK, str(version)
        )
        assert cp.returncode == 0, cp.stderr
        found = json.loads(cp.stdout)
        dests = {h for q in p["prefixes"] for h in _hosts(q)} | set(p["probes"])
        selectors = [[], ["from", p["site"]], ["mark", "7"]]
        truth = [(d, s) for d in sorted(dests) for s in selectors if kernel_out(ns, d, s, version, p["site"])]
        assert bool(found) == bool(truth), (version, routes, rules, truth[:3], found[:3])
        for r in found:
            sel = r["lookup"]
            args = (
                []
                if sel == "no source"
                else (["from", sel["src"]] if "src" in sel else ["mark", str(sel["mark"])])
            )
            assert kernel_out(ns, r["to"], args, version, p["site"]), (r, routes, rules)
    finally:
        run("ip", "netns", "del", ns)
