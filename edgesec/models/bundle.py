"""The signature file: a Sigstore bundle v0.3 holding a DSSE envelope over an in-toto Statement v1.

This is the OpenSSF model signing format's ``certificate`` method: the bundle carries the signing
certificate and its intermediates (``verificationMaterial.x509CertificateChain``, leaf first), no
transparency log entries, and one ECDSA signature over the DSSE pre-authentication encoding of the
payload. The hash follows the curve (P-256: SHA-256, P-384: SHA-384, P-521: SHA-512), as model_signing
does, so signatures written here verify there and the other way round.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgesec.errors import InputError, VerificationError

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
MAX_BUNDLE = 256 * 1024 * 1024
"""A manifest of a million shards is ~150 MB of JSON; anything beyond is not a signature."""


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding (what is actually signed)."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def ecdsa_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    """The digest paired with each curve in the OpenSSF format."""
    size = key.curve.key_size
    if size == 256:
        return hashes.SHA256()
    if size == 384:
        return hashes.SHA384()
    if size == 521:
        return hashes.SHA512()
    raise InputError(
        f"unsupported EC curve {key.curve.name} for model signatures (use P-256, P-384 or P-521)"
    )


@dataclass(frozen=True)
class Bundle:
    """A parsed signature file (nothing verified yet)."""

    payload: bytes
    payload_type: str
    signature: bytes
    chain: tuple[x509.Certificate, ...]  # leaf first

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def write_bundle(
    statement: dict[str, Any], key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]
) -> bytes:
    """Sign ``statement`` with ``key``; ``chain`` is the signing certificate then its intermediates."""
    payload = json.dumps(statement, indent=2, sort_keys=True).encode()
    sig = key.sign(pae(payload), ec.ECDSA(ecdsa_hash(key.public_key())))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "x509CertificateChain": {
                "certificates": [
                    {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()}
                    for c in chain
                ]
            },
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2) + "\n").encode()


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"signature file: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"signature file: {what} is not valid base64") from None


def read_bundle(data: bytes) -> Bundle:
    """Parse a signature file strictly; every malformation is one :class:`InputError` line."""
    if len(data) > MAX_BUNDLE:
        raise InputError(f"signature file is {len(data)} bytes; more than {MAX_BUNDLE} is not a signature")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"signature file is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InputError("signature file is not a Sigstore bundle (not a JSON object)")
    if doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise InputError(f"signature file media type {doc.get('mediaType')!r} is not {BUNDLE_MEDIA_TYPE}")
    vm = doc.get("verificationMaterial")
    certs_doc = vm.get("x509CertificateChain", {}).get("certificates") if isinstance(vm, dict) else None
    if not isinstance(certs_doc, list) or not certs_doc:
        raise InputError(
            "signature file carries no certificate chain (only the certificate method is supported)"
        )
    chain: list[x509.Certificate] = []
    for i, c in enumerate(certs_doc):
        raw = _b64(c.get("rawBytes") if isinstance(c, dict) else None, f"certificate {i}")
        try:
            chain.append(x509.load_der_x509_certificate(raw))
        except ValueError:
            raise InputError(f"signature file: certificate {i} is not a DER X.509 certificate") from None
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict):
        raise InputError("signature file has no DSSE envelope")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise InputError("signature file must hold exactly one DSSE signature")
    payload_type = env.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise InputError(f"DSSE payload type {payload_type!r} is not {PAYLOAD_TYPE}")
    return Bundle(
        payload=_b64(env.get("payload"), "DSSE payload"),
        payload_type=payload_type,
        signature=_b64(sigs[0].get("sig"), "DSSE signature"),
        chain=tuple(chain),
    )


def verify_envelope(bundle: Bundle) -> dict[str, Any]:
    """Check the DSSE signature with the leaf's key and return the in-toto statement.

    Only the cryptographic binding is checked here; whether the leaf is trusted is :mod:`.trust`'s job.
    """
    key = bundle.leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("the signing certificate's key is not an EC key (the format requires ECDSA)")
    try:
        key.verify(bundle.signature, pae(bundle.payload, bundle.payload_type), ec.ECDSA(ecdsa_hash(key)))
    except InvalidSignature:
        raise VerificationError(
            "the manifest signature does not verify with the signing certificate's key"
        ) from None
    try:
        statement = json.loads(bundle.payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise VerificationError("the signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerificationError("the signed payload is not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(
            f"the statement's predicate type {statement.get('predicateType')!r} is not {PREDICATE_TYPE}"
        )
    return statement
