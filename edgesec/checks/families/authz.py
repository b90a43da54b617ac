"""The ``authz`` checks that span parts: is the site's ForwardAuth ready, in front of everything, and right?

* ``authz.readyz`` -- the service answers ``/readyz`` on loopback with ``ready: true`` (policy loaded, trust
  bundle and CRL fresh);
* ``authz.proxy`` -- the running proxies (nginx, Caddy, Traefik) send every route through ForwardAuth,
  trust ``X-Forwarded-*`` only from named peers, and require client certificates from the site CA;
* ``authz.policy`` -- the policy is default-deny, lints clean and passes its own test table.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from edgesec.authz.proxyconf import ProxyReport, SiteTrust, check_caddy, check_nginx, check_traefik
from edgesec.checks import discover
from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity

_CONTROLS = ("pci-dss-4.0:8.2.1", "hipaa:164.312(a)(1)", "mlps-2.0-l3:8.1.3.2", "iec-62443-3-3:SR 2.1")


def _loopback(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        return None
    return host, parts.port or (443 if parts.scheme == "https" else 80)


class ReadyZ(Check):
    """The ForwardAuth service reports itself ready on ``/readyz``."""

    meta = CheckMeta(
        id="authz.readyz",
        title="The ForwardAuth service is ready (policy loaded, trust bundle and CRL fresh)",
        severity=Severity.HIGH,
        rationale="A ForwardAuth service that runs without a loaded policy or with a stale CRL denies every "
        "request (an outage) or accepts revoked certificates; /readyz says which.",
        remediation="Read the /readyz body: renew the CRL ('edgesec pki crl'), fix the policy file named there "
        "(the last good policy stays in force), then check again.",
        controls=_CONTROLS,
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        url = ctx.config.settings.authz.url
        if not url:
            yield self.skipped("ForwardAuth is not set up here ([authz] url is not configured)")
            return
        if _loopback(url) is None:
            yield self.skipped(f"[authz] url {url} is not on loopback; check it on the host that runs it")
            return
        # The configured URL may be a load balancer: ask each running replica too, or a dead or stale
        # replica hides behind the healthy one that answered.
        targets = {url.rstrip("/"): "[authz] url"}
        for rep in discover.authz_replicas(ctx):
            targets.setdefault(f"http://{rep.config}", f"replica pid {rep.pid}")
        for target, origin in targets.items():
            yield self._ask(ctx, target, origin)

    def _ask(self, ctx: CheckContext, base: str, origin: str) -> Finding:
        target = base + "/readyz"
        r = ctx.system.run(
            ["curl", "-sS", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}", target], timeout=6
        )
        ev: dict[str, object] = {"url": target, "origin": origin}
        if r.returncode == 127:
            return self.warned(
                "curl is not installed: /readyz cannot be asked", evidence=ev, severity=Severity.LOW
            )
        if not r.ok:
            ev["error"] = r.stderr.strip()[-300:]
            return self.failed(
                f"ForwardAuth ({origin}) does not answer at {target}: {r.stderr.strip()[-120:]}",
                resource=base,
                evidence=ev,
            )
        body, _, code = r.stdout.rpartition("\n")
        ev["status"] = code
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        ev["body"] = doc if isinstance(doc, dict) else body[:400]
        if code == "200" and isinstance(doc, dict) and doc.get("ready") is True:
            pol = doc.get("policy") or {}
            return self.passed(
                f"ForwardAuth ({origin}) ready: policy generation {pol.get('generation')}, {pol.get('rules')} rules",
                resource=base,
                evidence=ev,
            )
        why = []
        if isinstance(doc, dict):
            pol = doc.get("policy") or {}
            if isinstance(pol, dict) and pol.get("error"):
                why.append(f"policy: {pol['error']}")
            trust = doc.get("trust") or {}
            if isinstance(trust, dict) and not trust.get("ok", True):
                why.append(f"trust: {trust.get('error') or trust.get('reason') or 'not ok'}")
        return self.failed(
            f"ForwardAuth ({origin}) is not ready (HTTP {code})" + (f": {'; '.join(why)}" if why else ""),
            resource=base,
            evidence=ev,
        )


class ProxyConfig(Check):
    """Every route of every running proxy goes through ForwardAuth and mutual TLS with the site CA."""

    meta = CheckMeta(
        id="authz.proxy",
        title="The proxies send every route through ForwardAuth and require site client certificates",
        severity=Severity.CRITICAL,
        rationale="One router without the forwardAuth middleware, one location without auth_request or a "
        "client CA other than the site's is a way into the AI services around every policy; "
        "trustForwardHeader without trusted IPs lets a client forge the identity the proxy forwards; a "
        "client-sent copy of an identity, X-Forwarded-* or method-override header in any spelling (X_User_ID "
        "is X-User-ID to a WSGI app) lets a client choose who it is or what it asked for; a proxy that checks "
        "for updates breaks the site's zero-egress seal.",
        remediation="Re-generate the proxy config ('edgesec authz gen traefik|caddy|nginx') and merge local "
        "changes into it; keep forwardedHeaders.trustedIPs to the proxies' own addresses; set Traefik's "
        "global.checkNewVersion and sendAnonymousUsage to false.",
        controls=(*_CONTROLS, "pci-dss-4.0:4.2.1", "mlps-2.0-l3:8.1.4.1"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        s = ctx.config.settings.authz
        tdir = discover.trust_dir(ctx)
        ca_pem = ctx.system.read_text(f"{tdir}/ca-bundle.pem")
        h = s.headers
        trust = SiteTrust.from_pem(ca_pem, s.url, (h.user, h.roles, h.tenant, h.method), s.cert_header)
        reports: list[tuple[ProxyReport, str]] = []

        def read(p: str) -> str | None:
            return ctx.system.read_text(p, 4 << 20)

        for path, origin in discover.configs(ctx, "nginx", self.meta.id):
            reports.append((check_nginx(path, read, ctx.system.glob, trust), origin))
        for path, origin in discover.configs(ctx, "caddy", self.meta.id):
            reports.append((check_caddy(path, read, trust), origin))
        for path, origin in discover.configs(ctx, "traefik", self.meta.id):
            # Traefik opens relative paths (file provider, caFiles) from its own working directory.
            pid = origin.removeprefix("pid ")
            cwd = (ctx.system.readlink(f"/proc/{pid}/cwd") if pid.isdigit() else None) or "/"
            dyn, static = self._traefik_files(ctx, path, cwd)
            if dyn:
                reports.append((check_traefik(dyn, static, read, trust, cwd=cwd), origin))
            else:
                # The static config is still judged (update check, usage report); the routers cannot be.
                rep = check_traefik([], static, read, trust)
                rep.kind, rep.path, rep.files = "traefik", path, [path]
                rep.issues = [i for i in rep.issues if i.message != "no HTTP routers found"]
                rep.warn(
                    path, "no file-provider dynamic config found from this static config: routers not judged"
                )
                reports.append((rep, origin))
        if not reports:
            yield self.skipped(
                "no reverse proxy (nginx, Caddy, Traefik) is running or configured for the audit"
            )
            return
        if ca_pem is None:
            yield self.warned(
                f"no site trust bundle at {tdir}/ca-bundle.pem: client CA files cannot be compared with the site CA",
                severity=Severity.MEDIUM,
            )
        for rep, origin in reports:
            ev = {**rep.to_json(), "origin": origin}
            fails = [i for i in rep.issues if i.level == "fail"]
            warns = [i for i in rep.issues if i.level == "warn"]
            for i in fails:
                yield self.failed(f"{rep.kind}: {i.message} ({i.where})", resource=rep.path, evidence=ev)
            for i in warns:
                yield self.warned(
                    f"{rep.kind}: {i.message} ({i.where})",
                    resource=rep.path,
                    evidence=ev,
                    severity=Severity.LOW,
                )
            if not fails and rep.routes:
                yield self.passed(
                    f"{rep.kind} ({origin}): {rep.routes} route(s) behind ForwardAuth with site mutual TLS",
                    resource=rep.path,
                    evidence=ev,
                )
            elif not fails and not warns:
                yield self.passed(f"{rep.kind} ({origin}) serves no routes", resource=rep.path, evidence=ev)

    @staticmethod
    def _traefik_files(ctx: CheckContext, static: str, cwd: str = "/") -> tuple[list[str], str | None]:
        from edgesec.authz.proxyconf import load_structured

        text = ctx.system.read_text(static)
        if text is None:
            return [], None
        try:
            doc = load_structured(static, text) or {}
        except Exception:  # noqa: BLE001 - reported by the caller as a config it cannot judge
            return [], None
        providers = doc.get("providers") if isinstance(doc, dict) else None
        fp = providers.get("file") if isinstance(providers, dict) else None
        if not isinstance(fp, dict):
            return [], static
        files: list[str] = []
        if fp.get("filename"):
            files.append(posixpath.join(cwd, str(fp["filename"])))
        if fp.get("directory"):
            files += _traefik_dir(ctx, posixpath.join(cwd, str(fp["directory"])).rstrip("/"), 0)
        return files, static


def _traefik_dir(ctx: CheckContext, d: str, depth: int) -> list[str]:
    """The files Traefik's file provider loads from directory ``d``: its subdirectories too, and every
    ``.toml``/``.yaml``/``.yml`` whatever the case of the extension (as Traefik 3 reads them)."""
    out: list[str] = []
    for name in ctx.system.listdir(d) or []:
        p = f"{d}/{name}"
        if ctx.system.listdir(p) is not None:
            if depth < 16:
                out += _traefik_dir(ctx, p, depth + 1)
        elif name.lower().endswith((".yml", ".yaml", ".toml")):
            out.append(p)
    return out


_DEFAULT_DENY = (
    re.compile(r"^some\(where\s*\(p\.eft\s*==\s*allow\)\)$"),
    re.compile(r"^some\(where\s*\(p\.eft\s*==\s*allow\)\)\s*&&\s*!some\(where\s*\(p\.eft\s*==\s*deny\)\)$"),
)


def policy_effect(model_text: str) -> str | None:
    """The ``e = ...`` line of a casbin model's ``[policy_effect]`` section."""
    section = ""
    for line in model_text.splitlines():
        t = line.strip()
        if t.startswith("["):
            section = t
        elif section == "[policy_effect]" and t.startswith("e") and "=" in t:
            return t.split("=", 1)[1].strip()
    return None


