"""Header validators of the tensor formats: safetensors, GGUF and ONNX, parsed by hand.

Every count and length is checked against a bound and against the bytes that remain before it is used, so
a hostile header can neither run code nor make the scanner allocate what the file does not hold.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edgesec.models.scan.report import Bad as _Bad
from edgesec.models.scan.report import ScanFinding

# --- safetensors ------------------------------------------------------------------------------------

ST_MAX_HEADER = 100_000_000
ST_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise _Bad(f"duplicate key {k!r} in the header")
        d[k] = v
    return d


def check_safetensors(path: Path) -> dict[str, Any]:
    """Validate the header; returns a summary or raises :class:`_Bad` with the first problem."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < 8:
            raise _Bad(f"truncated: {size} bytes, no header length")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > ST_MAX_HEADER:
            raise _Bad(f"header length {n} exceeds the {ST_MAX_HEADER}-byte bound")
        if n > size - 8:
            raise _Bad(f"header length {n} runs past the end of the file ({size} bytes): truncated")
        raw = f.read(n)
    if not raw.startswith(b"{"):
        raise _Bad("header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dupes)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _Bad(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise _Bad("header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _Bad("__metadata__ must map strings to strings")
    data_len = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) - {"dtype", "shape", "data_offsets"}:
            raise _Bad(f"tensor {name!r}: entry must hold exactly dtype, shape, data_offsets")
        dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if dtype not in ST_DTYPES:
            raise _Bad(f"tensor {name!r}: unknown dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > 64
            or not all(isinstance(d, int) and d >= 0 for d in shape)
        ):
            raise _Bad(f"tensor {name!r}: shape must be a list of non-negative integers")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or not 0 <= offs[0] <= offs[1]
        ):
            raise _Bad(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end")
        count = 1
        for d in shape:
            count *= d
        if count * ST_DTYPES[dtype] != offs[1] - offs[0]:
            raise _Bad(
                f"tensor {name!r}: {dtype} x {shape} is {count * ST_DTYPES[dtype]} bytes but data_offsets span "
                f"{offs[1] - offs[0]}"
            )
        spans.append((offs[0], offs[1], name))
    pos = 0
    for begin, stop, name in sorted(spans):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap of {begin - pos} bytes"
            raise _Bad(f"tensor {name!r} at [{begin}, {stop}) {what}: offsets must be contiguous")
        pos = stop
    if pos != data_len:
        if pos > data_len:
            raise _Bad(f"tensors end at byte {pos} of the data section but it holds {data_len}: truncated")
        raise _Bad(f"{data_len - pos} bytes after the last tensor are not described by the header")
    return {"tensors": len(spans), "header_bytes": n}


# --- GGUF -------------------------------------------------------------------------------------------

GGUF_MAX_TENSORS = 1 << 20
GGUF_MAX_KV = 1 << 20
GGUF_MAX_STRING = 64 * 1024 * 1024
GGUF_MAX_ARRAY = 1 << 28
GGUF_MAX_DIMS = 4
GGUF_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
# ggml type id -> (elements per block, bytes per block), as in ggml's type traits.
GGML_TYPES = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 40),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
}


