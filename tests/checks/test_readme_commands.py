"""The README's audit commands run as written (in a scratch directory, against this host)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _audit_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## The audit (`edgesec audit`)", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block
    cmds = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("edgesec "):
            cmds.append(shlex.split(line)[1:])
    return cmds


@pytest.mark.parametrize("argv", _audit_commands(), ids=lambda a: " ".join(a[:3]))
def test_readme_audit_command(cli, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    code, _out, err = cli(*argv)
    assert code in (0, 1), (argv, err)
    assert "Traceback" not in err
    if "--report" in argv:
        produced = list(tmp_path.rglob("edgesec-*"))
        assert produced, argv
    if "zh-CN" in argv:
        assert "结论" in (tmp_path / "reports" / "edgesec-report.html").read_text()
