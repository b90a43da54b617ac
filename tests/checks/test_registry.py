"""Discovery: built-in families plus a site's own checks from the ``edgesec.checks`` entry-point group."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgesec.checks.interface import CheckMeta, Severity
from edgesec.checks.profiles import available_profiles, expand, load_profile
from edgesec.checks.registry import load_catalog

PLUGIN = """
from edgesec.checks.interface import Check, CheckMeta, Severity

class SiteRule(Check):
    meta = CheckMeta(id="site.banner", title="Login banner present", severity=Severity.LOW,
                     rationale="Site policy requires a banner.", remediation="Write /etc/issue.net.")
    def run(self, ctx):
        text = ctx.system.read_text("/etc/issue.net")
        yield self.passed("banner present") if text else self.failed("no banner", resource="/etc/issue.net")

class BadMeta(Check):
    meta = CheckMeta(id="Not An Id", title="x", severity=Severity.LOW, rationale="x", remediation="x")
    def run(self, ctx):
        return []

class Clash(Check):
    meta = CheckMeta(id="host.auditd", title="x", severity=Severity.LOW, rationale="x", remediation="x")
    def run(self, ctx):
        return []

CHECKS = [SiteRule, BadMeta, Clash]
"""


@pytest.fixture
def site_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site_checks.py").write_text(PLUGIN)
    (tmp_path / "broken_checks.py").write_text("raise ImportError('needs a library this site lacks')\n")
    dist = tmp_path / "site_checks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: site-checks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[edgesec.checks]\nsite = site_checks\nbroken = broken_checks\ndup = edgesec.checks.families.host\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for m in ("site_checks", "broken_checks"):
        sys.modules.pop(m, None)


def test_entry_points_load_and_problems_are_reported(site_plugins: None) -> None:
    cat = load_catalog()
    assert "site.banner" in cat.checks and cat.origin["site.banner"].startswith("entry point site")
    assert "egress.routes" in cat.checks and cat.origin["egress.routes"] == "edgesec.checks.families.egress"
    problems = " | ".join(f"{p.source}: {p.message}" for p in cat.problems)
    assert "Not An Id" in problems
    assert "needs a library this site lacks" in problems
    assert "check id host.auditd is already defined by edgesec.checks.families.host" in problems
    # The same class registered twice is not a duplicate; it keeps its first origin.
    assert cat.origin["host.auditd"] == "edgesec.checks.families.host"


def test_a_broken_plugin_makes_the_verdict_incomplete(cli, site_plugins: None) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("--json", "audit", "--only", "site")
    res = json.loads(out)["result"]["result"]
    assert code == 3
    statuses = {c["id"]: c["status"] for c in res["checks"]}
    assert statuses["site.banner"] in ("PASS", "FAIL")
    assert sorted(s for cid, s in statuses.items() if cid.startswith("runner.load")) == [
        "ERROR",
        "ERROR",
        "ERROR",
    ]
    code, out, _ = cli("--json", "checks", "list")
    assert code == 3 and len(json.loads(out)["result"]["load_problems"]) == 3


def test_meta_validation() -> None:
    ok = CheckMeta(
        "egress.x", "t", Severity.LOW, "r", "m", controls=("pci-dss-4.0:1.3.2", "hipaa:164.312(b)")
    )
    ok.validate()
    for bad in (
        CheckMeta("egress", "t", Severity.LOW, "r", "m"),
        CheckMeta("egress.x", " ", Severity.LOW, "r", "m"),
        CheckMeta("egress.x", "t", Severity.LOW, "r", "m", controls=("1.3.2",)),
        CheckMeta("egress.x", "t", Severity.LOW, "r", "m", timeout_s=0),
    ):
        with pytest.raises(Exception, match="check"):
            bad.validate()


def test_shipped_profiles_are_valid_and_map_real_checks() -> None:
    assert set(available_profiles()) >= {"baseline", "bank", "clinic", "factory"}
    cat = load_catalog(entry_points=False)
    families = {"pki", "gpu", "models", "authz", "auditing"}  # owned by other parts; mapped by pattern
    frameworks = {
        "bank": {"pci-dss-4.0", "mlps-2.0-l3"},
        "clinic": {"hipaa", "mlps-2.0-l3"},
        "factory": {"iec-62443-3-3", "mlps-2.0-l3"},
        "baseline": set(),
    }
    for name, fws in frameworks.items():
        prof = load_profile(name)
        assert {f.id for f in prof.frameworks} == fws
        for fw in prof.frameworks:
            for ctl in fw.controls:
                for pat in ctl.checks:
                    assert expand([pat], cat.checks) or pat.split(".")[0] in families, (name, ctl.id, pat)
        for cid in prof.checks:
            assert cid in cat.checks or cid in families, (name, cid)
    # Every control a check's metadata names exists in the profiles that score that framework.
    for name in ("bank", "clinic", "factory"):
        prof = load_profile(name)
        known = {f"{fw.id}:{c.id}" for fw in prof.frameworks for c in fw.controls}
        fw_ids = {fw.id for fw in prof.frameworks}
        for cid, cls in cat.checks.items():
            if cid.split(".")[0] not in ("egress", "host"):
                continue  # other parts' checks are theirs to map
            for ref in cls.meta.controls:
                if ref.split(":")[0] in fw_ids:
                    assert ref in known, (name, cid, ref)


def test_bad_profiles_are_config_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for text in ("id = 'x'\n", "id = 'x'\ntitle='t'\nselect=['egress']\nsurprise=1\n", "not toml ["):
        p = tmp_path / "p.toml"
        p.write_text(text)
        code, _, err = cli("audit", "--profile", str(p))
        assert code == 2 and "profile" in err and "Traceback" not in err


# Family modules not (yet) under edgesec/checks/families/: none left. Should one ever have to wait, list it
# here (module -> family id); the test fails when a listed one has moved, so the list stays exact.
NOT_YET_UNDER_FAMILIES: dict[str, str] = {}


def test_every_family_module_is_named_by_its_id() -> None:
    """One module (or package) per family, named by the id its checks carry: edgesec.checks.families.<id>."""
    import importlib

    import edgesec.checks.families
    from edgesec.checks.registry import BUILTIN_FAMILY_MODULES, KNOWN_FAMILIES

    seen: dict[str, str] = {}
    for name in BUILTIN_FAMILY_MODULES:
        module = importlib.import_module(name)
        families = {cls.meta.family for cls in module.CHECKS}
        assert len(families) == 1, f"{name} holds checks of several families: {sorted(families)}"
        (family,) = families
        listed = NOT_YET_UNDER_FAMILIES.get(name) == family
        want = name if listed else f"edgesec.checks.families.{family}"
        assert name == want, f"the {family!r} family lives in {name}; move it to {want}"
        seen[family] = name
    assert sorted(seen) == sorted(KNOWN_FAMILIES)
    # Nothing under families/ that the registry does not load (a family no run would ever see).
    root = Path(edgesec.checks.families.__file__).parent
    on_disk = {p.stem for p in root.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in root.glob("*/__init__.py")
    }
    assert on_disk == {
        n.split(".")[-1] for n in BUILTIN_FAMILY_MODULES if n.startswith("edgesec.checks.families.")
    }
    # The not-yet list is exact: a family that has moved is no longer listed.
    assert set(NOT_YET_UNDER_FAMILIES) <= set(BUILTIN_FAMILY_MODULES), (
        "moved: drop it from NOT_YET_UNDER_FAMILIES"
    )
