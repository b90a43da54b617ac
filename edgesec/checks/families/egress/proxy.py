"""``egress.proxy``: proxy variables anywhere a process could pick them up (environment, systemd units,
apt, docker, running processes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from edgesec.checks.families.egress._base import (
    EGRESS_CONTROLS,
    ENVIRON_LIMIT,
    EgressCheck,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity

# Any variable named like a proxy: http(s)/ftp/all/rsync/grpc/socks_proxy, PIP_PROXY, npm_config_(https_)proxy,
# YARN_HTTPS_PROXY, ... -- but not no_proxy (a list of exceptions, not a way out).
_PROXY_NAME = re.compile(r"(?i)^(?![a-z0-9_]*no_proxy$)[a-z0-9_]*proxy$")
_ASSIGN_RE = re.compile(
    r"""(?<![A-Za-z0-9_])(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?=(?P<value>"[^"]*"|'[^']*'|[^\s"';]*))""",
    re.MULTILINE,
)
_APT_PROXY_RE = re.compile(r"""Acquire::(?:https?|ftp)::Proxy\s+"([^"]+)"\s*;""", re.IGNORECASE)
# Docker daemon ("proxies": {"http-proxy": ...}) and client config ("httpProxy"): containers inherit these.
_JSON_PROXY_RE = re.compile(r'"((?:https?|ftp|all)[-_]?proxy)"\s*:\s*"([^"]+)"', re.IGNORECASE)


def redact(value: str) -> str:
    """Hide credentials in a proxy URL (``http://user:pass@host`` -> ``http://***@host``)."""
    return re.sub(r"(?<=//)[^/@\s]+@", "***@", value)


def _proxies_in_environ(env: dict[str, str]) -> dict[str, str]:
    return {k: redact(v) for k, v in env.items() if _PROXY_NAME.match(k) and v.strip()}


class ProxyEnv(EgressCheck):
    """Proxy variables anywhere a process could pick them up."""

    meta = CheckMeta(
        id="egress.proxy",
        title="No proxy is configured for outbound traffic",
        severity=Severity.HIGH,
        rationale="A proxy variable gives a process a way out even when routing and firewall are closed to "
        "it directly; model servers and hub libraries honour HTTP(S)_PROXY and will fetch or report through it.",
        remediation="Remove the proxy variables from the environment, systemd units (Environment=, drop-ins), "
        "/etc/environment, profile scripts and apt configuration, then restart the processes listed.",
        controls=EGRESS_CONTROLS,
    )

    def _files(self, ctx: CheckContext) -> list[str]:
        pats = [
            "/etc/environment",
            "/etc/profile",
            "/etc/profile.d/*.sh",
            "/etc/bash.bashrc",
            "/etc/systemd/system.conf",
            "/etc/systemd/system.conf.d/*.conf",
            "/etc/systemd/system/*.service",
            "/etc/systemd/system/*.service.d/*.conf",
            "/etc/systemd/system/*/*.service",
            "/lib/systemd/system/*.service.d/*.conf",
            "/run/systemd/system/*.service.d/*.conf",
            "/etc/default/*",
            "/etc/apt/apt.conf",
            "/etc/apt/apt.conf.d/*",
            "/etc/environment.d/*.conf",
            "/etc/docker/daemon.json",
            "/root/.docker/config.json",
            "/etc/systemd/system/docker.service.d/*.conf",
            "/etc/containerd/config.toml",
        ]
        out: list[str] = []
        for p in pats:
            out.extend(ctx.system.glob(p) if "*" in p else [p])
        return sorted(set(out))

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        hits = 0
        scanned_files = 0
        unreadable_files: list[str] = []
        for path in self._files(ctx):
            text = ctx.system.read_text(path, 1 << 18)
            if text is None:
                st = ctx.system.stat(path)
                if st is not None and not st.is_dir:
                    unreadable_files.append(path)  # there, but not read: not shown free of proxies
                continue
            scanned_files += 1
            found = {
                m.group("name"): redact(m.group("value").strip("'\""))
                for m in _ASSIGN_RE.finditer(text)
                if _PROXY_NAME.match(m.group("name"))
            }
            found = {k: v for k, v in found.items() if v}
            for m in _APT_PROXY_RE.finditer(text):
                found["Acquire::Proxy"] = redact(m.group(1))
            if path.endswith(".json"):
                for m in _JSON_PROXY_RE.finditer(text):
                    found[m.group(1)] = redact(m.group(2))
            if found:
                hits += 1
                yield self.failed(
                    f"{path} sets {', '.join(sorted(found))}", resource=path, evidence={"variables": found}
                )
        own = _proxies_in_environ(ctx.system.environ())
        if own:
            hits += 1
            yield self.failed(
                f"the auditing process's environment has {', '.join(sorted(own))}",
                resource="environment",
                evidence={"variables": own},
            )
        procs = 0
        unreadable = 0
        for env_path in ctx.system.glob("/proc/[0-9]*/environ"):
            pid = env_path.split("/")[2]
            raw = ctx.system.read_text(env_path, ENVIRON_LIMIT + 1)
            if raw is None:
                # Gone since the listing, or another user's process read without root.
                unreadable += ctx.system.stat(f"/proc/{pid}") is not None
                continue
            procs += 1
            if len(raw) > ENVIRON_LIMIT:
                hits += 1
                comm = (ctx.system.read_text(f"/proc/{pid}/comm") or "?").strip()
                yield self.warned(
                    f"running process {pid} ({comm}) has an environment over {ENVIRON_LIMIT >> 20} MiB: "
                    "not read to the end, so it cannot be shown free of proxy variables",
                    resource=f"pid {pid} ({comm})",
                    evidence={"pid": int(pid), "comm": comm, "read_bytes": ENVIRON_LIMIT},
                )
            env = dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)
            found = _proxies_in_environ(env)
            if found:
                hits += 1
                comm = (ctx.system.read_text(f"/proc/{pid}/comm") or "?").strip()
                yield self.failed(
                    f"running process {pid} ({comm}) has {', '.join(sorted(found))} in its environment",
                    resource=f"pid {pid} ({comm})",
                    evidence={"pid": int(pid), "comm": comm, "variables": found},
                )
        stats = {
            "files_scanned": scanned_files,
            "processes_scanned": procs,
            "processes_unreadable": unreadable,
        }
        if unreadable_files:
            hits += 1
            yield self.warned(
                f"{len(unreadable_files)} configuration file(s) could not be read: {', '.join(unreadable_files[:3])}",
                evidence={"unreadable": unreadable_files},
            )
        if unreadable:
            hint = "; run the audit as root" if ctx.system.euid() != 0 else ""
            yield self.warned(
                f"the environment of {unreadable} running processes could not be read{hint}",
                evidence={"stats": stats},
            )
        elif not hits:
            yield self.passed("no proxy variable found", evidence={"stats": stats})
