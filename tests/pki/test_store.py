"""The CA store through the API: init rules, passphrase sources, offline root, inventory, renew,
rotation, backup/restore, audit events."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgesec.errors import AlreadyExists, InputError, NotFound, VerificationError
from edgesec.pki.api import CertificateAuthority, TrustBundle, verify_certificate
from edgesec.pki.backup import backup, restore
from edgesec.pki.trust import utcnow

from .conftest import PASSPHRASE


def _trail(home: Path) -> list[dict]:  # type: ignore[type-arg]
    from edgesec import auditing

    auditing.flush()
    f = home / "audit" / "trail.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_init_layout_permissions_and_profiles(ca: CertificateAuthority, home: Path) -> None:
    assert oct(ca.dir.stat().st_mode & 0o777) == "0o700"
    for f in ("inventory.db", "ca/root.key", "ca/intermediate-1.key"):
        assert oct((ca.dir / f).stat().st_mode & 0o777) == "0o600", f
    for f in ("ca/root.key", "ca/intermediate-1.key"):
        assert (ca.dir / f).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    root, inter = ca.root_certificate(), ca.intermediates()[0]
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ibc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ibc.critical and ibc.value.path_length == 0
    for c in (root, inter):
        with pytest.raises(x509.ExtensionNotFound):
            c.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        ku = c.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert 3640 <= (root.not_valid_after_utc - root.not_valid_before_utc).days <= 3651
    assert 1820 <= (inter.not_valid_after_utc - inter.not_valid_before_utc).days <= 1826
    cert, _ = ca.issue_client("alice")
    assert cert.serial_number.bit_length() >= 64 and cert.serial_number > 0
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        ski.digest
        and aki.key_identifier
        == inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    # the trust bundle is world-readable and complete
    for f in ("root.pem", "intermediates.pem", "ca-bundle.pem", "crl.pem", "bundle.json"):
        assert oct((ca.trust_dir / f).stat().st_mode & 0o777) == "0o644"
    manifest = json.loads((ca.trust_dir / "bundle.json").read_text())
    assert len(manifest["crls"]) == 2 and len(manifest["intermediates"]) == 1


def test_init_refuses_existing_store_and_changes_nothing(ca: CertificateAuthority, home: Path) -> None:
    before = _tree(ca.dir)
    with pytest.raises(AlreadyExists):
        CertificateAuthority.init(home, org="Other", passphrase=PASSPHRASE)
    with pytest.raises(AlreadyExists):
        CertificateAuthority.init(home, org="Other", encrypt=False)
    assert _tree(ca.dir) == before


def test_init_input_errors(home: Path) -> None:
    with pytest.raises(InputError, match="no CA passphrase"):
        CertificateAuthority.init(home, org="X")
    with pytest.raises(InputError, match="at least 8"):
        CertificateAuthority.init(home, org="X", passphrase=b"short")
    with pytest.raises(InputError, match="unknown key type"):
        CertificateAuthority.init(home, org="X", key_type="dsa-1024", passphrase=PASSPHRASE)
    with pytest.raises(InputError, match="permit-ip"):
        CertificateAuthority.init(home, org="X", permit_ip=["10.0.0.1/8"], passphrase=PASSPHRASE)
    with pytest.raises(InputError, match="offline-root directory does not exist"):
        CertificateAuthority.init(home, org="X", offline_root=home / "nope", passphrase=PASSPHRASE)
    assert not (home / "pki").exists()


def test_passphrase_sources(
    ca: CertificateAuthority, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # env
    monkeypatch.setenv("EDGESEC_CA_PASSPHRASE", PASSPHRASE.decode())
    CertificateAuthority.open(home).issue_client("via-env")
    monkeypatch.delenv("EDGESEC_CA_PASSPHRASE")
    # systemd credentials
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "edgesec-ca-passphrase").write_bytes(PASSPHRASE + b"\n")
    (creds / "edgesec-ca-passphrase").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    CertificateAuthority.open(home).issue_client("via-credentials")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    # explicit, and the wrong one
    CertificateAuthority.open(home, passphrase=PASSPHRASE).issue_client("via-api")
    with pytest.raises(VerificationError, match="wrong passphrase for intermediate CA key"):
        CertificateAuthority.open(home, passphrase=b"not the passphrase").issue_client("x")
    with pytest.raises(InputError, match="encrypted and no passphrase"):
        CertificateAuthority.open(home).issue_client("y")
    names = [r.name for r in CertificateAuthority.open(home).list_certificates()]
    assert names == ["via-env", "via-credentials", "via-api"]


def test_corrupt_key_is_one_line(ca: CertificateAuthority, home: Path) -> None:
    (ca.dir / "ca" / "intermediate-1.key").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(InputError, match="intermediate CA key is corrupt"):
        CertificateAuthority.open(home, passphrase=PASSPHRASE).issue_client("x")


def test_no_encrypt_store(home: Path) -> None:
    ca = CertificateAuthority.init(home, org="Lab", encrypt=False)
    assert (ca.dir / "ca" / "root.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    CertificateAuthority.open(home).issue_signing("models")


def test_offline_root(home: Path, tmp_path: Path) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    ca = CertificateAuthority.init(home, org="Bank", offline_root=media, passphrase=PASSPHRASE)
    assert not (ca.dir / "ca" / "root.key").exists()
    keys = list(media.glob("edgesec-root-*.key"))
    assert len(keys) == 1 and keys[0].read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    ca.issue_client("alice")
    ca.generate_crl()  # the intermediate alone renews the CRL
    with pytest.raises(InputError, match="offline root"):
        ca.rotate_intermediate()
    with pytest.raises(NotFound):
        ca.rotate_intermediate(offline_root=tmp_path)
    new = ca.rotate_intermediate(offline_root=media)
    assert "Intermediate CA 2" in new.subject.rfc4514_string()


def test_names_unique_renew_keeps_history(ca: CertificateAuthority, trust: TrustBundle) -> None:
    first, _ = ca.issue_client("alice", email="alice@clinic.local")
    with pytest.raises(AlreadyExists, match="already exists"):
        ca.issue_client("alice")
    second = ca.renew("alice")
    assert second.serial_number != first.serial_number
    assert second.public_key() != first.public_key()
    recs = [r for r in ca.list_certificates() if r.name == "alice"]
    assert [r.current for r in recs] == [False, True]
    assert recs[1].sans == ["email:alice@clinic.local"]
    assert ca.leaf("alice")[0] == second
    third = ca.renew("alice", revoke_old=True)
    recs = {r.serial: r for r in ca.list_certificates()}
    assert recs[f"{second.serial_number:x}"].status == "revoked"
    assert recs[f"{second.serial_number:x}"].revocation_reason == "superseded"
    fresh = trust.reload_if_changed()
    with pytest.raises(VerificationError, match="revoked"):
        verify_certificate(second, purpose="client", trust=fresh)
    verify_certificate(first, purpose="client", trust=fresh)  # renewal without --revoke-old keeps it valid
    verify_certificate(third, purpose="client", trust=fresh)
    with pytest.raises(NotFound):
        ca.renew("nobody")


def test_revoke_by_serial_and_crl_numbers(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue_client("alice")
    n0 = int(ca.meta("crl_number") or 0)
    serial = ":".join(f"{cert.serial_number:x}"[i : i + 2] for i in range(0, 8, 2))
    with pytest.raises(NotFound):
        ca.revoke(serial)  # a prefix is not a serial
    ca.revoke(f"0x{cert.serial_number:X}", "privilege-withdrawn")
    assert not ca.last_revoke_repeated
    n1 = int(ca.meta("crl_number") or 0)
    assert n1 == n0 + 1
    # Revoking it again signs and publishes the CRLs again (a revocation is never left unpublished); the
    # first reason stays.
    ca.revoke("alice")
    assert ca.last_revoke_repeated
    assert ca.get("alice").revocation_reason == "privilege-withdrawn"
    with pytest.raises(InputError, match="unknown revocation reason"):
        ca.issue_client("bob")
        ca.revoke("bob", "because")
    n1 = int(ca.meta("crl_number") or 0)
    assert n1 == n0 + 2
    ca.generate_crl()
    crls = ca.current_crls()
    numbers = {c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for c in crls[1:]}
    assert numbers == {n1 + 1}
    inter_crl = crls[-1]
    entry = inter_crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.privilege_withdrawn
    )
    assert inter_crl.next_update_utc is not None
    assert (inter_crl.next_update_utc - inter_crl.last_update_utc).days == ca.settings.crl_days


def test_list_expiring_and_status(ca: CertificateAuthority) -> None:
    ca.issue_client("short", days=10)
    ca.issue_client("long", days=300)
    ca.issue_client("gone", days=5)
    ca.revoke("gone")
    real = ca.clock
    ca.clock = lambda: utcnow() - dt.timedelta(days=30)
    ca.issue_client("old", days=1)
    ca.clock = real
    assert [r.name for r in ca.list_certificates(expiring_days=30)] == ["short"]
    status = {r.name: r.status for r in ca.list_certificates()}
    assert status == {"short": "valid", "long": "valid", "gone": "revoked", "old": "expired"}


def test_server_needs_san_and_names_checked(ca: CertificateAuthority) -> None:
    with pytest.raises(InputError, match="needs at least one DNS"):
        ca.issue_server("web", [])
    with pytest.raises(InputError, match="invalid certificate name"):
        ca.issue_client("bad name")
    with pytest.raises(InputError, match="wildcard"):
        ca.issue_server("web", ["DNS:*.clinic.local"])
    with pytest.raises(InputError, match="unknown SAN type"):
        ca.issue_server("web", ["FTP:x"])


def test_name_constraints_enforced_on_issue(home: Path) -> None:
    ca = CertificateAuthority.init(
        home, org="Bank", permit_dns=["bank.local"], permit_ip=["10.0.0.0/8"], passphrase=PASSPHRASE
    )
    ca.issue_server("ok", ["DNS:a.bank.local", "DNS:bank.local", "IP:10.1.1.1"])
    for bad in ("DNS:notbank.local", "DNS:bank.local.evil.com", "IP:192.168.1.1", "IP:::1"):
        with pytest.raises(InputError, match="outside the CA's name constraints"):
            ca.issue_server("bad", [bad])
    nc = ca.intermediates()[0].extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical


def test_rotation_overlap(ca: CertificateAuthority, trust: TrustBundle) -> None:
    old, _ = ca.issue_client("alice")
    ca.rotate_intermediate()
    new, _ = ca.issue_client("bob")
    assert new.issuer != old.issuer
    fresh = trust.reload_if_changed()
    assert len(fresh.intermediates) == 2 and len(fresh.crls) == 3
    verify_certificate(old, purpose="client", trust=fresh)
    verify_certificate(new, purpose="client", trust=fresh)
    ca.revoke("alice")  # the old intermediate still signs its CRL
    with pytest.raises(VerificationError, match="revoked"):
        verify_certificate(old, purpose="client", trust=fresh.reload_if_changed())


def test_backup_restore_round_trip(ca: CertificateAuthority, home: Path, tmp_path: Path) -> None:
    ca.issue_client("alice")
    ca.issue_server("llm", ["DNS:llm.clinic.local"])
    ca.revoke("alice")
    out = tmp_path / "pki.backup"
    backup(ca, out, PASSPHRASE)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(AlreadyExists):
        backup(ca, out, PASSPHRASE)
    with pytest.raises(AlreadyExists):
        restore(out, home, PASSPHRASE)
    with pytest.raises(VerificationError, match="wrong passphrase"):
        restore(out, tmp_path / "fresh", b"wrong passphrase")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a backup")
    with pytest.raises(InputError, match="not an edgesec pki backup"):
        restore(garbage, tmp_path / "fresh", PASSPHRASE)
    fresh_home = tmp_path / "fresh"
    restored = restore(out, fresh_home, PASSPHRASE)
    assert [r.to_json() for r in restored.list_certificates()] == [
        r.to_json() for r in ca.list_certificates()
    ]
    assert _tree(restored.dir / "ca") == _tree(ca.dir / "ca")
    dump = lambda d: list(sqlite3.connect(d / "inventory.db").iterdump())  # noqa: E731
    assert dump(restored.dir) == dump(ca.dir)
    assert oct(restored.dir.stat().st_mode & 0o777) == "0o700"
    assert (restored.dir / "status.json").is_file()
    assert oct((restored.dir / "ca" / "root.key").stat().st_mode & 0o777) == "0o600"
    # the restored CA works: same root, and it can issue
    restored._passphrase_source = PASSPHRASE
    cert, _ = restored.issue_client("carol")
    verify_certificate(cert, purpose="client", trust=TrustBundle.load(restored.trust_dir))
    assert (restored.trust_dir / "root.pem").read_bytes() == (ca.trust_dir / "root.pem").read_bytes()


def test_audit_events(ca: CertificateAuthority, home: Path) -> None:
    ca.issue_client("alice")
    ca.revoke("alice", "key-compromise")
    ca.rotate_intermediate()
    actions = [d["event"]["action"] for d in _trail(home)]
    for a in ("pki.ca.initialized", "pki.certificate.issued", "pki.certificate.revoked", "pki.crl.generated",
              "pki.intermediate.rotated"):  # fmt: skip
        assert a in actions, a
    issued = next(d for d in _trail(home) if d["event"]["action"] == "pki.certificate.issued")
    assert issued["file"]["x509"]["serial_number"] == ca.get("alice").serial
    assert issued["edgesec"]["pki"]["profile"] == "client"
    assert issued["user"]["id"]


def test_open_missing_store(home: Path) -> None:
    with pytest.raises(NotFound, match="no CA store"):
        CertificateAuthority.open(home)


def test_export_pem_refuses_overwrite(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.issue_signing("models")
    files = ca.export_pem("models", tmp_path / "out")
    assert oct(os.stat(files["key.pem"]).st_mode & 0o777) == "0o600"
    with pytest.raises(AlreadyExists):
        ca.export_pem("models", tmp_path / "out")
    ca.export_pem("models", tmp_path / "out", replace=True)
    assert ca.get("models").paths == [str((tmp_path / "out").absolute())]


def test_verify_at_a_past_time_uses_todays_crl(ca: CertificateAuthority, trust: TrustBundle) -> None:
    """A verification at a past time (``pki verify --at``, a proven signing time) uses the current CRL."""
    cert, _ = ca.issue_signing("models")
    signed_at = utcnow() + dt.timedelta(hours=1)  # a time other than now
    ca.generate_crl()  # cron renews the CRL (one from the future would be refused: its thisUpdate is checked)
    fresh = trust.reload_if_changed()
    verify_certificate(cert, purpose="signing", trust=fresh, at=signed_at)
    ca.revoke("models", "key-compromise")
    with pytest.raises(VerificationError, match="revoked"):
        verify_certificate(cert, purpose="signing", trust=fresh.reload_if_changed(), at=signed_at)


def test_bundle_with_forged_or_foreign_crl(ca: CertificateAuthority, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from edgesec.pki.builder import generate_key
    from edgesec.pki.crl import build_crl

    cert, _ = ca.issue_client("alice")
    inter = ca.intermediates()[0]
    crl_file = ca.trust_dir / "crl.pem"
    good = crl_file.read_bytes()
    # a CRL "from" our intermediate but signed by another key: the bundle refuses to load (tampering)
    forged = build_crl(inter, generate_key("ec-p256"), [], 99, utcnow(), utcnow() + dt.timedelta(days=1))
    crl_file.write_bytes(good + forged.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(VerificationError, match="not signed by any CA"):
        TrustBundle.load(ca.trust_dir)
    # a CRL of a CA the bundle does not hold is ignored
    other = CertificateAuthority.init(tmp_path / "other", org="Other", encrypt=False, publish=False)
    crl_file.write_bytes(good + other.current_crls()[-1].public_bytes(serialization.Encoding.PEM))
    verify_certificate(cert, purpose="client", trust=TrustBundle.load(ca.trust_dir))
    # no CRL at all for the intermediate: fail closed
    crl_file.write_bytes(ca.current_crls()[0].public_bytes(serialization.Encoding.PEM))
    with pytest.raises(VerificationError, match="no CRL from"):
        verify_certificate(cert, purpose="client", trust=TrustBundle.load(ca.trust_dir))


def test_routine_crl_run_renews_an_online_roots_crl(
    ca: CertificateAuthority, home: Path, tmp_path: Path
) -> None:
    def root_next_update(c: CertificateAuthority) -> dt.datetime:
        nu = c.current_crls()[0].next_update_utc
        assert nu is not None
        return nu

    first = root_next_update(ca)
    ca.clock = lambda: utcnow() + dt.timedelta(days=100)
    ca.generate_crl()
    assert root_next_update(ca) == first  # far from due: the root key is not touched
    ca.clock = lambda: utcnow() + dt.timedelta(days=ca.settings.root_crl_days - 10)
    ca.generate_crl()
    assert root_next_update(ca) > first + dt.timedelta(days=300)
    # an offline root is never looked for by the routine run
    media = tmp_path / "usb"
    media.mkdir()
    off = CertificateAuthority.init(tmp_path / "h2", org="Bank", offline_root=media, passphrase=PASSPHRASE)
    before = root_next_update(off)
    off.clock = lambda: utcnow() + dt.timedelta(days=off.settings.root_crl_days - 10)
    off.generate_crl()
    assert root_next_update(off) == before
