"""Egress checks on built systems: each kind of evidence parsed from real tool output shapes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edgesec.checks.families import egress
from edgesec.checks.families.egress._base import ENVIRON_LIMIT
from edgesec.checks.interface import CheckContext, Finding
from edgesec.checks.probes import BuiltSystem, CommandResult, FileStat, FixedClock
from edgesec.checks.settings import ChecksSettings
from edgesec.config import load_config

ROUTES_OPEN = [
    {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0", "flags": []},
    {"dst": "198.51.100.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "flags": []},
    {"type": "local", "dst": "127.0.0.1", "dev": "lo", "table": "local", "flags": []},
]
ROUTES_SEALED = [
    {"dst": "198.51.100.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "flags": []}
]
NFT_OUTPUT_DROP = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "edge", "handle": 1}},
        {
            "chain": {
                "family": "inet",
                "table": "edge",
                "name": "out",
                "handle": 1,
                "type": "filter",
                "hook": "output",
                "prio": 0,
                "policy": "drop",
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "edge",
                "chain": "out",
                "handle": 2,
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}},
                    {"accept": None},
                ],
            }
        },
    ]
}


def ctx_for(system: BuiltSystem, **checks: Any) -> CheckContext:
    cfg = load_config()
    if checks:
        cfg = type(cfg)(
            settings=cfg.settings.model_copy(
                update={
                    "checks": ChecksSettings.model_validate({**cfg.settings.checks.model_dump(), **checks})
                }
            ),
            path=None,
            home=cfg.home,
            home_source="test",
        )
    return CheckContext(system=system, clock=FixedClock(dt.datetime(2026, 11, 29, tzinfo=dt.UTC)), config=cfg)


SITE_ADDRS = [{"ifname": "eth0", "family": 4, "address": "198.51.100.2", "prefixlen": 24, "scope": 0}]


def fib(
    v4: list[Any],
    v6: list[Any] | None = None,
    rules: list[Any] | None = None,
    addrs: list[Any] | None = None,
) -> Any:
    """A netlink double for built systems: the routes given, the standard rules, and a longest-prefix
    lookup over tables local and main (what the kernel does with the default rules; the namespace tests
    compare the real kernel's answers)."""
    import ipaddress

    def norm(rt: dict[str, Any], version: int) -> dict[str, Any]:
        return {
            "table": str(rt.get("table", "main")),
            "dst": rt.get("dst", "default"),
            "type": rt.get("type", "unicast"),
            "protocol": rt.get("protocol", "boot"),
            "scope": 0,
            "dev": rt.get("dev"),
            "gateway": rt.get("gateway"),
            "nhid": None,
            "nexthops": rt.get("nexthops", []),
            "version": version,
        }

    tables = {4: [norm(r, 4) for r in v4], 6: [norm(r, 6) for r in (v6 or [])]}

    def lookup(version: int, dst: str) -> dict[str, Any]:
        addr = ipaddress.ip_address(dst)
        best: tuple[int, dict[str, Any]] | None = None
        for table in ("local", "main"):
            for rt in tables[version]:
                if rt["table"] != table:
                    continue
                d = rt["dst"]
                net = ipaddress.ip_network(("0.0.0.0/0" if version == 4 else "::/0") if d == "default" else d)
                if addr in net and (best is None or net.prefixlen > best[0]):
                    best = (net.prefixlen, rt)
            if best is not None:
                break
        if best is None:
            return {"dst": dst, "error": "ENETUNREACH"}
        rt = best[1]
        return {
            "dst": dst,
            "type": rt["type"],
            "table": rt["table"],
            "dev": rt["dev"],
            "gateway": rt["gateway"],
        }

    def answer(op: str, *args: Any) -> dict[str, Any]:
        if op == "routes":
            return {"ok": True, "data": tables[int(args[0])]}
        if op == "rules":
            std = [
                {"priority": 0, "table": "local", "action": "lookup"},
                {"priority": 32766, "table": "main", "action": "lookup"},
            ]
            return {"ok": True, "data": (rules or []) + std}
        if op == "addrs":
            return {"ok": True, "data": SITE_ADDRS if addrs is None else addrs}
        if op == "lookup":
            return {"ok": True, "data": [{**lookup(int(args[0]), d), **s} for d, s in args[1]]}
        return {"ok": False, "error": "unknown"}

    return answer


def routes_system(v4: list[Any], nft: dict[str, Any] | None = None, **kw: Any) -> BuiltSystem:
    cmds: dict[tuple[str, ...], Any] = {}
    if nft is not None:
        cmds[("nft", "-j", "list", "ruleset")] = json.dumps(nft)
    cmds.update(kw.pop("commands", {}))
    return BuiltSystem(commands=cmds, netlink=kw.pop("netlink", fib(v4)), **kw)


def statuses(findings: list[Finding]) -> dict[str | None, str]:
    return {f.resource: f.status.value for f in findings}


def test_routes_open_sealed_and_firewalled() -> None:
    open_ = list(egress.Routes().run(ctx_for(routes_system(ROUTES_OPEN))))
    assert statuses(open_) == {"IPv4": "FAIL", "IPv6": "PASS"}
    assert "default via 198.51.100.1" in open_[0].message
    assert open_[0].evidence["outbound_routes"][0]["gateway"] == "198.51.100.1"
    sealed = list(egress.Routes().run(ctx_for(routes_system(ROUTES_SEALED))))
    assert statuses(sealed) == {"IPv4": "PASS", "IPv6": "PASS"}
    dropped = list(egress.Routes().run(ctx_for(routes_system(ROUTES_OPEN, NFT_OUTPUT_DROP))))
    assert statuses(dropped)["IPv4"] == "PASS" and "firewall drops" in dropped[0].message
    assert dropped[0].evidence["firewall"]["accept_rules"]  # the lo accept rule is listed


def test_split_default_and_gateway_routes_to_other_networks() -> None:
    routes = [
        {"dst": "0.0.0.0/1", "dev": "tun0", "flags": []},
        {"dst": "10.20.0.0/16", "gateway": "198.51.100.1", "dev": "eth0", "flags": []},
    ]
    f = list(egress.Routes().run(ctx_for(routes_system(routes))))
    assert {r["dst"] for r in f[0].evidence["outbound_routes"]} == {"0.0.0.0/1", "10.20.0.0/16"}
    # The gateway route is to an allowed (site) network: only the split default remains.
    f = list(egress.Routes().run(ctx_for(routes_system(routes), allowed_networks=["10.0.0.0/8"])))
    assert [r["dst"] for r in f[0].evidence["outbound_routes"]] == ["0.0.0.0/1"]


def test_iptables_policy_and_forwarding() -> None:
    save = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n-A OUTPUT -o lo -j ACCEPT\nCOMMIT\n"
    sys_ = routes_system(
        ROUTES_OPEN,
        commands={("iptables-save",): save},
        files={"/proc/sys/net/ipv4/ip_forward": "1\n", "/proc/sys/net/ipv6/conf/all/forwarding": "0\n"},
    )
    f = {x.resource: x for x in egress.Firewall().run(ctx_for(sys_))}
    assert f["IPv4 output"].status.value == "PASS"
    assert f["IPv4 forward"].status.value == "FAIL"
    assert f["IPv6 output"].status.value == "WARN"  # accepted, but no v6 route out today
    assert f["IPv6 forward"].status.value == "PASS"


def test_firewall_without_tools_is_not_assessed() -> None:
    f = list(egress.Firewall().run(ctx_for(routes_system(ROUTES_OPEN))))
    assert [x.status.value for x in f] == ["ERROR"] and f[0].message.startswith("not assessed:")


def test_a_table_only_a_uid_rule_reaches_counts() -> None:
    routes = [*ROUTES_SEALED, {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0", "table": "100"}]
    # No rule leads to table 100: the kernel never uses it.
    f = statuses(list(egress.Routes().run(ctx_for(routes_system(routes)))))
    assert f["IPv4"] == "PASS"
    uid_rule = [{"priority": 100, "table": "100", "action": "lookup", "uidrange": [1000, 1000]}]
    sys_ = routes_system(routes, netlink=fib(routes, rules=uid_rule))
    (v4, _v6) = egress.Routes().run(ctx_for(sys_))
    assert v4.status.value == "FAIL" and v4.evidence["outbound_routes"][0]["lookup"].startswith("rule 100")


def test_dns_resolvers() -> None:
    sys_ = BuiltSystem(
        files={
            "/etc/resolv.conf": "search site\nnameserver 127.0.0.53\nnameserver 8.8.8.8\n",
            "/run/systemd/resolve/resolv.conf": "nameserver 10.1.2.3\n",
        }
    )
    f = statuses(list(egress.Dns().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"]))))
    assert f == {"127.0.0.53": "PASS", "8.8.8.8": "FAIL", "10.1.2.3": "PASS"}


def test_proxy_everywhere_and_credentials_redacted() -> None:
    sys_ = BuiltSystem(
        files={
            "/etc/environment": 'LANG=C\nhttps_proxy="http://user:secret@proxy.example:3128"\n',
            "/etc/systemd/system/vllm.service.d/proxy.conf": "[Service]\nEnvironment=HTTP_PROXY=http://10.9.9.9:8080\n",
            "/etc/apt/apt.conf.d/90proxy": 'Acquire::http::Proxy "http://10.9.9.9:3142";\n',
            "/proc/4242/environ": "PATH=/usr/bin\0ALL_PROXY=socks5://10.9.9.9:1080\0",
            "/proc/4242/comm": "python3\n",
            "/proc/1/environ": "HOME=/\0no_proxy=localhost\0",
            "/etc/docker/daemon.json": '{"proxies": {"http-proxy": "http://10.9.9.9:3128", "no-proxy": "localhost"}}',
        },
        environ={"PATH": "/usr/bin"},
    )
    f = list(egress.ProxyEnv().run(ctx_for(sys_)))
    by = {x.resource: x for x in f}
    assert set(by) == {
        "/etc/environment",
        "/etc/systemd/system/vllm.service.d/proxy.conf",
        "/etc/apt/apt.conf.d/90proxy",
        "/etc/docker/daemon.json",
        "pid 4242 (python3)",
    }
    assert all(x.status.value == "FAIL" for x in f)
    assert by["/etc/environment"].evidence["variables"]["https_proxy"] == "http://***@proxy.example:3128"
    assert "secret" not in json.dumps([x.to_dict() for x in f])


def test_no_proxy_passes() -> None:
    f = list(egress.ProxyEnv().run(ctx_for(BuiltSystem(files={"/proc/1/environ": "A=1\0"}))))
    assert [x.status.value for x in f] == ["PASS"]


def test_connections_outbound_only() -> None:
    # 198.51.100.2:40000 -> 203.0.113.10:443 established (outbound); 0.0.0.0:22 listening;
    # 198.51.100.2:22 <- 203.0.113.20:50000 established inbound (local port is listening); loopback.
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
        "   1: 0264 33C6:9C40 0A7100CB:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 2\n"
        "   2: 026433C6:0016 147100CB:C350 01 00000000:00000000 00:00000000 00000000     0        0 3\n"
        "   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4\n"
    ).replace("0264 33C6", "026433C6")
    sys_ = BuiltSystem(files={"/proc/net/tcp": tcp, "/proc/net/tcp6": "header\n", "/proc/net/udp": UDP_HDR})
    f = list(egress.Connections().run(ctx_for(sys_)))
    assert [(x.status.value, x.resource) for x in f] == [("FAIL", "203.0.113.10:443")]
    assert f[0].evidence["local"] == "198.51.100.2:40000" and f[0].evidence["uid"] == 1000
    f = list(egress.Connections().run(ctx_for(sys_, allowed_networks=["203.0.113.0/24"])))
    assert [x.status.value for x in f] == ["PASS"]


UDP_HDR = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"


def test_an_outbound_connection_sharing_a_listening_port_number_is_still_outbound() -> None:
    # Something listens on 127.0.0.1:40000; the connection 198.51.100.2:40000 -> 203.0.113.10:443 is outbound.
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
        "   1: 026433C6:9C40 0A7100CB:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 2\n"
    )
    sys_ = BuiltSystem(files={"/proc/net/tcp": tcp, "/proc/net/tcp6": "h\n", "/proc/net/udp": UDP_HDR})
    sys_.files["/proc/net/udp6"] = UDP_HDR
    f = list(egress.Connections().run(ctx_for(sys_)))
    assert [(x.status.value, x.resource) for x in f] == [("FAIL", "203.0.113.10:443")]
    # A wildcard listener on that port makes it inbound.
    sys_.files["/proc/net/tcp"] = tcp.replace("0100007F:9C40", "00000000:9C40")
    assert [x.status.value for x in egress.Connections().run(ctx_for(sys_))] == ["PASS"]


def test_a_connected_udp_flow_to_outside_fails() -> None:
    udp = (
        UDP_HDR + "  7: 026433C6:A000 0A7100CB:0035 01 00000000:00000000 00:00000000 00000000  0  0 9 2 0 0\n"
    )
    udp += "  8: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000  0  0 9 2 0 0\n"
    files = {"/proc/net/tcp": "h\n", "/proc/net/tcp6": "h\n", "/proc/net/udp": udp, "/proc/net/udp6": UDP_HDR}
    f = list(egress.Connections().run(ctx_for(BuiltSystem(files=files))))
    assert [(x.status.value, x.resource, x.evidence["protocol"]) for x in f] == [
        ("FAIL", "203.0.113.10:53", "udp")
    ]
    # Unreadable UDP tables: not assessed, not a pass.
    del files["/proc/net/udp"], files["/proc/net/udp6"]
    (e,) = egress.Connections().run(ctx_for(BuiltSystem(files=files)))
    assert e.status.value == "ERROR" and e.message.startswith("not assessed:")


def test_every_proxy_variable_name_and_a_huge_environment() -> None:
    env = "PIP_PROXY=http://p:3128\0npm_config_https_proxy=http://p:3128\0socks_proxy=socks5://p:1080\0no_proxy=x\0"
    files = {"/proc/10/environ": env, "/etc/environment": "NPM_CONFIG_PROXY=http://q:3128\nNO_PROXY=a,b\n"}
    f = {x.resource: x for x in egress.ProxyEnv().run(ctx_for(BuiltSystem(files=files)))}
    assert set(f["pid 10 (?)"].evidence["variables"]) == {
        "PIP_PROXY",
        "npm_config_https_proxy",
        "socks_proxy",
    }
    assert f["/etc/environment"].evidence["variables"] == {"NPM_CONFIG_PROXY": "http://q:3128"}
    # An environment past the read limit cannot be shown clean: WARN, never PASS.
    big = {"/proc/11/environ": "A=" + "x" * ENVIRON_LIMIT + "\0HTTPS_PROXY=http://late:3128\0"}
    (w,) = egress.ProxyEnv().run(ctx_for(BuiltSystem(files=big)))
    assert w.status.value == "WARN" and "not read to the end" in w.message


def test_interfaces() -> None:
    # The shape edgesec.checks.netlink answers ("links").
    links = [
        {"ifname": "lo", "kind": None, "link_type": None, "operstate": "UNKNOWN", "up": True},
        {"ifname": "wg0", "kind": "wireguard", "link_type": None, "operstate": "UNKNOWN", "up": True},
        {"ifname": "wlan0", "kind": None, "link_type": None, "operstate": "DOWN", "up": False},
    ]
    sys_ = BuiltSystem(
        netlink=lambda op, *a: {"ok": True, "data": links},
        stats={"/sys/class/net/wlan0/wireless": FileStat(0o40755, 0, 0, 0, 0.0, True, False)},
    )
    f = statuses(list(egress.Interfaces().run(ctx_for(sys_))))
    assert f == {"wg0": "FAIL", "wlan0": "WARN"}


def test_telemetry_switches() -> None:
    sys_ = BuiltSystem(
        files={
            "/proc/10/cmdline": "/usr/bin/python3\0-m\0vllm.entrypoints.openai.api_server\0",
            "/proc/10/environ": "HF_HUB_OFFLINE=1\0",
            "/proc/11/cmdline": "/opt/llama/llama-server\0-m\0/models/x.gguf\0",
            "/proc/11/environ": "",
            "/proc/12/cmdline": "/usr/bin/text-generation-launcher\0",
            "/proc/12/environ": "HF_HUB_OFFLINE=1\0HF_HUB_DISABLE_TELEMETRY=true\0",
        }
    )
    f = {x.resource: x for x in egress.Telemetry().run(ctx_for(sys_))}
    assert f["pid 10 (vllm)"].status.value == "FAIL"
    assert (
        "VLLM_NO_USAGE_STATS" in f["pid 10 (vllm)"].message and "DO_NOT_TRACK" in f["pid 10 (vllm)"].message
    )
    assert f["pid 11 (llama-server)"].status.value == "PASS"
    assert f["pid 12 (text-generation)"].status.value == "PASS"
    assert [x.status.value for x in egress.Telemetry().run(ctx_for(BuiltSystem()))] == ["SKIP"]


def test_active_probe_is_opt_in() -> None:
    sys_ = BuiltSystem(
        network={("203.0.113.10", 443, "tcp"): {"outcome": "reachable", "detail": "TCP handshake"}}
    )
    f = list(egress.ActiveProbe().run(ctx_for(sys_)))
    assert [x.status.value for x in f] == ["SKIP"] and "opt-in" in f[0].message
    targets = [{"host": "203.0.113.10", "port": 443}, {"host": "203.0.113.11", "port": 53, "protocol": "dns"}]
    f = statuses(list(egress.ActiveProbe().run(ctx_for(sys_, probe_targets=targets))))
    assert f == {"tcp://203.0.113.10:443": "FAIL", "dns://203.0.113.11:53": "PASS"}


def test_a_probe_target_that_does_not_resolve_is_not_a_pass(monkeypatch: Any) -> None:
    import socket

    from edgesec.checks import probes

    def no_name(*_a: object, **_k: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name)  # no resolver is asked: nothing leaves this test
    ans = probes.active_probe("telemetry.example", 443, "tcp", 1.0)
    assert ans["outcome"] == "unresolved"
    sys_ = BuiltSystem(network={("telemetry.example", 443, "tcp"): ans})
    (f,) = egress.ActiveProbe().run(ctx_for(sys_, probe_targets=[{"host": "telemetry.example"}]))
    assert f.status.value == "ERROR" and f.message.startswith("not assessed:") and "not tried" in f.message


@given(st.text(max_size=400))
def test_parsers_never_crash_on_garbage(text: str) -> None:
    sys_ = BuiltSystem(
        files={
            "/proc/net/tcp": text,
            "/etc/resolv.conf": text,
            "/proc/7/environ": text,
            "/proc/7/cmdline": text,
        },
        commands={
            ("ip", "-j", "-4", "route", "show", "table", "all"): text,
            ("ip", "-j", "-6", "route", "show", "table", "all"): text,
            ("nft", "-j", "list", "ruleset"): text,
            ("iptables-save",): text,
            ("ip", "-j", "-d", "link", "show"): text,
        },
    )
    ctx = ctx_for(sys_)
    for cls in egress.CHECKS:
        found = list(cls().run(ctx))
        assert found and all(_understood(x) for x in found)


def _understood(f: Finding) -> bool:
    """A verdict, or a clear "not assessed" -- never a crash."""
    return f.status.value in ("PASS", "FAIL", "WARN", "SKIP") or f.message.startswith("not assessed:")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=30,
    )
)
def test_route_and_nft_json_of_any_shape(doc: Any) -> None:
    sys_ = routes_system(
        [],
        commands={
            ("nft", "-j", "list", "ruleset"): json.dumps(doc),
            ("iptables-save",): json.dumps(doc),
        },
        netlink=lambda *_a: {"ok": True, "data": doc},
    )
    for cls in (egress.Routes, egress.Firewall):
        found = list(cls().run(ctx_for(sys_)))
        assert found and all(_understood(x) for x in found)


def _nft_drop_with(*rules: list[Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(NFT_OUTPUT_DROP))
    for i, expr in enumerate(rules):
        doc["nftables"].append(
            {"rule": {"family": "inet", "table": "edge", "chain": "out", "handle": 10 + i, "expr": expr}}
        )
    return doc


CT_EST = [
    {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
    {"accept": None},
]
TO_SITE = [
    {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "ip", "field": "daddr"}},
            "right": {"prefix": {"addr": "10.0.0.0", "len": 8}},
        }
    },
    {"accept": None},
]
PORT_443 = [
    {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 443}},
    {"accept": None},
]
TO_OUTSIDE = [
    {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "ip", "field": "daddr"}},
            "right": {"set": ["10.1.1.1", "8.8.8.8"]},
        }
    },
    {"accept": None},
]


