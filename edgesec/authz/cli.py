"""``edgesec authz ...`` commands: serve, explain, test, lint, policy init, gen."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgesec._console import info, result, state, warn
from edgesec._data import policies_root
from edgesec._fs import atomic_write, read_input_file
from edgesec.authz.settings import AuthzSettings
from edgesec.config import LoadedConfig
from edgesec.errors import AlreadyExists, UsageError

authz_app = typer.Typer(
    help="ForwardAuth service: serve, explain, test, lint, gen, policy.", no_args_is_help=True
)
policy_app = typer.Typer(help="Site policy files.", no_args_is_help=True)
gen_app = typer.Typer(
    help="Proxy configuration (Traefik, Caddy, nginx) for the ForwardAuth service.", no_args_is_help=True
)
authz_app.add_typer(policy_app, name="policy")
authz_app.add_typer(gen_app, name="gen")

PolicyDirOpt = Annotated[
    Path | None,
    typer.Option("--policy-dir", help="policy directory (model.conf + policy.csv); default: the config's"),
]


def mount(app: typer.Typer) -> None:
    app.add_typer(authz_app, name="authz")


def trust_dir_of(cfg: LoadedConfig) -> Path:
    """Where authz reads the trust bundle: authz.trust_dir, else pki.trust_bundle_dir, else <home>/trust."""
    s = cfg.settings
    return cfg.path_in_home(s.authz.trust_dir or s.pki.trust_bundle_dir, "trust")


def authz_settings(cfg: LoadedConfig) -> AuthzSettings:
    """``[authz]``, with what it takes from ``[pki]`` when unset there: ``crl_grace_hours``."""
    s = cfg.settings.authz
    if s.crl_grace_hours is None:
        s = s.model_copy(update={"crl_grace_hours": float(cfg.settings.pki.crl_grace_hours)})
    return s


def _engine(settings: AuthzSettings, policy_dir: Path | None) -> Any:
    from edgesec.authz.engine import PolicyEngine
    from edgesec.authz.policy import policy_files

    files = policy_files(settings, policy_dir)
    return PolicyEngine.load(files.model, files.policy), files


@authz_app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on (default: authz.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: authz.port)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: authz.workers)")] = None,
) -> None:
    """Run the ForwardAuth service (/auth, /healthz, /readyz, /metrics)."""
    from edgesec import auditing
    from edgesec.authz.server import run_server

    cfg = state().config()
    s = authz_settings(cfg)
    h = host or s.host
    p = port or s.port
    w = workers or s.workers
    from edgesec.authz.metrics import MAX_WORKERS

    if not 1 <= p <= 65535 or not 1 <= w <= MAX_WORKERS:
        raise UsageError(f"--port must be 1..65535 and --workers 1..{MAX_WORKERS}")
    # Build once in this process: a broken policy, JWT key or config fails here with one line.
    # The lean app answers /auth as bare ASGI (certificate-verify cache, denial events by group commit)
    # and hands every other path to the FastAPI app.
    # Decision events go by group commit (a 403 may be answered before its event is on disk, within
    # [auditing] group_commit_ms) unless the site config sets [auditing] durability itself: an explicit
    # choice is honoured (fsync: every answer waits for its event, in one global order across replicas).
    from edgesec.authz.hotpath import create_hot_app

    explicit = cfg.source_of("auditing.durability") != "default"
    group = not explicit or cfg.settings.auditing.durability == "group"
    app: Any = create_hot_app(s, trust_dir=trust_dir_of(cfg), group_commit=group)
    for note in app.state.authorizer.notes:
        warn(note)
    engine = app.state.authorizer.policy.engine
    if not engine.indexed:
        warn(f"policy engine: {engine.note}")
    trust = app.state.authorizer.trust
    if trust is not None and trust.error:
        warn(f"trust bundle: {trust.error} (client certificates are refused until it loads)")
    auditing.current_trail()
    info(
        f"edgesec authz listening on http://{h}:{p} ({w} worker{'s' if w > 1 else ''}), "
        f"policy {app.state.authorizer.policy.files.policy}"
    )
    run_server(app, h, p, w)
    result({"host": h, "port": p, "workers": w, "stopped": True}, None)


@authz_app.command()
def explain(
    user: Annotated[str, typer.Option("--user", help="user id (as the certificate or token names it)")],
    method: Annotated[str, typer.Option("--method", help="HTTP method")],
    uri: Annotated[str, typer.Option("--uri", help="request URI (path and query)")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="tenant (default: authz.default_tenant)")
    ] = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Show the decision for one request: allowed or not, the user's roles, the matched rule."""
    from edgesec.authz.identity import role_clash
    from edgesec.authz.request import RequestRejected, canonical_path

    s = state().config().settings.authz
    t = tenant or s.default_tenant
    if not t:
        raise UsageError("--tenant is required (no authz.default_tenant is configured)")
    engine, files = _engine(s, policy_dir)
    data: dict[str, Any] = {
        "user": user,
        "tenant": t,
        "method": method,
        "uri": uri,
        "policy": str(files.policy),
    }
    clash = role_clash(user, engine.role_names)
    path: str | None = None
    try:
        path = canonical_path(uri.split("?", 1)[0])
    except RequestRejected as exc:
        rejected: str | None = f"{exc.reason}: {exc}"
    else:
        # /auth answers 401 for an identity in the role namespace, whatever the policy says.
        rejected = None if clash is None else f"identity-names-role: {clash}"
    if rejected is not None or path is None:
        data.update(allowed=False, effect="rejected", reason=rejected, roles=[], rule=None, path=path)
    else:
        d = engine.decide(user, t, path, method)
        data.update(
            allowed=d.allowed,
            effect=d.effect,
            roles=list(d.roles),
            rule=list(d.rule) if d.rule else None,
            path=path,
            reason=None,
        )

    def human(con: Console) -> None:
        verdict = "[green]ALLOW[/]" if data["allowed"] else "[red]DENY[/]"
        con.print(f"{verdict}  {user} {method} {uri} (tenant {t})")
        if data["path"] is not None and data["path"] != uri.split("?", 1)[0]:
            con.print(f"  canonical path: {data['path']}", markup=False)
        if data["reason"]:
            con.print(f"  request rejected: {data['reason']}", markup=False)
        con.print(f"  roles: {', '.join(data['roles']) or '(none)'}", markup=False)
        rule = data["rule"]
        con.print(f"  rule:  {', '.join(rule) if rule else '(no rule applies: default deny)'}", markup=False)
        con.print(f"  effect: {data['effect']}", markup=False)
        con.print(f"  policy: {data['policy']}", markup=False)

    result(data, human)


