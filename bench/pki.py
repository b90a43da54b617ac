"""Benchmark: issuing client certificates and building a large CRL, measured in one run.

    python bench/pki.py                1,000 certificates per method, a CRL of 100,000 revoked serials
    python bench/pki.py --quick        200 certificates, a CRL of 20,000 serials (a smoke run)
    python bench/pki.py --json F       also write every figure to F

Methods, each issuing N client certificates (EC P-256) from an intermediate with an encrypted key:

* ``openssl loop`` (the baseline): per certificate ``openssl genpkey`` + ``openssl req -new`` +
  ``openssl x509 -req`` -- what a hand-rolled shell script does;
* ``API batch``: :meth:`CertificateAuthority.issue_clients` -- one locked SQLite transaction (WAL,
  synchronous=FULL, so durable on return) and one audit event per certificate, group-committed;
* ``API loop``: :meth:`CertificateAuthority.issue_client` called N times: N transactions, N audit fsyncs;
* ``CLI batch``: ``edgesec pki issue client --from-file users.csv`` in a fresh process (start-up included).

Then the CRL: N_CRL certificates are issued and revoked (not timed), and ``generate_crl()`` is timed --
the query, building and signing the CRL, storing it and publishing the trust bundle -- followed by
``TrustBundle.load`` of the published bundle and one verification against it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesec import auditing  # noqa: E402
from edgesec.pki.api import CertificateAuthority, ClientRequest, TrustBundle, verify_certificate  # noqa: E402

PASSPHRASE = b"bench passphrase"


def openssl_loop(n: int, work: Path, ca: CertificateAuthority) -> float:
    cert, key = ca.leaf("bench-signer")
    from cryptography.hazmat.primitives import serialization

    (work / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ext = work / "ext.cnf"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    t = time.perf_counter()
    for i in range(n):
        k, r, c = work / f"{i}.key", work / f"{i}.csr", work / f"{i}.crt"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", k], check=True, capture_output=True)  # fmt: skip
        subprocess.run(["openssl", "req", "-new", "-key", k, "-subj", f"/O=Bench/CN=user{i}", "-out", r],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["openssl", "x509", "-req", "-in", r, "-CA", work / "ca.pem", "-CAkey", work / "ca.key",
                        "-set_serial", str(1000 + i), "-days", "365", "-extfile", ext, "-out", c],
                       check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - t


def new_ca(home: Path) -> CertificateAuthority:
    return CertificateAuthority.init(home, org="Bench", passphrase=PASSPHRASE)


def api_batch(n: int, home: Path) -> float:
    ca = new_ca(home)
    reqs = [ClientRequest(f"user{i}", email=f"user{i}@bench.local") for i in range(n)]
    ca.signer()  # decrypt the intermediate key once, as any long-running caller would
    t = time.perf_counter()
    ca.issue_clients(reqs)
    return time.perf_counter() - t


def api_loop(n: int, home: Path) -> float:
    ca = new_ca(home)
    ca.signer()
    t = time.perf_counter()
    for i in range(n):
        ca.issue_client(f"user{i}", email=f"user{i}@bench.local")
    return time.perf_counter() - t


def cli_batch(n: int, home: Path) -> float:
    new_ca(home).close()
    csv = home / "users.csv"
    csv.write_text("id,email\n" + "".join(f"user{i},user{i}@bench.local\n" for i in range(n)))
    env = {**os.environ, "EDGESEC_HOME": str(home), "EDGESEC_CA_PASSPHRASE": PASSPHRASE.decode(),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgesec", "--quiet", "pki", "issue", "client", "--from-file", str(csv)],
                   check=True, env=env)  # fmt: skip
    return time.perf_counter() - t


def big_crl(n: int, home: Path) -> dict[str, float]:
    ca = new_ca(home)
    for start in range(0, n, 5000):
        ca.issue_clients([ClientRequest(f"r{i}") for i in range(start, min(n, start + 5000))])
    # Revoke them all in one statement: revoke() regenerates the CRL each time, which is what is measured.
    conn = ca._db()
    with ca._write():
        conn.execute("UPDATE certs SET revoked_at = issued_at, revocation_reason = 'cessation-of-operation'")
    t = time.perf_counter()
    out = ca.generate_crl()
    t_crl = time.perf_counter() - t
    assert out["crls"][0]["entries"] == n
    t = time.perf_counter()
    trust = TrustBundle.load(ca.trust_dir)
    t_load = time.perf_counter() - t
    cert, _ = ca.issue_client("still-valid")
    trust = TrustBundle.load(ca.trust_dir)
    t = time.perf_counter()
    verify_certificate(cert, purpose="client", trust=trust)
    t_verify = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(1000):
        verify_certificate(cert, purpose="client", trust=trust)
    t_cached = (time.perf_counter() - t) / 1000
    size = (ca.trust_dir / "crl.pem").stat().st_size
    return {"crl_build_s": t_crl, "bundle_load_s": t_load, "first_verify_ms": t_verify * 1000,
            "cached_verify_us": t_cached * 1e6, "crl_pem_bytes": size}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-n", type=int, default=None, help="certificates per method (default 1000)")
    ap.add_argument("--crl", type=int, default=None, help="revoked serials in the CRL (default 100000)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    n = a.n or (200 if a.quick else 1000)
    n_crl = a.crl or (20_000 if a.quick else 100_000)
    figures: dict[str, object] = {"n": n, "n_crl": n_crl}
    with tempfile.TemporaryDirectory(prefix="edgesec-bench-pki-") as tmp:
        base = Path(tmp)
        os.environ["EDGESEC_HOME"] = str(base / "home0")
        auditing.configure(base / "audit")  # the default durability: fsync
        signer_ca = new_ca(base / "home0")
        signer_ca.issue_signing("bench-signer")  # any key will do as the openssl loop's issuer
        work = base / "openssl"
        work.mkdir()
        times = {
            "openssl loop": openssl_loop(n, work, signer_ca),
            "API batch": api_batch(n, base / "home1"),
            "API loop": api_loop(n, base / "home2"),
            "CLI batch": cli_batch(n, base / "home3"),
        }
        rates = {k: n / v for k, v in times.items()}
        base_rate = rates["openssl loop"]
        print(f"issuing {n} EC P-256 client certificates (durable store, audit event per certificate):")
        for k, v in rates.items():
            print(f"  {k:13s} {times[k]:8.2f} s  {v:9.0f} certs/s  {v / base_rate:6.1f}x openssl loop")
        figures["issue"] = {k: {"seconds": times[k], "certs_per_s": rates[k], "x_openssl": rates[k] / base_rate}
                            for k in times}  # fmt: skip
        print("targets: API >= 50x, CLI batch >= 20x the openssl loop")
        crl = big_crl(n_crl, base / "home4")
        figures["crl"] = crl
        print(f"CRL with {n_crl} revoked serials: built, signed, stored and published in {crl['crl_build_s']:.2f} s "
              f"(target <= 5 s); {crl['crl_pem_bytes'] / 1e6:.1f} MB PEM")  # fmt: skip
        print(f"  TrustBundle.load {crl['bundle_load_s']:.2f} s; first verify {crl['first_verify_ms']:.2f} ms; "
              f"cached verify {crl['cached_verify_us']:.0f} us")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
