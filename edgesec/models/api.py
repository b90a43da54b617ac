"""Sign and verify model directories: the library entry points the CLI and the ``models`` checks call.

::

    from edgesec.models.api import sign_model, verify_model, load_signing_files
    key, chain = load_signing_files(Path("signing.crt"), Path("signing.key"))
    sign_model(Path("/models/llama"), key=key, chain=chain)
    res = verify_model(Path("/models/llama"), trust=TrustBundle.load(trust_dir))
    for d in res.differences: print(d.line())
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgesec._fs import atomic_write, read_input_file
from edgesec.auditing import AuditEvent, emit
from edgesec.auditing.proof import SIGNATURE_FIELD, prove_signing_time, signature_digest
from edgesec.errors import AlreadyExists, InputError, VerificationError
from edgesec.models import bundle as bundle_mod
from edgesec.models import manifest as manifest_mod
from edgesec.models.hashing import DEFAULT_SHARD_SIZE
from edgesec.models.manifest import Difference, Manifest
from edgesec.pki.signing import key_matches
from edgesec.pki.trust import (
    Policy,
    ProvenTime,
    TrustBundle,
    VerifiedCertificate,
    refuse_unless_accepted,
    verify_certificate,
)

SIGNATURE_NAME = "model.sig"
"""Default signature file, inside the model directory (the OpenSSF tool's default name)."""

CLOCK_SKEW = dt.timedelta(minutes=5)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _signature_path(root: Path, signature: Path | None) -> tuple[Path, str | None]:
    """The signature file and, when it lies inside the model, its relative path (always ignored)."""
    sig = signature if signature is not None else root / SIGNATURE_NAME
    try:
        rel = sig.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = None
    return sig, rel


def load_signing_files(
    cert_path: Path, key_path: Path, *, passphrase: bytes | None = None
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    """Read a PEM signing certificate (optionally followed by its intermediates) and its PEM key."""
    cert_data = read_input_file(cert_path, what="signing certificate")
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise InputError(f"{cert_path}: not a PEM certificate") from None
    key_data = read_input_file(key_path, what="signing key")
    try:
        key = serialization.load_pem_private_key(key_data, password=passphrase)
    except TypeError:
        raise InputError(
            f"{key_path}: the key is encrypted; give its passphrase with --key-passphrase-file"
        ) from None
    except ValueError:
        raise InputError(f"{key_path}: not a PEM private key (or a wrong passphrase)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(
            f"{key_path}: model signatures need an EC key (the OpenSSF format's certificate method is ECDSA)"
        )
    return key, chain


def check_signing_material(key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]) -> None:
    """Refuse to sign with a key that does not belong to the certificate. Whether the certificate is one
    the site accepts (purpose, chain, time, revocation) is pki's check: :func:`refuse_unless_accepted`."""
    if not chain:
        raise InputError("no signing certificate")
    if not key_matches(chain[0], key):
        raise InputError("the signing key does not belong to the signing certificate")


@dataclass(frozen=True)
class SignResult:
    """What ``sign_model`` wrote."""

    signature: Path
    manifest: Manifest
    signer: str
    root_digest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "signature": str(self.signature),
            "model": self.manifest.model_name,
            "files": len(self.manifest.files),
            "bytes": self.manifest.total_bytes,
            "algorithm": self.manifest.algorithm,
            "shard_size": self.manifest.shard_size,
            "signed_at": self.manifest.signed_at.isoformat() if self.manifest.signed_at else None,
            "signer": self.signer,
            "root_digest": self.root_digest,
        }


def sign_model(
    root: Path,
    *,
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
    signature: Path | None = None,
    algorithm: str = "sha256",
    shard_size: int = DEFAULT_SHARD_SIZE,
    ignore: Sequence[str] = (),
    follow_symlinks: bool = False,
    trust: TrustBundle | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
) -> SignResult:
    """Hash ``root`` and write its signed manifest; never replaces an existing signature file."""
    now = now or utcnow()
    check_signing_material(key, chain)
    # Sign only what would verify: a revoked, foreign or forged certificate is refused up front (exit 2).
    refuse_unless_accepted(chain, trust, now=now)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    sig_path, sig_rel = _signature_path(root, signature)
    if sig_path.exists():
        raise AlreadyExists(
            f"{sig_path} already exists", hint="remove it first, or write elsewhere with --signature"
        )
    m = manifest_mod.build(
        root,
        algorithm=algorithm,
        shard_size=shard_size,
        ignore=ignore,
        signature_rel=sig_rel,
        follow_symlinks=follow_symlinks,
        workers=workers,
        progress=progress,
        on_total=on_total,
        now=now,
    )
    statement = manifest_mod.to_statement(m)
    data = bundle_mod.write_bundle(statement, key, list(chain))
    atomic_write(sig_path, data, mode=0o644, exclusive=True)
    leaf = chain[0]
    root_digest = statement["subject"][0]["digest"]["sha256"]
    emit(
        AuditEvent(
            action="model.signed",
            category=("file",),
            type=("creation",),
            part="models",
            message=f"signed model {root} ({len(m.files)} files)",
            fields={
                "file.path": str(root),
                "file.hash.sha256": root_digest,
                "file.x509.serial_number": f"{leaf.serial_number:x}",
                "edgesec.models.signature": str(sig_path),
                "edgesec.models.files": len(m.files),
                "edgesec.models.bytes": m.total_bytes,
                # The signing event: a signed checkpoint covering it proves when the model was signed.
                SIGNATURE_FIELD: signature_digest(bundle_mod.read_bundle(data).signature),
            },
        )
    )
    return SignResult(sig_path, m, leaf.subject.rfc4514_string(), root_digest)


