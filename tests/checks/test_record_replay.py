"""``--record`` keeps every probe answer of a live run; ``--replay`` reproduces the verdict from it."""

from __future__ import annotations

import json
from pathlib import Path


def _checks(out: str) -> dict[str, list[tuple[str | None, str, str]]]:
    res = json.loads(out)["result"]["result"]
    return {
        c["id"]: [(f["resource"], f["status"], f["message"]) for f in c["findings"]] for c in res["checks"]
    }


def test_record_then_replay_gives_the_same_findings(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec = tmp_path / "rec.json"
    code, live_out, err = cli("--json", "audit", "--only", "egress", "--only", "host", "--record", str(rec))
    assert code in (0, 1), err
    doc = json.loads(rec.read_text())
    assert doc["version"] == 1 and doc["clock"] and doc["calls"]
    assert any(k.startswith("netlink:") and "route" in k for k in doc["calls"])
    code2, replay_out, err = cli(
        "--json", "audit", "--only", "egress", "--only", "host", "--replay", str(rec)
    )
    assert code2 == code, err
    live, replay = _checks(live_out), _checks(replay_out)
    # host.edgesec-files walks the home, which the live run itself changed (history); compare the rest.
    live.pop("host.edgesec-files")
    replay.pop("host.edgesec-files")
    assert replay == live
    res = json.loads(replay_out)["result"]["result"]
    assert res["run"]["mode"] == "replay" and res["run"]["started"] == doc["clock"]
    import jsonschema

    from edgesec.checks.result import json_schema

    for out in (live_out, replay_out):
        jsonschema.Draft202012Validator(json_schema()).validate(json.loads(out)["result"]["result"])


def test_replay_of_an_incomplete_recording_is_an_error_not_a_guess(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rec = tmp_path / "rec.json"
    code, _, err = cli("audit", "--only", "egress.routes", "--record", str(rec))
    assert code in (0, 1), err
    doc = json.loads(rec.read_text())
    doc["calls"] = {k: v for k, v in doc["calls"].items() if "route" not in k}
    rec.write_text(json.dumps(doc))
    code, out, err = cli("--json", "audit", "--only", "egress.routes", "--replay", str(rec))
    assert code == 3
    (f,) = json.loads(out)["result"]["result"]["checks"][0]["findings"]
    assert f["status"] == "ERROR" and "recording has no answer" in f["message"]


def test_bad_recordings_are_input_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for text in (
        "nope",
        "{}",
        '{"version": 9, "calls": {}}',
        '{"version": 1, "calls": {}, "clock": "yesterday"}',
    ):
        p = tmp_path / "r.json"
        p.write_text(text)
        code, _, err = cli("audit", "--only", "host", "--replay", str(p))
        assert code == 2 and "recording" in err and "Traceback" not in err
    code, _, err = cli("audit", "--record", str(tmp_path / "a"), "--replay", str(tmp_path / "b"))
    assert code == 2


def test_recordings_keep_no_secrets(cli, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EDGESEC_TEST_API_TOKEN", "tok-very-secret-123")
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pw-secret-456@198.51.100.9:3128")
    rec = tmp_path / "rec.json"
    code, out, _ = cli("--json", "audit", "--only", "egress.proxy", "--record", str(rec))
    text = rec.read_text()
    assert "tok-very-secret-123" not in text and "pw-secret-456" not in text
    assert "EDGESEC_TEST_API_TOKEN" in text  # the name stays, so replay sees the same variables
    # The live run saw the proxy (and reported it with credentials masked).
    live = json.loads(out)["result"]["result"]["checks"][0]["findings"]
    assert any(f["resource"] == "environment" and f["status"] == "FAIL" for f in live)
    code2, out2, _ = cli("--json", "audit", "--only", "egress.proxy", "--replay", str(rec))
    replay = json.loads(out2)["result"]["result"]["checks"][0]["findings"]
    assert {(f["resource"], f["status"]) for f in replay} == {(f["resource"], f["status"]) for f in live}
    assert code2 == code
