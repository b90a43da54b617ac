"""``auditlog gen syslog-ng`` says where it ships when no Elasticsearch URL is given (issue #20 attack 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def test_the_default_elasticsearch_url_is_said_not_silent(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli(
        "--json", "auditlog", "gen", "syslog-ng", "--out", str(tmp_path / "a"), "--audit-log", ""
    )
    assert code == 0, err
    assert json.loads(out)["result"]["es_urls"] == ["https://127.0.0.1:9200"]
    assert "no Elasticsearch URL" in err and "https://127.0.0.1:9200" in err
    code, out, err = cli(
        "--json", "auditlog", "gen", "syslog-ng", "--out", str(tmp_path / "b"), "--audit-log", "",
        "--es", "https://es.bank.internal:9200",
    )  # fmt: skip
    assert code == 0 and "no Elasticsearch URL" not in err
    assert json.loads(out)["result"]["es_urls"] == ["https://es.bank.internal:9200"]
