"""Keys at rest and the files that unlock them: the KDF as OpenSSL reads it, passphrase files refused
unless private to their owner, directory modes set explicitly, CA certificates checked before use."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from edgesec.errors import InputError
from edgesec.pki import secrets
from edgesec.pki.api import CertificateAuthority

from .conftest import PASSPHRASE, run


def _kdf(path: Path) -> tuple[str, int]:
    """(PRF, iteration count) of an encrypted PKCS#8 file, as `openssl asn1parse` shows them."""
    p = run("openssl", "asn1parse", "-in", path)
    assert p.returncode == 0, p.stderr
    assert ":PBES2" in p.stdout and ":PBKDF2" in p.stdout and ":aes-256-cbc" in p.stdout, p.stdout
    prf = re.search(r"OBJECT\s+:(hmacWith\w+)", p.stdout)
    count = re.search(r"prim: INTEGER\s+:([0-9A-F]+)", p.stdout)
    assert prf and count, p.stdout
    return prf.group(1), int(count.group(1), 16)


@pytest.mark.real("openssl")
def test_ca_and_leaf_keys_use_pbkdf2_600k(ca: CertificateAuthority, tmp_path: Path) -> None:
    for f in ("root.key", "intermediate-1.key"):
        assert _kdf(ca.dir / "ca" / f) == ("hmacWithSHA256", 600_000), f
        # OpenSSL decrypts what we wrote
        p = run(
            "openssl", "pkey", "-in", ca.dir / "ca" / f, "-passin", f"pass:{PASSPHRASE.decode()}", "-noout"
        )
        assert p.returncode == 0, p.stderr
    ca.issue_signing("models", key_passphrase=b"leaf key passphrase")
    ca.export_pem("models", tmp_path / "m")
    assert _kdf(tmp_path / "m" / "key.pem") == ("hmacWithSHA256", 600_000)
    rotated = ca.rotate_intermediate()
    assert rotated is not None
    assert _kdf(ca.dir / "ca" / "intermediate-2.key")[1] == 600_000


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604, 0o620])
def test_passphrase_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "ca.pass"
    f.write_bytes(PASSPHRASE)
    f.chmod(mode)
    with pytest.raises(InputError, match=f"accessible to group or others \\(mode {mode:o}\\)") as exc:
        secrets.read_passphrase_file(f)
    assert exc.value.hint == f"chmod 600 {f}"
    f.chmod(0o600)
    assert secrets.read_passphrase_file(f) == PASSPHRASE
    f.chmod(0o400)
    assert secrets.read_passphrase_file(f) == PASSPHRASE


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_passphrase_file_of_another_user_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "ca.pass"
    f.write_bytes(PASSPHRASE)
    f.chmod(0o600)
    os.chown(f, 65534, 65534)
    with pytest.raises(InputError, match="owned by uid 65534"):
        secrets.read_passphrase_file(f)


def test_passphrase_file_refused_through_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "ca.pass"
    f.write_bytes(PASSPHRASE)
    f.chmod(0o644)
    code, _out, err = cli("pki", "init", "--org", "Bank", "--passphrase-file", str(f))
    assert code == 2 and "accessible to group or others" in err and "Traceback" not in err
    assert not (Path(os.environ["EDGESEC_HOME"]) / "pki").exists()


def test_directory_modes_do_not_come_from_the_umask(home: Path) -> None:
    old = os.umask(0)
    try:
        ca = CertificateAuthority.init(home, org="Bank", passphrase=PASSPHRASE)
    finally:
        os.umask(old)
    assert ca.dir.stat().st_mode & 0o777 == 0o700
    assert (ca.dir / "ca").stat().st_mode & 0o777 == 0o700
    assert ca.trust_dir.stat().st_mode & 0o777 == 0o755
    for f in ca.trust_dir.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


