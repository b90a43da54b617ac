"""PolicyEngine: the shipped policies, the plain-enforcer fallback, broken files, caches and reloads."""

from __future__ import annotations

import csv
import logging
import re
import threading
from pathlib import Path

import casbin
import pytest
from casbin.util.builtin_operators import key_match2, key_match5
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesec._data import policies_root
from edgesec.authz.engine import Decision, PolicyEngine
from edgesec.authz.patterns import key_match2_regex, key_match5_regex
from edgesec.errors import InputError

MODEL = policies_root() / "casbin" / "model.conf"
SHIPPED = sorted(p for p in (policies_root() / "casbin").glob("*.csv") if not p.name.endswith(".tests.csv"))

BASIC_RBAC = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && r.act == p.act
"""


def write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# --------------------------------------------------------------------------- shipped policies


def test_shipped_model_is_indexed_and_policies_exist() -> None:
    assert SHIPPED, "no example policies shipped"
    for policy in SHIPPED:
        engine = PolicyEngine.load(MODEL, policy)
        assert engine.indexed, engine.note
        assert "keyMatch2" in engine.note and "allow-and-deny" in engine.note
        assert engine.rule_count > 0


@pytest.mark.parametrize("policy", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_policies_decide_like_plain_casbin(policy: Path) -> None:
    engine = PolicyEngine.load(MODEL, policy)
    plain = casbin.Enforcer(str(MODEL), str(policy))
    p_rules = plain.get_policy()
    g_rules = plain.get_grouping_policy()
    users = {g[0] for g in g_rules} | {"nobody"}
    tenants = {p[1] for p in p_rules} | {"elsewhere"}
    paths = {"/", "/x", "/admin", "/console/api/apps/7/../../x"}
    for p in p_rules:
        concrete = re.sub(r":[^/]+", "42", p[2]).replace("*", "a/b")
        paths |= {concrete, concrete + "/", concrete.upper(), concrete + "\n"}
    table = policy.with_name(policy.stem + ".tests.csv")
    if table.exists():
        with table.open() as fh:
            rows = [r for r in csv.reader(line for line in fh if not line.startswith("#"))][1:]
        paths |= {r[3].split("?")[0] for r in rows if len(r) >= 4}
    checked = 0
    for user in sorted(users):
        for tenant in sorted(tenants):
            for path in sorted(paths):
                for method in ("GET", "POST", "DELETE", "PATCH"):
                    allowed, explain = plain.enforce_ex(user, tenant, path, method)
                    got = engine.decide(user, tenant, path, method)
                    assert (got.allowed, got.rule) == (allowed, tuple(explain) if explain else None), (
                        user,
                        tenant,
                        path,
                        method,
                    )
                    checked += 1
    assert checked > 1000


# --------------------------------------------------------------------------- fallback


def test_other_models_fall_back_to_the_plain_enforcer_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = write(tmp_path, "rbac.conf", BASIC_RBAC)
    policy = write(
        tmp_path,
        "p.csv",
        "p, reader, /docs/*, GET\np, admin, /*, POST\ng, alice, reader\ng, bob, admin\ng, admin, reader\n",
    )
    with caplog.at_level(logging.WARNING, logger="edgesec.authz.engine"):
        engine = PolicyEngine.load(model, policy)
    assert not engine.indexed
    assert engine.note.startswith("plain casbin enforcer") and "request is not" in engine.note
    assert any("not indexed" in r.getMessage() for r in caplog.records)
    plain = casbin.Enforcer(str(model), str(policy))
    for user in ("alice", "bob", "carol"):
        for path in ("/docs/a", "/x", "/docs"):
            for method in ("GET", "POST"):
                got = engine.decide(user, "ignored-tenant", path, method)
                allowed, explain = plain.enforce_ex(user, path, method)
                assert got.allowed == allowed
                assert got.rule == (tuple(explain) if explain else None)
    assert engine.roles_for("bob", "t") == ("admin", "reader")
    assert engine.decide("bob", "t", "/docs/a", "GET").roles == ("admin", "reader")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("keyMatch2(r.obj, p.obj)", "keyMatch3(r.obj, p.obj)"), "matcher terms"),
        (("regexMatch(r.act, p.act)", 'regexMatch(r.act, p.act) || r.sub == "root"'), "matcher is not"),
        (("!some(where (p.eft == deny))", "!some(where (p.eft == deny)) "), ""),
        (
            (
                "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))",
                "e = !some(where (p.eft == deny))",
            ),
            "neither allow-and-deny",
        ),
    ],
)
def test_variants_outside_the_family_are_not_indexed(
    tmp_path: Path, change: tuple[str, str], reason: str
) -> None:
    text = MODEL.read_text().replace(*change)
    model = write(tmp_path, "m.conf", text)
    policy = write(tmp_path, "p.csv", "p, admin, t, /a/*, GET, allow\ng, alice, admin, t\n")
    engine = PolicyEngine.load(model, policy)
    plain = casbin.Enforcer(str(model), str(policy))
    if reason:
        assert not engine.indexed and reason in engine.note
    for path in ("/a/b", "/a/{x}", "/b"):
        assert engine.decide("alice", "t", path, "GET").allowed == plain.enforce("alice", "t", path, "GET")


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize(
    ("model_text", "policy_text", "message"),
    [
        (None, b"p, a, t, /x, GET, allow\n", "casbin model not found"),
        ("[matchers]\nm = r.sub == p.sub\n", b"", "has no [request_definition] section"),
        ("\x00\x01 not a model", b"", "casbin model"),
        ("ok", b"\xff\xfe p, a", "casbin policy is not UTF-8 text"),
        ("ok", b"p, a, t, /x(, GET, allow\np, a, t, /x), GET, allow\n", "malformed policy line"),
        ("ok", b"p, a, t, /x, GET\n", "has 4 fields, the model wants 5"),
        ("ok", b"g, alice, admin\n", "role rule g, 'alice, admin' has 2 fields"),
        ("ok", b"p, a, t, /x, *, allow\n", "rule 1: the method pattern is not a valid regular expression"),
        ("ok", b"p, a, t, /x, GET, allow\np, a, t, /y/**, GET, allow\n", "rule 2: the path pattern"),
        ("ok", None, "casbin policy not found"),
    ],
)
def test_broken_files_give_one_line_input_errors(
    tmp_path: Path, model_text: str | None, policy_text: bytes | None, message: str
) -> None:
    model = tmp_path / "missing.conf"
    if model_text == "ok":
        model = MODEL
    elif model_text is not None:
        model = write(tmp_path, "m.conf", model_text)
    policy = tmp_path / "missing.csv" if policy_text is None else write(tmp_path, "p.csv", policy_text)
    with pytest.raises(InputError) as info:
        PolicyEngine.load(model, policy)
    assert message in info.value.message
    assert "\n" not in info.value.message
    assert info.value.exit_code == 2


def test_a_directory_is_not_a_policy(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        PolicyEngine.load(MODEL, tmp_path)


# --------------------------------------------------------------------------- caches and reloads


def test_cache_hits_are_the_same_answer_and_the_cache_is_bounded(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.csv", "p, admin, t, /a/:id, GET, allow\ng, alice, admin, t\n")
    engine = PolicyEngine.load(MODEL, policy, cache_size=8)
    first = engine.decide("alice", "t", "/a/1", "GET")
    assert first == Decision(True, ("admin", "t", "/a/:id", "GET", "allow"), ("admin",), "allow")
    assert engine.decide("alice", "t", "/a/1", "GET") is first
    assert (engine.cache_hits, engine.cache_misses) == (1, 1)
    for i in range(100):
        assert engine.decide("alice", "t", f"/a/{i}", "GET").allowed
    assert engine.stats()["cache_entries"] <= 8
    assert engine.stats()["indexed"] is True and engine.stats()["rules"] == 1
    uncached = PolicyEngine.load(MODEL, policy, cache_size=0)
    assert uncached.decide("alice", "t", "/a/1", "GET") == first
    assert uncached.stats()["cache_entries"] == 0


def test_a_reload_is_a_new_engine_the_old_one_keeps_its_answers(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.csv", "p, admin, t, /a/*, GET, allow\ng, alice, admin, t\n")
    old = PolicyEngine.load(MODEL, policy)
    assert old.decide("alice", "t", "/a/x", "GET").allowed
    write(
        tmp_path, "p.csv", "p, admin, t, /a/*, GET, allow\np, admin, t, /a/x, GET, deny\ng, alice, admin, t\n"
    )
    new = PolicyEngine.load(MODEL, policy)
    assert new.decide("alice", "t", "/a/x", "GET").effect == "deny"
    assert old.decide("alice", "t", "/a/x", "GET").allowed  # from its own cache, its own policy
    assert new.rules_for_tenant("t") == [
        ("admin", "t", "/a/*", "GET", "allow"),
        ("admin", "t", "/a/x", "GET", "deny"),
    ]


def test_concurrent_decisions_agree_with_sequential_ones(tmp_path: Path) -> None:
    lines = [
        f"p, r{i % 7}, t{i % 3}, /s{i}/:id, GET|POST, {'deny' if i % 11 == 0 else 'allow'}"
        for i in range(300)
    ]
    lines += [f"g, u{i}, r{i % 7}, t{i % 3}" for i in range(50)]
    policy = write(tmp_path, "p.csv", "\n".join(lines) + "\n")
    requests = [(f"u{i % 50}", f"t{i % 3}", f"/s{i % 300}/{i}", "GET") for i in range(3000)]
    reference = PolicyEngine.load(MODEL, policy, cache_size=0)
    expected = [reference.decide(*r) for r in requests]
    shared = PolicyEngine.load(MODEL, policy, cache_size=64)
    failures: list[int] = []

    def worker(offset: int) -> None:
        for k in range(len(requests)):
            j = (k + offset) % len(requests)
            if shared.decide(*requests[j]) != expected[j]:
                failures.append(j)

    threads = [threading.Thread(target=worker, args=(n * 97,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert any(d.allowed for d in expected) and any(d.effect == "deny" for d in expected)


# --------------------------------------------------------------------------- casbin's own operators


def _casbin_or_error(fn, key: str, pattern: str):  # type: ignore[no-untyped-def]
    try:
        return fn(key, pattern)
    except re.error:
        return "error"


def _ours_or_error(regex: str, key: str):  # type: ignore[no-untyped-def]
    try:
        return re.match(regex, key) is not None
    except re.error:
        return "error"


PATTERN_CHARS = st.text(alphabet="/ab.:*{}x-?", max_size=12)
KEY_CHARS = st.text(alphabet="/ab.x-?\n", max_size=12)


@settings(max_examples=500, deadline=None)
@given(PATTERN_CHARS, KEY_CHARS)
def test_key_match2_regex_is_casbins(pattern: str, key: str) -> None:
    assert _ours_or_error(key_match2_regex(pattern), key) == _casbin_or_error(key_match2, key, pattern)


@settings(max_examples=500, deadline=None)
@given(PATTERN_CHARS, KEY_CHARS)
def test_key_match5_regex_is_casbins(pattern: str, key: str) -> None:
    q = key.find("?")
    stripped = key[:q] if q != -1 else key
    assert _ours_or_error(key_match5_regex(pattern), stripped) == _casbin_or_error(key_match5, key, pattern)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/ab.:*{}x-?()|[]\\", max_size=16))
def test_key_match_regex_text_is_casbins(pattern: str) -> None:
    from casbin.util.builtin_operators import KEY_MATCH2_PATTERN, KEY_MATCH5_PATTERN

    key2 = pattern.replace("/*", "/.*")
    key2 = KEY_MATCH2_PATTERN.sub(r"\g<1>[^\/]+\g<2>", key2, 0)
    if key2 == "*":
        key2 = "(.*)"
    assert key_match2_regex(pattern) == "^" + key2 + "$"
    key5 = KEY_MATCH5_PATTERN.sub(r"[^/]+", pattern.replace("/*", "/.*"), 0)
    assert key_match5_regex(pattern) == "^" + key5 + "$"
