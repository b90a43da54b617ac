"""The shipped data is found from a source checkout and from a built wheel; the wheelhouse installs offline."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from edgesec._data import policies_root

ROOT = Path(__file__).resolve().parents[2]


def test_policies_found_in_checkout() -> None:
    root = policies_root()
    assert (root / "README.md").is_file()


@pytest.mark.slow
def test_wheelhouse_installs_offline(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    cp = subprocess.run(
        ["make", "-C", str(ROOT), "wheelhouse", f"WHEELHOUSE={wh}", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert cp.returncode == 0, cp.stderr[-2000:]
    sums = (wh / "SHA256SUMS").read_text().splitlines()
    wheels = sorted(p.name for p in wh.glob("*.whl"))
    assert len(sums) == len(wheels) and any(w.startswith("edgesec-") for w in wheels)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=wh, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    inst = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wh), "edgesec"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ver = subprocess.run(
        [str(env_dir / "bin" / "edgesec"), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert ver.returncode == 0 and ver.stdout.startswith("edgesec "), ver.stderr
    # The wheel carries policies/ inside the package.
    where = subprocess.run(
        [str(py), "-c", "from edgesec._data import policies_root; print(policies_root())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert where.returncode == 0 and "_policies" in where.stdout, where.stderr
    # ... and the report's message catalogues (zh-CN), read through the package.
    cat = subprocess.run(
        [str(py), "-c", "from edgesec.checks.reports.i18n import load; print(len(load('zh-CN').checks))"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert cat.returncode == 0 and int(cat.stdout) > 0, cat.stderr
