"""The test process itself refuses traffic beyond loopback (the project's network rule)."""

from __future__ import annotations

import socket

import pytest


def test_outside_addresses_are_refused() -> None:
    # 192.0.2.1 (TEST-NET-1) never leaves: the guard refuses before any packet is built.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s,
        pytest.raises(PermissionError, match="network rule"),
    ):
        s.connect(("192.0.2.1", 443))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
        pytest.raises(PermissionError, match="network rule"),
    ):
        s.sendto(b"x", ("192.0.2.1", 53))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
        pytest.raises(PermissionError, match="network rule"),
    ):
        s.sendmsg([b"x"], [], 0, ("192.0.2.1", 53))
    with pytest.raises(PermissionError, match="resolve"):
        socket.getaddrinfo("resolver-test.invalid", 53)


def test_loopback_is_allowed() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5):
            pass
