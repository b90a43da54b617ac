"""Generate a complete syslog-ng 3.38 configuration for the audit pipeline.

What it builds (``render(options)`` is pure: it returns ``{file name: text}``; the CLI writes files):

* sources: the edgesec trail (``file()``, one JSON document per line), auditd's log (raw lines, the
  ENRICHED format's 0x1D separator split off first), edgesec's own RFC 5424 output (checkpoints),
  and optionally journald and a TLS network source for other hosts;
* parsing and ECS mapping done in syslog-ng, so every document reaches Elasticsearch already in ECS
  (auditd as Elastic's auditd module maps it: auid -> ``user.id``, uid -> ``user.effective.id``,
  acct -> ``user.name``, comm -> ``process.name``, exe -> ``process.executable``, pid ->
  ``process.pid``, res/success -> ``event.outcome``, record type ->
  ``event.action``, addr/src -> ``source.ip``, dst -> ``destination.ip``, gid -> ``user.group.id``, cwd ->
  ``process.working_directory``, proctitle -> ``process.title``, a PATH record's name -> ``file.path``,
  ``msg=audit(epoch:serial)`` -> ``@timestamp`` and ``event.sequence``);
* destinations: a local archive (one directory per day, 0700 directories and 0600 files) and one
  ``http()`` destination speaking the Elasticsearch ``_bulk`` API over mutual TLS, with a reliable
  disk buffer, an index per kind, and a dead-letter route for anything that cannot be parsed.

Two drivers for the Elasticsearch destination, both with deterministic ``_id`` s (the trail record's own
hash; a SHA-256 of the raw auditd line), so a batch retried after an outage or a restart cannot create
duplicates: ``http`` (the default; only needs ``syslog-ng-mod-http``) sends ``create`` actions, and a
second copy is answered ``409`` and dropped; ``elasticsearch-http`` uses the SCL wrapper (Debian's
``syslog-ng-scl``), which always sends ``index`` actions: a second copy overwrites the identical document.

Indices are named from the *event's* own date (parsed on purpose from the record), so a retried
event lands in the same index as its first copy, which is what makes the ``_id`` de-duplicate.
syslog-ng 3.38 does not read the bulk response: a rejected document inside a ``200`` would be lost,
so the generated index templates give every index an ingest pipeline whose ``on_failure`` moves the
document to the dead-letter index (see :mod:`edgesec.auditing.elastic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from edgesec.errors import InputError

KINDS = ("audit", "auditd", "checkpoint", "journald", "syslog", "deadletter")


@dataclass(frozen=True)
class NetworkSource:
    """A TLS syslog listener for other hosts (RFC 5425), clients verified against the site CA."""

    port: int = 6514
    ip: str = "0.0.0.0"  # noqa: S104 - a listener for other hosts is the point of this source
    ca_file: str = "/etc/edgesec/trust/ca-bundle.pem"
    cert_file: str = "/etc/edgesec/syslog-server/fullchain.pem"
    key_file: str = "/etc/edgesec/syslog-server/key.pem"
    trusted_dn: tuple[str, ...] = ()
    crl_dir: str | None = None


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the generated configuration depends on (paths are the target host's)."""

    trail_file: str = "/var/lib/edgesec/audit/trail.jsonl"
    audit_log: str | None = "/var/log/audit/audit.log"
    journald: bool = False
    network: NetworkSource | None = None
    # edgesec's own RFC 5424 output: "tcp" or "tls" on loopback, "unix" on a socket, or "off".
    local_syslog: str = "tcp"
    local_syslog_port: int = 6514
    local_syslog_socket: str = "/run/edgesec/syslog.sock"
    es_urls: tuple[str, ...] = ("https://127.0.0.1:9200",)
    ca_file: str = "/etc/edgesec/trust/ca-bundle.pem"
    cert_file: str = "/etc/edgesec/syslog-ng/fullchain.pem"
    key_file: str = "/etc/edgesec/syslog-ng/key.pem"
    index_prefix: str = "edgesec"
    archive_dir: str = "/var/log/edgesec/archive"
    disk_buffer_dir: str = "/var/lib/syslog-ng/edgesec"
    disk_buffer_bytes: int = 1024 * 1024 * 1024
    batch_lines: int = 500
    batch_timeout_ms: int = 1000
    workers: int = 4
    time_reopen: int = 10
    site: str = "edge-site"
    slog: bool = False
    # "http": our own _bulk body with create actions (needs only syslog-ng-mod-http);
    # "elasticsearch-http": the SCL wrapper (Debian: syslog-ng-scl), index actions with the same _ids.
    driver: str = "http"
    slog_key: str = "/etc/syslog-ng/slog/host.key"
    slog_mac: str = "/var/log/edgesec/archive/slog.mac"
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.driver not in ("http", "elasticsearch-http"):
            raise InputError(f"driver must be http or elasticsearch-http, not {self.driver!r}")
        if self.local_syslog not in ("off", "unix", "tcp", "tls"):
            raise InputError(
                f"local syslog transport must be off, unix, tcp or tls, not {self.local_syslog!r}"
            )
        if not self.es_urls:
            raise InputError(
                "at least one Elasticsearch URL is needed ([auditing] elasticsearch_urls or --es)"
            )
        for u in self.es_urls:
            if not u.startswith("https://"):
                raise InputError(f"Elasticsearch URL must use https (mutual TLS): {u}")
        for p in (
            self.trail_file,
            self.archive_dir,
            self.disk_buffer_dir,
            self.ca_file,
            self.cert_file,
            self.key_file,
        ):
            _check_path(p)
        if (
            not self.index_prefix.replace("-", "").replace("_", "").isalnum()
            or self.index_prefix != self.index_prefix.lower()
        ):
            raise InputError(f"index prefix must be lowercase letters, digits, - or _: {self.index_prefix!r}")