class _GgufReader:
    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        self.size = size

    @property
    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise _Bad(f"truncated: {what} needs {n} bytes, {self.left} remain")
        return self.f.read(n)

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise _Bad(f"truncated: {what} needs {n} bytes, {self.left} remain")
        self.f.seek(n, os.SEEK_CUR)

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def string(self, what: str, keep: bool = True) -> str | None:
        n = self.u64(f"{what} length")
        if n > GGUF_MAX_STRING:
            raise _Bad(f"{what}: string length {n} exceeds the {GGUF_MAX_STRING}-byte bound")
        if n > self.left:
            raise _Bad(f"{what}: string length {n} runs past the end of the file")
        if not keep:
            self.f.seek(n, os.SEEK_CUR)
            return None
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"{what}: string is not UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in GGUF_SCALAR:
            fmt = GGUF_SCALAR[vtype]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]
        if vtype == 8:
            return self.string(what)
        if vtype == 9:
            if depth >= 2:
                raise _Bad(f"{what}: arrays nested deeper than 2")
            etype = self.u32(f"{what} element type")
            count = self.u64(f"{what} element count")
            if etype not in GGUF_SCALAR and etype not in (8, 9):
                raise _Bad(f"{what}: unknown array element type {etype}")
            min_size = (
                struct.calcsize(GGUF_SCALAR[etype]) if etype in GGUF_SCALAR else (8 if etype == 8 else 12)
            )
            if count > GGUF_MAX_ARRAY or count * min_size > self.left:
                raise _Bad(f"{what}: array count {count} cannot fit in the {self.left} bytes that remain")
            if etype in GGUF_SCALAR:
                self.skip(count * min_size, what)
            else:
                for i in range(count):
                    self.value(etype, f"{what}[{i}]", depth + 1) if etype == 9 else self.string(
                        what, keep=False
                    )
            return None
        raise _Bad(f"{what}: unknown value type {vtype}")


