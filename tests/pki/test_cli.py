"""``edgesec pki`` through the CLI: exit codes, ``--json``, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PASSPHRASE


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    f = tmp_path / "ca.pass"
    f.write_bytes(PASSPHRASE + b"\n")
    f.chmod(0o600)
    return f


@pytest.fixture
def inited(cli, pw_file: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    code, _out, err = cli(
        "pki", "init", "--org", "Acme Clinic", "--site", "ward-3", "--passphrase-file", str(pw_file)
    )
    assert code == 0, err
    monkeypatch.setenv("EDGESEC_CA_PASSPHRASE", PASSPHRASE.decode())
    return cli


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("  hint:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("edgesec: error: ")
    return lines[0]


def test_init_and_refusal(cli, pw_file: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("--json", "pki", "init", "--org", "Bank", "--permit-dns", "bank.local",
                       "--passphrase-file", str(pw_file))  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["result"]["name_constraints"]["dns"] == ["bank.local"]
    code, _, err = cli("pki", "init", "--org", "Bank", "--passphrase-file", str(pw_file))
    assert code == 1 and "already exists" in _one_line_error(err)


def test_init_needs_passphrase_or_no_encrypt(cli, home: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("pki", "init", "--org", "Bank")
    assert code == 2 and "no CA passphrase" in _one_line_error(err)
    code, _, err = cli("pki", "init", "--org", "Bank", "--passphrase-file", "/nonexistent/pass")
    assert code == 2 and "passphrase file not found" in _one_line_error(err)
    code, _, err = cli("pki", "init", "--org", "Bank", "--no-encrypt")
    assert code == 0 and "UNENCRYPTED" in err


def test_init_with_systemd_credentials(
    cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "edgesec-ca-passphrase").write_bytes(PASSPHRASE)
    (creds / "edgesec-ca-passphrase").chmod(0o400)  # as systemd writes credentials
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert cli("pki", "init", "--org", "Bank")[0] == 0
    assert (home / "pki" / "ca" / "root.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    assert cli("pki", "issue", "signing", "models")[0] == 0


def test_issue_list_verify_revoke(inited, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    assert cli("pki", "issue", "server", "llm", "--san", "DNS:llm.clinic.local,IP:127.0.0.1")[0] == 0
    assert cli("pki", "issue", "client", "alice", "--email", "alice@clinic.local")[0] == 0
    assert cli("pki", "issue", "signing", "models")[0] == 0
    code, out, _ = cli("pki", "list", "--json")
    recs = json.loads(out)["result"]
    assert [r["name"] for r in recs] == ["llm", "alice", "models"]
    assert {
        "name",
        "profile",
        "serial",
        "subject",
        "sans",
        "not_before",
        "not_after",
        "status",
        "paths",
    } <= set(recs[0])
    assert cli("pki", "export", "alice", "--pem", str(tmp_path / "alice"))[0] == 0
    cert = str(tmp_path / "alice" / "fullchain.pem")
    code, out, _ = cli("--json", "pki", "verify", cert, "--purpose", "client")
    assert code == 0 and json.loads(out)["result"]["common_name"] == "alice"
    code, _, err = cli("pki", "verify", cert, "--purpose", "server")
    assert code == 1 and "wrong purpose" in _one_line_error(err)
    code, _, _ = cli("pki", "revoke", "alice", "--reason", "key-compromise")
    assert code == 0
    code, out, _ = cli("pki", "verify", cert, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["error"]["kind"] == "verification" and "revoked" in doc["error"]["message"]
    code, out, _ = cli("pki", "list", "--json")
    assert [r["status"] for r in json.loads(out)["result"]] == ["valid", "revoked", "valid"]
    code, out, _ = cli("pki", "list", "--expiring", "400", "--json")
    assert [r["name"] for r in json.loads(out)["result"]] == ["llm"]


def test_batch_enrolment(inited, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    good = tmp_path / "users.csv"
    good.write_text(
        "id,email,uri\nalice,alice@clinic.local,\nbob,,https://clinic.local/users/bob\n\ncarol,,\n"
    )
    code, out, err = cli("--json", "pki", "issue", "client", "--from-file", str(good))
    assert code == 0, err
    assert json.loads(out)["result"]["issued"] == 3
    cases = {
        "id,name\nx,y\n": "unknown column",
        "email\nx@y.z\n": "'id' column",
        "id,email\ndave,not-an-email\n": "entry 1: invalid email",
        "id\nerin\nerin\n": "appears twice",
        "id\nfrank\nalice\n": "entry 2: a certificate named 'alice' already exists",
        "": "'id' column",
        "id\n": "lists no clients",
    }
    for text, msg in cases.items():
        f = tmp_path / "bad.csv"
        f.write_text(text)
        code, _, err = cli("pki", "issue", "client", "--from-file", str(f))
        assert code in (1, 2) and msg in _one_line_error(err), (text, err)
    # nothing of a refused batch was issued
    code, out, _ = cli("pki", "list", "--json")
    assert sorted(r["name"] for r in json.loads(out)["result"]) == ["alice", "bob", "carol"]
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli("pki", "issue", "client", "--from-file", str(tmp_path / "bin.csv"))
    assert code == 2 and "not UTF-8" in _one_line_error(err)


def test_bad_inputs_one_line(inited, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    for argv, code_expected, msg in [
        (("pki", "verify", str(garbage)), 2, "not a valid PEM or DER certificate"),
        (("pki", "verify", str(tmp_path / "missing.pem")), 2, "not found"),
        (("pki", "verify", str(garbage), "--purpose", "admin"), 2, "--purpose"),
        (
            ("pki", "sign-csr", str(garbage), "--profile", "client"),
            2,
            "not a valid PEM or DER certificate signing request",
        ),
        (("pki", "sign-csr", str(garbage), "--profile", "root"), 2, "--profile"),
        (("pki", "issue", "server", "web"), 2, "needs at least one DNS"),
        (("pki", "issue", "server", "web", "--san", "DNS:bad_name!"), 2, "invalid DNS name"),
        (("pki", "issue", "server", "web", "--san", "IP:999.1.1.1"), 2, "invalid IP address"),
        (("pki", "issue", "client", "bad name"), 2, "invalid certificate name"),
        (("pki", "revoke", "nobody"), 2, "no certificate with name or serial"),
        (("pki", "revoke", "nobody", "--reason", "because"), 2, "unknown --reason"),
        (("pki", "renew", "nobody"), 2, "no certificate named"),
        (("pki", "export", "nobody", "--pem", str(tmp_path / "x")), 2, "no certificate"),
        (("pki", "export", "x"), 2, "exactly one of"),
        (("pki", "restore", str(garbage)), 2, "not an edgesec pki backup"),
    ]:
        code, _, err = cli(*argv)
        assert code == code_expected and msg in _one_line_error(err), (argv, err)


def test_wrong_passphrase_and_corrupt_key(inited, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    monkeypatch.setenv("EDGESEC_CA_PASSPHRASE", "not the passphrase")
    code, _, err = cli("pki", "issue", "client", "alice")
    assert code == 1 and "wrong passphrase" in _one_line_error(err)
    monkeypatch.setenv("EDGESEC_CA_PASSPHRASE", PASSPHRASE.decode())
    (home / "pki" / "ca" / "intermediate-1.key").write_bytes(b"\x00\x01garbage")
    code, _, err = cli("pki", "issue", "client", "alice")
    assert code == 2 and "corrupt" in _one_line_error(err)


def test_p12_export_cli(inited, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    cli("pki", "issue", "client", "alice")
    pw = tmp_path / "p12.pass"
    pw.write_text("p12-secret\n")
    pw.chmod(0o600)
    assert cli("pki", "export", "alice", "--p12", str(tmp_path / "a.p12"), "--password-file", str(pw))[0] == 0
    code, _, err = cli("pki", "export", "alice", "--p12", str(tmp_path / "a.p12"), "--password-file", str(pw))
    assert code == 1 and "refusing to overwrite" in _one_line_error(err)
    monkeypatch.setenv("EDGESEC_P12_PASSWORD", "p12-secret")
    assert cli("pki", "export", "alice", "--p12", str(tmp_path / "b.p12"), "--legacy")[0] == 0
    code, _, err = cli("pki", "export", "alice", "--pem", str(tmp_path / "d"), "--legacy")
    assert code == 2 and "--legacy applies to --p12" in _one_line_error(err)


def test_backup_restore_cli(inited, tmp_path: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    cli("pki", "issue", "client", "alice")
    out = tmp_path / "b.bin"
    assert cli("pki", "backup", "--out", str(out))[0] == 0
    fresh = tmp_path / "fresh-home"
    code, _, err = cli("--home", str(fresh), "pki", "restore", str(out))
    assert code == 0, err
    code, out1, _ = cli("--json", "pki", "list")
    code, out2, _ = cli("--json", "--home", str(fresh), "pki", "list")
    assert json.loads(out1)["result"] == json.loads(out2)["result"]


def test_real_subprocess(tmp_path: Path, pw_file: Path) -> None:
    env = {**os.environ, "EDGESEC_HOME": str(tmp_path / "h"), "EDGESEC_CA_PASSPHRASE": PASSPHRASE.decode()}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")

    def edgesec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgesec", *args], env=env, capture_output=True, text=True, timeout=60
        )

    assert edgesec("pki", "init", "--org", "Clinic").returncode == 0
    assert edgesec("pki", "issue", "client", "alice").returncode == 0
    p = edgesec("--json", "pki", "list")
    assert p.returncode == 0 and json.loads(p.stdout)["result"][0]["name"] == "alice"
    p = edgesec("pki", "init", "--org", "Clinic")
    assert p.returncode == 1 and p.stderr.count("\n") <= 2 and "Traceback" not in p.stderr


def test_encrypted_leaf_key(inited, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    kp = tmp_path / "leaf.pass"
    kp.write_text("leaf key passphrase\n")
    kp.chmod(0o600)
    assert cli("pki", "issue", "signing", "models", "--key-passphrase-file", str(kp))[0] == 0
    assert cli("pki", "export", "models", "--pem", str(tmp_path / "m"))[0] == 0
    assert (tmp_path / "m" / "key.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    pw = tmp_path / "p12.pass"
    pw.write_text("p12-secret\n")
    pw.chmod(0o600)
    code, _, err = cli(
        "pki", "export", "models", "--p12", str(tmp_path / "m.p12"), "--password-file", str(pw)
    )
    assert code == 2 and "encrypted and no passphrase" in _one_line_error(err)
    code, _, err = cli("pki", "export", "models", "--p12", str(tmp_path / "m.p12"), "--password-file", str(pw),
                       "--key-passphrase-file", str(kp))  # fmt: skip
    assert code == 0, err


def test_failing_reload_hook_is_reported(
    cli, pw_file: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGESEC_CA_ROOT_PASSPHRASE", "the root's own passphrase")
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text('[pki]\nreload_hooks = ["sh -c \\"echo nginx not running >&2; exit 3\\""]\n')
    code, _, err = cli(
        "--config", str(cfg), "pki", "init", "--org", "Bank", "--passphrase-file", str(pw_file)
    )
    assert code == 1 and "reload hook" in _one_line_error(err) and "nginx not running" in err
    # the CA and its bundle were created all the same; the operator fixes the hook and republishes
    assert (home / "trust" / "crl.pem").is_file()
    cfg.write_text('[pki]\nreload_hooks = ["true"]\n')
    code, out, err = cli("--config", str(cfg), "--json", "pki", "publish")
    assert code == 0 and json.loads(out)["result"]["hooks"][0]["exit_code"] == 0


def test_crl_command(inited, home: Path) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509

    from edgesec.pki.trust import split_pem

    cli = inited
    code, out, _ = cli("--json", "pki", "crl", "--days", "2")
    doc = json.loads(out)["result"]
    assert code == 0 and doc["number"] == 2
    crls = [
        x509.load_pem_x509_crl(p) for p in split_pem((home / "trust" / "crl.pem").read_bytes(), b"X509 CRL")
    ]
    inter = next(c for c in crls if "Intermediate" in c.issuer.rfc4514_string())
    assert inter.next_update_utc is not None and (inter.next_update_utc - inter.last_update_utc).days == 2
    assert inter.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    code, _, err = cli("pki", "crl", "--root")  # the root key is in the store here
    assert code == 0, err
    code, out, _ = cli("--json", "pki", "status")
    assert code == 0 and len(json.loads(out)["result"]["crls"]) == 2


def test_configured_store_and_bundle_dirs(cli, pw_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, bundle = tmp_path / "srv" / "site-ca", tmp_path / "etc" / "trust-bundle"
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[pki]\nstore_dir = "{store}"\ntrust_bundle_dir = "{bundle}"\npassphrase_file = "{pw_file}"\n'
    )
    assert cli("--config", str(cfg), "pki", "init", "--org", "Bank")[0] == 0
    assert (store / "inventory.db").is_file() and (bundle / "crl.pem").is_file()
    assert cli("--config", str(cfg), "pki", "issue", "client", "alice")[0] == 0  # passphrase from [pki]
    code, _, err = cli("--config", str(cfg), "pki", "init", "--org", "Bank")
    assert code == 1 and "already exists" in err
    # the checks look where the config says
    from edgesec.checks.families.pki import CHECKS
    from edgesec.checks.interface import CheckContext, Status
    from edgesec.checks.probes import FixedClock, LiveSystem
    from edgesec.config import load_config
    from edgesec.pki.trust import utcnow

    ctx = CheckContext(system=LiveSystem(), clock=FixedClock(utcnow()), config=load_config(str(cfg), None))
    for c in CHECKS:
        assert Status.SKIP not in {f.status for f in c().run(ctx)}, c.meta.id


def test_batch_csv_hygiene_and_rerun(inited, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli = inited
    dup = tmp_path / "dup.csv"
    dup.write_text("id,email,email\nalice,a@clinic.local,evil@other.local\n")
    code, _, err = cli("pki", "issue", "client", "--from-file", str(dup))
    assert code == 2 and "column 'email' more than once" in _one_line_error(err)
    case = tmp_path / "case.csv"
    case.write_text("id\nAlice\nalice\n")
    code, _, err = cli("pki", "issue", "client", "--from-file", str(case))
    assert code == 2 and "differs from 'Alice' only in case" in _one_line_error(err)
    assert cli("pki", "issue", "client", "bob")[0] == 0
    code, _, err = cli("pki", "issue", "client", "BOB")
    assert code == 1 and "differs from it only in case" in _one_line_error(err)
    # A batch re-run after some were issued: --skip-existing issues the rest and names the skipped.
    staff = tmp_path / "staff.csv"
    staff.write_text("id\nbob\ncarol\ndave\n")
    code, _, err = cli("pki", "issue", "client", "--from-file", str(staff))
    assert code == 1 and "no certificate of the batch was issued" in _one_line_error(err)
    code, out, err = cli("--json", "pki", "issue", "client", "--from-file", str(staff), "--skip-existing")
    doc = json.loads(out)["result"]
    assert code == 0, err
    assert doc["skipped"] == ["bob"] and [c["name"] for c in doc["certificates"]] == ["carol", "dave"]
    code, out, _ = cli("--json", "pki", "issue", "client", "--from-file", str(staff), "--skip-existing")
    assert code == 0 and json.loads(out)["result"]["issued"] == 0
