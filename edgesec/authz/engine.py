"""The authorization decision engine: casbin's answers without scanning the policy.

pycasbin's ``enforce`` evaluates the matcher against every policy line, so a decision costs time in
proportion to the policy (tens of milliseconds at 10,000 rules). For the model family edgesec ships --
RBAC with domains, a keyMatch2/keyMatch5/regexMatch/equality object matcher, a regexMatch/equality
action matcher, allow and deny effects -- :class:`PolicyEngine` indexes the rules once, when the policy is
loaded:

* by tenant and subject: a request only looks at the rules of the tenant whose subject the user holds
  there (the user itself and its roles, resolved exactly as casbin's domain role manager does, at most
  9 hops);
* by path: literal patterns sit in a dictionary; every other pattern is filed under its literal prefix
  (the characters its regular expression must start with), split into a directory (up to the last
  "/") and a tail. A request looks up only the directories its own path passes through -- one
  dictionary lookup per "/" -- and tries only the patterns whose whole literal prefix it starts with,
  running just the rest of their regex from there. One role holding 10,000 path rules stays fast;
* tenants holding the same rules (in the same order) share one index of them, each tenant keeping its
  own policy positions: the structures a decision reads stay few and in the CPU caches however many
  tenants there are, and memory grows with the distinct rule sets;
* decisions are cached (bounded); the cache belongs to one loaded policy, so a reload, which builds a
  new engine and swaps the reference, can never serve an answer from the old policy.

The semantics are casbin's, exactly, including its surprises (REFERENCE.md): the pattern regexes are
built by the same transformation casbin applies (dots are not escaped, ``/public/*`` matches
``/public/../admin``), ``regexMatch`` is ``re.match`` (anchored at the start only), ``$`` also matches
before a final newline, and the matched rule reported is the one casbin's ``enforce_ex`` explains.
Canonicalising the request belongs to the caller. One deliberate difference: a policy that casbin would
load but then fail on when a request reaches a bad line (an invalid regular expression, a rule with
the wrong number of fields) is refused when it is loaded, with a one-line :class:`InputError`.

Any other model a site brings is run by the plain ``casbin.Enforcer``: ``indexed`` is False and
``note`` says why, for ``/readyz`` and the logs.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import casbin
from casbin.effect import AllowAndDenyEffector, AllowOverrideEffector, get_effector
from casbin.model import Model
from casbin.persist.adapter import load_policy_line
from casbin.persist.adapters import FileAdapter
from casbin.util.builtin_operators import KEY_MATCH5_PATTERN

from edgesec._fs import read_input_file
from edgesec.errors import InputError, OperationFailed

log = logging.getLogger("edgesec.authz.engine")

#: casbin's default role manager follows at most this many role-to-role hops (its level 10 counts the
#: user itself), so a longer chain silently grants nothing; we follow the same bound.
MAX_ROLE_HOPS: Final = 9

#: Decisions kept per loaded policy; at ~300 bytes each the cache stays under ~20 MB.
DEFAULT_CACHE_SIZE: Final = 65_536

_SMALL_DIR: Final = 4  # tails per directory compared in place rather than looked up by length
# Parentheses that are balanced, not nested and hold no comma ("(GET|POST)"): casbin's tokenizer then
# splits at every comma, like the fast path.
_FLAT_BRACKETS: Final = re.compile(r"[^()\[\],]*(?:,[^()\[\],]*|\([^()\[\],]*\))*")
_KM2_PARAM: Final = re.compile(r":[^/]+")
_META_RE: Final = re.compile(r"[.^$*+?{}\[\]\\|()]")
_QUANTIFIERS: Final = frozenset("*+?{")

# Effect codes of a rule (casbin's ``p.eft`` column).
_ALLOW: Final = 1
_DENY: Final = 2
_OTHER: Final = 0  # an eft casbin neither allows nor denies with (it counts as "matched" for explain)

# Object matchers of the supported family: matcher term (whitespace removed) -> pattern kind.
_OBJ_TERMS: Final = {
    "keyMatch2(r_obj,p_obj)": "keyMatch2",
    "keyMatch5(r_obj,p_obj)": "keyMatch5",
    "regexMatch(r_obj,p_obj)": "regexMatch",
    "r_obj==p_obj": "equal",
    "p_obj==r_obj": "equal",
}
_ACT_TERMS: Final = {
    "regexMatch(r_act,p_act)": "regexMatch",
    "r_act==p_act": "equal",
    "p_act==r_act": "equal",
}
_G_TERM: Final = "g(r_sub,p_sub,r_dom)"
_DOM_TERMS: Final = frozenset({"r_dom==p_dom", "p_dom==r_dom"})


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request.

    ``allowed``: the policy lets the user do this. ``rule``: the policy line casbin's ``enforce_ex``
    names for the answer (the deny rule that decided, or the allow rule that applied), None when no
    rule applied. ``roles``: the user's roles in the tenant (without the user itself). ``effect``:
    ``"allow"``, ``"deny"`` (an explicit deny rule applied) or ``"default-deny"`` (no allow rule applied).
    """

    allowed: bool
    rule: tuple[str, ...] | None
    roles: tuple[str, ...]
    effect: str


