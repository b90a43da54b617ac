"""Helpers for the runner tests: tiny checks whose behaviour a test controls, and a catalog of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity
from edgesec.checks.registry import Catalog


def _meta(cid: str, sev: Severity = Severity.HIGH, timeout: float | None = None) -> CheckMeta:
    return CheckMeta(
        id=cid,
        title=f"test check {cid}",
        severity=sev,
        rationale="used by the runner tests",
        remediation="fix the test fixture",
        controls=("pci-dss-4.0:1.3.2",),
        timeout_s=timeout,
    )


class FileState(Check):
    """PASS/FAIL from a file the test writes (so two runs can differ)."""

    meta = _meta("demo.file-state")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        path = ctx.param(self.meta.id, "path", None) or str(ctx.home / "state.txt")
        text = (ctx.system.read_text(path) or "").strip()
        for line in text.splitlines():
            res, _, status = line.partition("=")
            ev = {"value": status}
            if status.startswith("bad"):
                yield self.failed(f"{res} is bad", resource=res, evidence=ev)
            else:
                yield self.passed(f"{res} is fine", resource=res, evidence=ev)
        if not text:
            yield self.skipped("no state file")


class Raises(Check):
    meta = _meta("demo.raises")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        raise RuntimeError("boom: the probe answered nonsense")


class Hangs(Check):
    meta = _meta("demo.hangs", timeout=0.5)

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        time.sleep(30)
        yield self.passed("never reached")


class Silent(Check):
    meta = _meta("demo.silent")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        return iter(())


class LowFail(Check):
    meta = _meta("demo.low-fail", Severity.LOW)

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        yield self.failed("a low-severity problem", resource="thing")


class Passes(Check):
    meta = _meta("demo.passes")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        yield self.passed("all good")


class Warns(Check):
    meta = _meta("demo.warns")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        yield self.warned("cannot prove sealed: an unknown construct", resource="thing")


class Skips(Check):
    meta = _meta("demo.skips")

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        yield self.skipped("not applicable here: no such part")


ALL = [FileState, Raises, Hangs, Silent, LowFail, Passes, Warns, Skips]


def catalog_of(*classes: type[Check]) -> Catalog:
    cat = Catalog()
    for c in classes:
        cat.add(c, "tests")
    return cat


@pytest.fixture
def use_checks(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make ``edgesec audit`` and ``checks list`` load only the given checks."""
    import edgesec.checks.audit as audit_mod
    import edgesec.checks.registry as registry

    def install(*classes: type[Check]) -> None:
        cat = catalog_of(*classes)
        monkeypatch.setattr(audit_mod, "load_catalog", lambda: cat)
        monkeypatch.setattr(registry, "load_catalog", lambda **_: cat)

    return install


@pytest.fixture
def demo_profile(tmp_path: Path) -> Path:
    p = tmp_path / "demo.toml"
    p.write_text(
        'id = "demo"\ntitle = "Demo"\nselect = ["demo"]\n'
        "[[frameworks]]\n"
        'id = "pci-dss-4.0"\ntitle = "PCI DSS 4.0"\n'
        'controls = [ { id = "1.3.2", title = "Outbound", checks = ["demo.file-state"] },'
        ' { id = "10.6.1", title = "Time", checks = ["demo.passes"] },'
        ' { id = "99", title = "Nothing installed", checks = ["other.*"] } ]\n'
    )
    return p
