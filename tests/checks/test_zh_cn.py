"""Full zh-CN reports (issue #20 attack 8): every check's title, rationale and remediation, and every
finding message, come from the zh-CN catalogue (edgesec/checks/reports/locale/zh-CN.toml).

Two ways a string can be missing, each test naming exactly which: a check or a message template in the
source that the catalogue lacks (static: every ``self.failed(...)``-style call in edgesec/checks, and the
model scanner's findings in edgesec/models that ``models.unsafe-formats`` reports), and a
string in a real zh-CN report that no catalogue entry translates (a fresh audit of this host, and the
recorded H200 results).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

import edgesec.checks
import edgesec.models
from edgesec.checks.registry import load_catalog
from edgesec.checks.reports import html
from edgesec.checks.reports.i18n import CHECK_FIELDS, english_digest, load, template_regex, translate_result

CHECKS_SRC = Path(edgesec.checks.__file__).parent
# The checks, and the model part whose scan findings models.unsafe-formats reports word for word.
SOURCES = (CHECKS_SRC, Path(edgesec.models.__file__).parent)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h200"
METHODS = {"failed", "warned", "passed", "skipped", "errored", "waived"}
ADD_ONE = "add it to edgesec/checks/reports/locale/zh-CN.toml"


def _templates(node: ast.expr) -> list[str]:
    """The messages an expression can write, ``{}`` for each inserted value ([]: not a literal)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value.replace("{", "{{").replace("}", "}}")]
    if isinstance(node, ast.JoinedStr):
        return [
            "".join(
                v.value.replace("{", "{{").replace("}", "}}") if isinstance(v, ast.Constant) else "{}"
                for v in node.values
            )
        ]
    if isinstance(node, ast.IfExp):
        return _templates(node.body) + _templates(node.orelse)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _templates(node.left), _templates(node.right)
        return [a + b for a in left for b in right]
    return []


# Where else a message is written: a list of problems joined into one finding, or a variable.
_COLLECTED = re.compile(r"problem|why|reason|^msg$|^message$")


# Reading proxy configs back (one module per proxy), beside the generators in authz.
PROXYCONF = CHECKS_SRC.parent / "authz" / "proxyconf"


def _proxyconf_templates() -> dict[str, str]:
    """What authz.proxy reports from a proxy's config: ``rep.fail(where, MESSAGE)``/``warn``,
    ``Issue(level, where, MESSAGE)`` and the reasons ``judge_ca_file`` returns."""
    found: dict[str, str] = {}
    paths = sorted(PROXYCONF.rglob("*.py"))
    assert paths, f"no proxy-config reader under {PROXYCONF}"
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            args: list[ast.expr] = []
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in ("fail", "warn") and isinstance(f, ast.Attribute):
                    args = node.args[1:2]
                elif name == "Issue":
                    args = node.args[2:3]
            elif isinstance(node, ast.FunctionDef) and node.name == "judge_ca_file":
                args = [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None]
            for a in args:
                for t in _templates(a):
                    if re.search(r"[A-Za-z]{2}", t):
                        found.setdefault(t, f"{path.relative_to(CHECKS_SRC.parent.parent)}:{a.lineno}")
    return found