_NOTHING: Final = Decision(False, None, (), "default-deny")


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int  # position in its rule set; the tenant's _Bound maps it to the position in the policy
    obj_match: Callable[[str, int], Any] | None  # None: the exact-literal dictionary already matched
    start: int  # where obj_match starts: the length of the literal prefix the bucket matched
    act_match: Callable[[str], bool]
    eft: int
    line: tuple[str, ...]  # the policy line without its tenant (rule sets are shared by tenants)


class _Bound:
    """One tenant's use of a (possibly shared) rule set: where its rules stand in the policy."""

    __slots__ = ("indices", "ruleset")

    def __init__(self, ruleset: _RuleSet, indices: tuple[int, ...]) -> None:
        self.ruleset = ruleset
        self.indices = indices  # policy position of the rule set's rule k


class _Dir:
    """Rules whose literal prefix is ``<this directory>/<tail>``, by tail (tails hold no "/")."""

    __slots__ = ("lengths", "small", "tails")

    def __init__(self) -> None:
        self.tails: dict[str, tuple[_Rule, ...]] = {}
        self.lengths: tuple[int, ...] = ()
        # A few tails: compared in place (fewer objects touched than one lookup per tail length, and
        # no dictionary kept).
        self.small: tuple[tuple[str, tuple[_Rule, ...]], ...] | None = None


class _RuleSet:
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
        self.exact: dict[str, tuple[_Rule, ...]] = {}
        self.dirs: dict[str, _Dir] = {}

    def add_prefixed(self, prefix: str, rule: _Rule) -> None:
        cut = prefix.rfind("/") + 1
        d = self.dirs.get(prefix[:cut])
        if d is None:
            d = self.dirs[prefix[:cut]] = _Dir()
        tails, tail = d.tails, prefix[cut:]
        tails[tail] = (*tails.get(tail, ()), rule)

    def add_exact(self, key: str, rule: _Rule) -> None:
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

    def collect(self, obj: str, act: str, out: list[_Rule]) -> None:
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


_NO_VIEW: Final[tuple[tuple[str, ...], tuple[_Bound, ...]]] = ((), ())


class _Tenant:
    """Everything one tenant's decisions read: its role graph and its rules by subject."""

    __slots__ = ("denies", "deny_views", "graph", "roles", "rules", "views")

    def __init__(self) -> None:
        self.graph: dict[str, tuple[str, ...]] = {}
        self.rules: dict[str, _Bound] = {}
        # The explicit deny rules alone, by subject (only subjects that have any), and per user the
        # deny rule sets of the user and its roles: what :meth:`PolicyEngine.denies` reads.
        self.denies: dict[str, _Bound] = {}
        self.deny_views: dict[str, tuple[_Bound, ...]] = {}
        # Role closures of the names in ``graph``, filled on first use; bounded by the policy's size
        # because a name outside the graph has no roles and is never stored.
        self.roles: dict[str, tuple[str, ...]] = {}
        # Per user: (roles, the rule sets of the user and its roles) -- one lookup per decision instead
        # of one per subject. Stored only for names the policy knows (same bound as above).
        self.views: dict[str, tuple[tuple[str, ...], tuple[_Bound, ...]]] = {}

    def view(self, user: str) -> tuple[tuple[str, ...], tuple[_Bound, ...]]:
        view = self.views.get(user)
        if view is not None:
            return view
        if user not in self.graph and user not in self.rules:
            return _NO_VIEW
        roles = self.roles_of(user)
        rules = self.rules
        bounds = tuple(b for b in (rules.get(s) for s in (user, *roles)) if b is not None)
        view = self.views[user] = (roles, bounds)
        return view

    def deny_view(self, user: str) -> tuple[_Bound, ...]:
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


