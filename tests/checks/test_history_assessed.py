"""Changes between runs are computed only between assessed results (issue #20 attack 6).

A check that found twelve open routes and then ERRORed (a timed-out run) did not find them fixed: the
second run assessed nothing. It is "not assessed this run", never "fixed", in the result, the summary
line and the HTML report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesec.checks.interface import Check, CheckContext, Finding
from edgesec.checks.result import diff
from tests.checks.conftest import Passes, _meta


class Routes(Check):
    """Twelve open routes, or an error, or not applicable, as the test's file says."""

    meta = _meta("demo.routes")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        mode = (ctx.system.read_text(str(ctx.home / "mode.txt")) or "").strip()
        if mode == "error":
            raise RuntimeError("the probe timed out")
        if mode == "skip":
            yield self.skipped("no network namespace support")
            return
        for i in range(12):
            yield self.failed(f"route to 192.0.2.{i} is open", resource=f"192.0.2.{i}")


def _audit(cli: Any, profile: Path) -> dict[str, Any]:
    code, out, err = cli("--json", "audit", "--profile", str(profile), "--report", "html", "--out", "r/")
    assert code in (0, 1, 3), (
        err,
        [(c["id"], c["status"]) for c in json.loads(out)["result"]["result"]["checks"]],
    )
    return json.loads(out)["result"]["result"]  # type: ignore[no-any-return]


def _profile(tmp_path: Path) -> Path:
    p = tmp_path / "routes.toml"
    p.write_text('id = "routes"\ntitle = "Routes"\nselect = ["demo"]\n')
    return p


def test_an_errored_or_skipped_check_is_not_assessed_never_fixed(
    cli: Any, use_checks: Any, home: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    use_checks(Routes, Passes)
    profile = _profile(tmp_path)
    (home / "mode.txt").write_text("open")
    first = _audit(cli, profile)
    assert sum(1 for c in first["checks"] for f in c["findings"] if f["status"] == "FAIL") == 12
    for mode in ("error", "skip"):
        (home / "mode.txt").write_text(mode)
        res = _audit(cli, profile)
        ch = res["changes"]
        assert ch["against"] is not None
        assert ch["fixed"] == [] and ch["new_failures"] == [] and ch["status_changes"] == [], ch
        (na,) = ch["not_assessed"]
        assert na["check_id"] == "demo.routes" and na["before"] == "FAIL"
        assert na["after"] == ("ERROR" if mode == "error" else "SKIP")
        html = (tmp_path / "r" / "edgesec-report.html").read_text()
        assert "Fixed (0)" in html and "Not assessed this run" in html and "(1)" in html
        # Back to the first state so the next mode compares with an assessed run again.
        (home / "mode.txt").write_text("open")
        again = _audit(cli, profile)
        # Compared with a run that assessed nothing: the twelve are not "new failures" either.
        assert again["changes"]["not_assessed"] == [] and again["changes"]["new_failures"] == []


def test_diff_compares_only_checks_assessed_in_both() -> None:
    def res(status: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
        return {"run": {"id": "x"}, "checks": [{"id": "e.routes", "status": status, "findings": findings}]}

    failing = res("FAIL", [{"check_id": "e.routes", "status": "FAIL", "resource": "r1", "message": "open"}])
    errored = res(
        "ERROR", [{"check_id": "e.routes", "status": "ERROR", "resource": None, "message": "timeout"}]
    )
    passing = res("PASS", [{"check_id": "e.routes", "status": "PASS", "resource": "r1", "message": "closed"}])
    d = diff(failing, errored, source="s")
    assert d["fixed"] == [] and [c["message"] for c in d["not_assessed"]] == ["timeout"]
    # Coming back from an error is not a "new failure" either: the errored run knew nothing.
    assert diff(errored, failing, source="s")["new_failures"] == []
    # A real fix between two assessed runs is still a fix.
    assert [c["resource"] for c in diff(failing, passing, source="s")["fixed"]] == ["r1"]


def test_out_with_a_trailing_slash_is_a_directory(
    cli: Any, use_checks: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Issue #20 section 9: ``--out newdir/`` used to write a *file* called newdir."""
    monkeypatch.chdir(tmp_path)
    use_checks(Passes)
    code, _, err = cli("audit", "--profile", str(_profile(tmp_path)), "--report", "html", "--out", "newdir/")
    assert code == 0, err
    assert (tmp_path / "newdir" / "edgesec-report.html").is_file()
