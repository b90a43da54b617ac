"""``edgesec model sign | verify | scan``.

Exit codes: 0 the model verifies / scans clean; 1 it does not (tampered, untrusted signer, unsafe file);
2 the input could not be used at all (no signature, unreadable files, bad options).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.x509 import Certificate
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from edgesec._console import result, state, stderr
from edgesec._fs import read_input_file
from edgesec.auditing import AuditEvent, emit
from edgesec.errors import InputError, UsageError
from edgesec.models.hashing import DEFAULT_SHARD_SIZE

model_app = typer.Typer(help="Sign, verify and scan model directories.", no_args_is_help=True)

PROGRESS_MIN_BYTES = 256 * 1024 * 1024
"""Below this a verification takes well under a second: no bar."""


def mount(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


def _trust_dir(trust: Path | None) -> Path:
    if trust is not None:
        return trust
    cfg = state().config()
    return cfg.path_in_home(cfg.settings.pki.trust_bundle_dir, "trust")


@contextmanager
def _progress(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A byte progress bar on stderr for large jobs, only for a person at a terminal."""
    st = state()
    if st.json or st.quiet or not sys.stderr.isatty():
        yield (lambda n: None), (lambda n: None)
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        transient=True,
    )
    task = bar.add_task(label, total=None, visible=False)

    def total(n: int) -> None:
        bar.update(task, total=n, visible=n >= PROGRESS_MIN_BYTES)

    def tick(n: int) -> None:
        bar.advance(task, n)

    with bar:
        yield tick, total


@model_app.command("sign")
def sign_cmd(
    directory: Annotated[Path, typer.Argument(help="Model directory to sign.")],
    cert: Annotated[
        Path | None, typer.Option("--cert", help="Signing certificate (PEM, then its intermediates).")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Its private key (PEM).")] = None,
    key_passphrase_file: Annotated[
        Path | None, typer.Option("--key-passphrase-file", help="File holding the key's passphrase.")
    ] = None,
    signer: Annotated[
        str | None, typer.Option("--signer", help="A signing certificate from 'edgesec pki', by name.")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Where to write (default DIR/model.sig).")
    ] = None,
    hash_name: Annotated[str, typer.Option("--hash", help="sha256 (interoperable) or blake3.")] = "sha256",
    shard_mib: Annotated[
        int, typer.Option("--shard-size", help="Shard size in MiB.", min=1)
    ] = DEFAULT_SHARD_SIZE >> 20,
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", help="Glob of paths to leave out (repeatable).")
    ] = None,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Sign files that in-directory symlinks point to.")
    ] = False,
    trust: Annotated[
        Path | None, typer.Option("--trust", help="Trust bundle directory (default: the site's).")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Hashing threads.")] = None,
) -> None:
    """Write a signed manifest of every file in DIR (OpenSSF model signing format)."""
    from edgesec.models.api import load_signing_files, sign_model

    if signer and (cert or key):
        raise UsageError("give either --signer NAME or --cert/--key, not both")
    passphrase = None
    if key_passphrase_file is not None:
        passphrase = read_input_file(key_passphrase_file, what="passphrase file", limit=4096).strip()
    if signer:
        key_obj, chain = _pki_signer(signer, passphrase)
    elif cert and key:
        key_obj, chain = load_signing_files(cert, key, passphrase=passphrase)
    else:
        raise UsageError("a signing certificate is needed: --signer NAME, or --cert FILE --key FILE")
    from edgesec.pki.api import trust_for_signing

    # Without a trust bundle sign_model refuses: nothing says the site would accept this certificate.
    bundle = trust_for_signing(state().config(), _trust_dir(trust))
    with _progress("signing") as (tick, total):
        res = sign_model(
            directory,
            key=key_obj,
            chain=chain,
            signature=signature,
            algorithm=hash_name,
            shard_size=shard_mib << 20,
            ignore=ignore or [],
            follow_symlinks=follow_symlinks,
            trust=bundle,
            workers=workers,
            progress=tick,
            on_total=total,
        )
    m = res.manifest
    result(
        res.to_json(),
        f"signed {len(m.files)} file{'s' if len(m.files) != 1 else ''} ({m.total_bytes} bytes, {m.algorithm}) as {res.signer}\n"
        f"signature: {res.signature}\nmanifest digest: sha256:{res.root_digest} (pin it in [models] pins)",
    )


def _pki_signer(name: str, passphrase: bytes | None) -> tuple[EllipticCurvePrivateKey, list[Certificate]]:
    """The key and chain of a ``signing`` certificate held by the site CA (only pki reads the store)."""
    from edgesec.pki.api import open_ca

    ca = open_ca(state().config())
    try:
        cert, key = ca.leaf(name, key_passphrase=passphrase)
        chain = [cert, *ca.chain_for(cert)]
    finally:
        ca.close()
    if not isinstance(key, EllipticCurvePrivateKey):
        raise InputError(
            f"{name}: model signatures need an EC key (the OpenSSF format's certificate method is ECDSA)"
        )
    return key, chain


