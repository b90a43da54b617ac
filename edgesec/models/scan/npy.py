"""``.npy`` headers decoded as ``numpy.lib.format.read_array`` decodes them, without numpy.

An array whose dtype holds Python objects is stored as a pickle right after its header, and
``np.load(..., allow_pickle=True)`` unpickles it; the header is a Python literal that numpy reads with
``ast.literal_eval`` and turns into a dtype with ``descr_to_dtype``. This module repeats those steps on the
literal alone, so a ``descr`` of ``'object'``, ``[('a', 'object')]``, ``('O', (2,))`` or ``{'aO': 0}``
(numpy iterates a mapping's keys as fields) is seen as the object array numpy builds from it.
"""

from __future__ import annotations

import ast
import re
from typing import IO, Any

from edgesec.models.scan.report import Bad

MAGIC = b"\x93NUMPY"
VERSIONS = {1: ("<H", "latin1"), 2: ("<I", "latin1"), 3: ("<I", "utf8")}
EXPECTED_KEYS = {"descr", "fortran_order", "shape"}
MAX_HEADER = 1 << 24
"""numpy's bound is 10 000 characters unless ``allow_pickle`` (then none): this one only bounds memory."""
MAX_DEPTH = 32


def read_header(f: IO[bytes], size: int) -> dict[str, Any]:
    """Read the magic and header at ``f``'s position; leaves ``f`` at the first byte of the array data."""
    start = f.tell()
    head = f.read(8)
    if len(head) < 8 or not head.startswith(MAGIC):
        raise Bad("not a .npy array (bad magic)")
    major, minor = head[6], head[7]
    if major not in VERSIONS or minor != 0:
        raise Bad(f"unsupported .npy version {major}.{minor}")
    fmt, encoding = VERSIONS[major]
    width = 2 if fmt == "<H" else 4
    raw_len = f.read(width)
    if len(raw_len) < width:
        raise Bad("truncated: no header length")
    hlen = int.from_bytes(raw_len, "little")
    if hlen > MAX_HEADER or f.tell() - start + hlen > size:
        raise Bad(f"header length {hlen} is out of bounds")
    try:
        text = f.read(hlen).decode(encoding)
    except UnicodeDecodeError:
        raise Bad("header is not UTF-8") from None
    try:
        header = _literal(text)
    except SyntaxError:
        if major > 2:
            raise Bad("header is not a Python literal") from None
        header = _literal(re.sub(r"(\d)[lL]\b", r"\1", text))  # numpy's _filter_header for Python 2 longs
    if not isinstance(header, dict) or set(header) != EXPECTED_KEYS:
        raise Bad("header must be a dict with exactly the keys descr, fortran_order, shape")
    return header


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)  # literals only: nothing is evaluated
    except SyntaxError:
        raise
    except (ValueError, TypeError, MemoryError, RecursionError):
        raise Bad("header is not a Python literal") from None


def has_object(descr: Any, depth: int = 0) -> bool:
    """Whether ``numpy.lib.format.descr_to_dtype(descr)`` holds Python objects (``Bad`` if numpy fails)."""
    if depth > MAX_DEPTH:
        raise Bad("descr nested too deeply")
    if isinstance(descr, str):
        # numpy.dtype(str): 'O', '|O', 'O8', 'object', 'i4,O' ... an object anywhere in the spelling.
        return "O" in descr or "object" in descr.lower()
    if isinstance(descr, tuple):
        if not descr:
            raise Bad("descr is an empty tuple")
        return has_object(descr[0], depth + 1)
    try:
        fields = list(descr)
    except TypeError:
        raise Bad(f"descr of type {type(descr).__name__} is not a dtype") from None
    for field in fields:
        try:
            n = len(field)
        except TypeError:
            raise Bad("descr field is not a sequence") from None
        if n == 2:
            _, sub = field[0], field[1]
        elif n == 3:
            _, sub = field[0], field[1]
        else:
            raise Bad(f"descr field of length {n}")
        if has_object(sub, depth + 1):
            return True
    return False
