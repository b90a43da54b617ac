"""Static safety scan of model directories: can loading a file run code, or break its loader?

Nothing here loads a model. Every entry of the directory is looked at, whatever another file says about
it: a file an ONNX model names as its external data is still identified by its own content. The format of
each file is sniffed from its bytes (pickle opcodes at any offset of a small header read, zip, 7z, HDF5,
tar, gzip, numpy, GGUF and safetensors magic), never trusted from its name, and ``allowed_formats`` is an
allowlist: a file whose format is not positively identified and allowed is a finding.

Severities say what a finding means: ``critical`` loading runs attacker code (a pickle importing
``os.system``, a chat template the sandbox refuses, a Keras ``Lambda`` layer); ``high`` blocks: a format
the policy does not allow, a file that cannot be identified or assessed, a suspicious import, a malformed
header; ``medium``/``low`` are worth a look and do not block.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import re
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgesec.models.scan import npy, pickles
from edgesec.models.scan.formats import (
    check_gguf,
    check_onnx,
    check_safetensors,
    onnx_external_locations,
)
from edgesec.models.scan.policy import classify_global
from edgesec.models.scan.report import (
    BLOCKING,
    MEANING,
    SEVERITIES,
    Bad,
    ScanFinding,
    ScanReport,
    printable,
)
from edgesec.models.scan.templates import check_chat_template, template_findings

__all__ = [
    "BLOCKING",
    "FAMILIES",
    "MEANING",
    "SEVERITIES",
    "ScanFinding",
    "ScanReport",
    "check_chat_template",
    "check_safetensors",
    "detect",
    "printable",
    "scan_file",
    "scan_path",
    "scan_pickle_stream",
]

HEAD = 4096
"""The header read every format is sniffed from."""
MAX_DEPTH = 3
"""Archives inside archives followed this deep."""
MAX_MEMBERS = 100_000

FAMILIES = ("safetensors", "gguf", "onnx", "numpy", "pickle", "keras", "h5", "zip", "tar", "7z")
"""What ``allowed_formats`` may name. Text, JSON, images and tokenizer data are always allowed."""
DATA_FORMATS = frozenset(
    {"text", "json", "tokenizer-config", "chat-template", "image", "empty", "sentencepiece", "onnx-data"}
)

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SEVENZ_MAGIC = b"7z\xbc\xaf\x27\x1c"
_PICKLE_START = re.compile(rb"[\x80c(i\x8c\x8dXVUST\]}\x29]")
_KNOWN_TOPS = frozenset(sys.stdlib_module_names) | {
    "torch",
    "numpy",
    "nt",
    "posix",
    "__builtin__",
    "copy_reg",
    "dill",
    "joblib",
    "sklearn",
    "transformers",
    "keras",
    "tensorflow",
    "nemo",
    "accelerate",
    "huggingface_hub",
    "safetensors",
    "sentencepiece",
    "tokenizers",
    "scipy",
    "pandas",
    "jinja2",
    "yaml",
    "requests",
    "urllib3",
    "setuptools",
    "pip",
    "pkg_resources",
    "onnx",
    "onnxruntime",
    "vllm",
    "llama_cpp",
    "gguf",
    "cloudpickle",
    "xgboost",
    "lightgbm",
    "torchvision",
    "timm",
    "diffusers",
    "peft",
}
"""Modules a pickle hidden in text must import from to count as one (a word list may parse by chance)."""


# --- sniffing -------------------------------------------------------------------------------------------


def _plausible(res: pickles.PickleResult, cut: bool) -> bool:
    """A pickle that imports from a module a loader host has (not a word list that parses by chance).

    It must load to its STOP, or (``cut``: the header read is not the whole file) run to the end of the read.
    """
    if res.error is not None and not (cut and res.error.startswith("pickle data was truncated")):
        return False
    if res.computed or res.extensions:
        return True
    return any(m.split(".")[0] in _KNOWN_TOPS for m, _ in res.imports)


def pickle_offsets(head: bytes, size: int) -> list[int]:
    """Offsets in ``head`` where a pickle that imports something starts (0 first when it is one).

    An offset inside a pickle already found is part of it, not a pickle of its own.
    """
    found = []
    cut = size > len(head)
    covered = 0
    res0 = pickles.read_pickle(io.BytesIO(head), len(head))
    any_import = res0.error is None and bool(res0.imports or res0.computed or res0.extensions)
    if re.match(rb"\x80[\x02-\x05]", head) or _plausible(res0, cut) or (any_import and not _is_text(head)):
        found.append(0)
        covered = res0.end
    for m in _PICKLE_START.finditer(head, 1):
        off = m.start()
        if off < covered:
            continue
        res = pickles.read_pickle(io.BytesIO(head[off:]), len(head) - off)
        if _plausible(res, cut):
            found.append(off)
            covered = off + res.end
    return found


def _whole_file_pickle(f: IO[bytes], size: int, fmt: str) -> bool:
    """Whether the whole file, read from its first byte either way CPython does, is a pickle that imports.

    Unidentified bytes count with any import; text and JSON only with an import from a module loader hosts
    have (``cat``/``dog``/``.`` lines of a word list load as ``at.dog``).
    """
    for stream in (False, True):
        f.seek(0)
        res = pickles.read_pickle(f, size, stream=stream)
        if res.error is None and (res.imports or res.computed or res.extensions):
            if fmt == "unknown" or _plausible(res, cut=False):
                return True
    return False


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return False
    return not re.search(rb"[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]", head)


def _safetensors_head(head: bytes) -> bool:
    return len(head) > 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def detect(name: str, head: bytes, size: int) -> str:
    """The format of a file from its content first (a renamed pickle is still a pickle), then its name."""
    lower = name.lower()
    suffix = os.path.splitext(lower)[1]
    if size == 0:
        return "empty"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(npy.MAGIC):
        return "numpy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(SEVENZ_MAGIC):
        return "7z"
    if HDF5_MAGIC in head[:HEAD] and head.find(HDF5_MAGIC) % 512 == 0:
        return "h5"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    if head.startswith(IMAGE_MAGIC) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        return "image"
    if _safetensors_head(head):
        return "safetensors"
    if pickle_offsets(head, size):
        return "pickle"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".gguf":
        return "gguf"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".npy":
        return "numpy"
    if suffix in (".py", ".pyc", ".so", ".dylib", ".dll", ".sh"):
        return "code"
    if os.path.basename(lower) in ("tokenizer_config.json", "chat_template.json", "processor_config.json"):
        return "tokenizer-config"
    if suffix == ".jinja" and _is_text(head):
        return "chat-template"
    if _is_text(head):
        return "json" if suffix == ".json" else "text"
    if head[:1] == b"\x0a" and suffix == ".model":
        return "sentencepiece"
    return "unknown"


def _family(fmt: str) -> str | None:
    """The ``allowed_formats`` name of a format (None: data, or judged by its own finding)."""
    return fmt if fmt in FAMILIES else None


# --- pickles ----------------------------------------------------------------------------------------------


def scan_pickle_stream(f: IO[bytes], size: int, rel: str, *, count: int = 1) -> list[ScanFinding]:
    """Read ``count`` pickles from ``f``'s position and judge their imports (nothing is unpickled).

    Read twice, as CPython reads bytes or a buffered file and as it reads ``io.BytesIO`` (torch's zip
    loader): the imports of both are reported, so a lie in the framing hides nothing.
    """
    start = f.tell()
    sequential = pickles.read_pickles(f, size, count)
    f.seek(start)
    streamed = pickles.read_pickles(f, size, count, stream=True)
    out = pickles.pickle_findings(sequential, rel, classify_global)
    seen = {(x.rule, x.message) for x in out}
    for x in pickles.pickle_findings(streamed, rel, classify_global):
        if x.rule != "pickle-malformed" and (x.rule, x.message) not in seen:
            seen.add((x.rule, x.message))
            out.append(x)
    return out


def _scan_pickle_file(f: IO[bytes], size: int, rel: str, head: bytes) -> list[ScanFinding]:
    """A pickle file: every pickle torch's legacy loader reads from the start, and any found further in."""
    f.seek(0)
    out = scan_pickle_stream(f, size, rel, count=pickles.TORCH_LEGACY_PICKLES)
    for off in pickle_offsets(head, size):
        if off == 0:
            continue
        f.seek(off)
        extra = scan_pickle_stream(f, size, rel)
        for x in extra:
            if x.rule != "pickle-malformed" and all(x.message != o.message for o in out):
                out.append(
                    ScanFinding(
                        x.path, x.rule, x.severity, f"{x.message} (pickle at offset {off})", x.evidence
                    )
                )
    return out