def _check_path(p: str) -> None:
    if not p.startswith("/") or any(c in p for c in "\"'\n\\`$"):
        raise InputError(f"path for the syslog-ng config must be absolute and free of quotes and $: {p!r}")


def _q(s: str) -> str:
    """A syslog-ng double-quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sq(s: str) -> str:
    """A syslog-ng single-quoted string (no escapes inside; we never need a single quote)."""
    if "'" in s:
        raise InputError(f"cannot single-quote {s!r}")
    return "'" + s + "'"


# -- pieces ------------------------------------------------------------------------------------------

_HEADER = """\
@version: 3.38
# edgesec audit pipeline for syslog-ng 3.38 -- generated by `edgesec auditlog gen syslog-ng`.
# Re-generate rather than edit: `edgesec auditlog lint` checks hand-edited copies.
#
# Run it as its own instance (it sets global options), for example:
#   syslog-ng -F -f {conf} --persist-file /var/lib/syslog-ng/edgesec.persist \\
#     --pidfile /run/syslog-ng-edgesec.pid --control /run/syslog-ng-edgesec.ctl

options {{
    chain-hostnames(no);
    keep-hostname(yes);
    use-dns(no);
    dns-cache(no);
    use-fqdn(no);
    keep-timestamp(yes);
    frac-digits(3);
    # Every date we send is UTC, as ECS and Elasticsearch expect.
    send-time-zone("+00:00");
    # A failed int64() cast drops that one field (auditd lines without a pid), never the message.
    on-error("silently-drop-property");
    log-msg-size(1048576);
    # At least every source window together (1000 trail files x 100), so a burst is queued, not dropped.
    log-fifo-size(100000);
    # Archive: private to the syslog-ng user; auditors get copies, not access.
    create-dirs(yes);
    dir-perm(0700);
    perm(0600);
    # Seconds before a failed destination (Elasticsearch down) is tried again.
    time-reopen({time_reopen});
    stats-freq(3600);
}};
"""


def _sources(o: PipelineOptions) -> list[str]:
    out = [
        f"""\
