"""Chat templates (CVE-2024-34359 class), judged by Jinja's own sandbox with a static second opinion.

A template that an unsandboxed Jinja renders can walk ``''.__class__.__mro__`` to ``os.popen``; the names it
needs can be built at render time (``'_'~'_'``, ``'%c'|format(95)``, ``dict(__globals__=1)|list``), so no
reading of the source finds them all. Each template is therefore rendered in
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with the message, tool and loop shapes real chat
formats use; every attribute the sandbox refuses and every :class:`~jinja2.sandbox.SecurityError` is a
finding. The sandbox only sees the paths a render takes, so the static reading of the parsed template stays
as a second opinion. The extensions real templates use are supported: ``loopcontrols`` (``{% break %}``)
and transformers' ``{% generation %}`` block.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from edgesec.models.scan.report import ScanFinding

MAX_CHUNKS = 200_000
"""Output pieces one render may produce before it is stopped (a template looping without end)."""

SUSPICIOUS_NAMES = frozenset(
    {
        "self",
        "lipsum",
        "cycler",
        "joiner",
        "config",
        "request",
        "url_for",
        "get_flashed_messages",
        "os",
        "__builtins__",
    }
)
SUSPICIOUS_CALLS = frozenset(
    {"popen", "system", "eval", "exec", "import_module", "load_module", "__import__", "subprocess", "spawn"}
)


class GenerationExtension(jinja2.ext.Extension):
    """transformers' ``{% generation %}…{% endgeneration %}``: marks assistant text, renders its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja2 reads the class attribute

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


EXTENSIONS = (jinja2.ext.loopcontrols, GenerationExtension)


class _TemplateRaised(Exception):
    """``raise_exception(...)`` in a template: a refusal of the conversation, not an attack."""


class _Budget(Exception):
    """The render ran past its bound."""


MAX_ITERATIONS = 1_000_000
"""``range`` items one render may draw in all (nested loops over ``range`` multiply)."""
MAX_VALUE = 1 << 20
"""Longest string or sequence, and largest power, a ``*`` or ``**`` in a template may build."""


class _Range:
    """``range`` for templates: has a length (so ``join`` can be bounded) and counts what loops draw."""

    def __init__(self, r: range, env: _Watching) -> None:
        self.r, self.env = r, env

    def __len__(self) -> int:
        return len(self.r)

    def __iter__(self) -> Iterator[int]:
        for i in self.r:
            self.env.drawn += 1
            if self.env.drawn > MAX_ITERATIONS:
                raise _Budget(f"rendering loops more than {MAX_ITERATIONS} times")
            yield i


_WIDE = re.compile(r"%[-+ #0]*\d{7,}|\{[^}]*:[^}]*\d{7,}")
"""A printf or format width of a million or more: the output is that wide."""


def _too_big(name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a filter or method call would build more than the bound (checked before it runs)."""
    values = [*args, *kwargs.values()]
    if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_VALUE for v in values):
        return True
    if any(isinstance(v, str) and _WIDE.search(v) for v in [target, *values]):
        return True
    if name == "join":
        sep = target if isinstance(target, str) else next((v for v in values if isinstance(v, str)), "")
        items = next((v for v in [target, *values] if isinstance(v, (list, tuple, range, _Range))), ())
        return len(sep) * len(items) > MAX_VALUE * 16
    if name == "replace" and isinstance(target, str) and len(values) >= 2:
        old, new = str(values[0]), str(values[1])
        n = target.count(old) if old else len(target) + 1
        return n * len(new) > MAX_VALUE * 16
    return False


def _bounded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja filter that refuses arguments that would make it build more than the bound."""

    @functools.wraps(fn)  # keeps jinja's pass_context/pass_environment marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        plain = [
            a
            for a in args
            if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment, nodes.EvalContext))
        ]
        target = plain[0] if plain else None
        if _too_big(name, target, tuple(plain[1:]), kwargs):
            raise _Budget("a template builds a value too large to judge")
        return fn(*args, **kwargs)

    return wrapper


