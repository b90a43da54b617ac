"""Every case of the bad-certificate corpus (``tests/pki/corpus.py``) through every entry point that judges
a certificate, through the CLI (and ``/auth`` for authz), with one verdict:

* verify commands -- ``pki verify`` (signing and client), ``evidence verify`` (bundle directory and PEM file),
  ``model verify``, ``auditlog verify --checkpoint``: exit 0 for an accepted case, 1 for a refused one;
* ``/auth`` of the authz service: not 401 for an accepted client certificate, 401 for a refused one;
* signing commands -- ``audit --sign``, ``model sign``, ``auditlog checkpoint``: exit 0, or refusal (exit 2).

And ``openssl verify -x509_strict`` agrees wherever the corpus says it can express the rule.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests._net import free_port
from tests.checks import conftest as checks_fixtures
from tests.conftest import require_tool
from tests.pki import _nginx as nginx
from tests.pki.corpus import CASES, CLAIMED_SIGNING_TIME, Case, write_case

# The checks' fixtures: a catalog of checks that pass, and a small profile (for ``audit --sign``).
use_checks = checks_fixtures.use_checks
demo_profile = checks_fixtures.demo_profile


def _chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _key(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), None)


def _signed_result(d: Path, work: Path) -> Path:
    """A result signed with the case's signer, by the library: what an attacker holding the key can make."""
    from edgesec.checks.evidence import Signer

    chain = _chain(d / "signer.pem")
    out = work / "result.json"
    out.write_text('{"verdict": "pass"}\n')
    Signer(chain[0], chain[1:], _key(d / "signer.key")).sign_file(out, now=CLAIMED_SIGNING_TIME)
    return out


def _signed_model(d: Path, work: Path) -> Path:
    from edgesec.models import bundle, manifest

    model = work / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 1024)
    m = manifest.build(model, signature_rel="model.sig", now=CLAIMED_SIGNING_TIME)
    data = bundle.write_bundle(manifest.to_statement(m), _key(d / "signer.key"), _chain(d / "signer.pem"))
    (model / "model.sig").write_bytes(data)
    return model


def _trail(path: Path, n: int = 3) -> Path:
    from edgesec import auditing
    from edgesec.auditing.ecs import AuditEvent

    with auditing.configured(path, durability="fsync"):
        for i in range(n):
            auditing.emit(
                AuditEvent(
                    action="test.corpus",
                    category=("host",),
                    type=("info",),
                    part="test",
                    fields={"edgesec.test.i": i},
                )
            )
    return path


def _checkpoint(d: Path, trail: Path, work: Path) -> Path:
    from edgesec.auditing.checkpoint import make_checkpoint
    from edgesec.auditing.verify import trail_host, verify_trail

    rep = verify_trail(trail)
    cp = make_checkpoint(
        rep.head_seq, rep.head_hash, _chain(d / "signer.pem"), _key(d / "signer.key"), host=trail_host(trail)
    )
    f = work / "checkpoint.json"
    f.write_text(cp.to_json())
    return f


