"""Signed checkpoints of the trail head.

A checkpoint states "on host H at time T the chain's record N had hash X", signed with a ``signing``
certificate from the site PKI. It is kept next to the trail (``checkpoints/<seq>.json``) and, above
all, sent off the host (syslog, then the archive and Elasticsearch), where the host cannot rewrite
it. ``auditlog verify --checkpoint FILE`` then proves that the trail still holds record N with hash
X: a truncated or rewritten tail fails, even though the shortened chain is valid in itself.

Signed payload: the canonical JSON (sorted keys, no whitespace, UTF-8) of the checkpoint without its
``signature`` field. Algorithms follow the certificate's key: ECDSA with SHA-256, RSA PKCS#1 v1.5 with
SHA-256, or Ed25519. ``certificate`` is the signer's certificate and the optional ``chain`` its
intermediates (PEM, issuer order); both are judged by pki's one verifier under the detached-signature
time rule (:mod:`edgesec.pki.trust`): valid and unrevoked now.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec._fs import atomic_write, ensure_private_dir, read_input_file
from edgesec.auditing.canonical import canonical
from edgesec.auditing.verify import Anchor
from edgesec.errors import AlreadyExists, InputError, VerificationError
from edgesec.pki import signing
from edgesec.pki.signing import SigningKey
from edgesec.pki.trust import Policy, ProvenTime, TrustBundle, load_certificates, verify_certificate

CHECKPOINT_TYPE = "edgesec.trail.checkpoint"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement of the chain head."""

    doc: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.doc["seq"])

    @property
    def hash(self) -> str:
        return str(self.doc["hash"])

    def to_json(self) -> str:
        return canonical(self.doc)

    def anchor(self, source: str) -> Anchor:
        return Anchor(self.seq, self.hash, f"the checkpoint signed {self.doc['created']} ({source})")


def load_signer(
    cert_path: Path, key_path: Path, password: bytes | None = None
) -> tuple[list[x509.Certificate], SigningKey]:
    """Read a signing certificate (leaf first, then its chain) and its private key from PEM files (one
    clear error per problem). Whether the site accepts the certificate is the signing command's check
    (:func:`edgesec.pki.trust.refuse_unless_accepted`)."""
    certs = load_certificates(read_input_file(cert_path, what="certificate"), what=str(cert_path))
    try:
        loaded = serialization.load_pem_private_key(read_input_file(key_path, what="private key"), password)
    except TypeError:
        raise InputError(f"the private key {key_path} is encrypted; give its passphrase") from None
    except ValueError:
        raise InputError(f"not a PEM private key (or wrong passphrase): {key_path}") from None
    key = signing.check_signing_key(loaded, "the checkpoint key")
    if not signing.key_matches(certs[0], key):
        raise InputError(f"the key {key_path} does not belong to the certificate {cert_path}")
    return certs, key


def make_checkpoint(
    seq: int,
    digest: str,
    cert: x509.Certificate | Sequence[x509.Certificate],
    key: SigningKey,
    *,
    host: str | None = None,
    site: str | None = None,
) -> Checkpoint:
    """Sign the head ``(seq, digest)`` with ``key`` and its certificate (or certificate and chain)."""
    chain = [cert] if isinstance(cert, x509.Certificate) else list(cert)
    pem = serialization.Encoding.PEM
    doc: dict[str, Any] = {
        "type": CHECKPOINT_TYPE,
        "version": 1,
        "host": host or socket.gethostname(),
        "seq": seq,
        "hash": digest,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "certificate": chain[0].public_bytes(pem).decode("ascii"),
    }
    if chain[1:]:
        doc["chain"] = [c.public_bytes(pem).decode("ascii") for c in chain[1:]]
    if site:
        doc["site"] = site
    doc["algorithm"] = signing.algorithm_for(key.public_key(), "pkcs1")
    _, sig = signing.sign(key, canonical(doc).encode("utf-8"), "pkcs1")
    doc["signature"] = base64.b64encode(sig).decode("ascii")
    return Checkpoint(doc)


def parse_checkpoint(data: bytes, where: str) -> Checkpoint:
    """Read one checkpoint document (a file, or the JSON carried in a syslog message)."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise InputError(f"{where}: not a checkpoint (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("type") != CHECKPOINT_TYPE:
        raise InputError(f"{where}: not an edgesec trail checkpoint")
    for k, t in (
        ("seq", int),
        ("hash", str),
        ("signature", str),
        ("certificate", str),
        ("algorithm", str),
        ("created", str),
    ):
        if not isinstance(doc.get(k), t):
            raise InputError(f"{where}: checkpoint field {k!r} missing or of the wrong type")
    return Checkpoint(doc)


def verify_checkpoint(
    cp: Checkpoint, trust: TrustBundle | None, *, proven: ProvenTime | None = None
) -> x509.Certificate:
    """Check the signature and (with ``trust``) the signer with pki's verifier under the
    detached-signature rule (``proven``: a proven signing time, see :mod:`edgesec.auditing.proof`).
    Without ``trust`` only the signature is checked (reading a checkpoint carried in the trail, not
    trusting it)."""
    try:
        certs = load_certificates(cp.doc["certificate"].encode("ascii"), what="checkpoint certificate")
        extra = cp.doc.get("chain", [])
        if not isinstance(extra, list) or not all(isinstance(c, str) for c in extra):
            raise ValueError("chain")
        chain = [c for pem in extra for c in load_certificates(pem.encode("ascii"), what="checkpoint chain")]
        sig = base64.b64decode(cp.doc["signature"], validate=True)
    except (ValueError, InputError):
        raise VerificationError("checkpoint certificate, chain or signature is malformed") from None
    cert = certs[0]
    body = {k: v for k, v in cp.doc.items() if k != "signature"}
    signing.verify(
        cert.public_key(),
        cp.doc["algorithm"],
        sig,
        canonical(body).encode("utf-8"),
        what="checkpoint signature",
    )
    if trust is not None:
        verify_certificate([cert, *chain], trust=trust, policy=Policy.signature(proven=proven))
    return cert


def store_checkpoint(trail_dir: Path, cp: Checkpoint) -> Path:
    """Keep a copy next to the trail; never replaces an existing checkpoint."""
    d = ensure_private_dir(trail_dir / CHECKPOINT_DIR)
    path = d / f"{cp.seq:012d}.json"
    try:
        atomic_write(path, cp.to_json() + "\n", mode=0o600, exclusive=True)
    except AlreadyExists:
        path = d / f"{cp.seq:012d}-{cp.doc['created'].replace(':', '')}.json"
        atomic_write(path, cp.to_json() + "\n", mode=0o600, exclusive=True)
    return path


def local_checkpoints(trail_dir: Path) -> list[Path]:
    d = trail_dir / CHECKPOINT_DIR
    return sorted(d.glob("*.json")) if d.is_dir() else []


def signature_bytes(cp: Checkpoint) -> bytes:
    try:
        return base64.b64decode(cp.doc["signature"], validate=True)
    except ValueError:
        raise VerificationError("checkpoint signature is malformed") from None