class _Watching(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, noting each attribute it refuses instead of only answering undefined.

    Mutating a list or dict (``ids.append(x)``, used by real templates) is let through and not a finding:
    it cannot reach Python internals, and refusing it would end the render before the paths after it.
    ``range``, ``*`` and ``**`` are bounded, so that a template cannot make the scan loop or allocate
    without end (the sandbox itself only bounds one ``range``).
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(extensions=list(EXTENSIONS), autoescape=False)
        self.refused: list[str] = []
        self.drawn = 0
        self.globals["range"] = self._range
        for name, fn in list(self.filters.items()):
            self.filters[name] = _bounded(name, fn)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(__obj, "__name__", "")
        # The sandbox hands str.format out wrapped; the string it formats is the wrapped method's self.
        target = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if _too_big(name, target, args, kwargs):
            raise _Budget("a template builds a value too large to judge")
        return super().call(__context, __obj, *args, **kwargs)

    def _range(self, *args: int) -> _Range:
        return _Range(range(*args), self)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise _Budget("a template computes a power too large to judge")
        if operator == "%" and isinstance(left, str) and _WIDE.search(left):
            raise _Budget("a template builds a value too large to judge")
        if operator == "*":
            for a, b in ((left, right), (right, left)):
                if isinstance(a, (str, list, tuple)) and isinstance(b, int) and len(a) * b > MAX_VALUE:
                    raise _Budget("a template builds a value too large to judge")
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not SandboxedEnvironment.is_safe_attribute(self, obj, attr, value):
            self.refused.append(f"reaches the unsafe attribute {attr!r} of a {type(obj).__name__}")
            return False
        return True

    def is_safe_callable(self, obj: Any) -> bool:
        ok = bool(super().is_safe_callable(obj))
        if not ok:
            self.refused.append(f"calls an unsafe callable {getattr(obj, '__name__', type(obj).__name__)!r}")
        return ok


def _raise(message: object = "") -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return "26 Jul 2024"


_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
}


def _shapes() -> Iterator[dict[str, Any]]:
    """Conversations as chat front ends pass them (transformers, llama.cpp, vLLM)."""
    plain = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "How are you?"},
    ]
    system = [{"role": "system", "content": "You are helpful."}, *plain]
    tools = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [_CALL]},
        {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "call_1", "name": "get_weather"},
        {"role": "assistant", "content": "3 degrees."},
        {"role": "user", "content": "Thanks"},
    ]
    parts = [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image"}]}]
    thinking = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "add"},
        {"role": "user", "content": "3+3?"},
    ]
    for messages in (plain, system, tools, parts, thinking):
        for gen in (True, False):
            yield {"messages": messages, "add_generation_prompt": gen}
    yield {"messages": tools, "tools": [_TOOL], "add_generation_prompt": True}
    yield {"messages": system, "tools": [_TOOL], "add_generation_prompt": True, "enable_thinking": False}


MAX_STEPS = 2_000_000
"""Lines of compiled template code one render may run: loops over anything, nested, stop here."""


def _with_step_budget(fn: Callable[[], None]) -> None:
    """Run ``fn`` counting the lines the compiled template executes, in any thread."""
    steps = 0

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal steps
        if event == "line":
            steps += 1
            if steps > MAX_STEPS:
                raise _Budget(f"rendering ran more than {MAX_STEPS} steps")
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)


def _forced(text: str, env: jinja2.Environment, branch: bool) -> nodes.Template:
    """``text`` with every ``{% if %}`` (and ``x if c else y``) test replaced by ``branch``.

    A payload behind a condition on the conversation (``{% if messages[0].content == 'magic' %}``) is not
    reached by a render with ordinary messages; one variant takes every first branch, the other every last.
    """
    ast = env.parse(text)
    for node in ast.find_all((nodes.If, nodes.CondExpr)):
        if isinstance(node, nodes.If):
            node.test = nodes.Const(branch)
            for alt in node.elif_:
                alt.test = nodes.Const(False)
        elif isinstance(node, nodes.CondExpr):
            node.test = nodes.Const(branch)
    return ast


