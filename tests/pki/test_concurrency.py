"""Two processes issuing at once, and ``kill -9`` at random points, leave a consistent store."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgesec.pki.api import CertificateAuthority, TrustBundle, verify_certificate

from .conftest import PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
from edgesec.pki.api import CertificateAuthority, ClientRequest
ca = CertificateAuthority.open(sys.argv[1], passphrase=sys.argv[2].encode())
prefix, n, batch = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
for i in range(n):
    if batch:
        ca.issue_clients([ClientRequest(f"{prefix}-{i}-{j}") for j in range(batch)])
    else:
        ca.issue_client(f"{prefix}-{i}")
    if i % 7 == 3:
        ca.revoke(f"{prefix}-{i}" if not batch else f"{prefix}-{i}-0")
print("done", flush=True)
"""


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "EDGESEC_HOME": str(home), "PYTHONPATH": str(ROOT)}


def _worker(home: Path, prefix: str, n: int, batch: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(home), PASSPHRASE.decode(), prefix, str(n), str(batch)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_consistent(home: Path) -> int:
    """Every inventory row parses, its key matches its certificate, names are unique among current
    certificates, the published CRL matches the inventory's revocations, and SQLite is intact."""
    db = home / "pki" / "inventory.db"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT serial, name, cert_pem, key_pem, current FROM certs").fetchall()
        dup = conn.execute(
            "SELECT name FROM certs WHERE current=1 GROUP BY name HAVING COUNT(*) > 1"
        ).fetchall()
    finally:
        conn.close()
    assert dup == []
    for serial, _name, cert_pem, key_pem, _ in rows:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        assert f"{cert.serial_number:x}" == serial
        key = serialization.load_pem_private_key(key_pem.encode(), None)
        assert key.public_key() == cert.public_key()
    ca = CertificateAuthority.open(home, passphrase=PASSPHRASE)
    ca.generate_crl()  # a later run (cron) finishes any publication a kill interrupted
    trust = TrustBundle.load(ca.trust_dir)
    for rec in ca.list_certificates():
        cert = ca.certificate(rec.serial)
        if rec.status == "revoked":
            try:
                verify_certificate(cert, purpose="client", trust=trust)
            except Exception as exc:
                assert "revoked" in str(exc)
            else:
                raise AssertionError(f"{rec.name} is revoked in the inventory but verifies")
        else:
            verify_certificate(cert, purpose="client", trust=trust)
    ca.close()
    return len(rows)


def test_concurrent_issuers(home: Path) -> None:
    CertificateAuthority.init(home, org="Clinic", passphrase=PASSPHRASE).close()
    procs = [_worker(home, "a", 25), _worker(home, "b", 25), _worker(home, "c", 5, batch=10)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert assert_consistent(home) == 25 + 25 + 50


def test_kill_9_mid_issue(home: Path) -> None:
    CertificateAuthority.init(home, org="Clinic", passphrase=PASSPHRASE).close()
    rnd = random.Random(1234)
    for round_ in range(6):
        p = _worker(home, f"k{round_}", 100_000, batch=rnd.choice([0, 20]))
        time.sleep(0.4 + rnd.random() * 0.8)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        assert p.returncode == -signal.SIGKILL
        assert_consistent(home)
    # the store still works after all that, and the lock was released by the dead processes
    ca = CertificateAuthority.open(home, passphrase=PASSPHRASE)
    ca.issue_client("after-the-storm")
    assert assert_consistent(home) > 1


def test_kill_9_mid_init_leaves_no_store(home: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom edgesec.pki.api import CertificateAuthority\n"
        "CertificateAuthority.init(sys.argv[1], org='X', key_type='rsa-4096', passphrase=b'long enough pass')\n"
    )
    target = tmp_path / "h"
    for delay in (0.05, 0.3, 0.6):
        p = subprocess.Popen([sys.executable, "-c", code, str(target)], env=_env(target))
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        # either no store, or a complete one: never a half-made store that blocks the next init
        if (target / "pki").exists():
            assert (target / "pki" / "inventory.db").is_file()
            CertificateAuthority.open(target).close()
            break
        assert not CertificateAuthority.exists(target)
    else:
        CertificateAuthority.init(target, org="X", passphrase=PASSPHRASE).close()
    assert CertificateAuthority.exists(target)


PUBLISHER = """
import sys
from edgesec.pki.api import CertificateAuthority
ca = CertificateAuthority.open(sys.argv[1], passphrase=sys.argv[2].encode())
for _ in range(int(sys.argv[3])):
    if sys.argv[4] == "crl":
        ca.generate_crl()
    else:
        ca.publish(run_hooks=False)
print("done", flush=True)
"""


def test_publication_racing_revocations_never_drops_one(home: Path) -> None:
    """Revocations in one process while another re-signs and republishes: publish() reads what it
    writes under the store lock, so the bundle in the end lists every revocation (it once dropped a fresh
    one when a concurrent `pki crl` published a CRL read before the lock)."""
    ca = CertificateAuthority.init(home, org="Race", passphrase=PASSPHRASE)
    names = [f"r{i}" for i in range(12)]
    for n in names:
        ca.issue_client(n)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(home), PASSPHRASE.decode(), "15", mode],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("crl", "publish")
    ]
    for n in names:
        ca.revoke(n, "key-compromise")
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "done" in out, err
    published = TrustBundle.load(ca.trust_dir)
    for n in names:
        cert = ca.certificate(n)
        try:
            verify_certificate(cert, purpose="client", trust=published)
        except Exception as exc:
            assert "revoked" in str(exc), exc
        else:
            raise AssertionError(f"{n} is revoked in the inventory but accepted by the published bundle")
    expected = "".join(r[0] for r in ca._current_crl_rows()).encode()
    assert (ca.trust_dir / "crl.pem").read_bytes() == expected
