"""The ``host`` check family: the basics every profile needs (time, audit daemon, edgesec's own files)."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity, Status

_TIME_DAEMONS = {
    "chronyd": "chrony",
    "ntpd": "ntpd",
    "ntpsec": "ntpsec",
    "systemd-timesyn": "systemd-timesyncd",  # comm is cut to 15 characters
    "openntpd": "openntpd",
    "timemaster": "linuxptp timemaster",
    "ptp4l": "linuxptp ptp4l",
    "phc2sys": "linuxptp phc2sys",
}


def running_processes(ctx: CheckContext) -> dict[str, list[int]]:
    """Process names (``/proc/<pid>/comm``) to pids."""
    out: dict[str, list[int]] = {}
    for p in ctx.system.glob("/proc/[0-9]*/comm"):
        comm = (ctx.system.read_text(p, 64) or "").strip()
        if comm:
            out.setdefault(comm, []).append(int(p.split("/")[2]))
    return out


class TimeSync(Check):
    """A time synchronisation daemon runs and reports the clock synchronised."""

    meta = CheckMeta(
        id="host.time-sync",
        title="The clock is synchronised",
        severity=Severity.HIGH,
        rationale="Audit trails, certificate validity and CRL freshness all depend on the clock; PCI DSS 10.6 "
        "requires synchronised time from designated (here: on-site) time sources.",
        remediation="Run chrony (or systemd-timesyncd) against the site's own NTP server: "
        "'apt install chrony', set 'server <site-ntp> iburst' in /etc/chrony/chrony.conf, then "
        "'systemctl enable --now chrony'.",
        controls=("pci-dss-4.0:10.6.1", "iec-62443-3-3:SR 2.11", "mlps-2.0-l3:8.1.4.3"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        max_offset = float(ctx.param(self.meta.id, "max_offset_s", 1.0))
        procs = running_processes(ctx)
        daemons = {name: procs[comm] for comm, name in _TIME_DAEMONS.items() if comm in procs}
        ev: dict[str, object] = {"daemons": daemons, "max_offset_s": max_offset}
        if not daemons:
            yield self.failed(
                "no time synchronisation daemon is running (chrony, ntpd, systemd-timesyncd, ptp4l)",
                evidence=ev,
            )
            return
        if "chrony" in daemons:
            r = ctx.system.run(["chronyc", "-n", "tracking"], timeout=5)
            ev["chronyc_tracking"] = r.stdout[-1500:] if r.ok else r.stderr[-300:]
            if r.ok:
                leap = re.search(r"^Leap status\s*:\s*(.+)$", r.stdout, re.MULTILINE)
                off = re.search(r"^System time\s*:\s*([0-9.]+) seconds (fast|slow)", r.stdout, re.MULTILINE)
                if leap and leap.group(1).strip() != "Normal":
                    yield self.failed(
                        f"chrony runs but is not synchronised (leap status: {leap.group(1).strip()})",
                        evidence=ev,
                    )
                    return
                if off and float(off.group(1)) > max_offset:
                    yield self.failed(
                        f"chrony reports the clock {off.group(1)} s {off.group(2)} (limit {max_offset} s)",
                        evidence=ev,
                    )
                    return
                yield self.passed("chrony is running and synchronised", evidence=ev)
                return
        r = ctx.system.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], timeout=5)
        if r.ok and r.stdout.strip() in ("yes", "no"):
            ev["timedatectl_NTPSynchronized"] = r.stdout.strip()
            if r.stdout.strip() == "yes":
                yield self.passed(
                    f"{', '.join(daemons)} running; the kernel clock is synchronised", evidence=ev
                )
            else:
                yield self.failed(
                    f"{', '.join(daemons)} running but the clock is not synchronised", evidence=ev
                )
            return
        yield self.warned(
            f"{', '.join(daemons)} running; synchronisation state could not be read (no chronyc/timedatectl answer)",
            evidence=ev,
            severity=Severity.MEDIUM,
        )


class Auditd(Check):
    """The Linux audit daemon runs, is enabled and has rules."""

    meta = CheckMeta(
        id="host.auditd",
        title="The Linux audit daemon is running with rules loaded",
        severity=Severity.HIGH,
        rationale="auditd records logins, privilege use and file changes the audit pipeline ships; PCI DSS "
        "10.2, HIPAA 164.312(b) and MLPS 8.1.4.3 require such audit records on every system.",
        remediation="'apt install auditd', 'systemctl enable --now auditd', and load rules (e.g. "
        "/etc/audit/rules.d/*.rules, 'augenrules --load').",
        controls=("pci-dss-4.0:10.2.1", "hipaa:164.312(b)", "mlps-2.0-l3:8.1.4.3", "iec-62443-3-3:SR 2.8"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        procs = running_processes(ctx)
        pids = procs.get("auditd", [])
        ev: dict[str, object] = {"auditd_pids": pids}
        if not pids:
            installed = (
                ctx.system.which("auditd")
                or ctx.system.stat("/sbin/auditd")
                or ctx.system.stat("/usr/sbin/auditd")
            )
            ev["installed"] = bool(installed)
            yield self.failed(
                "auditd is not running" + ("" if installed else " (not installed)"), evidence=ev
            )
            return
        s = ctx.system.run(["auditctl", "-s"], timeout=5)
        ev["auditctl_s"] = (s.stdout or s.stderr)[-800:]
        m = re.search(r"^enabled\s+(\d)", s.stdout, re.MULTILINE) if s.ok else None
        if m is None:
            # Running is not enough: without the kernel's answer nothing says auditing is on.
            why = (s.stderr.strip() or s.stdout.strip() or f"exit {s.returncode}")[:200]
            yield Finding(
                self.meta.id,
                Status.ERROR,
                f"not assessed: auditd runs but the kernel's audit state could not be read (auditctl -s: {why}); "
                "run the audit as root with CAP_AUDIT_CONTROL in the initial PID namespace",
                evidence={**ev, "not_assessed": True},
            )
            return
        if m.group(1) == "0":
            yield self.failed("auditd runs but auditing is disabled in the kernel (enabled 0)", evidence=ev)
            return
        rules = ctx.system.run(["auditctl", "-l"], timeout=5)
        ev["rules"] = (rules.stdout or rules.stderr)[-2000:]
        if not rules.ok:
            yield Finding(
                self.meta.id,
                Status.ERROR,
                f"not assessed: the loaded audit rules could not be read (auditctl -l: "
                f"{(rules.stderr.strip() or f'exit {rules.returncode}')[:200]})",
                evidence={**ev, "not_assessed": True},
            )
            return
        n = 0 if "No rules" in rules.stdout else len([ln for ln in rules.stdout.splitlines() if ln.strip()])
        ev["rule_count"] = n
        if n == 0:
            yield self.warned(
                "auditd runs but no audit rules are loaded", evidence=ev, severity=Severity.MEDIUM
            )
            return
        locked = m.group(1) == "2"
        yield self.passed(
            f"auditd is running with {n} rules{' (configuration locked)' if locked else ''}", evidence=ev
        )


class EdgesecFiles(Check):
    """Nothing edgesec reads or writes is world-writable."""

    meta = CheckMeta(
        id="host.edgesec-files",
        title="edgesec's files are not world-writable",
        severity=Severity.HIGH,
        rationale="Anyone who can write edgesec's config, policies, waivers, history or audit trail can "
        "change the verdict or hide evidence.",
        remediation="chmod o-w on the listed paths (chmod -R o-w <home>); keep the home 0700 and owned by root.",
        controls=("pci-dss-4.0:10.3.2", "hipaa:164.312(c)(1)", "mlps-2.0-l3:8.1.4.7", "iec-62443-3-3:SR 3.4"),
    )

    LIMIT = 20000

    def roots(self, ctx: CheckContext) -> list[str]:
        cfg = ctx.config
        out = [str(cfg.home)]
        if cfg.path:
            out.append(str(cfg.path))
        out.append("/etc/edgesec")
        st = cfg.settings
        # Everything edgesec reads to reach a verdict or writes as evidence, wherever the config put it.
        for configured in (
            st.authz.policy_dir,
            st.pki.store_dir,
            st.pki.trust_bundle_dir,
            st.auditing.trail_dir,
            st.checks.waivers_file,
            st.checks.prom_textfile,
        ):
            if configured:
                out.append(str(Path(configured).expanduser()))
        return list(dict.fromkeys(out))

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        seen = 0
        bad: list[tuple[str, int, bool]] = []
        stack = [r for r in self.roots(ctx) if ctx.system.stat(r) is not None]
        scanned_roots = list(stack)
        while stack and seen < self.LIMIT:
            path = stack.pop()
            st = ctx.system.stat(path)
            if st is None or st.is_link:
                continue
            seen += 1
            ww = bool(st.perms & stat.S_IWOTH)
            if ww and not (st.is_dir and st.perms & stat.S_ISVTX and path not in scanned_roots):
                bad.append((path, st.perms, st.is_dir))
            if st.is_dir:
                stack.extend(f"{path.rstrip('/')}/{n}" for n in ctx.system.listdir(path) or [])
        # A world-writable parent without the sticky bit lets anyone rename edgesec's files away.
        for root in scanned_roots:
            for ancestor in Path(root).parents:
                st = ctx.system.stat(str(ancestor))
                if st is not None and st.is_dir and st.perms & stat.S_IWOTH and not st.perms & stat.S_ISVTX:
                    bad.append((str(ancestor), st.perms, True))
        bad = sorted(set(bad))
        for path, perms, is_dir in bad:
            yield self.failed(
                f"{'directory' if is_dir else 'file'} {path} is world-writable (mode {perms:04o})",
                resource=path,
                evidence={"mode": f"{perms:04o}", "is_dir": is_dir},
            )
        if not bad and not scanned_roots:
            yield self.skipped("no edgesec files on this host yet (no home, config or trust bundle)")
            return
        if not bad:
            msg = f"no world-writable path among {seen} under {', '.join(scanned_roots)}"
            if seen >= self.LIMIT:
                yield self.warned(msg + f" (stopped after {self.LIMIT} entries)", severity=Severity.LOW)
            else:
                yield self.passed(msg, evidence={"roots": scanned_roots, "stats": {"entries": seen}})


CHECKS: list[type[Check]] = [TimeSync, Auditd, EdgesecFiles]
