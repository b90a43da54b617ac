"""Signed evidence: a detached signature over the JSON result, verifiable later by an auditor.

``edgesec audit --sign`` writes ``<result>.sig`` next to the JSON result: a small JSON document with the
SHA-256 of the result bytes, the signature over those bytes, the signing certificate and its chain. The
certificate must carry the codeSigning EKU (the PKI's ``signing`` profile), and ``audit --sign`` refuses
(exit 2) a certificate the site's trust bundle would not accept. ``edgesec evidence verify RESULT`` checks
the digest, the signature, and the certificate with pki's one verifier under the detached-signature time
rule (:mod:`edgesec.pki.trust`): it chains to the site CA and is valid and unrevoked now (the site's
published trust bundle by default, or ``--trust`` naming a bundle directory or a PEM file of CA
certificates and their CRLs). The ``signed_at`` in the signature is the signer's claim and proves nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec._fs import atomic_write, read_input_file
from edgesec.config import LoadedConfig
from edgesec.errors import InputError, NotFound, UsageError, VerificationError
from edgesec.pki import signing
from edgesec.pki.signing import SigningKey

SIG_FORMAT = "edgesec.detached-signature"
SIG_VERSION = 1


def _load_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InputError(f"{what}: not a PEM certificate: {exc}") from None


@dataclass
class Signer:
    """A signing certificate (+ chain) and its private key."""

    cert: x509.Certificate
    chain: list[x509.Certificate]
    key: SigningKey

    def sign_bytes(self, data: bytes) -> bytes:
        return signing.sign(self.key, data, "pss")[1]

    def sign_file(self, path: Path, now: dt.datetime | None = None) -> Path:
        data = Path(path).read_bytes()
        doc = {
            "format": SIG_FORMAT,
            "version": SIG_VERSION,
            "file": Path(path).name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "algorithm": signing.algorithm_for(self.key.public_key(), "pss"),
            "signed_at": (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat(),
            "signature": base64.b64encode(self.sign_bytes(data)).decode(),
            "certificate": self.cert.public_bytes(serialization.Encoding.PEM).decode(),
            "chain": [c.public_bytes(serialization.Encoding.PEM).decode() for c in self.chain],
        }
        sig = Path(str(path) + ".sig")
        atomic_write(sig, json.dumps(doc, indent=1) + "\n", mode=0o644)
        from edgesec.auditing import AuditEvent, emit
        from edgesec.auditing.proof import SIGNATURE_FIELD, signature_digest

        # The signing event: once a signed checkpoint covers it, it proves when the signature was made.
        emit(
            AuditEvent(
                action="evidence.signed",
                category=("file",),
                type=("creation",),
                part="checks",
                message=f"signed {path}",
                fields={
                    "file.path": str(path),
                    "file.hash.sha256": doc["sha256"],
                    "file.x509.serial_number": f"{self.cert.serial_number:x}",
                    SIGNATURE_FIELD: signature_digest(base64.b64decode(str(doc["signature"]))),
                },
            )
        )
        return sig


def load_signer(cfg: LoadedConfig, *, cert: str | None, key: str | None, name: str | None) -> Signer:
    """The signing credentials: files (``--sign-cert``/``--sign-key``) or a name in the site PKI.

    Refused (exit 2) unless the site's trust bundle accepts the certificate for a signature made now:
    the very check ``evidence verify`` runs.
    """
    if name:
        from edgesec.pki.api import open_ca

        ca = open_ca(cfg)
        leaf_cert, leaf_key = ca.leaf(name)
        signer = Signer(
            leaf_cert, ca.chain_for(leaf_cert), signing.check_signing_key(leaf_key, f"signing key of {name}")
        )
    else:
        if not cert or not key:
            raise UsageError("--sign needs --sign-cert and --sign-key, or --sign-name NAME")
        certs = _load_certs(read_input_file(Path(cert), what="signing certificate"), cert)
        key_bytes = read_input_file(Path(key), what="signing key")
        try:
            pk = serialization.load_pem_private_key(key_bytes, password=None)
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"signing key: cannot load (encrypted keys need the PKI by name): {exc}"
            ) from None
        file_key = signing.check_signing_key(pk, "signing key")
        if not signing.key_matches(certs[0], file_key):
            raise InputError("the signing key does not match the signing certificate")
        signer = Signer(certs[0], certs[1:], file_key)
    from edgesec.pki.api import refuse_unless_accepted, trust_for_signing

    refuse_unless_accepted([signer.cert, *signer.chain], trust_for_signing(cfg))
    return signer


def verify(
    result_path: Path,
    sig_path: Path | None = None,
    trust: Path | None = None,
    cfg: LoadedConfig | None = None,
    *,
    proof_trail: Path | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Verify a signed result; returns what was checked, raises VerificationError (exit 1) if it is bad.

    ``proof_trail``: an audit trail whose signed checkpoints may prove when the result was signed (the
    time rule); without a proof the signer's certificate must be valid and unrevoked ``now``.
    """
    data = read_input_file(result_path, what="result")
    sig_path = sig_path or Path(str(result_path) + ".sig")
    raw = read_input_file(sig_path, what="signature")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"signature {sig_path} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT or doc.get("version") != SIG_VERSION:
        raise InputError(f"{sig_path} is not an edgesec detached signature (version {SIG_VERSION})")
    try:
        certs = _load_certs(doc["certificate"].encode(), "signature certificate")
        chain = [c for pem in doc.get("chain", []) for c in _load_certs(pem.encode(), "signature chain")]
        signature = base64.b64decode(doc["signature"], validate=True)
        signed_at = dt.datetime.fromisoformat(doc["signed_at"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InputError(f"signature {sig_path} is malformed: {exc}") from None
    leaf = certs[0]
    digest = hashlib.sha256(data).hexdigest()
    if digest != doc.get("sha256"):
        raise VerificationError(f"{result_path} was modified after signing (SHA-256 differs)")
    pub = leaf.public_key()
    try:
        alg = signing.algorithm_for(pub, "pss")
    except InputError:
        raise VerificationError(f"unsupported key type {type(pub).__name__}") from None
    signing.verify(pub, alg, signature, data, what=f"the signature over {result_path}")
    from edgesec.pki.api import Policy, load_anchors, load_trust, verify_certificate

    if trust is not None:
        grace = dt.timedelta(hours=cfg.settings.pki.crl_grace_hours) if cfg is not None else None
        bundle = load_anchors(trust, crl_grace=grace)
    else:
        if cfg is None:
            raise InputError("no trust bundle to check the signer against: give --trust")
        try:
            bundle = load_trust(cfg)
        except NotFound as exc:
            raise NotFound(
                f"cannot check the signer: {exc.message}",
                hint="give --trust (a trust bundle directory, or a PEM file of CA certificates and CRLs)",
            ) from None
    # The detached-signature time rule: the claimed signed_at proves nothing; the trail may.
    proven, unproven = None, None
    if proof_trail is not None:
        from edgesec.auditing.proof import prove_signing_time

        try:
            proven = prove_signing_time(proof_trail, signature, bundle)
        except VerificationError as exc:
            unproven = exc.message
    try:
        v = verify_certificate([leaf, *chain], trust=bundle, policy=Policy.signature(now=now, proven=proven))
    except VerificationError as exc:
        if unproven is None:
            raise
        raise VerificationError(f"{exc.message}; the signing time is not proven: {unproven}") from None
    return {
        "result": str(result_path),
        "signature": str(sig_path),
        "sha256": digest,
        "signer": leaf.subject.rfc4514_string(),
        "signed_at": signed_at.isoformat(),
        "signed_at_proven": proven is not None,
        "proven_time": None if proven is None else {"at": proven.at.isoformat(), "by": proven.source},
        "not_proven": unproven,
        "chain": [c.subject.rfc4514_string() for c in v.chain],
        "chain_verified": True,
        "trust": str(trust) if trust else "site trust bundle",
        "signer_serial": v.serial,
    }