@pytest.mark.real("openssl")
def test_root_and_intermediate_have_separate_passphrases(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The offline root key has its own passphrase: the CRL job (intermediate passphrase only) works, the
    root key opens only with the root's, a rotation needs it, and the two may not be the same."""
    home = Path(os.environ["EDGESEC_HOME"])
    usb = tmp_path / "usb"
    usb.mkdir()
    ca_pw, root_pw = tmp_path / "ca.pass", tmp_path / "root.pass"
    ca_pw.write_bytes(PASSPHRASE)
    root_pw.write_bytes(b"root only, kept with the usb stick")
    for f in (ca_pw, root_pw):
        f.chmod(0o600)
    code, _, err = cli("pki", "init", "--org", "Bank", "--offline-root", str(usb),
                       "--passphrase-file", str(ca_pw), "--root-passphrase-file", str(ca_pw))  # fmt: skip
    assert code == 2 and "must differ" in err
    code, _, err = cli("pki", "init", "--org", "Bank", "--offline-root", str(usb),
                       "--passphrase-file", str(ca_pw), "--root-passphrase-file", str(root_pw))  # fmt: skip
    assert code == 0, err
    assert "shares the intermediate" not in err
    root_key = next(usb.glob("edgesec-root-*.key"))
    inter_key = home / "pki" / "ca" / "intermediate-1.key"

    def opens(key: Path, pw: bytes) -> bool:
        return run("openssl", "pkey", "-in", key, "-passin", f"pass:{pw.decode()}", "-noout").returncode == 0

    assert opens(root_key, b"root only, kept with the usb stick") and not opens(root_key, PASSPHRASE)
    assert opens(inter_key, PASSPHRASE) and not opens(inter_key, b"root only, kept with the usb stick")
    # The CRL job: the intermediate's passphrase from the environment, nothing of the root's.
    monkeypatch.setenv("EDGESEC_CA_PASSPHRASE", PASSPHRASE.decode())
    assert cli("pki", "crl")[0] == 0
    code, _, err = cli("pki", "rotate-intermediate", "--offline-root", str(usb))
    assert code == 1 and "wrong passphrase" in err
    code, _, err = cli(
        "pki", "rotate-intermediate", "--offline-root", str(usb), "--root-passphrase-file", str(root_pw)
    )
    assert code == 0, err
    assert opens(home / "pki" / "ca" / "intermediate-2.key", PASSPHRASE)


def test_shared_passphrase_is_warned_about(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca_pw = tmp_path / "ca.pass"
    ca_pw.write_bytes(PASSPHRASE)
    ca_pw.chmod(0o600)
    code, _, err = cli("pki", "init", "--org", "Bank", "--passphrase-file", str(ca_pw))
    assert code == 0 and "shares the intermediate's passphrase" in err


@pytest.mark.real("openssl")
def test_pkcs12_mac_and_key_bag_both_cost_600k(ca: CertificateAuthority, tmp_path: Path) -> None:
    """The library writes the PKCS#12 MAC at 2,048 iterations whatever the key bag uses, so a password
    could be guessed through the MAC 300 times cheaper; edgesec re-MACs at 600,000 (OpenSSL verifies it)."""
    ca.issue_client("alice")
    out = ca.export_p12("alice", tmp_path / "a.p12", b"p12 password here")
    p = run("openssl", "pkcs12", "-in", out, "-info", "-noout", "-passin", "pass:p12 password here")
    assert p.returncode == 0, p.stderr
    assert "MAC: sha256, Iteration 600000" in p.stderr + p.stdout
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 600000" in p.stderr + p.stdout
    bad = run("openssl", "pkcs12", "-in", out, "-info", "-noout", "-passin", "pass:wrong password")
    assert bad.returncode != 0 and "mac verify" in (bad.stderr + bad.stdout).lower()
    from cryptography.hazmat.primitives.serialization import pkcs12

    loaded = pkcs12.load_pkcs12(out.read_bytes(), b"p12 password here")
    assert loaded.cert is not None and loaded.cert.certificate == ca.leaf("alice")[0]
    assert len(loaded.additional_certs) == 2  # intermediate and root
