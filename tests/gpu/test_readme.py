"""The README's [[gpu.assignments]] example is a valid site config that the gpu checks read."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from edgesec.config import load_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_gpu_assignment_example_loads(tmp_path: Path) -> None:
    text = README.read_text()
    block = re.search(r"```toml\n(\s*\[\[gpu\.assignments\]\].*?)```", text, re.S)
    assert block, "README has no [[gpu.assignments]] example"
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(textwrap.dedent(block.group(1)))
    a = load_config(cfg).settings.gpu.assignments
    assert len(a) == 1 and a[0].service == "vllm" and a[0].unit == "vllm.service" and "0" in a[0].gpus
