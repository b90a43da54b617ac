"""``edgesec demo`` and ``edgesec site ...`` (systemd units for replicas, audit results for Elasticsearch)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgesec._console import info, result, state, warn
from edgesec._fs import atomic_write, read_input_file
from edgesec.errors import AlreadyExists, InputError, UsageError

site_app = typer.Typer(
    help="Site-wide pieces: systemd units for ForwardAuth replicas, audit results for Elasticsearch.",
    no_args_is_help=True,
)


schedule_app = typer.Typer(help="Install the periodic jobs (nightly audit and others).", no_args_is_help=True)


def mount(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.add_typer(site_app, name="site")


def mount_schedule(app: typer.Typer) -> None:
    """``edgesec schedule``, mounted right after the checks' commands so ``edgesec --help`` lists it where
    it always stood."""
    app.add_typer(schedule_app, name="schedule")


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Empty directory to build the example site in.")],
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the services up until Ctrl-C (then stop them).")
    ] = False,
) -> None:
    """Build and run a complete example site in DIR, audit it, print what the audit found, stop it."""
    from edgesec.deploy.demo import DemoSite, expected_host_findings, site_problems, which_missing

    missing = which_missing()
    if missing:
        raise UsageError(
            f"the demo needs {', '.join(missing)} on PATH", hint="apt install " + " ".join(missing)
        )
    directory = directory.expanduser().absolute()
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--dir {directory} is a file, not a directory")
    if directory.exists() and any(directory.iterdir()):
        raise AlreadyExists(
            f"{directory} is not empty; the demo builds in an empty directory", hint="use $(mktemp -d)"
        )
    site = DemoSite(directory)
    info(f"building the demo site in {directory} (PKI, policy, proxy and pipeline configs, signed model)")
    site.build()
    smoke: list[dict[str, Any]] = []
    try:
        info(
            "starting: demo app, 2 ForwardAuth replicas, nginx (mTLS + load balancer), Caddy (mTLS), syslog-ng"
        )
        site.start()
        for proxy in ("nginx", "caddy"):
            for user, method, path in (
                ("alice", "POST", "/v1/chat-messages"),
                ("alice", "GET", "/console/api/apps"),
                ("dave", "GET", "/audit/logins"),
                ("dave", "DELETE", "/audit/logins"),
            ):
                r = site.request(proxy, method, path, user=user, body=b"{}" if method == "POST" else b"")
                seen = r.json().get("identity", {}).get("X-User-ID") if r.status == 200 else None
                smoke.append(
                    {
                        "proxy": proxy,
                        "user": user,
                        "method": method,
                        "path": path,
                        "status": r.status,
                        "app_saw": seen,
                    }
                )
        cp = site.checkpoint()
        info(f"signed trail checkpoint at record {cp['seq']}")
        info("running: edgesec audit --profile bank --report html --report json")
        code, res = site.audit()
        if keep_running:
            _wait_for_interrupt(site)
    finally:
        site.stop()
    html = site.html_report()
    host = expected_host_findings(res, directory, site.ports)
    problems = site_problems(res, directory, site.ports)
    data = {
        "dir": str(directory),
        "config": str(site.config),
        "report_html": str(html),
        "report_json": str(max(site.reports.glob("*.json"), key=lambda q: q.stat().st_mtime)),
        "audit_exit_code": code,
        "verdict": res["summary"]["verdict"],
        "requests": smoke,
        "expected_host_findings": [{"id": c["id"], "status": c["status"]} for c in host],
        "site_problems": [{"id": c["id"], "status": c["status"]} for c in problems],
        "ports": site.ports,
    }

    def human(con: Console) -> None:
        con.print("requests through the proxies (mutual TLS, ForwardAuth via the replicas):", markup=False)
        for s in smoke:
            con.print(
                f"  {s['proxy']:5} {s['user']:5} {s['method']:6} {s['path']:22} -> {s['status']}"
                + (f" (the app saw user {s['app_saw'][0]})" if s["app_saw"] else ""),
                markup=False,
            )
        con.print(f"audit report: {html}", markup=False)
        con.print(f"verdict: {res['summary']['verdict'].upper()} (exit {code})", markup=False)
        if host:
            con.print(
                "expected on this machine (host-level findings, and other services running here):",
                markup=False,
            )
            for c in host:
                msg = next((f["message"] for f in c["findings"] if f["status"] == c["status"]), "")
                con.print(f"  {c['status']:5} {c['id']}: {msg}", markup=False)
        if problems:
            con.print("site problems (not expected):", markup=False, style="red")
            for c in problems:
                msg = next((f["message"] for f in c["findings"] if f["status"] == c["status"]), "")
                con.print(f"  {c['status']:5} {c['id']}: {msg}", markup=False)
        else:
            con.print("every site check (pki, authz, auditing, models) passes", markup=False)
        con.print(
            f"everything was stopped; the site stays in {directory} (config: {site.config})", markup=False
        )

    result(data, human, exit_code=1 if problems else 0)


def _wait_for_interrupt(site: Any) -> None:
    info(f"services are up (ports in {site.dir / 'run' / 'ports.json'}); Ctrl-C stops them")
    done = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


@site_app.command("units")
def units_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for edgesec-authz@.service and its sysusers file.")
    ],
    executable: Annotated[
        str | None,
        typer.Option("--executable", help="Absolute path of the edgesec command (default: the one on PATH)."),
    ] = None,
    user: Annotated[str, typer.Option("--user", help="Dedicated service account.")] = "edgesec-authz",
    host: Annotated[str, typer.Option("--host", help="Address each replica listens on.")] = "127.0.0.1",
) -> None:
    """Hardened systemd template unit for ForwardAuth replicas (one instance per port), its account and
    the tmpfiles.d entry that shares the trail with it; the audit pipeline's and Traefik's units."""
    import os
    import shutil

    from edgesec.deploy.units import UnitOptions, render_units

    if executable is None:
        found = shutil.which("edgesec")
        if found is None:
            raise UsageError(
                "no edgesec command on PATH to name in ExecStart", hint="give --executable /path/to/edgesec"
            )
        executable = str(Path(found).absolute())
    elif not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        raise InputError(f"--executable {executable} is not an executable file on this host")
    if executable.startswith(("/root/", "/home/", "/run/user/")):
        warn(
            f"{executable} is under a home directory, which the unit hides (ProtectHome=yes): install "
            "edgesec outside home directories (e.g. a virtual environment in /opt/edgesec)"
        )
    cfg = state().config()
    s = cfg.settings
    opts = UnitOptions(
        executable=executable,
        user=user,
        group=user,
        config=str(cfg.path.absolute()) if cfg.path else "/etc/edgesec/edgesec.toml",
        home=str(cfg.home),
        trail_dir=str(cfg.path_in_home(s.auditing.trail_dir, "audit")),
        ca_store=str(cfg.path_in_home(s.pki.store_dir, "pki")),
        host=host,
        syslog_ng=str(Path(shutil.which("syslog-ng") or "/usr/sbin/syslog-ng").absolute()),
        traefik=str(Path(shutil.which("traefik") or "/usr/local/bin/traefik").absolute()),
    )
    traefik_real = os.path.realpath(opts.traefik)
    if traefik_real.startswith(("/root/", "/home/", "/run/user/")):
        warn(
            f"{opts.traefik} is {traefik_real}, under a home directory, which edgesec-traefik.service hides "
            "(ProtectHome=yes): install Traefik outside home directories (e.g. /usr/local/bin/traefik)"
        )
    files = render_units(opts)
    written = _write_new(out, files)
    result(
        {"files": written, "executable": executable},
        "wrote "
        + ", ".join(written)
        + f"\ncheck it: systemd-analyze verify {Path(written[0]).with_name('edgesec-authz@9101.service')}\n"
        + f"then: systemd-sysusers {written[1]} && systemd-tmpfiles --create {written[2]}",
    )


def _write_new(out: Path, files: dict[str, str]) -> list[str]:
    out = out.expanduser()
    clash = [str(out / n) for n in files if (out / n).exists()]
    if clash:
        raise AlreadyExists(
            f"refusing to overwrite {', '.join(clash)}", hint="remove it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        atomic_write(out / name, text, mode=0o644, exclusive=True)
        written.append(str(out / name))
    return written


@site_app.command("results-template")
def results_template_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the template here (never overwrites).")
    ] = None,
) -> None:
    """The Elasticsearch index template for audit results (PUT /_index_template/<prefix>-results)."""
    from edgesec.auditing.results_template import render_template

    prefix = state().config().settings.auditing.index_prefix
    text = json.dumps(render_template(prefix), indent=2, sort_keys=True) + "\n"
    if out is None:
        result(
            {"name": f"{prefix}-results", "template": json.loads(text)},
            lambda con: con.out(text, end="", highlight=False),
        )
        return
    written = _write_new(out.parent if str(out.parent) else Path("."), {out.name: text})
    result(
        {"name": f"{prefix}-results", "written": written},
        f"wrote {written[0]} (PUT /_index_template/{prefix}-results)",
    )


@site_app.command("results-docs")
def results_docs_cmd(
    result_file: Annotated[Path, typer.Argument(help="A JSON audit result (edgesec audit --report json).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the NDJSON bulk body here.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site name (default: [site] name).")] = None,
) -> None:
    """One Elasticsearch document per finding of an audit result, as a _bulk body (create actions)."""
    from edgesec.auditing.results_template import bulk_body

    cfg = state().config()
    raw = read_input_file(result_file, what="audit result")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{result_file}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{result_file}: not an edgesec audit result")
    body = bulk_body(doc, site=site or cfg.settings.site.name, prefix=cfg.settings.auditing.index_prefix)
    n = body.count("\n") // 2
    if out is None:
        result({"documents": n, "bulk": body}, lambda con: con.out(body, end="", highlight=False))
        return
    written = _write_new(out.parent, {out.name: body})
    result({"documents": n, "written": written}, f"wrote {n} documents to {written[0]} (POST /_bulk)")


@schedule_app.command("install")
def schedule_install(
    systemd: Annotated[bool, typer.Option("--systemd", help="Write systemd timers and services.")] = False,
    cron: Annotated[bool, typer.Option("--cron", help="Write a cron.d file.")] = False,
    directory: Annotated[
        str | None,
        typer.Option("--dir", help="Where to write (default /etc/systemd/system or /etc/cron.d)."),
    ] = None,
) -> None:
    """Install every periodic job the config enables (nightly audit, and the parts' jobs)."""
    from edgesec.deploy.schedule import install_jobs

    if systemd == cron:
        raise UsageError("give exactly one of --systemd or --cron")
    doc, lines = install_jobs(state().config(), systemd=systemd, directory=directory)
    result(doc, "\n".join(lines))
