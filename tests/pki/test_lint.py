"""Every profile, key type and option combination passes pkilint's PKIX linters with nothing at WARNING+."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesec.pki.api import CertificateAuthority
from edgesec.pki.trust import split_pem

from .conftest import PASSPHRASE, pkilint_findings, write_pem

pytestmark = pytest.mark.real("lint_pkix_cert", "lint_pkix_signer_signee_cert_chain", "lint_crl")


def _lint_store(ca: CertificateAuthority, tmp: Path, *, uri_sans: bool) -> None:
    root = ca.root_certificate()
    root_file = write_pem(tmp / "root.pem", root)
    assert pkilint_findings("lint_pkix_cert", root_file) == []
    for i, inter in enumerate(ca.intermediates()):
        f = write_pem(tmp / f"inter{i}.pem", inter)
        assert pkilint_findings("lint_pkix_cert", f) == [], f
        assert pkilint_findings("lint_pkix_signer_signee_cert_chain", root_file, f) == []
    for rec in ca.list_certificates():
        leaf = write_pem(tmp / f"{rec.name}.pem", ca.certificate(rec.serial))
        # URI SANs too: the CA certifies only the https form pkilint accepts (spiffe:/urn: are refused).
        assert pkilint_findings("lint_pkix_cert", leaf) == [], rec.name
        issuer = write_pem(tmp / "issuer.pem", *ca.chain_for(ca.certificate(rec.serial)))
        assert pkilint_findings("lint_pkix_signer_signee_cert_chain", issuer, leaf) == [], rec.name
    crl_data = (ca.trust_dir / "crl.pem").read_bytes()
    crls = split_pem(crl_data, b"X509 CRL")
    assert len(crls) == 1 + len(ca.intermediates())  # the root's and each intermediate's
    for i, pem in enumerate(crls):
        f = tmp / f"crl{i}.pem"
        f.write_bytes(pem)
        assert pkilint_findings("lint_crl", "-t", "CRL", "-p", "PKIX", f) == []


@pytest.mark.parametrize(
    ("key_type", "constraints"),
    [
        # ec-p256 without constraints is the rotated-store test below minus its name constraints
        ("ec-p256", True),
        ("ec-p384", True),
        ("rsa-3072", False),
        ("rsa-4096", True),
    ],
)
def test_every_profile_lints_clean(home: Path, tmp_path: Path, key_type: str, constraints: bool) -> None:
    ca = CertificateAuthority.init(
        home,
        org="Acme Bank",
        site="branch-7",
        key_type=key_type,
        permit_dns=["bank.local"] if constraints else [],
        permit_ip=["10.20.0.0/16", "fd00::/8"] if constraints else [],
        passphrase=PASSPHRASE,
    )
    ca.issue_server("llm", ["DNS:llm.bank.local", "DNS:api.bank.local", "IP:10.20.1.5"], key_type=key_type)
    ca.issue_server("v6", ["IP:fd00::5"], key_type="ec-p256")
    ca.issue_client("alice", email="alice@bank.local", key_type=key_type)
    ca.issue_client("bob", uri="https://bank.local/users/bob")
    ca.issue_client("carol")
    ca.issue_signing("model-publisher", key_type=key_type)
    ca.revoke("carol", "key-compromise")
    ca.revoke("bob")  # unspecified: the CRL entry carries no reasonCode
    ca.renew("alice", revoke_old=True)
    _lint_store(ca, tmp_path, uri_sans=True)


def test_rotated_intermediate_and_csr_certs_lint_clean(home: Path, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    ca = CertificateAuthority.init(home, org="Factory", passphrase=PASSPHRASE, permit_dns=["plant.local"])
    ca.rotate_intermediate()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plc-7")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("plc-7.plant.local")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), "server")
    _lint_store(ca, tmp_path, uri_sans=False)
