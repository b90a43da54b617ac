"""The model manifest: what was signed, how it maps to the OpenSSF in-toto predicate, and how a
directory is compared with it.

An edgesec manifest is an OpenSSF ``model_signing`` v1.0 predicate with the ``files`` serialization
(one whole-file digest per file, so ``model_signing verify certificate`` checks it unchanged) plus an
``edgesec`` member that verifiers of that format ignore::

    "edgesec": {"version": 1, "signed_at": "...Z", "shard_size": 268435456, "ignore": ["*.log"],
                "files": {"model.safetensors": {"size": 5000000000, "shards": ["<hex>", ...]}}}

A file's edgesec digest is defined over its shards (``shard_size`` bytes each, the last shorter), so
verification of even one big file runs on every core. Signatures written by ``model_signing`` itself
(``files`` or ``shards`` serialization, no ``edgesec`` member) verify too, by their own digests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgesec.errors import InputError, VerificationError
from edgesec.models.hashing import (
    DEFAULT_SHARD_SIZE,
    GIT_PATHS,
    Listing,
    Task,
    TaskResult,
    is_ignored,
    printable,
    run_tasks,
    shard_ranges,
    sort_key,
    walk,
)

ALGORITHMS = ("sha256", "blake3")
_HEX = re.compile(r"^[0-9a-f]+$")
_DIGEST_LEN = {"sha256": 64, "blake3": 64}


@dataclass(frozen=True)
class FileEntry:
    """What the manifest says about one file.

    ``digest`` is the whole-file digest (None for a ``shards`` manifest); ``shards`` are
    ``(start, end, hex)`` ranges (empty when only the whole-file digest is known).
    """

    path: str
    size: int | None
    digest: str | None
    shards: tuple[tuple[int, int, str], ...] = ()


@dataclass(frozen=True)
class Manifest:
    """A parsed, signed manifest."""

    model_name: str
    algorithm: str
    method: str  # "files" or "shards" (the model_signing serialization)
    files: dict[str, FileEntry]
    ignore_paths: tuple[str, ...] = ()  # literal relative paths (model_signing)
    ignore_patterns: tuple[str, ...] = ()  # globs (edgesec)
    allow_symlinks: bool = False
    shard_size: int | None = None
    signed_at: dt.datetime | None = None
    producer: str = "edgesec"

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files.values())


def rel_path_problem(name: str) -> str | None:
    """Why ``name`` cannot be a manifest path (None if it can): one rule for signing and verifying."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        return "not a relative path inside the model"
    if "\\" in name:
        return "holds a backslash (a path separator on Windows verifiers)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "holds a control character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "is not valid UTF-8"
    return None


def check_rel_path(name: str) -> str:
    """A manifest path must stay inside the model directory; anything else is an attack."""
    if rel_path_problem(name) is not None:
        raise VerificationError(f"the manifest names an unsafe path {name!r}")
    return name


# --- signing side ---------------------------------------------------------------------------------


def build(
    root: Path,
    *,
    algorithm: str = "sha256",
    shard_size: int = DEFAULT_SHARD_SIZE,
    ignore: Sequence[str] = (),
    signature_rel: str | None = None,
    follow_symlinks: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
) -> Manifest:
    """Hash ``root`` into a manifest. Refuses (InputError) a directory with symlinks out or special files."""
    if algorithm not in ALGORITHMS:
        raise InputError(f"unsupported manifest algorithm {algorithm!r}; choose sha256 or blake3")
    if shard_size < 1024 * 1024:
        raise InputError("shard size must be at least 1 MiB")
    # Git's own paths are left out at the model's root only, as model_signing does (literal paths):
    # a `.github` or `.git` deeper down is signed like any other file.
    patterns = tuple(dict.fromkeys(ignore))
    literal = (*GIT_PATHS, *([signature_rel] if signature_rel else []))
    listing = walk(root, ignore=patterns, literal=literal, follow_symlinks=follow_symlinks)
    for rel in [*listing.files, *(i.path for i in listing.issues)]:
        problem = rel_path_problem(rel)
        if problem is not None:
            shown = rel.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise InputError(f"cannot sign {shown!r}: its name {problem}; rename it or --ignore it")
    if listing.issues:
        first = listing.issues[0]
        more = f" (and {len(listing.issues) - 1} more)" if len(listing.issues) > 1 else ""
        raise InputError(f"cannot sign {root}: {first.line()}{more}")
    if not listing.files:
        raise InputError(f"cannot sign {root}: no files to sign")
    tasks: list[Task] = []
    for rel, size in listing.files.items():
        tasks.append(Task(("file", rel), root / rel, 0, None, algorithm))
        if algorithm == "sha256" and size > shard_size:
            for i, (s, e) in enumerate(shard_ranges(size, shard_size)):
                tasks.append(Task(("shard", rel, i), root / rel, s, e, algorithm))
    if on_total:
        on_total(
            sum(
                listing.files[t.path.relative_to(root).as_posix()] if t.end is None else t.length
                for t in tasks
            )
        )
    results = run_tasks(tasks, workers=workers, progress=progress)
    files: dict[str, FileEntry] = {}
    for rel, size in listing.files.items():
        whole = _ok(results[("file", rel)], rel, size)
        shards: list[tuple[int, int, str]] = []
        if algorithm == "sha256":
            ranges = shard_ranges(size, shard_size)
            if len(ranges) == 1:
                shards = [(0, size, whole)]
            else:
                shards = [
                    (s, e, _ok(results[("shard", rel, i)], rel, e - s)) for i, (s, e) in enumerate(ranges)
                ]
        files[rel] = FileEntry(rel, size, whole, tuple(shards))
    # The literal ignored paths go into the model_signing serialization, so that its verifier skips
    # exactly what was skipped here; the glob patterns go into our own member.
    ignored_paths = sorted({*GIT_PATHS, *([signature_rel] if signature_rel else []), *listing.ignored})
    return Manifest(
        model_name=root.resolve().name,
        algorithm=algorithm,
        method="files",
        files=files,
        ignore_paths=tuple(ignored_paths),
        ignore_patterns=tuple(ignore),
        allow_symlinks=follow_symlinks,
        shard_size=shard_size if algorithm == "sha256" else None,
        signed_at=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0),
    )


