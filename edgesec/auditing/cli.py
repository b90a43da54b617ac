"""``edgesec auditlog ...`` commands: verify, rotate and checkpoint the trail; generate, push and ship."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgesec._console import info, result, state
from edgesec.errors import InputError, NotFound, VerificationError

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


def _cert_verifier(trust_dir: str | None) -> Any:
    """The site's check of a checkpoint certificate: chain to the published trust bundle, CRL, purpose."""
    from edgesec.pki.trust import TrustBundle, verify_certificate

    if trust_dir:
        d = Path(trust_dir)
    else:
        cfg = state().config()
        d = cfg.path_in_home(cfg.settings.pki.trust_bundle_dir, "trust")
    try:
        bundle = TrustBundle.load(d)
    except NotFound:
        raise NotFound(
            f"no trust bundle in {d} to check checkpoint certificates against",
            hint="publish the site PKI (`edgesec pki init`) or pass --trust DIR",
        ) from None

    def check(cert: Any) -> None:
        verify_certificate(cert, purpose="signing", trust=bundle)

    return check


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
    trust: Annotated[
        str | None, typer.Option("--trust", help="Trust bundle directory for checkpoint certificates.")
    ] = None,
) -> None:
    """Prove the trail intact, or name the first record edited, inserted, deleted, reordered or truncated."""
    from edgesec._fs import read_input_file
    from edgesec.auditing.checkpoint import local_checkpoints, parse_checkpoint, verify_checkpoint
    from edgesec.auditing.verify import verify_trail

    d = _trail_dir(trail)
    files = [Path(p) for p in (checkpoint or [])]
    if local:
        files += local_checkpoints(d)
    anchors = []
    if files:
        checker = _cert_verifier(trust)
        for f in files:
            cp = parse_checkpoint(read_input_file(f, what="checkpoint"), str(f))
            try:
                verify_checkpoint(cp, checker)
            except VerificationError as exc:
                raise VerificationError(f"checkpoint {f}: {exc.message}") from None
            anchors.append(cp.anchor(f.name))
    rep = verify_trail(d, from_seq=from_seq, anchors=anchors)
    data = rep.to_dict()
    data["trail"] = str(d)
    result(
        data,
        f"trail intact: {rep.records} records ({rep.first_seq}..{rep.head_seq}) in {len(rep.files)} file(s),"
        f" {rep.anchors_checked} checkpoint(s) covered; head {rep.head_hash[:16]}",
    )


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
    send: Annotated[
        bool, typer.Option("--send/--no-send", help="Send it off the host through syslog.")
    ] = True,
) -> None:
    """Sign the current chain head and send the checkpoint off the host (a scheduled job)."""
    from edgesec.auditing.checkpoint import load_signer, make_checkpoint, store_checkpoint
    from edgesec.auditing.syslog import format_rfc5424, sender_from_settings
    from edgesec.auditing.verify import verify_trail

    cfg = state().config()
    a = cfg.settings.auditing
    cert_path, key_path = cert or a.checkpoint_cert, key or a.checkpoint_key
    if not cert_path or not key_path:
        raise InputError(
            "no signing certificate for checkpoints",
            hint="issue one with `edgesec pki issue-signing NAME`, export it, and pass --cert/--key"
            " or set [auditing] checkpoint_cert/checkpoint_key",
        )
    c, k = load_signer(Path(cert_path), Path(key_path))
    d = _trail_dir(trail)
    # Only a verified head is worth signing: a checkpoint over a broken chain would bless the damage.
    rep = verify_trail(d)
    cp = make_checkpoint(rep.head_seq, rep.head_hash, c, k, site=cfg.settings.site.name)
    path = store_checkpoint(d, cp)
    sent = False
    if send:
        sender = sender_from_settings(a)
        if sender is None:
            info("syslog output is off ([auditing] syslog); the checkpoint stays local")
        else:
            try:
                sender.send(
                    format_rfc5424(cp.to_json(), msgid="checkpoint", params={"seq": cp.seq, "hash": cp.hash})
                )
                sent = True
            finally:
                sender.close()
    result(
        {"seq": cp.seq, "hash": cp.hash, "file": str(path), "sent": sent, "checkpoint": cp.doc},
        f"checkpoint at record {cp.seq} ({cp.hash[:16]}) -> {path}" + (" (sent to syslog)" if sent else ""),
    )


def _print_lines(lines: list[str]) -> Any:
    def show(con: Console) -> None:
        for line in lines:
            con.print(line, markup=False)

    return show
