"""The indexed engine gives exactly plain casbin's answers on random policies of the shipped family.

Each example builds a random policy (several tenants, users, roles of roles including cycles and chains
longer than casbin's hop bound, allow/deny/other effects, wildcard, ``:id``/``{id}`` and regex path
patterns, method regexes) and random requests, some aimed at the patterns, some at casbin's known
surprises (dot segments, unescaped dots, trailing newline, query strings), and compares every field of
the decision with ``casbin.Enforcer.enforce_ex`` and the role manager's ``has_link``.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesec.authz.engine import PolicyEngine
from edgesec.authz.patterns import literal_prefix
from edgesec.authz.ruleindex import MAX_ROLE_HOPS

USERS = ["alice", "bob", "carol", "dave"]
ROLES = ["admin", "teller", "auditor", "kb", "r:x"]
TENANTS = ["branch", "clinic", "plant"]
METHOD_PATTERNS = ["GET", "POST", "GET|POST", "(GET|HEAD)", "^GET$", ".*", "P.*", "GE", "DELETE", "PUT|PATCH"]
METHODS = ["GET", "POST", "HEAD", "DELETE", "PUT", "GETX", "get", "PATCH", "", "GET\n"]
SEGMENTS = ["a", "b", "api", "a.b", "aXb", "1", "42", "..", ".", "", "x:y", "v1", "chat-messages"]

MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = {p}

[role_definition]
g = _, _, _

[policy_effect]
e = {e}

[matchers]
m = {m}
"""
ALLOW_AND_DENY = "some(where (p.eft == allow)) && !some(where (p.eft == deny))"
ALLOW_OVERRIDE = "some(where (p.eft == allow))"

VARIANTS = {
    # name: (object matcher, action matcher, effect, has eft column, term order reversed)
    "keyMatch2": ("keyMatch2(r.obj, p.obj)", "regexMatch(r.act, p.act)", ALLOW_AND_DENY, True, False),
    "keyMatch5": ("keyMatch5(r.obj, p.obj)", "regexMatch(r.act, p.act)", ALLOW_AND_DENY, True, False),
    "regexMatch": ("regexMatch(r.obj, p.obj)", "regexMatch(r.act, p.act)", ALLOW_AND_DENY, True, True),
    "equal": ("r.obj == p.obj", "r.act == p.act", ALLOW_AND_DENY, True, False),
    "allow-override": ("keyMatch2(r.obj, p.obj)", "regexMatch(r.act, p.act)", ALLOW_OVERRIDE, True, True),
    "no-eft": ("keyMatch2(r.obj, p.obj)", "r.act == p.act", ALLOW_AND_DENY, False, False),
}


def model_text(variant: str) -> str:
    obj, act, eft, has_eft, reverse = VARIANTS[variant]
    terms = ["g(r.sub, p.sub, r.dom)", "r.dom == p.dom", obj, act]
    if reverse:
        terms.reverse()
    p = "sub, dom, obj, act, eft" if has_eft else "sub, dom, obj, act"
    return MODEL.format(p=p, e=eft, m=" && ".join(terms))


def _segment(kind: str) -> st.SearchStrategy[str]:
    plain = st.sampled_from(["a", "b", "api", "a.b", "v1", "1", "chat-messages", "..", ""])
    if kind == "keyMatch2":
        return st.one_of(plain, st.sampled_from([":id", ":task_id", "*", "v:id", "x:y"]))
    if kind == "keyMatch5":
        return st.one_of(plain, st.sampled_from(["{id}", "{task}", "*", "v{id}"]))
    if kind == "regexMatch":
        return st.one_of(
            plain, st.sampled_from([".*", "[^/]+", "a|b", "(a|b)", "a?", "\\d+", "v[0-9]", "(?:x|y)z"])
        )
    return plain


@st.composite
def path_pattern(draw: st.DrawFn, kind: str) -> str:
    if draw(st.integers(0, 12)) == 0:
        special = {
            "regexMatch": ["a*", "/*", "/", "", "^/a", "(?i)/A/.*"],
            # keyMatch5 has no special case for a bare "*" (casbin's regex would not compile).
            "keyMatch5": ["/*", "/"],
        }.get(kind, ["*", "/*", "/"])
        return draw(st.sampled_from(special))
    segs = draw(st.lists(_segment(kind), min_size=1, max_size=4))
    return "/" + "/".join(segs)


