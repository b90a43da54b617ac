"""``edgesec auditlog ...`` commands: verify, rotate and checkpoint the trail; generate, push and ship."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgesec._console import info, result, state, warn
from edgesec.errors import InputError, NotFound, OperationFailed, VerificationError

auditlog_app = typer.Typer(
    help="The audit trail and its syslog-ng / Elasticsearch pipeline.", no_args_is_help=True
)
gen_app = typer.Typer(help="Generate pipeline configuration.", no_args_is_help=True)
auditlog_app.add_typer(gen_app, name="gen")

TrailOpt = Annotated[
    str | None, typer.Option("--trail", help="Trail directory (default: from the site config).")
]


def mount(app: typer.Typer) -> None:
    app.add_typer(auditlog_app, name="auditlog")


def _trail_dir(trail: str | None) -> Path:
    if trail:
        return Path(trail)
    cfg = state().config()
    return cfg.path_in_home(cfg.settings.auditing.trail_dir, "audit")


def _trust(trust_dir: str | None) -> Any:
    """The site's published trust bundle (or ``--trust DIR``), which checkpoint signers must chain to."""
    from edgesec.pki.api import load_trust

    try:
        return load_trust(state().config(), trust_dir)
    except NotFound as exc:
        raise NotFound(
            f"cannot check checkpoint certificates: {exc.message}",
            hint="publish the site PKI (`edgesec pki init`) or pass --trust DIR",
        ) from None


@auditlog_app.command("verify")
def verify_cmd(
    trail: TrailOpt = None,
    from_seq: Annotated[
        int | None,
        typer.Option(
            "--from", min=1, help="Start at this record (older files archived); its link back is trusted."
        ),
    ] = None,
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint", help="A checkpoint kept off the host (file, repeatable); must be covered."
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local-checkpoints/--no-local-checkpoints", help="Also check checkpoints/ beside the trail."
        ),
    ] = True,
    shipped: Annotated[
        list[str] | None,
        typer.Option(
            "--shipped",
            help="Trail records kept off the host (JSON lines: the archive's audit.log); each must match.",
        ),
    ] = None,
    trust: Annotated[
        str | None, typer.Option("--trust", help="Trust bundle directory for checkpoint certificates.")
    ] = None,
) -> None:
    """Prove the trail intact, or name the first record edited, inserted, deleted, reordered or truncated."""
    from edgesec._fs import read_input_file
    from edgesec.auditing.checkpoint import local_checkpoints, parse_checkpoint, verify_checkpoint
    from edgesec.auditing.verify import anchors_from_lines, trail_host, verify_trail

    d = _trail_dir(trail)
    files = [Path(p) for p in (checkpoint or [])]
    if local:
        files += local_checkpoints(d)
    anchors = []
    for p in shipped or []:
        got = anchors_from_lines(read_input_file(Path(p), what="shipped copy", limit=1 << 34), p)
        if not got:
            raise InputError(f"{p}: holds no trail records")
        anchors += got
    if files:
        # Read every checkpoint first: a missing or garbled file is an input error (exit 2).
        cps = [(f, parse_checkpoint(read_input_file(f, what="checkpoint"), str(f))) for f in files]
        host = trail_host(d) if d.is_dir() else None
        for f, cp in cps:
            if host is not None and cp.doc.get("host") != host:
                raise InputError(f"checkpoint {f} is for host {cp.doc.get('host')!r}; this trail is {host!r}")
        bundle = _trust(trust)
        for f, cp in cps:
            try:
                verify_checkpoint(cp, bundle)
            except VerificationError as exc:
                # The time rule: a checkpoint whose signer expired (or was superseded) since still counts
                # when a later checkpoint of this trail, by a signer valid now, proves when it was signed.
                why = _proven_checkpoint(d, cp, bundle)
                if why is not None:
                    raise VerificationError(
                        f"checkpoint {f}: {exc.message}; the signing time is not proven: {why}"
                    ) from None
            anchors.append(cp.anchor(f.name))
    rep = verify_trail(d, from_seq=from_seq, anchors=anchors)
    data = rep.to_dict()
    data["trail"] = str(d)
    # What the proof reaches: up to the newest anchor kept off the host. After it, a cut of the newest
    # records, deleted newest files or a consistent rewrite would look the same as a shorter trail.
    # (A local checkpoint under checkpoints/ proves no more than the host it sits on.)
    offhost = {Path(x) for x in checkpoint or []}
    offhost_seqs = [a.seq for a in anchors if a.kind == "shipped"]
    if files:
        offhost_seqs += [cp.seq for f, cp in cps if f in offhost]
    covered = max((q for q in offhost_seqs if q <= rep.head_seq), default=0)
    data["covered_to"] = covered
    data["not_covered"] = max(0, rep.head_seq - max(covered, rep.first_seq - 1))
    tail = ""
    if data["not_covered"]:
        tail = (
            f"; records {max(covered + 1, rep.first_seq)}..{rep.head_seq} are after the newest off-host anchor:"
            " their removal or consistent rewrite would not show (sign and send a checkpoint)"
        )
    if rep.torn_tail_bytes:
        tail += f"; an unfinished last line ({rep.torn_tail_bytes} bytes) is not part of the chain and was not checked"
    result(
        data,
        f"chain intact: {rep.records} records ({rep.first_seq}..{rep.head_seq}) in {len(rep.files)} file(s),"
        f" {rep.anchors_checked} checkpoint(s) covered"
        + (f", {rep.shipped_checked} shipped record(s) matched" if shipped else "")
        + f"; head {rep.head_hash[:16]}"
        + tail,
    )