def _ok(r: TaskResult, rel: str, size: int) -> str:
    if r.digest is None:
        raise InputError(f"cannot read {rel}: {r.error}")
    if r.read != size:
        raise InputError(f"{rel} changed size while it was being signed")
    return r.digest.hex()


def to_statement(m: Manifest) -> dict[str, Any]:
    """The in-toto Statement v1 for ``m`` (model_signing v1.0 predicate plus the ``edgesec`` member)."""
    names = sorted(m.files, key=sort_key)
    resources = [{"name": n, "algorithm": m.algorithm, "digest": m.files[n].digest} for n in names]
    root = hashlib.sha256(b"".join(bytes.fromhex(str(r["digest"])) for r in resources)).hexdigest()
    serialization: dict[str, Any] = {
        "method": "files",
        "hash_type": m.algorithm,
        "allow_symlinks": m.allow_symlinks,
    }
    if m.ignore_paths:
        serialization["ignore_paths"] = list(m.ignore_paths)
    ext: dict[str, Any] = {
        "version": 1,
        "signed_at": (m.signed_at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ignore": list(m.ignore_patterns),
        "files": {
            n: {"size": m.files[n].size, "shards": [h for _, _, h in m.files[n].shards]} for n in names
        },
    }
    if m.shard_size is not None:
        ext["shard_size"] = m.shard_size
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": m.model_name, "digest": {"sha256": root}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {"serialization": serialization, "resources": resources, "edgesec": ext},
    }


# --- verifying side -------------------------------------------------------------------------------


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise VerificationError(f"malformed signed manifest: {what}")


def _obj(value: Any, what: str) -> dict[str, Any]:
    _need(isinstance(value, dict), f"{what} is not an object")
    return dict(value)


def _list(value: Any, what: str) -> list[Any]:
    _need(isinstance(value, list), f"{what} is not a list")
    return list(value)


def _digest(value: Any, algorithm: str, where: str) -> str:
    _need(
        isinstance(value, str) and len(value) == _DIGEST_LEN[algorithm] and bool(_HEX.match(value)),
        f"{where}: digest is not {_DIGEST_LEN[algorithm]} hex digits",
    )
    return str(value)


