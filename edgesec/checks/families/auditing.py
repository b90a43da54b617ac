"""The ``auditing`` checks: is the trail intact, is it shipped, is it kept long enough, is auditd locked?

* ``auditing.pipeline`` -- the syslog-ng that runs the edgesec pipeline has a config that passes
  ``edgesec auditlog lint`` and ``syslog-ng --syntax-only``, and reads this host's trail;
* ``auditing.trail`` -- the trail verifies end to end and against its newest signed checkpoint;
* ``auditing.retention`` -- nothing deletes the archive before the profile's retention (PCI DSS 10.5.1:
  12 months; MLPS / Cybersecurity Law art. 21: 6 months);
* ``auditing.auditd-immutable`` -- auditd runs and its rules are locked (``-e 2``) where the profile asks.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

from edgesec.auditing.lint import ERROR, includes, lint_config
from edgesec.checks import discover
from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity

# What a profile asks of these checks is data in the profile (``[checks."auditing.retention"] params =
# { min_days = ... }``, ``[checks."auditing.auditd-immutable"] params = { required = true }``), read with
# ctx.param; a profile that says nothing (baseline) asks for neither, and the check SKIPs saying so.


def trail_dir(ctx: CheckContext) -> str:
    return str(ctx.config.path_in_home(ctx.config.settings.auditing.trail_dir, "audit"))


def _is_edgesec_pipeline(text: str) -> bool:
    return "s_edgesec_trail" in text or "edgesec audit pipeline" in text


class Pipeline(Check):
    """The running syslog-ng pipeline's config is valid and reads the trail."""

    meta = CheckMeta(
        id="auditing.pipeline",
        title="The audit pipeline (syslog-ng) runs a valid config that ships this host's trail",
        severity=Severity.HIGH,
        rationale="Records that stay on the host can be erased with it; PCI DSS 10.3.3 wants logs backed up "
        "promptly to a central server and 10.7.2 wants logging failures detected.",
        remediation="'edgesec auditlog gen syslog-ng' for this host, check it with 'edgesec auditlog lint' and "
        "'syslog-ng --syntax-only -f FILE', and run syslog-ng with it.",
        controls=("pci-dss-4.0:10.3.3", "pci-dss-4.0:10.7.2", "hipaa:164.312(b)", "mlps-2.0-l3:8.1.4.3"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        a = ctx.config.settings.auditing
        confs = discover.configs(ctx, "syslog-ng", self.meta.id)
        pipelines = []
        for path, origin in confs:
            text = ctx.system.read_text(path, 4 << 20)
            if text is not None and _is_edgesec_pipeline(text):
                pipelines.append((path, origin, text))
        if not pipelines:
            if a.elasticsearch_urls or a.syslog != "off":
                yield self.failed(
                    "the site ships its trail ([auditing] elasticsearch_urls or syslog is set) but no running "
                    "syslog-ng has the edgesec pipeline",
                    evidence={"syslog_ng_configs": [p for p, _ in confs]},
                )
            else:
                yield self.skipped("no syslog-ng runs the edgesec pipeline and the site ships nothing")
            return
        trail_file = f"{trail_dir(ctx)}/trail.jsonl"
        # Another edgesec instance on the host may run its own pipeline: ours is the one reading our trail.
        ours = [p for p in pipelines if reads_trail(p[2], trail_dir(ctx))]
        others = [p[0] for p in pipelines if p not in ours]
        if not ours:
            yield self.failed(
                f"no running syslog-ng pipeline reads this host's trail {trail_file}",
                resource=trail_file,
                evidence={"pipelines_reading_other_trails": others},
            )
            return
        for path, origin, text in ours:
            ev: dict[str, object] = {"config": path, "origin": origin, "other_pipelines": others}
            ok = True
            r = ctx.system.run(["syslog-ng", "--syntax-only", "-f", path], timeout=60)
            ev["syntax_only"] = {"exit": r.returncode, "stderr": r.stderr[-800:]}
            if r.returncode == 127:
                yield self.warned(
                    "syslog-ng is not installed here: its syntax check cannot run", resource=path, evidence=ev
                )
                ok = False
            elif not r.ok:
                first = next((ln for ln in r.stderr.splitlines() if ln.strip()), "rejected")
                yield self.failed(
                    f"syslog-ng --syntax-only rejects {path}: {first}", resource=path, evidence=ev
                )
                ok = False
            # The same rules as 'edgesec auditlog lint', on the text the probe read. Included files are
            # not read here: their mistakes are not assessed, which is said, never passed over.
            included = includes(text)
            if included:
                ev["includes"] = included
                yield self.warned(
                    f"{path} includes {', '.join(included)}: what they hold is not checked here;"
                    f" run 'edgesec auditlog lint {path}', which follows them",
                    resource=path,
                    evidence=ev,
                )
                ok = False
            findings = lint_config(text)
            ev["lint"] = [f.to_dict() for f in findings]
            errors = [f for f in findings if f.severity == ERROR]
            for f in errors:
                yield self.failed(
                    f"edgesec auditlog lint: {path}:{f.line}: [{f.rule}] {f.message}",
                    resource=path,
                    evidence=ev,
                )
                ok = False
            if ok:
                yield self.passed(
                    f"syslog-ng ({origin}) runs {path}: valid, lint clean, reads {trail_file}",
                    resource=path,
                    evidence=ev,
                )


def reads_trail(conf: str, directory: str) -> bool:
    """Does a syslog-ng config read the trail in ``directory`` (its current file, or every trail file)?"""
    d = directory.rstrip("/")
    for q in ('"', "'"):
        if f"{q}{d}/trail.jsonl{q}" in conf:
            return True
        if re.search(rf"base-dir\(\s*{q}{re.escape(d)}/?{q}\s*\)", conf) and "trail" in conf:
            return True
    return False


class TrailIntact(Check):
    """The trail verifies, including against its newest signed checkpoint."""

    meta = CheckMeta(
        id="auditing.trail",
        title="The audit trail is intact and covered by a recent signed checkpoint",
        severity=Severity.CRITICAL,
        rationale="An edited, deleted or reordered record means the evidence can no longer be trusted; a "
        "signed checkpoint proves the tail was not cut off (PCI DSS 10.3.4, HIPAA 164.312(c)(1)).",
        remediation="Keep the damaged trail as evidence, compare it with the copy shipped off the host, and "
        "schedule 'edgesec auditlog checkpoint' (edgesec schedule install).",
        controls=("pci-dss-4.0:10.3.4", "hipaa:164.312(c)(1)", "mlps-2.0-l3:8.1.4.3", "iec-62443-3-3:SR 2.8"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        d = trail_dir(ctx)
        names = ctx.system.listdir(d) or []
        if not any(n.startswith("trail") and n.endswith(".jsonl") for n in names):
            yield self.skipped(f"no audit trail in {d} yet")
            return
        code, doc, err = discover.cli_json(ctx, "auditlog", "verify", "--trail", d, timeout=300)
        ev: dict[str, object] = {"trail": d}
        if doc is None:
            yield self.failed(
                f"the trail verifier gave no answer: {err.strip()[-200:]}", resource=d, evidence=ev
            )
            return
        if code != 0:
            e = doc.get("error") if isinstance(doc.get("error"), dict) else {}
            assert isinstance(e, dict)
            ev["error"] = e
            if code == 1:
                yield self.failed(f"the trail does not verify: {e.get('message')}", resource=d, evidence=ev)
            else:
                yield self.failed(
                    f"the trail cannot be verified: {e.get('message')}", resource=d, evidence=ev
                )
            return
        res = doc.get("result") if isinstance(doc.get("result"), dict) else {}
        assert isinstance(res, dict)
        covered = res.get("checkpoints_checked", res.get("anchors_checked"))
        # What grows with every run (the audit appends its own record) is a counter, not changed evidence.
        ev["verify"] = {"first_seq": res.get("first_seq"), "checkpoints": covered}
        ev["stats"] = {"records": res.get("records"), "head_seq": res.get("head_seq")}
        cps = sorted(n for n in (ctx.system.listdir(f"{d}/checkpoints") or []) if n.endswith(".json"))
        if not covered or not cps:
            yield self.warned(
                f"trail intact ({res.get('records')} records) but no signed checkpoint covers it: a cut-off tail "
                "would go unnoticed",
                resource=d,
                evidence=ev,
                severity=Severity.MEDIUM,
            )
            return
        newest = cps[-1]
        created = None
        try:
            cp = json.loads(ctx.system.read_text(f"{d}/checkpoints/{newest}") or "{}")
            created = dt.datetime.fromisoformat(str(cp.get("created")).replace("Z", "+00:00"))
            ev["last_checkpoint"] = {"file": newest, "seq": cp.get("seq"), "created": cp.get("created")}
        except ValueError:
            ev["last_checkpoint"] = {"file": newest}
        max_age_h = float(ctx.param(self.meta.id, "max_checkpoint_age_h", 26))
        age_h = (ctx.now() - created).total_seconds() / 3600 if created else None
        last = ev.get("last_checkpoint")
        last_seq = int(last.get("seq") or 0) if isinstance(last, dict) else 0
        lag = int(res.get("head_seq") or 0) - last_seq
        if age_h is not None and age_h > max_age_h:
            yield self.warned(
                f"trail intact, but the newest checkpoint is {age_h:.0f} h old (limit {max_age_h:.0f} h); "
                f"{lag} record(s) since are not covered",
                resource=d,
                evidence=ev,
                severity=Severity.MEDIUM,
            )
            return
        yield self.passed(
            f"trail intact: {res.get('records')} records verified against checkpoint {newest} "
            f"({lag} record(s) since)",
            resource=d,
            evidence=ev,
        )


_PERIOD_DAYS = {"daily": 1, "weekly": 7, "monthly": 30, "yearly": 365}


def _covers(pattern: str, directory: str) -> bool:
    """Does a clean-up rule for ``pattern`` reach files in ``directory`` (itself, a parent, or inside)?"""
    import fnmatch

    p, d = pattern.rstrip("/"), directory.rstrip("/")
    return p == d or d.startswith(p + "/") or p.startswith(d + "/") or fnmatch.fnmatchcase(d + "/x", p)


def logrotate_days(text: str, directory: str) -> list[tuple[int, str]]:
    """Days after which logrotate stanzas covering ``directory`` delete files: ``(days, why)``."""
    out: list[tuple[int, str]] = []
    global_period, global_rotate = 7, 4  # logrotate's own defaults: weekly, rotate 4 is Debian's default
    for m in re.finditer(r"^\s*(daily|weekly|monthly|yearly)\s*$", text.split("{", 1)[0], re.MULTILINE):
        global_period = _PERIOD_DAYS[m.group(1)]
    for m in re.finditer(r"^([^{}#\n]+)\{([^}]*)\}", text, re.MULTILINE):
        paths, body = m.group(1).split(), m.group(2)
        if not any(_covers(p, directory) for p in paths):
            continue
        period, rotate, maxage = global_period, global_rotate, None
        for line in body.splitlines():
            t = line.split()
            if not t:
                continue
            if t[0] in _PERIOD_DAYS:
                period = _PERIOD_DAYS[t[0]]
            elif t[0] == "rotate" and len(t) > 1 and t[1].lstrip("-").isdigit():
                rotate = int(t[1])
            elif t[0] == "maxage" and len(t) > 1 and t[1].isdigit():
                maxage = int(t[1])
        if rotate >= 0:
            out.append(
                (period * (rotate + 1), f"logrotate {' '.join(paths)}: {rotate} rotations x {period} d")
            )
        if maxage is not None:
            out.append((maxage, f"logrotate {' '.join(paths)}: maxage {maxage}"))
    return out


_AGE_RE = re.compile(r"^(\d+)(w|d|h|m|s|min|ms|us)?$")


def tmpfiles_days(text: str, directory: str) -> list[tuple[int, str]]:
    """systemd-tmpfiles lines whose age field cleans ``directory``: ``(days, why)``."""
    out: list[tuple[int, str]] = []
    mult = {"w": 7.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440, "min": 1 / 1440, "s": 1 / 86400, None: 1 / 86400}
    for line in text.splitlines():
        t = line.split()
        # Type Path Mode User Group Age [Argument]
        if len(t) < 6 or t[0].startswith("#") or not _covers(t[1], directory):
            continue
        m = _AGE_RE.match(t[5].lstrip("~"))
        if m:
            days = int(int(m.group(1)) * mult.get(m.group(2), 1.0))
            out.append((days, f"tmpfiles {t[0]} {t[1]} age {t[5]}"))
    return out


def cron_days(text: str, directory: str) -> list[tuple[int, str]]:
    """``find DIR ... -mtime +N ... -delete`` style clean-ups in cron files."""
    out: list[tuple[int, str]] = []
    for line in text.splitlines():
        if "find" not in line or ("-delete" not in line and "rm " not in line):
            continue
        m = re.search(r"find\s+(\S+).*?-mtime\s+\+?(\d+)", line)
        if m and _covers(m.group(1).strip("'\""), directory):
            out.append((int(m.group(2)), f"cron: {line.strip()[:120]}"))
    return out


class Retention(Check):
    """Nothing removes archived audit records before the profile's retention period."""

    meta = CheckMeta(
        id="auditing.retention",
        title="Audit records are kept as long as the profile requires",
        severity=Severity.HIGH,
        rationale="PCI DSS 10.5.1 keeps audit logs 12 months (3 immediately available); China's Cybersecurity "
        "Law art. 21 and MLPS level 3 keep network logs at least 6 months.",
        remediation="Remove or lengthen the rotation / clean-up that deletes the archive early (logrotate "
        "rotate x period, tmpfiles age, cron find -delete), and set [auditing] retention_days.",
        controls=("pci-dss-4.0:10.5.1", "mlps-2.0-l3:8.1.4.3", "hipaa:164.312(b)"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        a = ctx.config.settings.auditing
        required = int(ctx.param(self.meta.id, "min_days", 0))
        archive = a.archive_dir.rstrip("/")
        ev: dict[str, object] = {"archive": archive, "required_days": required, "profile": ctx.profile}
        if required <= 0 and a.retention_days is None:
            yield self.skipped(f"profile {ctx.profile} sets no retention period")
            return
        if ctx.system.stat(archive) is None and ctx.system.listdir(archive) is None:
            if (
                a.elasticsearch_urls
                or a.syslog != "off"
                or ctx.config.source_of("auditing.archive_dir") != "default"
            ):
                yield self.failed(
                    f"the audit archive {archive} does not exist: nothing is kept on this host",
                    resource=archive,
                    evidence=ev,
                )
            else:
                yield self.skipped(f"no audit archive at {archive} (the pipeline is not set up here)")
            return
        fails = 0
        if a.retention_days is not None and a.retention_days < required:
            fails += 1
            yield self.failed(
                f"[auditing] retention_days is {a.retention_days}, the {ctx.profile} profile requires {required}",
                resource=archive,
                evidence=ev,
            )
        deleters: list[tuple[int, str]] = []
        for pattern, fn in (
            ("/etc/logrotate.conf", logrotate_days),
            ("/etc/logrotate.d/*", logrotate_days),
            ("/etc/tmpfiles.d/*.conf", tmpfiles_days),
            ("/usr/lib/tmpfiles.d/*.conf", tmpfiles_days),
            ("/etc/cron.d/*", cron_days),
            ("/etc/cron.daily/*", cron_days),
            ("/etc/crontab", cron_days),
        ):
            for path in ctx.system.glob(pattern):
                text = ctx.system.read_text(path, 1 << 20)
                if text:
                    deleters += [(d, f"{path}: {why}") for d, why in fn(text, archive)]
        ev["deleters"] = [{"days": d, "rule": w} for d, w in deleters]
        keep = max(required, a.retention_days or 0)
        for days, why in sorted(deleters):
            if days < keep:
                fails += 1
                yield self.failed(
                    f"{why} deletes archived records after {days} days (< {keep})",
                    resource=archive,
                    evidence=ev,
                )
        oldest = self._oldest_day(ctx, archive)
        ev["oldest_day"] = oldest
        if not fails:
            kept = f"; oldest archived day {oldest}" if oldest else ""
            yield self.passed(
                f"no rule deletes {archive} before {keep} days ({ctx.profile} requires {required}){kept}",
                resource=archive,
                evidence=ev,
            )

    @staticmethod
    def _oldest_day(ctx: CheckContext, archive: str) -> str | None:
        years = sorted(y for y in ctx.system.listdir(archive) or [] if y.isdigit())
        for y in years:
            for m in sorted(x for x in ctx.system.listdir(f"{archive}/{y}") or [] if x.isdigit()):
                days = sorted(x for x in ctx.system.listdir(f"{archive}/{y}/{m}") or [] if x.isdigit())
                if days:
                    return f"{y}-{m}-{days[0]}"
        return None


class AuditdImmutable(Check):
    """auditd runs and its rules are locked until reboot (``-e 2``)."""

    meta = CheckMeta(
        id="auditing.auditd-immutable",
        title="auditd runs with immutable rules (-e 2)",
        severity=Severity.HIGH,
        rationale="With mutable rules, root can silently switch auditing off or delete rules before acting "
        "(PCI DSS 10.3.2 protect audit logs, 10.2.1 logging active; MLPS 8.1.4.3 c) audit process protected).",
        remediation="End the rules with '-e 2' (/etc/audit/rules.d/99-finalize.rules), run 'augenrules --load'; "
        "changing rules then needs a reboot, which is itself audited.",
        controls=("pci-dss-4.0:10.3.2", "pci-dss-4.0:10.2.1", "mlps-2.0-l3:8.1.4.3", "iec-62443-3-3:SR 2.8"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        want = ctx.param(self.meta.id, "required", False)
        if not want:
            yield self.skipped(f"profile {ctx.profile} does not ask for immutable audit rules")
            return
        from edgesec.checks.families.host import running_processes

        pids = running_processes(ctx).get("auditd", [])
        persisted = self._persisted(ctx)
        ev: dict[str, object] = {"auditd_pids": pids, "rules_files_set_e2": persisted}
        if not pids:
            yield self.failed("auditd is not running: no kernel audit records are kept", evidence=ev)
            return
        s = ctx.system.run(["auditctl", "-s"], timeout=5)
        ev["auditctl_s"] = (s.stdout or s.stderr)[-600:]
        m = re.search(r"^enabled\s+(\d)", s.stdout, re.MULTILINE) if s.ok else None
        if m is None:
            if persisted:
                yield self.warned(
                    f"auditd runs and {persisted[-1]} sets -e 2, but the kernel state needs root to read (auditctl -s)",
                    evidence=ev,
                    severity=Severity.LOW,
                )
            else:
                yield self.failed(
                    "auditd runs but no rules file ends with -e 2 (and auditctl -s needs root)", evidence=ev
                )
            return
        if m.group(1) == "2":
            yield self.passed("auditd runs with immutable rules (enabled 2)", evidence=ev)
        else:
            yield self.failed(
                f"auditd rules are mutable (enabled {m.group(1)}): root can change or stop auditing unnoticed",
                evidence=ev,
            )

    @staticmethod
    def _persisted(ctx: CheckContext) -> list[str]:
        out = []
        for p in [*ctx.system.glob("/etc/audit/rules.d/*.rules"), "/etc/audit/audit.rules"]:
            text = ctx.system.read_text(p) or ""
            lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
            e = [ln for ln in lines if len(ln) >= 2 and ln[0] == "-e"]
            if e and e[-1][1] == "2":
                out.append(p)
        return out


CHECKS: list[type[Check]] = [Pipeline, TrailIntact, Retention, AuditdImmutable]
