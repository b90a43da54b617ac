"""Sign and verify model directories: every tampering case gives a failing verdict and one clear line."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from edgesec.errors import InputError
from edgesec.models import api
from edgesec.models.bundle import read_bundle
from tests.models._pki import NOW, Issued, SitePki
from tests.models.conftest import SHARD

Signer = tuple[Issued, Path, Path]


def sign(cli, model: Path, signer: Signer, *extra: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    _, crt, key = signer
    return cli(
        "model", "sign", str(model), "--cert", str(crt), "--key", str(key), "--shard-size", "1", *extra
    )


def verify(cli, model: Path, *extra: str) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
    code, out, err = cli("--json", "model", "verify", str(model), *extra)
    doc = json.loads(out)
    return code, doc, err


def lines(cli, model: Path, *extra: str) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    code, out, _ = cli("model", "verify", str(model), *extra)
    return code, out.strip().splitlines()


def test_sign_then_verify_passes(cli, model_dir: Path, signer: Signer) -> None:
    code, out, err = sign(cli, model_dir, signer)
    assert code == 0, err
    assert "signed 5 files" in out
    code, doc, _ = verify(cli, model_dir)
    assert code == 0
    r = doc["result"]
    assert r["ok"] and r["differences"] == []
    assert r["signer"]["subject"].startswith("CN=model-publisher")
    assert r["producer"] == "edgesec"
    size = (model_dir / "model.safetensors").stat().st_size
    assert r["bytes_hashed"] >= size
    # The manifest holds per-shard digests for the big file and a whole-file digest for every file.
    st = json.loads(read_bundle((model_dir / "model.sig").read_bytes()).payload)
    ext = st["predicate"]["edgesec"]
    assert len(ext["files"]["model.safetensors"]["shards"]) == -(-size // SHARD) > 1
    assert {r["name"] for r in st["predicate"]["resources"]} == {
        "model.safetensors",
        "tiny.gguf",
        "config.json",
        "tokenizer/vocab.txt",
        "empty.txt",
    }


def test_flipped_byte_names_the_file_and_the_shard(cli, model_dir: Path, signer: Signer) -> None:
    assert sign(cli, model_dir, signer)[0] == 0
    target = model_dir / "model.safetensors"
    with open(target, "r+b") as f:
        f.seek(2 * SHARD + 100)  # inside the third shard
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))
    code, out = lines(cli, model_dir)
    assert code == 1
    bad = [ln for ln in out if ln.startswith("MODIFIED")]
    assert len(bad) == 1
    assert bad[0].startswith(f"MODIFIED model.safetensors: shard 3/4 bytes [{2 * SHARD}, {3 * SHARD})")
    assert out[-1].startswith("FAILED")


def test_extra_and_missing_files(cli, model_dir: Path, signer: Signer) -> None:
    assert sign(cli, model_dir, signer)[0] == 0
    (model_dir / "tokenizer" / "vocab.txt").unlink()
    (model_dir / "backdoor.bin").write_bytes(b"\x80\x04N.")
    code, doc, _ = verify(cli, model_dir)
    assert code == 1
    diffs = {(d["kind"], d["path"]) for d in doc["result"]["differences"]}
    assert diffs == {("missing", "tokenizer/vocab.txt"), ("extra", "backdoor.bin")}
    code, out = lines(cli, model_dir)
    assert "MISSING tokenizer/vocab.txt: signed but not present" in out
    assert any(ln.startswith("EXTRA backdoor.bin: not in the signed manifest") for ln in out)


def test_truncated_file_is_a_size_difference(cli, model_dir: Path, signer: Signer) -> None:
    assert sign(cli, model_dir, signer)[0] == 0
    target = model_dir / "model.safetensors"
    size = target.stat().st_size
    os.truncate(target, size - 10)
    code, out = lines(cli, model_dir)
    assert code == 1
    assert f"SIZE model.safetensors: signed {size} bytes, found {size - 10}" in out


def test_ignore_patterns_recorded_at_signing(cli, model_dir: Path, signer: Signer) -> None:
    (model_dir / "run.log").write_text("x")
    assert sign(cli, model_dir, signer, "--ignore", "*.log")[0] == 0
    (model_dir / "later.log").write_text("new log")
    (model_dir / "run.log").write_text("changed")
    assert verify(cli, model_dir)[0] == 0
    # ...and the verifier can tolerate more, without weakening the rest.
    (model_dir / "notes.md").write_text("operator notes")
    assert verify(cli, model_dir)[0] == 1
    assert verify(cli, model_dir, "--ignore", "notes.md")[0] == 0


def test_symlink_out_of_the_directory(cli, model_dir: Path, signer: Signer, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("outside")
    (model_dir / "link.txt").symlink_to(outside)
    code, _out, err = sign(cli, model_dir, signer, "--follow-symlinks")
    assert code == 2
    assert "SYMLINK-ESCAPE link.txt: points outside the model directory" in err
    (model_dir / "link.txt").unlink()
    assert sign(cli, model_dir, signer)[0] == 0
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").symlink_to(outside)  # swap a signed file for a link out
    code, out = lines(cli, model_dir)
    assert code == 1
    assert any(ln.startswith("SYMLINK-ESCAPE config.json: points outside the model directory") for ln in out)


def test_symlinks_inside_follow_the_policy(cli, model_dir: Path, signer: Signer) -> None:
    (model_dir / "alias.json").symlink_to("config.json")
    code, _, err = sign(cli, model_dir, signer)
    assert code == 2 and "SYMLINK alias.json: symlinks are not allowed" in err
    assert sign(cli, model_dir, signer, "--follow-symlinks")[0] == 0
    # The site's default policy ([models] follow_symlinks = false) refuses links even where the signer allowed.
    code, out = lines(cli, model_dir)
    assert code == 1 and any(ln.startswith("SYMLINK alias.json: symlinks are not allowed") for ln in out)
    assert verify(cli, model_dir, "--follow-symlinks")[0] == 0


def test_revoked_signing_certificate(cli, model_dir: Path, signer: Signer, pki: SitePki, home: Path) -> None:
    assert sign(cli, model_dir, signer)[0] == 0
    pki.revoke(signer[0])
    pki.publish(home / "trust")
    code, out = lines(cli, model_dir)
    assert code == 1
    assert len(out) == 2
    assert out[0].startswith("SIGNATURE ") and "is revoked since" in out[0]
    # Signing with a revoked certificate is refused up front, as input (exit 2).
    (model_dir / "model.sig").unlink()
    code, _, err = sign(cli, model_dir, signer)
    assert code == 2 and "refusing to sign" in err and "revoked" in err


def test_expired_certificate_refused_at_signing(cli, model_dir: Path, pki: SitePki, tmp_path: Path) -> None:
    old = pki.signing("old", not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    crt, key = old.write(tmp_path, "old", pki.intermediate.cert)
    code, _, err = cli("model", "sign", str(model_dir), "--cert", str(crt), "--key", str(key))
    assert code == 2 and "expired" in err


def test_signature_by_expired_certificate_fails(model_dir: Path, pki: SitePki, home: Path) -> None:
    """The claimed signing time proves nothing: once the certificate has expired, a signature made while
    it was valid no longer verifies (an expired key could otherwise back-date new signatures)."""
    old = pki.signing("old", not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    trust = api.TrustBundle.load(home / "trust")
    # Signed while valid (ten days ago): it verified then...
    api.sign_model(
        model_dir,
        key=old.key,
        chain=[old.cert, pki.intermediate.cert],
        trust=trust,
        now=NOW - dt.timedelta(days=10),
    )
    assert api.verify_model(model_dir, trust=trust, now=NOW - dt.timedelta(days=10)).ok
    # ...and fails today, with a clear reason.
    res = api.verify_model(model_dir, trust=trust)
    assert not res.ok
    assert res.trust_error is not None and "expired" in res.trust_error
    assert res.lines() == [f"SIGNATURE {model_dir / 'model.sig'}: {res.trust_error}"]
    # Signing with it now is refused as input.
    (model_dir / "model.sig").unlink()
    with pytest.raises(InputError, match="expired"):
        api.sign_model(model_dir, key=old.key, chain=[old.cert], trust=trust, now=NOW)
    # A manifest back-dated into the validity period by the holder of the expired key fails the same way.
    from edgesec.models import bundle, manifest

    m = manifest.build(model_dir, signature_rel="model.sig", now=NOW - dt.timedelta(days=10))
    (model_dir / "model.sig").write_bytes(
        bundle.write_bundle(manifest.to_statement(m), old.key, [old.cert, pki.intermediate.cert])
    )
    res = api.verify_model(model_dir, trust=trust)
    assert not res.ok and res.trust_error is not None and "expired" in res.trust_error


def test_server_certificate_cannot_sign(cli, model_dir: Path, pki: SitePki, tmp_path: Path) -> None:
    srv = pki.server("server-web")
    crt, key = srv.write(tmp_path, "server", pki.intermediate.cert)
    code, _, err = cli("model", "sign", str(model_dir), "--cert", str(crt), "--key", str(key))
    assert code == 2 and "refusing to sign" in err and "wrong purpose" in err
    # Forged with the library (bypassing the CLI check): verification still refuses it.
    from edgesec.models import bundle, manifest

    m = manifest.build(model_dir, signature_rel="model.sig")
    (model_dir / "model.sig").write_bytes(
        bundle.write_bundle(manifest.to_statement(m), srv.key, [srv.cert, pki.intermediate.cert])
    )
    code, out = lines(cli, model_dir)
    assert code == 1
    assert "wrong purpose: certificate is for server, not signing" in out[0]


def test_foreign_pki_is_not_trusted(cli, model_dir: Path, signer: Signer, tmp_path: Path) -> None:
    other = SitePki()
    leaf = other.signing("impostor")
    crt, key = leaf.write(tmp_path, "impostor", other.intermediate.cert)
    code, _, err = cli("model", "sign", str(model_dir), "--cert", str(crt), "--key", str(key))
    assert code == 2 and "refusing to sign" in err and "untrusted" in err
    from edgesec.models import bundle, manifest

    m = manifest.build(model_dir, signature_rel="model.sig")
    (model_dir / "model.sig").write_bytes(
        bundle.write_bundle(manifest.to_statement(m), leaf.key, [leaf.cert, other.intermediate.cert])
    )
    code, out = lines(cli, model_dir)
    assert code == 1 and "untrusted" in out[0]


def test_edited_manifest_breaks_the_signature(cli, model_dir: Path, signer: Signer) -> None:
    assert sign(cli, model_dir, signer)[0] == 0
    sig = model_dir / "model.sig"
    doc = json.loads(sig.read_text())
    import base64

    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    sig.write_text(json.dumps(doc))
    code, out = lines(cli, model_dir)
    assert code == 1
    assert out[0].endswith("the manifest signature does not verify with the signing certificate's key")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not JSON"),
        (b"[]", "not a Sigstore bundle"),
        (b'{"mediaType": "x"}', "media type"),
        (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}', "no certificate chain"),
    ],
)
def test_unusable_signature_file_is_exit_2(
    cli, model_dir: Path, pki: SitePki, content: bytes, message: str
) -> None:
    (model_dir / "model.sig").write_bytes(content)
    code, _, err = cli("model", "verify", str(model_dir))
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_no_signature_and_no_overwrite(cli, model_dir: Path, signer: Signer) -> None:
    code, _, err = cli("model", "verify", str(model_dir))
    assert code == 2 and "no signature at" in err
    assert sign(cli, model_dir, signer)[0] == 0
    before = (model_dir / "model.sig").read_bytes()
    code, _, err = sign(cli, model_dir, signer)
    assert code == 1 and "already exists" in err
    assert (model_dir / "model.sig").read_bytes() == before


def test_usage_errors(cli, model_dir: Path, signer: Signer, tmp_path: Path) -> None:
    assert cli("model", "sign", str(model_dir))[0] == 2
    assert (
        cli("model", "sign", str(tmp_path / "nope"), "--cert", str(signer[1]), "--key", str(signer[2]))[0]
        == 2
    )
    code, _, err = cli("model", "sign", str(model_dir), "--cert", str(signer[1]), "--key", str(signer[1]))
    assert code == 2 and "not a PEM private key" in err
    other = SitePki().signing("x")
    _, k2 = other.write(tmp_path, "other")
    code, _, err = cli("model", "sign", str(model_dir), "--cert", str(signer[1]), "--key", str(k2))
    assert code == 2 and "does not belong" in err


def test_blake3_manifest(cli, model_dir: Path, signer: Signer) -> None:
    assert sign(cli, model_dir, signer, "--hash", "blake3")[0] == 0
    code, doc, _ = verify(cli, model_dir)
    assert code == 0 and doc["result"]["algorithm"] == "blake3"
    with open(model_dir / "tiny.gguf", "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    code, out = lines(cli, model_dir)
    assert code == 1 and out[0].startswith("MODIFIED tiny.gguf: blake3 expected")


def test_signer_from_the_site_pki(cli, model_dir: Path, home: Path) -> None:
    """--signer NAME: a signing certificate issued by the real `edgesec pki`."""
    code, _, err = cli("pki", "init", "--org", "Test Bank", "--no-encrypt")
    assert code == 0, err
    code, _, err = cli("pki", "issue", "signing", "release-signer")
    assert code == 0, err
    code, out, err = cli("model", "sign", str(model_dir), "--signer", "release-signer")
    assert code == 0, err
    code, doc, _ = verify(cli, model_dir)
    assert code == 0 and "release-signer" in doc["result"]["signer"]["subject"]
    code, _, err = cli("pki", "revoke", "release-signer")
    assert code == 0, err
    code, out = lines(cli, model_dir)
    assert code == 1 and "revoked" in out[0]


def test_progress_bar_for_a_person_at_a_terminal(cli, model_dir: Path, signer: Signer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    from edgesec.models import cli as model_cli

    assert sign(cli, model_dir, signer)[0] == 0
    monkeypatch.setattr(model_cli, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm")
    code, out, err = cli("model", "verify", str(model_dir))
    assert code == 0 and out.startswith("OK ")
    assert "verifying" in err  # the bar was drawn on stderr, never on stdout
    code, out, err = sign(cli, model_dir, signer, "--signature", str(model_dir.parent / "second.sig"))
    assert code == 0 and "signing" in err and "signing" not in out
    code, out, err = cli("--json", "model", "verify", str(model_dir))
    assert code == 0 and "verifying" not in err  # never with --json


def test_audit_trail_records_sign_verify_and_scan(cli, model_dir: Path, signer: Signer, home: Path) -> None:
    from edgesec import auditing

    assert sign(cli, model_dir, signer)[0] == 0
    assert cli("model", "verify", str(model_dir))[0] == 0
    (model_dir / "extra.bin").write_bytes(b"\x80\x02N.")
    assert cli("model", "verify", str(model_dir))[0] == 1
    assert cli("model", "scan", str(model_dir))[0] == 1
    auditing.flush()
    records = [json.loads(line) for line in (home / "audit" / "trail.jsonl").read_text().splitlines()]
    events = [
        (r["event"]["action"], r["event"]["outcome"])
        for r in records
        if r["event"]["action"].startswith("model.")
    ]
    assert events == [
        ("model.signed", "success"),
        ("model.verified", "success"),
        ("model.verified", "failure"),
        ("model.scanned", "failure"),
    ]
    signed = next(r for r in records if r["event"]["action"] == "model.signed")
    assert signed["file"]["x509"]["serial_number"] == f"{signer[0].cert.serial_number:x}"


def test_a_signing_time_proven_by_the_trail_outlives_the_certificate(
    model_dir: Path, pki: SitePki, home: Path
) -> None:
    """The time rule: ``model sign`` records the signature in the trail; once a signed checkpoint covers
    that record, the signature verifies after the certificate expired (``--proof-trail``), and not without."""
    from edgesec import auditing
    from edgesec.auditing.checkpoint import make_checkpoint, store_checkpoint
    from edgesec.auditing.verify import verify_trail

    short = pki.signing("short", not_before=NOW - dt.timedelta(hours=1), not_after=NOW + dt.timedelta(days=1))
    trust = api.TrustBundle.load(home / "trust")
    api.sign_model(model_dir, key=short.key, chain=[short.cert, pki.intermediate.cert], trust=trust)
    auditing.flush()
    trail = home / "audit"
    rep = verify_trail(trail)
    ts = pki.signing("trail-signer")
    store_checkpoint(
        trail, make_checkpoint(rep.head_seq, rep.head_hash, [ts.cert, pki.intermediate.cert], ts.key)
    )
    later = NOW + dt.timedelta(days=3)
    res = api.verify_model(model_dir, trust=trust, now=later)
    assert not res.ok and res.trust_error is not None and "expired" in res.trust_error
    res = api.verify_model(model_dir, trust=trust, now=later, proof_trail=trail)
    assert res.ok and res.proven is not None, res.trust_error
    assert res.to_json()["proven_time"]["by"].startswith("trail record")
    # A trail without the checkpoint proves nothing: the failure says why.
    (next((trail / "checkpoints").glob("*.json"))).unlink()
    res = api.verify_model(model_dir, trust=trust, now=later, proof_trail=trail)
    assert not res.ok and res.trust_error is not None and "not proven" in res.trust_error


def test_verifier_ignore_tolerates_only_unsigned_paths(cli, model_dir: Path, signer: Signer) -> None:
    """``--ignore`` can hide an added file, never a change to a signed one."""
    assert sign(cli, model_dir, signer)[0] == 0
    with open(model_dir / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    code, out = lines(cli, model_dir, "--ignore", "*.safetensors")
    assert code == 1
    assert any(ln.startswith("MODIFIED model.safetensors: shard 1/4") for ln in out)
    code, out = lines(cli, model_dir, "--ignore", "model.safetensors")
    assert code == 1


def test_the_same_path_rules_when_signing_and_verifying(cli, model_dir: Path, signer: Signer) -> None:
    """A name a verifier would refuse is refused at signing (exit 2), not signed into a manifest that fails."""
    (model_dir / "a\\b.txt").write_text("x")
    code, _, err = sign(cli, model_dir, signer)
    assert code == 2
    assert "cannot sign 'a\\\\b.txt': its name holds a backslash" in err
    (model_dir / "a\\b.txt").unlink()
    (model_dir / "x\nOK y").write_text("x")
    assert sign(cli, model_dir, signer)[0] == 2
    assert sign(cli, model_dir, signer, "--ignore", "x*")[0] == 0
    assert verify(cli, model_dir)[0] == 0


def test_names_cannot_forge_verify_lines(cli, model_dir: Path, signer: Signer) -> None:
    assert sign(cli, model_dir, signer)[0] == 0
    (model_dir / "evil\nOK forged: 0 problems").write_text("x")
    code, out = lines(cli, model_dir)
    assert code == 1
    assert "EXTRA evil\\x0aOK forged: 0 problems: not in the signed manifest (1 bytes)" in out
    assert not any(ln.startswith("OK") for ln in out)


def test_rollback_to_an_older_signed_release_is_refused_by_a_pin(
    cli, model_dir: Path, signer: Signer, tmp_path: Path, home: Path
) -> None:
    """An older release with its own valid model.sig verifies by itself; a pinned digest refuses it."""
    import shutil

    old = tmp_path / "old-release"
    shutil.copytree(model_dir, old)
    assert sign(cli, old, signer)[0] == 0
    (model_dir / "config.json").write_text('{"architectures": ["Tiny"], "fixed": true}\n')
    code, out, _ = sign(cli, model_dir, signer)
    assert code == 0
    import re

    found = re.search(r"^manifest digest: sha256:([0-9a-f]{64}) \(pin it in \[models\] pins\)$", out, re.M)
    assert found is not None, out
    digest = found.group(1)
    assert verify(cli, model_dir, "--pin", digest)[0] == 0
    # The attacker restores the old release, signature included: it verifies on its own...
    shutil.rmtree(model_dir)
    shutil.copytree(old, model_dir)
    assert verify(cli, model_dir)[0] == 0
    # ...but not against the pin, from the command line or the site config (models.signature).
    code, out = lines(cli, model_dir, "--pin", digest)
    assert code == 1
    assert out[0].startswith("PINNED .: the signed manifest is sha256:")
    assert out[0].endswith("(an older or another release)")
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[models]\ndirs = ["{model_dir}"]\npins = {{ "{model_dir}" = "{digest}" }}\n')
    code, out, _ = cli("--config", str(cfg), "model", "verify", str(model_dir))
    assert code == 1 and out.splitlines()[0].startswith("PINNED")
    from edgesec.checks.families.models import ModelSignatureCheck
    from edgesec.checks.interface import CheckContext, Status
    from edgesec.checks.probes import FixedClock, LiveSystem
    from edgesec.config import load_config

    ctx = CheckContext(
        system=LiveSystem(), clock=FixedClock(dt.datetime.now(dt.UTC)), config=load_config(cfg)
    )
    (finding,) = list(ModelSignatureCheck().run(ctx))
    assert finding.status == Status.FAIL and finding.message.startswith("PINNED .: the signed manifest")
    assert cli("model", "verify", str(model_dir), "--pin", "nothex")[0] == 2


def test_git_paths_are_left_out_at_the_root_only(cli, model_dir: Path, signer: Signer) -> None:
    """As model_signing: `.git`, `.github` ... at the model's root; one deeper down is a file like any other."""
    (model_dir / ".github").mkdir()
    (model_dir / ".github" / "ci.yml").write_text("on: push\n")
    (model_dir / "tokenizer" / ".github").mkdir()
    (model_dir / "tokenizer" / ".github" / "signed.txt").write_text("signed\n")
    assert sign(cli, model_dir, signer)[0] == 0
    assert verify(cli, model_dir)[0] == 0
    (model_dir / ".github" / "ci.yml").write_text("changed\n")  # not signed, not checked
    assert verify(cli, model_dir)[0] == 0
    (model_dir / "tokenizer" / ".github" / "added.pkl").write_bytes(b"\x80\x04N.")
    code, out = lines(cli, model_dir)
    assert code == 1
    assert "EXTRA tokenizer/.github/added.pkl: not in the signed manifest (4 bytes)" in out
