"""Every CA command under SIGKILL at every write it makes, then the next command.

``$EDGESEC_KILLPOINT=N`` makes the CLI process kill itself (SIGKILL: no handler, no flush) at its N-th
write step (each file written, the commit, the pending marker, each published file, the audit write, the
journal clean-up). For every command and every N the test runs the killed command, then ``pki list``,
then checks what must hold whatever the kill point:

- the store opens and has nothing left to recover (no journal entry, no pending marker, no orphan file);
- the published bundle is the inventory's: the same CRLs byte for byte, every intermediate in use, every
  revoked certificate in a published CRL;
- every certificate in the inventory has its issued/renewed event in the trail, every revocation its
  revoked event (late ones marked ``edgesec.pki.recovered``);
- ``pki.crl-freshness`` finds nothing to FAIL.

With nginx, the revocation under each kill point: nginx accepts bob before, refuses him once the next
command has run (the recovery publishes and runs the reload hook).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgesec.checks.families.pki import CrlFreshness
from edgesec.checks.interface import CheckContext, Status
from edgesec.checks.probes import FixedClock, LiveSystem
from edgesec.config import load_config
from edgesec.pki.ca import CertificateAuthority
from edgesec.pki.trust import cert_pem, utcnow
from tests._net import free_port
from tests.pki import _nginx as nginx

from .conftest import PASSPHRASE

COMMANDS: dict[str, list[str]] = {
    "revoke": ["pki", "revoke", "bob", "--reason", "key-compromise"],
    "revoke-again": ["pki", "revoke", "gone"],
    "crl": ["pki", "crl"],
    "issue": ["pki", "issue", "client", "carol", "--email", "carol@clinic.local"],
    "batch": ["pki", "issue", "client", "--from-file", "{work}/batch.csv"],
    "sign-csr": ["pki", "sign-csr", "{work}/device.csr", "--profile", "client"],
    "renew-revoke-old": ["pki", "renew", "alice", "--revoke-old"],
    "rotate": ["pki", "rotate-intermediate"],
    "export": ["pki", "export", "alice", "--pem", "{work}/alice-export"],
}


def _env(home: Path, work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESEC_KILLPOINT")}
    env.update(
        EDGESEC_HOME=str(home),
        EDGESEC_CONFIG=str(work / "edgesec.toml"),
        EDGESEC_CA_PASSPHRASE=PASSPHRASE.decode(),
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def _edgesec(home: Path, work: Path, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    args = [a.format(work=work) for a in argv]
    return subprocess.run(
        [sys.executable, "-m", "edgesec", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(home, work, **extra),
        check=False,
    )


def _ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, p.stderr
    return p.stdout


def _setup(work: Path, hooks: list[str]) -> Path:
    """A CA with alice, bob (clients), gone (revoked), llm (server, exported); a CSR and a batch file."""
    home = work / "home"
    (work / "edgesec.toml").write_text(
        "[pki]\nreload_hooks = [" + ", ".join(json.dumps(h) for h in hooks) + "]\n"
    )
    pw = work / "ca.pass"
    pw.write_bytes(PASSPHRASE + b"\n")
    pw.chmod(0o600)
    _ok(_edgesec(home, work, "pki", "init", "--org", "Acme Clinic", "--passphrase-file", str(pw)))
    for argv in (
        ["pki", "issue", "client", "alice"],
        ["pki", "issue", "client", "bob"],
        ["pki", "issue", "client", "gone"],
        ["pki", "revoke", "gone"],
        ["pki", "issue", "server", "llm", "--san", "DNS:llm.clinic.local,IP:127.0.0.1"],
        ["pki", "export", "llm", "--pem", str(work / "srv")],
        ["pki", "export", "bob", "--pem", str(work / "bob")],
    ):
        _ok(_edgesec(home, work, *argv))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-7")]))
        .sign(key, hashes.SHA256())
    )
    (work / "device.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (work / "batch.csv").write_text("id,email\nt1,t1@clinic.local\nt2,\nt3,t3@clinic.local\n")
    return home


def _restore(template: Path, home: Path) -> None:
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(template, home, symlinks=True)


def _trail(home: Path) -> list[dict]:  # type: ignore[type-arg]
    f = home / "audit" / "trail.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _assert_consistent(home: Path, what: str) -> None:
    ca = CertificateAuthority.open(home)
    try:
        assert not ca.needs_recovery(), what
        assert not (ca.dir / "publish.pending").exists(), what
        assert not list(home.glob(".pki-init-*")), what
        trust = ca.trust_dir
        # The published bundle is the inventory's, byte for byte.
        expected_crls = "".join(r[0] for r in ca._current_crl_rows()).encode()
        assert (trust / "crl.pem").read_bytes() == expected_crls, what
        inters = ca.intermediates()
        assert (trust / "intermediates.pem").read_bytes() == b"".join(cert_pem(c) for c in inters), what
        text = (trust / "crl.pem").read_text()
        published = [
            x509.load_pem_x509_crl((b + "-----END X509 CRL-----\n").encode())
            for b in text.split("-----END X509 CRL-----")[:-1]
        ]
        recs = ca.list_certificates()
        for r in recs:
            if r.status == "revoked":
                assert any(
                    c.get_revoked_certificate_by_serial_number(int(r.serial, 16)) is not None
                    for c in published
                ), f"{what}: {r.name} revoked but not in the published CRL"
        # No certificate without its audit event; no revocation without its event.
        events = _trail(home)
        by_action: dict[str, set[str]] = {}
        for e in events:
            serial = e.get("file", {}).get("x509", {}).get("serial_number")
            if serial:
                by_action.setdefault(e["event"]["action"], set()).add(serial)
        issued = by_action.get("pki.certificate.issued", set()) | by_action.get(
            "pki.certificate.renewed", set()
        )
        for r in recs:
            assert r.serial in issued, f"{what}: {r.name} has no issued event"
            if r.status == "revoked":
                assert r.serial in by_action.get("pki.certificate.revoked", set()), (
                    f"{what}: {r.name} has no revoked event"
                )
        exported = {e["file"]["path"] for e in events if e["event"]["action"] == "pki.certificate.exported"}
        for r in recs:
            for path in r.paths:
                assert path in exported, f"{what}: export of {r.name} to {path} has no event"
        ctx = CheckContext(
            system=LiveSystem(), clock=FixedClock(utcnow()), config=load_config(None, str(home))
        )
        findings = list(CrlFreshness().run(ctx))
        assert not [f for f in findings if f.status == Status.FAIL], (what, findings)
    finally:
        ca.close()


def _killpoints(template: Path, home: Path, work: Path, argv: list[str]) -> list[str]:
    """The write steps of one command, in order (a run that logs them and is never killed)."""
    _restore(template, home)
    log = work / "killpoints.log"
    log.unlink(missing_ok=True)
    _ok(_edgesec(home, work, *argv, EDGESEC_KILLPOINT="999999", EDGESEC_KILLPOINT_LOG=str(log)))
    return log.read_text().splitlines()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    work = tmp_path_factory.mktemp("killpoints")
    home = _setup(work, [])
    template = work / "template"
    shutil.copytree(home, template, symlinks=True)
    yield template, home, work


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_kill_point_is_repaired_by_the_next_command(
    site: tuple[Path, Path, Path], command: str
) -> None:
    template, home, work = site
    argv = COMMANDS[command]
    steps = _killpoints(template, home, work, argv)
    assert len(steps) >= 3, steps  # commit, audit write, journal clean-up at least
    if command in ("revoke", "revoke-again", "crl", "rotate", "renew-revoke-old"):
        assert any(s.endswith("publish crl.pem") for s in steps), steps
    for n, step in enumerate(steps, start=1):
        _restore(template, home)
        shutil.rmtree(work / "alice-export", ignore_errors=True)
        killed = _edgesec(home, work, *argv, EDGESEC_KILLPOINT=str(n))
        assert killed.returncode == -9, (step, killed.stderr)
        nxt = _edgesec(home, work, "pki", "list", "--json")
        assert nxt.returncode == 0, (step, nxt.stderr)
        assert "Traceback" not in nxt.stderr
        _assert_consistent(home, f"{command} killed at {step}")
    # And the command itself, not killed, leaves the same guarantees.
    _restore(template, home)
    shutil.rmtree(work / "alice-export", ignore_errors=True)
    _ok(_edgesec(home, work, *argv))
    _assert_consistent(home, f"{command} not killed")


def test_killed_init_leaves_nothing_and_the_next_init_succeeds(tmp_path: Path) -> None:
    """init with an offline root, killed at each step: before the rename nothing is left behind by the
    next init (no temporary directory, no orphan root key on the media); after it, the next command
    publishes the store's first CRLs."""
    work = tmp_path
    (work / "edgesec.toml").write_text("[pki]\n")
    pw = work / "ca.pass"
    pw.write_bytes(PASSPHRASE + b"\n")
    pw.chmod(0o600)
    usb = work / "usb"
    argv = ["pki", "init", "--org", "Bank", "--passphrase-file", str(pw), "--offline-root", str(usb)]
    home = work / "home"

    def fresh() -> None:
        for d in (home, usb):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir()

    fresh()
    log = work / "kp.log"
    _ok(_edgesec(home, work, *argv, EDGESEC_KILLPOINT="999999", EDGESEC_KILLPOINT_LOG=str(log)))
    steps = log.read_text().splitlines()
    assert any("init offline root key" in s for s in steps) and any("init rename" in s for s in steps)
    for n, step in enumerate(steps, start=1):
        fresh()
        assert _edgesec(home, work, *argv, EDGESEC_KILLPOINT=str(n)).returncode == -9, step
        if (home / "pki" / "inventory.db").exists():
            # The store is in place: the next command finishes its publication and its events.
            _ok(_edgesec(home, work, "pki", "list"))
            _assert_consistent(home, f"init killed at {step}")
            assert len(list(usb.glob("edgesec-root-*.key"))) == 1
            continue
        # Killed before the rename: the next init cleans up and succeeds.
        _ok(_edgesec(home, work, *argv))
        assert not list(home.glob(".pki-init-*")), step
        keys = list(usb.glob("edgesec-root-*.key"))
        assert len(keys) == 1, (step, keys)  # the orphan of the killed init is gone
        ca = CertificateAuthority.open(home)
        assert keys[0].name.startswith("edgesec-root-")
        assert ca.root_certificate().fingerprint(hashes.SHA256()) == x509.load_pem_x509_certificate(
            next(usb.glob("edgesec-root-*.pem")).read_bytes()
        ).fingerprint(hashes.SHA256())
        ca.close()
        _assert_consistent(home, f"init killed at {step}, then init again")