def _scan_numpy(f: IO[bytes], size: int, rel: str) -> list[ScanFinding]:
    f.seek(0)
    header = npy.read_header(f, size)
    if not npy.has_object(header["descr"]):
        return []
    out = [
        ScanFinding(
            rel,
            "numpy-object",
            "critical",
            "array of Python objects: np.load(allow_pickle=True) unpickles what follows the header",
            {"descr": repr(header["descr"])[:200]},
        )
    ]
    return out + scan_pickle_stream(f, size, rel)


# --- archives ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What a site allows, carried into archives: the allowed families and the unidentified severity."""

    allowed: tuple[str, ...]
    unknown_severity: str = "high"


def _zip_kind(names: Sequence[str]) -> str:
    if names and all(n.endswith(".npy") for n in names):
        return "numpy"
    if "config.json" in names and any(n.endswith(".h5") for n in names) and "metadata.json" in names:
        return "keras"
    if any(n.endswith(".pkl") for n in names):
        return "pickle"
    return "zip"


KERAS_MODULES = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras", "tensorflow"})
"""Where a Keras config's ``module`` may point without a finding (Keras imports whatever it names)."""


def _keras_config(data: bytes, rel: str) -> list[ScanFinding]:
    """A Keras v3 ``config.json``: Lambda layers carry marshalled code; ``module`` names are imported.

    ``deserialize_keras_object`` imports the ``module`` a config names and fetches ``class_name`` from it
    (the CVE-2025-1550 class): that import is judged by the same table as a pickle's.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return [
            ScanFinding(
                rel, "keras-config", "high", "Keras config.json is not valid JSON: cannot be assessed"
            )
        ]
    lambdas: set[str] = set()
    imports: set[tuple[str, str]] = set()
    deep = False

    def walk(v: Any, depth: int) -> None:
        nonlocal deep
        if depth > 200:
            deep = True
        elif isinstance(v, dict):
            if v.get("class_name") in ("Lambda", "TFOpLambda"):
                lambdas.add(str(v.get("class_name")))
            module = v.get("module")
            if isinstance(module, str) and module.split(".")[0] not in KERAS_MODULES:
                imports.add((module, str(v.get("class_name", ""))))
            for x in v.values():
                walk(x, depth + 1)
        elif isinstance(v, list):
            for x in v:
                walk(x, depth + 1)

    walk(doc, 0)
    out = [
        ScanFinding(
            rel,
            "keras-lambda",
            "critical",
            f"Keras model holds a {name} layer: its marshalled Python code runs when the model loads",
            {"layer": name},
        )
        for name in sorted(lambdas)
    ]
    for module, name in sorted(imports):
        sev = classify_global(module, name) or "high"
        what = "a callable that runs code when loaded" if sev == "critical" else "an import outside Keras"
        out.append(
            ScanFinding(
                rel,
                "keras-import",
                sev,
                f"Keras config imports {module}.{name}: {what}",
                {"import": f"{module}.{name}"},
            )
        )
    if deep:
        out.append(
            ScanFinding(rel, "keras-config", "high", "Keras config nested too deeply: cannot be assessed")
        )
    return out


def _scan_zip(f: IO[bytes], rel: str, policy: Policy, depth: int) -> tuple[str, list[ScanFinding]]:
    out: list[ScanFinding] = []
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        return "zip", [ScanFinding(rel, "zip-malformed", "high", f"zip archive cannot be read: {e}")]
    with zf:
        infos = zf.infolist()
        kind = _zip_kind([i.filename for i in infos])
        if len(infos) > MAX_MEMBERS:
            return kind, [
                ScanFinding(rel, "zip-malformed", "high", f"{len(infos)} members: too many to assess")
            ]
        for info in infos:
            if info.is_dir():
                continue
            member = f"{rel}:{info.filename}"
            if info.flag_bits & 0x1:
                out.append(
                    ScanFinding(
                        member, "encrypted-member", "high", "encrypted archive member: cannot be inspected"
                    )
                )
                continue
            try:
                with zf.open(info) as m:
                    if kind == "keras" and info.filename == "config.json" and info.file_size < 64 << 20:
                        out += _keras_config(m.read(), member)
                        continue
                    raw = (kind == "pickle" and "/data/" in f"/{info.filename}") or (
                        kind == "keras" and info.filename.endswith(".h5")
                    )
                    out += _scan_member(m, info.file_size, member, info.filename, policy, depth, raw, kind)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                EOFError,
                NotImplementedError,
                RuntimeError,
            ) as e:
                out.append(
                    ScanFinding(member, "zip-malformed", "high", f"archive member cannot be read: {e}")
                )
    return kind, out


def _scan_tar(f: IO[bytes], rel: str, policy: Policy, depth: int) -> list[ScanFinding]:
    out: list[ScanFinding] = []
    try:
        with tarfile.open(fileobj=f, mode="r:*") as tf:
            for n, ti in enumerate(tf):
                if n > MAX_MEMBERS:
                    out.append(ScanFinding(rel, "tar-malformed", "high", "too many members to assess"))
                    break
                member = f"{rel}:{ti.name}"
                if ti.issym() or ti.islnk():
                    out.append(ScanFinding(member, "special-file", "high", f"link member to {ti.linkname!r}"))
                    continue
                if not ti.isfile():
                    if not ti.isdir():
                        out.append(ScanFinding(member, "special-file", "high", "special file in an archive"))
                    continue
                m = tf.extractfile(ti)
                if m is None:
                    continue
                with m:  # read as a stream: a member is never held in memory whole
                    out += _scan_member(m, ti.size, member, ti.name, policy, depth, False, "tar")
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        out.append(ScanFinding(rel, "tar-malformed", "high", f"archive cannot be read: {e}"))
    return out


def _scan_member(
    m: IO[bytes],
    size: int,
    rel: str,
    name: str,
    policy: Policy,
    depth: int,
    raw_ok: bool,
    container: str = "zip",
) -> list[ScanFinding]:
    """An archive member: sniffed and judged like a file, read as a stream.

    ``raw_ok``: the container's format says what this member is (a PyTorch storage, Keras weights), so
    bytes that are no other format are fine; elsewhere an unidentified member blocks like a file. A member
    of another allowed-formats family than its ``container`` must be allowed too (a pickle in a tar).
    """
    if depth >= MAX_DEPTH:
        return [
            ScanFinding(
                rel, "archive-depth", "high", f"archives nested deeper than {MAX_DEPTH}: not assessed"
            )
        ]
    head = m.read(HEAD)
    fmt = detect(name, head, size)
    if fmt in ("unknown", "text", "json", "sentencepiece") and _whole_file_pickle(m, size, fmt):
        fmt = "pickle"
    out: list[ScanFinding] = []
    try:
        if fmt == "pickle":
            m.seek(0)
            out = _scan_pickle_file(m, size, rel, head)
        elif fmt == "numpy":
            m.seek(0)
            out = _scan_numpy(m, size, rel)
        elif fmt == "zip":
            m.seek(0)
            fmt, out = _scan_zip(m, rel, policy, depth + 1)
        elif fmt == "tar":
            m.seek(0)
            out = _scan_tar(m, rel, policy, depth + 1)
        elif fmt == "unknown" and not raw_ok:
            out = [
                ScanFinding(
                    rel,
                    "unknown-format",
                    policy.unknown_severity,
                    "format not identified: not a format the site allows",
                )
            ]
        elif fmt in ("7z", "code") and not raw_ok:
            out = [
                ScanFinding(
                    rel, "unknown-format", "high", f"archive member of format {fmt}: cannot be assessed"
                )
            ]
    except Bad as bad:
        out = [ScanFinding(rel, f"{fmt}-header", "high", f"invalid {fmt} member: {bad}")]
    if not raw_ok and fmt != container:
        out = _policy(rel, fmt, policy.allowed) + out
    return out


# --- files ------------------------------------------------------------------------------------------------


def _policy(rel: str, fmt: str, allowed: Sequence[str], what: str = "") -> list[ScanFinding]:
    family = _family(fmt)
    if family is None or family in allowed:
        return []
    return [
        ScanFinding(
            rel,
            "format-policy",
            "high",
            f"format {what or family} is not allowed by the site policy",
            {"format": family, "allowed": list(allowed)},
        )
    ]


def scan_file(
    path: Path,
    rel: str,
    root: Path,
    allowed_formats: Sequence[str],
    onnx_data: frozenset[str] = frozenset(),
    *,
    unknown_severity: str = "high",
) -> tuple[str, list[ScanFinding]]:
    """Identify one regular file by its content and run its checks.

    ``onnx_data`` holds the real paths an ONNX model in the directory names as external data: such a file
    is still sniffed, and only raw bytes that are no other format count as ONNX data.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        return "unreadable", [ScanFinding(rel, "unreadable", "high", f"cannot read: {e.strerror}")]
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "special", [ScanFinding(rel, "special-file", "high", "not a regular file: not read")]
        size = st.st_size
        try:
            head = f.read(HEAD)
        except OSError as e:
            return "unreadable", [ScanFinding(rel, "unreadable", "high", f"cannot read: {e.strerror}")]
        fmt = detect(rel, head, size)
        if fmt in ("unknown", "text", "json", "sentencepiece") and _whole_file_pickle(f, size, fmt):
            fmt = "pickle"  # its imports come after the header read (a long harmless prefix)
        if fmt == "unknown" and os.path.realpath(path) in onnx_data:
            fmt = "onnx-data"
        try:
            return fmt, _judge(f, path, rel, root, fmt, head, size, allowed_formats, unknown_severity)
        except Bad as bad:
            return fmt, [
                *_policy(rel, fmt, allowed_formats),
                ScanFinding(rel, f"{fmt}-header", "high", f"invalid {fmt} file: {bad}"),
            ]
        except (OSError, ValueError) as err:
            msg = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            return fmt, [ScanFinding(rel, "unreadable", "high", f"cannot read: {msg}")]


