"""``edgesec audit``, ``edgesec checks``, ``edgesec waiver``, ``edgesec evidence``, ``edgesec schedule``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgesec._console import info, result, state, warn
from edgesec._fs import atomic_write
from edgesec.errors import AlreadyExists, InputError, UsageError

checks_app = typer.Typer(help="List the checks and profiles.", no_args_is_help=True)
waiver_app = typer.Typer(
    help="Grant and list waivers (accepted risks with an expiry date).", no_args_is_help=True
)
evidence_app = typer.Typer(help="Verify signed audit results.", no_args_is_help=True)

_STYLE = {
    "PASS": "green",
    "FAIL": "red",
    "WARN": "yellow",
    "ERROR": "magenta",
    "SKIP": "dim",
    "WAIVED": "cyan",
}


def _summary_printer(res: dict[str, Any], written: list[str]) -> Any:
    def human(con: Console) -> None:
        table = Table("status", "severity", "check", "finding", show_lines=False)
        order = {s: i for i, s in enumerate(("ERROR", "FAIL", "WARN", "WAIVED", "PASS", "SKIP"))}
        sev = {s: i for i, s in enumerate(("critical", "high", "medium", "low", "info"))}
        # What needs action first: errors, then failures by severity; skips last.
        # Skipped checks that share a reason ("no NVIDIA driver") fold into one row: at 2 a.m. the
        # operator reads what needs action; the reports list every check.
        skipped: dict[str, list[str]] = {}
        for c in sorted(
            res["checks"], key=lambda c: (order.get(c["status"], 9), sev.get(c["severity"], 9), c["id"])
        ):
            f = next((x for x in c["findings"] if x["status"] == c["status"]), c["findings"][0])
            if c["status"] == "SKIP":
                skipped.setdefault(f["message"], []).append(c["id"])
                continue
            more = len([x for x in c["findings"] if x["status"] == c["status"]]) - 1
            msg = f["message"] + (f" (+{more} more)" if more > 0 else "")
            table.add_row(
                f"[{_STYLE.get(c['status'], 'default')}]{c['status']}[/]",
                c["severity"],
                escape(c["id"]),
                escape(msg),
            )
        for reason, ids in skipped.items():
            label = ", ".join(ids) if len(ids) <= 2 else f"{ids[0]} and {len(ids) - 1} more"
            table.add_row(f"[{_STYLE['SKIP']}]SKIP[/]", "", escape(label), escape(reason))
        con.print(table)
        s = res["summary"]
        counts = ", ".join(f"{v} {k}" for k, v in s["by_status"].items() if v)
        for fw in res["frameworks"]:
            con.print(
                f"{fw['title']}: {fw['controls_passed']}/{fw['controls_total']} controls pass "
                f"({fw['score']:.0%}; {fw['controls_not_assessed']} not assessed)",
                markup=False,
            )
        ch = res.get("changes") or {}
        if ch.get("against"):
            con.print(
                f"since {ch['against']}: {len(ch['new_failures'])} new failures, {len(ch['fixed'])} fixed, "
                f"{len(ch['changed_evidence'])} with changed evidence, "
                f"{len(ch.get('not_assessed', []))} not assessed this run",
                markup=False,
            )
        for path in written:
            con.print(f"wrote {path}", markup=False)
        verdict = {"pass": "PASS", "fail": "FAIL", "incomplete": "INCOMPLETE"}[s["verdict"]]
        con.print(
            f"verdict: {verdict} (profile {res['run']['profile']}, fail-on {s['fail_on']}; {counts}) "
            f"in {res['run']['duration_s']:.2f}s",
            markup=False,
        )

    return human


_MARKERS = (b"edgesec",)


def _refuse_foreign(path: Path) -> None:
    """Replace an earlier edgesec report in place, but never a file edgesec did not write."""
    if not path.exists():
        return
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name or several --report formats")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise InputError(f"cannot read existing {path}: {exc.strerror}") from None
    if not any(m in head for m in _MARKERS):
        raise AlreadyExists(
            f"refusing to overwrite {path}: it is not an edgesec report", hint="choose another --out"
        )


def _targets(reports: list[str], out: str | None) -> list[tuple[str, Path]]:
    from edgesec.checks.reports import renderers

    r = renderers()
    if not reports:
        return []
    # A trailing slash names a directory (made if missing), never a file called like it.
    if len(reports) == 1 and out and not out.endswith("/") and not Path(out).is_dir():
        return [(reports[0], Path(out))]
    base = Path(out) if out else Path.cwd()
    if out and not base.is_dir():
        if base.exists():
            raise InputError(f"--out {out}: with several reports --out must be a directory")
        base.mkdir(mode=0o755, parents=True)
    return [(name, base / r[name].filename) for name in reports]


def _checked_targets(reports: list[str], out: str | None) -> list[tuple[str, Path]]:
    targets = _targets(reports, out)
    for _name, path in targets:
        if not path.parent.is_dir():
            raise InputError(f"--out {path}: directory {path.parent} does not exist")
        _refuse_foreign(path)
    return targets


@checks_app.command("list")
def checks_list(
    profile: Annotated[
        str | None, typer.Option("--profile", help="Only the checks this profile selects.")
    ] = None,
) -> None:
    """List every installed check (id, severity, title, controls)."""
    from edgesec.checks.profiles import load_profile
    from edgesec.checks.registry import load_catalog

    cat = load_catalog()
    prof = load_profile(profile) if profile else None
    rows: list[dict[str, Any]] = []
    for cid, cls in sorted(cat.checks.items()):
        if prof is not None and not prof.selects(cid):
            continue
        m = cls.meta
        sev = prof.severity_of(cid, m.severity) if prof else m.severity
        controls = list(m.controls)
        if prof is not None and not m.housekeeping:  # housekeeping checks evidence no control
            for fw in prof.frameworks:
                from edgesec.checks.profiles import expand

                controls += [f"{fw.id}:{c.id}" for c in fw.controls if cid in expand(c.checks, [cid])]
        rows.append(
            {
                "id": cid,
                "family": m.family,
                "severity": sev.label(),
                "title": m.title,
                "controls": sorted(set(controls)),
                "origin": cat.origin[cid],
            }
        )
    problems = [{"source": p.source, "message": p.message} for p in cat.problems]
    doc = {"profile": prof.id if prof else None, "checks": rows, "load_problems": problems}

    def human(con: Console) -> None:
        t = Table("id", "severity", "title", "controls")
        for row in rows:
            t.add_row(
                escape(str(row["id"])),
                str(row["severity"]),
                escape(str(row["title"])),
                escape(", ".join(row["controls"])),
            )
        con.print(t)
        for p in problems:
            con.print(f"could not load {p['source']}: {p['message']}", markup=False)

    result(doc, human, exit_code=3 if problems else 0)


@checks_app.command("history")
def checks_history(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest runs to show.")] = 20,
) -> None:
    """List the audit runs kept under the home (newest first): verdict, profile and counts."""
    from edgesec.checks import history

    cfg = state().config()
    rows: list[dict[str, Any]] = []
    for p in reversed(history.runs(cfg.home)):
        if len(rows) >= limit:
            break
        try:
            r = history.load_result(p)
        except InputError as exc:
            rows.append({"id": p.stem, "error": exc.message, "path": str(p)})
            continue
        s = r["summary"]
        rows.append(
            {
                "id": r["run"]["id"],
                "started": r["run"]["started"],
                "profile": r["run"]["profile"],
                "verdict": s["verdict"],
                "exit_code": s["exit_code"],
                "by_status": s["by_status"],
                "path": str(p),
            }
        )

    def human(con: Console) -> None:
        t = Table("run", "started", "profile", "verdict", "FAIL", "ERROR", "WARN", "WAIVED")
        for row in rows:
            if "error" in row:
                t.add_row(escape(row["id"]), "", "", escape(row["error"]), "", "", "", "")
                continue
            b = row["by_status"]
            t.add_row(
                escape(row["id"]),
                row["started"][:19],
                escape(row["profile"]),
                row["verdict"],
                str(b["FAIL"]),
                str(b["ERROR"]),
                str(b["WARN"]),
                str(b["WAIVED"]),
            )
        con.print(t)
        if not rows:
            con.print("no audit runs kept yet under " + str(cfg.home), markup=False)

    result({"runs": rows}, human)


def audit(
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="baseline, bank, clinic, factory, or a profile .toml file."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="A check id or family (repeatable).", metavar="ID_OR_FAMILY"),
    ] = None,
    report: Annotated[
        list[str] | None, typer.Option("--report", help="html, json, sarif, junit or prom (repeatable).")
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Report file; a directory with several reports (default: .).")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option("--fail-on", help="Lowest severity of a FAIL that fails the run (default high)."),
    ] = None,
    lang: Annotated[str | None, typer.Option("--lang", help="Report language: en or zh-CN.")] = None,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign the JSON result with the site signing certificate.")
    ] = False,
    sign_cert: Annotated[
        str | None, typer.Option("--sign-cert", help="Signing certificate PEM (else the PKI's by name).")
    ] = None,
    sign_key: Annotated[str | None, typer.Option("--sign-key", help="Its private key PEM.")] = None,
    sign_name: Annotated[
        str | None, typer.Option("--sign-name", help="Name of a signing certificate in the site PKI.")
    ] = None,
    waivers: Annotated[str | None, typer.Option("--waivers", help="A waiver file (JSON or TOML).")] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Compare with this earlier result instead of the last run."),
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Per-check timeout in seconds.")] = None,
    prom_textfile: Annotated[
        str | None, typer.Option("--prom-textfile", help="Also write the Prometheus report to this file.")
    ] = None,
    record: Annotated[str | None, typer.Option("--record", hidden=True)] = None,
    replay: Annotated[str | None, typer.Option("--replay", hidden=True)] = None,
) -> None:
    """Run the checks of a profile and write reports; exit 0 pass, 1 findings, 2 bad input, 3 incomplete."""
    from edgesec.checks.audit import AuditOptions, run_audit
    from edgesec.checks.interface import Severity
    from edgesec.checks.reports import FORMATS, renderers
    from edgesec.checks.reports.json_ import canonical

    reports = list(report or [])
    for r in reports:
        if r not in FORMATS:
            raise UsageError(f"--report {r!r}: expected one of {', '.join(FORMATS)}")
    if len(set(reports)) != len(reports):
        raise UsageError("--report: each format may be given once")
    if fail_on is not None:
        try:
            Severity.parse(fail_on)
        except ValueError as exc:
            raise UsageError(f"--fail-on: {exc}") from None
    cfg = state().config()
    language = lang or cfg.settings.checks.lang
    if language not in ("en", "zh-CN"):
        raise UsageError(f"--lang {language!r}: expected en or zh-CN")
    if timeout is not None and not (0 < timeout <= 3600):
        raise UsageError("--timeout must be between 0 and 3600 seconds")
    if sign and "json" not in reports:
        reports.append("json")
    targets = _checked_targets(reports, out)
    if record and not Path(record).parent.is_dir():
        raise InputError(f"--record: directory {Path(record).parent} does not exist")
    if prom_textfile:
        if not Path(prom_textfile).parent.is_dir():
            raise InputError(f"--prom-textfile: directory {Path(prom_textfile).parent} does not exist")
        _refuse_foreign(Path(prom_textfile))
    signer = None
    if sign:
        from edgesec.checks.evidence import load_signer

        signer = load_signer(cfg, cert=sign_cert, key=sign_key, name=sign_name)
    opts = AuditOptions(
        profile=profile,
        only=list(only or []),
        fail_on=fail_on,
        waivers_file=Path(waivers) if waivers else None,
        baseline=Path(baseline) if baseline else None,
        record=Path(record) if record else None,
        replay=Path(replay) if replay else None,
        timeout_s=timeout,
    )
    res = run_audit(cfg, opts)
    rend = renderers()
    written = []
    for name, path in targets:
        text = rend[name].render(res, language)
        if name == "json":
            text = canonical(res)
        atomic_write(path, text, mode=0o644)
        written.append(str(path))
        if name == "json" and signer is not None:
            sig_path = signer.sign_file(path)
            written.append(str(sig_path))
    if prom_textfile:
        atomic_write(Path(prom_textfile), rend["prom"].render(res, language), mode=0o644)
        written.append(prom_textfile)
    known = {c["id"] for c in res["checks"]}
    for w in res["waivers"]:
        if w["check"] not in known and not res["run"]["only"]:
            warn(f"waiver {w['id']} names check {w['check']}, which did not run: it waives nothing")
        if w["state"] == "expired":
            warn(f"waiver {w['id']} for {w['check']} expired on {w['expires']}: it no longer waives anything")
        elif w["days_left"] <= 14:
            info(f"waiver {w['id']} for {w['check']} expires in {w['days_left']} days")
    doc = {"result": res, "reports": written}
    result(doc, _summary_printer(res, written), exit_code=res["summary"]["exit_code"])


@waiver_app.command("add")
def waiver_add(
    check: Annotated[str, typer.Argument(help="Check id to waive.")],
    justification: Annotated[str, typer.Option("--justification", "-j", help="Why the risk is accepted.")],
    owner: Annotated[str, typer.Option("--owner", help="Who owns the fix.")],
    approver: Annotated[str, typer.Option("--approver", help="Who approved the waiver.")],
    expires: Annotated[str, typer.Option("--expires", help="First day it no longer applies (YYYY-MM-DD).")],
    resource: Annotated[
        str | None, typer.Option("--resource", help="Only this resource (or pattern).")
    ] = None,
) -> None:
    """Grant a waiver (kept in the home's waiver store; an audit event records it)."""
    from edgesec.auditing import AuditEvent, emit
    from edgesec.checks.registry import load_catalog
    from edgesec.checks.waivers import add_waiver

    try:
        until = dt.date.fromisoformat(expires)
    except ValueError:
        raise UsageError(f"--expires {expires!r} is not a date (YYYY-MM-DD)") from None
    cat = load_catalog()
    if check not in cat.checks:
        raise UsageError(f"no installed check has the id {check!r}", hint="see 'edgesec checks list'")
    cfg = state().config()
    w = add_waiver(
        cfg.home,
        check=check,
        resource=resource,
        justification=justification,
        owner=owner,
        approver=approver,
        expires=until,
        now=dt.datetime.now(dt.UTC),
    )
    emit(
        AuditEvent(
            action="checks.waiver.granted",
            category=("configuration",),
            type=("creation",),
            part="checks",
            message=f"waiver {w.id} granted for {check} until {until.isoformat()} by {approver}",
            fields={
                "edgesec.checks.waiver.id": w.id,
                "edgesec.checks.waiver.check": check,
                "edgesec.checks.waiver.resource": resource or "",
                "edgesec.checks.waiver.owner": owner,
                "edgesec.checks.waiver.approver": approver,
                "edgesec.checks.waiver.expires": until.isoformat(),
            },
        )
    )
    result(w.to_json(), f"granted waiver {w.id} for {check} until {until.isoformat()}")


@waiver_app.command("list")
def waiver_list(
    waivers: Annotated[str | None, typer.Option("--waivers", help="Also list this waiver file.")] = None,
) -> None:
    """List the waivers in force and expired ones."""
    from edgesec.checks.audit import collect_waivers

    cfg = state().config()
    today = dt.datetime.now(dt.UTC).date()
    ws = collect_waivers(cfg, Path(waivers) if waivers else None)
    rows = [{**w.to_json(), "state": w.state(today), "days_left": (w.expires - today).days} for w in ws]

    def human(con: Console) -> None:
        t = Table("id", "check", "resource", "expires", "state", "owner", "approver")
        for r in rows:
            t.add_row(
                r["id"],
                r["check"],
                r.get("resource") or "*",
                r["expires"],
                r["state"],
                r["owner"],
                r["approver"],
            )
        con.print(t)

    result({"waivers": rows}, human)


@evidence_app.command("verify")
def evidence_verify(
    result_file: Annotated[str, typer.Argument(help="The JSON result (its .sig is read beside it).")],
    signature: Annotated[str | None, typer.Option("--signature", help="The .sig file, if elsewhere.")] = None,
    trust: Annotated[
        str | None,
        typer.Option(
            "--trust",
            help="CA certificates (PEM file) or a trust bundle directory (default: the site's).",
        ),
    ] = None,
    proof_trail: Annotated[
        str | None,
        typer.Option(
            "--proof-trail",
            help="An audit trail whose signed checkpoints prove when the result was signed.",
        ),
    ] = None,
) -> None:
    """Verify a signed audit result: exit 0 valid, 1 tampered or untrusted, 2 unreadable."""
    from edgesec.checks.evidence import verify

    doc = verify(
        Path(result_file),
        Path(signature) if signature else None,
        Path(trust) if trust else None,
        cfg=state().config(),
        proof_trail=Path(proof_trail) if proof_trail else None,
    )
    chain = " -> ".join(doc["chain"])
    proven = doc["proven_time"]
    when = (
        f"signed by {proven['at']} (proven: {proven['by']})"
        if proven
        else f"claims {doc['signed_at']}; valid and unrevoked now"
    )
    result(doc, f"OK: {result_file} signed by {doc['signer']} ({when}); chain: {chain}")


def mount(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.add_typer(checks_app, name="checks")
    app.add_typer(waiver_app, name="waiver")
    app.add_typer(evidence_app, name="evidence")
