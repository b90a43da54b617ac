"""The ``pki`` check family against real stores on disk (read through the live file probe)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from edgesec.checks.families.pki import CHECKS
from edgesec.checks.interface import CheckContext, Finding, Status
from edgesec.checks.probes import FixedClock, LiveSystem
from edgesec.config import load_config
from edgesec.pki.api import CertificateAuthority
from edgesec.pki.trust import utcnow

from .conftest import PASSPHRASE


def _run(home: Path, at: dt.datetime | None = None) -> dict[str, list[Finding]]:
    ctx = CheckContext(
        system=LiveSystem(), clock=FixedClock(at or utcnow()), config=load_config(None, str(home))
    )
    return {c.meta.id: list(c().run(ctx)) for c in CHECKS}


def _statuses(fs: list[Finding]) -> set[Status]:
    return {f.status for f in fs}


def test_skip_without_ca(home: Path) -> None:
    for cid, fs in _run(home).items():
        assert [f.status for f in fs] == [Status.SKIP], cid
        assert "pki init" in fs[0].message


def test_healthy_ca(ca: CertificateAuthority, home: Path) -> None:
    ca.issue_client("alice")
    res = _run(home)
    assert _statuses(res["pki.ca-validity"]) == {Status.PASS}
    assert _statuses(res["pki.crl-freshness"]) == {Status.PASS}
    assert _statuses(res["pki.weak-algorithms"]) == {Status.PASS}
    assert _statuses(res["pki.leaf-expiry"]) == {Status.PASS}
    kp = res["pki.key-protection"]
    assert {f.status for f in kp if f.resource and f.resource.endswith("intermediate-1.key")} == {Status.PASS}
    assert any(f.status == Status.WARN and "root key is online" in f.message for f in kp)


def test_offline_root_no_warning(home: Path, tmp_path: Path) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    CertificateAuthority.init(home, org="Bank", offline_root=media, passphrase=PASSPHRASE)
    assert _statuses(_run(home)["pki.key-protection"]) == {Status.PASS}


def test_problems_found(home: Path) -> None:
    ca = CertificateAuthority.init(home, org="Lab", encrypt=False)
    ca.issue_client("soon", days=10)
    real = ca.clock
    ca.clock = lambda: utcnow() - dt.timedelta(days=20)
    ca.issue_client("gone", days=5)
    ca.clock = real
    ca.issue_client("fine")
    os.chmod(ca.dir / "ca" / "intermediate-1.key", 0o644)
    res = _run(home)
    kp = res["pki.key-protection"]
    assert any(f.status == Status.FAIL and "mode 644" in f.message for f in kp)
    assert any(f.status == Status.FAIL and "unencrypted" in f.message for f in kp)
    le = {f.resource: f.status for f in res["pki.leaf-expiry"]}
    assert le == {"client:soon": Status.WARN, "client:gone": Status.FAIL}
    # eight days on the weekly CRL has expired; three years on the intermediate is near its end
    assert any(f.status == Status.FAIL and "expired" in f.message
               for f in _run(home, utcnow() + dt.timedelta(days=8))["pki.crl-freshness"])  # fmt: skip
    assert any(f.status == Status.WARN
               for f in _run(home, utcnow() + dt.timedelta(days=6, hours=12))["pki.crl-freshness"])  # fmt: skip
    later = _run(home, utcnow() + dt.timedelta(days=5 * 365 - 100))["pki.ca-validity"]
    assert any(
        f.status == Status.WARN and f.resource and f.resource.startswith("intermediate") for f in later
    )
    gone = _run(home, utcnow() + dt.timedelta(days=6 * 365))["pki.ca-validity"]
    assert any(f.status == Status.FAIL and "expired" in f.message for f in gone)


def test_unpublished_rotation_detected(ca: CertificateAuthority, home: Path) -> None:
    (ca.trust_dir / "intermediates.pem").write_text("")
    res = _run(home)["pki.crl-freshness"]
    assert any(f.status == Status.FAIL and "lacks the active intermediate" in f.message for f in res)
    ca.publish()
    assert _statuses(_run(home)["pki.crl-freshness"]) == {Status.PASS}


def test_offline_root_crl_ceremony_announced(home: Path, tmp_path: Path) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    CertificateAuthority.init(home, org="Bank", offline_root=media, passphrase=PASSPHRASE)
    res = _run(home, utcnow() + dt.timedelta(days=340))["pki.crl-freshness"]
    assert any(f.status == Status.WARN and "root's CRL expires" in f.message for f in res)


def test_revocation_missing_from_published_crl_fails_with_evidence(
    ca: CertificateAuthority, home: Path
) -> None:
    ca.issue_client("alice")
    ca.issue_client("bob")
    ca.revoke("alice", "key-compromise", publish=False)  # committed, never published
    res = _run(home)["pki.crl-freshness"]
    missing = [f for f in res if f.status == Status.FAIL and "not in the published CRL" in f.message]
    assert len(missing) == 1 and "alice" in missing[0].message
    assert missing[0].evidence["published_crl_sha256"] != missing[0].evidence["inventory_crl_sha256"]
    assert not any(f.status == Status.PASS and "matches the inventory" in f.message for f in res)
    ca.publish()
    assert _statuses(_run(home)["pki.crl-freshness"]) == {Status.PASS}


def test_failed_publication_stays_pending_until_the_next_command(
    ca: CertificateAuthority, home: Path
) -> None:
    """A trust directory that cannot take the new CRL (here: crl.pem is a directory) fails the revoke
    with one line; the revocation is committed, the store says so (publish.pending), the check FAILs, and
    the next command's recovery publishes it."""
    import pytest

    from edgesec.errors import InputError

    ca.issue_client("alice")
    crl = ca.trust_dir / "crl.pem"
    crl.unlink()
    crl.mkdir()
    with pytest.raises(InputError, match="the change is recorded, but publishing"):
        ca.revoke("alice")
    assert ca.get("alice").status == "revoked"
    assert (ca.dir / "publish.pending").exists()
    res = _run(home)["pki.crl-freshness"]
    assert any(f.status == Status.FAIL and "committed but not published" in f.message for f in res)
    crl.rmdir()
    again = CertificateAuthority.open(home)
    assert again.needs_recovery()
    done = again.recover()
    assert any("published the trust bundle" in d for d in done)
    assert not (ca.dir / "publish.pending").exists()
    assert _statuses(_run(home)["pki.crl-freshness"]) == {Status.PASS}
    assert again.recover() == []


