"""The go-live test's stand-in for ``systemctl`` (no systemd runs as PID 1 where the tests run).

It does what systemd would do with the units the README's commands wrote, and nothing else:

* ``enable --now UNIT...`` / ``start UNIT``, for edgesec's units in ``/etc/systemd/system`` only: reads
  the unit the README's commands wrote (a template for ``name@instance``; the README's ``systemd-analyze
  verify`` step has checked it), runs ``ExecStartPre``, then ``ExecStart`` (``%i`` = the instance) as its
  ``User``/``Group`` with its ``Environment=`` lines: in the foreground for ``Type=oneshot``, else in the
  background (a replica is up when it answers ``/healthz``). Sandboxing directives are not applied
  (``systemd-analyze`` judges them, not this).
* ``reload nginx``: starts nginx if it is not running, else ``nginx -s reload``.

Anything else exits 2 naming the call, so a README step this stand-in does not understand fails the test.
Every call is appended to ``$GOLIVE_STATE/systemctl.calls``; started processes to ``pids``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

UNITS = Path("/etc/systemd/system")
STATE = Path(os.environ["GOLIVE_STATE"])


def _unit(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k}", []).append(v)
    return out


def _environment(u: dict[str, list[str]]) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "LANG", "NO_COLOR") if k in os.environ}
    for line in u.get("Service.Environment", []):
        for item in shlex.split(line):
            k, _, v = item.partition("=")
            env[k] = v
    return env


def _unit_file(name: str) -> tuple[Path, str]:
    """The unit file of ``name`` (an instance's template) and the instance string."""
    name = name if "." in name else f"{name}.service"
    stem, _, suffix = name.rpartition(".")
    if "@" in stem:
        prefix, inst = stem.split("@", 1)
        return UNITS / f"{prefix}@.{suffix}", inst
    return UNITS / name, ""


def _argv(cmd: str, inst: str) -> list[str]:
    return shlex.split(cmd.replace("%i", inst))


def _start(name: str) -> None:
    path, inst = _unit_file(name)
    u = _unit(path)
    env = _environment(u)
    user, group = u.get("Service.User", ["root"])[0], u.get("Service.Group", ["root"])[0]
    # CAP_DAC_READ_SEARCH only so the test machine's interpreter (maybe under a 0700 home) is readable
    # by a service account: it lifts read and search checks, never a write check.
    as_user = (
        ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups",
         "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"]
        if user != "root" else []
    )  # fmt: skip
    for pre in u.get("Service.ExecStartPre", []):
        subprocess.run([*as_user, *_argv(pre, inst)], env=env, cwd="/", check=True)
    (cmd,) = u["Service.ExecStart"]
    if u.get("Service.Type", ["simple"])[0] == "oneshot":
        r = subprocess.run([*as_user, *_argv(cmd, inst)], env=env, cwd="/", check=False)
        if r.returncode != 0:
            sys.exit(f"{name} failed: exit {r.returncode}")
        return
    log = (STATE / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [*as_user, *_argv(cmd, inst)],
        env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    with (STATE / "pids").open("a") as fh:
        fh.write(f"{proc.pid}\n")
    # A replica is up when it answers /healthz; anything else when it is still running a moment later.
    port = inst if name.startswith("edgesec-authz@") else None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited {proc.returncode}: see {STATE / (name + '.log')}")
        if port is None:
            time.sleep(1)
            if proc.poll() is None:
                return
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{name} did not come up")


def main(argv: list[str]) -> None:
    with (STATE / "systemctl.calls").open("a") as fh:
        fh.write(shlex.join(argv) + "\n")
    if (argv[:2] == ["enable", "--now"] or argv[:1] == ["start"]) and all(
        a.startswith("edgesec-") for a in argv[1:] if a != "--now"
    ):
        for name in argv[1:]:
            if name != "--now":
                _start(name)
        return
    if argv == ["reload", "nginx"]:
        pid = Path("/run/nginx.pid")
        running = pid.exists() and pid.read_text().strip().isdigit()  # `nginx -t` leaves an empty one
        subprocess.run(["nginx", "-s", "reload"] if running else ["nginx"], check=True)
        return
    sys.exit(f"systemctl {shlex.join(argv)}: not something the go-live test's stand-in does")


if __name__ == "__main__":
    main(sys.argv[1:])