def _judge(
    f: IO[bytes],
    path: Path,
    rel: str,
    root: Path,
    fmt: str,
    head: bytes,
    size: int,
    allowed: Sequence[str],
    unknown_severity: str,
) -> list[ScanFinding]:
    if fmt == "zip":
        kind, inner = _scan_zip(f, rel, Policy(tuple(allowed), unknown_severity), 0)
        what = {"pickle": "a zip-wrapped pickle (PyTorch)", "numpy": "numpy (.npz)"}.get(kind, kind)
        return _policy(rel, kind, allowed, what) + inner
    out = _policy(rel, fmt, allowed)
    if fmt == "pickle":
        out += _scan_pickle_file(f, size, rel, head)
    elif fmt == "numpy":
        out += _scan_numpy(f, size, rel)
    elif fmt == "tar":
        f.seek(0)
        out += _scan_tar(f, rel, Policy(tuple(allowed), unknown_severity), 0)
    elif fmt == "safetensors":
        check_safetensors(path)
    elif fmt == "gguf":
        summary, templates = check_gguf(path)
        out += template_findings(rel, templates) + _gguf_splits(path, rel, summary)
    elif fmt == "onnx":
        out += check_onnx(path, rel, root)
    elif fmt == "tokenizer-config":
        out += _tokenizer_config(path, rel)
    elif fmt == "chat-template":  # transformers writes chat_template.jinja beside the tokenizer
        if size > 64 * 1024 * 1024:
            out.append(ScanFinding(rel, "chat-template", "high", "template larger than 64 MiB: not assessed"))
        else:
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                out.append(ScanFinding(rel, "chat-template", "high", "template is not UTF-8: not assessed"))
            else:
                out += template_findings(rel, [("template", text)])
    elif fmt == "json" and path.name.endswith(".index.json"):
        out += _weight_index(path, rel, root)
    elif fmt == "code":
        out.append(
            ScanFinding(rel, "code-file", "high", "code in a model directory runs with trust_remote_code")
        )
    elif fmt in ("7z", "h5"):
        if fmt == "h5" and b"Lambda" in _grep_lambda(f, size):
            out.append(
                ScanFinding(
                    rel,
                    "keras-lambda",
                    "critical",
                    "HDF5 Keras model config names a Lambda layer: its code runs when loaded",
                )
            )
        elif fmt == "7z":
            out.append(
                ScanFinding(rel, "unknown-format", "high", "7z archive: its members cannot be assessed")
            )
    elif fmt == "unknown":
        out.append(
            ScanFinding(
                rel,
                "unknown-format",
                unknown_severity,
                "format not identified: not a format the site allows",
                {"allowed": list(allowed)},
            )
        )
    return out


