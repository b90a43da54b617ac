"""Hypothesis: names, SANs and CSRs. Whatever the input, the outcome is a certificate that verifies
with exactly the SANs asked for, or one InputError line -- never another exception."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesec.errors import AlreadyExists, InputError
from edgesec.pki.api import CertificateAuthority, SubjectAltNames, TrustBundle, verify_certificate
from edgesec.pki.builder import check_dns_name, check_email, check_name
from edgesec.pki.csr import load_csr

from .conftest import PASSPHRASE

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
DNS = st.lists(LABEL, min_size=1, max_size=4).map(lambda ls: ".".join([*ls, "local"]))
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
EMAIL = (
    st.tuples(st.from_regex(r"[a-z0-9._+-]{1,20}", fullmatch=True), DNS)
    .filter(lambda t: not t[0].startswith(".") and not t[0].endswith(".") and ".." not in t[0])
    .map(lambda t: f"{t[0]}@{t[1]}")
)
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,40}", fullmatch=True)

_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def shared_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    from edgesec import auditing

    home = tmp_path_factory.mktemp("prop-home")
    with auditing.configured(home / "audit", durability="none"):
        ca = CertificateAuthority.init(home, org="Props", passphrase=PASSPHRASE)
    return ca


@given(st.text(max_size=80))
def test_check_name_total(s: str) -> None:
    try:
        assert check_name(s) == s
    except InputError as exc:
        assert "\n" not in exc.message


@given(st.text(max_size=300))
def test_dns_and_email_checks_total(s: str) -> None:
    for fn in (check_dns_name, check_email):
        try:
            out = fn(s)
            assert out.isascii() and " " not in out
        except InputError as exc:
            assert "\n" not in exc.message


@given(st.lists(st.text(max_size=60), max_size=4))
def test_san_parser_total(items: list[str]) -> None:
    try:
        sans = SubjectAltNames.parse(items)
    except InputError:
        return
    assert SubjectAltNames.parse(sans.as_strings()) == sans  # canonical form round-trips


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    name=NAME,
    dns=st.lists(DNS, min_size=1, max_size=3),
    ips=st.lists(st.one_of(IPV4, IPV6), max_size=2),
    emails=st.lists(EMAIL, max_size=1),
)
def test_issued_server_certs_carry_exactly_the_sans(
    shared_ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory, name: str, dns: list[str],
    ips: list[str], emails: list[str],
) -> None:  # fmt: skip
    from edgesec import auditing

    items = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips] + [f"email:{e}" for e in emails]
    with auditing.configured(tmp_path_factory.mktemp("a"), durability="none"):
        try:
            cert, _ = shared_ca.issue_server(name, items)
        except AlreadyExists:
            return
        except InputError as exc:
            # The server profile certifies DNS names and addresses only.
            assert emails and "carries no email SAN" in exc.message
            return
    assert not emails
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.DNSName) == list(dict.fromkeys(d.lower() for d in dns))
    assert ext.get_values_for_type(x509.IPAddress) == list(
        dict.fromkeys(ipaddress.ip_address(i) for i in ips)
    )
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    verify_certificate(cert, purpose="server", trust=TrustBundle.load(shared_ca.trust_dir))


def _csr(cn: str | None, san: list[x509.GeneralName] | None, ca_req: bool = False) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if ca_req:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@given(st.binary(max_size=600))
def test_garbage_csr_is_one_input_error(data: bytes) -> None:
    with pytest.raises(InputError):
        load_csr(data)


@settings(max_examples=60, deadline=None)
@given(
    data=st.builds(
        _csr,
        st.one_of(st.none(), st.text(min_size=1, max_size=16).filter(lambda s: "\x00" not in s)),
        st.one_of(
            st.none(),
            st.lists(
                st.one_of(
                    DNS.map(x509.DNSName),
                    st.text(st.characters(max_codepoint=127), max_size=30).map(x509.DNSName),
                ),
                min_size=1,
                max_size=3,
            ),
        ),
        st.booleans(),
    ),
    flip=st.one_of(st.none(), st.integers(min_value=0, max_value=400)),
)
def test_sign_csr_never_crashes(
    shared_ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory, data: bytes, flip: int | None
) -> None:
    from edgesec import auditing

    if flip is not None and flip < len(data):
        data = data[:flip] + bytes([data[flip] ^ 0x41]) + data[flip + 1 :]
    with auditing.configured(tmp_path_factory.mktemp("a"), durability="none"):
        try:
            cert = shared_ca.sign_csr(data, "client")
        except (InputError, AlreadyExists) as exc:
            assert "\n" not in exc.message
            return
    verify_certificate(cert, purpose="client", trust=TrustBundle.load(shared_ca.trust_dir))


def test_valid_csr_loads() -> None:
    """The strategies above produce valid CSRs too (a guard that they are not all rejected)."""
    csr = load_csr(_csr("dev-1", [x509.DNSName("dev-1.local")]))
    assert csr.is_signature_valid


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_batch_csv_parser_total(text: str) -> None:
    import tempfile

    from edgesec.pki.cli import read_clients_csv

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, encoding="utf-8") as fh:
        fh.write(text)
    try:
        reqs = read_clients_csv(fh.name)
    except InputError as exc:
        assert "\n" not in exc.message
        return
    finally:
        import os

        os.unlink(fh.name)
    assert reqs and all(isinstance(r.id, str) for r in reqs)


def test_ca_certificate_is_not_a_leaf(shared_ca: CertificateAuthority) -> None:
    from edgesec.errors import VerificationError

    inter = shared_ca.intermediates()[0]
    with pytest.raises(VerificationError, match="not an end-entity"):
        verify_certificate(inter, purpose="client", trust=TrustBundle.load(shared_ca.trust_dir))


@settings(max_examples=150, deadline=None)
@given(flip=st.integers(min_value=0, max_value=2000), xor=st.integers(min_value=1, max_value=255))
def test_corrupted_certificates_fail_cleanly(shared_ca: CertificateAuthority, flip: int, xor: int) -> None:
    """A certificate damaged anywhere is refused with one line (or, if the flip is harmless, verifies)."""
    from edgesec.errors import VerificationError
    from edgesec.pki.trust import load_certificates

    trust = _bundle(shared_ca)
    der = bytearray(_alice(shared_ca).public_bytes(serialization.Encoding.DER))
    i = flip % len(der)
    der[i] ^= xor
    try:
        certs = load_certificates(bytes(der))
        verify_certificate(certs, purpose="client", trust=trust)
    except (InputError, VerificationError) as exc:
        assert "\n" not in exc.message


_CACHE: dict[str, object] = {}


def _bundle(ca: CertificateAuthority) -> TrustBundle:
    if "bundle" not in _CACHE:
        _CACHE["bundle"] = TrustBundle.load(ca.trust_dir)
    return _CACHE["bundle"]  # type: ignore[return-value]


def _alice(ca: CertificateAuthority) -> x509.Certificate:
    if "alice" not in _CACHE:
        from edgesec import auditing

        with auditing.configured(ca.dir.parent / "audit-fuzz", durability="none"):
            _CACHE["alice"] = ca.issue_client("fuzz-alice", email="alice@fuzz.local")[0]
        _CACHE.pop("bundle", None)
    return _CACHE["alice"]  # type: ignore[return-value]
