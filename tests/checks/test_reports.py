"""Reports are pure functions of the result: SARIF and JUnit validate against their schemas, Prometheus
text parses, JSON is canonical, and the HTML renders in both languages with everything escaped."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from edgesec.checks.reports import html, junit, prom, sarif
from edgesec.checks.reports.json_ import canonical
from tests.checks.conftest import FileState, LowFail, Passes, Raises, Skips, Warns


@pytest.fixture
def full_result(cli, use_checks, demo_profile: Path, home: Path, tmp_path: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A real result with every status: FAIL, WAIVED, ERROR, PASS, SKIP, WARN, plus hostile text."""
    use_checks(FileState, LowFail, Passes, Raises, Warns, Skips)
    (home / "state.txt").write_text('a=bad\n<script>alert("x")</script>=bad\nc=good\n')
    today = dt.datetime.now(dt.UTC).date()
    wf = tmp_path / "w.json"
    wf.write_text(
        json.dumps(
            {
                "waivers": [
                    {
                        "id": "w1",
                        "check": "demo.file-state",
                        "resource": "a",
                        "justification": "accepted <b>risk</b> & compensating control",
                        "owner": "ops",
                        "approver": "ciso",
                        "expires": str(today + dt.timedelta(days=3)),
                    }
                ]
            }
        )
    )
    code, out, err = cli("--json", "audit", "--profile", str(demo_profile), "--waivers", str(wf))
    assert code == 3, err
    return json.loads(out)["result"]["result"]  # type: ignore[no-any-return]


def test_sarif_validates(full_result: dict[str, Any], conformance: Path) -> None:
    import jsonschema

    doc = json.loads(sarif.render(full_result))
    schema = json.loads((conformance / "sarif" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)
    errata = json.loads((conformance / "sarif" / "sarif-schema-2.1.0.oasis-errata01.json").read_text())
    jsonschema.validators.validator_for(errata)(errata).validate(doc)
    run = doc["runs"][0]
    kinds = {(r["ruleId"], r["kind"], r.get("level")) for r in run["results"]}
    assert ("demo.raises", "review", "none") in kinds
    assert ("demo.passes", "pass", "none") in kinds
    waived = [r for r in run["results"] if r.get("suppressions")]
    assert waived and waived[0]["suppressions"][0]["status"] == "accepted"
    assert run["invocations"][0]["executionSuccessful"] is False


@pytest.mark.parametrize("xsd", ["junit.xsd", "junit-windyroad-ant.xsd"])
def test_junit_validates(full_result: dict[str, Any], conformance: Path, xsd: str) -> None:
    import xmlschema

    text = junit.render(full_result)
    schema = xmlschema.XMLSchema(str(conformance / "junit" / xsd))
    schema.validate(text)
    assert '<failure type="high"' in text and "<error " in text
    assert "&lt;script&gt;" in text
    # A WARN is never a bare passing testcase: it is skipped, with its message.
    import xml.etree.ElementTree as ET

    tc = next(t for t in ET.fromstring(text).iter("testcase") if t.get("name") == "demo.warns")
    (sk,) = list(tc)
    assert sk.tag == "skipped" and sk.get("message", "").startswith("WARN: cannot prove sealed")


def test_prometheus_text_parses(full_result: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(prom.render(full_result))}
    assert fams["edgesec_audit_exit_code"].samples[0].value == 3
    by_status = {s.labels["status"]: s.value for s in fams["edgesec_audit_findings"].samples}
    assert by_status["ERROR"] == 1 and by_status["WAIVED"] == 1
    assert fams["edgesec_framework_score_ratio"].samples[0].labels["framework"] == "pci-dss-4.0"
    passing = {x.labels["check"]: x.value for x in fams["edgesec_check_passing"].samples}
    skipped = {x.labels["check"] for x in fams["edgesec_check_skipped"].samples}
    statuses = {c["id"]: c["status"] for c in full_result["checks"]}
    assert {c for c, st in statuses.items() if st == "SKIP"} == skipped and skipped
    assert not skipped & set(passing)  # SKIP is not PASS
    assert passing["demo.passes"] == 1 and passing["demo.warns"] == 0 and passing["demo.raises"] == 0
    drift = {x.labels["change"]: x.value for x in fams["edgesec_audit_drift_findings"].samples}
    assert set(drift) == {"new_failures", "fixed", "changed_evidence", "status_changes"}


def test_json_is_canonical_and_versioned(full_result: dict[str, Any]) -> None:
    text = canonical(full_result)
    assert json.loads(text) == full_result
    assert canonical(json.loads(text)) == text  # byte-stable round trip (what signatures rely on)
    assert full_result["schema"] == "edgesec.audit-result" and full_result["schema_version"] == 1


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_html_escapes_and_is_self_contained(full_result: dict[str, Any], lang: str) -> None:
    page = html.render(full_result, lang)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>risk</b>" not in page
    for needle in ("http://", "https://", "src=", "@import", "url("):
        assert needle not in page.lower(), needle
    assert "default-src 'none'" in page
    assert ("结论" in page) == (lang == "zh-CN")
    assert "demo.raises" in page and "w1" in page


def test_result_matches_its_published_schema(full_result: dict[str, Any]) -> None:
    import jsonschema

    from edgesec.checks.result import json_schema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(full_result)
    broken = json.loads(json.dumps(full_result))
    broken["checks"][0]["findings"][0]["status"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)