def _grep_lambda(f: IO[bytes], size: int) -> bytes:
    """``Lambda`` if a Keras HDF5 file's model_config attribute names a Lambda layer (a byte search)."""
    if size == 0:
        return b""
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return b"Lambda" if re.search(rb'"class_name":\s*"(?:TFOp)?Lambda"', buf) else b""


_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def _gguf_splits(path: Path, rel: str, summary: dict[str, Any]) -> list[ScanFinding]:
    """The first file of a split GGUF names its siblings (llama.cpp loads ``<prefix>-0000N-of-0000M.gguf``).

    Each sibling is scanned as a file of the directory anyway; this adds what the split metadata claims:
    a sibling missing, or a name that disagrees with the metadata (a loader would read another file).
    """
    count, no = summary.get("split.count"), summary.get("split.no")
    if not isinstance(count, int) or count <= 1:
        return []
    m = _SPLIT_NAME.match(path.name)
    if m is None or int(m["count"]) != count or (isinstance(no, int) and int(m["no"]) != no + 1):
        return [
            ScanFinding(
                rel,
                "gguf-split",
                "medium",
                f"split metadata (file {no} of {count}) disagrees with the file name",
                {"split.count": count, "split.no": no},
            )
        ]
    missing = [
        f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf"
        for i in range(1, count + 1)
        if not (path.parent / f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf").is_file()
    ]
    return [
        ScanFinding(rel, "gguf-split", "medium", f"split GGUF sibling {name!r} is missing", {"missing": name})
        for name in missing
    ]


def _weight_index(path: Path, rel: str, root: Path) -> list[ScanFinding]:
    """A sharded checkpoint's index (``model.safetensors.index.json``): where its ``weight_map`` points.

    The shards it names are scanned as files of the directory anyway; this only adds what the index
    itself claims: a shard outside the directory (loaders join the name to the directory) or missing.
    """
    if path.stat().st_size > 64 * 1024 * 1024:
        return [ScanFinding(rel, "weight-index", "high", "weight index larger than 64 MiB: not assessed")]
    try:
        doc = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        return [ScanFinding(rel, "weight-index", "medium", f"not valid JSON: {e}")]
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict):
        return []
    out: list[ScanFinding] = []
    real_root = os.path.realpath(root)
    for shard in sorted({v for v in wm.values() if isinstance(v, str)}):
        target = os.path.realpath(path.parent / shard)
        if os.path.isabs(shard) or not target.startswith(real_root + os.sep):
            out.append(
                ScanFinding(
                    rel,
                    "weight-index",
                    "critical",
                    f"weight_map names {shard!r}, outside the model directory: loaders read it",
                    {"shard": shard},
                )
            )
        elif not os.path.isfile(target):
            out.append(
                ScanFinding(rel, "weight-index", "medium", f"weight_map names {shard!r}, which is missing")
            )
    return out


