"""Operational failures of the CA as one line and exit 2, with the cause: a damaged inventory, a user
without access to the store, a full disk, a read-only trust directory. Disk full and read-only use a
tmpfs and a read-only bind mount in a private mount namespace (``unshare -m``), so the host is untouched."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PASSPHRASE


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("  hint:")]
    assert len(lines) == 1 and lines[0].startswith("edgesec: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


@pytest.fixture
def inited(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGESEC_CA_PASSPHRASE", PASSPHRASE.decode())
    assert cli("pki", "init", "--org", "Clinic")[0] == 0
    for n in ("alice", "bob"):
        assert cli("pki", "issue", "client", n)[0] == 0
    return cli


def test_damaged_inventory_is_one_line(inited, home: Path) -> None:  # type: ignore[no-untyped-def]
    db = home / "pki" / "inventory.db"
    data = bytearray(db.read_bytes())
    for i in range(200, len(data), 97):
        data[i] ^= 0xFF
    db.write_bytes(bytes(data))
    for argv in (["pki", "list"], ["pki", "revoke", "bob"], ["pki", "issue", "client", "carol"]):
        code, _, err = inited(*argv)
        assert code == 2, (argv, err)
        assert "damaged" in _one_line(err)


def test_damaged_intermediate_certificate_is_neither_used_nor_published(inited, home: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from cryptography import x509

    conn = sqlite3.connect(home / "pki" / "inventory.db")
    (pem,) = conn.execute("SELECT cert_pem FROM cas WHERE role='intermediate'").fetchone()
    cert = x509.load_pem_x509_certificate(pem.encode())
    der = bytearray(
        cert.public_bytes(
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER
        )
    )
    der[-10] ^= 0x01  # inside the signature: still parses, no longer verifies
    import base64

    bad = (
        "-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(der)).decode()
        + "-----END CERTIFICATE-----\n"
    )
    conn.execute("UPDATE cas SET cert_pem=? WHERE role='intermediate'", (bad,))
    conn.commit()
    conn.close()
    before = (home / "trust" / "intermediates.pem").read_bytes()
    for argv in (["pki", "issue", "client", "carol"], ["pki", "publish"], ["pki", "crl"]):
        code, _, err = inited(*argv)
        assert code == 2, (argv, err)
        assert "damaged" in _one_line(err) and "does not verify under the root" in err
    assert (home / "trust" / "intermediates.pem").read_bytes() == before


@pytest.mark.root
def test_user_without_access_to_the_store(inited, home: Path) -> None:  # type: ignore[no-untyped-def]
    os.chmod(home, 0o755)
    os.seteuid(65534)
    try:
        code, _, err = inited("pki", "list")
        code2, _, err2 = inited("pki", "revoke", "bob")
    finally:
        os.seteuid(0)
    assert code == 2 and "permission" in _one_line(err).lower(), err
    assert code2 == 2 and "permission" in _one_line(err2).lower(), err2


def _ns(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a private mount namespace (mounts vanish with it)."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _edgesec_cmd(home: Path, *argv: str) -> str:
    env = f"EDGESEC_HOME={shlex.quote(str(home))} EDGESEC_CA_PASSPHRASE={shlex.quote(PASSPHRASE.decode())} NO_COLOR=1"
    args = " ".join(shlex.quote(a) for a in argv)
    return f"env {env} PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', ''))} {sys.executable} -m edgesec {args}"


def _results(out: str) -> dict[str, tuple[int, str]]:
    """Each step prints ``@@name rc`` after its stderr (captured to a file and cat'ed)."""
    res: dict[str, tuple[int, str]] = {}
    for block in out.split("@@start ")[1:]:
        name, rest = block.split("\n", 1)
        err, tail = rest.rsplit("@@rc ", 1)
        res[name] = (int(tail.split()[0]), err)
    return res


def _step(name: str, cmd: str) -> str:
    return f'echo "@@start {name}"; set +e; {cmd} >/dev/null 2>/tmp/edgesec-step.err; rc=$?; set -e; cat /tmp/edgesec-step.err; echo "@@rc $rc"\n'


@pytest.mark.real("unshare", "mount")
@pytest.mark.root
def test_full_disk_and_read_only_trust_directory(inited, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _missing

    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        _missing("mount namespaces are not available here")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    h = mnt / "home"
    script = f"""
mount -t tmpfs -o size=8m tmpfs {mnt}
cp -a {home} {h}
# fill the disk
dd if=/dev/zero of={mnt}/filler bs=64k 2>/dev/null || true
{_step("revoke-full", _edgesec_cmd(h, "pki", "revoke", "bob"))}
{_step("issue-full", _edgesec_cmd(h, "pki", "issue", "client", "carol"))}
rm {mnt}/filler
{_step("list-after-full", _edgesec_cmd(h, "--json", "pki", "list"))}
mount --bind {h}/trust {h}/trust
mount -o remount,ro,bind {h}/trust
{_step("revoke-ro", _edgesec_cmd(h, "pki", "revoke", "alice"))}
umount {h}/trust
{_step("list-after-ro", _edgesec_cmd(h, "pki", "list"))}
{_step("revoke-again", _edgesec_cmd(h, "pki", "revoke", "alice"))}
cp -a {h}/trust {tmp_path}/trust-after
cp -a {h}/pki/status.json {tmp_path}/status-after.json
"""
    p = _ns(script)
    assert p.returncode == 0, p.stderr
    r = _results(p.stdout)
    code, err = r["revoke-full"]
    assert code == 2 and "no space left" in _one_line(err).lower(), err
    code, err = r["issue-full"]
    assert code == 2 and "no space left" in _one_line(err).lower(), err
    assert r["list-after-full"][0] == 0
    code, err = r["revoke-ro"]
    assert code == 2, err
    line = _one_line(err)
    assert "read-only file system" in line.lower() and "the change is recorded" in line, line
    code, err = r["list-after-ro"]
    assert code == 0 and "published the trust bundle" in err, err  # the next command finished it
    assert r["revoke-again"][0] == 0  # already revoked: signs and publishes again
    from cryptography import x509

    status = json.loads((tmp_path / "status-after.json").read_text())
    revoked = {x["name"] for x in status["publication"]["recent_revocations"]}
    assert revoked == {"alice"}  # bob's revocation under a full disk changed nothing
    text = (tmp_path / "trust-after" / "crl.pem").read_text()
    crls = [
        x509.load_pem_x509_crl((b + "-----END X509 CRL-----\n").encode())
        for b in text.split("-----END X509 CRL-----")[:-1]
    ]
    serials = {e.serial_number for c in crls for e in c}
    assert {int(x["serial"], 16) for x in status["publication"]["recent_revocations"]} <= serials
    shutil.rmtree(tmp_path / "trust-after")
