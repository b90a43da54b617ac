"""Build the bad-certificate corpus: one directory per case, named by what is wrong with it.

In the spirit of sigstore-python's ``test/assets/x509/build-testcases.py``: every case is made here, from
scratch, each run (nothing generated is committed), and ``tests/pki/test_corpus.py`` runs every case
through every entry point that judges a certificate, through the CLI. Run it by hand to look at a case::

    python -m tests.pki.corpus OUTDIR

Each case directory holds:

* ``trust/`` -- a published trust bundle (``root.pem``, ``intermediates.pem``, ``ca-bundle.pem``, ``crl.pem``);
* ``anchors.pem`` -- the same CA certificates and CRLs in one PEM file (``evidence verify --trust FILE``);
* ``signer.pem`` / ``signer.key`` -- what a signer presents (leaf first, then any certificates it adds);
* ``client.pem`` / ``client.key`` -- the same for a TLS client (authz, ``pki verify --purpose client``);
* ``case.json`` -- ``accepted`` (the verdict every entry point must give), ``what`` is wrong, and
  ``openssl``: what ``openssl verify -x509_strict -crl_check_all`` must answer (``null`` where OpenSSL
  cannot express the rule, with ``openssl_note`` saying why).

The generated leaves carry both codeSigning and clientAuth, so one certificate serves every entry point;
the ``site-*`` cases are issued by edgesec's own CA store instead (one signing and one client leaf).
edgesec's store refuses to issue a certificate whose CN reads as a host name outside its name constraints
(``teller.one`` under ``--permit-dns site.internal``), so that case is generated.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
#: What the corpus's signers claim as their signing time (the claim proves nothing; see the time rule).
CLAIMED_SIGNING_TIME = NOW - dt.timedelta(days=1)
DAY = dt.timedelta(days=1)
BOTH = [ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.CLIENT_AUTH]
PERMITTED = "site.internal"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass
class Issued:
    cert: x509.Certificate
    key: Key


def _name(cn: str, org: str = "edgesec corpus") -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def make(
    cn: str,
    issuer: Issued | None,
    *,
    ca: bool = False,
    path_len: int | None = None,
    basic_constraints: bool = True,
    claims_ca: bool | None = None,
    key_cert_sign: bool = True,
    crl_sign: bool = True,
    eku: Sequence[ObjectIdentifier] | None = BOTH,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: Key | None = None,
    digest: hashes.HashAlgorithm | None = None,
    digital_signature: bool = True,
    permitted_dns: Sequence[str] = (),
    sans: Sequence[x509.GeneralName] = (),
    extra: Sequence[x509.Extension[x509.ExtensionType]] = (),
    subject: x509.Name | None = None,
    issuer_name: x509.Name | None = None,
) -> Issued:
    """One certificate, as a profile would make it unless a keyword says otherwise."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    sign_key = issuer.key if issuer else key
    subj = subject or _name(cn)
    b = (
        x509.CertificateBuilder()
        .subject_name(subj)
        .issuer_name(issuer_name or (issuer.cert.subject if issuer else subj))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - (30 * DAY if ca else DAY))
        .not_valid_after(not_after or NOW + (365 * DAY if ca else 30 * DAY))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(sign_key.public_key()), critical=False
        )
    )
    if basic_constraints:
        says_ca = ca if claims_ca is None else claims_ca
        b = b.add_extension(
            x509.BasicConstraints(ca=says_ca, path_length=path_len if says_ca else None), critical=True
        )
    if ca:
        # keyCertSign and cRLSign (unless the case takes keyCertSign away).
        b = b.add_extension(
            x509.KeyUsage(
                not (key_cert_sign and crl_sign),
                False,
                False,
                False,
                False,
                key_cert_sign,
                crl_sign,
                False,
                False,
            ),
            critical=True,
        )
    else:
        b = b.add_extension(  # digitalSignature only (or, where a case says so, keyEncipherment instead)
            x509.KeyUsage(
                digital_signature, False, not digital_signature, False, False, False, False, False, False
            ),
            critical=True,
        )
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if permitted_dns:
        b = b.add_extension(
            x509.NameConstraints([x509.DNSName(d) for d in permitted_dns], None), critical=True
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext in extra:
        b = b.add_extension(ext.value, critical=ext.critical)
    return Issued(b.sign(sign_key, digest or hashes.SHA256()), key)


Revoked = tuple[x509.Certificate, dt.datetime, x509.ReasonFlags | None]


def crl(
    ca: Issued,
    revoked: Sequence[Revoked] = (),
    *,
    next_update: dt.datetime | None = None,
    sign_key: Key | None = None,
    this_update: dt.datetime | None = None,
    extra: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.CertificateRevocationList:
    key = sign_key or ca.key
    last = this_update or (NOW - dt.timedelta(hours=1) if next_update is None else next_update - 7 * DAY)
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last)
        .next_update(next_update or last + 7 * DAY)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    for ext in extra:
        b = b.add_extension(ext.value, critical=ext.critical)
    for cert, when, reason in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(when)
        if reason is not None:
            rb = rb.add_extension(x509.CRLReason(reason), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(key, hashes.SHA256())


@dataclass
class Built:
    """The parts of one case before they are written out."""

    roots: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]
    signer: list[x509.Certificate]  # leaf first, then what the signer adds
    signer_key: Key
    client: list[x509.Certificate] = field(default_factory=list)
    client_key: Key | None = None


@dataclass(frozen=True)
class Case:
    name: str
    accepted: bool
    what: str
    build: Callable[[Path], Built]
    openssl: bool | None = None  # None: same as ``accepted``
    openssl_note: str | None = None
    openssl_expressible: bool = True


class Site:
    """The usual generated hierarchy: root (pathLen 1) -> intermediate (pathLen 0) -> leaves."""

    def __init__(self, *, permitted_dns: Sequence[str] = ()) -> None:
        self.root = make("Corpus Root", None, ca=True, path_len=1)
        self.inter = make("Corpus Intermediate", self.root, ca=True, path_len=0, permitted_dns=permitted_dns)

    def built(
        self,
        leaf: Issued,
        *,
        extra: Sequence[x509.Certificate] = (),
        intermediates: Sequence[x509.Certificate] | None = None,
        inter_revoked: Sequence[Revoked] = (),
        root_revoked: Sequence[Revoked] = (),
        crls: Sequence[x509.CertificateRevocationList] | None = None,
    ) -> Built:
        return Built(
            roots=[self.root.cert],
            intermediates=list(intermediates) if intermediates is not None else [self.inter.cert],
            crls=list(crls)
            if crls is not None
            else [crl(self.root, root_revoked), crl(self.inter, inter_revoked)],
            signer=[leaf.cert, *extra],
            signer_key=leaf.key,
        )

    def leaf(self, cn: str = "corpus-signer", **kw: Any) -> Issued:
        return make(cn, self.inter, **kw)


# --- the cases ------------------------------------------------------------------------------------------


def _valid(_: Path) -> Built:
    s = Site()
    return s.built(s.leaf())


def _leaf_as_issuer(_: Path) -> Built:
    s = Site()
    teller = s.leaf("teller", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    forged = make("forged-signer", teller)
    return s.built(forged, extra=[teller.cert])


def _ca_between(**kw: Any) -> Callable[[Path], Built]:
    """root -> a sub-CA made with ``kw`` (the root's pathLen 1 allows one) -> leaf."""

    def build(_: Path) -> Built:
        s = Site()
        sub = make("Corpus Sub CA", s.root, ca=True, **kw)
        leaf = make("corpus-signer", sub)
        return s.built(leaf, extra=[sub.cert], crls=[crl(s.root), crl(s.inter), crl(sub)])

    return build


def _pathlen_exceeded(_: Path) -> Built:
    s = Site()
    sub = make("Corpus Sub CA", s.inter, ca=True, path_len=0)
    leaf = make("corpus-signer", sub)
    return s.built(leaf, extra=[sub.cert], crls=[crl(s.root), crl(s.inter), crl(sub)])


def _constrained(leaf_kw: dict[str, Any]) -> Callable[[Path], Built]:
    def build(_: Path) -> Built:
        s = Site(permitted_dns=[PERMITTED])
        return s.built(s.leaf(**leaf_kw))

    return build


def _leaf(**kw: Any) -> Callable[[Path], Built]:
    def build(_: Path) -> Built:
        s = Site()
        return s.built(s.leaf(**kw))

    return build


def _leaf_is_ca(_: Path) -> Built:
    s = Site()
    # Under the root (pathLen 1): a CA the root may issue, presented as a signer.
    leaf = make(
        "corpus-ca-leaf",
        s.root,
        ca=True,
        path_len=0,
        extra=[x509.Extension(x509.ExtendedKeyUsage.oid, False, x509.ExtendedKeyUsage(BOTH))],
    )
    return s.built(leaf, crls=[crl(s.root), crl(s.inter)])


def _revoked(reason: x509.ReasonFlags | None, before: bool) -> Callable[[Path], Built]:
    when = CLAIMED_SIGNING_TIME + (-DAY if before else dt.timedelta(hours=12))

    def build(_: Path) -> Built:
        s = Site()
        leaf = s.leaf()
        return s.built(leaf, inter_revoked=[(leaf.cert, when, reason)])

    return build


def _intermediate_revoked(_: Path) -> Built:
    s = Site()
    return s.built(s.leaf(), root_revoked=[(s.inter.cert, NOW - DAY, x509.ReasonFlags.ca_compromise)])


def _crl_forged(_: Path) -> Built:
    s = Site()
    return s.built(
        s.leaf(), crls=[crl(s.root), crl(s.inter, sign_key=ec.generate_private_key(ec.SECP256R1()))]
    )


def _crl_of_another_ca(_: Path) -> Built:
    s = Site()
    other = make("Other CA", None, ca=True, path_len=0)
    return s.built(s.leaf(), crls=[crl(s.root), crl(other)])


def _crl_stale(_: Path) -> Built:
    s = Site()
    return s.built(s.leaf(), crls=[crl(s.root), crl(s.inter, next_update=NOW - 2 * DAY)])


def _intermediate_expired(_: Path) -> Built:
    s = Site()
    s.inter = make(
        "Corpus Intermediate", s.root, ca=True, path_len=0, not_before=NOW - 60 * DAY, not_after=NOW - DAY
    )
    return s.built(make("corpus-signer", s.inter, not_before=NOW - 30 * DAY, not_after=NOW + 30 * DAY))


def _crl_not_yet_valid(_: Path) -> Built:
    s = Site()
    return s.built(s.leaf(), crls=[crl(s.root), crl(s.inter, this_update=NOW + DAY)])


def _crl_unknown_critical(_: Path) -> Built:
    s = Site()
    ext = x509.Extension(UNKNOWN_OID, True, x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"))
    return s.built(s.leaf(), crls=[crl(s.root), crl(s.inter, extra=[ext])])


def _intermediate_without_crlsign(_: Path) -> Built:
    s = Site()
    s.inter = make("Corpus Intermediate", s.root, ca=True, path_len=0, crl_sign=False)
    return s.built(s.leaf())


def _foreign_root_same_subject(_: Path) -> Built:
    s = Site()
    fake_root = make("", None, ca=True, path_len=1, subject=s.root.cert.subject)
    fake_inter = make("", fake_root, ca=True, path_len=0, subject=s.inter.cert.subject)
    leaf = make("corpus-signer", fake_inter)
    return s.built(leaf, extra=[fake_inter.cert, fake_root.cert])


def _cross_signed_foreign(_: Path) -> Built:
    """A foreign intermediate, plus a "cross-certificate" for it naming the site root as issuer (signed
    with the foreign root's key): only a walker that trusts names would take it."""
    s = Site()
    foreign_root = make("Foreign Root", None, ca=True, path_len=1)
    foreign = make("Foreign Intermediate", foreign_root, ca=True, path_len=0)
    cross = x509.CertificateBuilder(
        issuer_name=s.root.cert.subject,
        subject_name=foreign.cert.subject,
        public_key=foreign.key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=NOW - DAY,
        not_valid_after=NOW + 365 * DAY,
        extensions=list(foreign.cert.extensions),
    ).sign(foreign_root.key, hashes.SHA256())
    leaf = make("corpus-signer", foreign)
    return s.built(leaf, extra=[cross, foreign.cert, foreign_root.cert])


def _sha1_signed(work: Path) -> Built:
    """The intermediate signs the leaf with ECDSA-SHA1. ``cryptography`` refuses to make SHA-1 signatures,
    so ``openssl x509 -req -sha1`` signs a request carrying the leaf's extensions."""
    import subprocess

    s = Site()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("corpus-signer"))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(BOTH), critical=False)
        .sign(key, hashes.SHA256())
    )
    (work / "leaf.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (work / "inter.pem").write_bytes(_pem(s.inter.cert))
    (work / "inter.key").write_bytes(_key_pem(s.inter.key))
    subprocess.run(
        ["openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "inter.pem", "-CAkey", "inter.key", "-sha1",
         "-days", "30", "-copy_extensions", "copyall", "-set_serial", "0x5a1", "-out", "leaf.pem"],
        cwd=work, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    leaf = x509.load_pem_x509_certificate((work / "leaf.pem").read_bytes())
    return s.built(Issued(leaf, key))


def _rsa1024_intermediate(_: Path) -> Built:
    s = Site()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    s.inter = make("Corpus Intermediate", s.root, ca=True, path_len=0, key=weak)
    return s.built(s.leaf())


def _site(kind: str) -> Callable[[Path], Built]:
    """Issued by edgesec's own CA store: offline root, a rotated intermediate, or name constraints."""

    def build(work: Path) -> Built:
        from edgesec.pki.api import CertificateAuthority

        kw: dict[str, Any] = {}
        if kind == "offline-root":
            kw["offline_root"] = work / "usb"
            (work / "usb").mkdir()
        if kind.startswith("permit-dns"):
            kw["permit_dns"] = [PERMITTED]
        ca = CertificateAuthority.init(
            work / "store", org="edgesec corpus", encrypt=False, trust_dir=work / "t", **kw
        )
        try:
            names = {
                "permit-dns-cn-person": ("teller-one", "first_last"),
            }.get(kind, ("signer", "client"))
            if kind == "rotated":
                ca.issue_signing("old-signer")  # under the first intermediate, which stays published
                ca.rotate_intermediate()
            scert, skey = ca.issue_signing(names[0])
            ccert, ckey = ca.issue_client(names[1])
            bundle = ca.trust_bundle()
            built = Built(
                roots=list(bundle.roots),
                intermediates=list(bundle.intermediates),
                crls=[rl.crl for rl in bundle.crls.values()],
                signer=[scert, *ca.chain_for(scert)],
                signer_key=skey,  # type: ignore[arg-type]
                client=[ccert, *ca.chain_for(ccert)],
                client_key=ckey,  # type: ignore[arg-type]
            )
        finally:
            ca.close()
        return built

    return build


def _site_rotated_old(work: Path) -> Built:
    """After a rotation, a certificate issued under the previous intermediate still verifies."""
    from edgesec.pki.api import CertificateAuthority

    ca = CertificateAuthority.init(work / "store", org="edgesec corpus", encrypt=False, trust_dir=work / "t")
    try:
        scert, skey = ca.issue_signing("old-signer")
        ccert, ckey = ca.issue_client("old-client")
        chain_s, chain_c = [scert, *ca.chain_for(scert)], [ccert, *ca.chain_for(ccert)]
        ca.rotate_intermediate()
        bundle = ca.trust_bundle()
        return Built(
            roots=list(bundle.roots),
            intermediates=list(bundle.intermediates),
            crls=[rl.crl for rl in bundle.crls.values()],
            signer=chain_s,
            signer_key=skey,  # type: ignore[arg-type]
            client=chain_c,
            client_key=ckey,  # type: ignore[arg-type]
        )
    finally:
        ca.close()


UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55738.666.1")
_REASONS: list[x509.ReasonFlags | None] = [
    None,
    x509.ReasonFlags.unspecified,
    x509.ReasonFlags.key_compromise,
    x509.ReasonFlags.ca_compromise,
    x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation,
    x509.ReasonFlags.certificate_hold,
    x509.ReasonFlags.privilege_withdrawn,
    x509.ReasonFlags.aa_compromise,
]

CASES: list[Case] = [
    Case("valid", True, "nothing: root -> intermediate -> leaf", _valid),
    Case("site-offline-root", True, "nothing: edgesec's CA with the root key offline", _site("offline-root")),
    Case(
        "site-rotated-intermediate",
        True,
        "nothing: issued under the new intermediate after a rotation",
        _site("rotated"),
    ),
    Case(
        "site-previous-intermediate",
        True,
        "nothing: issued under the previous intermediate, still published",
        _site_rotated_old,
    ),
    Case(
        "site-permit-dns-cn-person",
        True,
        "nothing: a CN that is no host name under --permit-dns",
        _site("permit-dns-cn-person"),
    ),
    Case("leaf-as-issuer", False, "a CA:FALSE client certificate signed the leaf", _leaf_as_issuer),
    Case(
        "issuer-without-basic-constraints",
        False,
        "the issuing CA has no basicConstraints",
        _ca_between(basic_constraints=False),
    ),
    Case("issuer-ca-false", False, "the issuing 'CA' says CA:FALSE", _ca_between(claims_ca=False)),
    Case(
        "issuer-without-keycertsign",
        False,
        "the issuing CA's keyUsage lacks keyCertSign",
        _ca_between(key_cert_sign=False),
    ),
    Case("pathlen-exceeded", False, "a sub-CA under the pathLen-0 intermediate", _pathlen_exceeded),
    Case(
        "name-constraint-dns-san",
        False,
        f"DNS SAN evil.example outside the permitted subtree {PERMITTED}",
        _constrained({"sans": [x509.DNSName("evil.example")]}),
    ),
    Case(
        "name-constraint-cn-hostname",
        False,
        "CN first.last looks like a host name, no DNS SAN, outside the permitted subtree",
        _constrained({"cn": "first.last"}),
    ),
    Case(
        "name-constraint-cn-not-a-hostname",
        True,
        "nothing: CN teller-one (no dot: no host name) under DNS name constraints",
        _constrained({"cn": "teller-one"}),
    ),
    Case(
        "name-constraint-dns-san-inside",
        True,
        "nothing: DNS SAN inside the permitted subtree",
        _constrained({"cn": "box.site.internal", "sans": [x509.DNSName("box.site.internal")]}),
    ),
    Case(
        "wrong-eku",
        False,
        "extendedKeyUsage is serverAuth only",
        _leaf(eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
    ),
    Case(
        "any-eku",
        False,
        "extendedKeyUsage is anyExtendedKeyUsage only",
        _leaf(eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
    ),
    Case(
        "keyusage-without-digitalsignature",
        False,
        "the leaf's keyUsage is keyEncipherment only: its key may not sign",
        _leaf(digital_signature=False),
    ),
    Case(
        "missing-eku",
        False,
        "no extendedKeyUsage",
        _leaf(eku=None),
        openssl=True,
        openssl_note="OpenSSL treats a leaf without extendedKeyUsage as good for any purpose; edgesec requires it",
    ),
    Case(
        "leaf-is-ca",
        False,
        "the leaf is a CA certificate (with the leaf's EKUs)",
        _leaf_is_ca,
        openssl_expressible=False,
        openssl_note="openssl verify accepts a CA certificate as the end entity",
    ),
    Case(
        "expired",
        False,
        "the leaf expired two days ago, before the claimed signing time",
        _leaf(not_before=NOW - 30 * DAY, not_after=NOW - 2 * DAY),
    ),
    Case(
        "expired-after-claimed-signing",
        False,
        "the leaf expired after the signer's claimed signing time (a claim proves nothing)",
        _leaf(not_before=NOW - 30 * DAY, not_after=NOW - dt.timedelta(hours=12)),
    ),
    Case(
        "not-yet-valid",
        False,
        "the leaf is valid from tomorrow",
        _leaf(not_before=NOW + DAY, not_after=NOW + 30 * DAY),
    ),
    Case("intermediate-expired", False, "the intermediate expired yesterday", _intermediate_expired),
    Case(
        "intermediate-revoked",
        False,
        "the intermediate is on the root's CRL (cACompromise)",
        _intermediate_revoked,
    ),
    *[
        Case(
            f"revoked-{'no-reason' if r is None else r.name.replace('_', '-')}-{'before' if before else 'after'}-signing",
            False,
            f"revoked ({'no reason' if r is None else r.value}) {'before' if before else 'after'} the claimed signing time",
            _revoked(r, before),
        )
        for r in _REASONS
        for before in (True, False)
    ],
    Case("crl-forged", False, "the intermediate's CRL is signed by another key", _crl_forged),
    Case(
        "crl-from-another-ca",
        False,
        "no CRL of the intermediate; one of a CA the bundle does not hold",
        _crl_of_another_ca,
    ),
    Case(
        "crl-past-next-update",
        False,
        "the intermediate's CRL is two days past nextUpdate (grace 24 h)",
        _crl_stale,
    ),
    Case("crl-not-yet-valid", False, "the intermediate's CRL has thisUpdate tomorrow", _crl_not_yet_valid),
    Case(
        "crl-unknown-critical-extension",
        False,
        "the intermediate's CRL carries an unknown critical extension (a partial CRL read as complete)",
        _crl_unknown_critical,
    ),
    Case(
        "intermediate-without-crlsign",
        False,
        "the intermediate's keyUsage lacks cRLSign, yet its CRL is the one published",
        _intermediate_without_crlsign,
    ),
    Case(
        "foreign-root-same-subject",
        False,
        "a foreign root and intermediate with the site's names",
        _foreign_root_same_subject,
    ),
    Case(
        "cross-signed-foreign-intermediate",
        False,
        "a foreign intermediate 'cross-signed' in the site root's name",
        _cross_signed_foreign,
    ),
    Case(
        "unknown-critical-extension",
        False,
        "the leaf carries an unknown critical extension",
        _leaf(
            extra=[x509.Extension(UNKNOWN_OID, True, x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"))]
        ),
    ),
    Case(
        "sha1-signature",
        False,
        "the intermediate signed the leaf with ECDSA-SHA1",
        _sha1_signed,
    ),
    Case(
        "rsa-1024-intermediate",
        False,
        "the intermediate's key is RSA-1024",
        _rsa1024_intermediate,
    ),
]


def _pem(*objs: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objs)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_case(case: Case, directory: Path) -> Path:
    """Build ``case`` into ``directory/<name>``; returns that directory."""
    d = directory / case.name
    (d / "work").mkdir(parents=True)
    b = case.build(d / "work")
    t = d / "trust"
    t.mkdir()
    (t / "root.pem").write_bytes(_pem(*b.roots))
    (t / "intermediates.pem").write_bytes(_pem(*b.intermediates))
    (t / "ca-bundle.pem").write_bytes(_pem(*b.roots, *b.intermediates))
    (t / "crl.pem").write_bytes(_pem(*b.crls))
    (d / "anchors.pem").write_bytes(_pem(*b.roots, *b.intermediates, *b.crls))
    (d / "signer.pem").write_bytes(_pem(*b.signer))
    (d / "signer.key").write_bytes(_key_pem(b.signer_key))
    client, client_key = (b.client, b.client_key) if b.client_key is not None else (b.signer, b.signer_key)
    (d / "client.pem").write_bytes(_pem(*client))
    (d / "client.key").write_bytes(_key_pem(client_key))
    meta = {
        "name": case.name,
        "accepted": case.accepted,
        "what": case.what,
        "openssl": (case.accepted if case.openssl is None else case.openssl)
        if case.openssl_expressible
        else None,
        "openssl_note": case.openssl_note,
    }
    (d / "case.json").write_text(json.dumps(meta, indent=1) + "\n")
    return d


def build_all(directory: Path) -> list[Path]:
    return [write_case(c, directory) for c in CASES]


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for p in build_all(out):
        print(p)