def _tokenizer_config(path: Path, rel: str) -> list[ScanFinding]:
    if path.stat().st_size > 64 * 1024 * 1024:
        return [
            ScanFinding(rel, "tokenizer-config", "high", "tokenizer config larger than 64 MiB: not assessed")
        ]
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
    return template_findings(rel, templates)


# --- the directory --------------------------------------------------------------------------------------


def _shown(rel: str) -> str:
    """A relative path as text that JSON, the audit trail and a terminal can all carry."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


VCS_DIR = ".git"
"""The one entry scan does not read: the repository database at the top of a cloned model (zlib objects
and LFS copies no loader opens). It is listed in the report's ``skipped``; nested ``.git`` directories,
``.github`` and ``.gitattributes`` are scanned like everything else."""


def _entries(
    root: Path, problems: list[tuple[str, str]], skipped: list[str]
) -> Iterator[tuple[Path, str, os.stat_result | None]]:
    """Every entry under ``root`` (not following symlinks), with its lstat (None if it vanished).

    Directories that cannot be listed go to ``problems``: os.walk would otherwise pass over them.
    """

    def onerror(err: OSError) -> None:
        where = Path(err.filename).relative_to(root).as_posix() if err.filename else "."
        problems.append((where, err.strerror or str(err)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        keep = []
        for name in dirnames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                yield full, rel, full.lstat()
            elif rel == VCS_DIR:
                skipped.append(rel)
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            try:
                yield full, rel, full.lstat()
            except OSError:
                yield full, rel, None


def scan_path(path: Path, *, allowed_formats: Sequence[str], unknown_severity: str = "high") -> ScanReport:
    """Scan one file, or every entry under a directory: none is skipped, symlinks are never followed out."""
    report = ScanReport(root=str(path))
    if not path.is_dir():
        name = _shown(path.name)
        if path.is_symlink() or not path.is_file():
            report.findings = _special(path, name, path.parent, allowed_formats, unknown_severity)
            report.files_scanned = 1
            report.formats[name] = "special"
            return report
        fmt, findings = scan_file(path, name, path.parent, allowed_formats, unknown_severity=unknown_severity)
        report.files_scanned = 1
        report.formats[name] = fmt
        report.findings = findings
        return report
    problems: list[tuple[str, str]] = []
    entries = list(_entries(path, problems, report.skipped))
    for where, why in problems:
        report.findings.append(
            ScanFinding(
                _shown(where), "unreadable", "high", f"directory cannot be listed: {why}; not assessed"
            )
        )
    onnx_models = [
        f
        for f, _, st in entries
        if st is not None and stat.S_ISREG(st.st_mode) and f.suffix.lower() == ".onnx"
    ]
    onnx_data = frozenset(_onnx_data_files(path, onnx_models))
    for full, raw_rel, st in entries:
        rel = _shown(raw_rel)
        report.files_scanned += 1
        if rel != raw_rel:
            report.findings.append(
                ScanFinding(
                    rel, "file-name", "medium", "file name is not valid UTF-8 (shown with \\x escapes)"
                )
            )
        if st is None:
            report.formats[rel] = "vanished"
            report.findings.append(ScanFinding(rel, "unreadable", "high", "vanished while the scan ran"))
            continue
        if stat.S_ISREG(st.st_mode):
            fmt, findings = scan_file(
                full, rel, path, allowed_formats, onnx_data, unknown_severity=unknown_severity
            )
        else:
            fmt, findings = "special", _special(full, rel, path, allowed_formats, unknown_severity)
        report.formats[rel] = fmt
        report.findings.extend(findings)
    return report


def _special(
    full: Path, rel: str, root: Path, allowed: Sequence[str], unknown_severity: str
) -> list[ScanFinding]:
    """A symlink, FIFO, device or socket: a finding each, and a symlink's target judged as loaders see it."""
    try:
        st = full.lstat()
    except OSError as e:
        return [ScanFinding(rel, "unreadable", "high", f"cannot read: {e.strerror}")]
    if not stat.S_ISLNK(st.st_mode):
        kind = (
            "FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "socket"
            if stat.S_ISSOCK(st.st_mode)
            else "device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "special file"
        )
        return [
            ScanFinding(
                rel,
                "special-file",
                "high",
                f"{kind}: a loader opening it may block or read a device; not read",
            )
        ]
    target = os.readlink(full)
    real = os.path.realpath(full)
    real_root = os.path.realpath(root)
    inside = real.startswith(real_root + os.sep)
    shown = _shown(target)
    if not os.path.exists(real):
        return [
            ScanFinding(
                rel, "symlink", "medium", f"symlink to {shown!r}, which does not exist", {"target": shown}
            )
        ]
    if inside:
        return [
            ScanFinding(
                rel,
                "symlink",
                "low",
                f"symlink to {shown!r} inside the directory (the target is scanned as itself)",
                {"target": shown},
            )
        ]
    out = [
        ScanFinding(
            rel,
            "symlink",
            "high",
            f"symlink to {shown!r}, outside the directory: loaders follow it, verify refuses it",
            {"target": shown},
        )
    ]
    if os.path.isfile(real):
        # What a loader reads through the link is judged too.
        _, inner = scan_file(Path(real), rel, root, allowed, unknown_severity=unknown_severity)
        out += inner
    return out


def _onnx_data_files(root: Path, models: Sequence[Path]) -> set[str]:
    real_root = os.path.realpath(root)
    out: set[str] = set()
    for m in models:
        try:
            with open(m, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                locations = onnx_external_locations(buf)
        except (Bad, OSError, ValueError):
            continue  # reported when the model itself is scanned
        for _, loc in locations:
            target = os.path.realpath(m.parent / loc)
            if target.startswith(real_root + os.sep):
                out.add(target)
    return out
