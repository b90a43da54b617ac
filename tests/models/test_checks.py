"""The ``models`` check family: configured model directories must verify and scan clean."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

from edgesec.checks.families.models import CHECKS, ModelScanCheck, ModelSignatureCheck
from edgesec.checks.interface import CheckContext, Status
from edgesec.checks.probes import FixedClock, LiveSystem
from edgesec.config import load_config
from tests.models._pki import Issued


def ctx_for(tmp_path: Path, dirs: list[Path]) -> CheckContext:
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text("[models]\ndirs = [" + ", ".join(f'"{d}"' for d in dirs) + "]\n")
    return CheckContext(
        system=LiveSystem(), clock=FixedClock(dt.datetime.now(dt.UTC)), config=load_config(cfg)
    )


def sign(cli, model: Path, signer: tuple[Issued, Path, Path]) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("model", "sign", str(model), "--cert", str(signer[1]), "--key", str(signer[2]))
    assert code == 0, err


def test_metadata_is_valid() -> None:
    assert [c.meta.id for c in CHECKS] == ["models.signature", "models.unsafe-formats"]
    for c in CHECKS:
        c.meta.validate()


def test_skip_when_no_models_configured(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, [])
    for check in (ModelSignatureCheck(), ModelScanCheck()):
        (f,) = list(check.run(ctx))
        assert f.status is Status.SKIP and "[models] dirs" in f.message


def test_signed_clean_model_passes(cli, tmp_path: Path, model_dir: Path, signer) -> None:  # type: ignore[no-untyped-def]
    sign(cli, model_dir, signer)
    ctx = ctx_for(tmp_path, [model_dir])
    (sig,) = list(ModelSignatureCheck().run(ctx))
    assert sig.status is Status.PASS, sig.message
    assert sig.resource == str(model_dir)
    assert sig.evidence["signer"]["subject"].startswith("CN=model-publisher")
    (sc,) = list(ModelScanCheck().run(ctx))
    assert sc.status is Status.PASS
    assert sc.evidence["formats"]["model.safetensors"] == "safetensors"


def test_tampered_and_unsafe_model_fails_with_evidence(cli, tmp_path: Path, model_dir: Path, signer) -> None:  # type: ignore[no-untyped-def]
    sign(cli, model_dir, signer)
    cfg = model_dir / "config.json"
    cfg.write_text(cfg.read_text().replace("Tiny", "Tinz"))
    (model_dir / "adapter.bin").write_bytes(pickle.dumps({"w": [1.0]}))
    ctx = ctx_for(tmp_path, [model_dir])
    (sig,) = list(ModelSignatureCheck().run(ctx))
    assert sig.status is Status.FAIL
    assert sig.message == "EXTRA adapter.bin: not in the signed manifest (31 bytes) (and 1 more)"
    diffs = {(d["kind"], d["path"]) for d in sig.evidence["differences"]}
    assert diffs == {("extra", "adapter.bin"), ("modified", "config.json")}
    modified = next(d for d in sig.evidence["differences"] if d["kind"] == "modified")
    assert len(modified["expected"]) == 64 and modified["expected"] != modified["found"]
    (sc,) = list(ModelScanCheck().run(ctx))
    assert sc.status is Status.FAIL
    assert "adapter.bin: format pickle is not allowed" in sc.message


def test_unsigned_or_missing_directory_fails(tmp_path: Path, model_dir: Path, pki) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_for(tmp_path, [model_dir, tmp_path / "gone"])
    sig = list(ModelSignatureCheck().run(ctx))
    assert [f.status for f in sig] == [Status.FAIL, Status.FAIL]
    assert "no signature at" in sig[0].message
    assert "not a directory" in sig[1].message
    sc = list(ModelScanCheck().run(ctx))
    assert [f.status for f in sc] == [Status.PASS, Status.FAIL]


def test_no_trust_bundle_fails_closed(tmp_path: Path, model_dir: Path) -> None:
    ctx = ctx_for(tmp_path, [model_dir])
    (f,) = list(ModelSignatureCheck().run(ctx))
    assert f.status is Status.FAIL and "cannot verify" in f.message


def test_audit_survives_an_undecodable_file_name(cli, tmp_path: Path, model_dir: Path, signer) -> None:  # type: ignore[no-untyped-def]
    """A name that is not UTF-8 is a finding in both checks; the audit and its trail still run."""
    import os

    sign(cli, model_dir, signer)
    (model_dir / os.fsdecode(b"\xff\xfe.bin")).write_bytes(pickle.dumps({"w": 1}))
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[models]\ndirs = ["{model_dir}"]\n')
    code, out, err = cli("--config", str(cfg), "--json", "audit", "--only", "models")
    assert code == 1, out + err
    assert "Traceback" not in out + err
    ctx = ctx_for(tmp_path, [model_dir])
    (sig,) = list(ModelSignatureCheck().run(ctx))
    assert sig.status is Status.FAIL and sig.message.startswith(
        "EXTRA \\xff\\xfe.bin: not in the signed manifest"
    )
    (sc,) = list(ModelScanCheck().run(ctx))
    assert sc.status is Status.FAIL
    assert "\\xff\\xfe.bin" in sc.evidence["formats"]
