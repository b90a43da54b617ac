"""A static pickle reader that follows CPython's ``_pickle`` unpickler opcode by opcode, without running it.

The reader keeps the stack, the mark stack and the memo as CPython does (values reduced to "this string",
a known non-string kind, or "unknown"), so that the imports it reports are the ``find_class`` calls a real
``pickle.load`` makes: a ``STACK_GLOBAL`` whose operands sit under a ``POP``, come from the memo or from a
``DUP`` is resolved, not guessed from the last two strings in the file. Framing is what CPython's C unpickler
does with it, in its two input modes: from bytes or a file with ``peek`` a ``FRAME`` only asks that its
length be available; from a file without ``peek`` (``io.BytesIO``, torch's zip loader) the frame becomes the
input buffer and a read it cannot satisfy drops its rest (:class:`_StreamReader`). Where CPython would stop
with an error, the reader stops too; imports met before that point are still reported, because CPython has
already imported them. Where the error depends on a type the file does not show (an imported object), the
reader reads on: it may report more than CPython imports, never less.

Nothing is allocated from a length the file declares: big byte strings are skipped with a seek.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from edgesec.models.scan.report import ScanFinding

HIGHEST_PROTOCOL = 5
BIG_READ = 1 << 20
MAX_LINE = 1 << 16
MAX_OPS = 50_000_000
LONG_LINE = b"\x00<long>"
"""Appended to a cut line: no module, name or ASCII string ends so, so it can name nothing."""
TORCH_LEGACY_PICKLES = 5
"""``torch.load`` of a non-zip file reads five pickles back to back (magic, protocol, system info, the
objects, the storage keys) before the raw storage bytes."""


class _NotStr:
    """A value that is certainly not a ``str``; ``kind`` says what it is where that decides an error."""

    def __init__(self, kind: str = "other") -> None:
        self.kind = kind


class _Unknown:
    """The result of a call or an import: it could be anything, a ``str`` included."""


NOT_STR = _NotStr()
NUM, NONE, BYTES = _NotStr("num"), _NotStr("none"), _NotStr("bytes")
TUPLE, LIST, DICT, SET, FROZENSET = (_NotStr(k) for k in ("tuple", "list", "dict", "set", "frozenset"))
_NO_ITEMS = {"str", "num", "none", "bytes", "tuple", "set", "frozenset"}
"""Kinds CPython can never assign an item to (SETITEM stops there)."""
_NO_APPEND = {"str", "num", "none", "bytes", "tuple", "dict", "set", "frozenset"}
_NO_ADD = {"str", "num", "none", "bytes", "tuple", "dict", "list", "frozenset"}
_NOT_CALLABLE = {"num", "none", "bytes", "tuple", "dict", "list", "set", "frozenset"}


def _kind(v: object) -> str:
    if isinstance(v, str):
        return "str"
    return v.kind if isinstance(v, _NotStr) else "unknown"


UNKNOWN = _Unknown()
Value = str | _NotStr | _Unknown


class Stop(Exception):
    """CPython's unpickler would raise here: loading stops, nothing after this point runs."""


@dataclass
class PickleResult:
    """What one pickle stream asks for when loaded."""

    imports: list[tuple[str, str]] = field(default_factory=list)
    """``(module, name)`` in the order ``find_class`` receives them (before ``fix_imports`` renames)."""
    computed: int = 0
    """``STACK_GLOBAL``/``OBJ``-style imports whose operands are computed at load time."""
    extensions: list[int] = field(default_factory=list)
    calls: int = 0
    error: str | None = None
    protocol: int = 0
    ops: int = 0
    end: int = 0
    lenient: list[str] = field(default_factory=list)
    """Where the reader went on although CPython's C unpickler would stop (it then reports more, never less)."""


