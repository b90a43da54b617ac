"""The README's auditlog commands run as written, placeholders filled with a real site CA and endpoint."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from edgesec import auditing
from edgesec.auditing.ecs import AuditEvent
from edgesec.auditing.elastic import index_for

from .esmock import FakeElasticsearch
from .sitepki import make_site_pki

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    section = README.read_text().split("## The audit trail", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block
    out = []
    for line in block.group(1).splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("edgesec auditlog"):
            out.append(shlex.split(line.replace("[", "").replace("]", ""))[1:])
    return out


def test_readme_auditlog_commands(cli, tmp_path: Path, conformance: Path) -> None:  # type: ignore[no-untyped-def]
    cmds = readme_commands()
    assert {c[1] for c in cmds} >= {"verify", "checkpoint", "gen", "push", "ship", "lint"}
    pki = make_site_pki(tmp_path / "pki")
    trail = tmp_path / "audit"
    with auditing.configured(trail):
        for i in range(10):
            auditing.emit(
                AuditEvent(
                    action="readme.test", category=("host",), type=("info",), fields={"user.id": f"u{i}"}
                )
            )
    cfg = tmp_path / "edgesec.toml"
    cfg.write_text(
        f'[auditing]\ntrail_dir = "{trail}"\n[pki]\nstore_dir = "{pki.store}"\ntrust_bundle_dir = "{pki.trust}"\n'
    )
    code, out, err = cli("--config", str(cfg), "--json", "auditlog", "checkpoint", "--signer", "trail-signer")
    assert code == 0, err
    checkpoint_file = json.loads(out)["result"]["file"]
    archive = tmp_path / "archive-audit.log"  # what the syslog-ng archive holds: the trail lines
    archive.write_bytes((trail / "trail.jsonl").read_bytes())
    journal = tmp_path / "bulk"  # what the syslog-ng journal holds: the _bulk items it sent
    journal.mkdir()
    (journal / "2026-01-01.ndjson").write_bytes(
        b"".join(
            json.dumps({"create": {"_index": index_for("edgesec", json.loads(ln)), "_id": json.loads(ln)["event"]["hash"]}}).encode()
            + b"\n" + ln + b"\n"
            for ln in (trail / "trail.jsonl").read_bytes().splitlines()
        )
    )  # fmt: skip
    with FakeElasticsearch(conformance, pki.server.cert, pki.server.key, pki.ca_bundle) as es:
        gen_dirs = iter(tmp_path / f"gen{i}" for i in range(10))
        last_conf = None
        for argv in cmds:
            subs = {
                "SEQ": "1",
                "FILE": checkpoint_file,
                "ARCHIVE": str(archive),
                "/var/log/edgesec/archive/bulk": str(journal),
                "URL": es.url,
                "CA": str(pki.ca_bundle),
                "C": str(pki.client.cert),
                "K": str(pki.client.key),
                "client.pem": str(pki.client.cert),
                "client.key": str(pki.client.key),
            }
            args = []
            for a in argv:
                if a == "DIR":
                    d = next(gen_dirs)
                    args.append(str(d))
                    last_conf = d / "syslog-ng.conf" if "syslog-ng" in argv else last_conf
                elif a == "/etc/syslog-ng/syslog-ng.conf":
                    assert last_conf is not None
                    args.append(str(last_conf))
                else:
                    args.append(subs.get(a, a))
            code, _, err = cli("--config", str(cfg), *args)
            assert code == 0, (args, err)
            assert "Traceback" not in err
        assert es.count("edgesec-audit-") >= 10  # the ship line (the checkpoint emitted more records)
        assert es.violations == []
