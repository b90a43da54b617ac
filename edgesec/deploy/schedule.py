"""``edgesec schedule install``: hardened systemd timers/services or crontab lines for periodic jobs.

The jobs are deploy's knowledge (the parts below never import this module): the nightly audit and each
part's jobs when its config enables them: CRL renewal when a CA store
exists (``pki crl``, daily), signed trail checkpoints when ``[auditing] checkpoint_signer`` or
``checkpoint_cert``/``_key`` are set (hourly), and shipping when ``[auditing] elasticsearch_urls`` is set
and no syslog output already carries the trail to the syslog-ng pipeline that ships it (every 5 minutes,
with ``[auditing] elasticsearch_cert``/``_key`` for mutual TLS). Command lines name the config and home
by absolute path; cron output goes to syslog (``logger -t edgesec-<job>``). Files are never overwritten
with different content: a changed existing unit is refused.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgesec._fs import atomic_write
from edgesec.config import LoadedConfig
from edgesec.errors import AlreadyExists, InputError, OperationFailed

JOB_PARTS: tuple[str, ...] = ("pki", "auditing", "authz")


@dataclass(frozen=True)
class PeriodicJob:
    """One periodic job: ``args`` are edgesec arguments (after the program name)."""

    name: str  # unit name suffix: edgesec-<name>.service
    description: str
    args: tuple[str, ...]
    on_calendar: str  # systemd OnCalendar=
    cron: str  # the five cron time fields
    # Extra capabilities the job needs beyond a read-only view (e.g. CAP_NET_ADMIN to read nft rules).
    capabilities: tuple[str, ...] = ()
    writable: tuple[str, ...] = field(default_factory=tuple)
    # systemd RandomizedDelaySec=: well under the period, so runs never pile up or skip.
    random_delay: str = "10min"


def audit_job(cfg: LoadedConfig) -> PeriodicJob:
    home = str(cfg.home)
    reports = str(cfg.home / "checks" / "reports")
    prom = cfg.settings.checks.prom_textfile or str(cfg.home / "checks" / "reports" / "edgesec.prom")
    args = ("--quiet", "audit", "--report", "json", "--report", "prom", "--out", reports)
    return PeriodicJob(
        name="audit",
        description="edgesec nightly compliance audit",
        args=(*args, "--prom-textfile", prom),
        on_calendar=cfg.settings.checks.schedule_on_calendar,
        cron=cfg.settings.checks.schedule_cron,
        # nft/iptables listing needs CAP_NET_ADMIN; /proc/<pid>/environ of other users needs CAP_SYS_PTRACE;
        # reading root-only files (keys' modes, unit files) needs CAP_DAC_READ_SEARCH; `auditctl -s/-l`
        # (the audit status and rules, read only) needs CAP_AUDIT_CONTROL.
        capabilities=("CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_AUDIT_CONTROL"),
        writable=(home, str(Path(prom).parent)),
    )


def default_part_jobs(cfg: LoadedConfig, part: str) -> list[PeriodicJob]:
    """The periodic jobs of a part, enabled by its config."""
    st = cfg.settings
    home = str(cfg.home)
    if part == "pki":
        store = cfg.path_in_home(st.pki.store_dir, "pki")
        if not store.is_dir():
            return []  # no CA here: nothing to renew
        trust = str(cfg.path_in_home(st.pki.trust_bundle_dir, "trust"))
        # Daily, well inside the CRL's nextUpdate window, so an expired CRL never locks clients out.
        return [
            PeriodicJob(
                name="pki-crl",
                description="edgesec CRL renewal and trust bundle publication",
                args=("--quiet", "pki", "crl"),
                on_calendar="*-*-* 03:10:00",
                cron="10 3 * * *",
                writable=(home, str(store), trust),
            )
        ]
    if part == "auditing":
        jobs = []
        trail = str(cfg.path_in_home(st.auditing.trail_dir, "audit"))
        a = st.auditing
        if a.checkpoint_signer or (a.checkpoint_cert and a.checkpoint_key):
            # A signer named in the CA store is read through pki, which locks its store.
            ca_store = str(cfg.path_in_home(st.pki.store_dir, "pki"))
            jobs.append(
                PeriodicJob(
                    name="trail-checkpoint",
                    description="edgesec signed audit-trail checkpoint",
                    args=("--quiet", "auditlog", "checkpoint"),
                    on_calendar="hourly",
                    cron="5 * * * *",
                    writable=(home, trail, ca_store) if a.checkpoint_signer else (home, trail),
                    random_delay="5min",
                )
            )
        # With syslog output on, every record already goes to the syslog-ng pipeline, which ships it:
        # a second shipper would only send each record twice.
        if a.elasticsearch_urls and a.syslog == "off":
            jobs.append(
                PeriodicJob(
                    name="trail-ship",
                    description="edgesec audit-trail shipping to Elasticsearch",
                    args=("--quiet", "auditlog", "ship"),
                    on_calendar="*:0/5",
                    cron="*/5 * * * *",
                    writable=(home, trail),
                    random_delay="1min",
                )
            )
        return jobs
    return []


def all_jobs(cfg: LoadedConfig) -> list[PeriodicJob]:
    jobs = [audit_job(cfg)]
    for part in JOB_PARTS:
        jobs.extend(default_part_jobs(cfg, part))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise OperationFailed(f"two periodic jobs share a name: {names}")
    return jobs


def _exe() -> str:
    found = shutil.which("edgesec")
    return found or f"{sys.executable} -m edgesec"


def _cmdline(cfg: LoadedConfig, job: PeriodicJob) -> str:
    base = shlex.split(_exe())
    extra = ["--home", str(cfg.home)]
    if cfg.path:
        extra += ["--config", str(cfg.path.absolute())]
    return shlex.join([*base, *extra, *job.args])


def systemd_units(cfg: LoadedConfig, job: PeriodicJob) -> dict[str, str]:
    caps = " ".join(job.capabilities)
    # "-": a path that does not exist yet must not stop the unit from starting.
    writable = " ".join(f"-{w}" for w in sorted(set(job.writable)))
    service = f"""[Unit]