class _Reader:
    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        self.size = size

    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.left():
            raise Stop("pickle data was truncated")
        return self.f.read(n)

    def skip(self, n: int) -> None:
        if n < 0 or n > self.left():
            raise Stop("pickle data was truncated")
        self.f.seek(n, os.SEEK_CUR)

    def blob(self, n: int) -> bytes | None:
        """``n`` bytes, or None after skipping them when they are too many to be worth reading."""
        if n > BIG_READ:
            self.skip(n)
            return None
        return self.take(n)

    def line(self) -> bytes:
        """One newline-terminated argument; a longer one than :data:`MAX_LINE` is read through and cut."""
        data = self.f.readline(MAX_LINE)
        if data.endswith(b"\n"):
            return data[:-1]
        while True:
            more = self.f.readline(BIG_READ)
            if not more:
                raise Stop("pickle data was truncated (a line without its newline)")
            if more.endswith(b"\n"):
                return data + LONG_LINE

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def take_into(self, n: int) -> bytes | None:
        return self.blob(n)

    def frame(self, n: int, res: PickleResult) -> None:
        """``pickle.loads`` and files with ``peek``: the C unpickler only asks that ``n`` bytes follow."""
        if n > self.left():
            # CPython's C unpickler stops here; pickle.py's (dill, pickle._Unpickler) reads on.
            res.lenient.append("FRAME longer than the file: read on as pickle.py does")


class _StreamReader(_Reader):
    """The C unpickler reading a file object without ``peek`` (``io.BytesIO``: torch's zip loader).

    It keeps the last chunk it read from the file as its buffer: a ``FRAME`` reads ``n`` bytes into it,
    and a read the buffer cannot satisfy (an argument longer than what is left of the frame, a nested
    ``FRAME``) fetches fresh bytes from the file, *dropping* the rest of the buffer. Bytes a sequential
    reading sees as an argument can so be skipped by the loader, and what follows them is what runs.
    """

    def __init__(self, f: IO[bytes], size: int) -> None:
        super().__init__(f, size)
        self.buf = b""
        self.idx = 0

    def _spare(self) -> int:
        return len(self.buf) - self.idx

    def take(self, n: int) -> bytes:
        if n < 0:
            raise Stop("pickle data was truncated")
        if n <= self._spare():
            self.idx += n
            return self.buf[self.idx - n : self.idx]
        data = super().take(n)  # from the file, after the buffer
        self.buf, self.idx = b"", 0
        return data

    def take_into(self, n: int) -> bytes | None:
        """Counted bytes (``BINBYTES``, ``BYTEARRAY8``): CPython's ``readinto`` path, which does finish
        the buffer before it reads the file, so nothing is dropped."""
        spare = max(0, min(self._spare(), n))
        head = self.buf[self.idx : self.idx + spare]
        self.idx += spare
        rest = _Reader.blob(self, n - spare)
        self.buf, self.idx = (b"", 0) if spare < n else (self.buf, self.idx)
        return None if rest is None else head + rest

    def skip(self, n: int) -> None:
        if 0 <= n <= self._spare():
            self.idx += n
            return
        super().skip(n)
        self.buf, self.idx = b"", 0

    def line(self) -> bytes:
        nl = self.buf.find(b"\n", self.idx)
        if nl >= 0:
            out = self.buf[self.idx : nl]
            self.idx = nl + 1
            return out
        self.buf, self.idx = b"", 0
        return super().line()

    def frame(self, n: int, res: PickleResult) -> None:
        if n <= self._spare():
            return
        if n > self.left():
            raise Stop("pickle data was truncated (FRAME longer than the file)")
        if n > BIG_READ * 64:
            raise Stop("FRAME too large to follow")
        self.buf, self.idx = self.f.read(n), 0


# fix_imports=True (the default of pickle.load): what a protocol 0-2 import is renamed to before importing.
try:
    import _compat_pickle

    _NAME_MAPPING: dict[tuple[str, str], tuple[str, str]] = dict(_compat_pickle.NAME_MAPPING)
    _IMPORT_MAPPING: dict[str, str] = dict(_compat_pickle.IMPORT_MAPPING)
except ImportError:  # pragma: no cover - part of CPython since 3.0
    _NAME_MAPPING, _IMPORT_MAPPING = {}, {}


def effective(module: str, name: str, protocol: int) -> tuple[str, str]:
    """The module and name CPython imports for ``find_class(module, name)`` (its ``fix_imports`` renames)."""
    if protocol < 3:
        if (module, name) in _NAME_MAPPING:
            return _NAME_MAPPING[(module, name)]
        if module in _IMPORT_MAPPING:
            return _IMPORT_MAPPING[module], name
    return module, name


