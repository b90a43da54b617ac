"""The manifest format: round trips, strict parsing of hostile input, and the hashing engine's invariants."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgesec.errors import InputError, VerificationError
from edgesec.models import bundle, hashing, manifest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_from_statement_rejects_anything_malformed(doc: Any) -> None:
    try:
        manifest.from_statement(doc if isinstance(doc, dict) else {"predicate": doc})
    except VerificationError:
        pass


near_valid = st.fixed_dictionaries(
    {
        "subject": st.just([{"name": "m", "digest": {"sha256": "00" * 32}}]) | json_values,
        "predicate": st.fixed_dictionaries(
            {
                "serialization": st.fixed_dictionaries(
                    {
                        "method": st.sampled_from(["files", "shards", "x"]) | json_values,
                        "hash_type": st.sampled_from(["sha256", "blake3", "md5"]) | json_values,
                        "allow_symlinks": st.booleans() | json_values,
                        "shard_size": st.integers(-5, 5000) | json_values,
                    }
                ),
                "resources": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.sampled_from(["a", "a:0:10", "b/c", "../d", "a:5:2"])
                            | st.text(max_size=8),
                            "algorithm": st.sampled_from(["sha256", "blake3"]),
                            "digest": st.sampled_from(["00" * 32, "zz", ""]) | json_values,
                        }
                    ),
                    max_size=4,
                ),
                "edgesec": json_values
                | st.fixed_dictionaries(
                    {
                        "version": st.just(1),
                        "files": json_values,
                        "shard_size": json_values,
                        "signed_at": json_values,
                    }
                ),
            }
        ),
    }
)


@given(near_valid)
def test_from_statement_rejects_near_valid_input(doc: dict[str, Any]) -> None:
    try:
        manifest.from_statement(doc)
    except VerificationError:
        pass


@given(st.binary(max_size=400))
def test_read_bundle_rejects_anything_malformed(data: bytes) -> None:
    with pytest.raises(InputError):
        bundle.read_bundle(data)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", "", "a\x00b"])
def test_unsafe_manifest_paths(name: str) -> None:
    with pytest.raises(VerificationError, match="unsafe path"):
        manifest.check_rel_path(name)


def _statement_with(resources: list[dict[str, str]]) -> dict[str, Any]:
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    return {
        "subject": [{"name": "m", "digest": {"sha256": root}}],
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": resources,
        },
    }


def test_subject_digest_binds_the_resources() -> None:
    st_ = _statement_with([{"name": "a", "algorithm": "sha256", "digest": "11" * 32}])
    assert manifest.from_statement(st_).files["a"].digest == "11" * 32
    st_["predicate"]["resources"][0]["digest"] = "22" * 32
    with pytest.raises(VerificationError, match="subject digest"):
        manifest.from_statement(st_)


def test_traversal_in_a_signed_manifest_is_refused() -> None:
    st_ = _statement_with([{"name": "../../etc/shadow", "algorithm": "sha256", "digest": "11" * 32}])
    with pytest.raises(VerificationError, match="unsafe path"):
        manifest.from_statement(st_)


def test_model_signing_shard_serialization(tmp_path: Path) -> None:
    """A ``shards`` manifest (model_signing's sharded hashing) verifies shard by shard."""
    d = tmp_path / "m"
    d.mkdir()
    data = bytes(range(256)) * 20  # 5120 bytes
    (d / "w.bin").write_bytes(data)
    (d / "empty").write_bytes(b"")
    size = 2048
    resources = [
        {"name": f"w.bin:{s}:{min(s + size, len(data))}", "algorithm": "sha256",
         "digest": hashlib.sha256(data[s : s + size]).hexdigest()}
        for s in range(0, len(data), size)
    ]  # fmt: skip
    st_ = _statement_with(resources)
    st_["predicate"]["serialization"] = {"method": "shards", "hash_type": "sha256", "shard_size": size,
                                         "allow_symlinks": False}  # fmt: skip
    m = manifest.from_statement(st_)
    assert m.producer == "model_signing" and len(m.files["w.bin"].shards) == 3
    assert manifest.compare(m, d).differences == []  # the empty file is not listed, as in model_signing
    (d / "w.bin").write_bytes(data[:4096] + b"X" + data[4097:])
    (diff,) = manifest.compare(m, d).differences
    assert diff.kind == "modified" and diff.shard == 2 and "shard 3/3 bytes [4096, 5120)" in diff.detail


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=5), st.integers(1, 4))
def test_engine_matches_hashlib(
    tmp_path_factory: pytest.TempPathFactory, blobs: list[bytes], workers: int
) -> None:
    """Shards and whole files hashed on any number of threads with tiny reused buffers equal hashlib's."""
    d = tmp_path_factory.mktemp("blobs")
    tasks = []
    for i, b in enumerate(blobs):
        p = d / f"f{i}"
        p.write_bytes(b)
        tasks.append(hashing.Task(("whole", i), p, 0, None, "sha256"))
        for j, (s, e) in enumerate(hashing.shard_ranges(len(b), 1000)):
            tasks.append(hashing.Task(("shard", i, j), p, s, e, "sha256"))
    out = hashing.run_tasks(tasks, workers=workers, chunk=97)
    for t in tasks:
        b = blobs[t.key[1]]
        want = b if t.end is None else b[t.start : t.end]
        assert out[t.key].digest == hashlib.sha256(want).digest()
        assert out[t.key].read == len(want)


def test_statement_round_trip(model_dir: Path) -> None:
    m = manifest.build(model_dir, shard_size=1 << 20)
    again = manifest.from_statement(json.loads(json.dumps(manifest.to_statement(m))))
    assert again.files == m.files
    assert again.shard_size == m.shard_size and again.signed_at == m.signed_at
    assert again.ignore_paths == m.ignore_paths


@pytest.mark.parametrize(
    ("pattern", "path", "ignored"),
    [
        ("*.log", "logs/run.log", True),
        ("logs", "logs/run.txt", True),
        ("logs/*.txt", "logs/run.txt", True),
        ("logs/*.txt", "other/logs/run.txt", False),
        (".cache", "a/.cache/b", True),
        ("model.sig", "model.sig", True),
        ("*.log", "log", False),
    ],
)
def test_ignore_patterns(pattern: str, path: str, ignored: bool) -> None:
    assert hashing.is_ignored(path, [pattern]) is ignored


def test_deep_directories_are_walked_without_recursion(tmp_path: Path) -> None:
    import inspect
    import sys

    d = tmp_path / "m"
    deep = d.joinpath(*["a"] * 300)
    deep.mkdir(parents=True)
    (deep / "w.bin").write_bytes(b"x")
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)  # far fewer frames than the directory is deep
    try:
        listing = hashing.walk(d)
    finally:
        sys.setrecursionlimit(old)
    assert list(listing.files) == ["/".join(["a"] * 300) + "/w.bin"]