def test_drop_policy_with_holes_is_still_open() -> None:
    safe = routes_system(ROUTES_OPEN, _nft_drop_with(CT_EST, TO_SITE))
    f = statuses(list(egress.Routes().run(ctx_for(safe, allowed_networks=["10.0.0.0/8"]))))
    assert f["IPv4"] == "PASS"
    # Without 10/8 allowed, the site rule itself is a way out.
    f = list(egress.Routes().run(ctx_for(safe)))
    assert f[0].status.value == "FAIL" and "lets traffic out through 1 rule" in f[0].message
    for hole in (PORT_443, TO_OUTSIDE):
        sys_ = routes_system(ROUTES_OPEN, _nft_drop_with(CT_EST, hole))
        routes = list(egress.Routes().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"])))
        assert routes[0].status.value == "FAIL", hole
        fw = {x.resource: x for x in egress.Firewall().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"]))}
        assert fw["IPv4 output"].status.value == "FAIL" and fw["IPv4 output"].evidence["holes"]


def test_a_second_chain_without_holes_blocks() -> None:
    doc = _nft_drop_with(PORT_443)
    doc["nftables"] += [
        {"table": {"family": "ip", "name": "strict", "handle": 2}},
        {
            "chain": {
                "family": "ip",
                "table": "strict",
                "name": "out",
                "handle": 1,
                "type": "filter",
                "hook": "output",
                "prio": 10,
                "policy": "drop",
            }
        },
    ]
    f = statuses(list(egress.Routes().run(ctx_for(routes_system(ROUTES_OPEN, doc)))))
    assert f["IPv4"] == "PASS"


def test_iptables_accept_rules_are_classified() -> None:
    base = (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n-A OUTPUT -o lo -j ACCEPT\n"
    )
    base += (
        "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A OUTPUT -d 10.2.0.0/16 -j ACCEPT\n"
    )
    ok = routes_system(ROUTES_OPEN, commands={("iptables-save",): base + "COMMIT\n"})
    assert statuses(list(egress.Routes().run(ctx_for(ok, allowed_networks=["10.0.0.0/8"]))))["IPv4"] == "PASS"
    holed = routes_system(
        ROUTES_OPEN,
        commands={("iptables-save",): base + "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n"},
    )
    (v4, _v6) = egress.Routes().run(ctx_for(holed, allowed_networks=["10.0.0.0/8"]))
    assert v4.status.value == "FAIL" and "--dport 53" in v4.message


def test_unreadable_firewall_is_an_error_and_routes_count_as_open() -> None:
    denied = CommandResult(
        ("nft", "-j", "list", "ruleset"), 1, "", "Operation not permitted (you must be root)"
    )
    sys_ = routes_system(ROUTES_OPEN, commands={("nft", "-j", "list", "ruleset"): denied})
    (v4, _v6) = egress.Routes().run(ctx_for(sys_))
    assert v4.status.value == "FAIL" and "could not be read" in v4.message and "root" in v4.message
    (fw,) = egress.Firewall().run(ctx_for(sys_))
    assert fw.status.value == "ERROR" and "Operation not permitted" in fw.message


def test_proxy_scan_without_root_says_so() -> None:
    sys_ = BuiltSystem(
        files={"/proc/1/environ": "A=1\0"},
        stats={
            "/proc/2": FileStat(0o40555, 0, 0, 0, 0.0, True, False),
            "/proc/2/environ": FileStat(0o100400, 0, 0, 0, 0.0, False, False),
        },
        euid=1000,
    )
    (f,) = egress.ProxyEnv().run(ctx_for(sys_))
    assert f.status.value == "WARN" and "run the audit as root" in f.message


def test_router_advertisements_warn() -> None:
    files = {
        "/proc/sys/net/ipv6/conf/eth0/accept_ra": "1\n",
        "/proc/sys/net/ipv6/conf/eth0/forwarding": "0\n",
        "/proc/sys/net/ipv6/conf/eth1/accept_ra": "1\n",
        "/proc/sys/net/ipv6/conf/eth1/accept_ra_defrtr": "0\n",
        "/proc/sys/net/ipv6/conf/eth2/accept_ra": "0\n",
        "/proc/sys/net/ipv6/conf/lo/accept_ra": "1\n",
    }
    f = statuses(list(egress.Routes().run(ctx_for(routes_system(ROUTES_SEALED, files=files)))))
    assert f == {"IPv4": "PASS", "IPv6": "PASS", "IPv6 router advertisements": "WARN"}
    ra = [
        x
        for x in egress.Routes().run(ctx_for(routes_system(ROUTES_SEALED, files=files)))
        if x.status.value == "WARN"
    ]
    assert [i["ifname"] for i in ra[0].evidence["interfaces"]] == ["eth0"]


def test_checks_that_name_public_resolvers_open_no_socket(monkeypatch: Any) -> None:
    """8.8.8.8 in these tests is data (a resolv.conf line, an nft set): the checks read it and judge it.
    With socket creation refused outright, they still give their answers -- nothing is sent anywhere."""
    import socket

    def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an egress check opened a socket")

    monkeypatch.setattr(socket, "socket", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    dns = BuiltSystem(files={"/etc/resolv.conf": "nameserver 8.8.8.8\n"})
    assert statuses(list(egress.Dns().run(ctx_for(dns)))) == {"8.8.8.8": "FAIL"}
    sys_ = routes_system(ROUTES_OPEN, _nft_drop_with(CT_EST, TO_OUTSIDE))
    routes = list(egress.Routes().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"])))
    assert routes[0].status.value == "FAIL"
    assert list(egress.Firewall().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"])))


def test_a_construct_the_model_does_not_understand_is_never_pass() -> None:
    xt = [{"xt": {"type": "match", "name": "owner"}}, {"accept": None}]
    sys_ = routes_system(ROUTES_OPEN, _nft_drop_with(CT_EST, xt))
    (v4, _v6) = egress.Routes().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"]))
    assert v4.status.value == "WARN" and "cannot prove sealed" in v4.message and "xt" in v4.message
    fw = {x.resource: x for x in egress.Firewall().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"]))}
    assert fw["IPv4 output"].status.value == "WARN" and fw["IPv4 output"].evidence["unknown"]


def test_iptables_negation_limit_and_user_chains() -> None:
    head = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n:site - [0:0]\n"

    def v4(rules: str) -> str:
        sys_ = routes_system(ROUTES_OPEN, commands={("iptables-save",): head + rules + "COMMIT\n"})
        return next(iter(egress.Routes().run(ctx_for(sys_, allowed_networks=["10.0.0.0/8"])))).status.value

    assert v4("-A OUTPUT ! -d 10.0.0.0/8 -j ACCEPT\n") == "FAIL"  # "not to the site" is a way out
    assert v4("-A OUTPUT -d 10.0.0.0/8 -j ACCEPT\n") == "PASS"
    assert v4("-A OUTPUT -j site\n-A site -d 10.0.0.0/8 -j ACCEPT\n-A site -j RETURN\n") == "PASS"
    assert v4("-A OUTPUT -j site\n-A site -p tcp --dport 443 -j ACCEPT\n") == "FAIL"
    # A rate-limited drop is not a drop: policy ACCEPT with a limited final drop stays open.
    accept = head.replace(":OUTPUT DROP", ":OUTPUT ACCEPT")
    sys_ = routes_system(
        ROUTES_OPEN,
        commands={("iptables-save",): accept + "-A OUTPUT -m limit --limit 5/min -j DROP\nCOMMIT\n"},
    )
    assert next(iter(egress.Routes().run(ctx_for(sys_)))).status.value == "FAIL"
    sys_ = routes_system(
        ROUTES_OPEN,
        commands={
            ("iptables-save",): accept + "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n"
        },
    )
    assert next(iter(egress.Routes().run(ctx_for(sys_)))).status.value == "PASS"


def test_unreadable_sources_are_never_clean() -> None:
    there = FileStat(0o100600, 0, 0, 10, 0.0, False, False)
    # resolv.conf exists but cannot be read: not "no resolver".
    (f,) = egress.Dns().run(ctx_for(BuiltSystem(stats={"/etc/resolv.conf": there})))
    assert f.status.value == "ERROR" and f.message.startswith("not assessed:")
    # A proxy configuration file that exists but cannot be read: WARN, not "no proxy variable found".
    (f,) = egress.ProxyEnv().run(ctx_for(BuiltSystem(stats={"/etc/environment": there})))
    assert f.status.value == "WARN" and "/etc/environment" in f.message
    # Even as root, a process environment that could not be read is reported.
    sys_ = BuiltSystem(
        stats={"/proc/9": FileStat(0o40555, 0, 0, 0, 0.0, True, False), "/proc/9/environ": there}, euid=0
    )
    (f,) = egress.ProxyEnv().run(ctx_for(sys_))
    assert f.status.value == "WARN" and "could not be read" in f.message


def test_a_vrf_table_reached_through_the_l3mdev_rule_counts() -> None:
    routes = [*ROUTES_SEALED, {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0", "table": "200"}]
    l3 = [{"priority": 1000, "table": "unspec", "action": "lookup", "l3mdev": True}]
    (v4, _v6) = egress.Routes().run(ctx_for(routes_system(routes, netlink=fib(routes, rules=l3))))
    assert v4.status.value == "FAIL" and "l3mdev" in v4.evidence["outbound_routes"][0]["lookup"]


def test_telemetry_with_unreadable_command_lines_is_not_a_skip() -> None:
    there = FileStat(0o100400, 0, 0, 0, 0.0, False, False)
    sys_ = BuiltSystem(
        stats={"/proc/5": FileStat(0o40555, 0, 0, 0, 0.0, True, False), "/proc/5/cmdline": there}
    )
    (f,) = egress.Telemetry().run(ctx_for(sys_))
    assert f.status.value == "WARN" and "could not be read" in f.message


def test_the_hosts_own_segment_is_internal_to_routes_and_firewall_alike() -> None:
    to_segment = [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": "198.51.100.0", "len": 24}},
            }
        },
        {"accept": None},
    ]
    (v4, _v6) = egress.Routes().run(ctx_for(routes_system(ROUTES_OPEN, _nft_drop_with(CT_EST, to_segment))))
    assert v4.status.value == "PASS", v4.message
    # A point-to-point address's peer is not a segment: the same accept to it is a hole.
    ptp = [
        {
            "ifname": "eth0",
            "family": 4,
            "address": "198.51.100.2",
            "prefixlen": 24,
            "scope": 0,
            "peer": "198.51.100.7",
        }
    ]
    sys_ = routes_system(ROUTES_OPEN, _nft_drop_with(CT_EST, to_segment), netlink=fib(ROUTES_OPEN, addrs=ptp))
    (v4, _v6) = egress.Routes().run(ctx_for(sys_))
    assert v4.status.value == "FAIL"
