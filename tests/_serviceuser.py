"""A real, dedicated non-root system user for a test, and running commands as it.

The account is created with ``useradd`` and removed (with its group) when the test ends. Commands run
as it through ``setpriv`` with only that user's uid, gid and groups; they get ``CAP_DAC_READ_SEARCH``
as their one capability so the test's interpreter and sources are readable wherever the test machine
installed them (a home directory that is 0700, for instance). That capability bypasses read and
directory-search checks only: every write (the point of these tests) is checked as the user.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import require_root, require_tool


@contextmanager
def service_user(group: str | None = None) -> Iterator[str]:
    """A fresh system account (and its own group, or membership in ``group``)."""
    require_root()
    require_tool("useradd", "userdel", "setpriv")
    name = f"es-t{secrets.token_hex(4)}"
    argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
    if group is not None:
        argv += ["--groups", group]
    subprocess.run([*argv, name], check=True, capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=60)
        subprocess.run(["groupdel", name], check=False, capture_output=True, timeout=60)


def as_user(name: str, argv: list[str]) -> list[str]:
    """``argv`` run as ``name`` (uid, primary gid and supplementary groups of that account)."""
    return [
        "setpriv",
        f"--reuid={name}",
        f"--regid={name}",
        "--init-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--",
        *argv,
    ]


def uid_of(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def env_for_service(home: str, config: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESEC_")}
    env.update(EDGESEC_HOME=home, EDGESEC_CONFIG=config)
    return env
