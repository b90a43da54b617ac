"""The live policy: where its files are, loading, and hot reload with an atomic swap.

A reload loads the new model and policy completely into a fresh engine and only then replaces the
reference the request path reads (one attribute assignment: a request sees the old engine or the new
one, never a half-loaded one). A file that does not load keeps the last good engine, is recorded as
the holder's ``last_error`` (shown by ``/readyz``) and emits an audit event.
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgesec._fs import read_input_file
from edgesec.authz.engine import PolicyEngine
from edgesec.authz.settings import AuthzSettings
from edgesec.errors import ConfigError, EdgesecError, InputError

__all__ = ["PolicyFiles", "PolicyHolder", "TestCase", "load_test_table", "policy_files"]

MODEL_FILE = "model.conf"
POLICY_FILE = "policy.csv"
TESTS_FILE = "policy.tests.csv"


@dataclass(frozen=True)
class PolicyFiles:
    """The casbin model and policy a site runs."""

    model: Path
    policy: Path

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when either file is edited or replaced (mtime, size, inode)."""
        out = []
        for p in (self.model, self.policy):
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((-1, -1, -1))
        return tuple(out)


def policy_files(settings: AuthzSettings, policy_dir: str | Path | None = None) -> PolicyFiles:
    """The site's policy files: ``--policy-dir`` or ``[authz] policy_dir`` (model.conf + policy.csv).

    There is no fallback: the shipped examples (which make ``erin`` an admin and ``emergency-1`` a
    break-glass user) are only ever used by ``edgesec demo``, which names its copy in its own config.
    """
    configured = policy_dir if policy_dir is not None else settings.policy_dir
    if not configured:
        raise ConfigError(
            "no site policy: [authz] policy_dir is not set and no --policy-dir was given "
            "(the shipped example policies are never used in its place)",
            hint="edgesec authz policy init /etc/edgesec/policy --example bank, "
            "then set [authz] policy_dir (edgesec config init writes it)",
        )
    d = Path(configured).expanduser()
    return PolicyFiles(d / MODEL_FILE, d / POLICY_FILE)


SETTLE_S = 0.25


def _young(stamp: tuple[tuple[int, int, int], ...]) -> bool:
    newest = max(m for m, _, _ in stamp) / 1e9
    return 0 <= time.time() - newest < SETTLE_S


class PolicyHolder:
    """Holds the current engine; :meth:`check` reloads when the files change."""

    def __init__(self, files: PolicyFiles, *, on_reload: Callable[[bool, str | None], None] | None = None):
        self.files = files
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        # The first load must succeed: there is no last good policy to keep.
        self.engine: PolicyEngine = PolicyEngine.load(files.model, files.policy)
        self.generation = 1
        self.loaded_at = time.time()
        self.last_error: str | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0

    def check(self) -> bool | None:
        """Reload if the files changed since the last attempt; ``None`` when nothing changed (yet).

        A file written less than :data:`SETTLE_S` ago is left for the next poll: an editor that
        truncates and rewrites in place would otherwise be caught half way (an empty policy loads fine).
        """
        stamp = self.files.stamp()
        if stamp == self._stamp or _young(stamp):
            return None
        return self.reload()

    def reload(self) -> bool:
        """Load the files into a new engine and swap it in; keep the old one if they do not load."""
        deadline = time.time() + SETTLE_S
        while _young(self.files.stamp()) and time.time() < deadline:
            time.sleep(0.02)
        with self._lock:
            before = self.files.stamp()
            err: str | None
            try:
                engine = PolicyEngine.load(self.files.model, self.files.policy)
                if engine.rule_count == 0 and self.engine.rule_count > 0:
                    # An emptied file is far more often a half-written one than a wish to lock everyone
                    # out; to deny everything, write a policy that grants nothing.
                    raise InputError(f"{self.files.policy} holds no rules; the last good policy is kept")
            except EdgesecError as exc:
                self._stamp = before
                self.last_error = exc.message
                self.reloads_failed += 1
                ok, err = False, exc.message
            else:
                after = self.files.stamp()
                if after != before:
                    # The file changed while we read it (a non-atomic editor save): do not swap in
                    # what may be a truncated policy; the next check loads the finished file.
                    return False
                self._stamp = after
                self.engine = engine
                self.generation += 1
                self.loaded_at = time.time()
                self.last_error = None
                self.reloads_ok += 1
                ok, err = True, None
        if self._on_reload is not None:
            self._on_reload(ok, err)
        return ok


@dataclass(frozen=True)
class TestCase:
    """One row of a policy test table."""

    line: int
    user: str
    tenant: str
    method: str
    uri: str
    expect: bool


def load_test_table(path: Path) -> list[TestCase]:
    """Read ``user,tenant,method,uri,expect`` rows (``#`` comments, an optional header row)."""
    text = read_input_file(path, what="policy test table", limit=16 * 1024 * 1024)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    cases: list[TestCase] = []
    for lineno, row in enumerate(csv.reader(io.StringIO(decoded)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if [c.lower() for c in cells] == ["user", "tenant", "method", "uri", "expect"]:
            continue
        if len(cells) != 5:
            raise InputError(
                f"{path}:{lineno}: expected 5 columns (user,tenant,method,uri,expect), got {len(cells)}"
            )
        user, tenant, method, uri, expect = cells
        if expect.lower() not in ("allow", "deny"):
            raise InputError(f"{path}:{lineno}: expect must be allow or deny, got {expect!r}")
        if not user or not tenant or not method or not uri:
            raise InputError(f"{path}:{lineno}: empty cell")
        cases.append(TestCase(lineno, user, tenant, method, uri, expect.lower() == "allow"))
    if not cases:
        raise InputError(f"{path}: no test rows")
    return cases
