"""Static safety scan of model files: can loading this file run code, or break its loader?

Nothing here loads a model. Pickles are read opcode by opcode (``pickletools.genops``) and never
unpickled; safetensors, GGUF and ONNX headers are parsed by hand with every count and length checked
against a bound and against the bytes that remain before it is used, so a hostile header can neither
run code nor make the scanner allocate what the file does not hold.

Severities: ``critical`` (loading runs attacker code: a pickle importing ``os.system``, a chat template
reaching ``__class__``, external data outside the model), ``high`` (a format the policy forbids, a
malformed header a loader may mis-parse), ``medium``/``low`` (worth a look). ``high`` and above block.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import pickletools
import stat
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgesec.checks.models.hashing import GIT_PATHS, is_ignored

SEVERITIES = ("info", "low", "medium", "high", "critical")
BLOCKING = ("high", "critical")


@dataclass(frozen=True)
class ScanFinding:
    """One problem with one file."""

    path: str
    rule: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.severity.upper()} {self.path}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class ScanReport:
    """All findings of one scan, and what was looked at."""

    root: str
    files_scanned: int = 0
    formats: dict[str, str] = field(default_factory=dict)
    findings: list[ScanFinding] = field(default_factory=list)

    def blocking(self) -> list[ScanFinding]:
        return [f for f in self.findings if f.severity in BLOCKING]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "clean": not self.blocking(),
            "files_scanned": self.files_scanned,
            "formats": self.formats,
            "findings": [f.to_dict() for f in self.findings],
        }


class _Bad(Exception):
    """A malformed header: the message is the one line a person reads."""


# --- format detection -------------------------------------------------------------------------------

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".mar", ".nemo"}
TEXT_SUFFIXES = {
    ".json",
    ".txt",
    ".md",
    ".model",
    ".tiktoken",
    ".yaml",
    ".yml",
    ".jinja",
    ".vocab",
    ".merges",
    ".sig",
    ".cfg",
    ".csv",
    ".spm",
    ".png",
    ".jpg",
    ".svg",
    ".license",
    "",
}


def detect(path: Path, head: bytes) -> str:
    """The file's format from its content first (a renamed pickle is still a pickle), then its name."""
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head[:4] == b"PK\x03\x04":
        return "pickle-zip" if path.suffix.lower() in PICKLE_SUFFIXES or _zip_has_pickle(path) else "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".gguf":
        return "gguf"
    if suffix == ".onnx":
        return "onnx"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"  # a pickle may start with any opcode (protocol 0/1 has no PROTO)
    if suffix == ".py":
        return "python"
    if path.name == "tokenizer_config.json":
        return "tokenizer-config"
    if suffix in TEXT_SUFFIXES:
        return "auxiliary"
    return "unknown"


def _zip_has_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith(".pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


# --- pickle -----------------------------------------------------------------------------------------

SAFE_GLOBALS: dict[str, frozenset[str]] = {
    "collections": frozenset({"OrderedDict"}),
    "torch._utils": frozenset(
        {
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
            "_rebuild_meta_tensor_no_storage",
            "_rebuild_device_tensor_from_numpy",
            "_rebuild_nested_tensor",
        }
    ),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch": frozenset(
        {
            "FloatStorage",
            "HalfStorage",
            "BFloat16Storage",
            "DoubleStorage",
            "LongStorage",
            "IntStorage",
            "ShortStorage",
            "CharStorage",
            "ByteStorage",
            "BoolStorage",
            "ComplexFloatStorage",
            "ComplexDoubleStorage",
            "UntypedStorage",
            "Size",
            "device",
            "float32",
            "float16",
            "bfloat16",
            "float64",
            "int64",
            "int32",
            "int16",
            "int8",
            "uint8",
            "bool",
            "strided",
            "sparse_coo",
        }
    ),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "_codecs": frozenset({"encode"}),  # how numpy pickles carry raw bytes under protocol 2
    "builtins": frozenset({"set", "frozenset", "slice", "complex", "bytearray"}),
    "__builtin__": frozenset({"set", "frozenset", "slice", "complex", "bytearray"}),
}
"""What a weights-only checkpoint needs. Anything else is reported: allowlists are not bypassed by a
module the list forgot, blocklists are."""

DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "socket",
        "shutil",
        "runpy",
        "pty",
        "pickle",
        "_pickle",
        "pdb",
        "ctypes",
        "webbrowser",
        "pip",
        "importlib",
        "code",
        "codeop",
        "commands",
        "marshal",
        "types",
        "multiprocessing",
        "asyncio",
        "tempfile",
        "pathlib",
        "urllib",
        "http",
        "requests",
        "ftplib",
        "telnetlib",
        "smtplib",
        "bdb",
        "timeit",
        "platform",
        "signal",
        "threading",
        "_thread",
        "posixpath",
    }
)
DANGEROUS_NAMES = {
    ("builtins", n)
    for n in (
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "open",
        "__import__",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "execfile",
        "apply",
    )
} | {
    ("functools", "partial"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("numpy.testing._private.utils", "runstring"),
}

_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
MAX_PICKLES = 8
BIG_READ = 16 * 1024 * 1024


class _Blob:
    """Stands in for a large opcode argument that was skipped, not read (tensor bytes in a pickle)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Bounded:
    """A reader that never returns more than the stream holds and skips big payloads instead of reading them.

    ``pickletools`` reads ``n`` bytes for an opcode that declares ``n``: a hostile ``BINBYTES8`` of 2**60
    must cost a seek and an error, not an allocation.
    """

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        self.size = size

    def tell(self) -> int:
        return self.f.tell()

    def remaining(self) -> int:
        return self.size - self.f.tell()

    def read(self, n: int = -1) -> Any:
        left = self.remaining()
        if n < 0 or n > left:
            return self.f.read(min(left, 1))  # short: genops reports the truncation
        if n > BIG_READ:
            self.f.seek(n, os.SEEK_CUR)
            return _Blob(n)
        return self.f.read(n)

    def readline(self) -> bytes:
        return self.f.readline(65536)


def _classify_global(module: str, name: str) -> str | None:
    """None if allowed; else the severity of importing ``module.name`` from a pickle."""
    if name in SAFE_GLOBALS.get(module, frozenset()):
        return None
    top = module.split(".")[0]
    if top in DANGEROUS_MODULES or (module, name) in DANGEROUS_NAMES or module in ("builtins", "__builtin__"):
        return "critical"
    return "high"


def scan_pickle_stream(f: IO[bytes], size: int, rel: str) -> list[ScanFinding]:
    """Read the opcodes of every pickle in ``f`` (torch's legacy format has several) and judge the imports."""
    out: list[ScanFinding] = []
    reader = _Bounded(f, size)
    seen: set[tuple[str, str]] = set()
    for _ in range(MAX_PICKLES):
        pushed: list[str | None] = []
        memo: dict[int, str | None] = {}
        try:
            for op, arg, _pos in pickletools.genops(reader):  # type: ignore[arg-type]
                name = op.name
                if name in _STRING_OPS:
                    pushed.append(arg if isinstance(arg, str) else None)
                elif name in ("GLOBAL", "INST"):
                    module, _, attr = str(arg).partition(" ")
                    pushed.append(None)
                    seen.add((module, attr))
                elif name == "STACK_GLOBAL":
                    mod, attr2 = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                    if mod is None or attr2 is None:
                        out.append(
                            ScanFinding(
                                rel,
                                "pickle-import",
                                "critical",
                                "pickle imports a callable whose name is computed at load time (cannot be proven safe)",
                            )
                        )
                    else:
                        seen.add((mod, attr2))
                    pushed.append(None)
                elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[int(str(arg))] = pushed[-1] if pushed else None
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in ("BINGET", "LONG_BINGET", "GET"):
                    pushed.append(memo.get(int(str(arg))))
                elif name in ("EXT1", "EXT2", "EXT4"):
                    # An import through copyreg's extension registry: its target is not in the file.
                    out.append(
                        ScanFinding(
                            rel,
                            "pickle-import",
                            "high",
                            f"pickle imports extension code {arg} (copyreg registry)",
                        )
                    )
                    pushed.append(None)
                elif name == "STOP":
                    break
                elif name not in ("PROTO", "FRAME"):
                    pushed.append(None)
        except (ValueError, TypeError, struct.error, EOFError, UnicodeDecodeError) as e:
            out.append(ScanFinding(rel, "pickle-malformed", "high", f"pickle stream is malformed: {e}"))
            break
        # torch's legacy format: several pickles back to back, then raw storage bytes.
        here = f.tell()
        nxt = f.read(2)
        f.seek(here)
        if not (len(nxt) == 2 and nxt[0] == 0x80 and 2 <= nxt[1] <= 5):
            break
    for module, attr in sorted(seen):
        sev = _classify_global(module, attr)
        if sev is not None:
            what = "runs code when loaded" if sev == "critical" else "is outside the weights-only allowlist"
            out.append(
                ScanFinding(
                    rel,
                    "pickle-import",
                    sev,
                    f"pickle imports {module}.{attr}, which {what}",
                    {"import": f"{module}.{attr}"},
                )
            )
    return out


def scan_pickle(path: Path, rel: str) -> list[ScanFinding]:
    with open(path, "rb") as f:
        return scan_pickle_stream(f, os.fstat(f.fileno()).st_size, rel)


MAX_ZIP_PICKLE = 1 << 30


def scan_zip_pickle(path: Path, rel: str) -> list[ScanFinding]:
    out: list[ScanFinding] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".pkl"):
                    continue
                member = f"{rel}:{info.filename}"
                if info.file_size > MAX_ZIP_PICKLE:
                    out.append(
                        ScanFinding(
                            member, "pickle-malformed", "high", f"pickle member of {info.file_size} bytes"
                        )
                    )
                    continue
                with zf.open(info) as m:
                    data = io.BytesIO(m.read(info.file_size + 1))
                out.extend(scan_pickle_stream(data, len(data.getvalue()), member))
    except (zipfile.BadZipFile, OSError, NotImplementedError) as e:
        out.append(ScanFinding(rel, "pickle-malformed", "high", f"zip archive cannot be read: {e}"))
    return out


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
    return {"version": version, "tensors": n_tensors, "metadata": n_kv}, templates


# --- chat templates (CVE-2024-34359 class) ---------------------------------------------------------

SUSPICIOUS_NAMES = frozenset(
    {
        "self",
        "lipsum",
        "cycler",
        "joiner",
        "config",
        "request",
        "url_for",
        "get_flashed_messages",
        "os",
        "__builtins__",
    }
)
SUSPICIOUS_CALLS = frozenset(
    {"popen", "system", "eval", "exec", "import_module", "load_module", "__import__", "subprocess", "spawn"}
)


def check_chat_template(text: str) -> list[str]:
    """Reasons a Jinja chat template reaches for Python internals (empty when it does not).

    The template is parsed, never rendered. Templates that go through an unsandboxed Jinja (as in
    llama-cpp-python before 0.2.72) can walk ``''.__class__.__mro__`` to ``os.popen``; legitimate templates
    only touch messages, loop variables and string methods.
    """
    import jinja2
    from jinja2 import nodes

    reasons: list[str] = []
    try:
        ast = jinja2.Environment(autoescape=False).parse(text)  # noqa: S701 - parsed only, never rendered
    except jinja2.TemplateSyntaxError as e:
        return [f"does not parse as Jinja ({e.message}); it cannot be checked"]
    except RecursionError:
        return ["does not parse as Jinja (nested too deeply); it cannot be checked"]
    for node in ast.find_all(
        (nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter, nodes.Const, nodes.Call)
    ):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            reasons.append(f"reads attribute {node.attr!r}")
        elif isinstance(node, nodes.Getattr) and node.attr in SUSPICIOUS_CALLS:
            reasons.append(f"calls {node.attr!r}")
        elif isinstance(node, nodes.Name) and node.name in SUSPICIOUS_NAMES:
            reasons.append(f"uses the global {node.name!r}")
        elif isinstance(node, nodes.Filter) and node.name in ("attr", "pprint"):
            reasons.append(f"uses the {node.name!r} filter")
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            reasons.append(f"holds the string {node.value[:40]!r}")
    return sorted(set(reasons))


def _template_findings(rel: str, templates: Sequence[tuple[str, str]]) -> list[ScanFinding]:
    out = []
    for key, text in templates:
        reasons = check_chat_template(text)
        if reasons:
            parses = not reasons[0].startswith("does not parse")
            out.append(
                ScanFinding(
                    rel,
                    "chat-template",
                    "critical" if parses else "medium",
                    f"{key} reaches for Python internals: {'; '.join(reasons[:4])}"
                    if parses
                    else f"{key} {reasons[0]}",
                    {"key": key, "reasons": reasons},
                )
            )
    return out


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


# --- numpy ------------------------------------------------------------------------------------------


def check_numpy(path: Path, rel: str) -> list[ScanFinding]:
    """A ``.npy`` whose dtype holds Python objects is a pickle after its header: scan that pickle."""
    import ast

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(10)
        if len(head) < 10:
            raise _Bad("truncated header")
        major = head[6]
        if major == 1:
            (hlen,) = struct.unpack("<H", head[8:10])
        elif major in (2, 3):
            (hlen,) = struct.unpack("<I", head[8:10] + f.read(2))
        else:
            raise _Bad(f"unsupported .npy version {major}")
        if hlen > 1 << 20 or f.tell() + hlen > size:
            raise _Bad(f"header length {hlen} is out of bounds")
        try:
            header = ast.literal_eval(f.read(hlen).decode("latin-1"))  # literals only: nothing is evaluated
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise _Bad("header is not a Python literal") from None
        if not isinstance(header, dict) or "descr" not in header:
            raise _Bad("header has no descr")
        if "O" not in repr(header["descr"]):
            return []
        out = [
            ScanFinding(rel, "numpy-object", "critical",
                        "array of Python objects: loading it (allow_pickle=True) unpickles what follows the header")
        ]  # fmt: skip
        return out + scan_pickle_stream(f, size, rel)


# --- driver -----------------------------------------------------------------------------------------

FORMAT_OF = {
    "pickle": "pickle",
    "pickle-zip": "pickle",
    "safetensors": "safetensors",
    "gguf": "gguf",
    "onnx": "onnx",
    "numpy": "numpy",
}


def scan_file(
    path: Path, rel: str, root: Path, allowed_formats: Sequence[str], onnx_data: frozenset[str] = frozenset()
) -> tuple[str, list[ScanFinding]]:
    """Detect the format of one file and run its checks.

    ``onnx_data`` holds the real paths of files an ONNX model in the directory names as its external data:
    raw tensor bytes, whatever their suffix (``weights.bin`` is common), and not pickles.
    """
    if os.path.realpath(path) in onnx_data:
        return "onnx-data", []
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return "unreadable", [ScanFinding(rel, "unreadable", "high", f"cannot read: {e.strerror}")]
    fmt = detect(path, head)
    out: list[ScanFinding] = []
    family = FORMAT_OF.get(fmt)
    if family is not None and family not in allowed_formats:
        what = "a zip-wrapped pickle (PyTorch)" if fmt == "pickle-zip" else f"{family}"
        out.append(
            ScanFinding(
                rel,
                "format-policy",
                "high",
                f"format {what} is not allowed by the site policy",
                {"format": fmt, "allowed": list(allowed_formats)},
            )
        )
    try:
        if fmt == "pickle":
            out += scan_pickle(path, rel)
        elif fmt == "pickle-zip":
            out += scan_zip_pickle(path, rel)
        elif fmt == "safetensors":
            check_safetensors(path)
        elif fmt == "gguf":
            _, templates = check_gguf(path)
            out += _template_findings(rel, templates)
        elif fmt == "onnx":
            out += check_onnx(path, rel, root)
        elif fmt == "numpy":
            out += check_numpy(path, rel)
        elif fmt == "tokenizer-config":
            out += _tokenizer_config(path, rel)
        elif fmt == "python":
            out.append(
                ScanFinding(
                    rel, "code-file", "high", "Python code in a model directory runs with trust_remote_code"
                )
            )
        elif fmt == "zip":
            out.append(ScanFinding(rel, "unknown-format", "low", "zip archive (no pickle inside)"))
        elif fmt == "unknown":
            out.append(ScanFinding(rel, "unknown-format", "low", "unrecognised file format"))
    except _Bad as bad:
        out.append(ScanFinding(rel, f"{fmt}-header", "high", f"invalid {fmt} file: {bad}"))
    except OSError as err:
        out.append(ScanFinding(rel, "unreadable", "high", f"cannot read: {err.strerror}"))
    return fmt, out


def _tokenizer_config(path: Path, rel: str) -> list[ScanFinding]:
    if path.stat().st_size > 64 * 1024 * 1024:
        return [ScanFinding(rel, "tokenizer-config", "medium", "tokenizer config larger than 64 MiB")]
    try:
        doc = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        return [ScanFinding(rel, "tokenizer-config", "medium", f"not valid JSON: {e}")]
    tpl = doc.get("chat_template") if isinstance(doc, dict) else None
    templates: list[tuple[str, str]] = []
    if isinstance(tpl, str):
        templates.append(("chat_template", tpl))
    elif isinstance(tpl, list):
        for t in tpl:
            if isinstance(t, dict) and isinstance(t.get("template"), str):
                templates.append((f"chat_template.{t.get('name', '?')}", t["template"]))
    return _template_findings(rel, templates)


def scan_path(path: Path, *, allowed_formats: Sequence[str], ignore: Sequence[str] = ()) -> ScanReport:
    """Scan one file, or every regular file under a directory (symlinks are not followed)."""
    report = ScanReport(root=str(path))
    if path.is_file():
        fmt, findings = scan_file(path, path.name, path.parent, allowed_formats)
        report.files_scanned = 1
        report.formats[path.name] = fmt
        report.findings = findings
        return report
    patterns = [*GIT_PATHS, *ignore]
    files: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            try:
                regular = stat.S_ISREG(full.lstat().st_mode)
            except OSError:
                regular = False  # vanished while we looked: nothing to scan
            if is_ignored(rel, patterns) or not regular:
                continue  # symlinks and special files are verify's business (and never followed here)
            files.append((full, rel))
    onnx_data = frozenset(_onnx_data_files(path, [f for f, _ in files if f.suffix.lower() == ".onnx"]))
    for full, rel in files:
        fmt, findings = scan_file(full, rel, path, allowed_formats, onnx_data)
        report.files_scanned += 1
        report.formats[rel] = fmt
        report.findings.extend(findings)
    return report


def _onnx_data_files(root: Path, models: Sequence[Path]) -> set[str]:
    real_root = os.path.realpath(root)
    out: set[str] = set()
    for m in models:
        try:
            with open(m, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                locations = onnx_external_locations(buf)
        except (_Bad, OSError, ValueError):
            continue  # reported when the model itself is scanned
        for _, loc in locations:
            target = os.path.realpath(m.parent / loc)
            if target.startswith(real_root + os.sep):
                out.add(target)
    return out
