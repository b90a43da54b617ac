"""The casbin model family the engine indexes (RBAC with domains, a supported path and method matcher, allow
and deny effects), and loading a model and policy with load-time checks casbin would only fail on per request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from casbin.effect import AllowAndDenyEffector, AllowOverrideEffector, get_effector
from casbin.model import Model
from casbin.persist.adapter import load_policy_line

from edgesec._fs import read_input_file
from edgesec.errors import InputError

# Parentheses that are balanced, not nested and hold no comma ("(GET|POST)"): casbin's tokenizer then
# splits at every comma, like the fast path.
_FLAT_BRACKETS: Final = re.compile(r"[^()\[\],]*(?:,[^()\[\],]*|\([^()\[\],]*\))*")
# Object matchers of the supported family: matcher term (whitespace removed) -> pattern kind.
_OBJ_TERMS: Final = {
    "keyMatch2(r_obj,p_obj)": "keyMatch2",
    "keyMatch5(r_obj,p_obj)": "keyMatch5",
    "regexMatch(r_obj,p_obj)": "regexMatch",
    "r_obj==p_obj": "equal",
    "p_obj==r_obj": "equal",
}
_ACT_TERMS: Final = {
    "regexMatch(r_act,p_act)": "regexMatch",
    "r_act==p_act": "equal",
    "p_act==r_act": "equal",
}
_G_TERM: Final = "g(r_sub,p_sub,r_dom)"
_DOM_TERMS: Final = frozenset({"r_dom==p_dom", "p_dom==r_dom"})


def _split_conjuncts(matcher: str) -> list[str] | None:
    """Split a matcher on top-level ``&&``; None if it uses ``||``, ``!`` or anything else at top level."""
    if "||" in matcher:
        return None
    terms: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(matcher):
        ch = matcher[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and matcher.startswith("&&", i):
            terms.append(matcher[start:i])
            start = i + 2
            i += 1
        i += 1
    terms.append(matcher[start:])
    return ["".join(t.split()) for t in terms]


@dataclass(frozen=True)
class ModelFamily:
    obj_kind: str
    act_kind: str
    has_eft: bool
    deny_wins: bool  # allow-and-deny effect; otherwise allow-override


def model_family(model: Model) -> tuple[ModelFamily | None, str]:
    """Whether ``model`` is in the family the index reproduces, and if not, why."""
    m = model.model
    if set(m) != {"r", "p", "g", "e", "m"}:
        return None, f"model sections {sorted(m)} are not r, p, g, e, m"
    if set(m["r"]) != {"r"} or set(m["p"]) != {"p"} or set(m["g"]) != {"g"}:
        return None, "model defines more than one request, policy or role type"
    if set(m["e"]) != {"e"} or set(m["m"]) != {"m"}:
        return None, "model defines more than one effect or matcher"
    if m["r"]["r"].tokens != ["r_sub", "r_dom", "r_obj", "r_act"]:
        return None, "request is not (sub, dom, obj, act)"
    p_tokens = m["p"]["p"].tokens
    if p_tokens not in (
        ["p_sub", "p_dom", "p_obj", "p_act", "p_eft"],
        ["p_sub", "p_dom", "p_obj", "p_act"],
    ):
        return None, "policy is not (sub, dom, obj, act[, eft])"
    g = m["g"]["g"]
    if g.value.count("_") != 3 or len(g.tokens) != 3 or g.params_tokens:
        return None, "role definition is not g = _, _, _"
    try:
        effector = get_effector(m["e"]["e"].value)
    except RuntimeError:
        return None, "unsupported policy effect"
    if type(effector) is AllowAndDenyEffector:
        deny_wins = True
    elif type(effector) is AllowOverrideEffector:
        deny_wins = False
    else:
        return None, "policy effect is neither allow-and-deny nor allow-override"
    terms = _split_conjuncts(m["m"]["m"].value)
    if terms is None or len(terms) != 4:
        return None, "matcher is not four terms joined by &&"
    rest = list(terms)
    if _G_TERM not in rest:
        return None, "matcher lacks g(r.sub, p.sub, r.dom)"
    rest.remove(_G_TERM)
    dom = [t for t in rest if t in _DOM_TERMS]
    obj = [t for t in rest if t in _OBJ_TERMS]
    act = [t for t in rest if t in _ACT_TERMS]
    if len(dom) != 1 or len(obj) != 1 or len(act) != 1:
        return None, "matcher terms are not r.dom == p.dom, a supported path matcher and a method matcher"
    return ModelFamily(_OBJ_TERMS[obj[0]], _ACT_TERMS[act[0]], len(p_tokens) == 5, deny_wins), ""


def role_names(model: Model) -> frozenset[str]:
    """The second field of every grouping line of every ``g`` section: the names used as roles."""
    return frozenset(line[1] for g in model.model.get("g", {}).values() for line in g.policy if len(line) > 1)


def load_model(model_path: Path) -> Model:
    raw = read_input_file(model_path, what="casbin model")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"casbin model is not UTF-8 text: {model_path}") from None
    model = Model()
    try:
        model.load_model_from_text(text)
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise InputError(f"casbin model {model_path} cannot be parsed: {exc}") from None
    for sec in ("r", "p", "e", "m"):
        if sec not in model.model:
            raise InputError(f"casbin model {model_path} has no [{_SECTION_NAMES[sec]}] section")
    return model


_SECTION_NAMES: Final = {
    "r": "request_definition",
    "p": "policy_definition",
    "e": "policy_effect",
    "m": "matchers",
}


def load_policy_into(model: Model, policy_path: Path) -> None:
    """Read the CSV policy into ``model`` exactly as casbin's file adapter does, with one-line errors."""
    raw = read_input_file(policy_path, what="casbin policy")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"casbin policy is not UTF-8 text: {policy_path}") from None
    # casbin reads the file line by line on b"\n" and strips each line; splitting the decoded text on
    # "\n" gives the same lines (a "\n" byte never occurs inside a UTF-8 sequence).
    sections = model.model
    memo: dict[str, str] = {}
    for lineno, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line or line[0] == "#":
            continue
        try:
            if ("(" in line or "[" in line or ")" in line or "]" in line) and not _FLAT_BRACKETS.fullmatch(
                line
            ):
                load_policy_line(line, model)  # casbin's tokenizer keeps "(a, b)" in one field
                continue
            # Without brackets casbin's tokenizer is a split on "," with each field stripped. Fields
            # repeat a lot (roles, tenants, methods, effects): one string object per distinct value.
            tokens = [memo.setdefault(t, t) for t in (f.strip() for f in line.split(","))]
            key = tokens[0]
            sec = sections.get(key[0])
            if sec is not None and key in sec:
                sec[key].policy.append(tokens[1:])
        except IndexError:
            raise InputError(
                f"{policy_path}:{lineno}: malformed policy line (unbalanced brackets or no type)",
                hint=line[:120],
            ) from None


def check_sizes(model: Model, policy_path: Path) -> None:
    p = model.model["p"]["p"]
    want = len(p.tokens)
    for rule in p.policy:
        if len(rule) != want:
            raise InputError(
                f"{policy_path}: policy rule {', '.join(rule)!r} has {len(rule)} fields, the model wants {want}"
            )
    if "g" in model.model:
        for key, g in model.model["g"].items():
            need = g.value.count("_")
            for rule in g.policy:
                if len(rule) < need:
                    raise InputError(
                        f"{policy_path}: role rule {key}, {', '.join(rule)!r} has {len(rule)} fields, "
                        f"the model wants {need}"
                    )