def _literal_prefix(regex: str) -> tuple[str, bool]:
    """The characters every match of ``regex`` (used with ``re.match``, no flags) must start with.

    Returns ``(prefix, whole)``; ``whole`` is True when the regex is nothing but that literal. The
    scan is deliberately conservative: alternation or inline flags anywhere give no prefix at all,
    and a literal followed by a quantifier is not part of it.
    """
    if "|" in regex or "(?" in regex:
        return "", False
    meta = _META_RE.search(regex)
    if meta is None:
        return regex, True
    end = meta.start()
    if regex[end] in _QUANTIFIERS and end:
        end -= 1
    return regex[:end], False


def _key_match2_body(pattern: str) -> str:
    """casbin's key_match2 regex for ``pattern`` without its "^" and "$" (the same steps, the same text)."""
    key2 = pattern.replace("/*", "/.*")
    if ":" in key2:
        # casbin substitutes r"(.*?):[^\/]+(.*?)" by r"\g<1>[^\/]+\g<2>": the lazy groups keep the text
        # around each ":name" run as it is, so this is ":" plus the run of non-"/" characters replaced
        # (a policy field holds no newline, the one character the lazy ".*?" would not cross). A test
        # compares the two on random patterns.
        key2 = _KM2_PARAM.sub(_km2_repl, key2)
    if key2 == "*":
        key2 = "(.*)"
    return key2


def _key_match2_regex(pattern: str) -> str:
    return "^" + _key_match2_body(pattern) + "$"


def _km2_repl(_m: re.Match[str]) -> str:
    return "[^\\/]+"


def _key_match5_body(pattern: str) -> str:
    """casbin's key_match5 regex without "^" and "$" (the caller cuts the request's query string off)."""
    key2 = pattern.replace("/*", "/.*")
    if "{" in key2:
        key2 = str(KEY_MATCH5_PATTERN.sub(_km5_repl, key2, 0))
    return key2


def _key_match5_regex(pattern: str) -> str:
    return "^" + _key_match5_body(pattern) + "$"


def _km5_repl(_m: re.Match[str]) -> str:
    return "[^/]+"


