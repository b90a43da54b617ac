"""Properties of the verdict, the diff and the score, over generated results."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edgesec.checks.interface import Severity
from edgesec.checks.result import FAILING, diff, score_frameworks, summarize
from edgesec.checks.waivers import parse_waivers

STATUSES = ["PASS", "FAIL", "WARN", "ERROR", "SKIP", "WAIVED"]
SEVS = ["info", "low", "medium", "high", "critical"]

finding = st.fixed_dictionaries(
    {
        "status": st.sampled_from(STATUSES),
        "severity": st.sampled_from(SEVS),
        "resource": st.sampled_from([None, "a", "b", "c"]),
        "evidence": st.dictionaries(st.sampled_from(["x", "y", "stats"]), st.integers(0, 3), max_size=2),
    }
)


def _result(data: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    checks = []
    for cid, fs in data.items():
        seen: dict[Any, dict[str, Any]] = {}
        for f in fs:
            seen[f["resource"]] = {**f, "check_id": cid, "message": "m", "remediation": None}
        checks.append({"id": cid, "status": "PASS", "findings": list(seen.values())})
    return {"run": {"id": "r"}, "checks": checks}


results = st.dictionaries(
    st.sampled_from(["e.a", "e.b", "h.c"]), st.lists(finding, min_size=1, max_size=4), max_size=3
)


@given(results, st.sampled_from(list(Severity)))
def test_exit_code_rule(data: dict[str, list[dict[str, Any]]], fail_on: Severity) -> None:
    res = _result(data)
    s = summarize(res["checks"], fail_on)
    all_f = [f for c in res["checks"] for f in c["findings"]]
    if any(f["status"] == "ERROR" for f in all_f):
        assert s["exit_code"] == 3 and s["verdict"] == "incomplete"
    elif any(f["status"] == "FAIL" and Severity.parse(f["severity"]) >= fail_on for f in all_f):
        assert s["exit_code"] == 1 and s["blocking"]
    else:
        assert s["exit_code"] == 0 and not s["blocking"]
    assert sum(s["by_status"].values()) == len(all_f)


@given(results, results)
def test_diff_is_consistent_both_ways(
    a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]
) -> None:
    ra, rb = _result(a), _result(b)
    assert (
        diff(ra, ra, source="x")["new_failures"] == [] and diff(ra, ra, source="x")["changed_evidence"] == []
    )
    fwd, back = diff(ra, rb, source="x"), diff(rb, ra, source="x")
    key = lambda c: (c["check_id"], c["resource"] or "")  # noqa: E731
    assert sorted(map(key, fwd["new_failures"])) == sorted(map(key, back["fixed"]))
    for c in fwd["new_failures"]:
        assert c["after"] in FAILING and c["before"] not in FAILING
    # Only checks that ran in both runs are compared.
    both = set(a) & set(b)
    for group in ("new_failures", "fixed", "changed_evidence", "status_changes"):
        assert all(c["check_id"] in both for c in fwd[group])


@given(st.dictionaries(st.sampled_from(["e.a", "e.b", "h.c", "h.d"]), st.sampled_from(STATUSES)))
def test_score_is_a_share_of_controls(status: dict[str, str]) -> None:
    fw = {
        "id": "f",
        "title": "F",
        "controls": [
            {"id": "1", "title": "one", "checks": ["e"]},
            {"id": "2", "title": "two", "checks": ["h.c"]},
            {"id": "3", "title": "three", "checks": ["nothing.*"]},
        ],
    }
    (out,) = score_frameworks([fw], status, list(status))
    assert out["controls_passed"] + out["controls_failed"] + out["controls_not_assessed"] == 3
    assert out["score"] == round(out["controls_passed"] / 3, 4)
    assert out["controls"][2]["status"] == "not_assessed"
    for ctl in out["controls"]:
        ran = [s for s in ctl["checks"].values() if s != "SKIP"]
        if ctl["status"] == "passed":
            assert ran and all(s in ("PASS", "WAIVED") for s in ran)


def test_toml_waiver_file() -> None:
    until = dt.date.today() + dt.timedelta(days=5)
    text = (
        "[[waivers]]\n"
        'id = "w1"\ncheck = "egress.dns"\nresource = "10.*"\n'
        'justification = "site resolver migration in progress"\nowner = "ops"\napprover = "ciso"\n'
        f"expires = {until.isoformat()}\n"
    )
    (w,) = parse_waivers(text.encode(), "w.toml")
    assert w.covers("egress.dns", "10.1.2.3") and not w.covers("egress.dns", "8.8.8.8")
    assert not w.covers("egress.routes", "10.1.2.3")
    assert w.state(until) == "expired" and w.state(until - dt.timedelta(days=1)) == "active"


def test_housekeeping_and_errors_never_pass_a_control() -> None:
    """Bank PCI DSS 6.3.3 ("security patches are installed") maps gpu.*: on a host without a GPU only
    gpu.reference-data (the age of edgesec's own NVIDIA tables) runs, and it bears on no control."""
    from edgesec.checks.profiles import load_profile
    from edgesec.checks.registry import load_catalog

    cat = load_catalog()
    assert cat.checks["gpu.reference-data"].meta.housekeeping
    bank = load_profile("bank")
    status = {cid: "SKIP" for cid in cat.checks if cid.startswith("gpu.")}
    status["gpu.reference-data"] = "PASS"
    frameworks = [fw.model_dump() for fw in bank.frameworks]
    meta = {cid: cls.meta.controls for cid, cls in cat.checks.items()}
    hk = [cid for cid, cls in cat.checks.items() if cls.meta.housekeeping]
    pci = next(
        f
        for f in score_frameworks(frameworks, status, list(cat.checks), meta, hk)
        if f["id"] == "pci-dss-4.0"
    )
    ctl = next(c for c in pci["controls"] if c["id"] == "6.3.3")
    assert ctl["status"] == "not_assessed" and "gpu.reference-data" not in ctl["checks"]
    # A check that could not read its evidence (ERROR) leaves a control not assessed; FAIL/WARN fail it.
    fw = {"id": "f", "title": "F", "controls": [{"id": "1", "title": "one", "checks": ["e.*"]}]}
    for statuses, want in (
        ({"e.a": "PASS", "e.b": "ERROR"}, "not_assessed"),
        ({"e.a": "ERROR"}, "not_assessed"),
        ({"e.a": "FAIL", "e.b": "ERROR"}, "failed"),
        ({"e.a": "WARN", "e.b": "PASS"}, "failed"),
        ({"e.a": "PASS", "e.b": "SKIP"}, "passed"),
    ):
        (out,) = score_frameworks([fw], statuses, list(statuses))
        assert out["controls"][0]["status"] == want, statuses