@dataclass
class VerifyResult:
    """The verdict on one model directory: a trust failure, or the list of differences."""

    root: Path
    signature: Path
    ok: bool = False
    trust_error: str | None = None
    signer: VerifiedCertificate | None = None
    proven: ProvenTime | None = None
    manifest: Manifest | None = None
    differences: list[Difference] = field(default_factory=list)
    bytes_hashed: int = 0
    seconds: float = 0.0
    root_digest: str | None = None
    """The sha256 digest of the signed manifest (what ``sign`` printed, what a site pins)."""

    def lines(self) -> list[str]:
        if self.trust_error:
            return [f"SIGNATURE {self.signature}: {self.trust_error}"]
        return [d.line() for d in self.differences]

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "model": str(self.root),
            "signature": str(self.signature),
            "ok": self.ok,
            "trust_error": self.trust_error,
            "signer": None
            if self.signer is None
            else {
                "subject": self.signer.subject,
                "serial": self.signer.serial,
                "fingerprint_sha256": self.signer.fingerprint_sha256,
            },
            "producer": m.producer if m else None,
            "algorithm": m.algorithm if m else None,
            "signed_at": m.signed_at.isoformat() if m and m.signed_at else None,
            "proven_time": None
            if self.proven is None
            else {"at": self.proven.at.isoformat(), "by": self.proven.source},
            "files": len(m.files) if m else 0,
            "root_digest": self.root_digest,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
            "differences": [d.to_dict() for d in self.differences],
        }


def pin_for(pins: dict[str, str], directory: str | Path) -> str | None:
    """The manifest digest ``[models] pins`` expects for ``directory`` (keys compared as resolved paths)."""
    want = Path(directory).resolve()
    for key, digest in pins.items():
        if Path(key).resolve() == want:
            return digest
    return None


def verify_model(
    root: Path,
    *,
    trust: TrustBundle,
    signature: Path | None = None,
    ignore: Sequence[str] = (),
    follow_symlinks: bool = True,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    audit: bool = True,
    proof_trail: Path | None = None,
    pin: str | None = None,
) -> VerifyResult:
    """Verify ``root`` against its signature. Returns a verdict; raises only for unusable input (exit 2).

    ``follow_symlinks=False`` forbids symlinks even where the signer allowed them (in-directory ones).
    ``proof_trail``: an audit trail whose signed checkpoints may prove when the model was signed (the
    time rule of :mod:`edgesec.pki.trust`); without a proof the signer must be valid and unrevoked now.
    ``pin`` is the manifest digest the site expects (``[models] pins``): an older release, correctly
    signed with its own ``model.sig``, is then a difference, not a pass (rollback).
    """
    import time

    started = time.perf_counter()
    now = now or utcnow()
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    sig_path, sig_rel = _signature_path(root, signature)
    if not sig_path.is_file():
        raise InputError(
            f"no signature at {sig_path}", hint="sign the model with 'edgesec model sign' or pass --signature"
        )
    res = VerifyResult(root=root, signature=sig_path)
    b = bundle_mod.read_bundle(read_input_file(sig_path, what="signature file", limit=bundle_mod.MAX_BUNDLE))
    try:
        statement = bundle_mod.verify_envelope(b)
        m = manifest_mod.from_statement(statement)
        if m.signed_at is not None and m.signed_at > now + CLOCK_SKEW:
            raise VerificationError(
                f"the manifest claims to be signed in the future ({m.signed_at.isoformat()})"
            )
        # The detached-signature time rule: the signer's claimed signing time proves nothing.
        proven, unproven = None, None
        if proof_trail is not None:
            try:
                proven = prove_signing_time(proof_trail, b.signature, trust)
            except VerificationError as exc:
                unproven = exc.message
        try:
            res.signer = verify_certificate(
                b.chain, trust=trust, policy=Policy.signature(now=now, proven=proven)
            )
        except VerificationError as exc:
            if unproven is None:
                raise
            raise VerificationError(f"{exc.message}; the signing time is not proven: {unproven}") from None
        res.proven = proven
        res.manifest = m
        res.root_digest = str(statement["subject"][0]["digest"]["sha256"])
    except VerificationError as e:
        res.trust_error = e.message
    if res.manifest is not None:
        cmp = manifest_mod.compare(
            res.manifest,
            root,
            extra_ignore=ignore,
            signature_rel=sig_rel,
            follow_symlinks=follow_symlinks,
            workers=workers,
            progress=progress,
            on_total=on_total,
        )
        res.differences = cmp.differences
        if pin is not None and res.root_digest != pin.lower():
            res.differences.insert(
                0,
                Difference(
                    "pinned",
                    ".",
                    f"the signed manifest is sha256:{(res.root_digest or '')[:16]}…, not the pinned "
                    f"sha256:{pin[:16]}… (an older or another release)",
                    expected=pin.lower(),
                    found=res.root_digest,
                ),
            )
        res.bytes_hashed = cmp.bytes_hashed
        res.ok = not res.differences
    res.seconds = time.perf_counter() - started
    if audit:
        emit(
            AuditEvent(
                action="model.verified",
                category=("file", "intrusion_detection") if not res.ok else ("file",),
                type=("info",),
                outcome="success" if res.ok else "failure",
                severity="info" if res.ok else "high",
                part="models",
                message=f"model {root}: " + ("verified" if res.ok else (res.lines() or ["failed"])[0]),
                fields={
                    "file.path": str(root),
                    "edgesec.models.signature": str(sig_path),
                    "edgesec.models.differences": len(res.differences),
                    **({"file.x509.serial_number": res.signer.serial} if res.signer else {}),
                },
            )
        )
    return res
