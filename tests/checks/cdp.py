"""Drive Debian's headless Chromium over the DevTools pipe to load a page and watch what it does.

Chromium runs inside a fresh network namespace (``unshare --net``, only a downed loopback) so that not
even the browser's own background traffic can leave the machine; the page's requests, console messages
and exceptions are collected through the DevTools protocol, and a screenshot and a PDF are taken.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class PageReport:
    requests: list[str] = field(default_factory=list)
    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes = b""
    pdf: bytes = b""


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self.w = to_browser
        self.r = from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read(30)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})  # type: ignore[no-any-return]
            self.events.append(m)

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while time.monotonic() < deadline:
            m = self._read(deadline - time.monotonic())
            self.events.append(m)
            if m.get("method") == method:
                return m
        raise TimeoutError(method)


def load_page(path: Path, profile_dir: Path) -> PageReport:
    chromium = shutil.which("chromium") or "chromium"
    # fd 3: chromium reads commands; fd 4: chromium writes answers.
    cmd_r, cmd_w = os.pipe()
    ans_r, ans_w = os.pipe()

    def child_fds() -> None:
        # Order matters when the pipe fds are themselves 3..6; set_inheritable covers dup2(fd, fd) no-ops.
        a, b = os.dup(cmd_r), os.dup(ans_w)
        os.dup2(a, 3)
        os.dup2(b, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    argv = [
        "unshare",
        "--net",
        chromium,
        *FLAGS,
        f"--user-data-dir={profile_dir}",
        "--remote-debugging-pipe",
        "--window-size=1200,1600",
        "about:blank",
    ]
    # close_fds=False: the fd cleanup runs after preexec_fn and would close the freshly dup'ed 3 and 4.
    proc = subprocess.Popen(
        argv, close_fds=False, preexec_fn=child_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    os.close(cmd_r)
    os.close(ans_w)
    pipe = _Pipe(proc, cmd_w, ans_r)
    rep = PageReport()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Runtime", "Log", "Page"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        pipe.wait_event("Page.loadEventFired")
        time.sleep(0.3)  # let late console messages arrive
        shot = pipe.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session
        )
        rep.screenshot = base64.b64decode(shot["data"])
        pdf = pipe.send("Page.printToPDF", {"printBackground": True}, session=session)
        rep.pdf = base64.b64decode(pdf["data"])
        for e in pipe.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Network.requestWillBeSent":
                rep.requests.append(p["request"]["url"])
            elif m == "Runtime.consoleAPICalled":
                rep.console.append({"type": p.get("type"), "args": p.get("args")})
            elif m == "Runtime.exceptionThrown":
                rep.exceptions.append(json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m == "Log.entryAdded":
                rep.log.append(p.get("entry", {}))
        try:
            pipe.send("Browser.close")
        except RuntimeError:
            pass
    finally:
        os.close(cmd_w)
        os.close(ans_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return rep
