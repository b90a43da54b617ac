"""Egress checks against real network namespaces the test creates (root).

Topology, all inside this test: a "site" namespace (198.51.100.2/24 on a veth) and an "outside" namespace
(198.51.100.1/24, plus 203.0.113.10 on its loopback, with a TCP listener there). Both ranges are
documentation ranges (RFC 5737) and exist only inside these namespaces. ``edgesec audit`` runs inside the
site namespace; its only traffic (the opt-in probe) goes to the outside namespace. Nothing is sent anywhere
else.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.real("ip", "nft")]

REPO = Path(__file__).resolve().parents[2]
OUTSIDE_ADDR = "203.0.113.10"
PORT = 8443
LISTENER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('{OUTSIDE_ADDR}', {PORT})); s.listen(16); print('ready', flush=True)\n"
    "conns=[]\n"
    "while True:\n"
    "    c,_=s.accept(); conns.append(c)\n"
)


def sh(*argv: str, input_: str | None = None) -> str:
    cp = subprocess.run(argv, input=input_, capture_output=True, text=True, timeout=30, check=False)
    if cp.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {cp.stderr}")
    return cp.stdout


@dataclass
class Lab:
    site: str
    outside: str
    home: Path
    config: Path

    def audit(self, *only: str) -> dict[str, Any]:
        args = [a for o in only for a in ("--only", o)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        cp = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.site,
                sys.executable,
                "-m",
                "edgesec",
                "--json",
                "--home",
                str(self.home),
                "--config",
                str(self.config),
                "audit",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert cp.returncode in (0, 1, 3), cp.stderr
        res = json.loads(cp.stdout)["result"]["result"]
        return {c["id"]: c for c in res["checks"]}

    def in_site(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.site, *argv], stdout=subprocess.PIPE, text=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tag = secrets.token_hex(3)
    site, outside = f"es-site-{tag}", f"es-out-{tag}"
    vs, vo = f"vs{tag}", f"vo{tag}"
    sh("ip", "netns", "add", site)
    sh("ip", "netns", "add", outside)
    listener = None
    try:
        sh("ip", "link", "add", vs, "type", "veth", "peer", "name", vo)
        sh("ip", "link", "set", vs, "netns", site)
        sh("ip", "link", "set", vo, "netns", outside)
        for ns, dev, addr in ((site, vs, "198.51.100.2/24"), (outside, vo, "198.51.100.1/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", outside, "addr", "add", f"{OUTSIDE_ADDR}/32", "dev", "lo")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", outside, sys.executable, "-c", LISTENER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        cfg = tmp_path / "edgesec.toml"
        cfg.write_text(
            "[checks]\nprobe_timeout_s = 1.0\n"
            f'probe_targets = [{{ host = "{OUTSIDE_ADDR}", port = {PORT} }}]\n'
        )
        home = tmp_path / "home"
        yield Lab(site, outside, home, cfg)
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
            if listener.stdout is not None:
                listener.stdout.close()
        for ns in (site, outside):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _statuses(check: dict[str, Any]) -> dict[str | None, str]:
    return {f["resource"]: f["status"] for f in check["findings"]}


def test_open_egress_fails_with_evidence(lab: Lab) -> None:
    sh("ip", "-n", lab.site, "route", "add", "default", "via", "198.51.100.1")
    checks = lab.audit("egress.routes", "egress.probe", "egress.firewall")
    routes = checks["egress.routes"]
    assert _statuses(routes)["IPv4"] == "FAIL"
    v4 = next(f for f in routes["findings"] if f["resource"] == "IPv4")
    assert v4["evidence"]["outbound_routes"][0]["gateway"] == "198.51.100.1"
    assert "default via 198.51.100.1" in v4["message"]
    probe = checks["egress.probe"]["findings"][0]
    assert probe["status"] == "FAIL" and probe["evidence"]["outcome"] == "reachable"
    assert _statuses(checks["egress.firewall"])["IPv4 output"] == "FAIL"


def test_nft_output_drop_passes(lab: Lab) -> None:
    sh("ip", "-n", lab.site, "route", "add", "default", "via", "198.51.100.1")
    ruleset = (
        "table inet edge {\n chain out {\n  type filter hook output priority 0; policy drop;\n"
        '  oifname "lo" accept\n }\n}\n'
    )
    sh("ip", "netns", "exec", lab.site, "nft", "-f", "-", input_=ruleset)
    checks = lab.audit("egress.routes", "egress.probe", "egress.firewall")
    routes = _statuses(checks["egress.routes"])
    assert (routes["IPv4"], routes["IPv6"]) == ("PASS", "PASS")
    assert "firewall drops" in checks["egress.routes"]["findings"][0]["message"]
    probe = checks["egress.probe"]["findings"][0]
    assert probe["status"] == "PASS" and probe["evidence"]["outcome"] == "blocked"
    assert _statuses(checks["egress.firewall"])["IPv4 output"] == "PASS"


def test_a_hole_in_the_drop_policy_is_found_and_really_open(lab: Lab) -> None:
    sh("ip", "-n", lab.site, "route", "add", "default", "via", "198.51.100.1")
    ruleset = (
        "table inet edge {\n chain out {\n  type filter hook output priority 0; policy drop;\n"
        '  oifname "lo" accept\n  ct state established,related accept\n'
        f"  tcp dport {PORT} accept\n }}\n}}\n"
    )
    sh("ip", "netns", "exec", lab.site, "nft", "-f", "-", input_=ruleset)
    checks = lab.audit("egress.routes", "egress.probe", "egress.firewall")
    v4 = next(f for f in checks["egress.routes"]["findings"] if f["resource"] == "IPv4")
    assert v4["status"] == "FAIL" and "lets traffic out through 1 rule" in v4["message"]
    # The active probe confirms the analysis with a real connection into the outside namespace.
    probe = checks["egress.probe"]["findings"][0]
    assert probe["status"] == "FAIL" and probe["evidence"]["outcome"] == "reachable"
    assert _statuses(checks["egress.firewall"])["IPv4 output"] == "FAIL"


def test_no_default_route_passes(lab: Lab) -> None:
    checks = lab.audit("egress.routes", "egress.probe")
    routes = _statuses(checks["egress.routes"])
    assert (routes["IPv4"], routes["IPv6"]) == ("PASS", "PASS")
    # The kernel's default for a new interface accepts router advertisements: flagged as a latent route out.
    ra = next(f for f in checks["egress.routes"]["findings"] if f["resource"] == "IPv6 router advertisements")
    assert ra["status"] == "WARN" and ra["evidence"]["interfaces"][0]["ifname"].startswith("vs")
    assert checks["egress.probe"]["findings"][0]["status"] == "PASS"


def test_proxy_in_a_running_process_and_a_live_connection_fail(lab: Lab) -> None:
    sh("ip", "-n", lab.site, "route", "add", "default", "via", "198.51.100.1")
    proxied = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.site,
            "env",
            "-i",
            "HTTPS_PROXY=http://user:pw@203.0.113.10:3128",
            "sleep",
            "60",
        ]
    )
    holder = lab.in_site(
        sys.executable,
        "-c",
        f"import socket,time; s=socket.create_connection(('{OUTSIDE_ADDR}', {PORT})); print('up', flush=True); time.sleep(60)",
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        time.sleep(0.2)  # let `ip netns exec` exec into sleep so /proc shows its environment
        checks = lab.audit("egress.proxy", "egress.connections")
        proxy = {f["resource"]: f for f in checks["egress.proxy"]["findings"]}
        mine = [f for r, f in proxy.items() if r and r.startswith(f"pid {proxied.pid} ")]
        assert mine and mine[0]["status"] == "FAIL", proxy.keys()
        assert mine[0]["evidence"]["variables"] == {"HTTPS_PROXY": "http://***@203.0.113.10:3128"}
        conns = checks["egress.connections"]["findings"]
        assert [f["status"] for f in conns] == ["FAIL"]
        assert conns[0]["resource"] == f"{OUTSIDE_ADDR}:{PORT}"
    finally:
        for p in (proxied, holder):
            p.kill()
            p.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_connected_udp_flow_is_seen(lab: Lab) -> None:
    # connect() on a UDP socket sends nothing; it fixes the peer, which /proc/net/udp then shows.
    sh("ip", "-n", lab.site, "route", "add", "default", "via", "198.51.100.1")
    holder = lab.in_site(
        sys.executable,
        "-c",
        "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.connect(('{OUTSIDE_ADDR}', 5353)); print('up', flush=True); time.sleep(60)",
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        conns = lab.audit("egress.connections")["egress.connections"]["findings"]
        udp = [f for f in conns if f["evidence"].get("protocol") == "udp"]
        assert [(f["status"], f["resource"]) for f in udp] == [("FAIL", f"{OUTSIDE_ADDR}:5353")]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
