"""The scan corpus (tests/models/corpus.py): per-class detection, 0 canaries, 0 false positives.

Also: a differential test of the static pickle reader against CPython's own unpickler, whose ``find_class``
is instrumented in a throwaway subprocess (it records each import and hands back an inert stand-in, so
nothing a sample asks for runs), and the same corpus through picklescan, modelscan and fickling, run in
this session, with the table printed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from edgesec.models import scan
from edgesec.models.scan import npy, pickles
from tests.models.corpus import Sample, build


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, conformance: Path) -> tuple[list[Sample], Path]:
    base = tmp_path_factory.mktemp("corpus")
    canaries = base / "canaries"
    canaries.mkdir()
    return build(base / "corpus", canaries), canaries


def _blocking(s: Sample) -> list[scan.ScanFinding]:
    return scan.scan_path(s.path, allowed_formats=list(s.allowed)).blocking()


def test_every_hostile_sample_blocks_and_no_benign_one_does(corpus: tuple[list[Sample], Path]) -> None:
    samples, canaries = corpus
    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    missed, false_pos = [], []
    for s in samples:
        bad = _blocking(s)
        per_class[s.cls][1] += 1
        if s.hostile == bool(bad):
            per_class[s.cls][0] += 1
        elif s.hostile:
            missed.append(s.name)
        else:
            false_pos.append((s.name, [f.line() for f in bad]))
    print("\nedgesec per class:", {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_class.items())})
    assert missed == []
    assert false_pos == []
    assert sorted(os.listdir(canaries)) == []


def _by_name(samples: list[Sample], name: str) -> Sample:
    return next(s for s in samples if s.name == name)


def test_attack_lines(corpus: tuple[list[Sample], Path]) -> None:
    """The issue's attacks, each with the line a person reads."""
    samples, _ = corpus

    def lines(name: str) -> list[str]:
        s = _by_name(samples, name)
        return [f.line() for f in scan.scan_path(s.path, allowed_formats=list(s.allowed)).findings]

    assert (
        "CRITICAL pytorch_model.bin: pickle imports builtins.exec: a callable that runs code when loaded"
        in lines("onnx-hides-pytorch_model.bin")
    )
    assert any(
        x.startswith("CRITICAL model.gguf: tokenizer.chat_template reaches")
        for x in lines("onnx-hides-model.gguf")
    )
    assert "HIGH word2vec.model: format pickle is not allowed by the site policy" in lines(
        "renamed-word2vec.model"
    )
    assert "HIGH model.7z: format 7z is not allowed by the site policy" in lines("sevenzip")
    assert (
        "CRITICAL model.keras:config.json: Keras model holds a Lambda layer: its marshalled Python code runs when the model loads"
        in lines("keras-lambda")
    )
    assert (
        "CRITICAL weights.zip:weights/blob: pickle imports builtins.exec: a callable that runs code when loaded"
        in lines("zip-no-pkl")
    )
    assert "HIGH weights.bin: format not identified: not a format the site allows" in lines("raw-bin")
    assert (
        "CRITICAL model.pt: pickle imports builtins.exec (pickle 4 of the file): a callable that runs code when loaded"
        in lines("legacy-torch-4th-proto0")
    )
    assert "HIGH model.pt:archive/data.pkl: encrypted archive member: cannot be inspected" in lines(
        "zip-encrypted"
    )
    assert "HIGH model.safetensors: FIFO: a loader opening it may block or read a device; not read" in lines(
        "fifo"
    )
    assert "MEDIUM \\xff\\xfe.bin: file name is not valid UTF-8 (shown with \\x escapes)" in lines(
        "undecodable-name"
    )
    out = lines("newline-name")
    assert all("\n" not in x for x in out)
    assert any(x.startswith("CRITICAL a.bin\\x0aCLEAN x: 0 findings: pickle imports") for x in out)
    assert "HIGH model.nemo:./model_weights.ckpt: format pickle is not allowed by the site policy" in lines(
        "tar-pickle-not-allowed"
    )
    assert any(
        x.startswith(
            "CRITICAL model.nemo:./model_weights.ckpt:archive/data.pkl: pickle imports builtins.exec"
        )
        for x in lines("nemo-evil")
    )
    # A FRAME shorter than the argument it starts: only a reader that follows CPython's buffer sees the call.
    assert (
        "CRITICAL model.pt:archive/data.pkl: pickle imports builtins.exec: a callable that runs code when loaded"
        in lines("frame-lie-torch-zip")
    )
    assert "CRITICAL model.pkl: pickle imports builtins.exec: a callable that runs code when loaded" in lines(
        "frame-lie"
    )
    sym = lines("symlink-out")
    assert any("symlink to" in x and "outside the directory" in x for x in sym)
    assert any("builtins.exec" in x for x in sym)