class Policy(Check):
    """The policy denies by default, lints clean and passes its own test table."""

    meta = CheckMeta(
        id="authz.policy",
        title="The access policy is default-deny and passes its own test table",
        severity=Severity.HIGH,
        rationale="An allow-by-default effect, a catch-all allow rule or a policy that no longer matches its "
        "test table grants access nobody reviewed (PCI DSS 7.2, MLPS 8.1.3.2 default deny).",
        remediation="Keep the shipped effect (allow only with a matching allow rule, deny wins), fix the rules "
        "'edgesec authz lint' names, and update policy.tests.csv with the reviewed decisions.",
        controls=("pci-dss-4.0:8.2.1", "mlps-2.0-l3:8.1.3.2", "mlps-2.0-l3:8.1.4.2", "iec-62443-3-3:SR 2.1"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        s = ctx.config.settings.authz
        if not s.policy_dir and not s.url:
            yield self.skipped("ForwardAuth is not set up here (no [authz] policy_dir or url)")
            return
        if not s.policy_dir:
            yield self.failed(
                "[authz] url is set but [authz] policy_dir is not: the policy the service enforces cannot be "
                "judged (and 'edgesec authz serve' refuses to start without one)",
                remediation="'edgesec authz policy init /etc/edgesec/policy' and set [authz] policy_dir",
                severity=Severity.MEDIUM,
            )
            return
        d = str(Path(s.policy_dir).expanduser())
        model = ctx.system.read_text(f"{d}/model.conf")
        policy = ctx.system.read_text(f"{d}/policy.csv")
        if model is None or policy is None:
            yield self.failed(f"policy directory {d} lacks model.conf or policy.csv", resource=d)
            return
        effect = policy_effect(model)
        ev: dict[str, object] = {"policy_dir": d, "effect": effect}
        if effect is None or not any(p.match(effect) for p in _DEFAULT_DENY):
            yield self.failed(
                f"policy effect {effect!r} is not default-deny", resource=f"{d}/model.conf", evidence=ev
            )
        glass = set(s.break_glass_roles)
        for n, line in enumerate(policy.splitlines(), start=1):
            cells = [c.strip() for c in line.split(",")]
            if len(cells) >= 5 and cells[0] == "p" and cells[-1] == "allow":
                if cells[3] in ("/*", "*", "/:x") and cells[4] in (".*", "*", "") and cells[1] not in glass:
                    yield self.failed(
                        f"{cells[1]} is allowed everything in {cells[2]} (policy.csv:{n}) without being a break-glass role",
                        resource=f"{d}/policy.csv",
                        evidence={**ev, "line": n, "rule": line.strip()},
                    )
        code, doc, err = discover.cli_json(ctx, "authz", "lint", "--policy-dir", d)
        lint = (doc or {}).get("result") or {}
        ev["lint"] = lint.get("findings", err)
        if code not in (0, 1) or doc is None:
            yield self.failed(f"the policy does not load: {_err(doc, err)}", resource=d, evidence=ev)
            return
        errors = [f for f in lint.get("findings", []) if f.get("level") == "error"]
        for f in errors:
            yield self.failed(
                f"lint: policy.csv:{f.get('line')}: {f.get('message')}",
                resource=f"{d}/policy.csv",
                evidence=ev,
            )
        table = f"{d}/policy.tests.csv"
        if ctx.system.stat(table) is None:
            yield self.failed(
                f"no test table {table}: nobody has written down which decisions the policy must make",
                resource=d,
                evidence=ev,
                severity=Severity.MEDIUM,
            )
            return
        code, doc, err = discover.cli_json(ctx, "authz", "test", table, "--policy-dir", d)
        res = (doc or {}).get("result") or {}
        cases = res.get("cases") or []
        ev["test_table"] = {"file": table, "cases": len(cases), "failed": res.get("failed")}
        if doc is None or code not in (0, 1):
            yield self.failed(f"the test table cannot be run: {_err(doc, err)}", resource=table, evidence=ev)
            return
        bad = [c for c in cases if not c.get("ok")]
        for c in bad:
            yield self.failed(
                f"test table line {c['line']}: {c['user']} {c['method']} {c['uri']} expected {c['expect']}, policy says {c['got']}",
                resource=table,
                evidence=ev,
            )
        if not bad and not errors and effect is not None and any(p.match(effect) for p in _DEFAULT_DENY):
            yield self.passed(
                f"default-deny policy, lint clean, {len(cases)} test decisions as expected",
                resource=d,
                evidence=ev,
            )


def _err(doc: dict[str, object] | None, stderr: str) -> str:
    err = doc.get("error") if doc else None
    if isinstance(err, dict):
        return str(err.get("message"))
    return stderr.strip().splitlines()[-1] if stderr.strip() else "no answer"


CHECKS: list[type[Check]] = [ReadyZ, ProxyConfig, Policy]