def check_gguf(path: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Validate a GGUF header; returns a summary and the chat templates found (key, text)."""
    size = path.stat().st_size
    templates: list[tuple[str, str]] = []
    with open(path, "rb", buffering=1 << 16) as f:
        r = _GgufReader(f, size)
        if r.take(4, "magic") != b"GGUF":
            raise _Bad("not a GGUF file (bad magic)")
        version = r.u32("version")
        if version not in (2, 3):
            if version in (0x02000000, 0x03000000):
                raise _Bad("big-endian GGUF is not supported")
            raise _Bad(f"unsupported GGUF version {version}")
        n_tensors = r.u64("tensor count")
        n_kv = r.u64("metadata count")
        # Each tensor info takes at least 8+4+8+4+8 bytes, each key/value at least 8+4+1.
        if n_tensors > GGUF_MAX_TENSORS:
            raise _Bad(f"tensor count {n_tensors} is absurd (bound {GGUF_MAX_TENSORS})")
        if n_kv > GGUF_MAX_KV:
            raise _Bad(f"metadata count {n_kv} is absurd (bound {GGUF_MAX_KV})")
        if n_tensors * 32 + n_kv * 13 > r.left:
            raise _Bad(
                f"truncated: {n_tensors} tensor infos and {n_kv} metadata entries cannot fit in the {r.left} "
                "bytes that remain"
            )
        alignment = 32
        split: dict[str, int] = {}
        for i in range(n_kv):
            key = r.string(f"metadata key {i}")
            assert key is not None
            vtype = r.u32(f"type of {key}")
            value = r.value(vtype, key)
            if key == "general.alignment":
                if not isinstance(value, int) or value <= 0 or value & (value - 1) or value > 1 << 20:
                    raise _Bad(f"general.alignment {value!r} is not a power of two up to 1 MiB")
                alignment = value
            if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
                if isinstance(value, str):
                    templates.append((key, value))
            if key in ("split.count", "split.no") and isinstance(value, int):
                split[key] = value
        infos: list[tuple[str, int, int]] = []
        for i in range(n_tensors):
            name = r.string(f"tensor {i} name") or ""
            n_dims = r.u32(f"tensor {name!r} dimension count")
            if not 1 <= n_dims <= GGUF_MAX_DIMS:
                raise _Bad(f"tensor {name!r}: {n_dims} dimensions (1..{GGUF_MAX_DIMS} allowed)")
            elements = 1
            dims = []
            for d in range(n_dims):
                dim = r.u64(f"tensor {name!r} dimension {d}")
                if dim == 0 or dim > 1 << 40:
                    raise _Bad(f"tensor {name!r}: dimension {d} is {dim}")
                dims.append(dim)
                elements *= dim
            gtype = r.u32(f"tensor {name!r} type")
            offset = r.u64(f"tensor {name!r} offset")
            if gtype not in GGML_TYPES:
                raise _Bad(f"tensor {name!r}: unknown ggml type {gtype}")
            block, type_size = GGML_TYPES[gtype]
            if dims[0] % block:
                raise _Bad(
                    f"tensor {name!r}: first dimension {dims[0]} is not a multiple of the block size {block}"
                )
            if offset % alignment:
                raise _Bad(f"tensor {name!r}: offset {offset} is not aligned to {alignment}")
            infos.append((name, offset, elements // block * type_size))
        data_start = -(-f.tell() // alignment) * alignment
        data_len = size - data_start
        end = 0
        for name, offset, nbytes in sorted(infos, key=lambda t: t[1]):
            if offset < end:
                raise _Bad(f"tensor {name!r} at offset {offset} overlaps the previous tensor")
            end = offset + nbytes
            if end > data_len:
                raise _Bad(
                    f"tensor {name!r} ends at {end} but the data section holds {data_len} bytes: truncated"
                )
    return {"version": version, "tensors": n_tensors, "metadata": n_kv, **split}, templates


# --- ONNX -------------------------------------------------------------------------------------------

MAX_ONNX_DEPTH = 32


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Bad("protobuf varint runs past its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end-or-value) of each field in ``buf[start:end]``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos, end)
            yield num, wt, v, v
        elif wt == 1:
            pos += 8
        elif wt == 5:
            pos += 4
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Bad("protobuf field runs past its message: truncated or not ONNX")
            yield num, wt, pos, pos + n
            pos += n
        else:
            raise _Bad(f"protobuf wire type {wt} is not used by ONNX")
        if pos > end:
            raise _Bad("protobuf field runs past its message: truncated or not ONNX")


# message -> {field: message type of a sub-message worth descending into}
_ONNX_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def onnx_external_locations(buf: mmap.mmap | bytes) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor stored as external data."""
    found: list[tuple[str, str]] = []

    def walk(kind: str, start: int, end: int, depth: int) -> None:
        if depth > MAX_ONNX_DEPTH:
            raise _Bad("ONNX graphs nested too deep")
        if kind == "tensor":
            name, location = "", None
            for num, wt, s, e in _fields(buf, start, end):
                if num == 8 and wt == 2:
                    name = bytes(buf[s:e]).decode("utf-8", "replace")
                elif num == 13 and wt == 2:
                    k = v = None
                    for n2, w2, s2, e2 in _fields(buf, s, e):
                        if w2 == 2 and n2 in (1, 2):
                            text = bytes(buf[s2:e2]).decode("utf-8", "replace")
                            k, v = (text, v) if n2 == 1 else (k, text)
                    if k == "location" and v is not None:
                        location = v
            if location is not None:
                found.append((name, location))
            return
        sub = _ONNX_SCHEMA.get(kind, {})
        for num, wt, s, e in _fields(buf, start, end):
            if wt == 2 and num in sub:
                walk(sub[num], s, e, depth + 1)

    walk("model", 0, len(buf), 0)
    return found


def check_onnx(path: Path, rel: str, root: Path) -> list[ScanFinding]:
    out: list[ScanFinding] = []
    size = path.stat().st_size
    if size == 0:
        raise _Bad("empty file")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        locations = onnx_external_locations(buf)
    real_root = os.path.realpath(root)
    base = path.parent
    for tensor, loc in locations:
        target = os.path.realpath(base / loc)
        inside = target.startswith(real_root + os.sep)
        if os.path.isabs(loc) or ".." in Path(loc).parts or not inside:
            out.append(
                ScanFinding(
                    rel,
                    "onnx-external-data",
                    "critical",
                    f"tensor {tensor!r} loads external data from {loc!r}, outside the model directory",
                    {"tensor": tensor, "location": loc},
                )
            )
        elif not os.path.isfile(target):
            out.append(
                ScanFinding(
                    rel,
                    "onnx-external-data",
                    "medium",
                    f"tensor {tensor!r}: external data {loc!r} is missing",
                    {"tensor": tensor, "location": loc},
                )
            )
    return out