# The edgesec trail: one canonical ECS JSON document per line, in trail.jsonl and the rotated
# trail.<first>-<last>.jsonl files. wildcard-file() reads every one of them, so records rotated away
# while syslog-ng was stopped are still shipped. A rotated file is read again under its new name:
# Elasticsearch keeps one copy (the record's hash is its _id), the archive may hold two identical ones.
# No persist-name() here: it would make every file share one read position. log-iw-size() is shared by
# the max-files() readers: 100 messages each (less is clamped, with a warning about message loss).
source s_edgesec_trail {{
    wildcard-file(base-dir({_q(str(Path(o.trail_file).parent))}) filename-pattern("trail*.jsonl") recursive(no)
        flags(no-parse) follow-freq(1) max-files(1000) log-iw-size(100000));
}};
"""
    ]
    if o.audit_log:
        out.append(f"""\
# auditd's log, raw lines (log_format = ENRICHED on Debian 12 adds a 0x1D and translated fields).
source s_auditd {{
    file({_q(o.audit_log)} flags(no-parse) follow-freq(1) persist-name("edgesec-auditd"));
}};
""")
    if o.local_syslog == "tcp":
        out.append(f"""\
# edgesec's RFC 5424 output (signed checkpoints, records), on loopback only.
source s_edgesec_syslog {{
    syslog(transport("tcp") ip("127.0.0.1") port({o.local_syslog_port}) persist-name("edgesec-syslog"));
}};
""")
    elif o.local_syslog == "tls":
        out.append(f"""\
source s_edgesec_syslog {{
    syslog(transport("tls") ip("127.0.0.1") port({o.local_syslog_port}) persist-name("edgesec-syslog")
        tls(ca-file({_q(o.ca_file)}) key-file({_q(o.key_file)}) cert-file({_q(o.cert_file)})
            peer-verify(required-trusted)));
}};
""")
    elif o.local_syslog == "unix":
        _check_path(o.local_syslog_socket)
        out.append(f"""\
source s_edgesec_syslog {{
    unix-stream({_q(o.local_syslog_socket)} perm(0600) flags(syslog-protocol) persist-name("edgesec-syslog"));
}};
""")
    if o.journald:
        out.append("""\
source s_journald {
    systemd-journal(prefix(".journald.") persist-name("edgesec-journald"));
};
""")
    if o.network is not None:
        n = o.network
        for p in (n.ca_file, n.cert_file, n.key_file, *([n.crl_dir] if n.crl_dir else [])):
            _check_path(p)
        dn = " ".join(_q(d) for d in n.trusted_dn)
        extra = (f"\n            trusted-dn({dn})" if dn else "") + (
            f"\n            crl-dir({_q(n.crl_dir)})" if n.crl_dir else ""
        )
        out.append(f"""\
# Other hosts, RFC 5425 syslog over TLS. Identity is enforced by trusted-dn(), not by the
# .tls.x509_* macros, which 3.38 can leave empty on a connection's first messages (issue #5579).
source s_network {{
    syslog(transport("tls") ip({_q(n.ip)}) port({n.port}) persist-name("edgesec-network")
        tls(ca-file({_q(n.ca_file)}) key-file({_q(n.key_file)}) cert-file({_q(n.cert_file)})
            peer-verify(required-trusted){extra}));
}};
""")
    return out


_AUDITD_PARSERS = r"""
# auditd: split the ENRICHED part (after 0x1D) from the raw record first.
parser p_auditd_split {
    regexp-parser(prefix(".a.") template("${MSG}") patterns('^(?<raw>[^\x1d]*)(?:\x1d(?<enr>.*))?$'));
};
# msg=audit(epoch:serial): the stock linux-audit() wrapper drops it, so it is parsed here.
parser p_auditd_header {
    regexp-parser(prefix(".a.") template("${.a.raw}")
        patterns('^(?:node=(?<node>\S+) )?type=(?<type>\S+) msg=audit\((?<epoch>\d+(?:\.\d+)?):(?<serial>\d+)\):\s*(?<body>.*)$'));
};
# key=value pairs; linux-audit-parser hex-decodes name, proctitle, path, dir, comm, ocomm, data, aN.
parser p_auditd_kv {
    linux-audit-parser(prefix(".ecs.auditd.log.") template("${.a.body}"));
};
# The nested msg='op=... res=...' of user-space records.
parser p_auditd_kv_msg {
    linux-audit-parser(prefix(".ecs.auditd.log.") template("${.ecs.auditd.log.msg}"));
};
parser p_auditd_enriched {
    kv-parser(prefix(".a.enr.") template("${.a.enr}"));
};
parser p_auditd_date {
    date-parser(format("%s.%f") template("${.a.epoch}") time-zone("+00:00"));
};