def _proven_checkpoint(trail: Path, cp: Any, bundle: Any) -> str | None:
    """None when ``cp`` verifies with a signing time proven by the trail; else why not."""
    from edgesec.auditing.checkpoint import signature_bytes, verify_checkpoint
    from edgesec.auditing.proof import prove_signing_time

    if not trail.is_dir():
        return f"no trail at {trail}"
    try:
        verify_checkpoint(cp, None)  # a bad signature is not a matter of time
    except VerificationError as exc:
        return exc.message
    try:
        proven = prove_signing_time(trail, signature_bytes(cp), bundle)
        verify_checkpoint(cp, bundle, proven=proven)
    except VerificationError as exc:
        return exc.message
    return None


@auditlog_app.command("rotate")
def rotate_cmd(trail: TrailOpt = None) -> None:
    """Rotate the current trail file now (rotation by size and date also happens on write)."""
    from edgesec.auditing.trail import Trail

    t = Trail(_trail_dir(trail))
    try:
        path = t.rotate()
    finally:
        t.close()
    result({"rotated": str(path) if path else None}, f"rotated to {path}" if path else "nothing to rotate")


@auditlog_app.command("checkpoint")
def checkpoint_cmd(
    trail: TrailOpt = None,
    cert: Annotated[
        str | None, typer.Option("--cert", help="Signing certificate (PEM); default from config.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Its private key (PEM).")] = None,
    signer: Annotated[
        str | None, typer.Option("--signer", help="Name of a signing certificate in the site CA store.")
    ] = None,
    send: Annotated[
        bool, typer.Option("--send/--no-send", help="Send it off the host through syslog.")
    ] = True,
) -> None:
    """Sign the current chain head and send the checkpoint off the host (a scheduled job)."""
    from edgesec.auditing.checkpoint import load_signer, make_checkpoint, store_checkpoint
    from edgesec.auditing.syslog import format_rfc5424, sender_from_settings
    from edgesec.auditing.verify import verify_trail
    from edgesec.pki.api import trust_for_signing
    from edgesec.pki.trust import refuse_unless_accepted

    cfg = state().config()
    a = cfg.settings.auditing
    cert_path, key_path = cert or a.checkpoint_cert, key or a.checkpoint_key
    signer = signer or (None if cert or key else a.checkpoint_signer)
    if signer:
        c, k = _signer_from_store(signer)
    elif cert_path and key_path:
        c, k = load_signer(Path(cert_path), Path(key_path))
    else:
        raise InputError(
            "no signing certificate for checkpoints",
            hint="issue one with `edgesec pki issue signing NAME` and pass --signer NAME (or --cert/--key,"
            " or set [auditing] checkpoint_cert/checkpoint_key)",
        )
    # Sign only with a certificate this site's verifier accepts now (exit 2 otherwise).
    refuse_unless_accepted(c, trust_for_signing(cfg), what="checkpoint certificate")
    d = _trail_dir(trail)
    # Only a verified head is worth signing: a checkpoint over a broken chain would bless the damage.
    rep = verify_trail(d)
    cp = make_checkpoint(rep.head_seq, rep.head_hash, c, k, site=cfg.settings.site.name)
    path = store_checkpoint(d, cp)
    sent = False
    if send:
        sender = sender_from_settings(a)
        if sender is None:
            info(
                "syslog output is off ([auditing] syslog): the checkpoint leaves the host in the trail itself"
            )
        else:
            try:
                sender.send(
                    format_rfc5424(cp.to_json(), msgid="checkpoint", params={"seq": cp.seq, "hash": cp.hash})
                )
                sent = True
            except OperationFailed as exc:
                raise OperationFailed(
                    f"checkpoint at record {cp.seq} kept in {path} but not sent off the host: {exc.message}",
                    hint="start the local syslog-ng, then re-run; the next checkpoint covers this one",
                ) from None
            finally:
                sender.close()
    from edgesec import auditing
    from edgesec.auditing.checkpoint import signature_bytes
    from edgesec.auditing.ecs import AuditEvent
    from edgesec.auditing.proof import SIGNATURE_FIELD, signature_digest

    # The checkpoint's own event goes into the trail it covers: --trail DIR, not the configured one.
    here = auditing.current_trail()
    target = (
        contextlib.nullcontext(here)
        if here.dir.resolve() == d.resolve()
        else auditing.configured(d, durability="fsync", site=auditing.site())
    )
    with target:
        auditing.emit(
            AuditEvent(
                action="trail.checkpoint",
                category=("file",),
                type=("info",),
                part="auditing",
                message=f"trail checkpoint signed at record {cp.seq}",
                fields={
                    "file.path": str(path),
                    "edgesec.checkpoint.seq": cp.seq,
                    "edgesec.checkpoint.hash": cp.hash,
                    "edgesec.checkpoint.sent": sent,
                    "edgesec.checkpoint.signer_serial": f"{c[0].serial_number:x}",
                    # The signing event, which a later checkpoint covers: the time rule's proof.
                    SIGNATURE_FIELD: signature_digest(signature_bytes(cp)),
                    # The signed document itself: it leaves the host with the trail (file tail, ship),
                    # even where syslog output is off.
                    "edgesec.checkpoint.signed": cp.to_json(),
                },
            )
        )
    result(
        {"seq": cp.seq, "hash": cp.hash, "file": str(path), "sent": sent, "checkpoint": cp.doc},
        f"checkpoint at record {cp.seq} ({cp.hash[:16]}) -> {path}" + (" (sent to syslog)" if sent else ""),
    )


