"""Every generated syslog-ng variant passes `syslog-ng --syntax-only` and our own lint; lint flags known mistakes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgesec.auditing.lint import lint_config
from edgesec.auditing.syslogng import NetworkSource, PipelineOptions, render
from edgesec.errors import InputError

from .sitepki import SitePki
from .sng import syntax_check


def opts(pki: SitePki, tmp: Path, **kw: object) -> PipelineOptions:
    base: dict[str, object] = dict(
        trail_file=str(tmp / "audit" / "trail.jsonl"),
        ca_file=str(pki.ca_bundle),
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
        archive_dir=str(tmp / "archive"),
        disk_buffer_dir=str(tmp / "buf"),
    )
    base.update(kw)
    return PipelineOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def slog_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("slog")
    subprocess.run(["slogkey", "-m", str(d / "master.key")], check=True, capture_output=True)
    subprocess.run(
        ["slogkey", "-d", str(d / "master.key"), "00:00:5e:00:53:01", "host-1", str(d / "host.key")],
        check=True,
        capture_output=True,
    )
    return d / "host.key"


VARIANTS = {
    "minimal": dict(audit_log=None, local_syslog="off"),
    "default": {},
    "local-tls": dict(local_syslog="tls"),
    "local-unix": dict(local_syslog="unix"),
    "journald": dict(journald=True),
    "network": "network",
    "slog": "slog",
    "elasticsearch-http": dict(driver="elasticsearch-http", journald=True),
}


@pytest.mark.real("syslog-ng", "slogkey")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_valid(variant: str, pki: SitePki, tmp_path: Path, slog_key: Path) -> None:
    kw = VARIANTS[variant]
    if kw == "network":
        kw = dict(
            network=NetworkSource(
                port=16514,
                ip="127.0.0.1",
                ca_file=str(pki.ca_bundle),
                cert_file=str(pki.server.cert),
                key_file=str(pki.server.key),
                trusted_dn=("*, O=edgesec test",),
            )
        )
    elif kw == "slog":
        kw = dict(slog=True, slog_key=str(slog_key), slog_mac=str(tmp_path / "slog.mac"))
    if variant == "local-unix":
        kw = dict(kw, local_syslog_socket=str(tmp_path / "edgesec.sock"))
    files = render(opts(pki, tmp_path, **kw))  # type: ignore[arg-type]
    assert ("syslog-ng-slog.conf" in files) == (variant == "slog")
    for name, text in files.items():
        conf = tmp_path / name
        conf.write_text(text)
        syntax_check(conf)
        errors = [f for f in lint_config(text) if f.severity == "error"]
        assert errors == [], errors
        assert lint_config(text) == [], "the generated config should be lint-clean"
        assert "type(" not in text or 'type("")' in text
        assert "disk-buffer(" in text and "reliable(yes)" in text and "peer-verify(yes)" in text
    if variant == "slog":
        assert "$(slog -k" in files["syslog-ng-slog.conf"] and "$(slog" not in files["syslog-ng.conf"]


def test_gen_cli_writes_and_refuses_to_clobber(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "gen"
    args = ("auditlog", "gen", "syslog-ng", "--out", str(out), "--es", "https://10.0.0.9:9200", "--journald")
    code, stdout, err = cli("--json", *args)
    assert code == 0, err
    warnings = json.loads(stdout)["warnings"]
    assert any("/etc/edgesec/syslog-ng/fullchain.pem does not exist yet" in w for w in warnings)
    text = (out / "syslog-ng.conf").read_text()
    assert '"https://10.0.0.9:9200/_bulk"' in text and "systemd-journal(" in text
    assert cli(*args)[0] == 0  # same content: nothing to do
    (out / "syslog-ng.conf").write_text("# edited by hand\n")
    code, _, err = cli(*args)
    assert code == 1 and "refusing to overwrite" in err
    assert (out / "syslog-ng.conf").read_text() == "# edited by hand\n"
    code, _, err = cli(
        "auditlog", "gen", "syslog-ng", "--out", str(out), "--es", "http://10.0.0.9:9200", "--force"
    )
    assert code == 2 and "https" in err


def test_bad_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="https"):
        PipelineOptions(es_urls=("http://x:9200",))
    with pytest.raises(InputError, match="absolute"):
        PipelineOptions(archive_dir='/var/log/x") ; destination evil(')
    with pytest.raises(InputError, match="index prefix"):
        PipelineOptions(index_prefix="Edge Sec")


BAD = """\
@version: 3.38
@include "scl.conf"
template t_json { template("$(format-json --scope rfc5424 --pair process.pid=${PID})"); };
source s_local { system(); };
# tcp("logstash" port(5044)) in a comment is fine
destination d_logstash { tcp("logstash.example" port(5044)); };
destination d_es {
    elasticsearch-http(url("http://es.example:9200/_bulk") index("logs") type("_doc")
        template("t_json")
        tls(peer-verify(no)));
};
destination d_es2 { elasticsearch-http(url("https://es.example:9200/_bulk") index("x")
    disk-buffer(dir("/var/buf"))); };