def sandbox_reasons(text: str) -> list[str]:
    """What the sandbox refused while rendering ``text`` with every conversation shape.

    The template is rendered as written, then with all its conditions forced true and forced false (where
    ``raise_exception`` is a no-op, so a refusal branch does not end the render).
    """
    env = _Watching()
    env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
    env.filters["tojson"] = env.filters.get("tojson", lambda v, **kw: repr(v))
    forcing = _Watching()
    forcing.globals.update(raise_exception=lambda *a: "", strftime_now=_strftime_now)
    forcing.filters["tojson"] = env.filters["tojson"]
    templates = [env.from_string(text)]
    templates += [forcing.from_string(_forced(text, forcing, b)) for b in (True, False)]
    reasons: list[str] = []

    def render_all() -> None:
        for template in templates:
            for shape in _shapes():
                ctx = {"bos_token": "<s>", "eos_token": "</s>", **shape}
                try:
                    for n, _ in enumerate(template.generate(ctx)):
                        if n > MAX_CHUNKS:
                            reasons.append(
                                f"cannot be judged: rendering produced more than {MAX_CHUNKS} pieces of output"
                            )
                            return
                except SecurityError as e:
                    reasons.append(f"the sandbox refused it: {e}")
                except _Budget as e:
                    reasons.append(f"cannot be judged: {e}")
                    return
                except (_TemplateRaised, jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError):
                    continue  # this conversation does not fit the template: try the next one
                except (AttributeError, ZeroDivisionError, OverflowError, LookupError, RecursionError):
                    continue
                except MemoryError:
                    reasons.append("cannot be judged: rendering ran out of memory")
                    return

    try:
        _with_step_budget(render_all)
    except _Budget as e:
        reasons.append(f"cannot be judged: {e}")
    return reasons + env.refused + forcing.refused


def static_reasons(ast: nodes.Template) -> list[str]:
    """What the parsed template reaches for, read without rendering (the second opinion)."""
    reasons: list[str] = []
    for node in ast.find_all(
        (nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter, nodes.Const, nodes.Call, nodes.Keyword)
    ):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            reasons.append(f"reads attribute {node.attr!r}")
        elif isinstance(node, nodes.Getattr) and node.attr in SUSPICIOUS_CALLS:
            reasons.append(f"calls {node.attr!r}")
        elif isinstance(node, nodes.Name) and node.name in SUSPICIOUS_NAMES:
            reasons.append(f"uses the global {node.name!r}")
        elif isinstance(node, nodes.Filter) and node.name in ("attr", "pprint"):
            reasons.append(f"uses the {node.name!r} filter")
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            reasons.append(f"holds the string {node.value[:40]!r}")
        elif isinstance(node, nodes.Keyword) and node.key.startswith("_"):
            reasons.append(f"passes the keyword {node.key!r}")
        elif isinstance(node, nodes.Keyword) and node.key == "attribute" and not _plain_const(node.value):
            reasons.append("maps over an attribute whose name is computed")
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name
            in (
                "namespace",
                "range",
                "dict",
                "joiner",
                "cycler",
            )
        ):
            reasons.append(f"indexes the builtin {node.node.name!r}")
        elif (
            isinstance(node, nodes.Filter)
            and node.name == "format"
            and any(
                isinstance(c, nodes.Const) and isinstance(c.value, str) and "%c" in c.value
                for c in node.find_all(nodes.Const)
            )
        ):
            reasons.append("builds characters with '%c'|format")
    return reasons


def _plain_const(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str) and not node.value.startswith("_")


def check_chat_template(text: str) -> list[str]:
    """Reasons a Jinja chat template reaches for Python internals (empty when it does not)."""
    env = jinja2.Environment(extensions=list(EXTENSIONS), autoescape=False)  # noqa: S701 - parsed only
    try:
        ast = env.parse(text)
    except jinja2.TemplateSyntaxError as e:
        return [f"does not parse as Jinja ({e.message}); it cannot be checked"]
    except RecursionError:
        return ["does not parse as Jinja (nested too deeply); it cannot be checked"]
    try:
        dynamic = sandbox_reasons(text)
    except (jinja2.TemplateSyntaxError, RecursionError, MemoryError) as e:
        dynamic = [f"cannot be judged: the sandbox could not compile it ({type(e).__name__})"]
    return sorted(set(dynamic)) + sorted(set(static_reasons(ast)) - set(dynamic))


UNJUDGED = ("does not parse", "cannot be judged")


def template_findings(rel: str, templates: Sequence[tuple[str, str]]) -> list[ScanFinding]:
    """``critical`` when a template reaches for Python internals; ``high`` when it cannot be judged."""
    out = []
    for key, text in templates:
        reasons = check_chat_template(text)
        if not reasons:
            continue
        internals = [r for r in reasons if not r.startswith(UNJUDGED)]
        if internals:
            out.append(
                ScanFinding(
                    rel,
                    "chat-template",
                    "critical",
                    f"{key} reaches for Python internals (code execution under an unsandboxed Jinja): "
                    f"{'; '.join(internals[:4])}",
                    {"key": key, "reasons": reasons},
                )
            )
        else:
            out.append(
                ScanFinding(
                    rel, "chat-template", "high", f"{key} {reasons[0]}", {"key": key, "reasons": reasons}
                )
            )
    return out
