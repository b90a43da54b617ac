"""The layer order of docs/architecture.md, enforced on every import in edgesec/ (module level, function
level and ``TYPE_CHECKING`` alike): a module imports only from its own part or from parts below it::

    foundation (errors, config + every part's settings schema, _fs, _data, auditing.canonical, pki.signing,
                authz.headers)
      <- pki <- auditing <- authz, models (side by side: neither imports the other) <- checks <- deploy/CLI

deploy (``edgesec/deploy/``: demo, systemd units, schedule) is top: nothing below imports it.

``KNOWN_VIOLATIONS`` lists the wrong-way imports the tree has today, to be emptied by the layout work
that moves modules (phase 2). The test fails when a new one appears *and* when a listed one is gone, so the
list stays exact and only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import edgesec

ROOT = Path(edgesec.__file__).parent

RANK = {"foundation": 0, "pki": 1, "auditing": 2, "authz": 3, "models": 3, "checks": 4, "top": 5}

FOUNDATION = {
    "edgesec",
    "edgesec.errors",
    "edgesec.config",
    "edgesec._fs",
    "edgesec._data",
    "edgesec.audit_sink",
    "edgesec.auditing.canonical",
    "edgesec.pki.signing",
    "edgesec.pki.settings",
    "edgesec.auditing.settings",
    "edgesec.authz.settings",
    "edgesec.authz.headers",
    "edgesec.checks.settings",
}
TOP = {"edgesec.__main__", "edgesec._cli", "edgesec._config_cli", "edgesec._console"}


def part_of(module: str) -> str:
    """The part (and so the layer) a module belongs to."""
    if module in FOUNDATION:
        return "foundation"
    if (
        module in TOP
        or module.endswith(".cli")
        or module == "edgesec.deploy"
        or module.startswith("edgesec.deploy.")
    ):
        return "top"  # the CLI of every part, and deploy (demo, units, schedule)
    parts = module.split(".")
    if parts[1] in ("pki", "auditing", "authz", "models", "checks"):
        return parts[1]
    raise AssertionError(f"{module}: no layer; add it to docs/architecture.md and to this test")


def allowed(importer: str, imported: str) -> bool:
    a, b = part_of(importer), part_of(imported)
    if a == b or b == "foundation":
        return True
    return RANK[a] > RANK[b]


def modules_in(root: Path) -> dict[str, str]:
    """Every module under ``root`` (the ``edgesec`` package directory) and its source."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path.read_text(encoding="utf-8")
    return out


def imports_of(module: str, source: str, known: Iterable[str]) -> set[str]:
    """The edgesec modules ``module`` imports anywhere in its body (``from a import b``: ``a.b`` when that is
    a module, else ``a``)."""
    names = set(known)
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "edgesec")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                # A package's own name is its __init__; a module's relative base is its package.
                pkg = base if _is_package(module, names) else base[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(pkg + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "edgesec":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in names else target)
    out.discard(module)
    return out


def _is_package(module: str, names: set[str]) -> bool:
    return any(n.startswith(module + ".") for n in names)


def violations(sources: Mapping[str, str]) -> set[tuple[str, str]]:
    found = set()
    for module, source in sources.items():
        for imported in imports_of(module, source, sources):
            if imported in sources and not allowed(module, imported):
                found.add((module, imported))
    return found


# Today's wrong-way imports (importer, imported). Phase 2 (moving modules) empties this set; never add to it.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def test_every_module_has_a_layer() -> None:
    for module in modules_in(ROOT):
        part_of(module)


def test_imports_follow_the_layers() -> None:
    found = violations(modules_in(ROOT))
    new = sorted(found - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not new, "imports against the layer order (see docs/architecture.md):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new
    )
    assert not gone, "fixed, remove from KNOWN_VIOLATIONS:\n" + "\n".join(f"  {a} -> {b}" for a, b in gone)


def test_only_the_cli_imports_deploy() -> None:
    """deploy is the top layer: besides itself, only the CLI's entry (``_cli``, which mounts its commands)
    imports it -- not even another part's CLI."""
    sources = modules_in(ROOT)
    importers = {
        module
        for module, source in sources.items()
        if not module.startswith("edgesec.deploy")
        and any(
            i == "edgesec.deploy" or i.startswith("edgesec.deploy.")
            for i in imports_of(module, source, sources)
        )
    }
    assert importers == {"edgesec._cli"}


SYNTHETIC = {
    "edgesec": "",
    "edgesec.errors": "",
    "edgesec.pki": "",
    "edgesec.pki.store": "from edgesec.errors import InputError\n",
    "edgesec.auditing": "",
    "edgesec.auditing.trail": "from edgesec.pki import store\n",
    "edgesec.checks": "",
    "edgesec.checks.runner": "",
    "edgesec.authz": "",
    "edgesec.authz.service": "",
    "edgesec.checks.families.models": "",
    "edgesec.models": "",
    "edgesec.models.api": "",
    "edgesec.deploy": "",
    "edgesec.deploy.schedule": "",
}


@pytest.mark.parametrize(
    ("module", "source", "bad"),
    [
        (
            "edgesec.pki.store",
            "from edgesec.checks.runner import plan\n",
            ("edgesec.pki.store", "edgesec.checks.runner"),
        ),
        (
            "edgesec.pki.store",
            "def f():\n    import edgesec.auditing.trail\n",
            ("edgesec.pki.store", "edgesec.auditing.trail"),
        ),
        (
            "edgesec.pki.store",
            "if True:\n    from ..auditing import trail\n",
            ("edgesec.pki.store", "edgesec.auditing.trail"),
        ),
        ("edgesec.errors", "from edgesec.pki.store import X\n", ("edgesec.errors", "edgesec.pki.store")),
        (
            "edgesec.authz.service",
            "from edgesec.models.api import sign\n",
            ("edgesec.authz.service", "edgesec.models.api"),
        ),
        (
            "edgesec.models.api",
            "from edgesec.authz import service\n",
            ("edgesec.models.api", "edgesec.authz.service"),
        ),
        (
            "edgesec.models.api",
            "from edgesec.checks.families.models import ModelScanCheck\n",
            ("edgesec.models.api", "edgesec.checks.families.models"),
        ),
        (
            "edgesec.checks.runner",
            "from edgesec.deploy.schedule import install_jobs\n",
            ("edgesec.checks.runner", "edgesec.deploy.schedule"),
        ),
        (
            "edgesec.auditing.trail",
            "def f():\n    from edgesec import deploy\n",
            ("edgesec.auditing.trail", "edgesec.deploy"),
        ),
    ],
)
def test_a_wrong_way_import_is_caught(module: str, source: str, bad: tuple[str, str]) -> None:
    tree = dict(SYNTHETIC)
    assert violations(tree) == set()  # downward imports only: pki -> foundation, auditing -> pki
    tree[module] = source
    assert violations(tree) == {bad}
    # And the real test would report it: a new violation is not in KNOWN_VIOLATIONS.
    assert bad not in KNOWN_VIOLATIONS