rewrite r_auditd_ecs {
    set("auditd" value(".ecs.event.module"));
    set("auditd.log" value(".ecs.event.dataset"));
    set("event" value(".ecs.event.kind"));
    set("$(lowercase ${.a.type})" value(".ecs.event.action"));
    set("${.a.type}" value(".ecs.auditd.log.record_type"));
    set("${.a.node}" value(".ecs.auditd.log.node") condition("${.a.node}" ne ""));
    set("${HOST}" value(".ecs.host.name"));
    set("${.a.raw}" value(".ecs.message"));
    set("${MSG}" value(".ecs.event.original"));
    # 4294967295 is (uid_t)-1: "unset", not a user.
    set("${.ecs.auditd.log.auid}" value(".ecs.user.id")
        condition("${.ecs.auditd.log.auid}" ne "" and not "${.ecs.auditd.log.auid}" eq "4294967295"));
    set("${.ecs.auditd.log.uid}" value(".ecs.user.effective.id") condition("${.ecs.auditd.log.uid}" ne ""));
    set("${.a.enr.AUID}" value(".ecs.user.name") condition("${.a.enr.AUID}" ne "" and not "${.a.enr.AUID}" eq "unset"));
    set("${.ecs.auditd.log.acct}" value(".ecs.user.name") condition("${.ecs.auditd.log.acct}" ne ""));
    set("${.ecs.auditd.log.comm}" value(".ecs.process.name") condition("${.ecs.auditd.log.comm}" ne ""));
    # exe is hex-encoded when it holds odd characters (3.38 does not decode it): keep only real paths.
    set("${.ecs.auditd.log.exe}" value(".ecs.process.executable") condition(match("^/" value(".ecs.auditd.log.exe"))));
    set("${.ecs.auditd.log.addr}" value(".ecs.source.ip")
        condition(match('^([0-9]{1,3}\.){3}[0-9]{1,3}$|^[0-9a-fA-F]*:[0-9a-fA-F:.]*$' value(".ecs.auditd.log.addr"))));
    set("${.ecs.auditd.log.src}" value(".ecs.source.ip")
        condition(match('^([0-9]{1,3}\.){3}[0-9]{1,3}$|^[0-9a-fA-F]*:[0-9a-fA-F:.]*$' value(".ecs.auditd.log.src"))));
    set("${.ecs.auditd.log.dst}" value(".ecs.destination.ip")
        condition(match('^([0-9]{1,3}\.){3}[0-9]{1,3}$|^[0-9a-fA-F]*:[0-9a-fA-F:.]*$' value(".ecs.auditd.log.dst"))));
    set("${.ecs.auditd.log.gid}" value(".ecs.user.group.id") condition("${.ecs.auditd.log.gid}" ne ""));
    set("${.ecs.auditd.log.cwd}" value(".ecs.process.working_directory") condition(match("^/" value(".ecs.auditd.log.cwd"))));
    set("${.ecs.auditd.log.proctitle}" value(".ecs.process.title") condition("${.ecs.auditd.log.proctitle}" ne ""));
    set("${.ecs.auditd.log.name}" value(".ecs.file.path")
        condition("${.a.type}" eq "PATH" and match("^/" value(".ecs.auditd.log.name"))));
    set("success" value(".ecs.event.outcome") condition(match("^yes$" value(".ecs.auditd.log.success"))));
    set("failure" value(".ecs.event.outcome") condition(match("^no$" value(".ecs.auditd.log.success"))));
    set("success" value(".ecs.event.outcome") condition(match("^(success|yes|1)$" value(".ecs.auditd.log.res"))));
    set("failure" value(".ecs.event.outcome") condition(match("^(fail|failed|failure|no|0)$" value(".ecs.auditd.log.res"))));
    set("${.a.enr}" value(".ecs.auditd.log.enriched") condition("${.a.enr}" ne ""));
    unset(value(".ecs.auditd.log.msg"));
};
"""


def _es_body(kind: str, o: PipelineOptions, doc: str, id_expr: str, date: str = "S") -> str:
    """rewrite set() statements: the bulk item's index, its deterministic _id, and the document."""
    index = f"{o.index_prefix}-{kind}-${{{date}_YEAR}}.${{{date}_MONTH}}"
    return (
        f'set({_q(index)} value(".es.index")); set({_q(id_expr)} value(".es.id"));'
        f' set({_sq(doc)} value(".es.doc"));'
    )