destination d_file { file("/var/log/audit-copy.log" perm(0644)); };
log { source(s_local); destination(d_logstash); destination(d_es); destination(d_es2); destination(d_file); };
"""


def test_lint_flags_known_mistakes(tmp_path: Path) -> None:
    found = {(f.rule, f.line) for f in lint_config(BAD)}
    assert ("beats-port", 6) in found
    assert ("es-type", 8) in found
    assert ("es-type-missing", 12) in found
    assert ("no-disk-buffer", 6) in found and ("no-disk-buffer", 8) in found
    assert ("disk-buffer-unreliable", 12) in found
    assert ("http-no-tls", 8) in found
    assert ("tls-no-verify", 10) in found
    assert ("literal-template-name", 9) in found
    assert ("format-json-cast", 3) in found
    assert ("archive-perms", 14) in found
    assert ("http-4xx-forever", 8) in found and ("http-4xx-forever", 12) in found
    assert ("no-internal", 1) in found
    assert not any(line == 5 for _, line in found)  # comments are ignored


def test_lint_cli_exit_codes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.conf"
    bad.write_text(BAD)
    code, out, _ = cli("--json", "auditlog", "lint", str(bad))
    assert code == 1
    doc = json.loads(out)
    assert doc["result"]["errors"] >= 8
    code, out, _ = cli("auditlog", "lint", str(bad))
    assert "bad.conf:6: error: [beats-port]" in out
    code, _, err = cli("auditlog", "lint", str(tmp_path / "missing.conf"))
    assert code == 2 and "not found" in err
    (tmp_path / "bin.conf").write_bytes(b"\xff\xfe\x00")
    assert cli("auditlog", "lint", str(tmp_path / "bin.conf"))[0] == 2


def test_lint_no_archive() -> None:
    conf = 'source s { file("/var/log/in.log"); };\ndestination d { http(url("https://es:9200/_bulk") disk-buffer(reliable(yes))); };\n'
    rules = {f.rule for f in lint_config(conf)}
    assert "no-archive" in rules  # a file() *source* is no archive
    assert "no-disk-buffer" not in rules and "disk-buffer-unreliable" not in rules


GAPS = """\
@version: 3.38
source s_beats { network(ip("0.0.0.0") port(5044)); };
source s_local { system(); };
destination d_remote_tcp { network("collector.example" port(514) transport("tcp")
    disk-buffer(reliable(yes) dir("/var/buf"))); };
destination d_remote_udp { udp("10.1.2.3" port(514) disk-buffer(reliable(yes) dir("/var/buf2"))); };
destination d_loop { tcp("127.0.0.1" port(6514) disk-buffer(reliable(yes) dir("/var/buf3"))); };
destination d_tls { syslog("collector.example" transport("tls") tls(peer-verify(yes))
    disk-buffer(reliable(yes) dir("/var/buf4"))); };
