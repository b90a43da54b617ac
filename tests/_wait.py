"""Wait for a condition instead of sleeping a fixed time (a fixed sleep before an assertion is either too
short on a loaded machine or wasted time on an idle one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something true, and return that; fail naming ``what`` after
    ``timeout`` seconds. A probe that raises is retried (a server not up yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            got = probe()
        except Exception as exc:
            got, last = None, exc  # type: ignore[assignment]
        else:
            if got:
                return got
            last = got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
