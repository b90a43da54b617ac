"""A Traefik dynamic (and static) config read back: every router judged for mTLS and the ForwardAuth middleware."""

from __future__ import annotations

import ipaddress
import json
import posixpath
import tomllib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from edgesec.authz.headers import (
    TRAEFIK_SETS,
)
from edgesec.authz.proxyconf.report import (
    Issue,
    ProxyReport,
    Reader,
    SiteTrust,
    few,
    judge_ca_file,
)


def load_structured(path: str, text: str) -> Any:
    """A Traefik config file as data: TOML, JSON or YAML (YAML needs PyYAML)."""
    if path.endswith(".toml"):
        return tomllib.loads(text)
    if path.endswith(".json"):
        return json.loads(text)
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - PyYAML ships with every Traefik-using distro we know
        raise ValueError("reading YAML needs PyYAML (pip install pyyaml), or use a TOML file") from None
    return yaml.safe_load(text)


_OPEN_NETS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _d(x: Any) -> dict[str, Any]:
    """``x`` if it is a mapping, else empty: a config of the wrong shape is judged as missing that part."""
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def check_traefik(
    dynamic: Sequence[str], static: str | None, read: Reader, trust: SiteTrust, cwd: str = "/"
) -> ProxyReport:
    """Judge Traefik configs: every router goes through a forwardAuth middleware; ``trustForwardHeader``
    only with an entrypoint that trusts named IPs; every router's TLS options require and verify a
    client certificate from the site CA (a relative ``caFiles`` entry is Traefik's ``cwd``'s)."""
    rep = ProxyReport("traefik", ", ".join(dynamic), files=list(dynamic))
    routers: dict[str, tuple[str, dict[str, Any]]] = {}
    middlewares: dict[str, Any] = {}
    tls_options: dict[str, Any] = {}
    for p in dynamic:
        doc = _load_or_report(p, read, rep, "fail")
        if doc is None:
            continue
        http = _d(_d(doc).get("http"))
        for name, r in _d(http.get("routers")).items():
            routers[str(name)] = (p, _d(r))
        middlewares.update(_d(http.get("middlewares")))
        tls_options.update(_d(_d(_d(doc).get("tls")).get("options")))
        for proto in ("tcp", "udp"):
            for name in _d(_d(_d(doc).get(proto)).get("routers")):
                rep.fail(
                    f"{p}: {proto} router {name}",
                    "TCP and UDP routers cannot run forwardAuth (or verify a site client certificate for "
                    "the app): their connections reach the service without an authz decision",
                )
    entry: dict[str, Any] = {}
    if static is not None:
        sdoc = _load_or_report(static, read, rep, "warn")
        entry = _d(_d(sdoc).get("entryPoints"))
        if sdoc is not None:
            _traefik_telemetry(static, _d(_d(sdoc).get("global")), rep)
            _traefik_unjudged(static, _d(sdoc), rep)
    for name, (p, r) in sorted(routers.items()):
        rep.routes += 1
        where = f"{p}: router {name}"
        flat = [m for x in _l(r.get("middlewares")) for m in _flatten(str(x), middlewares, 0)]
        fas = [_d(m["forwardAuth"]) for m in flat if "forwardAuth" in m]
        if not fas:
            rep.fail(where, "no forwardAuth middleware: requests reach the service without an authz decision")
        else:
            first = next(i for i, m in enumerate(flat) if "forwardAuth" in m)
            deleted = {
                str(k).lower()
                for m in flat[:first]
                for k, v in _d(_d(m.get("headers")).get("customRequestHeaders")).items()
                if v == ""
            }
            missing = [h for h in trust.strip(TRAEFIK_SETS) if h.lower() not in deleted]
            if missing:
                rep.fail(
                    where,
                    f'headers {few(missing)} are not deleted (headers.customRequestHeaders "") before '
                    "forwardAuth: a client can send its own (an underscore spelling is the same header to a "
                    "WSGI backend)",
                )
        if trust.auth_url:
            want = urlsplit(trust.auth_url)
            for fa in fas:
                addr = str(fa.get("address") or "")
                got = urlsplit(addr)
                if (got.hostname, got.port) != (want.hostname, want.port):
                    rep.warn(
                        where, f"forwardAuth.address {addr or '(none)'} is not [authz] url {trust.auth_url}"
                    )
        if any(fa.get("trustForwardHeader") is True for fa in fas):
            _traefik_trusted(where, r, entry, static, rep)
        tls = r.get("tls")
        if tls is None:
            rep.fail(where, "no tls: the router serves plain HTTP without a client certificate")
            continue
        opt_name = str(_d(tls).get("options") or "default").split("@", 1)[0]
        opt = tls_options.get(opt_name)
        if not isinstance(opt, dict):
            rep.fail(
                where,
                f"TLS options {opt_name!r} are not defined: Traefik's default does not ask for a client certificate",
            )
            continue
        ca = _d(opt.get("clientAuth"))
        if ca.get("clientAuthType") != "RequireAndVerifyClientCert":
            rep.fail(
                where,
                f"TLS options {opt_name}: clientAuthType is {ca.get('clientAuthType') or 'NoClientCert'}, "
                "not RequireAndVerifyClientCert",
            )
        files = _l(ca.get("caFiles"))
        if not files:
            rep.fail(
                where, f"TLS options {opt_name}: no caFiles: clients are not verified against the site CA"
            )
        for f in files:
            f = posixpath.join(cwd, str(f))
            why = judge_ca_file(f, read(f), trust)
            if why:
                rep.fail(where, why)
    if not routers:
        rep.warn(rep.path, "no HTTP routers found")
    return rep


