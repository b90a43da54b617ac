"""``edgesec pki ...`` commands: a thin layer over :mod:`edgesec.pki.ca` (see ``edgesec pki --help``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgesec._console import result, state, warn
from edgesec._fs import read_input_file
from edgesec.errors import EdgesecError, InputError, NotFound, UsageError, VerificationError
from edgesec.pki import secrets
from edgesec.pki.api import load_trust, open_ca, store_dir, trust_dir
from edgesec.pki.backup import backup, restore
from edgesec.pki.builder import KEY_TYPES, PROFILES
from edgesec.pki.ca import CertificateAuthority
from edgesec.pki.crl import REASONS
from edgesec.pki.inventory import CertRecord, ClientRequest, operational_error
from edgesec.pki.trust import cert_pem, load_certificate_file, verify_certificate

pki_app = typer.Typer(
    help="Offline CA: init, issue, revoke, CRL, renew, export, verify, list.", no_args_is_help=True
)
issue_app = typer.Typer(help="Issue a server, client or signing certificate.", no_args_is_help=True)
pki_app.add_typer(issue_app, name="issue")


def mount(app: typer.Typer) -> None:
    app.add_typer(pki_app, name="pki")


PassFile = Annotated[
    str | None,
    typer.Option(
        "--passphrase-file",
        help="File holding the CA key passphrase (else $EDGESEC_CA_PASSPHRASE, systemd credentials, a prompt).",
    ),
]


RootPassFile = Annotated[
    str | None,
    typer.Option(
        "--root-passphrase-file",
        help="File holding the root key's own passphrase (else $EDGESEC_CA_ROOT_PASSPHRASE, systemd "
        "credential edgesec-ca-root-passphrase, a prompt); never read from the site config.",
    ),
]


def _root_source(root_passphrase_file: str | None) -> Any:
    def resolve() -> bytes | None:
        return secrets.resolve_root_passphrase(
            passphrase_file=root_passphrase_file, prompt="root CA key passphrase (empty: the CA passphrase): "
        )

    return resolve


def _passphrase_source(passphrase_file: str | None) -> Any:
    cfg = state().config()

    def resolve() -> bytes | None:
        return secrets.resolve_passphrase(
            passphrase_file=passphrase_file, config_file=cfg.settings.pki.passphrase_file
        )

    return resolve


def _ca(passphrase_file: str | None = None) -> CertificateAuthority:
    """The site's CA, after finishing whatever a killed command left (publication, audit events, orphan
    files): every pki command repairs first, and says so on stderr."""
    ca = open_ca(state().config(), passphrase=_passphrase_source(passphrase_file))
    try:
        for step in ca.recover():
            warn(f"an interrupted CA command was finished: {step}")
    except EdgesecError as exc:
        # What is left stays pending (pki.crl-freshness FAILs on it); this command still runs.
        warn(f"an interrupted CA command could not be finished: {exc.message}")
    except (OSError, sqlite3.Error) as exc:
        warn(f"an interrupted CA command could not be finished: {operational_error(exc).message}")
    return ca


def _cert_json(cert: Any, ca: CertificateAuthority) -> dict[str, Any]:
    return ca.get(f"{cert.serial_number:x}").to_json()


def _issued(ca: CertificateAuthority, cert: Any, what: str) -> None:
    rec = ca.get(f"{cert.serial_number:x}")
    result(
        rec.to_json(),
        f"issued {what} certificate {rec.name}: serial {rec.serial}, valid until {rec.not_after:%Y-%m-%d}"
        + (f", SANs {', '.join(rec.sans)}" if rec.sans else ""),
    )


# --- init ------------------------------------------------------------------------------------------------


@pki_app.command("init")
def init_cmd(
    org: Annotated[str | None, typer.Option("--org", help="Organisation name (default: [site] org).")] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Site name, kept as OU (default: [site] name).")
    ] = None,
    key_type: Annotated[
        str | None, typer.Option("--key-type", help=f"CA key type: {', '.join(KEY_TYPES)} (default ec-p256).")
    ] = None,
    permit_dns: Annotated[
        list[str] | None, typer.Option("--permit-dns", help="Name constraint: permitted DNS suffix (repeat).")
    ] = None,
    permit_ip: Annotated[
        list[str] | None,
        typer.Option("--permit-ip", help="Name constraint: permitted IP network CIDR (repeat)."),
    ] = None,
    offline_root: Annotated[
        str | None,
        typer.Option("--offline-root", help="Write the root key only to this directory (removable media)."),
    ] = None,
    passphrase_file: PassFile = None,
    root_passphrase_file: RootPassFile = None,
    no_encrypt: Annotated[
        bool, typer.Option("--no-encrypt", help="Store CA keys unencrypted (not recommended).")
    ] = False,
) -> None:
    """Create the site CA: a root (10 y, pathLen 1) and an intermediate (5 y, pathLen 0) that signs day to day."""
    cfg = state().config()
    s = cfg.settings
    kt = key_type or s.pki.key_type
    sd = store_dir(cfg)
    if CertificateAuthority.exists(sd, exact=True):
        from edgesec.errors import AlreadyExists

        raise AlreadyExists(f"a CA store already exists in {sd}; nothing was changed")
    pw: bytes | None = None
    if no_encrypt:
        warn("CA keys will be stored UNENCRYPTED: anyone who can read the store can issue certificates")
    else:
        pw = secrets.resolve_passphrase(
            passphrase_file=passphrase_file,
            config_file=s.pki.passphrase_file,
            prompt="new CA key passphrase: ",
            confirm=True,
        )
        if pw is None:
            raise InputError(
                "no CA passphrase given",
                hint=f"use --passphrase-file, ${secrets.ENV_PASSPHRASE}, systemd credentials, or --no-encrypt",
            )
        root_pw = secrets.resolve_root_passphrase(
            passphrase_file=root_passphrase_file,
            prompt="new root key passphrase (empty: the same as the CA passphrase): ",
            confirm=True,
        )
        if root_pw is None:
            warn(
                "the root key shares the intermediate's passphrase: whoever holds it for the CRL job can "
                f"unlock the root; give --root-passphrase-file (or ${secrets.ENV_ROOT_PASSPHRASE}) to separate them"
            )
    ca = CertificateAuthority.init(
        sd,
        org=org or s.site.org,
        site=site if site is not None else s.site.name,
        key_type=kt,
        permit_dns=permit_dns or [],
        permit_ip=permit_ip or [],
        offline_root=offline_root,
        passphrase=pw,
        root_passphrase=None if no_encrypt else root_pw,
        encrypt=not no_encrypt,
        settings=s.pki,
        trust_dir=trust_dir(cfg),
        exact=True,
    )
    root = ca.root_certificate()
    inter = ca.intermediates()[0]
    data: dict[str, Any] = {
        "store": str(ca.dir),
        "trust_bundle": str(ca.trust_dir),
        "key_type": kt,
        "root": {"subject": root.subject.rfc4514_string(), "not_after": root.not_valid_after_utc.isoformat()},
        "intermediate": {
            "subject": inter.subject.rfc4514_string(),
            "not_after": inter.not_valid_after_utc.isoformat(),
        },
        "name_constraints": ca.name_constraints().to_json(),
        "offline_root": offline_root,
        "encrypted": not no_encrypt,
    }
    msg = (
        f"CA created in {ca.dir} ({kt}); trust bundle published to {ca.trust_dir}\n"
        f"  root:         {data['root']['subject']} (until {root.not_valid_after_utc:%Y-%m-%d})\n"
        f"  intermediate: {data['intermediate']['subject']} (until {inter.not_valid_after_utc:%Y-%m-%d})"
    )
    if offline_root:
        msg += f"\n  the root key is only in {offline_root}: store that media offline"
    result(data, msg)


# --- issue -----------------------------------------------------------------------------------------------


KeyTypeOpt = Annotated[
    str | None, typer.Option("--key-type", help="Leaf key type (default: [pki] key_type).")
]
DaysOpt = Annotated[int | None, typer.Option("--days", min=1, max=3650, help="Lifetime in days.")]
KeyPassOpt = Annotated[
    str | None,
    typer.Option(
        "--key-passphrase-file", help="Encrypt the leaf key in the store with the passphrase in this file."
    ),
]


def _key_pw(path: str | None) -> bytes | None:
    return (
        secrets.check_new_passphrase(secrets.read_passphrase_file(path, what="key passphrase file"))
        if path
        else None
    )


@issue_app.command("server")
def issue_server_cmd(
    name: Annotated[str, typer.Argument(help="Certificate name (its CN).")],
    san: Annotated[
        list[str] | None, typer.Option("--san", help="DNS:name,IP:addr (repeat or comma-separate).")
    ] = None,
    key_type: KeyTypeOpt = None,
    days: DaysOpt = None,
    key_passphrase_file: KeyPassOpt = None,
    passphrase_file: PassFile = None,
) -> None:
    """A TLS server certificate (serverAuth)."""
    kp = _key_pw(key_passphrase_file)
    ca = _ca(passphrase_file)
    cert, _ = ca.issue_server(name, san or [], key_type=key_type, days=days, key_passphrase=kp)
    _issued(ca, cert, "server")


@issue_app.command("client")
def issue_client_cmd(
    id: Annotated[str | None, typer.Argument(help="Client identity (its CN).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Email SAN.")] = None,
    uri: Annotated[
        str | None,
        typer.Option("--uri", help="URI SAN, https://host/path (e.g. https://bank.local/users/alice)."),
    ] = None,
    from_file: Annotated[
        str | None, typer.Option("--from-file", help="CSV with columns id[,email][,uri]: one locked batch.")
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing", help="With --from-file: leave out ids that already have a certificate."
        ),
    ] = False,
    key_type: KeyTypeOpt = None,
    days: DaysOpt = None,
    key_passphrase_file: KeyPassOpt = None,
    passphrase_file: PassFile = None,
) -> None:
    """A mutual-TLS client certificate (clientAuth), or a batch of them from a CSV file."""
    kp = _key_pw(key_passphrase_file)
    if skip_existing and not from_file:
        raise UsageError("--skip-existing applies to --from-file only")
    if from_file:
        if id or email or uri:
            raise UsageError("give either ID [--email] [--uri] or --from-file, not both")
        reqs = read_clients_csv(from_file)
        ca = _ca(passphrase_file)
        certs = ca.issue_clients(
            reqs, skip_existing=skip_existing, key_type=key_type, days=days, key_passphrase=kp
        )
        recs = [r.to_json() for r in ca.records([f"{c.serial_number:x}" for c in certs])]
        skipped = ca.last_skipped
        result(
            {"issued": len(recs), "certificates": recs, "skipped": skipped},
            f"issued {len(recs)} client certificates from {from_file}"
            + (f"; skipped {len(skipped)} already issued: {', '.join(skipped[:10])}" if skipped else "")
            + ("…" if len(skipped) > 10 else ""),
        )
        return
    if not id:
        raise UsageError("missing client ID (or --from-file FILE)")
    ca = _ca(passphrase_file)
    cert, _ = ca.issue_client(id, email=email, uri=uri, key_type=key_type, days=days, key_passphrase=kp)
    _issued(ca, cert, "client")


@issue_app.command("signing")
def issue_signing_cmd(
    name: Annotated[str, typer.Argument(help="Certificate name (its CN).")],
    key_type: KeyTypeOpt = None,
    days: DaysOpt = None,
    key_passphrase_file: KeyPassOpt = None,
    passphrase_file: PassFile = None,
) -> None:
    """A code-signing certificate (codeSigning) for model manifests and signed audit results."""
    kp = _key_pw(key_passphrase_file)
    ca = _ca(passphrase_file)
    cert, _ = ca.issue_signing(name, key_type=key_type, days=days, key_passphrase=kp)
    _issued(ca, cert, "signing")


def read_clients_csv(path: str) -> list[ClientRequest]:
    """Parse a batch file: a header with ``id`` and optionally ``email`` and ``uri``; one line per client."""
    raw = read_input_file(Path(path), what="client list")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    # newline="" lets the csv module see bare CR and CRLF line ends itself, as its documentation asks.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out: list[ClientRequest] = []
    try:
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise InputError(f"{path}: the header names column {dup[0]!r} more than once")
        if "id" not in fields:
            raise InputError(
                f"{path}: the first line must be a header with an 'id' column (and optionally email, uri)"
            )
        unknown = set(fields) - {"id", "email", "uri"}
        if unknown:
            raise InputError(
                f"{path}: unknown column(s) {', '.join(sorted(unknown))}; expected id, email, uri"
            )
        reader.fieldnames = fields
        for row in reader:
            if None in row:
                raise InputError(f"{path}:{reader.line_num}: too many fields")
            if not any((v or "").strip() for v in row.values()):
                continue
            out.append(
                ClientRequest(
                    id=(row.get("id") or "").strip(),
                    email=(row.get("email") or "").strip() or None,
                    uri=(row.get("uri") or "").strip() or None,
                )
            )
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: {exc}") from None
    if not out:
        raise InputError(f"{path} lists no clients")
    return out


# --- sign-csr, revoke, crl, renew, rotate ------------------------------------------------------------------


@pki_app.command("sign-csr")
def sign_csr_cmd(
    file: Annotated[str, typer.Argument(help="The CSR (PEM or DER).")],
    profile: Annotated[str, typer.Option("--profile", help="server, client or signing.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Certificate name (default: the CSR's CN).")
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Write the certificate and chain here (PEM).")
    ] = None,
    days: DaysOpt = None,
    passphrase_file: PassFile = None,
) -> None:
    """Certify a key generated on a device; the key never leaves it."""
    if profile not in PROFILES:
        raise UsageError(f"--profile must be one of {', '.join(PROFILES)}")
    data = read_input_file(Path(file), what="CSR file", limit=1 << 20)
    ca = _ca(passphrase_file)
    cert = ca.sign_csr(data, profile, name=name, days=days)
    if out:
        from edgesec._fs import atomic_write

        atomic_write(
            Path(out),
            cert_pem(cert) + b"".join(cert_pem(c) for c in ca.chain_for(cert)),
            mode=0o644,
            exclusive=True,
        )
    _issued(ca, cert, profile)


@pki_app.command("revoke")
def revoke_cmd(
    name_or_serial: Annotated[
        str, typer.Argument(help="Certificate name (its current certificate) or serial (hex).")
    ],
    reason: Annotated[str, typer.Option("--reason", help=f"One of: {', '.join(REASONS)}.")] = "unspecified",
    passphrase_file: PassFile = None,
) -> None:
    """Revoke a certificate; the CRL is regenerated and the trust bundle republished (reload hooks run)."""
    if reason not in REASONS:
        raise UsageError(f"unknown --reason {reason!r}; expected one of {', '.join(REASONS)}")
    ca = _ca(passphrase_file)
    serial = ca.revoke(name_or_serial, reason)
    rec = ca.get(serial)
    if ca.last_revoke_repeated:
        msg = (
            f"{rec.name} (serial {serial}) was already revoked ({rec.revocation_reason}); "
            f"CRL signed again and republished to {ca.trust_dir}"
        )
    else:
        msg = f"revoked {rec.name} (serial {serial}, {reason}); CRL republished to {ca.trust_dir}"
    result({**rec.to_json(), "already_revoked": ca.last_revoke_repeated}, msg)


@pki_app.command("crl")
def crl_cmd(
    root: Annotated[
        bool, typer.Option("--root", help="Also re-sign the root's CRL (needs the root key).")
    ] = False,
    offline_root: Annotated[
        str | None, typer.Option("--offline-root", help="Directory holding the root key.")
    ] = None,
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, max=365, help="nextUpdate in days (default: [pki] crl_days)."),
    ] = None,
    passphrase_file: PassFile = None,
    root_passphrase_file: RootPassFile = None,
) -> None:
    """Sign fresh CRLs (the intermediate's key suffices) and publish the trust bundle. Run it from cron."""
    ca = _ca(passphrase_file)
    if root or offline_root or root_passphrase_file:
        ca.use_root_passphrase(_root_source(root_passphrase_file))
    out = ca.generate_crl(with_root=root or bool(offline_root), offline_root=offline_root, days=days)
    result(out, f"CRL number {out['number']} published to {ca.trust_dir} (next update {out['next_update']})")


@pki_app.command("renew")
def renew_cmd(
    name: Annotated[str, typer.Argument(help="Certificate name.")],
    revoke_old: Annotated[
        bool, typer.Option("--revoke-old", help="Revoke the previous certificate (superseded).")
    ] = False,
    days: DaysOpt = None,
    passphrase_file: PassFile = None,
) -> None:
    """A new certificate and key under the same name; the inventory keeps the old one."""
    ca = _ca(passphrase_file)
    cert = ca.renew(name, revoke_old=revoke_old, days=days)
    _issued(ca, cert, "renewed")


@pki_app.command("rotate-intermediate")
def rotate_cmd(
    offline_root: Annotated[
        str | None, typer.Option("--offline-root", help="Directory holding the root key.")
    ] = None,
    passphrase_file: PassFile = None,
    root_passphrase_file: RootPassFile = None,
) -> None:
    """A new intermediate signed by the root; the old one stays trusted until it expires."""
    ca = _ca(passphrase_file)
    ca.use_root_passphrase(_root_source(root_passphrase_file))
    cert = ca.rotate_intermediate(offline_root=offline_root)
    result(
        {
            "subject": cert.subject.rfc4514_string(),
            "serial": f"{cert.serial_number:x}",
            "not_after": cert.not_valid_after_utc.isoformat(),
        },
        f"new intermediate {cert.subject.rfc4514_string()} active; trust bundle republished",
    )


@pki_app.command("publish")
def publish_cmd() -> None:
    """Publish the trust bundle again and run the reload hooks."""
    ca = _ca()
    pub = ca.publish()
    result(
        {"directory": str(pub.directory), "files": pub.files, "hooks": pub.hooks},
        f"trust bundle published to {pub.directory}",
    )


# --- export, backup, restore -------------------------------------------------------------------------------


def _p12_password(password_file: str | None) -> bytes:
    if password_file:
        return secrets.read_passphrase_file(password_file, what="PKCS#12 password file")
    env = os.environ.get("EDGESEC_P12_PASSWORD")
    if env:
        return env.encode()
    import sys

    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        p = getpass.getpass("PKCS#12 password: ")
        if p:
            return p.encode()
    raise InputError("a PKCS#12 password is needed", hint="use --password-file or $EDGESEC_P12_PASSWORD")


@pki_app.command("export")
def export_cmd(
    name: Annotated[str, typer.Argument(help="Certificate name.")],
    pem: Annotated[
        str | None,
        typer.Option("--pem", help="Directory for cert.pem, chain.pem, fullchain.pem, ca.pem, key.pem."),
    ] = None,
    p12: Annotated[
        str | None, typer.Option("--p12", help="PKCS#12 file to write (key + full chain).")
    ] = None,
    legacy: Annotated[
        bool, typer.Option("--legacy", help="PKCS#12 with 3DES/SHA-1 for older macOS and Windows.")
    ] = False,
    password_file: Annotated[
        str | None,
        typer.Option("--password-file", help="PKCS#12 password file (else $EDGESEC_P12_PASSWORD)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace files a previous export wrote.")
    ] = False,
    key_passphrase_file: Annotated[
        str | None,
        typer.Option("--key-passphrase-file", help="Passphrase of an encrypted leaf key (for --p12)."),
    ] = None,
) -> None:
    """Export a certificate for deployment (a proxy, a model publisher, a browser)."""
    if bool(pem) == bool(p12):
        raise UsageError("give exactly one of --pem DIR or --p12 FILE")
    if legacy and not p12:
        raise UsageError("--legacy applies to --p12 only")
    ca = _ca()
    if pem:
        files = ca.export_pem(name, pem, replace=replace)
        result(
            {"files": files},
            f"exported {name} to {pem}: " + ", ".join(sorted(Path(f).name for f in files.values())),
        )
    else:
        assert p12 is not None
        kp = (
            secrets.read_passphrase_file(key_passphrase_file, what="key passphrase file")
            if key_passphrase_file
            else None
        )
        p = ca.export_p12(
            name, p12, _p12_password(password_file), legacy=legacy, replace=replace, key_passphrase=kp
        )
        result(
            {"file": str(p), "legacy": legacy},
            f"exported {name} to {p} ({'legacy 3DES' if legacy else 'AES-256'} PKCS#12)",
        )


@pki_app.command("backup")
def backup_cmd(
    out: Annotated[str, typer.Option("--out", help="The encrypted backup file to create.")],
    passphrase_file: PassFile = None,
) -> None:
    """An encrypted backup of the whole store (keys, inventory, CRLs); the passphrase is the CA's."""
    ca = _ca(passphrase_file)
    pw = ca._get_passphrase()
    if not pw:
        raise InputError(
            "a backup needs a passphrase", hint="use --passphrase-file or $EDGESEC_CA_PASSPHRASE"
        )
    res = backup(ca, out, pw)
    result(res, f"backup written to {res['path']} ({res['bytes']} bytes)")


@pki_app.command("restore")
def restore_cmd(
    file: Annotated[str, typer.Argument(help="A backup made by `edgesec pki backup`.")],
    passphrase_file: PassFile = None,
) -> None:
    """Restore a backup into a home that has no CA store; republishes the trust bundle."""
    cfg = state().config()
    pw = secrets.resolve_passphrase(
        passphrase_file=passphrase_file, config_file=cfg.settings.pki.passphrase_file
    )
    if not pw:
        raise InputError(
            "the backup's passphrase is needed", hint="use --passphrase-file or $EDGESEC_CA_PASSPHRASE"
        )
    ca = restore(file, store_dir(cfg), pw, settings=cfg.settings.pki, trust_dir=trust_dir(cfg), exact=True)
    n = len(ca.list_certificates())
    result(
        {"store": str(ca.dir), "certificates": n},
        f"restored {n} certificates into {ca.dir}; trust bundle published",
    )


# --- list, verify ------------------------------------------------------------------------------------------


@pki_app.command("list")
def list_cmd(
    expiring: Annotated[
        int | None, typer.Option("--expiring", min=0, help="Only current certificates expiring within DAYS.")
    ] = None,
    current: Annotated[
        bool, typer.Option("--current", help="Hide superseded (renewed) certificates.")
    ] = False,
) -> None:
    """Every certificate ever issued: name, profile, serial, subject, SANs, validity, status, paths."""
    ca = _ca()
    recs = ca.list_certificates(expiring_days=expiring, include_history=not current)

    def human(con: Console) -> None:
        if not recs:
            con.print(
                "no certificates" + (f" expiring within {expiring} days" if expiring is not None else "")
            )
            return
        t = Table(show_edge=False, pad_edge=False)
        for col in ("name", "profile", "serial", "SANs", "not after", "status"):
            t.add_column(col, overflow="fold")
        for r in recs:
            status = r.status + ("" if r.current else " (superseded)")
            t.add_row(
                r.name, r.profile, r.serial[:16] + "…", ", ".join(r.sans), f"{r.not_after:%Y-%m-%d}", status
            )
        con.print(t)

    result([r.to_json() for r in recs], human)


def _summary(recs: list[CertRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in recs:
        out[r.status] = out.get(r.status, 0) + 1
    return out


@pki_app.command("verify")
def verify_cmd(
    cert: Annotated[str, typer.Argument(help="Certificate file (PEM, leaf first, optional chain; or DER).")],
    purpose: Annotated[str, typer.Option("--purpose", help="server, client or signing.")] = "client",
    trust: Annotated[
        str | None, typer.Option("--trust", help="Trust bundle directory (default: the site's).")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Verify at this ISO 8601 time instead of now.")
    ] = None,
) -> None:
    """Chain a certificate to the site root and check its purpose and the CRL (exit 1 when it fails)."""
    if purpose not in PROFILES:
        raise UsageError(f"--purpose must be one of {', '.join(PROFILES)}")
    when: dt.datetime | None = None
    if at:
        try:
            when = dt.datetime.fromisoformat(at)
        except ValueError:
            raise UsageError(f"--at {at!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    chain = load_certificate_file(cert)
    bundle = load_trust(state().config(), trust)
    try:
        v = verify_certificate(chain, purpose=purpose, trust=bundle, at=when)  # type: ignore[arg-type]
    except VerificationError as exc:
        raise VerificationError(f"{cert}: {exc.message}", hint=exc.hint) from None
    result(
        v.to_json(),
        f"{cert}: OK ({purpose}) {v.subject}, serial {v.serial}, valid until {v.not_after:%Y-%m-%d}",
    )


@pki_app.command("status")
def status_cmd() -> None:
    """The CA's health at a glance: CA validity, CRL next update, certificate counts."""
    cfg = state().config()
    sd = store_dir(cfg)
    if not CertificateAuthority.exists(sd, exact=True):
        raise NotFound(f"no CA store in {sd}", hint="run `edgesec pki init --org ORG` first")
    ca = _ca()
    root = ca.root_certificate()
    crls = ca.current_crls()
    data: dict[str, Any] = {
        "store": str(ca.dir),
        "root_not_after": root.not_valid_after_utc.isoformat(),
        "intermediates": [
            {"subject": c.subject.rfc4514_string(), "not_after": c.not_valid_after_utc.isoformat()}
            for c in ca.intermediates()
        ],
        "crls": [
            {
                "issuer": c.issuer.rfc4514_string(),
                "next_update": c.next_update_utc.isoformat() if c.next_update_utc else None,
            }
            for c in crls
        ],
        "certificates": _summary(ca.list_certificates()),
    }
    lines = [f"store: {ca.dir}", f"root valid until {root.not_valid_after_utc:%Y-%m-%d}"]
    lines += [f"intermediate {i['subject']} valid until {i['not_after'][:10]}" for i in data["intermediates"]]
    lines += [f"CRL of {c['issuer']}: next update {c['next_update']}" for c in data["crls"]]
    lines.append(
        "certificates: " + (", ".join(f"{n} {k}" for k, n in data["certificates"].items()) or "none")
    )
    result(data, "\n".join(lines))


def _operational_errors(fn: Any) -> Any:
    """A pki command with OS and SQLite failures (disk full, permission, read-only, damaged store) turned
    into one line and exit 2, never "internal error" or a traceback."""
    import functools

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            raise operational_error(exc) from None

    return run


for _cmd in [*pki_app.registered_commands, *issue_app.registered_commands]:
    _cmd.callback = _operational_errors(_cmd.callback)
