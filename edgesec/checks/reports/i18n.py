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
import itertools
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

CHECK_FIELDS = ("title", "rationale", "remediation")

_FIELDS = string.Formatter()


def template_regex(template: str, greedy: tuple[bool, ...] = ()) -> re.Pattern[str]:
    """The regex a template's messages match: literal text as is, each ``{}`` one value (shortest
    first, or longest where ``greedy`` says so)."""
    parts = []
    n = 0
    for literal, fld, _spec, _conv in _FIELDS.parse(template):
        parts.append(re.escape(literal))
        if fld is not None:
            parts.append("(.*)" if n < len(greedy) and greedy[n] else "(.*?)")
            n += 1
    return re.compile("".join(parts), re.S)


def _variants(template: str) -> list[re.Pattern[str]]:
    """Every way a wrapper's values may split a message ("nginx: location / ... (x) (file:29)")."""
    n = template_regex(template).groups
    return [template_regex(template, bits) for bits in itertools.product((False, True), repeat=n)]


def literal_size(template: str) -> int:
    return sum(len(lit.strip()) for lit, *_ in _FIELDS.parse(template))


def _has_words(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def is_wrapper(template: str) -> bool:
    """Only values and punctuation ("{}: {} ({})"): no words of its own, it wraps other messages."""
    return not any(ch.isalpha() for lit, *_ in _FIELDS.parse(template) for ch in lit)


@dataclass
class Catalogue:
    lang: str
    checks: dict[str, dict[str, str]]
    messages: dict[str, str]
    _compiled: list[tuple[list[re.Pattern[str]], str, bool]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # Most specific first: "{}: ECC is on" before "{}: {}".
        ordered = sorted(self.messages.items(), key=lambda kv: (-literal_size(kv[0]), kv[0]))
        # A template that is (nearly) only values ("{}: {}") is a wrapper: it counts only when one of
        # its values is a message the catalogue translates, so it never hides an untranslated one.
        self._compiled = [
            (_variants(k) if is_wrapper(k) else [template_regex(k)], v, is_wrapper(k)) for k, v in ordered
        ]

    def _translate(self, text: str, depth: int) -> tuple[str, int] | None:
        """``text`` translated and how many of its parts stayed English (``None``: no entry fits).

        An entry with words of its own wins outright (its values are data, translated when they are
        messages themselves); of the wrappers, the split that leaves the fewest parts English wins.
        """
        best: tuple[str, int] | None = None
        for variants, target, wrapper in self._compiled:
            for rx in variants:
                m = rx.fullmatch(text)
                if m is None:
                    continue
                values = m.groups()
                inner = [
                    self._translate(v, depth + 1) if depth < 6 and _has_words(v) else None for v in values
                ]
                out = [t[0] if t is not None and t[1] == 0 else v for t, v in zip(inner, values, strict=True)]
                if not wrapper:
                    return target.format(*out), 0
                if not any(t is not None for t in inner):
                    continue
                # A part left as is counts as English when it reads as words; a name, path or number
                # ("nginx", "/etc/nginx/nginx.conf:29", "GPU-1") is data.
                english = sum(
                    (t[1] if t is not None else 1)
                    for t, v in zip(inner, values, strict=True)
                    if _has_words(v) and (t is not None or " " in v.strip())
                )
                out = [t[0] if t is not None else v for t, v in zip(inner, values, strict=True)]
                if best is None or english < best[1]:
                    best = (target.format(*out), english)
        return best

    def message(self, text: str, missing: list[str] | None = None) -> str:
        """``text`` translated; what is (partly) untranslatable is appended to ``missing``."""
        out = self._translate(text, 0)
        if missing is not None and (out is None or out[1] > 0):
            missing.append(text)
        return text if out is None else out[0]

    def check(self, check_id: str, name: str, english: str, missing: list[str] | None = None) -> str:
        text = self.checks.get(check_id, {}).get(name)
        if text is None:
            if missing is not None:
                missing.append(f"[checks.{check_id!r}] {name}: {english}")
            return english
        return text


def english_digest(title: str, rationale: str, remediation: str) -> str:
    """What a catalogue's ``en`` records: which English a check's translation was made from."""
    import hashlib

    return hashlib.sha256("\0".join((title, rationale, remediation)).encode()).hexdigest()[:12]


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
