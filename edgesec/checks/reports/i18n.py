"""Message catalogues for the HTML report: one TOML file per language in ``locale/`` (``zh-CN.toml``).

A catalogue has two tables. ``[checks."<id>"]`` gives a check's ``title``, ``rationale`` and
``remediation``. ``[messages]`` maps each finding message (and per-finding remediation) *as the check
writes it* to its translation: the key is the English text with ``{}`` where the check inserts a value,
in order; the value refers to those values as ``{0}``, ``{1}``, ... in whatever order the language
wants. A value is itself translated when it is a message of its own (``"{}: {}"`` around a GPU label and
a message, say). Adding a translation is one line in one file.

:func:`translate_result` returns a translated copy of a result and every string it could not translate;
the zh-CN report test fails on any, naming each.
"""

from __future__ import annotations

import copy
import functools
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

CHECK_FIELDS = ("title", "rationale", "remediation")
#: A template with fewer literal characters than this is a wrapper around other messages.
WRAPPER_MAX = 3
_FIELDS = string.Formatter()


def template_regex(template: str) -> re.Pattern[str]:
    """The regex a template's messages match: literal text as is, each ``{}`` one value."""
    parts = []
    for literal, fld, _spec, _conv in _FIELDS.parse(template):
        parts.append(re.escape(literal))
        if fld is not None:
            parts.append("(.*?)")
    return re.compile("".join(parts), re.S)


def literal_size(template: str) -> int:
    return sum(len(lit.strip()) for lit, *_ in _FIELDS.parse(template))


@dataclass
class Catalogue:
    lang: str
    checks: dict[str, dict[str, str]]
    messages: dict[str, str]
    _compiled: list[tuple[re.Pattern[str], str, bool]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # Most specific first: "{}: ECC is on" before "{}: {}".
        ordered = sorted(self.messages.items(), key=lambda kv: (-literal_size(kv[0]), kv[0]))
        # A template that is (nearly) only values ("{}: {}") is a wrapper: it counts only when one of
        # its values is a message the catalogue translates, so it never hides an untranslated one.
        self._compiled = [(template_regex(k), v, literal_size(k) < WRAPPER_MAX) for k, v in ordered]

    def _translate(self, text: str, depth: int) -> str | None:
        for rx, target, wrapper in self._compiled:
            m = rx.fullmatch(text)
            if m is None:
                continue
            inner = [self._translate(v, depth + 1) if depth < 8 and v else None for v in m.groups()]
            if wrapper and not any(t is not None for t in inner):
                continue
            return target.format(*[t if t is not None else v for t, v in zip(inner, m.groups(), strict=True)])
        return None

    def message(self, text: str, missing: list[str] | None = None) -> str:
        """``text`` translated; an untranslatable one is returned as is and appended to ``missing``."""
        out = self._translate(text, 0)
        if out is None:
            if missing is not None:
                missing.append(text)
            return text
        return out

    def check(self, check_id: str, name: str, english: str, missing: list[str] | None = None) -> str:
        text = self.checks.get(check_id, {}).get(name)
        if text is None:
            if missing is not None:
                missing.append(f"[checks.{check_id!r}] {name}: {english}")
            return english
        return text


@functools.lru_cache(maxsize=8)
def load(lang: str) -> Catalogue | None:
    """The catalogue of ``lang`` (``None`` for English, the language the checks are written in)."""
    if lang == "en":
        return None
    res = resources.files("edgesec.checks.reports") / "locale" / f"{lang}.toml"
    data = tomllib.loads(res.read_text("utf-8"))
    return Catalogue(lang, dict(data.get("checks", {})), dict(data.get("messages", {})))


def translate_result(result: Mapping[str, Any], lang: str) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``result`` with every check text and finding message in ``lang``, and what was missed."""
    doc: dict[str, Any] = copy.deepcopy(dict(result))
    cat = load(lang)
    missing: list[str] = []
    if cat is None:
        return doc, missing
    for c in doc.get("checks", []):
        english = {k: c.get(k) for k in CHECK_FIELDS}
        for k in CHECK_FIELDS:
            if isinstance(c.get(k), str) and c[k]:
                c[k] = cat.check(c["id"], k, c[k], missing)
        for f in c.get("findings", []):
            if isinstance(f.get("message"), str):
                f["message"] = cat.message(f["message"], missing)
            rem = f.get("remediation")
            if isinstance(rem, str) and rem:
                f["remediation"] = (
                    c["remediation"] if rem == english["remediation"] else cat.message(rem, missing)
                )
    changes = doc.get("changes") or {}
    for key in ("new_failures", "fixed", "changed_evidence", "status_changes", "not_assessed"):
        for ref in changes.get(key) or []:
            if isinstance(ref.get("message"), str):
                ref["message"] = cat.message(ref["message"], missing)
    return doc, sorted(set(missing))
