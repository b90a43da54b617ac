"""Interoperability with the OpenSSF ``model_signing`` CLI (certificate method), both ways, as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesec.models.bundle import read_bundle
from tests.models._pki import Issued, SitePki

pytestmark = pytest.mark.real("model_signing")


def model_signing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["model_signing", *args], capture_output=True, text=True, timeout=120, check=False)


def test_model_signing_verifies_an_edgesec_signature(
    cli, model_dir: Path, signer: tuple[Issued, Path, Path], home: Path
) -> None:
    _, crt, key = signer
    code, _, err = cli(
        "model", "sign", str(model_dir), "--cert", str(crt), "--key", str(key), "--shard-size", "1"
    )
    assert code == 0, err
    sig = model_dir / "model.sig"
    root = home / "trust" / "root.pem"
    r = model_signing(
        "verify", "certificate", str(model_dir), "--signature", str(sig), "--certificate_chain", str(root)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Verification succeeded" in r.stdout + r.stderr
    # ...and it rejects the same tampering edgesec rejects (so it really checks our digests).
    with open(model_dir / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    r = model_signing(
        "verify", "certificate", str(model_dir), "--signature", str(sig), "--certificate_chain", str(root)
    )
    assert r.returncode != 0
    assert "model.safetensors" in r.stdout + r.stderr


def test_edgesec_verifies_a_model_signing_signature(
    cli, model_dir: Path, signer: tuple[Issued, Path, Path], home: Path, tmp_path: Path, pki: SitePki
) -> None:
    leaf, _, _ = signer
    crt, key = leaf.write(tmp_path, "leaf-only")  # model_signing takes the chain separately
    sig = tmp_path / "model.sig"  # outside the model: model_signing would otherwise sign its own ignore list
    r = model_signing(
        "sign",
        "certificate",
        str(model_dir),
        "--signature",
        str(sig),
        "--private_key",
        str(key),
        "--signing_certificate",
        str(crt),
        "--certificate_chain",
        str(home / "trust" / "intermediates.pem"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    code, out, err = cli("--json", "model", "verify", str(model_dir), "--signature", str(sig))
    assert code == 0, out + err
    doc = json.loads(out)["result"]
    assert doc["producer"] == "model_signing" and doc["files"] == 5
    # Tampering found, with the file named.
    (model_dir / "tokenizer" / "vocab.txt").write_text("a\nb\nX\n")
    code, out, _ = cli("model", "verify", str(model_dir), "--signature", str(sig))
    assert code == 1
    assert out.splitlines()[0].startswith("MODIFIED tokenizer/vocab.txt: sha256 expected")


def test_model_signing_signature_from_a_server_certificate_is_refused(
    cli, model_dir: Path, pki: SitePki, tmp_path: Path
) -> None:
    """model_signing accepts any certificate with digitalSignature; the site requires codeSigning."""
    srv = pki.server("web")
    crt, key = srv.write(tmp_path, "srv")
    pki.intermediate.write(tmp_path, "inter")
    chain = tmp_path / "inter.crt"
    sig = tmp_path / "srv.sig"
    r = model_signing(
        "sign",
        "certificate",
        str(model_dir),
        "--signature",
        str(sig),
        "--private_key",
        str(key),
        "--signing_certificate",
        str(crt),
        "--certificate_chain",
        str(chain),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    code, out, _ = cli("model", "verify", str(model_dir), "--signature", str(sig))
    assert code == 1
    assert "wrong purpose: certificate is for server, not signing" in out


def test_real_subprocess_cli(model_dir: Path, signer: tuple[Issued, Path, Path], home: Path) -> None:
    """Once through a real process: exit codes and output as a shell script sees them."""
    _, crt, key = signer
    env = {**os.environ, "EDGESEC_HOME": str(home)}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "edgesec", *a],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run("model", "sign", str(model_dir), "--cert", str(crt), "--key", str(key)).returncode == 0
    ok = run("model", "verify", str(model_dir))
    assert ok.returncode == 0 and ok.stdout.startswith("OK ")
    (model_dir / "extra.safetensors").write_bytes(b"x")
    bad = run("model", "verify", str(model_dir))
    assert bad.returncode == 1
    assert "EXTRA extra.safetensors" in bad.stdout


def test_blake3_manifest_verifies_with_the_model_signing_library(
    cli, model_dir: Path, signer: tuple[Issued, Path, Path], home: Path
) -> None:
    """BLAKE3 manifests follow the format (hash_type blake3); model_signing's library verifies them,
    its CLI does not (it always hashes with SHA-256)."""
    import model_signing

    _, crt, key = signer
    code, _, err = cli(
        "model", "sign", str(model_dir), "--cert", str(crt), "--key", str(key), "--hash", "blake3"
    )
    assert code == 0, err
    model_signing.verifying.Config().use_certificate_verifier(
        certificate_chain=[str(home / "trust" / "root.pem")]
    ).verify(str(model_dir), str(model_dir / "model.sig"))


SHARDED_SIGN = """
import sys
from model_signing import hashing, signing
model, sig, key, crt, chain = sys.argv[1:]
(
    signing.Config()
    .use_certificate_signer(private_key=key, signing_certificate=crt, certificate_chain=[chain])
    .set_hashing_config(hashing.Config().use_shard_serialization(shard_size=1 << 20))
    .sign(model, sig)
)
"""


def test_edgesec_verifies_a_model_signing_sharded_signature(
    cli, model_dir: Path, signer: tuple[Issued, Path, Path], home: Path, tmp_path: Path
) -> None:
    """model_signing 1.1.1's shard serialization ("sha256-sharded-1048576", a float shard size) verifies."""
    leaf, _, _ = signer
    crt, key = leaf.write(tmp_path, "leaf-only")
    sig = tmp_path / "model.sig"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            SHARDED_SIGN,
            str(model_dir),
            str(sig),
            str(key),
            str(crt),
            str(home / "trust" / "intermediates.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    statement = json.loads(read_bundle(sig.read_bytes()).payload)
    algorithms = {res["algorithm"] for res in statement["predicate"]["resources"]}
    assert algorithms == {"sha256-sharded-1048576"}
    code, out, err = cli("--json", "model", "verify", str(model_dir), "--signature", str(sig))
    assert code == 0, out + err
    with open(model_dir / "model.safetensors", "r+b") as f:
        f.seek((1 << 20) + 5)  # in the second shard
        f.write(b"\x00\x01\x02")
    code, out, _ = cli("model", "verify", str(model_dir), "--signature", str(sig))
    assert code == 1
    assert out.splitlines()[0].startswith("MODIFIED model.safetensors: shard 2/4 bytes [1048576, 2097152)")


def test_model_signing_ignore_paths_are_literal_paths(
    cli, model_dir: Path, signer: tuple[Issued, Path, Path], home: Path, tmp_path: Path
) -> None:
    """model_signing's ignore_paths name paths from the model's root, not patterns at any depth."""
    leaf, _, _ = signer
    crt, key = leaf.write(tmp_path, "leaf-only")
    sig = tmp_path / "model.sig"
    (model_dir / "notes.txt").write_text("unsigned")
    r = model_signing(
        "sign", "certificate", str(model_dir), "--signature", str(sig), "--private_key", str(key),
        "--signing_certificate", str(crt), "--certificate_chain", str(home / "trust" / "intermediates.pem"),
        "--ignore-paths", str(model_dir / "notes.txt"),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    statement = json.loads(read_bundle(sig.read_bytes()).payload)
    assert "notes.txt" in statement["predicate"]["serialization"]["ignore_paths"]
    assert cli("model", "verify", str(model_dir), "--signature", str(sig))[0] == 0
    (model_dir / "tokenizer" / "notes.txt").write_text("added later, deeper")
    code, out, _ = cli("model", "verify", str(model_dir), "--signature", str(sig))
    assert code == 1
    assert "EXTRA tokenizer/notes.txt: not in the signed manifest (19 bytes)" in out
