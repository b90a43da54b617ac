"""The published trust bundle and the one certificate verification function every part calls.

The bundle is the public half of the site's trust, published by the CA store whenever it changes:

* ``root.pem`` -- the root certificate;
* ``intermediates.pem`` -- every intermediate still in use (old and new overlap after a rotation);
* ``ca-bundle.pem`` -- root + intermediates (nginx ``ssl_client_certificate``, ``openssl verify -CAfile``);
* ``crl.pem`` -- the current CRL of every CA in the bundle, concatenated (nginx ``ssl_crl``);
* ``bundle.json`` -- what was published when: fingerprints, CRL numbers and nextUpdate times.

:func:`verify_certificate` chains a certificate to the root with ``cryptography.x509.verification`` (path
building, signatures, validity, basicConstraints, pathLen, name constraints) and then does what that API
does not: the purpose (EKU) check and a CRL check of every certificate below the root against the bundle's
CRLs, refusing when a needed CRL is missing, badly signed, or stale beyond the grace period.

It is the only certificate verifier in edgesec: TLS client identities (authz), ``pki verify``, and every
detached signature (signed audit results, model manifests, trail checkpoints) call it, each with one
:class:`Policy` saying the purpose and the time rule. No other module walks issuer links.

The time rule of detached signatures. A signing time written by the signer proves nothing (an expired or
revoked key can back-date). So a signature verifies while its chain is valid *now* and nothing in it is
revoked *now*. Only a signing time *proven* by something the signer cannot forge (:class:`ProvenTime`:
for example the site's own signed checkpoint covering the signing event, or an RFC 3161 token) lets it
outlive its certificate: the chain is then judged at that time, and a revocation counts unless it came
after that time for a reason that does not cast doubt on the key (superseded, affiliationChanged,
cessationOfOperation, privilegeWithdrawn). keyCompromise, cACompromise, aACompromise, certificateHold,
unspecified or no reason always count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgesec._fs import read_input_file
from edgesec.errors import InputError, NotFound, VerificationError
from edgesec.pki.builder import (
    PURPOSE_EKU,
    SubjectAltNames,
    cert_sans,
    cn_as_dns_name,
    common_name,
    dns_within,
)
from edgesec.pki.layout import CRL_FILE, INTERMEDIATES_FILE, ROOT_FILE

Purpose = Literal["server", "client", "signing"]

#: Revocation reasons that do not doubt the key: a revocation for one of these after a proven signing
#: time leaves that signature valid. Every other reason (or none) revokes all the key ever signed.
BENIGN_REASONS = frozenset(
    {
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.privilege_withdrawn,
    }
)


DEFAULT_CRL_GRACE = dt.timedelta(hours=24)
#: How far a CRL's thisUpdate may lie ahead of this host's clock (the CA's host may run a little ahead).
CRL_CLOCK_SKEW = dt.timedelta(minutes=5)
_CACHE_SIZE = 4096


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(_SHA256).hex()


_SHA256 = hashes.SHA256()


def split_pem(data: bytes, label: bytes) -> list[bytes]:
    """Every ``-----BEGIN <label>-----`` block in ``data``."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    out: list[bytes] = []
    pos = 0
    while True:
        i = data.find(begin, pos)
        if i < 0:
            return out
        j = data.find(end, i)
        if j < 0:
            return out
        out.append(data[i : j + len(end)] + b"\n")
        pos = j + len(end)


def load_certificates(data: bytes, *, what: str = "certificate file") -> list[x509.Certificate]:
    """Certificates from PEM (one or many) or a single DER certificate; one line on garbage."""
    try:
        with warnings.catch_warnings():
            # cryptography only warns (for now) about encodings RFC 5280 forbids, such as a negative
            # serial number; we refuse them.
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            if b"-----BEGIN" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
    except CryptographyDeprecationWarning as exc:
        raise InputError(f"{what} holds a certificate RFC 5280 forbids: {str(exc).split('.')[0]}") from None
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm):
        raise InputError(f"{what} is not a valid PEM or DER certificate") from None
    if not certs:
        raise InputError(f"{what} holds no certificate")
    for c in certs:
        problem = malformed(c)
        if problem:
            raise InputError(f"{what} holds a malformed certificate ({problem})")
    return certs