def _shard_size(value: Any) -> int:
    """A shard size as model_signing writes it: an integer, or a float holding one (protobuf JSON)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    _need(isinstance(value, int) and not isinstance(value, bool) and value > 0, "shard_size")
    return int(value)


def from_statement(st: dict[str, Any]) -> Manifest:
    """Parse and cross-check a signed statement (already authenticated by its signature)."""
    subject = _list(st.get("subject"), "subject")
    _need(len(subject) == 1, "one subject expected")
    subj0 = _obj(subject[0], "subject")
    pred = _obj(st.get("predicate"), "predicate")
    ser = _obj(pred.get("serialization"), "serialization")
    method = ser.get("method")
    algorithm = ser.get("hash_type")
    _need(method in ("files", "shards"), f"unknown serialization method {method!r}")
    if algorithm not in ALGORITHMS:
        raise VerificationError(
            f"unsupported digest algorithm {algorithm!r} in the manifest (sha256 or blake3)"
        )
    ignore_paths = ser.get("ignore_paths", [])
    _need(isinstance(ignore_paths, list) and all(isinstance(p, str) for p in ignore_paths), "ignore_paths")
    allow_symlinks = ser.get("allow_symlinks", False)
    _need(isinstance(allow_symlinks, bool), "allow_symlinks is not a boolean")
    resources = _list(pred.get("resources"), "resources")
    # model_signing names a shard digest's algorithm after the shard size ("sha256-sharded-1000000000").
    resource_algorithms = {algorithm}
    if method == "shards":
        resource_algorithms.add(f"{algorithm}-sharded-{_shard_size(ser.get('shard_size'))}")
    # The subject digest binds the resource list (in its order), as model_signing checks it.
    h = hashlib.sha256()
    whole: dict[str, str] = {}
    shard_map: dict[str, list[tuple[int, int, str]]] = {}
    for i, r in enumerate(resources):
        _need(isinstance(r, dict) and isinstance(r.get("name"), str), f"resource {i} has no name")
        _need(r.get("algorithm", algorithm) in resource_algorithms, f"resource {i} uses another algorithm")
        d = _digest(r.get("digest"), algorithm, f"resource {r['name']!r}")
        h.update(bytes.fromhex(d))
        if method == "files":
            name = check_rel_path(r["name"])
            _need(name not in whole, f"{name} listed twice")
            whole[name] = d
        else:
            parts = r["name"].rsplit(":", 2)
            _need(
                len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit(), f"bad shard name {r['name']!r}"
            )
            s, e = int(parts[1]), int(parts[2])
            _need(s < e, f"empty shard {r['name']!r}")
            shard_map.setdefault(check_rel_path(parts[0]), []).append((s, e, d))
    sd = subj0.get("digest", {})
    if not isinstance(sd, dict) or sd.get("sha256") != h.hexdigest():
        raise VerificationError(
            "the manifest is inconsistent: its subject digest does not cover its resources"
        )
    model_name = str(subj0.get("name", ""))
    files: dict[str, FileEntry] = {}
    ext = pred.get("edgesec")
    signed_at: dt.datetime | None = None
    patterns: tuple[str, ...] = ()
    shard_size: int | None = None
    if method == "shards":
        shard_size = _shard_size(ser.get("shard_size"))
        for name, shards in shard_map.items():
            shards.sort()
            pos = 0
            for s, e, _ in shards:
                _need(s == pos and e - s <= shard_size, f"shards of {name} are not contiguous")
                pos = e
            files[name] = FileEntry(name, None, None, tuple(shards))
    elif isinstance(ext, dict):
        _need(ext.get("version") == 1, "unknown edgesec manifest version")
        ef = ext.get("files")
        _need(isinstance(ef, dict) and set(ef) == set(whole), "edgesec file list differs from the resources")
        assert isinstance(ef, dict)
        ss = ext.get("shard_size")
        _need(ss is None or (isinstance(ss, int) and ss > 0), "shard_size")
        shard_size = ss
        for name, info in ef.items():
            _need(isinstance(info, dict), f"{name}: entry")
            size = info.get("size")
            _need(isinstance(size, int) and size >= 0, f"{name}: size")
            hexes = info.get("shards", [])
            _need(isinstance(hexes, list), f"{name}: shards")
            shards_t: tuple[tuple[int, int, str], ...] = ()
            if hexes:
                _need(shard_size is not None, f"{name}: shards without a shard size")
                assert shard_size is not None
                ranges = shard_ranges(size, shard_size)
                _need(len(ranges) == len(hexes), f"{name}: {len(hexes)} shards for {size} bytes")
                shards_t = tuple(
                    (s, e, _digest(x, algorithm, f"{name} shard {i}"))
                    for i, ((s, e), x) in enumerate(zip(ranges, hexes, strict=True))
                )
            files[name] = FileEntry(name, size, whole[name], shards_t)
        raw_patterns = ext.get("ignore", [])
        _need(isinstance(raw_patterns, list) and all(isinstance(p, str) for p in raw_patterns), "ignore")
        patterns = tuple(raw_patterns)
        try:
            signed_at = dt.datetime.strptime(str(ext.get("signed_at")), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=dt.UTC
            )
        except ValueError:
            raise VerificationError("malformed signed manifest: signed_at") from None
    else:
        files = {n: FileEntry(n, None, d) for n, d in whole.items()}
    return Manifest(
        model_name=model_name,
        algorithm=algorithm,
        method=str(method),
        files=files,
        ignore_paths=tuple(ignore_paths),
        ignore_patterns=patterns,
        allow_symlinks=allow_symlinks,
        shard_size=shard_size,
        signed_at=signed_at,
        producer="edgesec" if isinstance(ext, dict) else "model_signing",
    )


@dataclass(frozen=True)
class Difference:
    """One way the directory differs from the manifest: one line for a person, fields for JSON."""

    kind: str  # modified, missing, extra, size, unreadable, symlink, symlink-escape, special
    path: str
    detail: str
    shard: int | None = None
    expected: str | None = None
    found: str | None = None

    def line(self) -> str:
        """One line: a file name cannot print a line of its own (control characters are escaped)."""
        return f"{self.kind.upper()} {printable(self.path)}: {printable(self.detail)}"

    def to_dict(self) -> dict[str, Any]:
        # An undecodable file name travels as text JSON and the audit trail can carry.
        return {
            k: v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            if isinstance(v, str)
            else v
            for k, v in self.__dict__.items()
            if v is not None
        }


@dataclass
class Comparison:
    """The outcome of checking a directory against a manifest."""

    differences: list[Difference] = field(default_factory=list)
    files_checked: int = 0
    bytes_hashed: int = 0


def plan(m: Manifest, root: Path, listing: Listing) -> list[Task]:
    """The hashing tasks: one per shard where shards are known, else one per file."""
    tasks: list[Task] = []
    for name, entry in m.files.items():
        if name not in listing.files or (entry.size is not None and listing.files[name] != entry.size):
            continue
        if len(entry.shards) > 1 or (entry.shards and entry.digest is None):
            for i, (s, e, _) in enumerate(entry.shards):
                tasks.append(Task((name, i), root / name, s, e, m.algorithm))
        else:
            tasks.append(Task((name, None), root / name, 0, None, m.algorithm))
    return tasks


def compare(
    m: Manifest,
    root: Path,
    *,
    extra_ignore: Sequence[str] = (),
    signature_rel: str | None = None,
    follow_symlinks: bool | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Comparison:
    """Hash ``root`` as ``m`` prescribes and list every difference (one per file or shard)."""
    # What the signer left out is left out by its own rules: model_signing's ignore_paths are literal
    # paths from the root, edgesec's patterns are globs. The verifier's own --ignore only tolerates
    # unsigned paths: a signed file is always checked, whatever it is called.
    patterns = list(m.ignore_patterns)
    literal = [*GIT_PATHS, *m.ignore_paths, *([signature_rel] if signature_rel else [])]
    allow = m.allow_symlinks if follow_symlinks is None else (follow_symlinks and m.allow_symlinks)
    listing = walk(root, ignore=patterns, literal=literal, follow_symlinks=allow)

    def tolerated(name: str) -> bool:
        return name not in m.files and is_ignored(name, extra_ignore)

    out = Comparison()
    issue_paths = set()
    for issue in listing.issues:
        if tolerated(issue.path):
            continue
        out.differences.append(Difference(issue.kind, issue.path, issue.detail))
        issue_paths.add(issue.path)
    for name in sorted(m.files, key=sort_key):
        entry = m.files[name]
        if name not in listing.files:
            if name not in issue_paths:
                out.differences.append(Difference("missing", name, "signed but not present"))
        elif entry.size is not None and listing.files[name] != entry.size:
            out.differences.append(
                Difference(
                    "size",
                    name,
                    f"signed {entry.size} bytes, found {listing.files[name]}",
                    expected=entry.digest,
                )
            )
    for name, size in listing.files.items():
        if name in m.files or tolerated(name):
            continue
        if m.method == "shards" and size == 0:
            continue  # model_signing's shard serialization lists no empty files
        out.differences.append(Difference("extra", name, f"not in the signed manifest ({size} bytes)"))
    tasks = plan(m, root, listing)
    if on_total:
        on_total(sum(t.length or listing.files.get(str(t.key[0]), 0) for t in tasks))
    results = run_tasks(tasks, workers=workers, progress=progress)
    out.files_checked = len({t.key[0] for t in tasks})
    for t in sorted(tasks, key=lambda t: (sort_key(t.key[0]), -1 if t.key[1] is None else t.key[1])):
        name, idx = t.key
        entry = m.files[name]
        r = results[t.key]
        out.bytes_hashed += r.read
        if r.digest is None:
            out.differences.append(Difference("unreadable", name, str(r.error), shard=idx))
            continue
        found = r.digest.hex()
        if idx is None:
            expected = entry.digest if entry.digest is not None else entry.shards[0][2]
            if found != expected:
                out.differences.append(
                    Difference(
                        "modified",
                        name,
                        f"{m.algorithm} expected {expected[:16]}… found {found[:16]}…",
                        expected=expected,
                        found=found,
                    )
                )
        else:
            s, e, expected = entry.shards[idx]
            if found != expected or r.read != e - s:
                out.differences.append(
                    Difference(
                        "modified",
                        name,
                        f"shard {idx + 1}/{len(entry.shards)} bytes [{s}, {e}) {m.algorithm} expected "
                        f"{expected[:16]}… found {found[:16]}…",
                        shard=idx,
                        expected=expected,
                        found=found,
                    )
                )
    return out