class _Compiler:
    """Compiles each distinct regular expression once per load (policies repeat patterns a lot)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._cache: dict[str, Callable[..., Any]] = {}

    def matcher(self, regex: str, lineno: int, column: str) -> Callable[..., Any]:
        fn = self._cache.get(regex)
        if fn is None:
            try:
                # casbin compiles the same pattern at request time, where a FutureWarning ("possible
                # nested set") is just printed; it must not turn into a load failure here.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    fn = re.compile(regex).match
            except (re.error, OverflowError, RecursionError) as exc:
                raise InputError(
                    f"{self.source}: p rule {lineno}: {column} is not a valid regular expression "
                    f"as casbin uses it ({regex!r}: {exc})"
                ) from None
            self._cache[regex] = fn
        return fn


def _equal_to(value: str) -> Callable[[str], bool]:
    return value.__eq__


def _split_conjuncts(matcher: str) -> list[str] | None:
    """Split a matcher on top-level ``&&``; None if it uses ``||``, ``!`` or anything else at top level."""
    if "||" in matcher:
        return None
    terms: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(matcher):
        ch = matcher[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and matcher.startswith("&&", i):
            terms.append(matcher[start:i])
            start = i + 2
            i += 1
        i += 1
    terms.append(matcher[start:])
    return ["".join(t.split()) for t in terms]


@dataclass(frozen=True)
class _Family:
    obj_kind: str
    act_kind: str
    has_eft: bool
    deny_wins: bool  # allow-and-deny effect; otherwise allow-override


def _family(model: Model) -> tuple[_Family | None, str]:
    """Whether ``model`` is in the family the index reproduces, and if not, why."""
    m = model.model
    if set(m) != {"r", "p", "g", "e", "m"}:
        return None, f"model sections {sorted(m)} are not r, p, g, e, m"
    if set(m["r"]) != {"r"} or set(m["p"]) != {"p"} or set(m["g"]) != {"g"}:
        return None, "model defines more than one request, policy or role type"
    if set(m["e"]) != {"e"} or set(m["m"]) != {"m"}:
        return None, "model defines more than one effect or matcher"
    if m["r"]["r"].tokens != ["r_sub", "r_dom", "r_obj", "r_act"]:
        return None, "request is not (sub, dom, obj, act)"
    p_tokens = m["p"]["p"].tokens
    if p_tokens not in (
        ["p_sub", "p_dom", "p_obj", "p_act", "p_eft"],
        ["p_sub", "p_dom", "p_obj", "p_act"],
    ):
        return None, "policy is not (sub, dom, obj, act[, eft])"
    g = m["g"]["g"]
    if g.value.count("_") != 3 or len(g.tokens) != 3 or g.params_tokens:
        return None, "role definition is not g = _, _, _"
    try:
        effector = get_effector(m["e"]["e"].value)
    except RuntimeError:
        return None, "unsupported policy effect"
    if type(effector) is AllowAndDenyEffector:
        deny_wins = True
    elif type(effector) is AllowOverrideEffector:
        deny_wins = False
    else:
        return None, "policy effect is neither allow-and-deny nor allow-override"
    terms = _split_conjuncts(m["m"]["m"].value)
    if terms is None or len(terms) != 4:
        return None, "matcher is not four terms joined by &&"
    rest = list(terms)
    if _G_TERM not in rest:
        return None, "matcher lacks g(r.sub, p.sub, r.dom)"
    rest.remove(_G_TERM)
    dom = [t for t in rest if t in _DOM_TERMS]
    obj = [t for t in rest if t in _OBJ_TERMS]
    act = [t for t in rest if t in _ACT_TERMS]
    if len(dom) != 1 or len(obj) != 1 or len(act) != 1:
        return None, "matcher terms are not r.dom == p.dom, a supported path matcher and a method matcher"
    return _Family(_OBJ_TERMS[obj[0]], _ACT_TERMS[act[0]], len(p_tokens) == 5, deny_wins), ""


def _role_names(model: Model) -> frozenset[str]:
    """The second field of every grouping line of every ``g`` section: the names used as roles."""
    return frozenset(line[1] for g in model.model.get("g", {}).values() for line in g.policy if len(line) > 1)


def _load_model(model_path: Path) -> Model:
    raw = read_input_file(model_path, what="casbin model")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"casbin model is not UTF-8 text: {model_path}") from None
    model = Model()
    try:
        model.load_model_from_text(text)
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise InputError(f"casbin model {model_path} cannot be parsed: {exc}") from None
    for sec in ("r", "p", "e", "m"):
        if sec not in model.model:
            raise InputError(f"casbin model {model_path} has no [{_SECTION_NAMES[sec]}] section")
    return model


_SECTION_NAMES: Final = {
    "r": "request_definition",
    "p": "policy_definition",
    "e": "policy_effect",
    "m": "matchers",
}


def _load_policy_into(model: Model, policy_path: Path) -> None:
    """Read the CSV policy into ``model`` exactly as casbin's file adapter does, with one-line errors."""
    raw = read_input_file(policy_path, what="casbin policy")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"casbin policy is not UTF-8 text: {policy_path}") from None
    # casbin reads the file line by line on b"\n" and strips each line; splitting the decoded text on
    # "\n" gives the same lines (a "\n" byte never occurs inside a UTF-8 sequence).
    sections = model.model
    memo: dict[str, str] = {}
    for lineno, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line or line[0] == "#":
            continue
        try:
            if ("(" in line or "[" in line or ")" in line or "]" in line) and not _FLAT_BRACKETS.fullmatch(
                line
            ):
                load_policy_line(line, model)  # casbin's tokenizer keeps "(a, b)" in one field
                continue
            # Without brackets casbin's tokenizer is a split on "," with each field stripped. Fields
            # repeat a lot (roles, tenants, methods, effects): one string object per distinct value.
            tokens = [memo.setdefault(t, t) for t in (f.strip() for f in line.split(","))]
            key = tokens[0]
            sec = sections.get(key[0])
            if sec is not None and key in sec:
                sec[key].policy.append(tokens[1:])
        except IndexError:
            raise InputError(
                f"{policy_path}:{lineno}: malformed policy line (unbalanced brackets or no type)",
                hint=line[:120],
            ) from None


def _check_sizes(model: Model, policy_path: Path) -> None:
    p = model.model["p"]["p"]
    want = len(p.tokens)
    for rule in p.policy:
        if len(rule) != want:
            raise InputError(
                f"{policy_path}: policy rule {', '.join(rule)!r} has {len(rule)} fields, the model wants {want}"
            )
    if "g" in model.model:
        for key, g in model.model["g"].items():
            need = g.value.count("_")
            for rule in g.policy:
                if len(rule) < need:
                    raise InputError(
                        f"{policy_path}: role rule {key}, {', '.join(rule)!r} has {len(rule)} fields, "
                        f"the model wants {need}"
                    )


