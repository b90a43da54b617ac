"""Hardened systemd units for replicas (checked by systemd-analyze) and audit results for Elasticsearch."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgesec.auditing.results_template import render_template, result_documents
from edgesec.authz.gen import TRAEFIK_STATIC
from edgesec.deploy.units import PROXY_NAME, UNIT_NAME, UnitOptions, render_units
from edgesec.errors import InputError


def _exe(tmp_path: Path) -> str:
    found = shutil.which("edgesec")
    if found:
        return found
    wrapper = tmp_path / "bin" / "edgesec"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m edgesec "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.real("systemd-analyze")
def test_replica_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    opts = UnitOptions(
        executable=_exe(tmp_path), ca_store="/var/lib/edgesec/pki", trail_dir="/var/lib/edgesec/audit"
    )
    files = render_units(opts)
    unit = files[UNIT_NAME]
    # A template is verified through an instance: the port is the instance name.
    inst = tmp_path / "edgesec-authz@9101.service"
    inst.write_text(unit)
    cp = subprocess.run(
        ["systemd-analyze", "verify", str(inst)], capture_output=True, text=True, timeout=60, check=False
    )
    # In a container without a running systemd, verify may only complain that it cannot talk to the
    # manager; anything about the unit itself is a failure.
    problems = [ln for ln in cp.stderr.splitlines() if ln.strip() and "Failed to connect to bus" not in ln]
    assert cp.returncode == 0 or not problems, cp.stderr
    assert problems == [], cp.stderr
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(inst)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    if m is not None:  # --offline needs systemd >= 252; older ones cannot score a unit file
        assert float(m.group(1)) <= 2.0, sec.stdout[-1500:]
    directives = dict(
        ln.split("=", 1)
        for ln in unit.splitlines()
        if "=" in ln and not ln.startswith("#") and not ln.startswith("SystemCallFilter")
    )
    assert directives["User"] == "edgesec-authz" and directives["User"] != "root"
    assert directives["ProtectSystem"] == "strict"
    assert directives["NoNewPrivileges"] == "yes"
    assert (
        directives["InaccessiblePaths"] == "-/var/lib/edgesec/pki"
    )  # no read, let alone write, of the CA store
    assert directives["ReadWritePaths"] == "/var/lib/edgesec/audit"
    assert directives["CapabilityBoundingSet"] == ""
    assert "--host 127.0.0.1 --port %i" in directives["ExecStart"]
    assert (
        files["edgesec-authz.sysusers.conf"].startswith("# edgesec")
        and "u edgesec-authz" in files["edgesec-authz.sysusers.conf"]
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"user": "Root!"},
        {"executable": "relative/edgesec"},
        {"config": "/etc/edge sec.toml"},
        {"trail_dir": "/var/lib/$HOME"},
        {"host": "0.0.0.0; rm -rf /"},
        {"traefik": "traefik"},
        {"proxy_dir": "/etc/traefik/$x"},
    ],
)
def test_unit_options_refuse_what_a_unit_cannot_hold(bad: dict[str, str]) -> None:
    with pytest.raises(InputError):
        render_units(UnitOptions(**bad))


def test_units_cli_writes_and_never_overwrites(cli: Any, tmp_path: Path) -> None:
    code, _out, err = cli("site", "units", "--out", str(tmp_path / "units"))
    assert code == 0, err
    assert (tmp_path / "units" / UNIT_NAME).is_file()
    code, _, err = cli("site", "units", "--out", str(tmp_path / "units"))
    assert code == 1 and "refusing to overwrite" in err
    code, _, err = cli("site", "units", "--out", str(tmp_path / "u2"), "--user", "Bad User")
    assert code == 2 and "not a valid system account" in err


@pytest.mark.real("systemd-analyze")
def test_proxy_unit_runs_the_static_config_gen_traefik_writes(tmp_path: Path) -> None:
    """The go-live's proxy: `authz gen traefik --out DIR` writes DIR/edgesec-static.yml (naming the dynamic
    file beside it); the unit runs Traefik on exactly that file, and nothing else binds or writes."""
    traefik = tmp_path / "traefik"
    traefik.write_text("#!/bin/sh\n")
    traefik.chmod(0o755)
    unit = render_units(UnitOptions(executable=_exe(tmp_path), traefik=str(traefik)))[PROXY_NAME]
    path = tmp_path / PROXY_NAME
    path.write_text(unit)
    cp = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [ln for ln in cp.stderr.splitlines() if ln.strip() and "Failed to connect to bus" not in ln]
    assert problems == [], cp.stderr
    directives = dict(ln.split("=", 1) for ln in unit.splitlines() if "=" in ln and not ln.startswith("#"))
    assert directives["ExecStart"] == f"{traefik} --configFile=/etc/traefik/edgesec/{TRAEFIK_STATIC}"
    assert directives["ConditionPathExists"] == f"/etc/traefik/edgesec/{TRAEFIK_STATIC}"
    assert directives["ProtectSystem"] == "strict" and directives["NoNewPrivileges"] == "yes"
    assert directives["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    if m is not None:  # --offline needs systemd >= 252
        assert float(m.group(1)) <= 3.0, sec.stdout[-1500:]


def _mapped_paths(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for k, v in props.items():
        if "properties" in v:
            out.update(_mapped_paths(v["properties"], f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _leaves(doc: dict[str, Any], mapped: dict[str, dict[str, Any]], prefix: str = "") -> list[str]:
    unmapped = []
    for k, v in doc.items():
        path = f"{prefix}{k}"
        if path in mapped:
            continue
        if isinstance(v, dict):
            unmapped += _leaves(v, mapped, path + ".")
        else:
            unmapped.append(path)
    return unmapped


def test_results_template_and_documents_fit_the_spec(cli: Any, tmp_path: Path, conformance: Path) -> None:
    pytest.importorskip("yaml")
    from tests.auditing.esmock import BULK_META, BodySpec, EcsSchema

    template = render_template("edgesec")
    assert (
        BodySpec(conformance / "elasticsearch" / "ts-8.19").check(
            "/_index_template/edgesec-results", template
        )
        is None
    )
    assert template["template"]["settings"]["index.lifecycle.name"] == "edgesec-retention"
    mapped = _mapped_paths(template["template"]["mappings"]["properties"])

    code, _, err = cli(
        "audit",
        "--profile",
        "bank",
        "--only",
        "authz",
        "--only",
        "auditing",
        "--report",
        "json",
        "--out",
        str(tmp_path / "r.json"),
    )
    assert code in (0, 1), err
    result = json.loads((tmp_path / "r.json").read_text())
    docs = list(result_documents(result, site="branch-042"))
    n_findings = sum(len(c["findings"]) for c in result["checks"])
    assert len(docs) == n_findings > 0
    ecs = EcsSchema(conformance / "ecs")
    for index, doc_id, doc in docs:
        assert fnmatch.fnmatchcase(index, template["index_patterns"][0])
        assert doc_id.startswith(str(result["run"]["id"]))
        assert ecs.check(doc) == [], doc
        assert _leaves(doc, mapped) == []  # the mapping is strict: every field must be in it
        assert doc["edgesec"]["site"] == "branch-042" and doc["edgesec"]["result"]["profile"] == "bank"
    ids = [d for _, d, _ in docs]
    assert len(set(ids)) == len(ids)
    policy = [d for _, _, d in docs if d["rule"]["id"] == "authz.policy"]
    assert policy and "pci-dss-4.0:8.2.1" in policy[0]["edgesec"]["result"]["controls"]
    assert "mlps-2.0-l3" in policy[0]["edgesec"]["result"]["frameworks"]

    code, _out, err = cli(
        "site", "results-docs", str(tmp_path / "r.json"), "--out", str(tmp_path / "bulk.ndjson")
    )
    assert code == 0, err
    lines = (tmp_path / "bulk.ndjson").read_text().splitlines()
    assert len(lines) == 2 * n_findings
    for action in lines[::2]:
        ((op, meta),) = json.loads(action).items()
        assert op == "create" and set(meta) <= set(BULK_META["create"])
    code, _, err = cli("site", "results-docs", str(tmp_path / "bulk.ndjson"))
    assert code == 2 and "not JSON" in err


def test_results_template_cli(cli: Any, tmp_path: Path) -> None:
    code, out, _ = cli("--json", "site", "results-template")
    assert code == 0
    assert json.loads(out)["result"]["template"]["index_patterns"] == ["edgesec-results-*"]
    code, _, _ = cli("site", "results-template", "--out", str(tmp_path / "t.json"))
    assert code == 0 and json.loads((tmp_path / "t.json").read_text())["priority"] == 200


def test_units_name_the_installed_executable_and_share_the_trail(cli: Any, tmp_path: Path) -> None:
    """Issue #20 attack 3: ExecStart names an executable that exists here; the trail is shared by group."""
    code, out, err = cli("--json", "site", "units", "--out", str(tmp_path / "u"))
    assert code == 0, err
    doc = json.loads(out)["result"]
    exe = doc["executable"]
    assert (
        os.path.isabs(exe)
        and os.access(exe, os.X_OK)
        and exe == os.path.abspath(shutil.which("edgesec") or "")
    )
    unit = (tmp_path / "u" / UNIT_NAME).read_text()
    assert f"ExecStart={exe} authz serve" in unit
    tmpfiles = (tmp_path / "u" / "edgesec-authz.tmpfiles.conf").read_text()
    assert re.search(r"^d /\S+/audit 2770 root edgesec-authz -$", tmpfiles, re.M), tmpfiles
    code, _, err = cli("site", "units", "--out", str(tmp_path / "v"), "--executable", str(tmp_path / "nope"))
    assert code == 2 and "not an executable file" in err and not (tmp_path / "v").exists()


def test_units_cli_names_the_traefik_on_path_and_warns_when_a_home_hides_it(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "opt" / "bin"
    bindir.mkdir(parents=True)
    for name in ("traefik", "edgesec"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    args = ("site", "units", "--executable", str(bindir / "edgesec"), "--out")
    code, _out, err = cli(*args, str(tmp_path / "u1"))
    assert code == 0, err
    unit = (tmp_path / "u1" / PROXY_NAME).read_text()
    assert (
        f"ExecStart={bindir}/traefik --configFile=/etc/traefik/edgesec/{TRAEFIK_STATIC}" in unit.splitlines()
    )
    assert "edgesec-traefik.service hides" not in err
    # The same binary reached through a link into a home directory: the unit's ProtectHome would hide it.
    real = os.path.realpath
    monkeypatch.setattr(
        os.path,
        "realpath",
        lambda p, *a, **k: "/home/ops/traefik" if str(p).endswith("/traefik") else real(p, *a, **k),
    )
    code, _out, err = cli(*args, str(tmp_path / "u2"))
    assert code == 0 and "/home/ops/traefik, under a home directory" in err and "ProtectHome" in err, err
