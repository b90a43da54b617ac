"""Detached signatures with a site ``signing`` certificate: the primitives every signer shares.

Trail checkpoints (``edgesec.auditing.checkpoint``) and signed audit results (``edgesec.checks.evidence``)
sign bytes with a codeSigning certificate's key and verify them later against the certificate. Each
keeps its own on-disk format; the algorithm names below are what those formats record.

Whether a signing certificate is trusted is not decided here: :func:`edgesec.pki.trust.verify_certificate`
with :meth:`~edgesec.pki.trust.Policy.signature` decides it for every format, and
:func:`edgesec.pki.trust.refuse_unless_accepted` runs that same check before anything is signed. (These
primitives sit in the foundation layer: they import nothing of pki.)
"""

from __future__ import annotations

from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from edgesec.errors import InputError, VerificationError

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
Algorithm = Literal["ecdsa-sha256", "rsa-pkcs1-sha256", "rsa-pss-sha256", "ed25519"]
RsaPadding = Literal["pkcs1", "pss"]


def _rsa_padding(kind: RsaPadding) -> padding.AsymmetricPadding:
    if kind == "pss":
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return padding.PKCS1v15()


def algorithm_for(public_key: object, rsa_padding: RsaPadding) -> Algorithm:
    """The algorithm name a key signs with (RSA: with the caller format's padding)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ecdsa-sha256"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa-pss-sha256" if rsa_padding == "pss" else "rsa-pkcs1-sha256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise InputError(f"unsupported signing key type {type(public_key).__name__}")


def sign(key: SigningKey, data: bytes, rsa_padding: RsaPadding) -> tuple[Algorithm, bytes]:
    """Sign ``data``; returns the algorithm name and the signature."""
    alg = algorithm_for(key.public_key(), rsa_padding)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return alg, key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return alg, key.sign(data, _rsa_padding(rsa_padding), hashes.SHA256())
    return alg, key.sign(data)


def verify(
    public_key: object, alg: str, signature: bytes, data: bytes, *, what: str = "the signature"
) -> None:
    """Check ``signature`` over ``data``; :class:`VerificationError` naming ``what`` when it does not hold."""
    try:
        if alg == "ecdsa-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif alg in ("rsa-pkcs1-sha256", "rsa-pss-sha256") and isinstance(public_key, rsa.RSAPublicKey):
            pad: RsaPadding = "pss" if alg == "rsa-pss-sha256" else "pkcs1"
            public_key.verify(signature, data, _rsa_padding(pad), hashes.SHA256())
        elif alg == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            raise VerificationError(f"{what}: algorithm {alg!r} does not match the certificate's key")
    except InvalidSignature:
        raise VerificationError(f"{what} is invalid (the signed content was altered)") from None


def check_signing_key(key: object, what: str) -> SigningKey:
    """The key, if it is a type signatures support."""
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise InputError(f"{what} has an unsupported type {type(key).__name__}")
    return key


def key_matches(cert: x509.Certificate, key: SigningKey) -> bool:
    """Does ``key`` belong to ``cert``?"""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
