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

Here: the walk of a directory and the judgement of each file. Beside it, one module per concern:
:mod:`.sniff` (what a file is, and the format policy), :mod:`.pickle_files` (pickle and numpy files, read by
the static reader of :mod:`.pickles`), :mod:`.archives` (zip and tar members), :mod:`.keras`,
:mod:`.formats` (safetensors, GGUF, ONNX headers), :mod:`.templates` (chat templates), :mod:`.policy` (what
an import means) and :mod:`.report` (findings and severities).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from edgesec.models.scan.archives import Policy, scan_tar, scan_zip
from edgesec.models.scan.formats import (
    check_gguf,
    check_onnx,
    check_safetensors,
    onnx_external_locations,
)
from edgesec.models.scan.keras import grep_lambda
from edgesec.models.scan.pickle_files import scan_numpy, scan_pickle_file, scan_pickle_stream
from edgesec.models.scan.report import (
    BLOCKING,
    MEANING,
    SEVERITIES,
    Bad,
    ScanFinding,
    ScanReport,
    printable,
)
from edgesec.models.scan.sniff import FAMILIES, HEAD, detect, format_policy, whole_file_pickle
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


# --- files ------------------------------------------------------------------------------------------------


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
        if fmt in ("unknown", "text", "json", "sentencepiece") and whole_file_pickle(f, size, fmt):
            fmt = "pickle"  # its imports come after the header read (a long harmless prefix)
        if fmt == "unknown" and os.path.realpath(path) in onnx_data:
            fmt = "onnx-data"
        try:
            return fmt, _judge(f, path, rel, root, fmt, head, size, allowed_formats, unknown_severity)
        except Bad as bad:
            return fmt, [
                *format_policy(rel, fmt, allowed_formats),
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
        kind, inner = scan_zip(f, rel, Policy(tuple(allowed), unknown_severity), 0)
        what = {"pickle": "a zip-wrapped pickle (PyTorch)", "numpy": "numpy (.npz)"}.get(kind, kind)
        return format_policy(rel, kind, allowed, what) + inner
    out = format_policy(rel, fmt, allowed)
    if fmt == "pickle":
        out += scan_pickle_file(f, size, rel, head)
    elif fmt == "numpy":
        out += scan_numpy(f, size, rel)
    elif fmt == "tar":
        f.seek(0)
        out += scan_tar(f, rel, Policy(tuple(allowed), unknown_severity), 0)
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
        if fmt == "h5" and b"Lambda" in grep_lambda(f, size):
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
