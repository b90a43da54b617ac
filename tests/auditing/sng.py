"""Run a real syslog-ng process on a generated config, with its own persist, pid and control files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def syntax_check(conf: Path) -> None:
    r = subprocess.run(
        ["syslog-ng", "--syntax-only", "-f", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, f"syslog-ng rejected {conf}:\n{r.stderr}"


class SyslogNg:
    """One syslog-ng instance; state (persist file, disk buffer) survives stop/start."""

    def __init__(self, conf: Path, state: Path) -> None:
        self.conf = conf
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state / "syslog-ng.stderr"

    def start(self) -> None:
        ctl = self.state / "ctl"
        if ctl.exists():
            ctl.unlink()
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    "syslog-ng",
                    "-F",
                    "--no-caps",
                    "-f",
                    str(self.conf),
                    "-R",
                    str(self.state / "persist"),
                    "-p",
                    str(self.state / "pid"),
                    "-c",
                    str(ctl),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 20
        while not ctl.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"syslog-ng exited: {self.log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "syslog-ng did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