def _ecs_doc(keys: str = "--key .ecs.* --shift 5", pairs: str = "") -> str:
    return f"$(format-json {keys} --pair ecs.version=8.17.0 {pairs})".replace("  ", " ")


def _log_paths(o: PipelineOptions) -> list[str]:
    es_trail = _es_body("audit", o, "${MSG}", "${.t.event.hash}")
    dead = _es_body(
        "deadletter",
        o,
        "$(format-json --pair @timestamp=${R_ISODATE} --pair ecs.version=8.17.0 --pair event.kind=pipeline_error"
        " --pair event.original=${MSG} --pair message=${MSG} --pair host.name=${HOST}"
        " --pair error.message=${.dl.reason} --pair edgesec.deadletter.source=${.dl.kind}"
        " --pair event.ingested=${R_ISODATE})",
        "$(sha256 ${.dl.kind} ${HOST} ${MSG})",
        date="R",
    )
    paths = [
        f"""\
# -- the edgesec trail --------------------------------------------------------------------------
parser p_trail_json {{ json-parser(prefix(".t.")); }};
parser p_trail_date {{ date-parser(format("%Y-%m-%dT%H:%M:%S.%f%z") template("${{.t.@timestamp}}")); }};
# The record is already canonical ECS: it is sent byte for byte, so the copy in Elasticsearch
# keeps event.hash and edgesec.trail.prev and can be checked against the chain.
rewrite r_trail_es {{ {es_trail} set("audit" value(".kind")); }};

log {{
    source(s_edgesec_trail);
    if {{
        parser(p_trail_json);
        filter {{ "${{.t.event.hash}}" ne "" }};
        parser(p_trail_date);
        rewrite(r_trail_es);
        destination(d_archive);
        destination(d_es);
    }} else {{
        rewrite {{ set("trail" value(".dl.kind")); set("not an edgesec trail record" value(".dl.reason")); }};
        rewrite(r_deadletter_es);
        destination(d_deadletter_file);
        destination(d_es);
    }};
    flags(flow-control);
}};
"""
    ]
    if o.audit_log:
        doc = _ecs_doc(
            pairs="--pair @timestamp=${S_ISODATE} --pair event.sequence=int64(${.a.serial})"
            # Not process.parent.pid from ppid: when a typed pair three levels deep is dropped (no ppid),
            # 3.38's format-json writes `"process":{,"parent":{}}`, which is not JSON.
            " --pair process.pid=int64(${.ecs.auditd.log.pid}) --pair auditd.log.sequence=int64(${.a.serial})"
            " --pair edgesec.site=" + o.site
        )
        es = _es_body("auditd", o, doc, "$(sha256 ${HOST} ${.a.raw})")
        paths.append(
            _AUDITD_PARSERS
            + f"""
rewrite r_auditd_es {{ {es} set("auditd" value(".kind")); }};

log {{
    source(s_auditd);
    if {{
        parser(p_auditd_split);
        parser(p_auditd_header);
        parser(p_auditd_kv);
        if ("${{.ecs.auditd.log.msg}}" ne "") {{ parser(p_auditd_kv_msg); }};
        if ("${{.a.enr}}" ne "") {{ parser(p_auditd_enriched); }};
        parser(p_auditd_date);
        rewrite(r_auditd_ecs);
        rewrite(r_auditd_es);
        destination(d_archive);
        destination(d_es);
    }} else {{
        rewrite {{ set("auditd" value(".dl.kind")); set("not an auditd record" value(".dl.reason")); }};
        rewrite(r_deadletter_es);
        destination(d_deadletter_file);
        destination(d_es);
    }};
    flags(flow-control);
}};
"""
        )
    if o.local_syslog != "off":
        cp_doc = _ecs_doc(
            keys="--key .cp.* --rekey .cp.* --replace-prefix .cp.=edgesec.checkpoint.",
            pairs="--pair @timestamp=${S_ISODATE} --pair event.kind=event --pair event.action=trail.checkpoint"
            " --pair event.module=edgesec --pair event.dataset=edgesec.checkpoint --pair host.name=${HOST}"
            " --pair message=${MSG} --pair event.hash=${.cp.hash}",
        )
        es_cp = _es_body("checkpoint", o, cp_doc, "$(sha256 ${HOST} ${MSG})")
        es_rec = _es_body("audit", o, "${MSG}", "${.t.event.hash}")
        paths.append(f"""\
# -- edgesec's RFC 5424 output: checkpoints leave the host here ------------------------------------
rewrite r_cp_es {{ {es_cp} set("checkpoint" value(".kind")); }};
rewrite r_rec_es {{ {es_rec} set("audit" value(".kind")); }};

log {{
    source(s_edgesec_syslog);
    if ("${{MSGID}}" eq "checkpoint") {{
        parser {{ json-parser(prefix(".cp.")); }};
        rewrite(r_cp_es);
        destination(d_archive);
        destination(d_es);
    }} elif ("${{MSGID}}" eq "audit") {{
        parser(p_trail_json);
        parser(p_trail_date);
        rewrite(r_rec_es);
        destination(d_es);
    }} else {{
        rewrite {{ set("edgesec-syslog" value(".dl.kind")); set("unknown MSGID" value(".dl.reason")); }};
        rewrite(r_deadletter_es);
        destination(d_deadletter_file);
        destination(d_es);
    }};
    flags(flow-control);
}};
""")
    generic = _ecs_doc(
        pairs="--pair @timestamp=${ISODATE} --pair host.name=${HOST} --pair message=${MSG}"
        " --pair event.original=${MSG} --pair process.name=${PROGRAM} --pair process.pid=int64(${PID})"
        " --pair log.syslog.facility.name=${FACILITY} --pair log.syslog.severity.name=${LEVEL}"
        " --pair event.kind=event --pair edgesec.site=" + o.site
    )
    if o.journald:
        es = _es_body("journald", o, generic, "$(sha256 ${HOST} ${.journald.__CURSOR} ${MSG})", date="R")
        paths.append(f"""\
# -- journald -------------------------------------------------------------------------------------
rewrite r_journald_es {{ {es} set("journald" value(".kind")); }};
log {{ source(s_journald); rewrite(r_journald_es); destination(d_archive); destination(d_es); flags(flow-control); }};
""")
    if o.network is not None:
        es = _es_body("syslog", o, generic, "$(sha256 ${HOST} ${ISODATE} ${PROGRAM} ${MSG})", date="R")
        paths.append(f"""\
# -- other hosts ----------------------------------------------------------------------------------
rewrite r_network_es {{ {es} set("syslog" value(".kind")); }};
log {{ source(s_network); rewrite(r_network_es); destination(d_archive); destination(d_es); flags(flow-control); }};
""")
    paths.insert(
        0,
        f"""\
# -- dead letters: whatever cannot be parsed is kept, in a local file and in its own index ---------
rewrite r_deadletter_es {{ {dead} set("deadletter" value(".kind")); }};
""",
    )
    return paths


