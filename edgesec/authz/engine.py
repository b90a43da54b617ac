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

The pieces: :mod:`edgesec.authz.casbin_model` (which models are in the family; loading with load-time
checks), :mod:`edgesec.authz.patterns` (casbin's pattern regexes, literal prefixes),
:mod:`edgesec.authz.ruleindex` (the index structures and role resolution); this module builds the index
and makes the decision.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import casbin
from casbin.model import Model
from casbin.persist.adapters import FileAdapter

from edgesec.authz.casbin_model import (
    ModelFamily,
    check_sizes,
    load_model,
    load_policy_into,
    model_family,
    role_names,
)
from edgesec.authz.patterns import PatternCompiler, equal_to, key_match2_body, key_match5_body, literal_prefix
from edgesec.authz.ruleindex import Bound, Rule, RuleSet, Tenant
from edgesec.errors import InputError, OperationFailed

log = logging.getLogger("edgesec.authz.engine")
#: Decisions kept per loaded policy; at ~300 bytes each the cache stays under ~20 MB.
DEFAULT_CACHE_SIZE: Final = 65_536

# Effect codes of a rule (casbin's ``p.eft`` column).
_ALLOW: Final = 1
_DENY: Final = 2
_OTHER: Final = 0  # an eft casbin neither allows nor denies with (it counts as "matched" for explain)


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
        self._family: ModelFamily | None = None
        self._tenants: dict[str, Tenant] = {}
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
        model = load_model(self.model_path)
        family, why = model_family(model)
        if family is None:
            self._load_fallback(model, why)
            self.role_names = role_names(model)
            return self
        load_policy_into(model, self.policy_path)
        check_sizes(model, self.policy_path)
        self._family = family
        self._build(model, family)
        self.role_names = role_names(model)
        self.indexed = True
        self.note = (
            f"indexed: RBAC with domains, {family.obj_kind} paths, {family.act_kind} methods, "
            f"{'allow-and-deny' if family.deny_wins else 'allow-override'} effect"
        )
        return self

    def _build(self, model: Model, family: ModelFamily) -> None:
        compiler = PatternCompiler(str(self.policy_path))
        policy = model.model["p"]["p"].policy
        self.rule_count = len(policy)
        act_fns: dict[str, Callable[[str], bool]] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for index, line in enumerate(policy):
            groups.setdefault((line[1], line[0]), []).append(index)
        # Tenants often hold the same rules (every branch runs the same apps): a (tenant, subject) whose
        # rules, in order and without the tenant, equal another's shares its rule set. Decisions then
        # read the same few structures whatever the tenant (they stay in the CPU caches), and memory
        # grows with the distinct rule sets only. Each tenant keeps its own policy positions (Bound),
        # which casbin's effect and explain depend on.
        shared: dict[tuple[tuple[str, ...], ...], RuleSet] = {}
        shared_denies: dict[tuple[tuple[str, ...], ...], RuleSet] = {}
        tenants: dict[str, Tenant] = {}
        for (dom, sub), indices in groups.items():
            rows = tuple((policy[i][0], *policy[i][2:]) for i in indices)
            ruleset = shared.get(rows)
            if ruleset is None:
                ruleset = shared[rows] = self._ruleset(rows, indices, family, compiler, act_fns)
            tenant = tenants.get(dom)
            if tenant is None:
                tenant = tenants[dom] = Tenant()
            tenant.rules[sub] = Bound(ruleset, tuple(indices))
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
                    tenant.denies[sub] = Bound(deny_set, tuple(deny_indices))
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
                tenant = tenants[dom] = Tenant()
            tenant.graph = {u: tuple(rs) for u, rs in users.items()}
        self._tenants = tenants

    @staticmethod
    def _ruleset(
        rows: tuple[tuple[str, ...], ...],
        indices: list[int],
        family: ModelFamily,
        compiler: PatternCompiler,
        act_fns: dict[str, Callable[[str], bool]],
    ) -> RuleSet:
        """Index the rules of one subject in one tenant (``rows``: the lines without the tenant)."""
        ruleset = RuleSet(family.obj_kind != "equal")
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
                    act_fn = equal_to(act)
                act_fns[act] = act_fn
            if kind == "equal":
                ruleset.add_exact(obj, Rule(k, None, 0, act_fn, eft, row))
                continue
            if kind == "regexMatch":
                # re.match: anchored at the start (a leading "^" changes nothing), not at the end.
                full: str | None = obj
                body, tail = obj[1:] if obj.startswith("^") else obj, ""
            else:
                body = key_match2_body(obj) if kind == "keyMatch2" else key_match5_body(obj)
                full, tail = None, "$"  # "^" + body + "$", built only when it is needed
            prefix, whole = literal_prefix(body)
            if whole and tail:
                # "^literal$": a dictionary lookup (the "$"-before-newline case is handled there).
                key = obj if prefix == obj else prefix  # keep one copy of the string
                ruleset.add_exact(key, Rule(k, None, 0, act_fn, eft, row))
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
            ruleset.add_prefixed(prefix, Rule(k, fn, len(prefix), act_fn, eft, row))
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
        load_policy_into(model, self.policy_path)
        check_sizes(model, self.policy_path)
        # The policy was read above only to report a broken file in one line; casbin now loads it its
        # own way (sorting by priority, building role links) into a fresh copy of the model.
        try:
            enforcer = casbin.Enforcer(load_model(self.model_path), FileAdapter(str(self.policy_path)))
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
        first: tuple[int, Rule] | None = None
        found: list[Rule] = []
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
        matched: list[tuple[int, Rule]] = []
        found: list[Rule] = []
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


def _all_rules(ruleset: RuleSet) -> Iterable[Rule]:
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


def _line(rule: Rule, tenant: str) -> tuple[str, ...]:
    """The policy line of ``rule`` in ``tenant`` (rule sets keep their lines without the tenant)."""
    row = rule.line
    return (row[0], tenant, *row[1:])


def _effect(
    matched: list[tuple[int, Rule]], roles: tuple[str, ...], deny_wins: bool, tenant: str
) -> Decision:
    """casbin's effector and ``enforce_ex`` explain over the rules that matched, by policy position."""
    if deny_wins:
        # The scan stops at the first deny in policy order, which is then the explained rule; without a
        # deny it runs to the end and explains the last rule that matched.
        first_deny: tuple[int, Rule] | None = None
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
    first_allow: tuple[int, Rule] | None = None
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