destination d_file { file("/var/log/a.log" perm(0600)
    template("$(format-json --pair host=${HOST} --pair user.idd=${USER} --pair user.name=${USER})\\n")); };
log { source(s_local); destination(d_remote_tcp); destination(d_file); };
log { source(s_beats); destination(d_loop); destination(d_tls); flags(flow-control); };
"""


def test_lint_gaps_closed() -> None:
    found = {(f.rule, f.line) for f in lint_config(GAPS)}
    assert not any(rule == "beats-port" for rule, _ in found)  # a *source* on 5044 is only a port
    assert ("plaintext-remote", 4) in found and ("plaintext-remote", 6) in found
    assert not any(rule == "plaintext-remote" and line in (7, 8) for rule, line in found)  # loopback, TLS
    assert ("no-flow-control", 12) in found and ("no-flow-control", 13) not in found
    assert ("ecs-name", 11) in found and ("ecs-unknown-field", 11) in found
    assert sum(1 for rule, _ in found if rule.startswith("ecs-")) == 2  # user.name is fine


def test_lint_follows_includes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    main = tmp_path / "syslog-ng.conf"
    (tmp_path / "conf.d").mkdir()
    main.write_text(
        '@version: 3.38\n@include "scl.conf"\n@include "conf.d/*.conf"\n@include "missing.conf"\n'
        'destination d_file { file("/var/log/a.log" perm(0600)); };\n'
    )
    (tmp_path / "conf.d" / "remote.conf").write_text(
        'source s { system(); };\n\ndestination d_es { http(url("http://es.example:9200/_bulk")); };\n'
        "log { source(s); destination(d_es); destination(d_file); };\n"
    )
    code, out, _ = cli("--json", "auditlog", "lint", str(main))
    assert code == 1
    got = {(Path(f["file"]).name, f["rule"], f["line"]) for f in json.loads(out)["result"]["findings"]}
    assert ("remote.conf", "http-no-tls", 3) in got and ("remote.conf", "no-disk-buffer", 3) in got
    assert ("remote.conf", "no-flow-control", 4) in got
    assert ("syslog-ng.conf", "include-missing", 4) in got
    assert not any(rule == "no-archive" for _, rule, _ in got)  # the archive is in the main file
    assert not any("scl" in f for f, _, _ in got)


def test_site_pipeline_check_does_not_pass_unread_includes(
    cli, tmp_path: Path, home: Path, pki: SitePki
) -> None:  # type: ignore[no-untyped-def]
    """The auditing.pipeline check lints the text it read; a config that @includes other files cannot
    PASS on that alone: it warns, naming them (``auditlog lint`` follows them)."""
    from edgesec.checks.families.auditing import Pipeline
    from edgesec.config import LoadedConfig, Settings
    from tests.e2e.test_site_checks import NoProcesses, ctx, statuses

    code, _, err = cli(
        "auditlog", "gen", "syslog-ng", "--out", str(tmp_path / "sng"), "--audit-log", "",
        "--buffer-dir", str(tmp_path / "buf"), "--ca", str(pki.ca_bundle), "--cert", str(pki.client.cert),
        "--key", str(pki.client.key),
    )  # fmt: skip
    assert code == 0, err
    conf = tmp_path / "sng" / "syslog-ng.conf"
    (tmp_path / "sng" / "extra.conf").write_text("# nothing yet\n")
    conf.write_text(conf.read_text().replace("\noptions {", '\n@include "extra.conf"\n\noptions {', 1))
    cfg = LoadedConfig(Settings(), None, home, "test")
    params = {"auditing.pipeline": {"syslog-ng_configs": [str(conf)]}}
    out = list(Pipeline().run(ctx(NoProcesses(), cfg=cfg, params=params)))
    assert "PASS" not in statuses(out) and "WARN" in statuses(out)
    assert any("includes extra.conf" in f.message for f in out)
