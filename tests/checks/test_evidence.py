"""Signed evidence: ``audit --sign`` with the site's signing certificate, ``evidence verify`` later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.checks.conftest import Passes


@pytest.fixture
def site_signer(cli, home: Path) -> str:  # type: ignore[no-untyped-def]
    code, _, err = cli("pki", "init", "--no-encrypt")
    assert code == 0, err
    code, _, err = cli("pki", "issue", "signing", "auditor")
    assert code == 0, err
    return "auditor"


def test_signed_result_verifies_and_tampering_is_caught(
    cli, use_checks, demo_profile, site_signer, home, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    use_checks(Passes)
    out = tmp_path / "result.json"
    code, _, err = cli(
        "audit",
        "--profile",
        str(demo_profile),
        "--report",
        "json",
        "--out",
        str(out),
        "--sign",
        "--sign-name",
        site_signer,
    )
    assert code == 0, err
    sig = json.loads((tmp_path / "result.json.sig").read_text())
    assert sig["format"] == "edgesec.detached-signature" and sig["algorithm"] == "ecdsa-sha256"
    code, stdout, err = cli("--json", "evidence", "verify", str(out))
    assert code == 0, err
    doc = json.loads(stdout)["result"]
    assert doc["chain_verified"] is True and doc["signer"].startswith("CN=auditor")
    # A PEM file of the site's CA certificates and their CRLs works as the trust anchor too.
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(
        (home / "trust" / "ca-bundle.pem").read_bytes() + (home / "trust" / "crl.pem").read_bytes()
    )
    code, stdout, err = cli("--json", "evidence", "verify", str(out), "--trust", str(anchors))
    assert code == 0, err
    # The root alone cannot say whether the signer was revoked: not a pass.
    code, _, err = cli("evidence", "verify", str(out), "--trust", str(home / "trust" / "root.pem"))
    assert code == 1 and "cannot check revocation" in err
    # One changed byte: exit 1, one line.
    text = out.read_text()
    out.write_text(text.replace('"PASS"', '"FAIL"', 1))
    code, _, err = cli("evidence", "verify", str(out))
    assert code == 1 and "modified after signing" in err
    out.write_text(text)
    # A real signature, but over other bytes (another run): the digest matches, the signature does not.
    other = tmp_path / "other.json"
    code, _, err = cli(
        "audit",
        "--profile",
        str(demo_profile),
        "--report",
        "json",
        "--out",
        str(other),
        "--sign",
        "--sign-name",
        site_signer,
    )
    assert code == 0, err
    swapped = {**sig, "signature": json.loads((tmp_path / "other.json.sig").read_text())["signature"]}
    (tmp_path / "bad.sig").write_text(json.dumps(swapped))
    code, _, err = cli("evidence", "verify", str(out), "--signature", str(tmp_path / "bad.sig"))
    assert code == 1 and "signature" in err and "invalid" in err
    # Unreadable input: exit 2.
    code, _, err = cli("evidence", "verify", str(tmp_path / "nope.json"))
    assert code == 2
    (tmp_path / "junk.sig").write_text("not json")
    code, _, err = cli("evidence", "verify", str(out), "--signature", str(tmp_path / "junk.sig"))
    assert code == 2


def test_foreign_ca_is_rejected(cli, use_checks, demo_profile, site_signer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    use_checks(Passes)
    out = tmp_path / "result.json"
    code, _, err = cli(
        "audit",
        "--profile",
        str(demo_profile),
        "--report",
        "json",
        "--out",
        str(out),
        "--sign",
        "--sign-name",
        site_signer,
    )
    assert code == 0, err
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other Root")])
    now = dt.datetime.now(dt.UTC)
    other = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "other.pem"
    pem.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    code, _, err = cli("evidence", "verify", str(out), "--trust", str(pem))
    assert code == 1 and "untrusted" in err and "does not chain" in err


def test_sign_refuses_a_non_signing_certificate(cli, use_checks, demo_profile, site_signer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    use_checks(Passes)
    code, _, err = cli("pki", "issue", "server", "web.site.internal", "--san", "DNS:web.site.internal")
    assert code == 0, err
    code, _, err = cli("pki", "export", "web.site.internal", "--pem", str(tmp_path / "web"))
    assert code == 0, err
    code, _, err = cli(
        "audit",
        "--profile",
        str(demo_profile),
        "--report",
        "json",
        "--out",
        str(tmp_path / "r.json"),
        "--sign",
        "--sign-cert",
        str(tmp_path / "web" / "cert.pem"),
        "--sign-key",
        str(tmp_path / "web" / "key.pem"),
    )
    assert code == 2 and "refusing to sign" in err and "wrong purpose" in err
    assert not (tmp_path / "r.json").exists()  # refused before anything ran or was written
    code, _, err = cli("audit", "--profile", str(demo_profile), "--sign")
    assert code == 2 and "--sign-cert" in err


def test_sign_with_exported_files(cli, use_checks, demo_profile, site_signer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    use_checks(Passes)
    code, _, err = cli("pki", "export", site_signer, "--pem", str(tmp_path / "signer"))
    assert code == 0, err
    out = tmp_path / "r.json"
    code, _, err = cli(
        "audit",
        "--profile",
        str(demo_profile),
        "--report",
        "json",
        "--out",
        str(out),
        "--sign",
        "--sign-cert",
        str(tmp_path / "signer" / "fullchain.pem"),
        "--sign-key",
        str(tmp_path / "signer" / "key.pem"),
    )
    assert code == 0, err
    assert (
        len(json.loads((tmp_path / "r.json.sig").read_text())["chain"]) == 1
    )  # the intermediate rides along
    code, stdout, err = cli("--json", "evidence", "verify", str(out))
    assert code == 0 and json.loads(stdout)["result"]["chain_verified"] is True, err
    # A key that does not belong to the certificate is refused before anything runs.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = tmp_path / "other.key"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    code, _, err = cli(
        "audit",
        "--profile",
        str(demo_profile),
        "--report",
        "json",
        "--out",
        str(tmp_path / "x.json"),
        "--sign",
        "--sign-cert",
        str(tmp_path / "signer" / "cert.pem"),
        "--sign-key",
        str(other),
    )
    assert code == 2 and "does not match" in err


def test_a_revoked_signer_no_longer_verifies(cli, use_checks, demo_profile, site_signer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Conservative on purpose: once the site revokes a signing certificate, nothing it signed is trusted
    # (a compromised key can sign with any "signed_at").
    use_checks(Passes)
    out = tmp_path / "r.json"
    assert (
        cli(
            "audit",
            "--profile",
            str(demo_profile),
            "--report",
            "json",
            "--out",
            str(out),
            "--sign",
            "--sign-name",
            site_signer,
        )[0]
        == 0
    )
    assert cli("evidence", "verify", str(out))[0] == 0
    assert cli("pki", "revoke", site_signer, "--reason", "key-compromise")[0] == 0
    code, _, err = cli("evidence", "verify", str(out))
    assert code == 1 and "revoked" in err


def _forge_signer(teller_dir: Path, out: Path) -> tuple[Path, Path]:
    """What an attacker with an ordinary client certificate can do: sign a "code-signing" certificate
    for a key of their own with the teller's key (CA:FALSE). Writes forged + teller + intermediate."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    teller_key = serialization.load_pem_private_key((teller_dir / "key.pem").read_bytes(), None)
    assert isinstance(teller_key, ec.EllipticCurvePrivateKey)
    teller, inter = x509.load_pem_x509_certificates((teller_dir / "fullchain.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged-signer")]))
        .issuer_name(teller.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(teller_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    out.mkdir()
    (out / "fullchain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in (forged, teller, inter)))
    (out / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out / "fullchain.pem", out / "key.pem"


def test_a_teller_cannot_make_itself_a_signer(
    cli, use_checks, demo_profile, site_signer, home, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The forgery of issue 14: a client certificate (CA:FALSE) signs a code-signing certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from edgesec.checks.evidence import Signer

    use_checks(Passes)
    assert cli("pki", "issue", "client", "teller")[0] == 0
    assert cli("pki", "export", "teller", "--pem", str(tmp_path / "teller"))[0] == 0
    cert, key = _forge_signer(tmp_path / "teller", tmp_path / "forged")
    # audit --sign refuses the forged chain (exit 2) before running anything.
    out = tmp_path / "r.json"
    code, _, err = cli(
        "audit", "--profile", str(demo_profile), "--report", "json", "--out", str(out),
        "--sign", "--sign-cert", str(cert), "--sign-key", str(key),
    )  # fmt: skip
    assert code == 2 and "refusing to sign" in err, err
    assert not out.exists()
    # The attacker signs with the library instead; every kind of --trust refuses the result.
    out.write_text('{"verdict": "pass"}\n')
    chain = x509.load_pem_x509_certificates(cert.read_bytes())
    pk = serialization.load_pem_private_key(key.read_bytes(), None)
    Signer(chain[0], chain[1:], pk).sign_file(out)  # type: ignore[arg-type]
    trust = home / "trust"
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes((trust / "ca-bundle.pem").read_bytes() + (trust / "crl.pem").read_bytes())
    roots_only = tmp_path / "roots.pem"
    roots_only.write_bytes((trust / "root.pem").read_bytes() + (trust / "crl.pem").read_bytes())
    for extra in ([], ["--trust", str(trust)], ["--trust", str(anchors)], ["--trust", str(roots_only)]):
        code, stdout, err = cli("evidence", "verify", str(out), *extra)
        assert code == 1 and "untrusted" in err, (extra, stdout, err)


def test_a_signing_time_proven_by_the_trail_outlives_the_certificate(
    cli, use_checks, demo_profile, home, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The time rule: a result signed with a 1-day certificate fails once it expired, unless the site's
    signed trail proves it was signed before (its signing event covered by a checkpoint). A result signed
    after the last checkpoint is not proven, however old its claimed time."""
    import datetime as dt

    from edgesec import auditing
    from edgesec.checks.evidence import verify
    from edgesec.errors import VerificationError

    use_checks(Passes)
    assert cli("pki", "init", "--no-encrypt")[0] == 0
    assert cli("pki", "issue", "signing", "auditor", "--days", "1")[0] == 0
    assert cli("pki", "issue", "signing", "trail-signer")[0] == 0
    out = tmp_path / "r.json"
    argv = ("audit", "--profile", str(demo_profile), "--report", "json", "--out")
    assert cli(*argv, str(out), "--sign", "--sign-name", "auditor")[0] == 0
    auditing.flush()
    code, _, err = cli("auditlog", "checkpoint", "--signer", "trail-signer", "--no-send")
    assert code == 0, err
    late = tmp_path / "late.json"  # signed after the checkpoint: its signing event is not covered
    assert cli(*argv, str(late), "--sign", "--sign-name", "auditor")[0] == 0
    auditing.flush()
    trust, trail = home / "trust", home / "audit"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)  # the auditor certificate has expired
    with pytest.raises(VerificationError, match="expired"):
        verify(out, trust=trust, now=later)
    doc = verify(out, trust=trust, proof_trail=trail, now=later)
    assert doc["signed_at_proven"] is True and "covered by the checkpoint" in doc["proven_time"]["by"]
    with pytest.raises(VerificationError, match=r"expired.*not proven.*covered by no checkpoint"):
        verify(late, trust=trust, proof_trail=trail, now=later)
    # Today both verify, and the CLI says which time it relied on.
    code, stdout, err = cli("evidence", "verify", str(out), "--proof-trail", str(trail))
    assert code == 0 and "proven" in stdout, err
    # A revocation that doubts nothing about the key (superseded) after the proven time leaves it valid;
    # a key compromise voids everything the key signed.
    # (A CRL dates revocations to the second: one in the proven second itself counts. The CA's clock
    # is set a minute on, so this revocation is unambiguously after the checkpoint.)
    from edgesec.pki.api import CertificateAuthority

    ca = CertificateAuthority.open(home)
    ca.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    try:
        ca.revoke("auditor", "superseded")
    finally:
        ca.close()
    code, _, err = cli("evidence", "verify", str(out), "--proof-trail", str(trail))
    assert code == 0, err
    code, _, err = cli("evidence", "verify", str(late), "--proof-trail", str(trail))
    assert code == 1 and "revoked" in err
    code, _, err = cli("evidence", "verify", str(out))
    assert code == 1 and "revoked" in err
