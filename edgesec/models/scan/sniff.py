"""What a file is, from its bytes: the format sniffing every scan starts with, and the format policy.

A file's format is identified from its content (pickle opcodes at any offset of the header read, zip, 7z,
HDF5, tar, gzip, numpy, GGUF and safetensors magic) before its name; ``format_policy`` says whether the
site's ``allowed_formats`` allow it.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Sequence
from typing import IO

from edgesec.models.scan import npy, pickles
from edgesec.models.scan.report import ScanFinding

HEAD = 4096
"""The header read every format is sniffed from."""
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


def whole_file_pickle(f: IO[bytes], size: int, fmt: str) -> bool:
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


def format_family(fmt: str) -> str | None:
    """The ``allowed_formats`` name of a format (None: data, or judged by its own finding)."""
    return fmt if fmt in FAMILIES else None


def format_policy(rel: str, fmt: str, allowed: Sequence[str], what: str = "") -> list[ScanFinding]:
    family = format_family(fmt)
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