def _signer_from_store(name: str) -> Any:
    """A signing certificate (with its chain) and key by name, through the PKI's API (only pki reads the
    CA store)."""
    from edgesec.pki.api import open_ca
    from edgesec.pki.signing import check_signing_key

    ca = open_ca(state().config())
    try:
        cert, key = ca.leaf(name)
        chain = [cert, *ca.chain_for(cert)]
    finally:
        ca.close()
    return chain, check_signing_key(key, f"the key of {name}")


def _print_lines(lines: list[str]) -> Any:
    def show(con: Console) -> None:
        for line in lines:
            con.print(line, markup=False)

    return show


def _write_out(out: str, files: dict[str, str], force: bool) -> list[str]:
    """Write generated files into ``out``; refuse to replace a different existing file."""
    from edgesec._fs import atomic_write
    from edgesec.errors import AlreadyExists

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        target = d / name
        if target.exists() and not force:
            if target.read_text(encoding="utf-8", errors="replace") == text:
                written.append(str(target))
                continue  # same content: re-running is a no-op
            raise AlreadyExists(
                f"refusing to overwrite {target}", hint="use --force, or another --out directory"
            )
        atomic_write(target, text, mode=0o640)
        written.append(str(target))
    return written


@gen_app.command("syslog-ng")
def gen_syslog_ng(
    out: Annotated[str, typer.Option("--out", help="Directory for syslog-ng.conf.")],
    es: Annotated[
        list[str] | None, typer.Option("--es", help="Elasticsearch URL (repeatable); default from config.")
    ] = None,
    ca: Annotated[
        str | None, typer.Option("--ca", help="CA bundle verifying Elasticsearch (the site trust bundle).")
    ] = None,
    cert: Annotated[
        str | None, typer.Option("--cert", help="Client certificate syslog-ng presents (site PKI).")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Its private key.")] = None,
    audit_log: Annotated[
        str, typer.Option("--audit-log", help="auditd log file; '' to leave auditd out.")
    ] = "/var/log/audit/audit.log",
    journald: Annotated[
        bool, typer.Option("--journald/--no-journald", help="Also ship the systemd journal.")
    ] = False,
    network_port: Annotated[
        int | None,
        typer.Option("--network-port", help="Also accept RFC 5425 syslog over TLS from other hosts."),
    ] = None,
    network_cert: Annotated[
        str | None,
        typer.Option("--network-cert", help="Server certificate of the network source (site PKI)."),
    ] = None,
    network_key: Annotated[str | None, typer.Option("--network-key", help="Its private key.")] = None,
    trusted_dn: Annotated[
        list[str] | None, typer.Option("--trusted-dn", help="Accepted client DN pattern (repeatable).")
    ] = None,
    slog: Annotated[
        bool, typer.Option("--slog", help="Also write the syslog-ng-mod-slog secure-logging variant.")
    ] = False,
    buffer_dir: Annotated[
        str, typer.Option("--buffer-dir", help="Disk buffer directory.")
    ] = "/var/lib/syslog-ng/edgesec",
    driver: Annotated[
        str,
        typer.Option(
            "--driver",
            help="http (default: needs syslog-ng-mod-http) or elasticsearch-http (needs syslog-ng-scl).",
        ),
    ] = "http",
    force: Annotated[bool, typer.Option("--force", help="Replace existing files in --out.")] = False,
) -> None:
    """Generate a complete syslog-ng 3.38 config: sources, ECS mapping, archive, Elasticsearch over mTLS."""
    from edgesec.auditing.syslogng import NetworkSource, PipelineOptions, render

    cfg = state().config()
    a = cfg.settings.auditing
    trust = cfg.path_in_home(cfg.settings.pki.trust_bundle_dir, "trust")
    trail = cfg.path_in_home(a.trail_dir, "audit") / "trail.jsonl"
    network = None
    if network_port is not None:
        network = NetworkSource(
            port=network_port,
            ca_file=ca or str(trust / "ca-bundle.pem"),
            cert_file=network_cert or "/etc/edgesec/syslog-server/fullchain.pem",
            key_file=network_key or "/etc/edgesec/syslog-server/key.pem",
            trusted_dn=tuple(trusted_dn or ()),
        )
    opts = PipelineOptions(
        trail_file=str(trail.absolute()),
        audit_log=audit_log or None,
        journald=journald,
        network=network,
        local_syslog=a.syslog if a.syslog != "off" else "tcp",
        local_syslog_port=a.syslog_port,
        local_syslog_socket=a.syslog_socket if a.syslog_socket != "/dev/log" else "/run/edgesec/syslog.sock",
        es_urls=tuple(es or a.elasticsearch_urls or ["https://127.0.0.1:9200"]),
        ca_file=ca or str((trust / "ca-bundle.pem").absolute()),
        cert_file=cert or "/etc/edgesec/syslog-ng/fullchain.pem",
        key_file=key or "/etc/edgesec/syslog-ng/key.pem",
        index_prefix=a.index_prefix,
        archive_dir=a.archive_dir,
        disk_buffer_dir=buffer_dir,
        site=cfg.settings.site.name,
        slog=slog,
        driver=driver,
    )
    # syslog-ng refuses a config whose TLS files are missing: say so now, with the command that makes them.
    needed = [opts.ca_file, opts.cert_file, opts.key_file]
    if network is not None:
        needed += [network.cert_file, network.key_file]
    for f in needed:
        if not Path(f).is_file():
            warn(
                f"{f} does not exist yet; syslog-ng will refuse the config until it does"
                " (`edgesec pki issue client syslog-ng` then `edgesec pki export syslog-ng --pem /etc/edgesec/syslog-ng`)"
            )
    if not (es or a.elasticsearch_urls):
        warn(
            f"no Elasticsearch URL (--es or [auditing] elasticsearch_urls): the pipeline ships to {opts.es_urls[0]};"
            " records wait in its disk buffer until something answers there"
        )
    files = _write_out(out, render(opts), force)
    result(
        {"files": files, "es_urls": list(opts.es_urls)},
        _print_lines([f"wrote {f}" for f in files] + ["check it: syslog-ng --syntax-only -f " + files[0]]),
    )


def _elastic_options() -> Any:
    from edgesec.auditing.elastic import ElasticOptions, retention_for

    cfg = state().config()
    a = cfg.settings.auditing
    from edgesec.checks.profiles import load_profile  # the CLI layer: profiles are the checks' data

    kept = None
    if a.retention_days is None:
        log_rules = load_profile(cfg.settings.site.profile).audit_log
        kept = (log_rules.retention_days, log_rules.retention_reason) if log_rules else None
    days, why = retention_for(cfg.settings.site.profile, kept, a.retention_days)
    return ElasticOptions(index_prefix=a.index_prefix, retention_days=days, retention_reason=why)


@gen_app.command("elastic")
def gen_elastic(
    out: Annotated[str, typer.Option("--out", help="Directory for the templates, ILM policy and pipeline.")],
    force: Annotated[bool, typer.Option("--force", help="Replace existing files in --out.")] = False,
) -> None:
    """Generate composable index templates (ECS mappings), the ILM policy and the ingest pipeline."""
    from edgesec.auditing.elastic import render_files

    o = _elastic_options()
    files = _write_out(out, render_files(o), force)
    result(
        {"files": files, "retention_days": o.retention_days, "retention_reason": o.retention_reason},
        _print_lines(
            [f"wrote {f}" for f in files] + [f"retention {o.retention_days} days: {o.retention_reason}"]
        ),
    )


EsOpt = Annotated[str | None, typer.Option("--es", help="Elasticsearch URL (default: first configured).")]
CaOpt = Annotated[str | None, typer.Option("--ca", help="CA bundle verifying Elasticsearch.")]
CertOpt = Annotated[str | None, typer.Option("--cert", help="Client certificate (mutual TLS).")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Its private key.")]


def _client(es: str | None, ca: str | None, cert: str | None, key: str | None) -> Any:
    from edgesec.auditing.elastic import make_client

    cfg = state().config()
    url = es or next(iter(cfg.settings.auditing.elasticsearch_urls), None)
    if not url:
        raise InputError("no Elasticsearch URL", hint="pass --es URL or set [auditing] elasticsearch_urls")
    if ca is None:
        bundle = cfg.path_in_home(cfg.settings.pki.trust_bundle_dir, "trust") / "ca-bundle.pem"
        ca = str(bundle) if bundle.is_file() else None
    if cert is None and key is None:
        cert, key = cfg.settings.auditing.elasticsearch_cert, cfg.settings.auditing.elasticsearch_key
    return make_client(url, ca=ca, cert=cert, key=key)


@auditlog_app.command("push")
def push_cmd(es: EsOpt = None, ca: CaOpt = None, cert: CertOpt = None, key: KeyOpt = None) -> None:
    """Install the index templates, ILM policy and ingest pipeline (safe to re-run)."""
    from edgesec.auditing.elastic import push

    client = _client(es, ca, cert, key)
    try:
        done = push(client, _elastic_options())
    finally:
        client.close()
    result({"installed": done}, _print_lines([f"PUT {d['path']}" for d in done]))


@auditlog_app.command("ship")
def ship_cmd(
    es: EsOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    trail: TrailOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=10000, help="Records per bulk request.")] = 500,
    state_file: Annotated[str | None, typer.Option("--state", help="Resume state file.")] = None,
) -> None:
    """Bulk-index the trail, resuming after the last acknowledged record; ids make reruns harmless."""
    from edgesec.auditing.elastic import ship

    cfg = state().config()
    d = _trail_dir(trail)
    if not d.is_dir():
        raise NotFound(f"no audit trail at {d}")
    sp = Path(state_file or cfg.settings.auditing.ship_state or d / "ship.state")
    client = _client(es, ca, cert, key)
    try:
        rep = ship(client, d, sp, prefix=cfg.settings.auditing.index_prefix, batch=batch)
    finally:
        client.close()
    result(
        rep,
        f"shipped records {rep['from'] + 1}..{rep['to']}: {rep['created']} new, {rep['already_present']} already present",
    )


