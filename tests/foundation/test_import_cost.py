"""``import edgesec.config`` loads the settings schema, not the parts: no trail writer, no exit or fork hooks."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import atexit, json, sys
before = atexit._ncallbacks()
import edgesec.config
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("edgesec")),
                  "atexit": atexit._ncallbacks() - before}))
"""

# Modules that hold writers, caches with fork hooks or exit hooks: loaded when used, never by the config.
HEAVY = (
    "edgesec.auditing.trail",
    "edgesec.auditing.ecs",
    "edgesec.auditing.prepared",
    "edgesec.auditing.syslog",
    "edgesec.authz.service",
    "edgesec.authz.engine",
    "edgesec.pki.ca",
    "edgesec.pki.inventory",
    "edgesec.checks.registry",
    "edgesec._console",
)


def _probe(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_importing_the_config_loads_no_part() -> None:
    got = _probe(PROBE)
    modules = set(got["modules"])  # type: ignore[call-overload]
    assert "edgesec.config" in modules and "edgesec.auditing.settings" in modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert got["atexit"] == 0


def test_the_probe_sees_a_heavy_import() -> None:
    """The probe is able to fail: importing the audit API's writer does register the exit hook."""
    got = _probe(PROBE.replace("import edgesec.config", "import edgesec.config, edgesec.auditing.trail"))
    assert "edgesec.auditing.trail" in got["modules"]  # type: ignore[operator]
    assert got["atexit"] >= 1  # type: ignore[operator]


def test_the_audit_api_names_still_resolve() -> None:
    """``from edgesec.auditing import AuditEvent, Trail`` works; the classes load on first use."""
    code = (
        "import json, sys\nimport edgesec.auditing as a\nfirst = 'edgesec.auditing.trail' in sys.modules\n"
        "from edgesec.auditing import AuditEvent, Trail, TrailWriteFailed\n"
        "print(json.dumps({'first': first, 'names': [AuditEvent.__name__, Trail.__name__, "
        "TrailWriteFailed.__name__]}))"
    )
    got = _probe(code)
    assert got == {"first": False, "names": ["AuditEvent", "Trail", "TrailWriteFailed"]}