@pytest.mark.real("nginx")
def test_nginx_refuses_a_revocation_killed_at_any_point(tmp_path: Path) -> None:

    work = tmp_path
    prefix = work / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    reload = f"nginx -p {prefix} -c {conf} -s reload"
    home = _setup(work, [])
    (work / "edgesec.toml").write_text(f"[pki]\nreload_hooks = [{json.dumps(reload)}]\n")
    template = work / "template"
    shutil.copytree(home, template, symlinks=True)
    port = free_port()
    trust = home / "trust"
    nginx.write_conf(
        prefix, port, cert=work / "srv" / "fullchain.pem", key=work / "srv" / "key.pem",
        ca_bundle=trust / "ca-bundle.pem", crl=trust / "crl.pem", server_name="_",
    )  # fmt: skip

    def get() -> int:
        bob = work / "bob"
        return nginx.status(port, cafile=trust / "root.pem", cert=bob / "fullchain.pem", key=bob / "key.pem")

    def until(expect: int) -> int:
        deadline = time.monotonic() + 10
        while True:
            got = get()
            if got == expect or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    argv = COMMANDS["revoke"]
    with nginx.running(prefix, conf):
        steps = _killpoints(template, home, work, argv)
        assert any(s.endswith("reload hooks") for s in steps), steps
        for n, step in enumerate(steps, start=1):
            _restore(template, home)
            subprocess.run(reload.split(), check=True, capture_output=True)
            assert until(200) == 200, step  # bob is trusted before the revocation
            assert _edgesec(home, work, *argv, EDGESEC_KILLPOINT=str(n)).returncode == -9, step
            listed = json.loads(_ok(_edgesec(home, work, "--json", "pki", "list")))["result"]
            bob = next(r for r in listed if r["name"] == "bob")
            committed = any(s.endswith(" commit") for s in steps[:n])  # the kill point after COMMIT
            assert (bob["status"] == "revoked") == committed, step
            if not committed:
                # Killed before the commit: nothing happened; the operator's re-run revokes.
                assert until(200) == 200, step
                _ok(_edgesec(home, work, *argv))
            assert until(400) == 400, f"nginx still accepts bob after a revoke killed at {step}"