def _auth_status(d: Path, work: Path) -> int:
    """``/auth`` of the lean authz app (what ``authz serve`` runs), asked in-process over ASGI."""
    import asyncio

    from edgesec.authz.hotpath import create_hot_app
    from tests.authz.conftest import bank_files, fwd, settings

    chain = _chain(d / "client.pem")
    header = ",".join(base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain)
    app = create_hot_app(
        settings(), trust_dir=d / "trust", files=bank_files(work), watch=False, group_commit=False
    )
    headers = [(k.lower().encode(), v.encode()) for k, v in fwd("GET", "/v1/parameters", cert=header)]
    scope = {"type": "http", "method": "GET", "path": "/auth", "headers": headers, "client": ("127.0.0.1", 1)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return int(sent[0]["status"])


def _verdicts(cli: Any, case: Case, d: Path, work: Path, profile: Path) -> dict[str, str]:
    """Each entry point's verdict on the case: ``accepted`` or ``refused`` (anything else is a bug)."""
    trust = d / "trust"
    cfg = work / "edgesec.toml"
    cfg.write_text(f'[pki]\ntrust_bundle_dir = "{trust}"\n[auditing]\ntrail_dir = "{work / "site-trail"}"\n')
    c = ("--config", str(cfg))
    out: dict[str, str] = {}
    notes: dict[str, str] = {}

    def verify(entry: str, *argv: str) -> None:
        code, _, err = cli(*c, *argv)
        out[entry] = {0: "accepted", 1: "refused"}.get(code, f"exit {code}")
        notes[entry] = err.strip()

    def sign(entry: str, *argv: str) -> None:
        code, _, err = cli(*c, *argv)
        out[entry] = {0: "accepted", 2: "refused"}.get(code, f"exit {code}")
        notes[entry] = err.strip()

    verify(
        "pki verify --purpose signing",
        "pki",
        "verify",
        str(d / "signer.pem"),
        "--purpose",
        "signing",
        "--trust",
        str(trust),
    )
    verify(
        "pki verify --purpose client",
        "pki",
        "verify",
        str(d / "client.pem"),
        "--purpose",
        "client",
        "--trust",
        str(trust),
    )
    result = _signed_result(d, work)
    verify("evidence verify --trust DIR", "evidence", "verify", str(result), "--trust", str(trust))
    verify(
        "evidence verify --trust FILE", "evidence", "verify", str(result), "--trust", str(d / "anchors.pem")
    )
    verify("model verify", "model", "verify", str(_signed_model(d, work)), "--trust", str(trust))
    trail = _trail(work / "trail")
    cp = _checkpoint(d, trail, work)
    verify(
        "auditlog verify --checkpoint",
        "auditlog", "verify", "--trail", str(trail), "--checkpoint", str(cp), "--no-local-checkpoints",
        "--trust", str(trust),
    )  # fmt: skip
    status = _auth_status(d, work)
    out["/auth"] = "refused" if status == 401 else "accepted" if status in (200, 403) else f"HTTP {status}"
    sign(
        "audit --sign",
        "audit", "--profile", str(profile), "--report", "json", "--out", str(work / "signed.json"),
        "--sign", "--sign-cert", str(d / "signer.pem"), "--sign-key", str(d / "signer.key"),
    )  # fmt: skip
    model2 = work / "model2"
    model2.mkdir()
    (model2 / "weights.bin").write_bytes(b"\x01" * 512)
    sign(
        "model sign",
        "model",
        "sign",
        str(model2),
        "--cert",
        str(d / "signer.pem"),
        "--key",
        str(d / "signer.key"),
    )
    _trail(work / "site-trail")
    sign(
        "auditlog checkpoint",
        "auditlog", "checkpoint", "--cert", str(d / "signer.pem"), "--key", str(d / "signer.key"), "--no-send",
    )  # fmt: skip
    return {
        k: f"{v}: {notes.get(k, '')}" if v != ("accepted" if case.accepted else "refused") else v
        for k, v in out.items()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_entry_point_gives_the_same_verdict(
    cli,
    use_checks,
    demo_profile,
    case: Case,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    use_checks(checks_fixtures.Passes)
    d = write_case(case, tmp_path / "corpus")
    work = tmp_path / "work"
    work.mkdir()
    got = _verdicts(cli, case, d, work, demo_profile)
    want = "accepted" if case.accepted else "refused"
    assert len(got) == 10
    assert got == dict.fromkeys(got, want), f"{case.name} ({case.what})"


def test_the_corpus_names_every_class_of_the_issue() -> None:
    names = {c.name for c in CASES}
    for needed in (
        "leaf-as-issuer",
        "issuer-ca-false",
        "issuer-without-keycertsign",
        "pathlen-exceeded",
        "name-constraint-dns-san",
        "name-constraint-cn-hostname",
        "wrong-eku",
        "missing-eku",
        "expired",
        "not-yet-valid",
        "crl-forged",
        "crl-past-next-update",
        "foreign-root-same-subject",
        "cross-signed-foreign-intermediate",
        "unknown-critical-extension",
        "sha1-signature",
        "rsa-1024-intermediate",
        "site-offline-root",
        "site-rotated-intermediate",
    ):
        assert needed in names
    reasons = {n.split("-", 1)[1].rsplit("-", 2)[0] for n in names if n.startswith("revoked-")}
    assert len(reasons) == 10  # every CRL reason, and none
    assert any(not c.accepted for c in CASES) and any(c.accepted for c in CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.openssl_expressible], ids=lambda c: c.name)
def test_openssl_agrees(case: Case, tmp_path: Path) -> None:
    """``openssl verify -x509_strict -auth_level 2 -crl_check_all`` (what nginx does with the bundle:
    Debian's OpenSSL runs at security level 2) gives the corpus verdict, for the client leaf."""
    require_tool("openssl")
    d = write_case(case, tmp_path)
    chain = _chain(d / "client.pem")
    pem = serialization.Encoding.PEM
    (d / "leaf.pem").write_bytes(chain[0].public_bytes(pem))
    (d / "untrusted.pem").write_bytes(
        (d / "trust" / "intermediates.pem").read_bytes() + b"".join(c.public_bytes(pem) for c in chain[1:])
    )
    p = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-auth_level", "2", "-crl_check_all", "-purpose", "sslclient",
         "-CAfile", str(d / "trust" / "root.pem"), "-untrusted", str(d / "untrusted.pem"),
         "-CRLfile", str(d / "trust" / "crl.pem"), str(d / "leaf.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    meta = json.loads((d / "case.json").read_text())
    assert (p.returncode == 0) is meta["openssl"], (case.name, p.stdout + p.stderr, meta["openssl_note"])


def test_a_host_name_cn_under_permit_dns_one_answer_with_nginx(cli, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Under DNS name constraints a client CN that reads as a host name (``teller.one``) and has no DNS SAN
    is refused by nginx (OpenSSL error 47). edgesec's verifier refuses it too, and the store will not issue
    it; a CN that is no host name (``teller-one``) passes all three."""
    import ipaddress

    from tests.pki.corpus import PERMITTED, Site, _key_pem, _pem, crl, make

    require_tool("nginx")
    s = Site(permitted_dns=[PERMITTED])
    server = make(
        "llm",
        s.inter,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName("llm.site.internal"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    d = tmp_path / "site"
    (d / "tmp").mkdir(parents=True)
    (d / "server.pem").write_bytes(_pem(server.cert, s.inter.cert))
    (d / "server.key").write_bytes(_key_pem(server.key))
    (d / "ca-bundle.pem").write_bytes(_pem(s.root.cert, s.inter.cert))
    (d / "crl.pem").write_bytes(_pem(crl(s.root), crl(s.inter)))
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "root.pem").write_bytes(_pem(s.root.cert))
    (trust / "intermediates.pem").write_bytes(_pem(s.inter.cert))
    (trust / "crl.pem").write_bytes((d / "crl.pem").read_bytes())
    port = free_port()
    conf = nginx.write_conf(
        d, port, cert=d / "server.pem", key=d / "server.key", ca_bundle=d / "ca-bundle.pem", crl=d / "crl.pem",
        server_name="llm.site.internal",
    )  # fmt: skip

    def nginx_status(cn: str) -> int:
        leaf = make(cn, s.inter, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        (tmp_path / f"{cn}.pem").write_bytes(_pem(leaf.cert, s.inter.cert))
        (tmp_path / f"{cn}.key").write_bytes(_key_pem(leaf.key))
        return nginx.status(
            port, cafile=d / "ca-bundle.pem", cert=tmp_path / f"{cn}.pem", key=tmp_path / f"{cn}.key",
            host="llm.site.internal",
        )  # fmt: skip

    with nginx.running(d, conf):
        verdicts: dict[str, tuple[int, int]] = {}
        for cn in ("teller.one", "first.last", "teller-one"):
            status = nginx_status(cn)
            code, _, err = cli(
                "pki", "verify", str(tmp_path / f"{cn}.pem"), "--purpose", "client", "--trust", str(trust)
            )
            verdicts[cn] = (status, code)
        assert verdicts == {"teller.one": (400, 1), "first.last": (400, 1), "teller-one": (200, 0)}, verdicts
        assert (
            "error 47" in (d / "error.log").read_text()
            or "permitted subtree" in (d / "error.log").read_text()
        )
    # Issuance agrees: the store refuses the host-name CN (exit 2) and issues the other.
    assert cli("pki", "init", "--no-encrypt", "--permit-dns", PERMITTED)[0] == 0
    code, _, err = cli("pki", "issue", "client", "teller.one")
    assert code == 2 and "reads as a host name" in err
    code, _, err = cli("pki", "issue", "client", "teller-one")
    assert code == 0, err


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name.startswith(("revoked-", "expired", "valid"))], ids=lambda c: c.name
)
def test_a_proven_signing_time(case: Case, tmp_path: Path) -> None:
    """With the signing time proven (here: the corpus's claimed time, as if a checkpoint covered it), a
    signature outlives its certificate's expiry, and a revocation after that time for a reason that does
    not doubt the key; keyCompromise, cACompromise, aACompromise, certificateHold, unspecified and no
    reason still void it, and so does any revocation dated before the proven time."""
    from edgesec.errors import VerificationError
    from edgesec.pki.api import Policy, ProvenTime, TrustBundle, load_certificate_file, verify_certificate

    d = write_case(case, tmp_path)
    benign = ("superseded", "affiliation-changed", "cessation-of-operation", "privilege-withdrawn")
    expect = case.name in ("valid", "expired-after-claimed-signing") or (
        case.name.endswith("-after-signing") and case.name.removeprefix("revoked-").startswith(benign)
    )
    policy = Policy.signature(proven=ProvenTime(CLAIMED_SIGNING_TIME, "the test"))
    try:
        verify_certificate(
            load_certificate_file(d / "signer.pem"), trust=TrustBundle.load(d / "trust"), policy=policy
        )
        got = True
    except VerificationError:
        got = False
    assert got is expect


def test_the_forgery_through_a_real_subprocess(tmp_path: Path) -> None:
    """Once through the installed CLI in its own process (the rest of the corpus runs in-process)."""
    import os
    import sys

    by_name = {c.name: c for c in CASES}
    for name, want in (("leaf-as-issuer", 1), ("valid", 0)):
        d = write_case(by_name[name], tmp_path)
        work = tmp_path / f"work-{name}"
        work.mkdir()
        result = _signed_result(d, work)
        for trust in (d / "trust", d / "anchors.pem"):
            p = subprocess.run(
                [sys.executable, "-m", "edgesec", "evidence", "verify", str(result), "--trust", str(trust)],
                capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
            assert p.returncode == want, (name, trust, p.stdout, p.stderr)
            if want:
                assert p.stderr.count("\n") == 1 and "untrusted" in p.stderr and "Traceback" not in p.stderr