@st.composite
def policy(draw: st.DrawFn, variant: str) -> tuple[list[str], list[tuple[str, ...]]]:
    kind = VARIANTS[variant][0].split("(")[0] if "(" in VARIANTS[variant][0] else "equal"
    has_eft = VARIANTS[variant][3]
    subjects = st.sampled_from(USERS + ROLES)
    lines: list[str] = []
    rules: list[list[str]] = []
    # A small pool of patterns, so that several rules (allow and deny, several roles) hit one request
    # and policy order -- which rule casbin explains -- matters.
    pool = draw(st.lists(path_pattern(kind), min_size=1, max_size=5))
    for _ in range(draw(st.integers(1, 24))):
        fields = [
            draw(subjects),
            draw(st.sampled_from(TENANTS)),
            draw(st.one_of(st.sampled_from(pool), path_pattern(kind))),
            draw(
                st.sampled_from(["GET", "POST", "DELETE", "GET|POST"] if kind == "equal" else METHOD_PATTERNS)
            ),
        ]
        if has_eft:
            fields.append(draw(st.sampled_from(["allow", "deny", "allow", "deny", "other"])))
        rules.append(fields)
        lines.append("p, " + ", ".join(fields))
    if draw(st.booleans()):
        # The same rules in other tenants (as every branch of a bank runs the same apps): the engine
        # shares their index, and each tenant must still get its own policy positions and lines.
        for fields in list(rules):
            for other in draw(st.lists(st.sampled_from(TENANTS), max_size=2, unique=True)):
                if other != fields[1]:
                    copy = [fields[0], other, *fields[2:]]
                    rules.append(copy)
                    lines.append("p, " + ", ".join(copy))
    links: list[tuple[str, str, str]] = []
    for _ in range(draw(st.integers(0, 10))):
        link = (draw(subjects), draw(st.sampled_from(ROLES)), draw(st.sampled_from(TENANTS)))
        if draw(st.integers(0, 2)) == 0 and rules:
            # Aim links at the subjects and tenants the rules use, so roles actually grant something.
            target = draw(st.sampled_from(rules))
            link = (draw(subjects), target[0], target[1])
        links.append(link)
        lines.append("g, " + ", ".join(link))
    draw(st.randoms()).shuffle(lines)
    requests = draw(st.lists(request(kind, rules, links), min_size=1, max_size=12))
    return lines, requests


def _instantiate(pattern: str, draw: st.DrawFn) -> str:
    """A concrete path near ``pattern``: its wildcards filled, sometimes perturbed."""
    verbatim = draw(st.integers(0, 5))
    if verbatim == 0:
        return pattern
    if verbatim == 1:
        return pattern + "\n"  # "$" matches before a final newline
    filler = st.sampled_from(["x", "1", "a.b", "x", "7", "..", "", "q/r", "a\n"])
    out = re.sub(r":[A-Za-z_]+|\{[a-z]+\}", lambda _: draw(filler), pattern)
    out = out.replace("*", draw(filler))
    if pattern.startswith(("^", "(?i)")) or "[" in pattern or "|" in pattern or "\\" in pattern:
        # A regex: pick one of a few strings shaped like it.
        out = draw(st.sampled_from(["/a", "/A/x", "/a/b", "/b", "/1", "/x/z", "/v7", "/a/1", "/api/a.b"]))
    tweak = draw(st.integers(0, 8))
    if tweak == 1:
        out += "/"
    elif tweak == 2:
        out += "\n"
    elif tweak == 3:
        out += "?q=1"
    elif tweak == 4:
        out = out.replace(".", "X", 1)
    elif tweak == 5:
        out = out.upper()
    return out


