"""A hostile-CSR corpus, built by this script (each case named): every CSR is either refused through
``edgesec pki sign-csr`` with exit 2, one line (no warning, no traceback, no 2 kB echo) and a
``pki.csr.refused`` audit event, or issued exactly by the profile -- the profile's extensions, only the SAN
types it defines, and the device's public key byte for byte."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import PASSPHRASE, run

_EC = ec.generate_private_key(ec.SECP256R1())


def _csr(
    cn: str | None = "device-1",
    sans: list[x509.GeneralName] | None = None,
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = _EC,
    extra: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
) -> bytes:
    import warnings

    with warnings.catch_warnings():  # the hostile 2 kB CN: the library warns while we build it
        warnings.simplefilter("ignore")
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)] if cn is not None else []
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, crit in extra:
        b = b.add_extension(ext, critical=crit)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _pss_csr(tmp: Path) -> bytes:
    out = tmp / "pss.csr"
    p = run("openssl", "req", "-new", "-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048",
            "-nodes", "-keyout", tmp / "pss.key", "-out", out, "-subj", "/CN=pss-device")  # fmt: skip
    assert p.returncode == 0, p.stderr
    return out.read_bytes()


def _tampered() -> bytes:
    der = bytearray(x509.load_pem_x509_csr(_csr("tamper-me")).public_bytes(serialization.Encoding.DER))
    i = der.find(b"tamper-me")
    der[i] ^= 0x01
    return bytes(der)


DNS = x509.DNSName
URI = x509.UniformResourceIdentifier
EMAIL = x509.RFC822Name

# name -> (profile, builder); every one must be refused.
REFUSED: dict[str, tuple[str, Callable[[Path], bytes]]] = {
    "client-4000-dns-sans": (
        "client", lambda _: _csr("bulk", [DNS(f"h{i}.clinic.local") for i in range(4000)])
    ),
    "client-with-dns-san": ("client", lambda _: _csr("alice2", [DNS("alice.clinic.local")])),
    "client-with-ip-san": ("client", lambda _: _csr("alice3", [x509.IPAddress(ipaddress.ip_address("10.0.0.9"))])),
    "client-two-emails": ("client", lambda _: _csr("alice4", [EMAIL("a@clinic.local"), EMAIL("b@clinic.local")])),
    "server-with-email-san": ("server", lambda _: _csr("srv1", [DNS("srv1.clinic.local"), EMAIL("x@clinic.local")])),
    "server-101-sans": ("server", lambda _: _csr("srv2", [DNS(f"h{i}.clinic.local") for i in range(101)])),
    "server-wildcard": ("server", lambda _: _csr("srv3", [DNS("*.clinic.local")])),
    "signing-with-dns-san": ("signing", lambda _: _csr("signer2", [DNS("signer.clinic.local")])),
    "cn-2000-characters": ("client", lambda _: _csr("a" * 2000)),
    "cn-role-prefix": ("client", lambda _: _csr("role:admin")),
    "uri-role-namespace": ("client", lambda _: _csr("mallory", [URI("role:admin")])),
    "uri-spiffe-fails-pkix-lint": ("client", lambda _: _csr("svc", [URI("spiffe://clinic/svc")])),
    "uri-2kb": ("client", lambda _: _csr("svc2", [URI("https://clinic.local/" + "a" * 2000)])),
    "no-common-name": ("client", lambda _: _csr(None)),
    "ca-true": ("client", lambda _: _csr("subca", extra=[(x509.BasicConstraints(ca=True, path_length=None), True)])),
    "rsa-1024": ("client", lambda _: _csr("weak", key=rsa.generate_private_key(public_exponent=65537, key_size=1024))),
    "rsa-pss-key": ("client", _pss_csr),
    "bad-signature": ("client", lambda _: _tampered()),
    "other-name-san": ("client", lambda _: _csr("on", [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))])),
    "not-a-csr": ("client", lambda _: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
}  # fmt: skip


def _edgesec(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {
        **os.environ,
        "EDGESEC_HOME": str(home),
        "EDGESEC_CA_PASSPHRASE": PASSPHRASE.decode(),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "edgesec", *argv], capture_output=True, text=True, timeout=120, env=env, check=False
    )  # fmt: skip


@pytest.fixture(scope="module")
def ca_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("csr-home")
    pw = home / "ca.pass"
    pw.write_bytes(PASSPHRASE)
    pw.chmod(0o600)
    p = _edgesec(home, "pki", "init", "--org", "Clinic", "--passphrase-file", str(pw))
    assert p.returncode == 0, p.stderr
    return home


def _events(home: Path, action: str) -> list[dict]:  # type: ignore[type-arg]
    lines = (home / "audit" / "trail.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"]["action"] == action]


@pytest.mark.real("openssl")
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_csr_refused_with_one_line_and_audited(ca_home: Path, tmp_path: Path, case: str) -> None:
    profile, build = REFUSED[case]
    f = tmp_path / f"{case}.csr"
    f.write_bytes(build(tmp_path))
    before = len(_events(ca_home, "pki.csr.refused"))
    p = _edgesec(ca_home, "pki", "sign-csr", str(f), "--profile", profile)
    assert p.returncode == 2, (case, p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("  hint:")]
    assert len(lines) == 1 and lines[0].startswith("edgesec: error: "), (case, p.stderr)
    assert "Warning" not in p.stderr and "Traceback" not in p.stderr and len(p.stderr) < 600, p.stderr
    assert p.stdout == ""
    refused = _events(ca_home, "pki.csr.refused")
    assert len(refused) == before + 1, case
    assert refused[-1]["event"]["outcome"] in ("failure", "success", "unknown")
    assert refused[-1]["edgesec"]["pki"]["profile"] == profile


def test_accepted_csrs_are_issued_exactly_by_the_profile(ca_home: Path, tmp_path: Path) -> None:
    """A CSR asking for more than the profile gives (a CA key usage, serverAuth on a client) gets only the
    profile; the issued certificate carries the device's SubjectPublicKeyInfo byte for byte."""
    from edgesec.pki.csr import _csr_spki

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "client": _csr(
            "kiosk-3",
            [EMAIL("kiosk-3@clinic.local"), URI("https://clinic.local/devices/kiosk-3")],
            key=rsa_key,
            extra=[
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]), False),
                (x509.KeyUsage(True, False, True, False, False, True, True, False, False), True),
            ],
        ),
        "server": _csr("plc-9", [DNS("plc-9.clinic.local"), x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]),
        "signing": _csr("release-7"),
    }  # fmt: skip
    eku = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH,
           "signing": ExtendedKeyUsageOID.CODE_SIGNING}  # fmt: skip
    for profile, data in cases.items():
        f = tmp_path / f"{profile}.csr"
        f.write_bytes(data)
        out = tmp_path / f"{profile}.pem"
        p = _edgesec(ca_home, "pki", "sign-csr", str(f), "--profile", profile, "--out", str(out))
        assert p.returncode == 0, p.stderr
        cert = x509.load_pem_x509_certificates(out.read_bytes())[0]
        csr = x509.load_pem_x509_csr(data)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert spki == _csr_spki(csr), profile
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [eku[profile]]
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert not ku.key_cert_sign and not ku.crl_sign
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca is False
        try:
            cert_sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            cert_sans = None
        csr_sans = None
        try:
            csr_sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            pass
        assert (list(cert_sans) if cert_sans else []) == (list(csr_sans) if csr_sans else [])