def source_templates() -> dict[str, str]:
    """Every finding message and remediation template written in edgesec/checks and edgesec/models:
    {template: file:line}.

    Read from the source: the message and ``remediation=`` of every ``self.failed(...)``-style call and
    ``Finding(...)`` (and a model scan's ``ScanFinding``), the reason of every ``...Unavailable(...)``, and strings appended to or assigned
    to a ``problems``/``why``/``reason``/``msg`` name.
    """
    found: dict[str, str] = {}
    for path in sorted(p for src in SOURCES for p in src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            args: list[ast.expr] = []
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in METHODS and isinstance(f, ast.Attribute):
                    args = node.args[:1] + [
                        k.value for k in node.keywords if k.arg in ("remediation", "message")
                    ]
                elif name == "Finding":
                    args = node.args[2:3] + [
                        k.value for k in node.keywords if k.arg in ("message", "remediation")
                    ]
                elif name == "ScanFinding":  # a model scan's finding, reported by models.unsafe-formats
                    args = node.args[3:4] + [k.value for k in node.keywords if k.arg == "message"]
                elif name.endswith("Unavailable"):
                    args = node.args[:1]
                elif (
                    name in ("fail", "warn")
                    and isinstance(f, ast.Attribute)
                    and isinstance(f.value, ast.Name)
                ):
                    # A check adding to a proxy report (``rep.warn(where, MESSAGE)``), as the readers do.
                    args = node.args[1:2] if f.value.id == "rep" else []
                elif name == "append" and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    args = node.args[:1] if _COLLECTED.search(f.value.id) else []
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                args = [node.value] if _COLLECTED.search(node.targets[0].id) else []
            for a in args:
                for t in _templates(a):
                    if re.search(r"[A-Za-z]{2}", t):
                        found.setdefault(t, f"{path.relative_to(CHECKS_SRC.parent.parent)}:{a.lineno}")
    return {**found, **_proxyconf_templates()}


def test_every_check_has_its_title_rationale_and_remediation_in_zh_cn() -> None:
    cat = load("zh-CN")
    assert cat is not None
    missing = [
        f"[checks.{cid!r}] {name}"
        for cid in sorted(load_catalog().checks)
        for name in CHECK_FIELDS
        if not cat.checks.get(cid, {}).get(name)
    ]
    assert missing == [], f"untranslated ({ADD_ONE}):\n" + "\n".join(missing)


def test_no_check_translation_lags_behind_its_english() -> None:
    cat = load("zh-CN")
    assert cat is not None
    stale = []
    for cid, c in sorted(load_catalog().checks.items()):
        m = c.meta
        now = english_digest(m.title, m.rationale, m.remediation or "")
        if cat.checks.get(cid, {}).get("en") != now:
            stale.append(
                f'[checks.{cid!r}] en = "{now}"  (English now: {m.title} / {m.rationale} / {m.remediation})'
            )
    assert stale == [], "translations made from older English (re-translate, then set en):\n" + "\n".join(
        stale
    )


def test_every_message_template_in_the_checks_is_in_the_catalogue() -> None:
    cat = load("zh-CN")
    assert cat is not None
    missing = [f"{where}: {t!r}" for t, where in source_templates().items() if t not in cat.messages]
    assert missing == [], f"untranslated ({ADD_ONE}, under [messages]):\n" + "\n".join(missing)


def test_catalogue_entries_keep_their_values() -> None:
    """A translation uses each inserted value once ({0}, {1}, ...): none dropped, none invented."""
    import string

    cat = load("zh-CN")
    assert cat is not None
    wrong = []
    for en, zh in cat.messages.items():
        n = template_regex(en).groups
        used = sorted(int(f) for _, f, _, _ in string.Formatter().parse(zh) if f is not None)
        if used != list(range(n)):
            wrong.append(f"{en!r} -> {zh!r}")
    assert wrong == []


def _results(cli: Any, tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    out = [(p.name, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("report-*.json"))]
    code, stdout, err = cli("--json", "audit", "--profile", "bank")
    assert code in (0, 1, 3), err
    out.append(("this host", json.loads(stdout)["result"]["result"]))
    return out


def test_zh_cn_reports_have_no_untranslated_string(cli: Any, tmp_path: Path) -> None:
    missing: list[str] = []
    for name, result in _results(cli, tmp_path):
        translated, miss = translate_result(result, "zh-CN")
        missing += [f"{name}: {m}" for m in miss]
        page = html.render(result, "zh-CN")
        shown = 0
        for c in result["checks"]:
            # No English title, rationale or message is on the page; the translated ones are.
            tc = next(x for x in translated["checks"] if x["id"] == c["id"])
            assert c["title"] not in page and c["rationale"] not in page, c["id"]
            shown += tc["title"] in page
        assert shown > 0
    assert missing == [], f"untranslated in zh-CN reports ({ADD_ONE}):\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("english", "chinese"),
    [
        ("IPv4: no route leaves the site", "IPv4：没有离开站点的路由"),
        ("GPU 0: ECC is on", "GPU 0：ECC 已开启"),
        ("the CA store is mode 755, not 0700", "CA 存储的权限为 755，不是 0700"),
        ("check raised RuntimeError: boom", "检查抛出异常 RuntimeError：boom"),
        # authz.proxy wraps a proxy finding: "{kind}: {message} ({where})", the message has parentheses.
        (
            "nginx: location / is served without auth_request (no ForwardAuth) (/etc/nginx/nginx.conf:29)",
            "nginx：location / 在没有 auth_request 的情况下提供服务（没有 ForwardAuth）（/etc/nginx/nginx.conf:29）",
        ),
    ],
)
def test_messages_translate_with_their_values(english: str, chinese: str) -> None:
    cat = load("zh-CN")
    assert cat is not None
    assert cat.message(english) == chinese


def test_an_unknown_message_is_reported_not_hidden() -> None:
    result = {"checks": [{"id": "x.new", "title": "A new check", "rationale": "r", "remediation": "m",
                          "findings": [{"message": "a message nobody translated", "remediation": None}]}]}  # fmt: skip
    _doc, missing = translate_result(result, "zh-CN")
    assert "a message nobody translated" in missing
    cat = load("zh-CN")
    assert cat is not None
    # A wrapper ("{}: {} ({})", "{}; {}") never passes for a translation when its words are untranslated.
    for text in ("nginx: a new proxy finding (f:1)", "a; b", "GPU-1: ECC is on; GPU-2: something new"):
        miss: list[str] = []
        cat.message(text, miss)
        assert miss == [text]
    assert any("x.new" in m and "title" in m for m in missing)