@st.composite
def request(
    draw: st.DrawFn, kind: str, rules: list[list[str]], links: list[tuple[str, str, str]]
) -> tuple[str, ...]:
    user = draw(st.sampled_from(USERS + ROLES))
    tenant = draw(st.sampled_from([*TENANTS, "nowhere"]))
    method = draw(st.sampled_from(METHODS))
    aim = draw(st.integers(0, 9))
    if aim < 7 and rules:
        rule = draw(st.sampled_from(rules))
        path = _instantiate(rule[2], draw)
        if aim < 6:
            tenant = rule[1]
            holders = [u for u, r, d in links if r == rule[0] and d == tenant]
            holders += [u for u, r, d in links for h in holders if r == h and d == tenant]
            user = draw(st.sampled_from([rule[0], *holders]))
        if aim < 5:
            method = draw(st.sampled_from(["GET", "POST", "HEAD", "DELETE", "PUT", "PATCH"]))
    else:
        path = "/" + "/".join(draw(st.lists(st.sampled_from(SEGMENTS), max_size=4)))
        if draw(st.integers(0, 5)) == 0:
            path += "?a=/b"
    return user, tenant, path, method


def compare(variant: str, lines: list[str], requests: list[tuple[str, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.conf"
        policy_path = Path(tmp) / "policy.csv"
        model_path.write_text(model_text(variant))
        policy_path.write_text("\n".join(lines) + "\n")
        engine = PolicyEngine.load(model_path, policy_path)
        plain = casbin.Enforcer(str(model_path), str(policy_path))
    assert engine.indexed, engine.note
    rm = plain.get_role_manager()
    for user, tenant, path, method in requests:
        allowed, explain = plain.enforce_ex(user, tenant, path, method)
        for _ in range(2):  # the second answer comes from the cache
            got = engine.decide(user, tenant, path, method)
            assert got.allowed == allowed, (user, tenant, path, method, got, explain)
            assert got.rule == (tuple(explain) if explain else None), (user, tenant, path, method, got)
            # The deny-only check (other spellings of an allowed path) agrees with the full decision.
            assert engine.denies(user, tenant, path, method) == (got if got.effect == "deny" else None)
            if allowed:
                assert got.effect == "allow"
            elif VARIANTS[variant][2] == ALLOW_AND_DENY and VARIANTS[variant][3]:
                # With deny-wins, "deny" means the explained rule is an explicit deny rule.
                assert got.effect == ("deny" if explain and explain[-1] == "deny" else "default-deny")
        expected_roles = {r for r in USERS + ROLES if r != user and rm.has_link(user, r, tenant)}
        assert set(engine.roles_for(user, tenant)) == expected_roles
        assert set(engine.decide(user, tenant, path, method).roles) == expected_roles


def _given(variant: str):  # type: ignore[no-untyped-def]
    return settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
        given(policy(variant))
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_decisions_as_plain_casbin(variant: str) -> None:
    @_given(variant)
    def run(case: tuple[list[str], list[tuple[str, ...]]]) -> None:
        lines, requests = case
        compare(variant, lines, requests)

    run()


def test_refuses_a_policy_casbin_would_crash_on(tmp_path: Path) -> None:
    from edgesec.errors import InputError

    model_path = tmp_path / "model.conf"
    model_path.write_text(model_text("keyMatch2"))
    policy_path = tmp_path / "p.csv"
    policy_path.write_text("p, admin, branch, /a/**, GET, allow\n")
    plain = casbin.Enforcer(str(model_path), str(policy_path))
    with pytest.raises(re.error):
        plain.enforce("admin", "branch", "/a/x", "GET")
    with pytest.raises(
        InputError, match=r"p.csv: p rule 1: the path pattern is not a valid regular expression"
    ):
        PolicyEngine.load(model_path, policy_path)


def test_role_chains_longer_than_casbins_bound_grant_nothing(tmp_path: Path) -> None:
    model_path = tmp_path / "model.conf"
    model_path.write_text(model_text("keyMatch2"))
    chain = [f"g, n{i}, n{i + 1}, branch" for i in range(14)]
    rules = [f"p, n{i}, branch, /level/{i}, GET, allow" for i in range(15)]
    cycle = ["g, c1, c2, branch", "g, c2, c3, branch", "g, c3, c1, branch", "p, c3, branch, /c, GET, allow"]
    policy_path = tmp_path / "p.csv"
    policy_path.write_text("\n".join(chain + rules + cycle) + "\n")
    engine = PolicyEngine.load(model_path, policy_path)
    plain = casbin.Enforcer(str(model_path), str(policy_path))
    for i in range(15):
        want = plain.enforce("n0", "branch", f"/level/{i}", "GET")
        assert want == (i <= MAX_ROLE_HOPS)
        assert engine.decide("n0", "branch", f"/level/{i}", "GET").allowed == want
    assert engine.roles_for("n0", "branch") == tuple(sorted(f"n{i}" for i in range(1, MAX_ROLE_HOPS + 1)))
    assert (
        engine.decide("c1", "branch", "/c", "GET").allowed
        is plain.enforce("c1", "branch", "/c", "GET")
        is True
    )
    assert set(engine.roles_for("c1", "branch")) == {"c2", "c3"}


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet="ab/.*+?{}[]()|\\^$:1", max_size=10),
    st.text(alphabet="ab/.1:", max_size=10),
)
def test_literal_prefix_is_a_prefix_of_every_match(regex: str, subject: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" FutureWarnings of odd patterns
            compiled = re.compile(regex)
    except (re.error, OverflowError, RecursionError):
        return
    prefix, whole = literal_prefix(regex)
    hit = compiled.match(subject)
    if hit is not None:
        assert subject.startswith(prefix), (regex, subject, prefix)
    if whole:
        assert regex == prefix
        assert (compiled.match(subject) is not None) == subject.startswith(prefix)


def test_explains_the_rule_casbin_explains_when_several_apply(tmp_path: Path) -> None:
    model_path = tmp_path / "model.conf"
    model_path.write_text(model_text("keyMatch2"))
    lines = [
        "p, teller, branch, /v1/*, GET, allow",
        "p, alice, branch, /v1/:id, GET, deny",
        "p, teller, branch, /v1/x, GET|POST, allow",
        "p, staff, branch, /v1/*, .*, deny",
        "p, staff, branch, /v2/*, .*, other",
        "p, teller, branch, /v2/:id, GET, allow",
        "p, alice, branch, /v2/x, GET, allow",
        "g, alice, teller, branch",
        "g, teller, staff, branch",
    ]
    for order in (lines, list(reversed(lines))):
        policy_path = tmp_path / "p.csv"
        policy_path.write_text("\n".join(order) + "\n")
        engine = PolicyEngine.load(model_path, policy_path)
        plain = casbin.Enforcer(str(model_path), str(policy_path))
        for path in ("/v1/x", "/v2/x", "/v2/y", "/v3"):
            allowed, explain = plain.enforce_ex("alice", "branch", path, "GET")
            got = engine.decide("alice", "branch", path, "GET")
            assert (got.allowed, got.rule) == (allowed, tuple(explain) if explain else None), path


def test_tenants_with_the_same_rules_share_an_index_but_keep_their_positions(tmp_path: Path) -> None:
    model_path = tmp_path / "model.conf"
    model_path.write_text(model_text("keyMatch2"))
    base = [
        "p, teller, {t}, /v1/*, GET, allow",
        "p, teller, {t}, /v1/secret/*, GET, deny",
        "p, teller, {t}, /v1/:id, GET|POST, allow",
    ]
    lines: list[str] = []
    for i, t in enumerate(["a", "b", "c", "d"]):
        rows = [r.format(t=t) for r in base]
        if t == "d":
            rows.reverse()  # another order: another rule set
        lines += rows
        lines.append(f"g, u{i}, teller, {t}")
        lines.append(f"p, u{i}, {t}, /v1/secret/x, GET, allow")  # interleaved with the shared rules
    policy_path = tmp_path / "p.csv"
    policy_path.write_text("\n".join(lines) + "\n")
    engine = PolicyEngine.load(model_path, policy_path)
    plain = casbin.Enforcer(str(model_path), str(policy_path))
    assert engine.ruleset_count == 2 + 4  # teller in a, b, c share one; d's reversed order; one per user
    for i, t in enumerate(["a", "b", "c", "d"]):
        for path in ("/v1/x", "/v1/secret/x", "/v1/secret/y", "/v2"):
            for method in ("GET", "POST"):
                allowed, explain = plain.enforce_ex(f"u{i}", t, path, method)
                got = engine.decide(f"u{i}", t, path, method)
                assert (got.allowed, got.rule) == (allowed, tuple(explain) if explain else None)
        assert engine.rules_for_tenant(t) == [tuple(p) for p in plain.get_filtered_policy(1, t)]