HARNESS = r"""
import json, pickle, sys
calls = []
class Inert:
    def __new__(cls, *a, **k): return object.__new__(cls)
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return Inert()
    def __setstate__(self, state): pass
    def append(self, x): pass
    def extend(self, x): pass
    def add(self, x): pass
    def __setitem__(self, k, v): pass
class Recording(pickle.Unpickler):
    def find_class(self, module, name):
        calls[-1].append([module, name])
        return type("Inert", (Inert,), {})
    def persistent_load(self, pid):
        return Inert()
import io
for path, offset, count in json.loads(sys.stdin.read()):
    for how in ("file", "bytesio"):
        calls.append([])
        with open(path, "rb") as f:
            f.seek(offset)
            src = f if how == "file" else io.BytesIO(f.read())
            for _ in range(count):
                try:
                    Recording(src).load()
                except Exception:
                    break
print(json.dumps(calls))
"""


def _streams(samples: list[Sample], tmp: Path) -> list[tuple[str, int, int]]:
    """Every pickle stream of the corpus: files, zip members, the bodies of object arrays."""
    out: list[tuple[str, int, int]] = []

    def add(p: Path, data: bytes | None = None) -> None:
        raw = p.read_bytes() if data is None else data
        if data is not None:
            p = tmp / f"member-{len(out)}"
            p.write_bytes(raw)
        if raw.startswith(npy.MAGIC):
            f = io.BytesIO(raw)
            npy.read_header(f, len(raw))
            out.append((str(p), f.tell(), 1))
        elif raw.startswith(b"PK"):
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for info in z.infolist():
                    if not info.flag_bits & 1:
                        add(p, z.read(info))
        elif scan.detect(p.name, raw[:4096], len(raw)) == "pickle":
            out.append((str(p), 0, pickles.TORCH_LEGACY_PICKLES))

    for s in samples:
        for p in sorted(s.path.rglob("*")):
            if p.is_file() and not p.is_symlink():
                add(p)
    return out


def test_static_reader_equals_cpython_find_class(corpus: tuple[list[Sample], Path], tmp_path: Path) -> None:
    samples, canaries = corpus
    streams = _streams(samples, tmp_path)
    assert len(streams) >= 40
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS],
        input=json.dumps(streams),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=True,
    )
    dynamic = json.loads(proc.stdout)
    assert len(dynamic) == 2 * len(streams)
    for i, (path, offset, count) in enumerate(streams):
        for stream, seen in ((False, dynamic[2 * i]), (True, dynamic[2 * i + 1])):
            with open(path, "rb") as f:
                f.seek(offset)
                results = pickles.read_pickles(f, os.path.getsize(path), count, stream=stream)
            static = [list(x) for r in results for x in r.imports]
            if any(r.computed or r.lenient for r in results):
                assert all(x in static for x in seen), path  # the reader may only report more
            else:
                assert static == seen, (path, stream)
    assert sorted(os.listdir(canaries)) == []


def test_numpy_descr_decoding_matches_numpy() -> None:
    import numpy as np

    for descr in ("<f4", "|O", "O", "object", "i4,O", "|b1", "<U3", [("a", "<f4"), ("b", "object")],
                  [("a", "<i8", (2,))], ("O", (2,)), ("<f8", (3,)), [("x", [("y", "O")])]):  # fmt: skip
        assert npy.has_object(descr) == np.lib.format.descr_to_dtype(descr).hasobject, descr


def _peer_verdicts(s: Sample) -> dict[str, bool | None]:
    """Whether each peer flags the sample (None: it cannot be run on it, a FIFO would block it)."""
    if any(p.is_fifo() for p in s.path.rglob("*")):
        return {"picklescan": None, "modelscan": None, "fickling": None}
    from fickling import scan_file as fickling_scan
    from modelscan.modelscan import ModelScan
    from picklescan.scanner import scan_directory_path

    def run(fn: Callable[[], bool]) -> bool:
        try:
            return fn()
        except Exception:  # a peer that crashes on a sample gives no verdict: counted as not flagged
            return False

    def ps() -> bool:
        r = scan_directory_path(str(s.path))
        return bool(r.issues_count or r.infected_files)

    def ms() -> bool:
        return bool(ModelScan().scan(str(s.path)).get("issues"))

    def fk() -> bool:
        # A file fickling cannot parse as a pickle (GGUF, JSON) gets no verdict from it, not a detection.
        results = [fickling_scan(str(p), graceful=True) for p in s.path.rglob("*") if p.is_file()]
        return any(r.severity.name != "LIKELY_SAFE" and not r.errors for r in results)

    return {"picklescan": run(ps), "modelscan": run(ms), "fickling": run(fk)}


