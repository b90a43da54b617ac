"""Profile rules are data: a site profile that extends a shipped one gets its rules, never the lax defaults;
the registry refuses a control reference that names no framework (it would never be scored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgesec.checks import registry
from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity
from edgesec.checks.profiles import available_profiles, load_profile, shipped_frameworks
from edgesec.errors import ConfigError, NotFound

BANK_RULES = {
    ("gpu.mig", "require_mig"): True,
    ("gpu.driver-eol", "fail_past_eol"): True,
    ("auditing.retention", "min_days"): 365,
    ("auditing.auditd-immutable", "required"): True,
}


def _rules(params: dict[str, dict[str, Any]]) -> dict[tuple[str, str], Any]:
    ctx = CheckContext(system=None, clock=None, config=None, params=params)  # type: ignore[arg-type]
    return {(cid, name): ctx.param(cid, name, "unset") for cid, name in BANK_RULES}


def test_bank_states_its_rules_in_its_file() -> None:
    assert _rules(load_profile("bank").params()) == BANK_RULES
    # The baseline asks for none of them: the lax defaults are the baseline's, by saying nothing.
    assert set(_rules(load_profile("baseline").params()).values()) == {"unset"}


def test_a_site_profile_extending_bank_gets_bank_rules(tmp_path: Path) -> None:
    p = tmp_path / "bank-hq.toml"
    p.write_text('id = "bank-hq"\nextends = "bank"\ntitle = "Bank HQ"\n')
    hq, bank = load_profile(str(p)), load_profile("bank")
    assert hq.id == "bank-hq" and hq.title == "Bank HQ" and hq.title_zh is None
    assert _rules(hq.params()) == BANK_RULES
    assert hq.select == bank.select and hq.frameworks == bank.frameworks and hq.fail_on == bank.fail_on
    assert hq.audit_log == bank.audit_log and hq.audit_log is not None and hq.audit_log.retention_days == 365
    assert hq.severity_of("egress.dns", Severity.LOW) == Severity.HIGH


def test_a_child_tightens_one_rule_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "hq.toml").write_text(
        'id = "hq"\nextends = "bank"\ntitle = "HQ"\n'
        "[checks.gpu]\nparams = { fail_past_eol = false }\n"
        '[checks."auditing.retention"]\nparams = { min_days = 730 }\n'
        "[audit_log]\nretention_days = 730\n"
    )
    # A grandchild by relative path: resolved beside the file that names it.
    (tmp_path / "hq-lab.toml").write_text('id = "hq-lab"\nextends = "./hq.toml"\ntitle = "HQ lab"\n')
    (tmp_path / "hq-dev.toml").write_text('id = "hq-dev"\nextends = "hq.toml"\ntitle = "HQ dev"\n')
    for name in ("hq.toml", "hq-lab.toml", "hq-dev.toml"):
        prof = load_profile(str(tmp_path / name))
        rules = _rules(prof.params())
        assert rules[("gpu.mig", "require_mig")] is True  # kept from bank's [checks.gpu]
        assert rules[("gpu.driver-eol", "fail_past_eol")] is False
        assert rules[("auditing.retention", "min_days")] == 730
        assert prof.audit_log is not None and prof.audit_log.retention_days == 730
        assert "10.5.1" in prof.audit_log.retention_reason  # the reason is bank's


def test_extends_errors_are_one_line_config_errors(tmp_path: Path, cli: Any) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('id = "a"\ntitle = "A"\nextends = "./b.toml"\n')
    b.write_text('id = "b"\ntitle = "B"\nextends = "./a.toml"\n')
    with pytest.raises(ConfigError, match="extends itself"):
        load_profile(str(a))
    c = tmp_path / "c.toml"
    c.write_text('id = "c"\ntitle = "C"\nextends = "bankk"\n')
    with pytest.raises(NotFound, match="unknown profile 'bankk'"):
        load_profile(str(c))
    c.write_text('id = "c"\ntitle = "C"\nextends = 3\n')
    with pytest.raises(ConfigError, match="extends"):
        load_profile(str(c))
    for prof in (a, c):
        code, _, err = cli("audit", "--profile", str(prof))
        assert code == 2 and "profile" in err and "Traceback" not in err


def test_retention_kept_covers_retention_required() -> None:
    """What the pipeline keeps (``[audit_log]``) is at least what the profile's check requires."""
    for name in available_profiles():
        prof = load_profile(name)
        assert prof.audit_log is not None, name
        assert prof.audit_log.retention_days >= prof.param("auditing.retention", "min_days", 0), name


def test_gen_elastic_takes_retention_from_an_extending_profile(cli: Any, tmp_path: Path, home: Path) -> None:
    (tmp_path / "bank-hq.toml").write_text('id = "bank-hq"\nextends = "bank"\ntitle = "Bank HQ"\n')
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(f'[site]\nprofile = "{tmp_path / "bank-hq.toml"}"\n')
    code, out, err = cli(
        "--config", str(cfg), "--json", "auditlog", "gen", "elastic", "--out", str(tmp_path / "es")
    )
    assert code == 0, err
    res = json.loads(out)["result"]
    assert res["retention_days"] == 365 and "10.5.1" in res["retention_reason"]
    # A profile that states no retention and extends none: refused, never a silent default.
    (tmp_path / "bare.toml").write_text('id = "bare"\ntitle = "Bare"\nselect = ["host"]\n')
    cfg.write_text(f'[site]\nprofile = "{tmp_path / "bare.toml"}"\n')
    code, _, err = cli("--config", str(cfg), "auditlog", "gen", "elastic", "--out", str(tmp_path / "es2"))
    assert code == 2 and "no log retention known" in err and "Traceback" not in err


def _check_with(controls: tuple[str, ...]) -> type[Check]:
    class Site(Check):
        meta = CheckMeta(
            id="site.rule",
            title="t",
            severity=Severity.LOW,
            rationale="r",
            remediation="m",
            controls=controls,
        )

        def run(self, ctx: CheckContext) -> list[Finding]:
            return []

    return Site


@pytest.mark.parametrize("bad", ["mlps-2.0:8.1.4.6", "hipaa-164.312:(a)(2)(iv)", "pci-dss-3.2:1.1"])
def test_registry_refuses_a_control_naming_no_framework(bad: str) -> None:
    cat = registry.Catalog()
    cat.add(_check_with(("pci-dss-4.0:1.3.2", bad)), "site plug-in")
    assert "site.rule" not in cat.checks
    assert (
        len(cat.problems) == 1
        and bad in cat.problems[0].message
        and "names no framework" in cat.problems[0].message
    )
    good = registry.Catalog()
    good.add(_check_with(("pci-dss-4.0:1.3.2", "mlps-2.0-l3:8.1.4.6", "hipaa:164.312(b)")), "site plug-in")
    assert "site.rule" in good.checks and not good.problems


def test_every_builtin_check_loads_and_names_known_frameworks() -> None:
    cat = registry.load_catalog(entry_points=False)
    assert not cat.problems
    assert {"pci-dss-4.0", "mlps-2.0-l3", "hipaa", "iec-62443-3-3"} <= shipped_frameworks()
    refs = {c for cls in cat.checks.values() for c in cls.meta.controls}
    assert "hipaa:164.312(a)(2)(iv)" in refs and "mlps-2.0-l3:8.1.4.6" in refs