def test_orphan_intermediate_of_a_killed_rotation_is_not_the_active_one(
    ca: CertificateAuthority, home: Path
) -> None:
    # What a rotation killed before its commit leaves: a certificate and key file no inventory row names.
    (ca.dir / "ca" / "intermediate-7.pem").write_bytes((ca.dir / "ca" / "root.pem").read_bytes())
    (ca.dir / "ca" / "intermediate-7.key").write_bytes(b"junk")
    res = _run(home)
    assert _statuses(res["pki.crl-freshness"]) == {Status.PASS}
    again = CertificateAuthority.open(home)
    assert sorted(Path(d.split()[-1]).name for d in again.recover()) == [
        "intermediate-7.key",
        "intermediate-7.pem",
    ]
    assert not (ca.dir / "ca" / "intermediate-7.pem").exists()


def test_a_stray_file_named_like_an_intermediate_is_not_one(ca: CertificateAuthority, home: Path) -> None:
    """The checks read intermediate file names through the store's layout: ``intermediate-old.pem`` (a copy an
    operator left) is no intermediate, for the checks (no traceback, the real one is assessed) nor for rotation."""
    import json

    (ca.dir / "ca" / "intermediate-old.pem").write_bytes((ca.dir / "ca" / "intermediate-1.pem").read_bytes())
    # A store whose status.json does not name the active intermediate: the checks pick it by file number.
    status = json.loads((ca.dir / "status.json").read_text())
    status.pop("publication", None)
    (ca.dir / "status.json").write_text(json.dumps(status))
    res = _run(home)
    assert _statuses(res["pki.ca-validity"]) == {Status.PASS}
    assert any("intermediate" in f.message for f in res["pki.ca-validity"])
    new = ca.rotate_intermediate()
    assert new.serial_number in {c.serial_number for c in ca.intermediates()}
    assert (ca.dir / "ca" / "intermediate-2.pem").is_file()
