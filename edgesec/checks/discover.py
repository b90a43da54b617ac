"""Find what a site runs, through the check probe: proxy configs, syslog-ng configs, edgesec's own CLI.

Configs are taken from the running processes first (``nginx -c``, ``caddy run --config``, ``traefik
--configFile``, ``syslog-ng -f``): what runs is what matters, not what sits in ``/etc``. A check may add
paths through profile parameters. Every read goes through ``ctx.system`` so a recorded or built system
answers the same questions.
"""

from __future__ import annotations

import posixpath
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgesec.checks.interface import CheckContext

_DEFAULTS = {
    "nginx": "/etc/nginx/nginx.conf",
    "caddy": "/etc/caddy/Caddyfile",
    "traefik": "/etc/traefik/traefik.yml",
    "syslog-ng": "/etc/syslog-ng/syslog-ng.conf",
}


@dataclass(frozen=True)
class Running:
    """A process of interest and the config file it runs with."""

    kind: str
    pid: int
    config: str
    argv: tuple[str, ...]


def _argv(ctx: CheckContext, pid: str) -> list[str]:
    raw = ctx.system.read_text(f"/proc/{pid}/cmdline", 65536) or ""
    parts = [p for p in raw.split("\0") if p]
    # nginx rewrites its title into one string: "nginx: master process /usr/sbin/nginx -c /x.conf".
    if len(parts) == 1 and parts[0].startswith("nginx: master process"):
        parts = ["nginx", *parts[0].split()[3:]]
    return parts


def _opt(argv: Sequence[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a[len(n) + 1 :]
    return None


def _traefik_found(ctx: CheckContext, pid: str, cwd: str) -> str:
    """The static config a Traefik started without ``--configFile`` loads (and then it ignores its flags):
    the first of these that exists, as Traefik 3 searches, with the process's own environment and working
    directory (an unset variable expands to nothing, as in Traefik). None: its flags configure it, and the
    default path (absent) is what the check reports it cannot judge."""
    raw = ctx.system.read_text(f"/proc/{pid}/environ", 65536) or ""
    env = dict(v.split("=", 1) for v in raw.split("\0") if "=" in v)
    bases = (
        "/etc/traefik/traefik",
        f"{env.get('XDG_CONFIG_HOME', '')}/traefik",
        f"{env.get('HOME', '')}/.config/traefik",
        posixpath.join(cwd, "traefik"),
    )
    for b in bases:
        for ext in ("toml", "yaml", "yml"):
            p = posixpath.normpath(f"{b}.{ext}")
            if ctx.system.stat(p) is not None:
                return p
    return _DEFAULTS["traefik"]


def running(ctx: CheckContext) -> list[Running]:
    """nginx masters, caddy, traefik and syslog-ng processes with their config paths."""
    out: list[Running] = []
    for path in ctx.system.glob("/proc/[0-9]*/cmdline"):
        pid = path.split("/")[2]
        argv = _argv(ctx, pid)
        if not argv:
            continue
        exe = posixpath.basename(argv[0])
        cwd = ctx.system.readlink(f"/proc/{pid}/cwd") or "/"
        conf: str | None = None
        kind = ""
        if exe == "nginx" and (len(argv) == 1 or "worker" not in argv[1:2]):
            kind = "nginx"
            conf = _opt(argv, "-c") or _DEFAULTS["nginx"]
        elif exe == "caddy" and len(argv) > 1 and argv[1] in ("run", "start"):
            kind = "caddy"
            conf = _opt(argv, "--config") or _DEFAULTS["caddy"]
        elif exe == "traefik":
            kind = "traefik"
            conf = _opt(argv, "--configFile", "--configfile") or _traefik_found(ctx, pid, cwd)
        elif exe == "syslog-ng":
            kind = "syslog-ng"
            conf = _opt(argv, "-f", "--cfgfile") or _DEFAULTS["syslog-ng"]
        if kind and conf is not None:
            if not conf.startswith("/"):
                conf = posixpath.normpath(posixpath.join(cwd, conf))
            out.append(Running(kind, int(pid), conf, tuple(argv)))
    return sorted(out, key=lambda r: (r.kind, r.pid))


def authz_replicas(ctx: CheckContext) -> list[Running]:
    """Running ``edgesec authz serve`` processes on loopback; ``config`` holds their ``host:port``."""
    import ipaddress

    s = ctx.config.settings.authz
    out: list[Running] = []
    for path in ctx.system.glob("/proc/[0-9]*/cmdline"):
        pid = path.split("/")[2]
        argv = _argv(ctx, pid)
        words = [posixpath.basename(a) for a in argv[:4]]
        if "edgesec" not in words or "authz" not in argv or "serve" not in argv:
            continue
        host = _opt(argv, "--host") or s.host
        port = _opt(argv, "--port") or str(s.port)
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listener is asked on loopback
            host = "127.0.0.1"
        try:
            if not ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            if host != "localhost":
                continue
        if port.isdigit():
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            out.append(Running("authz", int(pid), where, tuple(argv)))
    return sorted(out, key=lambda r: r.pid)


def configs(ctx: CheckContext, kind: str, check_id: str) -> list[tuple[str, str]]:
    """``(config path, where it came from)`` of every ``kind`` process, plus the profile's ``configs``."""
    seen: dict[str, str] = {}
    for r in running(ctx):
        if r.kind == kind:
            seen.setdefault(r.config, f"pid {r.pid}")
    for p in ctx.param(check_id, f"{kind}_configs", []) or []:
        seen.setdefault(str(p), "profile")
    return list(seen.items())


def edgesec_argv(ctx: CheckContext, *args: str) -> list[str]:
    """Run edgesec's own CLI (another part's public command) with this audit's config and home."""
    argv = [sys.executable, "-m", "edgesec", "--json"]
    if ctx.config.path is not None:
        argv += ["--config", str(ctx.config.path)]
    argv += ["--home", str(ctx.config.home), *args]
    return argv


def cli_json(ctx: CheckContext, *args: str, timeout: float = 60.0) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``edgesec --json ARGS`` through the probe: ``(exit code, parsed document, stderr tail)``."""
    import json

    r = ctx.system.run(edgesec_argv(ctx, *args), timeout=timeout)
    doc: dict[str, Any] | None = None
    try:
        parsed = json.loads(r.stdout) if r.stdout.strip() else None
        doc = parsed if isinstance(parsed, dict) else None
    except ValueError:
        doc = None
    return r.returncode, doc, (r.stderr or "")[-600:]


def trust_dir(ctx: CheckContext) -> str:
    """The published trust bundle directory authz reads (authz.trust_dir, pki.trust_bundle_dir, home)."""
    s = ctx.config.settings
    return str(ctx.config.path_in_home(s.authz.trust_dir or s.pki.trust_bundle_dir, "trust"))
