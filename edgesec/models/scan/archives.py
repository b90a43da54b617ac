"""Archives (zip, tar, and the formats built on zip: PyTorch, Keras v3, npz): every member sniffed and judged
like a file, read as a stream, nested archives followed to a limit."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from edgesec.models.scan.keras import keras_config
from edgesec.models.scan.pickle_files import scan_numpy, scan_pickle_file
from edgesec.models.scan.report import Bad, ScanFinding
from edgesec.models.scan.sniff import HEAD, detect, format_policy, whole_file_pickle

MAX_DEPTH = 3
"""Archives inside archives followed this deep."""
MAX_MEMBERS = 100_000


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


def scan_zip(f: IO[bytes], rel: str, policy: Policy, depth: int) -> tuple[str, list[ScanFinding]]:
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
                        out += keras_config(m.read(), member)
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


def scan_tar(f: IO[bytes], rel: str, policy: Policy, depth: int) -> list[ScanFinding]:
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
    if fmt in ("unknown", "text", "json", "sentencepiece") and whole_file_pickle(m, size, fmt):
        fmt = "pickle"
    out: list[ScanFinding] = []
    try:
        if fmt == "pickle":
            m.seek(0)
            out = scan_pickle_file(m, size, rel, head)
        elif fmt == "numpy":
            m.seek(0)
            out = scan_numpy(m, size, rel)
        elif fmt == "zip":
            m.seek(0)
            fmt, out = scan_zip(m, rel, policy, depth + 1)
        elif fmt == "tar":
            m.seek(0)
            out = scan_tar(m, rel, policy, depth + 1)
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
        out = format_policy(rel, fmt, policy.allowed) + out
    return out