@auditlog_app.command("reconcile")
def reconcile_cmd(
    journal: Annotated[
        str | None,
        typer.Option("--journal", help="The pipeline's _bulk journal (default: <archive_dir>/bulk)."),
    ] = None,
    es: EsOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    state_file: Annotated[
        str | None, typer.Option("--state", help="Resume state file (default: <journal>/reconcile.state).")
    ] = None,
) -> None:
    """Find by _id what Elasticsearch did not take from syslog-ng; create it, or dead-letter it."""
    from edgesec.auditing.elastic import reconcile

    cfg = state().config()
    d = Path(journal or Path(cfg.settings.auditing.archive_dir) / "bulk")
    if not d.is_dir():
        raise NotFound(f"no _bulk journal at {d}")
    sp = Path(state_file or d / "reconcile.state")
    client = _client(es, ca, cert, key)
    try:
        rep = reconcile(client, d, sp, prefix=cfg.settings.auditing.index_prefix)
    finally:
        client.close()
    result(
        rep,
        f"{rep['items']} item(s): {rep['present']} present, {rep['created']} created now, "
        f"{rep['dead_lettered']} dead-lettered",
        exit_code=1 if rep["dead_lettered"] else 0,
    )


@auditlog_app.command("lint")
def lint_cmd(config: Annotated[str, typer.Argument(help="A syslog-ng configuration file.")]) -> None:
    """Flag known mistakes in a syslog-ng config and the files it @includes (Beats port, _type, no disk
    buffer, no flow control, plain TCP/UDP to another host, no TLS checks, ECS names...)."""
    from edgesec._fs import read_input_file
    from edgesec.auditing.lint import ERROR, lint_paths

    def read(path: Path) -> str:
        raw = read_input_file(path, what="syslog-ng config", limit=8 * 1024 * 1024)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None

    findings = lint_paths(Path(config), read)
    errors = sum(1 for f in findings if f.severity == ERROR)
    lines = [
        f"{f.file or config}:{f.line}: {f.severity}: [{f.rule}] {f.message}\n  fix: {f.fix}" for f in findings
    ]
    lines.append(f"{len(findings)} finding(s), {errors} error(s)")
    result(
        {"findings": [f.to_dict() for f in findings], "errors": errors},
        _print_lines(lines),
        exit_code=1 if errors else 0,
    )
