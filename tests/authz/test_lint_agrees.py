"""``authz lint`` agrees with the engine: a rule lint calls dead is never the rule that decides a request.

Random policies of the shipped model (the engine-equivalence strategy: roles of roles, several tenants,
allow/deny, wildcard and ``:id`` patterns, method regexes) and random requests, decided the way ``/auth``
decides them (canonical path; an identity in the role namespace refused first). Whatever lint reports as
``never-matches`` or ``shadowed`` must never be the deciding rule of an answer.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from edgesec.authz.engine import PolicyEngine
from edgesec.authz.identity import role_clash
from edgesec.authz.lint import lint_policy
from edgesec.authz.request import RequestRejected, canonical_path
from tests.authz.test_engine_equivalence import model_text, policy

DEAD = ("never-matches", "shadowed")


def _rules(lines: list[str]) -> dict[int, tuple[str, ...]]:
    out = {}
    for n, line in enumerate(lines, start=1):
        cells = [c.strip() for c in next(csv.reader(io.StringIO(line), skipinitialspace=True))]
        if cells[0] == "p":
            out[n] = tuple(cells[1:])
    return out


def _check(lines: list[str], requests: list[tuple[str, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.conf"
        policy_path = Path(tmp) / "policy.csv"
        model_path.write_text(model_text("keyMatch2"))
        policy_path.write_text("\n".join(lines) + "\n")
        engine = PolicyEngine.load(model_path, policy_path)
        findings = lint_policy(policy_path)
    rules = _rules(lines)
    dead_lines = {f.line for f in findings if f.code in DEAD and f.level == "error"}
    # A rule written twice is dead only if every copy is.
    dead = {r for n, r in rules.items() if n in dead_lines} - {
        r for n, r in rules.items() if n not in dead_lines
    }
    for user, tenant, raw_path, method in requests:
        if role_clash(user, engine.role_names) is not None:
            continue  # /auth refuses this identity before the policy is asked
        try:
            path = canonical_path(raw_path.split("?", 1)[0])
        except RequestRejected:
            continue
        d = engine.decide(user, tenant, path, method)
        assert d.rule is None or tuple(d.rule) not in dead, (user, tenant, path, method, d, findings)


def test_known_disagreements() -> None:
    # A direct user rule (no g line names the user) is live: the user's own certificate reaches it.
    _check(["p, kiosk, branch, /kiosk/*, GET, allow"], [("kiosk", "branch", "/kiosk/menu", "GET")])
    # "/a/*" does not match "/a": a deny on "/a/*" does not shadow an allow on "/a".
    _check(
        ["p, alice, branch, /a, GET, allow", "p, alice, branch, /a/*, GET, deny"],
        [("alice", "branch", "/a", "GET")],
    )
    # keyMatch2 leaves '.' a regex wildcard: "/v1/../admin" matches the canonical "/v1/xy/admin".
    _check(["p, alice, branch, /v1/../admin, GET, allow"], [("alice", "branch", "/v1/xy/admin", "GET")])
    # keyMatch2 "*" alone matches every path.
    _check(["p, alice, branch, *, GET, allow"], [("alice", "branch", "/", "GET")])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy("keyMatch2"))
def test_a_rule_lint_calls_dead_never_decides(case: tuple[list[str], list[tuple[str, ...]]]) -> None:
    lines, requests = case
    _check(lines, requests)