@pytest.mark.parametrize(
    "argv",
    [
        ["client", "role:admin"],
        ["client", "mallory", "--uri", "role:admin"],
        ["client", "mallory", "--uri", "ROLE:teller"],
        ["client", "svc", "--uri", "spiffe://clinic/svc"],
        ["server", "srv", "--san", "DNS:srv.clinic.local,email:x@clinic.local"],
    ],
    ids=["cn-role", "uri-role", "uri-role-upper", "uri-spiffe", "server-email"],
)
def test_issue_refuses_outside_the_profile_and_the_role_namespace(ca_home: Path, argv: list[str]) -> None:
    before = len(_events(ca_home, "pki.certificate.refused"))
    p = _edgesec(ca_home, "pki", "issue", *argv)
    assert p.returncode == 2, p.stderr
    assert len([ln for ln in p.stderr.splitlines() if ln.startswith("edgesec: error: ")]) == 1
    assert len(_events(ca_home, "pki.certificate.refused")) == before + 1


@pytest.mark.real("lint_pkix_cert")
def test_https_uri_client_certificate_lints_clean(ca_home: Path, tmp_path: Path) -> None:
    """The URI form --help suggests is one pkilint's PKIX linter accepts (no invalid_uri_syntax)."""
    from .conftest import pkilint_findings

    p = _edgesec(ca_home, "pki", "issue", "client", "uri-user", "--uri", "https://clinic.local/users/u1")
    assert p.returncode == 0, p.stderr
    q = _edgesec(ca_home, "pki", "export", "uri-user", "--pem", str(tmp_path / "out"))
    assert q.returncode == 0, q.stderr
    assert pkilint_findings("lint_pkix_cert", tmp_path / "out" / "cert.pem") == []
    h = _edgesec(ca_home, "pki", "issue", "client", "--help")
    assert "https://" in h.stdout and "spiffe" not in h.stdout