def malformed(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot be used, or None. ``cryptography`` parses names, validity, extensions and
    the key lazily, so a damaged certificate may load and then raise on first use: touch them all once."""
    try:
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number
        list(cert.extensions)
        cert.public_key()
        cert.signature_hash_algorithm  # noqa: B018 - parsed on access
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
        return " ".join(str(exc).split())[:160] or type(exc).__name__
    return None


def load_certificate_file(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    return load_certificates(read_input_file(Path(path), what="certificate file"), what=f"{path}")


@dataclass(frozen=True)
class RevocationList:
    """One CA's CRL, parsed once: the revoked serials in a dict for O(1) look-ups."""

    crl: x509.CertificateRevocationList
    issuer_fingerprint: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    revoked: frozenset[int]
    problem: str | None = None  # why this CRL cannot be relied on (then nothing under its CA verifies)

    def entry(self, serial: int) -> tuple[dt.datetime, x509.ReasonFlags | None]:
        """Revocation date and reason of a serial known to be revoked (looked up only on a hit)."""
        r = self.crl.get_revoked_certificate_by_serial_number(serial)
        if r is None:
            return self.this_update, None
        reason: x509.ReasonFlags | None = None
        for ext in r.extensions:
            if isinstance(ext.value, x509.CRLReason):
                reason = ext.value.reason
        return r.revocation_date_utc, reason


@dataclass(frozen=True)
class ProvenTime:
    """A signing time the signer could not have forged, and what proves it (shown to the operator)."""

    at: dt.datetime
    source: str


@dataclass(frozen=True)
class Policy:
    """What one use of a certificate needs: its purpose, and the time rule.

    ``now``: the time the verdict is for (default: the clock); a TLS identity and an unproven signature
    are judged at it. ``proven``: a proven signing time (detached signatures only, see the module's time
    rule). Build one with :meth:`tls` or :meth:`signature`.
    """

    purpose: Purpose
    now: dt.datetime | None = None
    proven: ProvenTime | None = None

    @classmethod
    def tls(cls, purpose: Purpose, *, now: dt.datetime | None = None) -> Policy:
        return cls(purpose, now=now)

    @classmethod
    def signature(cls, *, now: dt.datetime | None = None, proven: ProvenTime | None = None) -> Policy:
        """A detached signature (evidence, model manifest, checkpoint): codeSigning, the time rule."""
        return cls("signing", now=now, proven=proven)


@dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate that chained to the site root, has the asked purpose, and is not revoked."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # leaf first, root last
    purpose: Purpose
    subject: str
    common_name: str
    serial: str  # lower-case hex, no leading zeros
    not_before: dt.datetime
    not_after: dt.datetime
    sans: SubjectAltNames
    fingerprint_sha256: str
    issuer: str

    def to_json(self) -> dict[str, object]:
        return {
            "purpose": self.purpose,
            "subject": self.subject,
            "common_name": self.common_name,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sans": self.sans.as_strings(),
            "fingerprint_sha256": self.fingerprint_sha256,
            "issuer": self.issuer,
            "chain": [c.subject.rfc4514_string() for c in self.chain],
        }


@dataclass
class _ChainResult:
    chain: tuple[x509.Certificate, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime
    fingerprints: tuple[str, ...]  # of each certificate in ``chain``, for the CRL look-ups


@dataclass
class TrustBundle:
    """The site's roots, intermediates and CRLs, parsed once; safe to share between threads.

    Callers on a hot path (authz, on every request) load it once and call :meth:`reload_if_changed`
    now and then; chain validation results are cached per certificate chain, while the time and CRL
    checks run on every call.
    """

    roots: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    crls: dict[str, RevocationList]  # by issuer certificate fingerprint
    directory: Path | None = None
    crl_grace: dt.timedelta = DEFAULT_CRL_GRACE
    _stamp: tuple[int, ...] = ()
    _store: xv.Store | None = None
    _cache: OrderedDict[tuple[bytes, str], _ChainResult] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, crl_grace: dt.timedelta | None = None) -> TrustBundle:
        """Read a published bundle; a missing root or CRL is a one-line :class:`NotFound`/InputError."""
        d = Path(directory)
        if not (d / ROOT_FILE).is_file():
            raise NotFound(
                f"no trust bundle in {d} (missing {ROOT_FILE})",
                hint="run `edgesec pki init` to create the CA",
            )
        stamp = _stamp_of(d)
        roots = load_certificates(
            read_input_file(d / ROOT_FILE, what="trust bundle root"), what=str(d / ROOT_FILE)
        )
        inter: list[x509.Certificate] = []
        if (d / INTERMEDIATES_FILE).is_file():
            data = read_input_file(d / INTERMEDIATES_FILE, what="trust bundle intermediates")
            if data.strip():
                inter = load_certificates(data, what=str(d / INTERMEDIATES_FILE))
        crl_pems: list[bytes] = []
        if (d / CRL_FILE).is_file():
            crl_pems = split_pem(read_input_file(d / CRL_FILE, what="trust bundle CRL"), b"X509 CRL")
        bundle = cls.from_parts(roots, inter, crl_pems, crl_grace=crl_grace)
        bundle.directory = d
        bundle._stamp = stamp
        return bundle

    @classmethod
    def from_parts(
        cls,
        roots: Sequence[x509.Certificate],
        intermediates: Sequence[x509.Certificate],
        crl_pems: Sequence[bytes],
        *,
        crl_grace: dt.timedelta | None = None,
    ) -> TrustBundle:
        cas = list(roots) + list(intermediates)
        crls: dict[str, RevocationList] = {}
        for pem in crl_pems:
            try:
                crl = x509.load_pem_x509_crl(pem)
            except ValueError:
                raise InputError("trust bundle CRL file holds a corrupt CRL") from None
            issuer = _crl_issuer(crl, cas)
            if issuer is None:
                # A CRL of a CA this bundle does not hold (read mid-publication, or a CA that expired):
                # it can revoke nothing we would accept. Certificates of an unknown CA fail anyway.
                continue
            rl = _parse_crl(crl, issuer)
            prev = crls.get(rl.issuer_fingerprint)
            if prev is None or rl.number > prev.number:
                crls[rl.issuer_fingerprint] = rl
        return cls(
            roots=list(roots),
            intermediates=list(intermediates),
            crls=crls,
            crl_grace=DEFAULT_CRL_GRACE if crl_grace is None else crl_grace,
        )

    def changed_on_disk(self) -> bool:
        return self.directory is not None and _stamp_of(self.directory) != self._stamp

    def reload_if_changed(self) -> TrustBundle:
        """This bundle, or a freshly loaded one when the published files changed (cheap: a few stat calls)."""
        if self.directory is not None and self.changed_on_disk():
            return TrustBundle.load(self.directory, crl_grace=self.crl_grace)
        return self

    @property
    def store(self) -> xv.Store:
        if self._store is None:
            self._store = xv.Store(self.roots)
        return self._store

    def crl_for(self, issuer: x509.Certificate) -> RevocationList | None:
        return self.crls.get(_fp(issuer))

    # --- verification ------------------------------------------------------------------------------

    def _chain(
        self, leaf: x509.Certificate, extra: Sequence[x509.Certificate], at: dt.datetime
    ) -> _ChainResult:
        key = (leaf.fingerprint(_SHA256) + b"".join(c.fingerprint(_SHA256) for c in extra), "")
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is not None and hit.valid_from <= at <= hit.valid_until:
            return hit
        # SAN and EKU are checked by us per purpose (clients may carry no SAN; signing certs carry
        # codeSigning); everything else is the library's web-PKI profile.
        ee = (
            xv.ExtensionPolicy.webpki_defaults_ee()
            .may_be_present(x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, None)
            .may_be_present(x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None)
        )
        verifier = (
            xv.PolicyBuilder()
            .store(self.store)
            .time(at)
            .max_chain_depth(4)
            .extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, list(extra) + self.intermediates)
        except xv.VerificationError as exc:
            try:
                reason = _explain(leaf, list(extra) + self.intermediates, self.roots, at, exc)
            except ValueError:
                reason = "untrusted: " + str(exc).split(" (encountered", 1)[0]
            raise VerificationError(reason) from None
        chain = tuple(verified.chain)
        res = _ChainResult(
            chain,
            max(c.not_valid_before_utc for c in chain),
            min(c.not_valid_after_utc for c in chain),
            tuple(_fp(c) for c in chain),
        )
        with self._lock:
            self._cache[key] = res
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return res

    def check_revocation(
        self,
        chain: Sequence[x509.Certificate],
        at: dt.datetime,
        fingerprints: Sequence[str] | None = None,
        *,
        proven: ProvenTime | None = None,
    ) -> None:
        """CRL check of every certificate below the root (the chain is leaf first, root last).

        The CRL must be fresh at ``at`` or now, whichever is later. Any revocation counts, except one
        for a reason in :data:`BENIGN_REASONS` dated after a ``proven`` signing time.
        """
        at = max(at, utcnow())
        for i, (cert, issuer) in enumerate(itertools.pairwise(chain)):
            rl = self.crls.get(fingerprints[i + 1]) if fingerprints else self.crl_for(issuer)
            who = common_name(issuer.subject) or issuer.subject.rfc4514_string()
            if rl is None:
                raise VerificationError(f"no CRL from {who} in the trust bundle: cannot check revocation")
            if rl.problem is not None:
                raise VerificationError(f"the CRL of {who} cannot be relied on: {rl.problem}")
            if rl.this_update > at + CRL_CLOCK_SKEW:
                raise VerificationError(
                    f"the CRL of {who} is not valid before {rl.this_update.isoformat()} (a clock is wrong)"
                )
            if rl.next_update is not None and at > rl.next_update + self.crl_grace:
                raise VerificationError(
                    f"the CRL of {who} is stale (nextUpdate {rl.next_update.isoformat()} plus "
                    f"{_hours(self.crl_grace)} h grace has passed)",
                    hint="run `edgesec pki crl` to publish a fresh CRL",
                )
            if cert.serial_number in rl.revoked:
                when, reason = rl.entry(cert.serial_number)
                if proven is not None and reason in BENIGN_REASONS and when > proven.at:
                    continue
                what = "certificate" if cert is chain[0] else f"CA certificate {common_name(cert.subject)}"
                raise VerificationError(
                    f"{what} {cert.serial_number:x} is revoked since {when.isoformat()}"
                    + (f" ({_reason_name(reason)})" if reason else "")
                )


def _reason_name(reason: x509.ReasonFlags) -> str:
    return reason.value if isinstance(reason.value, str) else reason.name


def verify_certificate(
    chain: Sequence[x509.Certificate] | x509.Certificate,
    *,
    trust: TrustBundle,
    purpose: Purpose | None = None,
    at: dt.datetime | None = None,
    policy: Policy | None = None,
) -> VerifiedCertificate:
    """Verify a certificate (leaf first, then any intermediates) against the bundle, under ``policy``
    (or the TLS policy of ``purpose`` at ``at``, default now).

    Raises :class:`VerificationError` with a one-line reason: untrusted, expired, not yet valid, revoked,
    wrong purpose, or no usable CRL.
    """
    if policy is None:
        if purpose is None:
            raise InputError("verify_certificate needs a purpose or a policy")
        policy = Policy.tls(purpose, now=at)
    elif purpose is not None or at is not None:
        raise InputError("verify_certificate takes a policy, or a purpose and time, not both")
    if policy.purpose not in PURPOSE_EKU:
        raise InputError(f"unknown purpose {policy.purpose!r}; expected server, client or signing")
    certs = [chain] if isinstance(chain, x509.Certificate) else list(chain)
    if not certs:
        raise InputError("no certificate to verify")
    for c in certs:
        problem = malformed(c)
        if problem:
            raise VerificationError(f"malformed certificate: {problem}")
    leaf, extra = certs[0], certs[1:]
    now = _aware(policy.now) if policy.now is not None else utcnow()
    proven = policy.proven
    if proven is not None:
        proven = ProvenTime(_aware(proven.at), proven.source)
        if proven.at > now:
            raise VerificationError(f"the proven signing time {proven.at.isoformat()} is in the future")
    _check_purpose(leaf, policy.purpose)
    res = trust._chain(leaf, extra, proven.at if proven is not None else now)
    _check_cn_name_constraints(res.chain)
    trust.check_revocation(res.chain, now, res.fingerprints, proven=proven)
    return VerifiedCertificate(
        certificate=leaf,
        chain=res.chain,
        purpose=policy.purpose,
        subject=leaf.subject.rfc4514_string(),
        common_name=common_name(leaf.subject),
        serial=f"{leaf.serial_number:x}",
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sans=_safe_sans(leaf),
        fingerprint_sha256=res.fingerprints[0],
        issuer=leaf.issuer.rfc4514_string(),
    )


def _check_cn_name_constraints(chain: Sequence[x509.Certificate]) -> None:
    """A leaf without a DNS SAN whose CN reads as a host name is held to every CA's DNS name constraints,
    as OpenSSL (and so nginx) holds it; ``cryptography`` checks SANs only. One verifier, one answer."""
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if san.get_values_for_type(x509.DNSName):
            return
    except x509.ExtensionNotFound:
        pass
    cns = [
        cn_as_dns_name(common_name(x509.Name([a])))
        for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    names = [c for c in cns if c]
    if not names:
        return
    for ca in chain[1:]:
        try:
            nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        permitted = [g.value for g in nc.permitted_subtrees or () if isinstance(g, x509.DNSName)]
        excluded = [g.value for g in nc.excluded_subtrees or () if isinstance(g, x509.DNSName)]
        who = common_name(ca.subject) or ca.subject.rfc4514_string()
        for name in names:
            if permitted and not any(dns_within(name, b) for b in permitted):
                raise VerificationError(
                    f"untrusted: the CN {name!r} reads as a host name (no DNS SAN) outside the DNS names "
                    f"{who} may certify ({', '.join(permitted)}); OpenSSL and nginx refuse it too"
                )
            if any(dns_within(name, b) for b in excluded):
                raise VerificationError(
                    f"untrusted: the CN {name!r} reads as a host name (no DNS SAN) that {who} excludes"
                )


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def load_anchors(path: str | os.PathLike[str], *, crl_grace: dt.timedelta | None = None) -> TrustBundle:
    """The trust a ``--trust`` argument names: a published bundle directory, or one PEM file holding the
    CA certificates (self-signed ones are the roots, the others intermediates) and their CRLs.

    A PEM file without the CRLs loads, but no certificate verifies against it: revocation cannot be
    checked (the verifier names the missing CRL).
    """
    p = Path(path)
    if p.is_dir():
        return TrustBundle.load(p, crl_grace=crl_grace)
    if not p.exists():
        raise NotFound(f"trust bundle not found: {p}")
    data = read_input_file(p, what="trust anchors")
    certs = load_certificates(b"".join(split_pem(data, b"CERTIFICATE")) or data, what=str(p))
    roots = [c for c in certs if c.subject == c.issuer and _self_signed(c)]
    if not roots:
        raise InputError(f"{p} holds no self-signed root certificate to anchor a chain")
    inter = [c for c in certs if c not in roots]
    return TrustBundle.from_parts(roots, inter, split_pem(data, b"X509 CRL"), crl_grace=crl_grace)


def _self_signed(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# --- helpers ---------------------------------------------------------------------------------------


def _check_purpose(leaf: x509.Certificate, purpose: str) -> None:
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise VerificationError("wrong purpose: a CA certificate is not an end-entity certificate")
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        raise VerificationError("certificate has malformed extensions") from None
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            # Every purpose here signs with the key (TLS 1.3 handshakes, ECDHE, detached signatures).
            raise VerificationError(
                "wrong purpose: the certificate's keyUsage does not allow digitalSignature"
            )
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise VerificationError(
            f"wrong purpose: certificate has no extendedKeyUsage, {purpose} needed"
        ) from None
    if PURPOSE_EKU[purpose] not in eku:
        have = ", ".join(_EKU_NAMES.get(o.dotted_string, o.dotted_string) for o in eku)
        raise VerificationError(f"wrong purpose: certificate is for {have or 'nothing'}, not {purpose}")


_EKU_NAMES = {v.dotted_string: k for k, v in PURPOSE_EKU.items()} | {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string: "anyExtendedKeyUsage"
}


def _safe_sans(cert: x509.Certificate) -> SubjectAltNames:
    try:
        return cert_sans(cert)
    except (InputError, ValueError):
        return SubjectAltNames()


def _explain(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: dt.datetime,
    exc: Exception,
) -> str:
    """Turn the library's error into the one-line reason an operator needs."""
    if at > leaf.not_valid_after_utc:
        return f"certificate expired on {leaf.not_valid_after_utc.isoformat()}"
    if at < leaf.not_valid_before_utc:
        return f"certificate is not valid before {leaf.not_valid_before_utc.isoformat()}"
    known = {c.subject for c in list(pool) + list(roots)}
    if leaf.issuer not in known:
        return f"untrusted: issuer {leaf.issuer.rfc4514_string()} is not a CA of this site"
    for ca in pool:
        if ca.subject == leaf.issuer and at > ca.not_valid_after_utc:
            return f"issuing CA {common_name(ca.subject)} expired on {ca.not_valid_after_utc.isoformat()}"
    msg = str(exc).split(" (encountered", 1)[0].removeprefix("validation failed: ")
    msg = msg.removeprefix("candidates exhausted: ")
    if "all candidates exhausted with no interior errors" in msg:
        msg = "the certificate does not chain to a root of the trust bundle"
    elif msg.startswith("Forbidden signature algorithm"):
        msg = "a certificate in the chain is signed with an algorithm the verifier forbids (SHA-1?)"
    return f"untrusted: {msg}"


def _crl_issuer(
    crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The CA that signed ``crl``; None when no CA of that name is in the bundle; a forged or corrupt
    signature from a CA we hold is an error (fail closed: someone tampered with the bundle)."""
    named = [ca for ca in cas if ca.subject == crl.issuer]
    if not named:
        return None
    for ca in named:
        if crl_signed_by(crl, ca):
            return ca
    raise VerificationError(
        f"trust bundle CRL from {crl.issuer.rfc4514_string()} is not signed by any CA in the bundle"
    )


def crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    """Is ``crl`` issued by ``ca`` (its name and a valid signature by its key)?"""
    if crl.issuer != ca.subject:
        return False
    try:
        return bool(crl.is_signature_valid(ca.public_key()))  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def _crl_problem(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> str | None:
    """What makes a correctly signed CRL unusable, as OpenSSL judges it: a critical extension we do not
    process (a partitioned or delta CRL would be read as complete), or an issuer not allowed to sign CRLs."""
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.crl_sign:
            return "its issuer's keyUsage lacks cRLSign"
    except x509.ExtensionNotFound:
        pass
    for ext in crl.extensions:
        if ext.critical:
            return f"it carries a critical extension edgesec does not process ({ext.oid.dotted_string})"
    return None


def _parse_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> RevocationList:
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    # Only the serials, in a set: what every verification looks up. Dates and reasons are read on a hit.
    revoked = frozenset(r.serial_number for r in crl)
    return RevocationList(
        problem=_crl_problem(crl, issuer),
        crl=crl,
        issuer_fingerprint=_fp(issuer),
        number=number,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        revoked=revoked,
    )


def _stamp_of(d: Path) -> tuple[int, ...]:
    out: list[int] = []
    for name in (ROOT_FILE, INTERMEDIATES_FILE, CRL_FILE):
        try:
            st = (d / name).stat()
            out += [st.st_mtime_ns, st.st_size, st.st_ino]
        except FileNotFoundError:
            out += [0, 0, 0]
    return tuple(out)


def _hours(td: dt.timedelta) -> int:
    return int(td.total_seconds() // 3600)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refuse_unless_accepted(
    chain: Sequence[x509.Certificate],
    trust: TrustBundle | None,
    *,
    now: dt.datetime | None = None,
    what: str = "signing certificate",
) -> VerifiedCertificate:
    """Before signing: the certificate (leaf first, with its chain) must be one this site would accept
    for a signature made now, by the very check verification runs. Anything else is refused as input
    (exit 2): no trust bundle to check against, or a certificate the verifier rejects."""
    if trust is None:
        raise InputError(
            f"refusing to sign: no trust bundle to check the {what} against",
            hint="publish the site PKI (`edgesec pki init`) or name the trust bundle with --trust",
        )
    try:
        return verify_certificate(list(chain), trust=trust, policy=Policy.signature(now=now))
    except VerificationError as exc:
        raise InputError(
            f"refusing to sign: the {what} is not one this site accepts: {exc.message}"
        ) from None