def _decode_str(raw: bytes) -> Value:
    """``STRING``/``BINSTRING`` under the default ``encoding='ASCII'``: a str, or an error that stops loading."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise Stop("a STRING opcode holds non-ASCII bytes") from None


def read_pickle(f: IO[bytes], size: int, *, stream: bool = False) -> PickleResult:
    """Interpret one pickle from ``f``'s position to its ``STOP`` (or to where CPython would fail).

    ``stream``: as the C unpickler reads a file object without ``peek`` (``io.BytesIO``); otherwise as it
    reads bytes (``pickle.loads``) or a buffered file. The two differ only where frames are lied about.
    """
    r: _Reader = _StreamReader(f, size) if stream else _Reader(f, size)
    res = PickleResult()
    stack: list[Value] = []
    marks: list[list[Value]] = []
    memo: dict[int, Value] = {}

    def pop() -> Value:
        if not stack:
            raise Stop("unpickling stack underflow")
        return stack.pop()

    def pop_mark() -> list[Value]:
        nonlocal stack
        if not marks:
            raise Stop("could not find MARK")
        items = stack
        stack = marks.pop()
        return items

    def top() -> Value:
        if not stack:
            raise Stop("unpickling stack underflow")
        return stack[-1]

    def imported(module: Value, name: Value) -> None:
        if isinstance(module, str) and isinstance(name, str):
            res.imports.append((module, name))
        elif isinstance(module, _NotStr) or isinstance(name, _NotStr):
            raise Stop("STACK_GLOBAL requires str")
        else:
            res.computed += 1
        stack.append(UNKNOWN)

    def call() -> None:
        res.calls += 1
        stack.append(UNKNOWN)

    def get(idx: int) -> None:
        if idx not in memo:
            raise Stop(f"Memo value not found at index {idx}")
        stack.append(memo[idx])

    def put(idx: int) -> None:
        if idx < 0:
            raise Stop("negative PUT argument")
        memo[idx] = top()

    def number() -> None:
        # CPython parses with strtol/strtod rules this reader does not copy: on doubt, keep reading
        # (a later import then shows up), never stop early.
        r.line()
        stack.append(NUM)

    def target(refuse: set[str], what: str) -> None:
        """The object below the popped items must accept ``what``; CPython stops where it cannot."""
        if _kind(top()) in refuse:
            raise Stop(f"{what} on a {_kind(top())}")

    start = f.tell()
    try:
        while True:
            res.ops += 1
            if res.ops > MAX_OPS:
                raise Stop(f"more than {MAX_OPS} opcodes")
            try:
                op = r.take(1)
            except Stop:
                op = b""
            if not op:
                raise Stop("pickle data was truncated (no STOP)")
            c = op[0]
            if c == 0x2E:  # STOP
                if not stack:
                    raise Stop("unpickling stack underflow")
                break
            if c == 0x80:  # PROTO
                p = r.u(1)
                if p > HIGHEST_PROTOCOL:
                    raise Stop(f"unsupported pickle protocol: {p}")
                res.protocol = p
            elif c == 0x95:  # FRAME
                r.frame(r.u(8), res)
            elif c == 0x28:  # MARK
                marks.append(stack)
                stack = []
            elif c == 0x30:  # POP
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif c == 0x31:  # POP_MARK
                pop_mark()
            elif c == 0x32:  # DUP
                stack.append(top())
            elif c in (0x46, 0x49, 0x4C):  # FLOAT INT LONG
                number()
            elif c == 0x47:  # BINFLOAT
                r.take(8)
                stack.append(NUM)
            elif c == 0x4A:  # BININT
                r.take(4)
                stack.append(NUM)
            elif c == 0x4B:  # BININT1
                r.take(1)
                stack.append(NUM)
            elif c == 0x4D:  # BININT2
                r.take(2)
                stack.append(NUM)
            elif c == 0x8A:  # LONG1
                r.take(r.u(1))
                stack.append(NUM)
            elif c == 0x8B:  # LONG4
                n = int.from_bytes(r.take(4), "little", signed=True)
                if n < 0:
                    raise Stop("LONG pickle has negative byte count")
                r.blob(n)
                stack.append(NUM)
            elif c == 0x4E:  # NONE
                stack.append(NONE)
            elif c in (0x88, 0x89):  # NEWTRUE NEWFALSE
                stack.append(NUM)
            elif c == 0x53:  # STRING
                line = r.line()
                if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
                    raise Stop("the STRING opcode argument must be quoted")
                try:
                    raw = codecs.escape_decode(line[1:-1])[0]
                except ValueError:
                    raise Stop("invalid escape in a STRING opcode") from None
                stack.append(_decode_str(raw))
            elif c == 0x54:  # BINSTRING
                n = int.from_bytes(r.take(4), "little", signed=True)
                if n < 0:
                    raise Stop("BINSTRING pickle has negative byte count")
                b = r.blob(n)
                stack.append(UNKNOWN if b is None else _decode_str(b))
            elif c == 0x55:  # SHORT_BINSTRING
                stack.append(_decode_str(r.take(r.u(1))))
            elif c in (0x56, 0x58, 0x8C, 0x8D):  # UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
                if c == 0x56:
                    try:
                        s: Value = r.line().decode("raw-unicode-escape")
                    except UnicodeDecodeError:
                        raise Stop("invalid UNICODE opcode argument") from None
                else:
                    n = r.u({0x58: 4, 0x8C: 1, 0x8D: 8}[c])
                    b = r.blob(n)
                    if b is None:
                        s = NOT_STR  # a megabyte-long name imports nothing that exists
                    else:
                        try:
                            s = b.decode("utf-8", "surrogatepass")
                        except UnicodeDecodeError:
                            raise Stop("a unicode opcode holds invalid UTF-8") from None
                stack.append(s)
            elif c in (0x42, 0x43, 0x8E, 0x96):  # BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8
                n = r.u({0x42: 4, 0x43: 1, 0x8E: 8, 0x96: 8}[c])
                r.take_into(n)
                stack.append(BYTES if c != 0x96 else NOT_STR)
            elif c == 0x97:  # NEXT_BUFFER
                raise Stop("pickle stream refers to out-of-band data but no buffers were given")
            elif c == 0x98:  # READONLY_BUFFER
                top()
            elif c in (0x29, 0x5D, 0x7D, 0x8F):  # EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET
                stack.append({0x29: TUPLE, 0x5D: LIST, 0x7D: DICT, 0x8F: SET}[c])
            elif c in (0x74, 0x6C, 0x91):  # TUPLE LIST FROZENSET
                pop_mark()
                stack.append({0x74: TUPLE, 0x6C: LIST, 0x91: FROZENSET}[c])
            elif c == 0x64:  # DICT
                if len(pop_mark()) % 2:
                    raise Stop("odd number of items for DICT")
                stack.append(DICT)
            elif c in (0x85, 0x86, 0x87):  # TUPLE1..3
                for _ in range(c - 0x84):
                    pop()
                stack.append(TUPLE)
            elif c == 0x61:  # APPEND
                pop()
                target(_NO_APPEND, "APPEND")
            elif c in (0x65, 0x75, 0x90):  # APPENDS SETITEMS ADDITEMS
                items = pop_mark()
                if c == 0x75 and len(items) % 2:
                    raise Stop("odd number of items for SETITEMS")
                if items:  # CPython returns early when there is nothing to add
                    target({0x65: _NO_APPEND, 0x75: _NO_ITEMS, 0x90: _NO_ADD}[c], "adding items")
            elif c == 0x73:  # SETITEM
                pop()
                pop()
                target(_NO_ITEMS, "SETITEM")
            elif c == 0x62:  # BUILD (may call __setstate__: a call on an imported object)
                pop()
                top()
            elif c == 0x63:  # GLOBAL
                module, name = r.line(), r.line()
                try:
                    imported(module.decode("utf-8"), name.decode("utf-8"))
                except UnicodeDecodeError:
                    raise Stop("GLOBAL names are not UTF-8") from None
            elif c == 0x93:  # STACK_GLOBAL
                name_v = pop()
                module_v = pop()
                imported(module_v, name_v)
            elif c == 0x69:  # INST: import, then call with the items above the mark
                module, name = r.line(), r.line()
                try:
                    m, n2 = module.decode("ascii"), name.decode("ascii")
                except UnicodeDecodeError:
                    raise Stop("INST names are not ASCII") from None
                pop_mark()
                imported(m, n2)
                stack.pop()
                call()
            elif c == 0x6F:  # OBJ: the class is the first item above the mark
                items = pop_mark()
                if not items:
                    raise Stop("could not find MARK")
                if not isinstance(items[0], _Unknown):
                    raise Stop("OBJ class argument is not a class")
                call()
            elif c == 0x52:  # REDUCE
                args = pop()
                func = pop()
                if _kind(args) not in ("tuple", "unknown"):
                    raise Stop("REDUCE arguments must be a tuple")
                if _kind(func) in _NOT_CALLABLE or isinstance(func, str):
                    raise Stop("REDUCE of an object that cannot be called")
                call()
            elif c == 0x81:  # NEWOBJ
                args = pop()
                cls = pop()
                if _kind(args) not in ("tuple", "unknown"):
                    raise Stop("NEWOBJ expected an arg tuple")
                if _kind(cls) != "unknown":
                    raise Stop("NEWOBJ class argument isn't a type object")
                call()
            elif c == 0x92:  # NEWOBJ_EX
                pop()
                pop()
                pop()
                call()
            elif c in (0x82, 0x83, 0x84):  # EXT1 EXT2 EXT4
                code = r.u({0x82: 1, 0x83: 2, 0x84: 4}[c])
                res.extensions.append(code)
                stack.append(UNKNOWN)
            elif c in (0x50, 0x51):  # PERSID BINPERSID: torch's storages; the loader's own function
                if c == 0x50:
                    r.line()
                else:
                    pop()
                stack.append(UNKNOWN)
            elif c == 0x67:  # GET
                try:
                    get(int(r.line()))
                except ValueError:
                    raise Stop("GET argument is not an integer") from None
            elif c == 0x68:  # BINGET
                get(r.u(1))
            elif c == 0x6A:  # LONG_BINGET
                get(r.u(4))
            elif c == 0x70:  # PUT
                try:
                    put(int(r.line()))
                except ValueError:
                    raise Stop("PUT argument is not an integer") from None
            elif c == 0x71:  # BINPUT
                put(r.u(1))
            elif c == 0x72:  # LONG_BINPUT
                put(r.u(4))
            elif c == 0x94:  # MEMOIZE
                memo[len(memo)] = top()
            else:
                raise Stop(f"invalid load key, {op!r}")
    except Stop as e:
        res.error = str(e)
    except OSError as e:
        res.error = f"read error: {e.strerror}"
    res.end = f.tell()
    if res.end < start:
        res.end = start
    return res


def read_pickles(
    f: IO[bytes], size: int, count: int = TORCH_LEGACY_PICKLES, *, stream: bool = False
) -> list[PickleResult]:
    """Up to ``count`` pickles back to back, as ``torch.load`` reads a legacy (non-zip) checkpoint.

    The first error ends the chain, as it ends the loader: a later pickle is never reached.
    """
    out: list[PickleResult] = []
    for _ in range(count):
        if f.tell() >= size:
            break
        res = read_pickle(f, size, stream=stream)
        out.append(res)
        if res.error is not None:
            break
    return out


def parses_as_pickle(data: bytes) -> bool:
    """Whether ``data`` begins with a pickle that loads to its STOP and imports something."""
    import io

    res = read_pickle(io.BytesIO(data), len(data))
    return res.error is None and bool(res.imports or res.computed or res.extensions)


def pickle_findings(
    results: list[PickleResult],
    rel: str,
    classify: Callable[[str, str], str | None],
    *,
    first_only: bool = False,
) -> list[ScanFinding]:
    """Findings for what a chain of pickles imports (``classify`` gives a severity or None if allowed)."""
    out: list[ScanFinding] = []
    seen: set[tuple[str, str]] = set()
    for i, res in enumerate(results):
        where = "" if i == 0 else f" (pickle {i + 1} of the file)"
        if res.computed:
            out.append(
                ScanFinding(
                    rel,
                    "pickle-import",
                    "critical",
                    f"pickle imports a callable whose name is computed at load time{where}: runs code that "
                    "cannot be known before loading",
                    {"computed": res.computed},
                )
            )
        for code in sorted(set(res.extensions)):
            out.append(
                ScanFinding(
                    rel,
                    "pickle-import",
                    "high",
                    f"pickle imports extension code {code} (copyreg registry){where}: the import is not in the "
                    "file and cannot be assessed",
                    {"extension": code},
                )
            )
        for module, name in res.imports:
            eff = effective(module, name, res.protocol)
            if eff in seen:
                continue
            seen.add(eff)
            sev = classify(*eff)
            if sev is None:
                continue
            shown = f"{eff[0]}.{eff[1]}"
            what = (
                "a callable that runs code when loaded"
                if sev == "critical"
                else "a suspicious import outside the weights-only allowlist"
            )
            out.append(
                ScanFinding(
                    rel, "pickle-import", sev, f"pickle imports {shown}{where}: {what}", {"import": shown}
                )
            )
        if res.error is not None and i == 0:
            out.append(
                ScanFinding(
                    rel,
                    "pickle-malformed",
                    "high",
                    f"pickle stream is malformed: {res.error}",
                    {"offset": res.end},
                )
            )
        if first_only:
            break
    return out
