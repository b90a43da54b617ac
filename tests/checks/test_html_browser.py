"""The HTML report in headless Chromium: it renders, prints, logs no errors and requests nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesec.checks.reports import html
from tests.checks.cdp import load_page
from tests.checks.test_reports import full_result  # noqa: F401 - the fixture


@pytest.mark.root
@pytest.mark.real("chromium", "unshare")
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_report_in_chromium(full_result, tmp_path: Path, lang: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page = tmp_path / "edgesec-report.html"
    page.write_text(html.render(full_result, lang))
    rep = load_page(page, tmp_path / "profile")
    # The only request is the file itself: no CDN, font, script or image from anywhere.
    assert rep.requests == [page.resolve().as_uri()], rep.requests
    assert not rep.exceptions, rep.exceptions
    assert [c for c in rep.console if c["type"] in ("error", "warning", "assert")] == []
    errors = [e for e in rep.log if e.get("level") == "error"]
    assert errors == [], errors
    assert rep.screenshot.startswith(b"\x89PNG") and len(rep.screenshot) > 20_000
    (tmp_path / f"report-{lang}.png").write_bytes(rep.screenshot)
    assert rep.pdf.startswith(b"%PDF") and rep.pdf.count(b"/Type /Page") >= 1