class PolicyEngine:
    """One loaded casbin model and policy; immutable apart from its caches.

    Build with :meth:`load`; reload by loading a new engine and swapping the reference (the old one keeps
    answering until then, and its cache dies with it). ``decide`` is safe to call from several threads.
    """

    def __init__(self) -> None:  # use PolicyEngine.load
        self.model_path: Path = Path()
        self.policy_path: Path = Path()
        self.rule_count: int = 0
        self.ruleset_count: int = 0  # distinct (shared) rule sets in indexed mode
        self.role_link_count: int = 0
        # Every name some g line grants as a role (any tenant): no identity may be one of these.
        self.role_names: frozenset[str] = frozenset()
        self.indexed: bool = False
        self.note: str = ""
        self.cache_hits: int = 0
        self.cache_misses: int = 0
        self._cache_size = DEFAULT_CACHE_SIZE
        self._cache: dict[tuple[str, str, str, str], Decision] = {}
        # indexed mode
        self._family: _Family | None = None
        self._tenants: dict[str, _Tenant] = {}
        # fallback mode
        self._enforcer: casbin.Enforcer | None = None
        self._r_tokens: tuple[str, ...] = ()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, model_path: str | Path, policy_path: str | Path, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> PolicyEngine:
        """Load and index a model and its CSV policy; :class:`InputError` (one line) if either is broken."""
        self = cls()
        self.model_path = Path(model_path)
        self.policy_path = Path(policy_path)
        self._cache_size = max(0, cache_size)
        model = _load_model(self.model_path)
        family, why = _family(model)
        if family is None:
            self._load_fallback(model, why)
            self.role_names = _role_names(model)
            return self
        _load_policy_into(model, self.policy_path)
        _check_sizes(model, self.policy_path)
        self._family = family
        self._build(model, family)
        self.role_names = _role_names(model)
        self.indexed = True
        self.note = (
            f"indexed: RBAC with domains, {family.obj_kind} paths, {family.act_kind} methods, "
            f"{'allow-and-deny' if family.deny_wins else 'allow-override'} effect"
        )
        return self

    def _build(self, model: Model, family: _Family) -> None:
        compiler = _Compiler(str(self.policy_path))
        policy = model.model["p"]["p"].policy
        self.rule_count = len(policy)
        act_fns: dict[str, Callable[[str], bool]] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for index, line in enumerate(policy):
            groups.setdefault((line[1], line[0]), []).append(index)
        # Tenants often hold the same rules (every branch runs the same apps): a (tenant, subject) whose
        # rules, in order and without the tenant, equal another's shares its rule set. Decisions then
        # read the same few structures whatever the tenant (they stay in the CPU caches), and memory
        # grows with the distinct rule sets only. Each tenant keeps its own policy positions (_Bound),
        # which casbin's effect and explain depend on.
        shared: dict[tuple[tuple[str, ...], ...], _RuleSet] = {}
        shared_denies: dict[tuple[tuple[str, ...], ...], _RuleSet] = {}
        tenants: dict[str, _Tenant] = {}
        for (dom, sub), indices in groups.items():
            rows = tuple((policy[i][0], *policy[i][2:]) for i in indices)
            ruleset = shared.get(rows)
            if ruleset is None:
                ruleset = shared[rows] = self._ruleset(rows, indices, family, compiler, act_fns)
            tenant = tenants.get(dom)
            if tenant is None:
                tenant = tenants[dom] = _Tenant()
            tenant.rules[sub] = _Bound(ruleset, tuple(indices))
            if family.has_eft:
                # A second, small index of the deny rules alone: asking "does an explicit deny apply
                # to this other spelling of the path?" then reads a handful of rules, not all of them.
                deny_at = [k for k, row in enumerate(rows) if row[3] == "deny"]
                if deny_at:
                    deny_rows = tuple(rows[k] for k in deny_at)
                    deny_indices = [indices[k] for k in deny_at]
                    deny_set = shared_denies.get(deny_rows)
                    if deny_set is None:
                        deny_set = shared_denies[deny_rows] = self._ruleset(
                            deny_rows, deny_indices, family, compiler, act_fns
                        )
                    tenant.denies[sub] = _Bound(deny_set, tuple(deny_indices))
        self.ruleset_count = len(shared)
        links: dict[str, dict[str, list[str]]] = {}
        count = 0
        for g_line in model.model["g"]["g"].policy:
            user, role, dom = g_line[0], g_line[1], g_line[2]
            targets = links.setdefault(dom, {}).setdefault(user, [])
            if role not in targets:
                targets.append(role)
            count += 1
        self.role_link_count = count
        for dom, users in links.items():
            tenant = tenants.get(dom)
            if tenant is None:
                tenant = tenants[dom] = _Tenant()
            tenant.graph = {u: tuple(rs) for u, rs in users.items()}
        self._tenants = tenants

    @staticmethod
    def _ruleset(
        rows: tuple[tuple[str, ...], ...],
        indices: list[int],
        family: _Family,
        compiler: _Compiler,
        act_fns: dict[str, Callable[[str], bool]],
    ) -> _RuleSet:
        """Index the rules of one subject in one tenant (``rows``: the lines without the tenant)."""
        ruleset = _RuleSet(family.obj_kind != "equal")
        kind = family.obj_kind
        for k, row in enumerate(rows):
            lineno = indices[k] + 1  # for error messages: the p rule's number in the policy
            obj, act = row[1], row[2]
            if family.has_eft:
                eft = _ALLOW if row[3] == "allow" else _DENY if row[3] == "deny" else _OTHER
            else:
                eft = _ALLOW
            act_fn = act_fns.get(act)
            if act_fn is None:
                if family.act_kind == "regexMatch":
                    act_fn = _truthy(compiler.matcher(act, lineno, "the method pattern"))
                else:
                    act_fn = _equal_to(act)
                act_fns[act] = act_fn
            if kind == "equal":
                ruleset.add_exact(obj, _Rule(k, None, 0, act_fn, eft, row))
                continue
            if kind == "regexMatch":
                # re.match: anchored at the start (a leading "^" changes nothing), not at the end.
                full: str | None = obj
                body, tail = obj[1:] if obj.startswith("^") else obj, ""
            else:
                body = _key_match2_body(obj) if kind == "keyMatch2" else _key_match5_body(obj)
                full, tail = None, "$"  # "^" + body + "$", built only when it is needed
            prefix, whole = _literal_prefix(body)
            if whole and tail:
                # "^literal$": a dictionary lookup (the "$"-before-newline case is handled there).
                key = obj if prefix == obj else prefix  # keep one copy of the string
                ruleset.add_exact(key, _Rule(k, None, 0, act_fn, eft, row))
                continue
            if prefix:
                # The bucket lookup has already matched the literal prefix character for character, so
                # only the rest of the regex runs, from where the prefix ends. match(s, pos) keeps "^",
                # "\b" and lookbehind seeing the real string, so this is the same test as the full
                # regex; and the rests repeat ("[^\/]+$", ".*$"), so one compile serves many rules.
                # Validity is the same too: the prefix is plain characters, without groups or flags.
                fn = compiler.matcher(body[len(prefix) :] + tail, lineno, "the path pattern")
            else:
                fn = compiler.matcher("^" + body + tail if full is None else full, lineno, "the path pattern")
            ruleset.add_prefixed(prefix, _Rule(k, fn, len(prefix), act_fn, eft, row))
        ruleset.seal()
        return ruleset

    def _load_fallback(self, model: Model, why: str) -> None:
        r_tokens = tuple(t.removeprefix("r_") for t in model.model["r"]["r"].tokens)
        unknown = [t for t in r_tokens if t not in ("sub", "dom", "obj", "act")]
        if unknown:
            raise InputError(
                f"casbin model {self.model_path}: request field(s) {', '.join(unknown)} unknown; "
                "edgesec passes sub, dom, obj and act"
            )
        _load_policy_into(model, self.policy_path)
        _check_sizes(model, self.policy_path)
        # The policy was read above only to report a broken file in one line; casbin now loads it its
        # own way (sorting by priority, building role links) into a fresh copy of the model.
        try:
            enforcer = casbin.Enforcer(_load_model(self.model_path), FileAdapter(str(self.policy_path)))
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise InputError(f"casbin model {self.model_path} cannot be used: {exc}") from None
        # A matcher casbin cannot evaluate (an undefined function, say) would otherwise fail only at the
        # first request, as a denial of every request: evaluate it once now, so the policy does not load.
        # Requests made of each rule's own values (a default one too) get past the "and"s before it.
        p_tokens = [t.removeprefix("p_") for t in model.model["p"]["p"].tokens]
        probes = [{"sub": "edgesec-probe", "dom": "edgesec-probe", "obj": "/", "act": "GET"}]
        for line in model.model["p"]["p"].policy[:64]:
            values = dict(zip(p_tokens, line, strict=False))
            probes.append({t: values.get(t, probes[0][t]) for t in ("sub", "dom", "obj", "act")})
        try:
            for probe in probes:
                enforcer.enforce(*(probe[t] for t in r_tokens))
        except Exception as exc:  # noqa: BLE001 -- whatever the expression evaluator raises is the model's fault
            raise InputError(
                f"casbin model {self.model_path}: its matcher cannot be evaluated: {' '.join(str(exc).split())[:300]}"
            ) from None
        self._enforcer = enforcer
        self._r_tokens = r_tokens
        self.rule_count = len(model.model["p"]["p"].policy)
        self.role_link_count = sum(len(g.policy) for g in model.model.get("g", {}).values())
        self.indexed = False
        self.note = f"plain casbin enforcer (every decision scans the policy): {why}"
        log.warning("authz policy %s is not indexed: %s", self.policy_path, self.note)

    # ------------------------------------------------------------------ roles

    def roles_for(self, user: str, tenant: str) -> tuple[str, ...]:
        """The roles ``user`` holds in ``tenant``, directly or through roles (casbin's 9-hop bound)."""
        if self._enforcer is not None:
            return self._fallback_roles(user, tenant)
        t = self._tenants.get(tenant)
        return () if t is None else t.roles_of(user)

    def _fallback_roles(self, user: str, tenant: str) -> tuple[str, ...]:
        assert self._enforcer is not None
        if "g" not in self._enforcer.model.model:
            return ()
        with self._lock:
            try:
                if "dom" in self._r_tokens:
                    roles = self._enforcer.get_implicit_roles_for_user(user, tenant)
                else:
                    roles = self._enforcer.get_implicit_roles_for_user(user)
            except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as exc:
                raise OperationFailed(f"casbin could not list the roles of {user!r}: {exc}") from None
        return tuple(sorted(set(roles) - {user}))

    # ------------------------------------------------------------------ decisions

    def decide(self, user: str, tenant: str, path: str, method: str) -> Decision:
        """casbin's decision for (user, tenant, path, method); the path must already be canonical."""
        key = (user, tenant, path, method)
        hit = self._cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            return hit
        self.cache_misses += 1
        if self._enforcer is not None:
            decision = self._decide_fallback(user, tenant, path, method)
        else:
            decision = self._decide_indexed(user, tenant, path, method)
        if self._cache_size:
            cache = self._cache
            if len(cache) >= self._cache_size:
                # Full: start over. A flood of distinct requests cannot grow the cache, and refilling
                # costs a few microseconds a request. (Evicting the oldest entry one by one is not
                # cheaper: a dict's iterator walks over every deleted slot until the next resize.)
                cache.clear()
            cache[key] = decision
        return decision

    def denies(self, user: str, tenant: str, path: str, method: str) -> Decision | None:
        """The decision for the request if it is an explicit deny (``effect == "deny"``), else ``None``.

        Exactly ``d if (d := decide(...)).effect == "deny" else None``, but with the allow-and-deny
        effect it reads only the deny rules (its own index), so checking other spellings of an allowed
        path costs little however many allow rules the user holds. Not cached.
        """
        family = self._family
        if self._enforcer is not None or family is None:
            d = self.decide(user, tenant, path, method)
            return d if d.effect == "deny" else None
        t = self._tenants.get(tenant)
        if t is None:
            return None
        bounds = t.deny_view(user)
        if not bounds:
            return None  # no deny rule applies to this user in this tenant, whatever the path
        obj = path
        if family.obj_kind == "keyMatch5":
            q = obj.find("?")
            if q != -1:
                obj = obj[:q]
        first: tuple[int, _Rule] | None = None
        found: list[_Rule] = []
        for bound in bounds:
            bound.ruleset.collect(obj, method, found)
            if found:
                indices = bound.indices
                for rule in found:
                    index = indices[rule.index]
                    if first is None or index < first[0]:
                        first = (index, rule)
                found.clear()
        if first is None:
            return None
        if not family.deny_wins:
            # allow-override: a matching allow rule still wins; the full decision says which.
            d = self.decide(user, tenant, path, method)
            return d if d.effect == "deny" else None
        # deny-wins: casbin's scan stops at the first deny in policy order, the explained rule.
        return Decision(False, _line(first[1], tenant), t.view(user)[0], "deny")

    def _decide_indexed(self, user: str, tenant: str, path: str, method: str) -> Decision:
        family = self._family
        assert family is not None
        t = self._tenants.get(tenant)
        if t is None:
            return _NOTHING
        roles, bounds = t.view(user)
        obj = path
        if family.obj_kind == "keyMatch5":
            q = obj.find("?")
            if q != -1:
                obj = obj[:q]
        matched: list[tuple[int, _Rule]] = []
        found: list[_Rule] = []
        for bound in bounds:
            bound.ruleset.collect(obj, method, found)
            if found:
                indices = bound.indices
                matched.extend((indices[rule.index], rule) for rule in found)
                found.clear()
        if not matched:
            return Decision(False, None, roles, "default-deny")
        return _effect(matched, roles, family.deny_wins, tenant)

    def _decide_fallback(self, user: str, tenant: str, path: str, method: str) -> Decision:
        assert self._enforcer is not None
        values = {"sub": user, "dom": tenant, "obj": path, "act": method}
        rvals = [values[t] for t in self._r_tokens]
        # casbin's role managers mutate themselves while answering: one decision at a time.
        with self._lock:
            try:
                allowed, explain = self._enforcer.enforce_ex(*rvals)
            except (re.error, RuntimeError, ValueError, KeyError, IndexError, TypeError, NameError) as exc:
                raise OperationFailed(f"casbin could not evaluate the policy: {exc}") from None
        rule = tuple(explain) if explain else None
        roles = self._fallback_roles(user, tenant)
        if allowed:
            effect = "allow"
        elif rule is not None and "deny" in rule[-1:]:
            effect = "deny"
        else:
            effect = "default-deny"
        return Decision(bool(allowed), rule, roles, effect)

    # ------------------------------------------------------------------ introspection

    def rules_for_tenant(self, tenant: str) -> list[tuple[str, ...]]:
        """The policy lines of ``tenant`` (indexed mode), in policy order."""
        t = self._tenants.get(tenant)
        if t is None:
            return []
        found = [(b.indices[r.index], r) for b in t.rules.values() for r in _all_rules(b.ruleset)]
        return [_line(r, tenant) for _i, r in sorted(found, key=lambda x: x[0])]

    def stats(self) -> dict[str, Any]:
        """Figures for ``/metrics`` and ``/readyz``."""
        return {
            "indexed": self.indexed,
            "note": self.note,
            "rules": self.rule_count,
            "rule_sets": self.ruleset_count,
            "role_links": self.role_link_count,
            "cache_entries": len(self._cache),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
        }