@model_app.command("verify")
def verify_cmd(
    directory: Annotated[Path, typer.Argument(help="Model directory to verify.")],
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Signature file (default DIR/model.sig).")
    ] = None,
    trust: Annotated[
        Path | None, typer.Option("--trust", help="Trust bundle directory (default: the site's).")
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", help="Glob of unsigned paths to tolerate (repeatable).")
    ] = None,
    follow_symlinks: Annotated[
        bool | None,
        typer.Option(
            "--follow-symlinks/--no-follow-symlinks",
            help="Accept in-directory symlinks the signer allowed (default: [models] follow_symlinks).",
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Hashing threads.")] = None,
    proof_trail: Annotated[
        Path | None,
        typer.Option(
            "--proof-trail", help="An audit trail whose signed checkpoints prove when DIR was signed."
        ),
    ] = None,
    pin: Annotated[
        str | None,
        typer.Option(
            "--pin",
            help="The sha256 manifest digest DIR must carry (default: [models] pins); refuses rollbacks.",
        ),
    ] = None,
) -> None:
    """Check DIR against its signature: trusted signer, every digest, nothing missing or added."""
    import re

    from edgesec.models.api import pin_for, verify_model
    from edgesec.pki.api import load_trust

    cfg = state().config()
    bundle = load_trust(cfg, _trust_dir(trust))
    patterns = [*cfg.settings.models.ignore, *(ignore or [])]
    follow = cfg.settings.models.follow_symlinks if follow_symlinks is None else follow_symlinks
    if pin is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", pin):
        raise UsageError("--pin takes a sha256 digest (64 hex digits), as 'edgesec model sign' prints it")
    expected = pin if pin is not None else pin_for(cfg.settings.models.pins, directory)
    with _progress("verifying") as (tick, total):
        res = verify_model(
            directory,
            pin=expected,
            trust=bundle,
            signature=signature,
            ignore=patterns,
            follow_symlinks=follow,
            workers=workers,
            progress=tick,
            on_total=total,
            proof_trail=proof_trail,
        )

    def human(con: Console) -> None:
        for line in res.lines():
            con.print(line, markup=False)
        if res.ok:
            m = res.manifest
            assert m is not None and res.signer is not None
            rate = res.bytes_hashed / res.seconds / 1e9 if res.seconds else 0.0
            con.print(
                f"OK {directory}: {len(m.files)} file{'s' if len(m.files) != 1 else ''}, {res.bytes_hashed} bytes verified in {res.seconds:.2f} s "
                f"({rate:.2f} GB/s); signed by {res.signer.subject}",
                markup=False,
            )
        else:
            n = 1 if res.trust_error else len(res.differences)
            con.print(f"FAILED {directory}: {n} problem{'s' if n != 1 else ''}", markup=False)

    result(res.to_json(), human, exit_code=0 if res.ok else 1)


@model_app.command("scan")
def scan_cmd(
    path: Annotated[Path, typer.Argument(help="Model directory (or one file) to scan.")],
    allow_format: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-format", help="Formats allowed (repeatable; default from [models] allowed_formats)."
        ),
    ] = None,
) -> None:
    """Flag files that can run code when loaded, or whose headers are malformed. Nothing is loaded."""
    from edgesec.models.scan import scan_path

    cfg = state().config()
    allowed = allow_format or cfg.settings.models.allowed_formats
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    report = scan_path(
        path, allowed_formats=allowed, unknown_severity=cfg.settings.models.unknown_format_severity
    )
    blocking = report.blocking()
    emit(
        AuditEvent(
            action="model.scanned",
            category=("file", "malware") if blocking else ("file",),
            type=("info",),
            outcome="failure" if blocking else "success",
            severity="high" if blocking else "info",
            part="models",
            message=f"scanned {path}: " + (blocking[0].line() if blocking else "clean"),
            fields={
                "file.path": str(path),
                "edgesec.models.files": report.files_scanned,
                "edgesec.models.findings": len(report.findings),
            },
        )
    )

    def human(con: Console) -> None:
        for f in report.findings:
            con.print(f.line(), markup=False)
        bad = report.blocking()
        verdict = "UNSAFE" if bad else "CLEAN"
        con.print(
            f"{verdict} {path}: {report.files_scanned} files scanned, {len(report.findings)} finding"
            f"{'s' if len(report.findings) != 1 else ''}",
            markup=False,
        )

    result(report.to_json(), human, exit_code=1 if report.blocking() else 0)
