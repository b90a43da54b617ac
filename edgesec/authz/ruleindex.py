"""The engine's index of a policy: rules by tenant and subject, path rules by directory and literal prefix,
rule sets shared by tenants that hold the same rules, and role resolution as casbin's domain role manager
does it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

#: casbin's default role manager follows at most this many role-to-role hops (its level 10 counts the
#: user itself), so a longer chain silently grants nothing; we follow the same bound.
MAX_ROLE_HOPS: Final = 9
_SMALL_DIR: Final = 4  # tails per directory compared in place rather than looked up by length


@dataclass(frozen=True, slots=True)
class Rule:
    index: int  # position in its rule set; the tenant's Bound maps it to the position in the policy
    obj_match: Callable[[str, int], Any] | None  # None: the exact-literal dictionary already matched
    start: int  # where obj_match starts: the length of the literal prefix the bucket matched
    act_match: Callable[[str], bool]
    eft: int
    line: tuple[str, ...]  # the policy line without its tenant (rule sets are shared by tenants)


class Bound:
    """One tenant's use of a (possibly shared) rule set: where its rules stand in the policy."""

    __slots__ = ("indices", "ruleset")

    def __init__(self, ruleset: RuleSet, indices: tuple[int, ...]) -> None:
        self.ruleset = ruleset
        self.indices = indices  # policy position of the rule set's rule k


class Dir:
    """Rules whose literal prefix is ``<this directory>/<tail>``, by tail (tails hold no "/")."""

    __slots__ = ("lengths", "small", "tails")

    def __init__(self) -> None:
        self.tails: dict[str, tuple[Rule, ...]] = {}
        self.lengths: tuple[int, ...] = ()
        # A few tails: compared in place (fewer objects touched than one lookup per tail length, and
        # no dictionary kept).
        self.small: tuple[tuple[str, tuple[Rule, ...]], ...] | None = None


class RuleSet:
    """The rules of one (tenant, subject).

    Literal paths sit in ``exact``. Every other rule is filed by its literal prefix, split at the last
    "/" into a directory and a tail: a request visits only the directories it passes through (one
    lookup per "/" in its path) and, in each, the few tail lengths present -- never a scan of the
    rules, however many one subject holds.
    """

    __slots__ = ("dirs", "dollar", "exact")

    def __init__(self, dollar: bool) -> None:
        # ``dollar``: the exact entries stand for regexes "^literal$", whose "$" also matches before a
        # final newline; False when the matcher is plain equality.
        self.dollar = dollar
        self.exact: dict[str, tuple[Rule, ...]] = {}
        self.dirs: dict[str, Dir] = {}

    def add_prefixed(self, prefix: str, rule: Rule) -> None:
        cut = prefix.rfind("/") + 1
        d = self.dirs.get(prefix[:cut])
        if d is None:
            d = self.dirs[prefix[:cut]] = Dir()
        tails, tail = d.tails, prefix[cut:]
        tails[tail] = (*tails.get(tail, ()), rule)

    def add_exact(self, key: str, rule: Rule) -> None:
        # Buckets are tuples (a third of a list's memory); they are nearly always one rule long.
        exact = self.exact
        exact[key] = (*exact.get(key, ()), rule)

    def seal(self) -> None:
        for d in self.dirs.values():
            tails = d.tails
            if len(tails) <= _SMALL_DIR:
                d.small, d.tails, d.lengths = tuple(tails.items()), {}, ()
            else:
                d.small, d.tails, d.lengths = None, tails, tuple(sorted({len(t) for t in tails}))

    def collect(self, obj: str, act: str, out: list[Rule]) -> None:
        exact = self.exact
        if exact:
            hits = exact.get(obj)
            if hits is None and self.dollar and obj[-1:] == "\n":
                # ``$`` matches before a final newline: "^/a$" matches "/a\n" in casbin too.
                hits = exact.get(obj[:-1])
            if hits:
                for rule in hits:
                    if rule.act_match(act):
                        out.append(rule)
        dirs = self.dirs
        if not dirs:
            return
        n = len(obj)
        pos = -1  # first the "" directory (prefixes without a "/"), then one per "/" in the path
        while True:
            d = dirs.get(obj[: pos + 1])
            if d is not None:
                base = pos + 1
                small = d.small
                if small is not None:
                    for tail, bucket in small:
                        if obj.startswith(tail, base):
                            for rule in bucket:
                                om = rule.obj_match
                                if (om is None or om(obj, rule.start)) and rule.act_match(act):
                                    out.append(rule)
                else:
                    tails = d.tails
                    for length in d.lengths:
                        if base + length > n:
                            break
                        hits = tails.get(obj[base : base + length])
                        if hits:
                            for rule in hits:
                                om = rule.obj_match
                                if (om is None or om(obj, rule.start)) and rule.act_match(act):
                                    out.append(rule)
            pos = obj.find("/", pos + 1)
            if pos < 0:
                return


NO_VIEW: Final[tuple[tuple[str, ...], tuple[Bound, ...]]] = ((), ())


class Tenant:
    """Everything one tenant's decisions read: its role graph and its rules by subject."""

    __slots__ = ("denies", "deny_views", "graph", "roles", "rules", "views")

    def __init__(self) -> None:
        self.graph: dict[str, tuple[str, ...]] = {}
        self.rules: dict[str, Bound] = {}
        # The explicit deny rules alone, by subject (only subjects that have any), and per user the
        # deny rule sets of the user and its roles: what :meth:`PolicyEngine.denies` reads.
        self.denies: dict[str, Bound] = {}
        self.deny_views: dict[str, tuple[Bound, ...]] = {}
        # Role closures of the names in ``graph``, filled on first use; bounded by the policy's size
        # because a name outside the graph has no roles and is never stored.
        self.roles: dict[str, tuple[str, ...]] = {}
        # Per user: (roles, the rule sets of the user and its roles) -- one lookup per decision instead
        # of one per subject. Stored only for names the policy knows (same bound as above).
        self.views: dict[str, tuple[tuple[str, ...], tuple[Bound, ...]]] = {}

    def view(self, user: str) -> tuple[tuple[str, ...], tuple[Bound, ...]]:
        view = self.views.get(user)
        if view is not None:
            return view
        if user not in self.graph and user not in self.rules:
            return NO_VIEW
        roles = self.roles_of(user)
        rules = self.rules
        bounds = tuple(b for b in (rules.get(s) for s in (user, *roles)) if b is not None)
        view = self.views[user] = (roles, bounds)
        return view

    def deny_view(self, user: str) -> tuple[Bound, ...]:
        bounds = self.deny_views.get(user)
        if bounds is not None:
            return bounds
        if not self.denies or (user not in self.graph and user not in self.rules):
            return ()
        denies = self.denies
        bounds = tuple(b for b in (denies.get(s) for s in (user, *self.roles_of(user))) if b is not None)
        self.deny_views[user] = bounds
        return bounds

    def roles_of(self, user: str) -> tuple[str, ...]:
        roles = self.roles.get(user)
        if roles is not None:
            return roles
        graph = self.graph
        if user not in graph:
            return ()
        seen = {user}
        out: list[str] = []
        frontier = [user]
        # Depth 0 is the user; casbin's has_link reaches names at most MAX_ROLE_HOPS links away.
        for _ in range(MAX_ROLE_HOPS):
            nxt: list[str] = []
            for name in frontier:
                for role in graph.get(name, ()):
                    if role not in seen:
                        seen.add(role)
                        nxt.append(role)
            if not nxt:
                break
            nxt.sort()
            out.extend(nxt)
            frontier = nxt
        roles = self.roles[user] = tuple(out)
        return roles
