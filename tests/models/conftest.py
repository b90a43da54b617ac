"""Fixtures of the model tests: a site PKI published as the site's trust bundle, and real small models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.models._pki import Issued, SitePki

SHARD = 1 << 20  # 1 MiB shards keep the models small while still having several shards per file


@pytest.fixture
def pki(home: Path) -> SitePki:
    """A site PKI whose bundle is published where edgesec looks by default (``<home>/trust``)."""
    p = SitePki()
    p.publish(home / "trust")
    return p


@pytest.fixture
def signer(pki: SitePki, tmp_path: Path) -> tuple[Issued, Path, Path]:
    """A codeSigning leaf and its files (certificate followed by the intermediate)."""
    leaf = pki.signing("model-publisher")
    d = tmp_path / "keys"
    d.mkdir()
    crt, key = leaf.write(d, "signing", pki.intermediate.cert)
    return leaf, crt, key


def make_gguf(path: Path, *, template: str | None = None, tensors: int = 2) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    for i in range(tensors):
        w.add_tensor(f"blk.{i}.weight", np.full((4, 32), i, dtype=np.float32))
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_safetensors(path: Path, *, mib: float = 0.0) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    tensors = {"embed": rng.standard_normal((16, 8)).astype(np.float32), "bias": np.arange(5, dtype=np.int64)}
    if mib:
        tensors["big"] = rng.integers(0, 255, int(mib * (1 << 20)), dtype=np.uint8)
    save_file(tensors, str(path), metadata={"format": "np"})
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small real model: a 3.5 MiB safetensors (4 shards of 1 MiB), a GGUF, configs in a subdirectory."""
    d = tmp_path / "tiny-model"
    d.mkdir()
    make_safetensors(d / "model.safetensors", mib=3.5)
    make_gguf(
        d / "tiny.gguf", template="{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    (d / "config.json").write_text('{"architectures": ["Tiny"]}\n')
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (d / "empty.txt").write_bytes(b"")
    return d