def _destinations(o: PipelineOptions) -> str:
    archive_dir = o.archive_dir.rstrip("/")
    archive_template = (
        "$(slog -k " + o.slog_key + " -m " + o.slog_mac + " ${MSG})\\n" if o.slog else "${MSG}\\n"
    )
    slog_note = (
        "# Secure logging (syslog-ng-mod-slog): each archived line is encrypted and MAC-chained with a\n"
        "# forward-secure key; check an archive with `slogverify`. Create the key once with `slogkey`.\n"
        if o.slog
        else ""
    )
    es_driver = _es_destination(o)
    return f"""\
# -- destinations ---------------------------------------------------------------------------------
{slog_note}# The archive: one directory per day (by receive date), 0700 directories, 0600 files.
destination d_archive {{
    file("{archive_dir}/${{R_YEAR}}/${{R_MONTH}}/${{R_DAY}}/${{.kind}}.log"
        template("{archive_template}") create-dirs(yes) dir-perm(0700) perm(0600));
}};

destination d_deadletter_file {{
    file("{archive_dir}/deadletter/${{R_YEAR}}-${{R_MONTH}}-${{R_DAY}}.log"
        template("$(format-json --pair time=${{R_ISODATE}} --pair source=${{.dl.kind}} --pair reason=${{.dl.reason}} --pair host=${{HOST}} --pair message=${{MSG}})\\n")
        create-dirs(yes) dir-perm(0700) perm(0600));
}};

# Elasticsearch _bulk over mutual TLS. The disk buffer is reliable: a message leaves it only after
# Elasticsearch acknowledged the batch, and it survives a syslog-ng restart.
destination d_es {{
{es_driver}
}};
"""


