"""Pickle and numpy files: every pickle a loader reads from them, judged by its imports (nothing is unpickled)."""

from __future__ import annotations

from typing import IO

from edgesec.models.scan import npy, pickles
from edgesec.models.scan.policy import classify_global
from edgesec.models.scan.report import ScanFinding
from edgesec.models.scan.sniff import pickle_offsets


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


def scan_pickle_file(f: IO[bytes], size: int, rel: str, head: bytes) -> list[ScanFinding]:
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


def scan_numpy(f: IO[bytes], size: int, rel: str) -> list[ScanFinding]:
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
