"""Signed checkpoints of the trail head.

A checkpoint states "on host H at time T the chain's record N had hash X", signed with a ``signing``
certificate from the site PKI. It is kept next to the trail (``checkpoints/<seq>.json``) and, above
all, sent off the host (syslog, then the archive and Elasticsearch), where the host cannot rewrite
it. ``auditlog verify --checkpoint FILE`` then proves that the trail still holds record N with hash
X: a truncated or rewritten tail fails, even though the shortened chain is valid in itself.

Signed payload: the canonical JSON (sorted keys, no whitespace, UTF-8) of the checkpoint without its
``signature`` field. Algorithms follow the certificate's key: ECDSA with SHA-256, RSA PKCS#1 v1.5 with
SHA-256, or Ed25519.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec._fs import atomic_write, ensure_private_dir, read_input_file
from edgesec.auditing.trail import canonical
from edgesec.auditing.verify import Anchor
from edgesec.errors import AlreadyExists, InputError, VerificationError
from edgesec.pki import signing
from edgesec.pki.signing import SigningKey

CHECKPOINT_TYPE = "edgesec.trail.checkpoint"
CHECKPOINT_DIR = "checkpoints"

# Verifies a signing certificate against the site's trust (chain, CRL, purpose); raises on failure.
CertVerifier = Callable[[x509.Certificate], None]


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
) -> tuple[x509.Certificate, SigningKey]:
    """Read a signing certificate and its private key from PEM files (one clear error per problem)."""
    try:
        cert = x509.load_pem_x509_certificate(read_input_file(cert_path, what="certificate"))
    except ValueError:
        raise InputError(f"not a PEM certificate: {cert_path}") from None
    try:
        loaded = serialization.load_pem_private_key(read_input_file(key_path, what="private key"), password)
    except TypeError:
        raise InputError(f"the private key {key_path} is encrypted; give its passphrase") from None
    except ValueError:
        raise InputError(f"not a PEM private key (or wrong passphrase): {key_path}") from None
    key = signing.check_signing_key(loaded, "the checkpoint key")
    if not signing.key_matches(cert, key):
        raise InputError(f"the key {key_path} does not belong to the certificate {cert_path}")
    require_signing_purpose(cert)
    return cert, key


def require_signing_purpose(cert: x509.Certificate) -> None:
    signing.require_code_signing(cert, "the checkpoint certificate")


def make_checkpoint(
    seq: int,
    digest: str,
    cert: x509.Certificate,
    key: SigningKey,
    *,
    host: str | None = None,
    site: str | None = None,
) -> Checkpoint:
    """Sign the head ``(seq, digest)``."""
    doc: dict[str, Any] = {
        "type": CHECKPOINT_TYPE,
        "version": 1,
        "host": host or socket.gethostname(),
        "seq": seq,
        "hash": digest,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }
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


def verify_checkpoint(cp: Checkpoint, cert_verifier: CertVerifier | None) -> x509.Certificate:
    """Check the signature and (with ``cert_verifier``) that the certificate is the site's signing one."""
    try:
        cert = x509.load_pem_x509_certificate(cp.doc["certificate"].encode("ascii"))
        sig = base64.b64decode(cp.doc["signature"], validate=True)
    except ValueError:
        raise VerificationError("checkpoint certificate or signature is malformed") from None
    body = {k: v for k, v in cp.doc.items() if k != "signature"}
    signing.verify(
        cert.public_key(),
        cp.doc["algorithm"],
        sig,
        canonical(body).encode("utf-8"),
        what="checkpoint signature",
    )
    require_signing_purpose(cert)
    if cert_verifier is not None:
        cert_verifier(cert)
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
