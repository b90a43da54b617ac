"""What every command shares at run time: the global flags, the lazily loaded config, and output.

Commands never print JSON themselves: they hand their result to :func:`result`. With the global
``--json`` the CLI prints one JSON document when the command ends -- the result, or the error::

    {"ok": true,  "exit_code": 0, "command": "pki list", "result": ...}
    {"ok": false, "exit_code": 2, "command": "config check", "error": {"kind": "config", "message": ...}}

Without ``--json``, :func:`result` prints the human form at once (rich, ``NO_COLOR`` respected).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgesec.config import LoadedConfig, load_config

Human = str | Callable[[Console], None] | None


@dataclass
class AppState:
    """Global flags of one CLI invocation, and what the command produced."""

    json: bool = False
    debug: bool = False
    quiet: bool = False
    config_path: str | None = None
    home_arg: str | None = None
    command: str = ""
    _config: LoadedConfig | None = None
    result: Any = None
    has_result: bool = False
    exit_code: int = 0
    warnings: list[str] = field(default_factory=list)

    def config(self) -> LoadedConfig:
        """The effective site config (loaded on first use; raises ConfigError)."""
        if self._config is None:
            self._config = load_config(self.config_path, self.home_arg)
        return self._config

    @property
    def home(self) -> Path:
        return self.config().home


_state: contextvars.ContextVar[AppState] = contextvars.ContextVar("edgesec_state")


def set_state(st: AppState) -> contextvars.Token[AppState]:
    return _state.set(st)


def reset_state(token: contextvars.Token[AppState]) -> None:
    _state.reset(token)


def state() -> AppState:
    """The current invocation's state (a fresh default one outside the CLI, e.g. in library tests)."""
    try:
        return _state.get()
    except LookupError:
        st = AppState()
        _state.set(st)
        return st


def stdout() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def result(data: Any, human: Human = None, *, exit_code: int = 0) -> None:
    """Record the command's result; print its human form now unless ``--json``.

    ``exit_code`` lets a command that produced a result still fail (``audit`` with findings: 1).
    """
    st = state()
    st.result = data
    st.has_result = True
    st.exit_code = exit_code
    if st.json or st.quiet:
        return
    if human is None:
        return
    con = stdout()
    if isinstance(human, str):
        con.print(human, markup=False)
    else:
        human(con)


def warn(message: str) -> None:
    """A one-line warning on stderr (kept in the JSON document under ``warnings`` with ``--json``)."""
    st = state()
    st.warnings.append(message)
    stderr().print(f"edgesec: warning: {message}", markup=False, style="yellow")


def info(message: str) -> None:
    """Progress or context for a person, on stderr, suppressed by ``--json`` and ``--quiet``."""
    st = state()
    if st.json or st.quiet:
        return
    stderr().print(message, markup=False)
