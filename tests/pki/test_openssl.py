"""``openssl`` agrees with ``edgesec pki verify``; ``openssl pkcs12`` reads both PKCS#12 modes;
CSRs made by ``openssl req`` are signed, weak or CA requests refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edgesec.errors import InputError, VerificationError
from edgesec.pki.api import CertificateAuthority, TrustBundle, verify_certificate
from edgesec.pki.trust import utcnow

from .conftest import run, write_pem

pytestmark = pytest.mark.real("openssl")


def _openssl_verify(ca: CertificateAuthority, cert: Path, purpose: str, *extra: str) -> tuple[bool, str]:
    t = ca.trust_dir
    p = run(
        "openssl", "verify", "-CAfile", t / "root.pem", "-untrusted", t / "intermediates.pem",
        # OpenSSL 3.0 has no code-signing purpose (3.2 added one): "any" checks the chain and CRL only.
        "-purpose", {"server": "sslserver", "client": "sslclient", "signing": "any"}[purpose],
        *extra, cert,
    )  # fmt: skip
    return p.returncode == 0, p.stdout + p.stderr


def _ours(
    ca: CertificateAuthority, cert: Path, purpose: str, at: dt.datetime | None = None
) -> tuple[bool, str]:
    from edgesec.pki.trust import load_certificate_file

    try:
        verify_certificate(
            load_certificate_file(cert), purpose=purpose, trust=TrustBundle.load(ca.trust_dir), at=at
        )  # type: ignore[arg-type]
        return True, ""
    except VerificationError as exc:
        return False, exc.message


def test_openssl_verify_agrees(ca: CertificateAuthority, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    def edgesec_verify(f: Path, purpose: str) -> bool:
        code, _, err = cli("pki", "verify", str(f), "--purpose", purpose)
        assert code in (0, 1), err
        return code == 0

    ca.issue_server("llm", ["DNS:llm.clinic.local"])
    ca.issue_client("alice")
    ca.issue_client("bob")
    ca.issue_signing("models")
    files = {
        n: write_pem(tmp_path / f"{n}.pem", ca.certificate(n)) for n in ("llm", "alice", "bob", "models")
    }
    crl = ("-crl_check", "-CRLfile", str(ca.trust_dir / "crl.pem"))
    cases = [
        ("llm", "server", True),
        ("llm", "client", False),
        ("alice", "client", True),
        ("alice", "server", False),
        ("models", "signing", True),
        ("models", "client", False),
    ]
    for name, purpose, expected in cases:
        assert _openssl_verify(ca, files[name], purpose, *crl)[0] is expected, (name, purpose)
        assert _ours(ca, files[name], purpose)[0] is expected, (name, purpose)
        assert edgesec_verify(files[name], purpose) is expected, (name, purpose)
    ca.revoke("bob", "key-compromise")
    ok, out = _openssl_verify(ca, files["bob"], "client", *crl)
    assert not ok and "revoked" in out
    ok, msg = _ours(ca, files["bob"], "client")
    assert not ok and "revoked" in msg
    assert not edgesec_verify(files["bob"], "client")
    assert edgesec_verify(files["alice"], "client")
    assert _openssl_verify(ca, files["alice"], "client", *crl)[0]
    assert _ours(ca, files["alice"], "client")[0]
    # Two years on, alice's certificate has expired for both (and our CRL is stale as well).
    later = utcnow() + dt.timedelta(days=800)
    ok, out = _openssl_verify(ca, files["alice"], "client", "-attime", str(int(later.timestamp())))
    assert not ok and "expired" in out
    ok, msg = _ours(ca, files["alice"], "client", at=later)
    assert not ok and "expired" in msg


def test_stale_crl_is_refused_after_grace(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue_client("alice")
    trust = TrustBundle.load(ca.trust_dir)
    days = ca.settings.crl_days
    verify_certificate(cert, purpose="client", trust=trust, at=utcnow() + dt.timedelta(days=days, hours=12))
    with pytest.raises(VerificationError, match="stale"):
        verify_certificate(cert, purpose="client", trust=trust, at=utcnow() + dt.timedelta(days=days + 2))
    # cron (a day before, in the simulated future) renews the CRL with the intermediate's key alone
    ca.clock = lambda: utcnow() + dt.timedelta(days=days + 1)
    ca.generate_crl()
    fresh = trust.reload_if_changed()
    assert fresh is not trust
    verify_certificate(cert, purpose="client", trust=fresh, at=utcnow() + dt.timedelta(days=days + 2))


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_both_modes_read_by_openssl(ca: CertificateAuthority, tmp_path: Path, legacy: bool) -> None:
    ca.issue_client("alice", email="alice@clinic.local")
    out = ca.export_p12("alice", tmp_path / "alice.p12", b"p12-secret", legacy=legacy)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    p = run("openssl", "pkcs12", "-info", "-in", out, "-passin", "pass:p12-secret", "-nokeys")
    assert p.returncode == 0, p.stderr
    info = p.stdout + p.stderr
    if legacy:
        assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info
        assert "MAC: sha1" in info
    else:
        assert "AES-256-CBC" in info and "PBES2" in info
        assert "MAC: sha256" in info
    assert info.count("BEGIN CERTIFICATE") == 3  # leaf, intermediate, root
    assert "friendlyName: alice" in info and "CN = alice" in info
    bad = run("openssl", "pkcs12", "-info", "-in", out, "-passin", "pass:wrong", "-nokeys")
    assert bad.returncode != 0


def _openssl_csr(tmp: Path, name: str, *args: str) -> bytes:
    key, csr = tmp / f"{name}.key", tmp / f"{name}.csr"
    p = run("openssl", "req", "-new", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}", *args)
    assert p.returncode == 0, p.stderr
    return csr.read_bytes()


def test_sign_csr_from_openssl(home: Path, tmp_path: Path) -> None:
    ca = CertificateAuthority.init(
        home, org="Factory", passphrase=b"long enough pass", permit_dns=["plant.local"]
    )
    csr = _openssl_csr(
        tmp_path, "plc-7", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-addext", "subjectAltName=DNS:plc-7.plant.local",
    )  # fmt: skip
    cert = ca.sign_csr(csr, "server")
    rec = ca.get("plc-7")
    assert rec.source == "csr" and not rec.has_key and rec.sans == ["DNS:plc-7.plant.local"]
    leaf = write_pem(tmp_path / "plc.pem", cert)
    assert _openssl_verify(ca, leaf, "server", "-crl_check", "-CRLfile", str(ca.trust_dir / "crl.pem"))[0]
    # the device's key matches the certificate
    p = run("openssl", "x509", "-noout", "-pubkey", "-in", leaf)
    q = run("openssl", "pkey", "-pubout", "-in", tmp_path / "plc-7.key")
    assert p.stdout == q.stdout
    # renewal of a CSR certificate re-certifies the device's key
    renewed = ca.renew("plc-7")
    assert renewed.public_key() == cert.public_key() and renewed.serial_number != cert.serial_number

    with pytest.raises(InputError, match="weak key: RSA 1024"):
        ca.sign_csr(_openssl_csr(tmp_path, "weak", "-newkey", "rsa:1024"), "client")
    with pytest.raises(InputError, match="CA certificate"):
        ca.sign_csr(
            _openssl_csr(tmp_path, "subca", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-addext", "basicConstraints=critical,CA:TRUE"),
            "client",
        )  # fmt: skip
    with pytest.raises(InputError, match="outside the CA's name constraints"):
        ca.sign_csr(
            _openssl_csr(tmp_path, "evil", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-addext", "subjectAltName=DNS:evil.example.com"),
            "server",
        )  # fmt: skip
    with pytest.raises(InputError, match="not a valid PEM or DER"):
        ca.sign_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n", "client"
        )
    # a CSR whose content was altered after signing
    good = _openssl_csr(tmp_path, "dev", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    i = der.find(b"dev")
    der[i : i + 3] = b"dex"
    with pytest.raises(InputError, match="signature is invalid"):
        ca.sign_csr(bytes(der), "client")
