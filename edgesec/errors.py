"""One error hierarchy for every part of edgesec.

Library code raises these; only the CLI catches them, prints one line (and the hint, if any) and
exits with the error's documented code:

* 1 -- the operation failed, or the thing verified is bad (tampered, revoked, unsafe);
* 2 -- usage, input or config error: nothing was done;
* 3 -- the verdict is incomplete (an ``audit`` check errored).

When several apply the CLI reports the most specific: 2, then 3, then 1.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


class EdgesecError(Exception):
    """Base of every error edgesec raises on purpose.

    ``message`` is one line that names what went wrong; ``hint`` optionally says what to do about it.
    """

    exit_code: int = EXIT_FAILED
    kind: str = "error"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        # One line: a multi-line message would break the "one clear line" promise of the CLI.
        self.message = " ".join(str(message).split())
        self.hint = hint
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "message": self.message, "exit_code": self.exit_code}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = {k: v for k, v in self.details.items() if _jsonable(v)}
        return out


def _jsonable(v: Any) -> bool:
    return isinstance(v, str | int | float | bool | list | dict | type(None))


class OperationFailed(EdgesecError):
    """The operation ran and failed (exit 1)."""

    kind = "failed"


class VerificationError(OperationFailed):
    """The thing verified is bad: tampered, revoked, expired, unsigned, unsafe (exit 1)."""

    kind = "verification"


class AlreadyExists(OperationFailed):
    """Refusing to overwrite something already on disk (exit 1); nothing was changed."""

    kind = "exists"


class InputError(EdgesecError):
    """Input that cannot be used: bad argument, unreadable or unparsable file (exit 2)."""

    exit_code = EXIT_USAGE
    kind = "input"


class UsageError(InputError):
    """The command line itself is wrong (exit 2)."""

    kind = "usage"


class ConfigError(InputError):
    """The site config is unreadable or invalid (exit 2). The message names the file, line and key."""

    kind = "config"


class NotFound(InputError):
    """A named thing (certificate, run, file) does not exist (exit 2)."""

    kind = "not-found"


class IncompleteError(EdgesecError):
    """The verdict is incomplete because a part of the work errored (exit 3)."""

    exit_code = EXIT_INCOMPLETE
    kind = "incomplete"