@authz_app.command("test")
def test_cmd(
    table: Annotated[Path, typer.Argument(help="CSV table: user,tenant,method,uri,expect (allow|deny)")],
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Check a table of expected decisions against the policy; exit 1 on any mismatch."""
    from edgesec.authz.identity import role_clash
    from edgesec.authz.policy import load_test_table
    from edgesec.authz.request import RequestRejected, canonical_path

    s = state().config().settings.authz
    cases = load_test_table(table)
    engine, files = _engine(s, policy_dir)
    rows: list[dict[str, Any]] = []
    for c in cases:
        try:
            path: str | None = canonical_path(c.uri.split("?", 1)[0])
        except RequestRejected:
            path = None
        if path is None or role_clash(c.user, engine.role_names) is not None:
            got, rule = False, None  # /auth refuses these before the policy is asked
        else:
            d = engine.decide(c.user, c.tenant, path, c.method)
            got, rule = d.allowed, d.rule
        rows.append(
            {
                "line": c.line,
                "user": c.user,
                "tenant": c.tenant,
                "method": c.method,
                "uri": c.uri,
                "expect": "allow" if c.expect else "deny",
                "got": "allow" if got else "deny",
                "ok": got == c.expect,
                "rule": list(rule) if rule else None,
            }
        )
    failed = [r for r in rows if not r["ok"]]

    def human(con: Console) -> None:
        tbl = Table(title=f"{table} against {files.policy}")
        for col in ("line", "user", "tenant", "method", "uri", "expect", "got", ""):
            tbl.add_column(col)
        for r in rows:
            mark = "[green]ok[/]" if r["ok"] else "[red]MISMATCH[/]"
            tbl.add_row(
                str(r["line"]), r["user"], r["tenant"], r["method"], r["uri"], r["expect"], r["got"], mark
            )
        con.print(tbl)
        for r in failed:
            why = ", ".join(r["rule"]) if r["rule"] else "no rule applies (default deny)"
            con.print(f"line {r['line']}: expected {r['expect']}, got {r['got']}: {why}", markup=False)
        con.print(
            f"{len(rows) - len(failed)} of {len(rows)} as expected"
            + (f", {len(failed)} mismatched" if failed else "")
        )

    result(
        {"table": str(table), "policy": str(files.policy), "cases": rows, "failed": len(failed)},
        human,
        exit_code=1 if failed else 0,
    )


@authz_app.command()
def lint(policy_dir: PolicyDirOpt = None) -> None:
    """Find rules that can never match, shadowed rules and users whose roles grant nothing."""
    from edgesec.authz.lint import lint_policy

    s = state().config().settings.authz
    engine, files = _engine(s, policy_dir)  # the policy must load at all first
    findings = lint_policy(files.policy)
    errors = [f for f in findings if f.level == "error"]

    def human(con: Console) -> None:
        for f in findings:
            style = "red" if f.level == "error" else "yellow"
            con.print(f"[{style}]{f.level}[/] {files.policy}:{f.line}: {f.code}: ", end="")
            con.print(f.message, markup=False)
        con.print(
            f"{len(findings)} finding(s), {len(errors)} error(s) in {engine.rule_count} rules of {files.policy}",
            markup=False,
        )

    result(
        {
            "policy": str(files.policy),
            "rules": engine.rule_count,
            "findings": [f.to_json() for f in findings],
        },
        human,
        exit_code=1 if errors else 0,
    )


@policy_app.command("init")
def policy_init(
    directory: Annotated[Path, typer.Argument(help="directory to create the site policy in")],
    example: Annotated[str, typer.Option(help="example to start from: bank, clinic or factory")] = "bank",
) -> None:
    """Copy the shipped model and an example policy (with its test table) into DIR."""
    from edgesec.authz.policy import MODEL_FILE, POLICY_FILE, TESTS_FILE

    if example not in ("bank", "clinic", "factory"):
        raise UsageError(f"--example must be bank, clinic or factory, not {example!r}")
    src = policies_root() / "casbin"
    plan = {
        MODEL_FILE: src / MODEL_FILE,
        POLICY_FILE: src / f"{example}.csv",
        TESTS_FILE: src / f"{example}.tests.csv",
    }
    directory = directory.expanduser()
    existing = [n for n in plan if (directory / n).exists()]
    if existing:
        raise AlreadyExists(
            f"{directory} already holds {', '.join(existing)}; nothing was changed",
            hint="choose an empty directory",
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in plan.items():
        data = read_input_file(source, what="shipped policy file")
        # 0644: the service account reads it; exclusive: never replace a file created meanwhile.
        atomic_write(directory / name, data, mode=0o644, exclusive=True)
    written = [str(directory / n) for n in plan]
    result(
        {"directory": str(directory), "example": example, "files": written},
        f"wrote {', '.join(written)}\nthe service enforces it once the site config names it: "
        f'[authz] policy_dir = "{directory.absolute()}" (`edgesec config init --policy-dir` writes that)',
    )


def _site(
    server_name: str,
    backend: str,
    cert: Path,
    key: Path,
    ca: Path | None,
    listen: str,
    trusted_ip: list[str] | None,
    crl: Path | None = None,
) -> Any:
    from edgesec.authz.gen import ProxySite

    cfg = state().config()
    tdir = trust_dir_of(cfg)
    kwargs: dict[str, Any] = dict(
        server_name=server_name,
        backend=backend.rstrip("/"),
        ca_file=str((ca or tdir / "ca-bundle.pem").absolute()),
        cert_file=str(cert.absolute()),
        key_file=str(key.absolute()),
        listen=listen,
        crl_file=str(crl.absolute()) if crl else None,
    )
    if trusted_ip:
        kwargs["trusted_ips"] = tuple(trusted_ip)
    return ProxySite.from_settings(cfg.settings.authz, **kwargs)


def _write_or_print(out: Path | None, files: dict[str, str]) -> None:
    if out is None:
        text = "\n".join(files.values())
        result({"files": files}, lambda con: con.out(text, end="", highlight=False))
        return
    targets: dict[Path, str] = {}
    if len(files) == 1:
        targets[out] = next(iter(files.values()))
    else:
        for name, text in files.items():
            targets[out / name] = text
    clash = [str(p) for p in targets if p.exists()]
    if clash:
        raise AlreadyExists(
            f"refusing to overwrite {', '.join(clash)}", hint="remove it or choose another --out"
        )
    for p, text in targets.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, text.encode(), mode=0o644, exclusive=True)
    result({"written": [str(p) for p in targets]}, "wrote " + ", ".join(str(p) for p in targets))


ServerName = Annotated[str, typer.Option("--server-name", help="host name clients use for the app")]
Backend = Annotated[str, typer.Option("--backend", help="the app's upstream, http://host:port")]
CertOpt = Annotated[Path, typer.Option("--cert", help="the proxy's server certificate (PEM)")]
KeyOpt = Annotated[Path, typer.Option("--key", help="the proxy's server key (PEM)")]
CaOpt = Annotated[
    Path | None, typer.Option("--ca", help="client CA bundle (default: the trust bundle's ca-bundle.pem)")
]
ListenOpt = Annotated[str, typer.Option("--listen", help="HOST:PORT the proxy listens on")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="write here instead of stdout (never overwrites)")]


@gen_app.command("traefik")
def gen_traefik(
    server_name: ServerName,
    backend: Backend,
    cert: CertOpt,
    key: KeyOpt,
    ca: CaOpt = None,
    listen: ListenOpt = "0.0.0.0:443",
    trusted_ip: Annotated[
        list[str] | None, typer.Option("--trusted-ip", help="peer allowed to set X-Forwarded-* (repeat)")
    ] = None,
    dynamic_path: Annotated[
        str | None,
        typer.Option(
            "--dynamic-path",
            help="path of the dynamic file, as the static config names it "
            "(default: edgesec-dynamic.yml in --out, else /etc/traefik/dynamic/edgesec-dynamic.yml)",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="directory for edgesec-dynamic.yml and edgesec-static.yml")
    ] = None,
) -> None:
    """Traefik v3 dynamic config (forwardAuth, passTLSClientCert, mTLS options) and its static snippet."""
    from edgesec.authz.gen import (
        TRAEFIK_DYNAMIC,
        TRAEFIK_STATIC,
        render_traefik_dynamic,
        render_traefik_static,
    )

    site = _site(server_name, backend, cert, key, ca, listen, trusted_ip)
    if dynamic_path is None:
        # The static config names the file this command writes (not a different name beside it).
        base = out.absolute() if out is not None else Path("/etc/traefik/dynamic")
        dynamic_path = str(base / TRAEFIK_DYNAMIC)
    _write_or_print(
        out,
        {
            TRAEFIK_DYNAMIC: render_traefik_dynamic(site),
            TRAEFIK_STATIC: render_traefik_static(site, dynamic_path),
        },
    )


@gen_app.command("caddy")
def gen_caddy(
    server_name: ServerName,
    backend: Backend,
    cert: CertOpt,
    key: KeyOpt,
    ca: CaOpt = None,
    listen: ListenOpt = "0.0.0.0:443",
    out: OutOpt = None,
) -> None:
    """A Caddyfile with mTLS and forward_auth that strips client-sent identity headers."""
    from edgesec.authz.gen import render_caddy

    _write_or_print(
        # Every certificate of the bundle inline: Caddy 2.6 reads only the first one of a file.
        out,
        {"Caddyfile": render_caddy(_site(server_name, backend, cert, key, ca, listen, None).with_ca_certs())},
    )


@gen_app.command("nginx")
def gen_nginx(
    server_name: ServerName,
    backend: Backend,
    cert: CertOpt,
    key: KeyOpt,
    ca: CaOpt = None,
    crl: Annotated[
        Path | None, typer.Option("--crl", help="CRL file for ssl_crl (default: none; authz checks the CRL)")
    ] = None,
    listen: ListenOpt = "0.0.0.0:443",
    out: OutOpt = None,
) -> None:
    """An nginx server block with mTLS and auth_request."""
    from edgesec.authz.gen import render_nginx

    site = _site(server_name, backend, cert, key, ca, listen, None, crl)
    _write_or_print(out, {"edgesec.conf": render_nginx(site)})