def test_peers_on_the_same_corpus(
    corpus: tuple[list[Sample], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    samples, canaries = corpus
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for s in samples:
        verdicts = {"edgesec": bool(_blocking(s)), **_peer_verdicts(s)}
        for tool, flagged in verdicts.items():
            if flagged is None:
                continue
            cell = table[s.cls][tool]
            cell[1] += 1
            cell[0] += int(flagged == s.hostile)
    rows = [
        f"{'class':22} " + " ".join(f"{t:>11}" for t in ("edgesec", "picklescan", "modelscan", "fickling"))
    ]
    for cls, tools in sorted(table.items()):
        rows.append(
            f"{cls:22} "
            + " ".join(
                f"{tools[t][0]:>5}/{tools[t][1]:<5}"
                for t in ("edgesec", "picklescan", "modelscan", "fickling")
            )
        )
    with capsys.disabled():
        print("\ncorrect verdicts per class (hostile flagged, benign not):\n" + "\n".join(rows))
    assert all(tools["edgesec"][0] == tools["edgesec"][1] for tools in table.values())
    assert sorted(os.listdir(canaries)) == []


def _random_programs(n: int, seed: int) -> list[bytes]:
    """Random opcode sequences rich in strings, memo traffic, marks and imports (no payload: nothing runs)."""
    import random

    rnd = random.Random(seed)
    names = ["os", "system", "builtins", "len", "exec", "a.b", "c", "posix", "__builtin__", "copy_reg"]

    def s() -> str:
        return rnd.choice(names)

    gens = [
        lambda: b"\x8c" + bytes([len(s0 := s())]) + s0.encode(),
        lambda: b"X" + len(s0 := s()).to_bytes(4, "little") + s0.encode(),
        lambda: b"V" + s().encode() + b"\n",
        lambda: b"S'" + s().encode() + b"'\n",
        lambda: b"U" + bytes([len(s0 := s())]) + s0.encode(),
        lambda: b"C\x02ab",
        lambda: b"K" + bytes([rnd.randrange(256)]),
        lambda: b"I" + str(rnd.randrange(100)).encode() + b"\n",
        lambda: b"N",
        lambda: b"(",
        lambda: b"0",
        lambda: b"1",
        lambda: b"2",
        lambda: b"\x94",
        lambda: b"q" + bytes([rnd.randrange(4)]),
        lambda: b"p" + str(rnd.randrange(4)).encode() + b"\n",
        lambda: b"h" + bytes([rnd.randrange(4)]),
        lambda: b"g" + str(rnd.randrange(4)).encode() + b"\n",
        lambda: b"j" + rnd.randrange(4).to_bytes(4, "little"),
        lambda: rnd.choice([b"t", b"\x85", b"\x86", b"\x87", b"l", b"d", b")", b"]", b"}", b"\x8f", b"\x91"]),
        lambda: b"\x93",
        lambda: b"\x93",
        lambda: b"c" + s().encode() + b"\n" + s().encode() + b"\n",
        lambda: b"i" + s().encode() + b"\n" + s().encode() + b"\n",
        lambda: rnd.choice([b"R", b"b", b"a", b"s", b"e", b"u", b"\x81", b"o", b"\x90", b"\x92"]),
        lambda: b"\x95" + rnd.randrange(40).to_bytes(8, "little"),
        lambda: b"\x80" + bytes([rnd.randrange(7)]),
    ]
    out = []
    for _ in range(n):
        body = b"".join(rnd.choice(gens)() for _ in range(rnd.randrange(1, 24)))
        out.append(body + b".")
    return out


RANDOM_HARNESS = (
    HARNESS[: HARNESS.index("import io")]
    + """
import io
for blob in json.loads(sys.stdin.read()):
    data = bytes.fromhex(blob)
    for how in ("loads", "bytesio"):
        calls.append([])
        try:
            Recording(io.BytesIO(data)).load() if how == "bytesio" else Recording(io.BufferedReader(io.BytesIO(data))).load()
        except Exception:
            pass
print(json.dumps(calls))
"""
)


def test_static_reader_never_misses_what_cpython_imports_on_random_programs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stack, memo, mark and framing semantics on programs no one wrote by hand, read both ways.

    Every import CPython makes is reported, in order. The reader may report more where CPython stops on a
    type it cannot know statically (an imported object that is not a class, a call's result used as a
    tuple); the count of those is printed, never a miss.
    """
    programs = _random_programs(3000, seed=19)
    proc = subprocess.run(
        [sys.executable, "-c", RANDOM_HARNESS],
        input=json.dumps([p.hex() for p in programs]),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=True,
    )
    dynamic = json.loads(proc.stdout)
    reached = exact = 0
    for i, program in enumerate(programs):
        for stream, seen in ((False, dynamic[2 * i]), (True, dynamic[2 * i + 1])):
            res = pickles.read_pickle(io.BytesIO(program), len(program), stream=stream)
            static = [list(x) for x in res.imports]
            reached += bool(seen)
            exact += static == seen
            assert static[: len(seen)] == seen, (program, stream)
    with capsys.disabled():
        print(f"\nrandom programs: {exact}/{2 * len(programs)} exact, {reached} reach an import, 0 missed")
    assert reached >= 300  # enough programs get as far as an import for the comparison to mean something
