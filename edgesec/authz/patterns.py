"""casbin's path and method patterns as the engine runs them: keyMatch2/keyMatch5 translated to the regexes casbin
builds (the same steps, the same text), the literal prefix a regex's matches must start with, and one
compile per distinct regex per load."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any, Final

from casbin.util.builtin_operators import KEY_MATCH5_PATTERN

from edgesec.errors import InputError

_KM2_PARAM: Final = re.compile(r":[^/]+")
_META_RE: Final = re.compile(r"[.^$*+?{}\[\]\\|()]")
_QUANTIFIERS: Final = frozenset("*+?{")


def literal_prefix(regex: str) -> tuple[str, bool]:
    """The characters every match of ``regex`` (used with ``re.match``, no flags) must start with.

    Returns ``(prefix, whole)``; ``whole`` is True when the regex is nothing but that literal. The
    scan is deliberately conservative: alternation or inline flags anywhere give no prefix at all,
    and a literal followed by a quantifier is not part of it.
    """
    if "|" in regex or "(?" in regex:
        return "", False
    meta = _META_RE.search(regex)
    if meta is None:
        return regex, True
    end = meta.start()
    if regex[end] in _QUANTIFIERS and end:
        end -= 1
    return regex[:end], False


def key_match2_body(pattern: str) -> str:
    """casbin's key_match2 regex for ``pattern`` without its "^" and "$" (the same steps, the same text)."""
    key2 = pattern.replace("/*", "/.*")
    if ":" in key2:
        # casbin substitutes r"(.*?):[^\/]+(.*?)" by r"\g<1>[^\/]+\g<2>": the lazy groups keep the text
        # around each ":name" run as it is, so this is ":" plus the run of non-"/" characters replaced
        # (a policy field holds no newline, the one character the lazy ".*?" would not cross). A test
        # compares the two on random patterns.
        key2 = _KM2_PARAM.sub(_km2_repl, key2)
    if key2 == "*":
        key2 = "(.*)"
    return key2


def key_match2_regex(pattern: str) -> str:
    return "^" + key_match2_body(pattern) + "$"


def _km2_repl(_m: re.Match[str]) -> str:
    return "[^\\/]+"


def key_match5_body(pattern: str) -> str:
    """casbin's key_match5 regex without "^" and "$" (the caller cuts the request's query string off)."""
    key2 = pattern.replace("/*", "/.*")
    if "{" in key2:
        key2 = str(KEY_MATCH5_PATTERN.sub(_km5_repl, key2, 0))
    return key2


def key_match5_regex(pattern: str) -> str:
    return "^" + key_match5_body(pattern) + "$"


def _km5_repl(_m: re.Match[str]) -> str:
    return "[^/]+"


class PatternCompiler:
    """Compiles each distinct regular expression once per load (policies repeat patterns a lot)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._cache: dict[str, Callable[..., Any]] = {}

    def matcher(self, regex: str, lineno: int, column: str) -> Callable[..., Any]:
        fn = self._cache.get(regex)
        if fn is None:
            try:
                # casbin compiles the same pattern at request time, where a FutureWarning ("possible
                # nested set") is just printed; it must not turn into a load failure here.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    fn = re.compile(regex).match
            except (re.error, OverflowError, RecursionError) as exc:
                raise InputError(
                    f"{self.source}: p rule {lineno}: {column} is not a valid regular expression "
                    f"as casbin uses it ({regex!r}: {exc})"
                ) from None
            self._cache[regex] = fn
        return fn


def equal_to(value: str) -> Callable[[str], bool]:
    return value.__eq__