def _all_rules(ruleset: _RuleSet) -> Iterable[_Rule]:
    for bucket in ruleset.exact.values():
        yield from bucket
    for d in ruleset.dirs.values():
        for bucket in d.tails.values():
            yield from bucket
        for _tail, bucket in d.small or ():
            yield from bucket


def _truthy(fn: Callable[[str], Any]) -> Callable[[str], bool]:
    # A compiled pattern's ``match`` returns a Match or None; both are fine as truth values, so the
    # bound method itself is used (no wrapper call on the hot path).
    return fn


def _line(rule: _Rule, tenant: str) -> tuple[str, ...]:
    """The policy line of ``rule`` in ``tenant`` (rule sets keep their lines without the tenant)."""
    row = rule.line
    return (row[0], tenant, *row[1:])


def _effect(
    matched: list[tuple[int, _Rule]], roles: tuple[str, ...], deny_wins: bool, tenant: str
) -> Decision:
    """casbin's effector and ``enforce_ex`` explain over the rules that matched, by policy position."""
    if deny_wins:
        # The scan stops at the first deny in policy order, which is then the explained rule; without a
        # deny it runs to the end and explains the last rule that matched.
        first_deny: tuple[int, _Rule] | None = None
        last = matched[0]
        allow = False
        for item in matched:
            index, rule = item
            if rule.eft == _DENY:
                if first_deny is None or index < first_deny[0]:
                    first_deny = item
            elif rule.eft == _ALLOW:
                allow = True
            if index > last[0]:
                last = item
        if first_deny is not None:
            return Decision(False, _line(first_deny[1], tenant), roles, "deny")
        if allow:
            return Decision(True, _line(last[1], tenant), roles, "allow")
        return Decision(False, _line(last[1], tenant), roles, "default-deny")
    # allow-override: the scan stops at the first allow; without one it explains the last match.
    first_allow: tuple[int, _Rule] | None = None
    last = matched[0]
    for item in matched:
        index, rule = item
        if rule.eft == _ALLOW and (first_allow is None or index < first_allow[0]):
            first_allow = item
        if index > last[0]:
            last = item
    if first_allow is not None:
        return Decision(True, _line(first_allow[1], tenant), roles, "allow")
    effect = "deny" if any(r.eft == _DENY for _i, r in matched) else "default-deny"
    return Decision(False, _line(last[1], tenant), roles, effect)