def test_a_recovery_killed_at_any_point_is_finished_by_the_one_after(site: tuple[Path, Path, Path]) -> None:
    """The repair itself under SIGKILL: a revoke killed after its commit, then the next command killed at
    each step of its recovery, then a third command -- the same guarantees hold."""
    template, home, work = site
    argv = COMMANDS["revoke"]
    steps = _killpoints(template, home, work, argv)
    after_commit = next(n for n, s in enumerate(steps, start=1) if s.endswith(" commit"))
    log = work / "recovery.log"

    def killed_revoke() -> None:
        _restore(template, home)
        assert _edgesec(home, work, *argv, EDGESEC_KILLPOINT=str(after_commit)).returncode == -9

    killed_revoke()
    log.unlink(missing_ok=True)
    _ok(_edgesec(home, work, "pki", "list", EDGESEC_KILLPOINT="999999", EDGESEC_KILLPOINT_LOG=str(log)))
    recovery = log.read_text().splitlines()
    assert any(s.endswith("publish crl.pem") for s in recovery), recovery
    for n, step in enumerate(recovery, start=1):
        killed_revoke()
        assert _edgesec(home, work, "pki", "list", EDGESEC_KILLPOINT=str(n)).returncode == -9, step
        _ok(_edgesec(home, work, "pki", "list"))
        _assert_consistent(home, f"recovery killed at {step}")
