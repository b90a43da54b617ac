"""JUnit XML: one ``testsuite`` per check family, one ``testcase`` per check.

A check's worst status decides its testcase: FAIL -> ``failure``, ERROR -> ``error``, SKIP -> ``skipped``,
WARN -> ``skipped`` whose message starts with ``WARN:`` (JUnit has no warning, and both schemas allow only
skipped/error/failure in a testcase: a WARN is never a bare passing testcase); PASS and WAIVED pass (WAIVED
findings are listed in the suite's ``system-out``). The output validates against both the Jenkins xUnit and
the Ant JUnit schemas.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any


def _details(findings: list[Mapping[str, Any]], statuses: set[str]) -> str:
    lines = []
    for f in findings:
        if f["status"] in statuses:
            res = f" [{f['resource']}]" if f.get("resource") else ""
            lines.append(f"{f['status']} {f['severity']}{res}: {f['message']}")
            if f.get("remediation"):
                lines.append(f"  remediation: {f['remediation']}")
    return "\n".join(lines)


def render(result: Mapping[str, Any], lang: str = "en") -> str:
    run = result["run"]
    started = dt.datetime.fromisoformat(run["started"]).astimezone(dt.UTC)
    families: dict[str, list[Mapping[str, Any]]] = {}
    for c in result["checks"]:
        families.setdefault(c["family"], []).append(c)
    root = ET.Element("testsuites")
    for i, (fam, checks) in enumerate(sorted(families.items())):
        counts = {s: sum(1 for c in checks if c["status"] == s) for s in ("FAIL", "ERROR", "SKIP", "WARN")}
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": f"edgesec.{fam}",
                "package": f"edgesec.{fam}",
                "id": str(i),
                "tests": str(len(checks)),
                "failures": str(counts["FAIL"]),
                "errors": str(counts["ERROR"]),
                "skipped": str(counts["SKIP"] + counts["WARN"]),
                "time": f"{sum(c['duration_s'] for c in checks):.3f}",
                "timestamp": started.strftime("%Y-%m-%dT%H:%M:%S"),
                "hostname": run["host"] or "localhost",
            },
        )
        props = ET.SubElement(suite, "properties")
        for name, value in (
            ("profile", run["profile"]),
            ("run", run["id"]),
            ("verdict", result["summary"]["verdict"]),
        ):
            ET.SubElement(props, "property", {"name": name, "value": str(value)})
        notes = []
        for c in checks:
            tc = ET.SubElement(
                suite,
                "testcase",
                {"name": c["id"], "classname": f"edgesec.{fam}", "time": f"{c['duration_s']:.3f}"},
            )
            first = next((f for f in c["findings"] if f["status"] == c["status"]), c["findings"][0])
            if c["status"] == "FAIL":
                el = ET.SubElement(tc, "failure", {"type": c["severity"], "message": first["message"]})
                el.text = _details(c["findings"], {"FAIL"})
            elif c["status"] == "ERROR":
                el = ET.SubElement(tc, "error", {"type": "check-error", "message": first["message"]})
                el.text = _details(c["findings"], {"ERROR"})
            elif c["status"] == "SKIP":
                ET.SubElement(tc, "skipped", {"message": first["message"]})
            elif c["status"] == "WARN":
                el = ET.SubElement(tc, "skipped", {"message": f"WARN: {first['message']}"})
                el.text = _details(c["findings"], {"WARN"})
            text = _details(c["findings"], {"WARN", "WAIVED"})
            if text:
                notes.append(f"{c['id']}:\n{text}")
        ET.SubElement(suite, "system-out").text = "\n".join(notes)
        ET.SubElement(suite, "system-err").text = ""
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