def _es_destination(o: PipelineOptions) -> str:
    urls = " ".join(_q(u.rstrip("/") + "/_bulk") for u in o.es_urls)
    common = f"""        batch-lines({o.batch_lines})
        batch-bytes(4194304)
        batch-timeout({o.batch_timeout_ms})
        workers({o.workers})
        timeout(30)
        tls(
            ca-file({_q(o.ca_file)})
            cert-file({_q(o.cert_file)})
            key-file({_q(o.key_file)})
            peer-verify(yes)
        )
        disk-buffer(
            reliable(yes)
            dir({_q(o.disk_buffer_dir)})
            disk-buf-size({o.disk_buffer_bytes})
        )
        persist-name("edgesec-es")"""
    if o.driver == "elasticsearch-http":
        # index() and custom-id() are templates, so one destination serves every kind; type("") keeps
        # _type out (ES 8 rejects it). The wrapper always sends "index": a retried copy overwrites the
        # identical document under the same _id, so it still never duplicates.
        return f"""    elasticsearch-http(
        url({urls})
        index("${{.es.index}}")
        type("")
        custom-id("${{.es.id}}")
        template("${{.es.doc}}")
{common}
    );"""
    return f"""    http(
        url({urls})
        method("POST")
        headers("Content-Type: application/x-ndjson", "Accept: application/json")
        body('{{"create":{{"_index":"${{.es.index}}","_id":"${{.es.id}}"}}}}\n${{.es.doc}}')
        delimiter("\\n")
        body-suffix("\\n")
{common}
    );"""


def render(o: PipelineOptions) -> dict[str, str]:
    """The configuration files: ``syslog-ng.conf``, and with ``slog`` also ``syslog-ng-slog.conf``."""
    files = {"syslog-ng.conf": _one(replace(o, slog=False), "syslog-ng.conf")}
    if o.slog:
        _check_path(o.slog_key)
        _check_path(o.slog_mac)
        files["syslog-ng-slog.conf"] = _one(o, "syslog-ng-slog.conf")
    return files


def _one(o: PipelineOptions, name: str) -> str:
    header = _HEADER.format(conf=name, time_reopen=o.time_reopen)
    if o.driver == "elasticsearch-http":
        # The wrapper's own file, by its path under syslog-ng's include path (Debian: syslog-ng-scl);
        # not scl.conf, which lives in /etc/syslog-ng and pulls in every SCL.
        header = header.replace(
            "\noptions {", '\n@include "scl/elasticsearch/elastic-http.conf"\n\noptions {', 1
        )
    return "\n".join([header, *_sources(o), _destinations(o), *_log_paths(o)])