def _load_or_report(path: str, read: Reader, rep: ProxyReport, level: str) -> Any:
    text = read(path)
    if text is None:
        rep.issues.append(Issue(level, path, "cannot be read"))
        return None
    try:
        return load_structured(path, text)
    except Exception as exc:  # noqa: BLE001 - YAML, TOML and JSON errors alike: one line, never a crash
        rep.issues.append(
            Issue(level, path, f"cannot parse: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        )
        return None


def _flatten(name: str, middlewares: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    """A router's middleware ``name`` as the definitions it runs, in order (chains expanded)."""
    m = _d(middlewares.get(name.split("@", 1)[0]))
    if "chain" in m:
        if depth >= 5:
            return []
        subs = _l(_d(m["chain"]).get("middlewares"))
        return [x for sub in subs for x in _flatten(str(sub), middlewares, depth + 1)]
    return [m] if m else []


def _traefik_telemetry(static: str, glob_: dict[str, Any], rep: ProxyReport) -> None:
    """A sealed site's proxy never phones home: Traefik's update check is on unless turned off."""
    if glob_.get("checkNewVersion") is not False:
        rep.fail(
            static,
            "global.checkNewVersion is not false (Traefik's default is true): the proxy asks the internet "
            "for new versions",
        )
    if glob_.get("sendAnonymousUsage") is True:
        rep.fail(static, "global.sendAnonymousUsage is true: the proxy reports usage to the internet")


def _traefik_unjudged(static: str, sdoc: dict[str, Any], rep: ProxyReport) -> None:
    """What serves requests past the file provider's routers: another provider's routers (not read here)
    and ``api.insecure`` (the API and dashboard on entrypoint ``traefik``, no forward auth)."""
    for prov in _d(sdoc.get("providers")):
        if prov not in ("file", "providersThrottleDuration"):
            rep.warn(
                static,
                f"providers.{prov} is enabled: its routers are not judged (only the file provider's are)",
            )
    if _d(sdoc.get("api")).get("insecure") is True:
        rep.fail(
            static,
            "api.insecure is true: Traefik serves its API and dashboard on entrypoint traefik without forward "
            "auth or a client certificate",
        )


def _traefik_trusted(
    where: str, router: dict[str, Any], entry: dict[str, Any], static: str | None, rep: ProxyReport
) -> None:
    eps = [str(e) for e in _l(router.get("entryPoints"))] or list(entry)
    if static is None:
        rep.warn(
            where,
            "trustForwardHeader is true and no static config was found to show the entrypoint's trustedIPs",
        )
        return
    for ep in eps:
        fh = _d(_d(entry.get(ep)).get("forwardedHeaders"))
        if fh.get("insecure") is True:
            rep.fail(
                where,
                f"trustForwardHeader with entrypoint {ep} forwardedHeaders.insecure: any client can forge X-Forwarded-*",
            )
            continue
        ips = _l(fh.get("trustedIPs"))
        # No trustedIPs: the entrypoint trusts no peer and replaces every X-Forwarded-* with its own.
        for ip in ips:
            try:
                net = ipaddress.ip_network(str(ip), strict=False)
            except ValueError:
                rep.fail(where, f"entrypoint {ep} trustedIPs entry {ip!r} is not an address or network")
                continue
            if net in _OPEN_NETS or net.prefixlen < 8:
                rep.fail(where, f"entrypoint {ep} trusts X-Forwarded-* from {ip}: effectively anyone")
