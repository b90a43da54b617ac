"""Is the certificate that signed a manifest one the site trusts to sign models?

The signer must chain to a root in the site's trust bundle (:class:`edgesec.pki.trust.TrustBundle`: root,
intermediates and current CRLs), carry the codeSigning extended key usage, have been valid when it signed,
and be on no current CRL. Unlike a TLS handshake, the chain is checked at the signing time while
revocation is checked now (against today's CRLs, which the pki's ``check_revocation`` does, failing
closed on a missing or stale CRL): a model signed last year by a since-revoked key must fail today.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgesec.errors import VerificationError
from edgesec.pki.trust import TrustBundle


@dataclass(frozen=True)
class Signer:
    """Who signed, as verified: subject, serial, fingerprint and the verified chain (leaf first)."""

    subject: str
    serial: str
    fingerprint_sha256: str
    not_after: dt.datetime
    chain: tuple[x509.Certificate, ...]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _fmt(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_signer(
    chain: tuple[x509.Certificate, ...],
    trust: TrustBundle,
    *,
    at: dt.datetime,
    now: dt.datetime,
) -> Signer:
    """Verify ``chain`` (leaf first) against ``trust`` for model signing at time ``at``.

    Raises :class:`VerificationError` with one line naming what is wrong.
    """
    leaf = chain[0]
    who = leaf.subject.rfc4514_string()
    # EKU first: a server or client certificate must never sign models, whatever its chain.
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise VerificationError(
            f"signing certificate {who} has no extended key usage (codeSigning required)"
        ) from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        names = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku)
        raise VerificationError(f"signing certificate {who} is not a code-signing certificate (EKU: {names})")
    if _is_ca(leaf):
        raise VerificationError(f"signing certificate {who} is a CA certificate")
    if leaf.not_valid_after_utc < at:
        raise VerificationError(
            f"signing certificate {who} had expired ({_fmt(leaf.not_valid_after_utc)}) when it signed ({_fmt(at)})"
        )
    if leaf.not_valid_before_utc > at:
        raise VerificationError(
            f"signing certificate {who} was not yet valid ({_fmt(leaf.not_valid_before_utc)}) when it signed ({_fmt(at)})"
        )

    def eku_ok(_policy: object, _cert: object, _eku: object) -> None:  # checked above, with a clearer message
        return None

    ee = xv.ExtensionPolicy.permit_all().require_present(
        x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, eku_ok
    )
    ca = xv.ExtensionPolicy.webpki_defaults_ca()
    verifier = (
        xv.PolicyBuilder()
        .store(trust.store)
        .time(at)
        .max_chain_depth(4)
        .extension_policies(ca_policy=ca, ee_policy=ee)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, list(chain[1:]) + trust.intermediates)
    except xv.VerificationError as e:
        raise VerificationError(f"signing certificate {who} does not chain to the site root: {e}") from None
    path = tuple(verified.chain)
    # Revocation is judged now, not at signing time: a key compromised after it signed must still fail.
    trust.check_revocation(path, now)
    return Signer(
        subject=who,
        serial=f"{leaf.serial_number:x}",
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        not_after=leaf.not_valid_after_utc,
        chain=path,
    )
