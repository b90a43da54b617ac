"""Reading and vetting certificate signing requests from outside: one clear error for anything malformed."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from edgesec.errors import InputError
from edgesec.pki.builder import (
    PROFILES,
    PublicKey,
    SubjectAltNames,
    check_name,
    check_profile_sans,
    check_public_key,
)
from edgesec.pki.inventory import (
    _spki,
)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER, with a valid self-signature and parseable subject, key and extensions; one
    line on anything else. The library's warnings (an over-long name, a deprecated encoding) never reach
    the operator's terminal: deprecated encodings are refused, the rest is judged by our own checks."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        return _load_csr(data)


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm, CryptographyDeprecationWarning, x509.InvalidVersion):
        raise InputError("the file is not a valid PEM or DER certificate signing request") from None
    try:
        csr.public_key()
    except (ValueError, UnsupportedAlgorithm, CryptographyDeprecationWarning) as exc:
        raise InputError(f"the CSR's public key is unsupported or malformed: {exc}") from None
    try:
        ok = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm, CryptographyDeprecationWarning):
        ok = False
    if not ok:
        raise InputError("the CSR's signature is invalid (it was altered or not signed by its key)")
    try:
        csr.subject.rfc4514_string()
        list(csr.extensions)
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension, CryptographyDeprecationWarning):
        raise InputError("the CSR's subject or extensions are malformed") from None
    return csr


def _vet_csr(
    csr_data: bytes, profile: str, name: str | None
) -> tuple[x509.CertificateSigningRequest, PublicKey, SubjectAltNames, str]:
    """Everything a CSR is checked for before the CA signs it; raises InputError with one line."""
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; expected server, client or signing")
    csr = load_csr(csr_data)
    spki = _csr_spki(csr)
    public_key = check_public_key(csr.public_key())
    if _spki(public_key) != spki:
        raise InputError(
            f"the CSR's key ({_spki_algorithm(spki)}) cannot be certified exactly as given",
            hint="generate an EC (P-256/P-384) or plain RSA key; RSA-PSS keys are refused",
        )
    try:
        bc = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise InputError("the CSR requests a CA certificate; only end-entity certificates are signed")
    except x509.ExtensionNotFound:
        pass
    try:
        san_ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = SubjectAltNames()
    else:
        if len(san_ext) > MAX_CSR_SANS:
            raise InputError(f"the CSR asks for {len(san_ext)} SANs (at most {MAX_CSR_SANS})")
        sans = SubjectAltNames.from_extension(san_ext)
    check_profile_sans(profile, sans)
    cn = name or _csr_common_name(csr)
    if not cn:
        raise InputError("the CSR has no common name; give --name")
    try:
        check_name(cn)
    except InputError as exc:
        raise InputError(
            f"the CSR's name is not usable: {exc.message}", hint=exc.hint or "give --name"
        ) from None
    return csr, public_key, sans, cn


MAX_CSR_SANS = 100


def _csr_common_name(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's CN without letting the library warn (a 2 kB CN makes it print a warning with a path)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attrs = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if not attrs:
        return None
    v = attrs[0].value
    return v if isinstance(v, str) else None


def _der_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4:
            raise InputError("the CSR is not valid DER")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > len(data):
        raise InputError("the CSR is not valid DER")
    return tag, pos, pos + n


def _csr_spki(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's SubjectPublicKeyInfo exactly as the device encoded it."""
    der = csr.public_bytes(serialization.Encoding.DER)
    try:
        _, body, _ = _der_tlv(der, 0)  # CertificationRequest
        _, info, _ = _der_tlv(der, body)  # CertificationRequestInfo
        _, _, p = _der_tlv(der, info)  # version
        _, _, p = _der_tlv(der, p)  # subject
        _, _, end = _der_tlv(der, p)  # subjectPKInfo
    except IndexError:
        raise InputError("the CSR is not valid DER") from None
    return der[p:end]


_SPKI_ALGORITHMS = {
    "2a864886f70d010101": "RSA",
    "2a864886f70d01010a": "RSA-PSS",
    "2a8648ce3d0201": "EC",
    "2b6570": "Ed25519",
    "2b6571": "Ed448",
}


def _spki_algorithm(spki: bytes) -> str:
    try:
        _, body, _ = _der_tlv(spki, 0)
        _, alg, _ = _der_tlv(spki, body)
        _, oid_start, oid_end = _der_tlv(spki, alg)
    except (IndexError, InputError):
        return "unknown algorithm"
    return _SPKI_ALGORITHMS.get(spki[oid_start:oid_end].hex(), "unknown algorithm")
