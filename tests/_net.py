"""Network helpers every test area shares (loopback only: tests never send traffic anywhere else)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now: bound, then closed again. For a server the test
    starts next, or for a connection that must be refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
