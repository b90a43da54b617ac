"""``edgesec authz lint``: rules that can never match, shadowed rules, users without roles.

Static checks of a policy in the shipped model's shape (``p = sub, dom, obj, act, eft``,
``g = user, role, tenant``). A rule that looks like it grants or forbids something but never applies is
worse than no rule: it misleads the person reading the policy and the auditor reading the evidence.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from edgesec._fs import read_input_file
from edgesec.authz.identity import role_clash
from edgesec.authz.request import METHODS, RequestRejected, canonical_path
from edgesec.errors import InputError

__all__ = ["LintFinding", "lint_policy", "read_policy_lines"]


@dataclass(frozen=True)
class LintFinding:
    """One lint result; ``level`` is ``error`` (the rule is dead or misleading) or ``warning``."""

    level: str
    code: str
    line: int
    message: str

    def to_json(self) -> dict[str, object]:
        return {"level": self.level, "code": self.code, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class _P:
    line: int
    sub: str
    dom: str
    obj: str
    act: str
    eft: str


def read_policy_lines(path: Path) -> tuple[list[_P], list[tuple[int, str, str, str]]]:
    """The ``p`` and ``g`` lines of a casbin CSV policy, with line numbers."""
    raw = read_input_file(path, what="policy file", limit=64 * 1024 * 1024)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    ps: list[_P] = []
    gs: list[tuple[int, str, str, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in next(csv.reader(io.StringIO(line), skipinitialspace=True))]
        kind = cells[0]
        if kind == "p":
            if len(cells) not in (5, 6):
                raise InputError(f"{path}:{lineno}: a p line needs sub, dom, obj, act[, eft]")
            ps.append(
                _P(lineno, cells[1], cells[2], cells[3], cells[4], cells[5] if len(cells) == 6 else "allow")
            )
        elif kind == "g":
            if len(cells) != 4:
                raise InputError(f"{path}:{lineno}: a g line needs user, role, tenant")
            gs.append((lineno, cells[1], cells[2], cells[3]))
        else:
            raise InputError(f"{path}:{lineno}: unknown line type {kind!r}")
    return ps, gs


def _methods(act: str) -> frozenset[str] | None:
    try:
        rx = re.compile(act)
    except re.error:
        return None
    # The shipped model uses regexMatch (re.match): anchored at the start only.
    return frozenset(m for m in METHODS if rx.match(m))


def _covers(outer: str, inner: str) -> bool:
    """Whether keyMatch2 pattern ``outer`` matches every path ``inner`` matches (conservative)."""
    if outer == inner or outer in ("/*", "*"):
        return True
    if outer.endswith("/*"):
        base = outer[:-1]
        if ":" in base:
            return False
        return inner.startswith(base)  # "/a/*" does not match "/a" itself
    return False


def _canonical_or_none(path: str) -> str | None:
    try:
        return canonical_path(path)
    except RequestRejected:
        return None


def lint_policy(path: Path) -> list[LintFinding]:
    """All findings for the policy at ``path``, in line order."""
    ps, gs = read_policy_lines(path)
    role_names = {role for _, _, role, _ in gs}
    out: list[LintFinding] = []
    holders: dict[tuple[str, str], set[str]] = defaultdict(set)  # (tenant, role) -> users
    for _, user, role, dom in gs:
        holders[(dom, role)].add(user)
    # Roles of roles: a role held by a role is held by that role's holders too.
    changed = True
    while changed:
        changed = False
        for _, user, role, dom in gs:
            extra = holders.get((dom, user), set()) - holders[(dom, role)]
            if extra:
                holders[(dom, role)] |= extra
                changed = True
    granted: set[tuple[str, str]] = {(p.dom, p.sub) for p in ps}
    for p in ps:
        if p.eft not in ("allow", "deny"):
            out.append(
                LintFinding("error", "unknown-effect", p.line, f"effect {p.eft!r} is neither allow nor deny")
            )
            continue
        # A subject in the role namespace applies only through its holders (/auth refuses an identity
        # that names a role); any other subject is a user name, and applies when that user calls.
        if role_clash(p.sub, role_names) is not None and not holders.get((p.dom, p.sub)):
            out.append(
                LintFinding(
                    "error",
                    "never-matches",
                    p.line,
                    f"nobody holds {p.sub!r} in tenant {p.dom!r}: the rule can never match",
                )
            )
        # A path the pattern matches: wildcards and keyMatch2's unescaped '.' (any character) filled.
        sample = re.sub(r":[A-Za-z0-9_]+", "x", p.obj).replace("*", "x")
        witness = sample.replace(".", "x")
        if p.obj == "*":
            pass  # keyMatch2's special case: matches every path
        elif not p.obj.startswith("/"):
            out.append(
                LintFinding("error", "never-matches", p.line, f"path {p.obj!r} does not start with '/'")
            )
        else:
            try:
                canon = canonical_path(witness)
            except RequestRejected as exc:
                canon = None
                out.append(
                    LintFinding(
                        "error",
                        "never-matches",
                        p.line,
                        f"path {p.obj!r} is never a canonical request path ({exc})",
                    )
                )
            if canon is not None and canon != witness:
                out.append(
                    LintFinding(
                        "error",
                        "never-matches",
                        p.line,
                        f"path {p.obj!r} is not canonical (requests arrive as {canon!r})",
                    )
                )
            elif canon is not None and _canonical_or_none(sample) != sample:
                out.append(
                    LintFinding(
                        "warning",
                        "dot-wildcard",
                        p.line,
                        f"path {p.obj!r} is not canonical as written; it matches only because keyMatch2's '.' "
                        f"matches any character (e.g. {witness!r})",
                    )
                )
        if p.eft == "deny" and p.obj != p.obj.lower():
            out.append(
                LintFinding(
                    "warning",
                    "deny-case",
                    p.line,
                    f"deny path {p.obj!r} has upper-case letters: authz also checks the lower-case spelling of "
                    "requests, not the other way round; write deny paths in lower case",
                )
            )
        methods = _methods(p.act)
        if methods is None:
            out.append(
                LintFinding("error", "bad-method-pattern", p.line, f"method pattern {p.act!r} is not a regex")
            )
        elif not methods:
            out.append(
                LintFinding(
                    "error", "never-matches", p.line, f"method pattern {p.act!r} matches no HTTP method"
                )
            )
        if role_clash(p.sub, role_names) is None and p.eft == "allow":
            out.append(
                LintFinding(
                    "warning", "direct-grant", p.line, f"rule grants {p.sub!r} directly; grant a role instead"
                )
            )
    # Shadowing: an allow rule that a deny rule of the same subject and tenant always overrides, or that
    # an earlier allow rule already covers.
    for i, a in enumerate(ps):
        if a.eft != "allow":
            continue
        am = _methods(a.act) or frozenset()
        for b in ps:
            if b is a or b.sub != a.sub or b.dom != a.dom:
                continue
            bm = _methods(b.act) or frozenset()
            if not am or not am <= bm or not _covers(b.obj, a.obj):
                continue
            if b.eft == "deny":
                out.append(
                    LintFinding(
                        "error",
                        "shadowed",
                        a.line,
                        f"allow rule is always overridden by the deny rule on line {b.line}",
                    )
                )
                break
            if b.eft == "allow" and ps.index(b) < i:
                out.append(
                    LintFinding(
                        "warning", "redundant", a.line, f"allow rule is already covered by line {b.line}"
                    )
                )
                break
    for lineno, user, role, dom in gs:
        if (
            role.startswith("role:")
            and (dom, role) not in granted
            and not any(r == user for _, _, r, d in gs if d == dom)
        ):
            out.append(
                LintFinding(
                    "warning",
                    "empty-role",
                    lineno,
                    f"{user!r} holds {role!r} in tenant {dom!r}, which no rule mentions: the user has no access",
                )
            )
    return sorted(out, key=lambda f: (f.line, f.code))