Description={job.description}
After=network.target

[Service]
Type=oneshot
ExecStart={_cmdline(cfg, job)}
Environment=NO_COLOR=1
# Hardening: the job reads the host and writes only its own state. (No MemoryDenyWriteExecute: NVML is
# reached through ctypes/libffi, whose closures need writable+executable pages.)
NoNewPrivileges=yes
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
ProtectSystem=strict
ReadWritePaths={writable}
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=no
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
UMask=0077
Nice=10
IOSchedulingClass=idle
TimeoutStartSec=30min
"""
    timer = f"""[Unit]
Description=Timer: {job.description}

[Timer]
OnCalendar={job.on_calendar}
Persistent=yes
RandomizedDelaySec={job.random_delay}
Unit=edgesec-{job.name}.service

[Install]
WantedBy=timers.target
"""
    return {f"edgesec-{job.name}.service": service, f"edgesec-{job.name}.timer": timer}


def crontab(cfg: LoadedConfig, jobs: list[PeriodicJob]) -> str:
    lines = [
        "# edgesec periodic jobs (generated by 'edgesec schedule install --cron')",
        "SHELL=/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "NO_COLOR=1",
    ]
    for j in jobs:
        lines.append(f"# {j.description}")
        lines.append(f"{j.cron} root {_cmdline(cfg, j)} 2>&1 | logger -t edgesec-{j.name}")
    return "\n".join(lines) + "\n"


def _write_all(files: dict[Path, str]) -> list[str]:
    # Refuse before writing anything, so a refusal leaves the directory as it was.
    for path, text in files.items():
        if path.exists() and path.read_text(errors="replace") != text:
            raise AlreadyExists(
                f"refusing to overwrite {path}: it differs from what edgesec would write",
                hint="remove or move it first if it is an old edgesec file",
            )
    written = []
    for path, text in files.items():
        if not path.exists():
            atomic_write(path, text, mode=0o644)
            written.append(str(path))
    return written


def systemd_verify(paths: list[Path]) -> dict[str, object]:
    """``systemd-analyze verify`` on the units, when the tool exists; its complaints fail the install."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return {"ran": False, "reason": "systemd-analyze is not installed"}
    cp = subprocess.run(
        [tool, "verify", *[str(p) for p in paths]], capture_output=True, text=True, timeout=60, check=False
    )
    # Lines about the host's own units (not ours) are not our problem; ours are named by file.
    ours = [ln for ln in cp.stderr.splitlines() if "edgesec-" in ln]
    return {"ran": True, "returncode": cp.returncode, "problems": ours}


def install_jobs(
    cfg: LoadedConfig, *, systemd: bool, directory: str | None = None
) -> tuple[dict[str, object], list[str]]:
    """Write every periodic job ``cfg`` enables as systemd units (``systemd``) or one cron.d file, into
    ``directory`` (default /etc/systemd/system or /etc/cron.d); the result document and the lines to show."""
    jobs = all_jobs(cfg)
    target = Path(directory or ("/etc/systemd/system" if systemd else "/etc/cron.d"))
    if not target.is_dir():
        raise InputError(f"directory does not exist: {target}")
    files: dict[Path, str] = {}
    if systemd:
        for j in jobs:
            for name, text in systemd_units(cfg, j).items():
                files[target / name] = text
    else:
        files[target / "edgesec"] = crontab(cfg, jobs)
    written = _write_all(files)
    doc: dict[str, object] = {
        "jobs": [j.name for j in jobs],
        "files": [str(p) for p in files],
        "written": written,
    }
    if systemd:
        v = systemd_verify(list(files))
        doc["verify"] = v
        problems = v.get("problems")
        if isinstance(problems, list) and problems:
            raise OperationFailed(f"systemd-analyze verify rejected the units: {problems[0]}")
    lines = [f"{'wrote' if str(p) in written else 'unchanged'} {p}" for p in files]
    if systemd:
        lines.append(
            f"then: systemctl daemon-reload && systemctl enable --now {' '.join(f'edgesec-{j.name}.timer' for j in jobs)}"
        )
    return doc, lines
