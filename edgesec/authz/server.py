"""Running the service: one process, or a small pre-fork supervisor for ``--workers N``.

uvicorn's own multi-worker supervisor answers SIGHUP by restarting every worker, which drops the
keep-alive connections a proxy has open (a failed forward-auth call is a failed user request). Here the
parent binds the socket once, forks N workers that share it, and forwards SIGHUP to them: each worker
reloads its policy and trust bundle in place, and no connection is closed. A worker that dies is
replaced; SIGTERM/SIGINT stop the workers gracefully.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from types import FrameType
from typing import Any

from edgesec.errors import OperationFailed

__all__ = ["run_server"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OperationFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, server_header=False, lifespan="on"
    )
    return uvicorn.Server(config)


def _flush_audit() -> None:
    try:
        from edgesec import auditing

        auditing.flush(10.0)
    except BaseException:  # noqa: BLE001,S110 -- the worker is leaving; the lifespan already logged a failure
        pass


def run_server(app: Any, host: str, port: int, workers: int) -> None:
    """Serve ``app`` until SIGTERM/SIGINT; with ``workers > 1`` in forked worker processes."""
    sock = _bind(host, port)
    if workers <= 1:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the lifespan installs the reload handler
        try:
            _server(app, host, port).run(sockets=[sock])
        finally:
            sock.close()
        return
    from edgesec.authz.metrics import MAX_WORKERS, set_worker_slot

    if workers > MAX_WORKERS:
        sock.close()
        raise OperationFailed(f"at most {MAX_WORKERS} workers (the shared metrics block has that many slots)")
    children: dict[int, int] = {}  # pid -> slot
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # Until the app's lifespan installs its reload handler, a SIGHUP must not kill the worker.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                # /metrics sums every worker's slot; a replacement goes on counting in the same one.
                set_worker_slot(slot)
                _server(app, host, port).run(sockets=[sock])
            except BaseException:  # noqa: BLE001 -- a worker must never return into the parent's loop
                code = 1
            _flush_audit()  # os._exit runs no exit handlers: queued audit events are written first
            os._exit(code)
        children[pid] = slot

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            signum = signal.SIGTERM
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for slot in range(workers):
        spawn(slot)
    try:
        while children:
            try:
                pid, _status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            slot = children.pop(pid, -1)
            if slot >= 0 and not stopping:
                time.sleep(0.5)  # a crash loop must not spin the CPU
                spawn(slot)
    finally:
        sock.close()
