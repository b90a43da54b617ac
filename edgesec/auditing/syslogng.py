"""Generate a complete syslog-ng 3.38 configuration for the audit pipeline.

What it builds (``render(options)`` is pure: it returns ``{file name: text}``; the CLI writes files):

* sources: the edgesec trail (``file()``, one JSON document per line), auditd's log (raw lines, the
  ENRICHED format's 0x1D separator split off first), edgesec's own RFC 5424 output (checkpoints),
  and optionally journald and a TLS network source for other hosts;
* parsing and ECS mapping done in syslog-ng, so every document reaches Elasticsearch already in ECS
  (auditd as Filebeat's auditd module maps it: uid -> ``user.id``, euid -> ``user.effective.id``, auid ->
  ``user.audit.id``, acct -> ``user.name``, its record-type table -> ``event.action``,
  ``event.category``, ``event.type``; comm, exe, pid, cwd, proctitle -> ``process.*``; addr/src/dst ->
  ``source.ip`` / ``destination.ip``; USER_CMD's hex ``cmd`` -> ``process.args``; a PATH record's name
  -> ``file.path``; ``msg=audit(epoch:serial)`` -> ``@timestamp`` and ``event.sequence``). The kernel's
  fields and a user-space record's nested ``msg='...'`` are parsed into separate prefixes: nested text
  can only fill user-space fields (op, acct, exe, addr, terminal, res...), never pid, uid, auid or ses;
* every document is valid JSON for any input: a value is cast (int64, list) only after it matched, in
  a variant of the document that has the field;
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
document to the dead-letter index (see :mod:`edgesec.auditing.elastic`), and every item sent is also
written to a journal (``<archive>/bulk/``) that ``edgesec auditlog reconcile`` offers again by ``_id``,
reading each item's status: what is missing is created, what is refused is dead-lettered. A request
refused whole (400, 413) is tried ``retries()`` times and dropped (3.38 would retry a 4xx forever);
reconcile then accounts for its items. syslog-ng's own messages go to ``<archive>/internal/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgesec.auditing.trail import MAX_RECORD_BYTES
from edgesec.errors import InputError

KINDS = ("audit", "auditd", "checkpoint", "journald", "syslog", "deadletter")
#: syslog-ng's log-msg-size(): a trail record (at most MAX_RECORD_BYTES) and its RFC 5424 header fit.
LOG_MSG_SIZE = MAX_RECORD_BYTES + 64 * 1024
#: A value int64() is given only after it matched this (so no cast can fail). No leading zero: 3.38 writes
#: int64(0998) as the literal 0998, which is not JSON.
_INT64 = "^(0|[1-9][0-9]{0,17})$"


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
    retries: int = 5
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
    # Every typed value is validated before it is cast (see the log paths), so no cast fails; should one
    # fail anyway it is written as a string: 3.38's "silently-drop-property" leaves a stray comma behind
    # (`"process":{{,"name":"z"}}`), which is not JSON and gets the whole _bulk request refused.
    on-error("fallback-to-string");
    # Larger than any record the trail writes (edgesec.auditing.trail.MAX_RECORD_BYTES) and any auditd
    # line (8 KiB in the kernel), so no record is split into fragments.
    log-msg-size({log_msg_size});
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
        """\
# syslog-ng's own messages (a destination that failed, messages dropped after retries(), a parse
# error): kept in the archive, never only on a console nobody reads.
source s_internal { internal(); };
""",
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
""",
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
# auditd: split the ENRICHED part (after 0x1D) from the raw record first. It is the *last* 0x1D-separated
# part, and holds no single quote: a 0x1D inside a user-space msg='...' (the kernel does not escape it) is
# always followed by the closing quote, so it cannot pass for auditd's own translation (UID="root"...).
parser p_auditd_split {
    regexp-parser(prefix(".a.") template("${MSG}") patterns("^(?<raw>.*?)(?:\x1d(?<enr>[^\x1d']*))?$"));
};
# msg=audit(epoch:serial): the stock linux-audit() wrapper drops it, so it is parsed here.
parser p_auditd_header {
    regexp-parser(prefix(".a.") template("${.a.raw}")
        patterns('^(?:node=(?<node>\S+) )?type=(?<type>\S+) msg=audit\((?<epoch>\d{1,12}(?:\.\d{1,9})?):(?<serial>0|[1-9]\d{0,17})\):\s*(?<body>.*)$'));
};
# The kernel's own fields (pid, uid, auid, ses, subj...) come before a user-space record's nested
# msg='...'; the nested text is whatever the sending program wrote (PAM, shadow-utils, `auditctl -m`),
# and the kernel does not escape it. The two are parsed into separate prefixes, split at the first
# msg=', so nothing in the nested text -- not even a quote closing it early -- can set a kernel field.
parser p_auditd_body {
    regexp-parser(prefix(".a.") template("${.a.body}")
        patterns("^(?<kern>.*?)(?:(?:^| )msg='(?<user>.*?)'?)?$"));
};
# key=value pairs; linux-audit-parser hex-decodes name, proctitle, path, dir, comm, ocomm, data, aN.
parser p_auditd_kv {
    linux-audit-parser(prefix(".ecs.auditd.log.") template("${.a.kern}"));
};
# The nested msg='op=... res=...' of user-space records, into its own prefix (.m.).
parser p_auditd_kv_msg {
    linux-audit-parser(prefix(".m.") template("${.a.user}"));
};
parser p_auditd_enriched {
    kv-parser(prefix(".a.enr.") template("${.a.enr}"));
};
parser p_auditd_date {
    date-parser(format("%s.%f") template("${.a.epoch}") time-zone("+00:00"));
};

# What a user-space record's nested msg='...' may say: these fields only, and only where the kernel's
# part has not set them. Never pid, uid, auid, ses, subj or any other kernel field.
rewrite r_auditd_user {
    set("${.m.comm}" value(".ecs.auditd.log.comm") condition("${.ecs.auditd.log.comm}" eq "" and "${.m.comm}" ne ""));
    set("${.m.op}" value(".ecs.auditd.log.op") condition("${.ecs.auditd.log.op}" eq "" and "${.m.op}" ne ""));
    set("${.m.acct}" value(".ecs.auditd.log.acct") condition("${.ecs.auditd.log.acct}" eq "" and "${.m.acct}" ne ""));
    set("${.m.exe}" value(".ecs.auditd.log.exe") condition("${.ecs.auditd.log.exe}" eq "" and "${.m.exe}" ne ""));
    set("${.m.hostname}" value(".ecs.auditd.log.hostname") condition("${.ecs.auditd.log.hostname}" eq "" and "${.m.hostname}" ne ""));
    set("${.m.addr}" value(".ecs.auditd.log.addr") condition("${.ecs.auditd.log.addr}" eq "" and "${.m.addr}" ne ""));
    set("${.m.terminal}" value(".ecs.auditd.log.terminal") condition("${.ecs.auditd.log.terminal}" eq "" and "${.m.terminal}" ne ""));
    set("${.m.res}" value(".ecs.auditd.log.res") condition("${.ecs.auditd.log.res}" eq "" and "${.m.res}" ne ""));
    set("${.m.id}" value(".ecs.auditd.log.id") condition("${.ecs.auditd.log.id}" eq "" and "${.m.id}" ne ""));
    set("${.m.cmd}" value(".ecs.auditd.log.cmd") condition("${.ecs.auditd.log.cmd}" eq "" and "${.m.cmd}" ne ""));
    set("${.m.cwd}" value(".ecs.auditd.log.cwd") condition("${.ecs.auditd.log.cwd}" eq "" and "${.m.cwd}" ne ""));
    set("${.m.grantors}" value(".ecs.auditd.log.grantors") condition("${.ecs.auditd.log.grantors}" eq "" and "${.m.grantors}" ne ""));
    set("${.m.direction}" value(".ecs.auditd.log.direction") condition("${.ecs.auditd.log.direction}" eq "" and "${.m.direction}" ne ""));
    set("${.m.laddr}" value(".ecs.auditd.log.laddr") condition("${.ecs.auditd.log.laddr}" eq "" and "${.m.laddr}" ne ""));
    set("${.m.lport}" value(".ecs.auditd.log.lport") condition("${.ecs.auditd.log.lport}" eq "" and "${.m.lport}" ne ""));
    set("${.m.rport}" value(".ecs.auditd.log.rport") condition("${.ecs.auditd.log.rport}" eq "" and "${.m.rport}" ne ""));
    set("${.m.unit}" value(".ecs.auditd.log.unit") condition("${.ecs.auditd.log.unit}" eq "" and "${.m.unit}" ne ""));
    set("${.m.new_group}" value(".ecs.auditd.log.new_group") condition("${.ecs.auditd.log.new_group}" eq "" and "${.m.new_group}" ne ""));
    set("${.m.grp}" value(".ecs.auditd.log.grp") condition("${.ecs.auditd.log.grp}" eq "" and "${.m.grp}" ne ""));
    set("${.m.reason}" value(".ecs.auditd.log.reason") condition("${.ecs.auditd.log.reason}" eq "" and "${.m.reason}" ne ""));
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
    # Filebeat's auditd module: uid -> user.id, euid -> user.effective.id, auid -> user.audit.id (and the
    # other ids into its user.* extension fields), acct -> user.name. Values as auditd wrote them
    # (4294967295 is (uid_t)-1, "unset"; Filebeat keeps it too).
    set("${.ecs.auditd.log.uid}" value(".ecs.user.id") condition("${.ecs.auditd.log.uid}" ne ""));
    set("${.ecs.auditd.log.euid}" value(".ecs.user.effective.id") condition("${.ecs.auditd.log.euid}" ne ""));
    set("${.ecs.auditd.log.auid}" value(".ecs.user.audit.id") condition("${.ecs.auditd.log.auid}" ne ""));
    set("${.ecs.auditd.log.suid}" value(".ecs.user.saved.id") condition("${.ecs.auditd.log.suid}" ne ""));
    set("${.ecs.auditd.log.fsuid}" value(".ecs.user.filesystem.id") condition("${.ecs.auditd.log.fsuid}" ne ""));
    set("${.ecs.auditd.log.gid}" value(".ecs.user.group.id") condition("${.ecs.auditd.log.gid}" ne ""));
    set("${.ecs.auditd.log.egid}" value(".ecs.user.effective.group.id") condition("${.ecs.auditd.log.egid}" ne ""));
    set("${.ecs.auditd.log.sgid}" value(".ecs.user.saved.group.id") condition("${.ecs.auditd.log.sgid}" ne ""));
    set("${.ecs.auditd.log.fsgid}" value(".ecs.user.filesystem.group.id") condition("${.ecs.auditd.log.fsgid}" ne ""));
    set("${.ecs.auditd.log.terminal}" value(".ecs.user.terminal")
        condition("${.ecs.auditd.log.terminal}" ne "" and not match("^(\\?|\\(none\\))$" value(".ecs.auditd.log.terminal"))));
    set("${.a.enr.UID}" value(".ecs.user.name") condition("${.a.enr.UID}" ne "" and not "${.a.enr.UID}" eq "unset"));
    set("${.ecs.auditd.log.acct}" value(".ecs.user.name") condition("${.ecs.auditd.log.acct}" ne ""));
    set("${.ecs.auditd.log.id}" value(".ecs.user.target.id")
        condition("${.ecs.auditd.log.id}" ne "" and match("^(ADD|DEL)_USER$|^USER_MGMT$" value(".a.type"))));
    set("${.ecs.auditd.log.id}" value(".ecs.group.id")
        condition("${.ecs.auditd.log.id}" ne "" and match("^(ADD|DEL)_GROUP$|^GRP_MGMT$" value(".a.type"))));
    set("${.ecs.auditd.log.comm}" value(".ecs.process.name") condition("${.ecs.auditd.log.comm}" ne ""));
    # exe is hex-encoded when it holds odd characters (decoded by p_auditd_exe into .x.): real paths only.
    set("${.ecs.auditd.log.exe}" value(".ecs.process.executable") condition(match("^/" value(".ecs.auditd.log.exe"))));
    set("${.x.proctitle}" value(".ecs.process.executable") condition(match("^/" value(".x.proctitle"))));
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
};

# EXECVE: its arguments a0, a1... (hex-decoded by linux-audit-parser), as a list, one element each.
rewrite r_auditd_execve {
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a0})" value(".h.args") condition("${.ecs.auditd.log.a0}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a1})" value(".h.args") condition("${.ecs.auditd.log.a1}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a2})" value(".h.args") condition("${.ecs.auditd.log.a2}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a3})" value(".h.args") condition("${.ecs.auditd.log.a3}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a4})" value(".h.args") condition("${.ecs.auditd.log.a4}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a5})" value(".h.args") condition("${.ecs.auditd.log.a5}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a6})" value(".h.args") condition("${.ecs.auditd.log.a6}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a7})" value(".h.args") condition("${.ecs.auditd.log.a7}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a8})" value(".h.args") condition("${.ecs.auditd.log.a8}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a9})" value(".h.args") condition("${.ecs.auditd.log.a9}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a10})" value(".h.args") condition("${.ecs.auditd.log.a10}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a11})" value(".h.args") condition("${.ecs.auditd.log.a11}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a12})" value(".h.args") condition("${.ecs.auditd.log.a12}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a13})" value(".h.args") condition("${.ecs.auditd.log.a13}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a14})" value(".h.args") condition("${.ecs.auditd.log.a14}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a15})" value(".h.args") condition("${.ecs.auditd.log.a15}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a16})" value(".h.args") condition("${.ecs.auditd.log.a16}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a17})" value(".h.args") condition("${.ecs.auditd.log.a17}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a18})" value(".h.args") condition("${.ecs.auditd.log.a18}" ne ""));
    set("$(list-append ${.h.args} ${.ecs.auditd.log.a19})" value(".h.args") condition("${.ecs.auditd.log.a19}" ne ""));
};

# exe= is hex when the path holds a space ("charon (deleted)"): decoded the same way as a proctitle.
parser p_auditd_exe {
    linux-audit-parser(prefix(".x.") template("proctitle=${.ecs.auditd.log.exe}"));
};

# USER_CMD's cmd= is hex when it holds a space: decoded the way linux-audit-parser decodes a proctitle.
parser p_auditd_cmd {
    linux-audit-parser(prefix(".h.") template("proctitle=${.ecs.auditd.log.cmd}"));
};
"""


#: Record type -> (event.action, event.category, event.type), after Filebeat's auditd module (the
#: go-libaudit normalisations its documents show). Types not here keep the lowercase record type as the
#: action, as Filebeat does, and no category or type.
AUDITD_ACTIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "ADD_GROUP": ("added-group-account-to", ("iam",), ("creation", "group")),
    "ADD_USER": ("added-user-account", ("iam",), ("creation", "user")),
    "DEL_GROUP": ("deleted-group-account-from", ("iam",), ("deletion", "group")),
    "DEL_USER": ("deleted-user-account", ("iam",), ("deletion", "user")),
    "GRP_MGMT": ("modified-group-account", ("iam",), ("change", "group")),
    "USER_MGMT": ("modified-user-account", ("iam",), ("change", "user")),
    "USER_CHAUTHTOK": ("changed-password", ("iam",), ("change", "user")),
    "USER_ACCT": ("was-authorized", ("authentication",), ("info",)),
    "USER_AUTH": ("authenticated", ("authentication",), ("info",)),
    "USER_LOGIN": ("logged-in", ("authentication",), ("start",)),
    "USER_LOGOUT": ("logged-out", ("authentication",), ("end",)),
    "USER_START": ("started-session", ("session",), ("start",)),
    "USER_END": ("ended-session", ("session",), ("end",)),
    "CRED_ACQ": ("acquired-credentials", ("authentication",), ("info",)),
    "CRED_DISP": ("disposed-credentials", ("authentication",), ("info",)),
    "CRED_REFR": ("refreshed-credentials", ("authentication",), ("info",)),
    "USER_CMD": ("ran-command", ("process",), ("start",)),
    "TTY": ("typed", (), ()),
    "USER_TTY": ("typed", (), ()),
    "CRYPTO_SESSION": ("started-crypto-session", ("process",), ("info",)),
    "DAEMON_START": ("started-audit", ("process",), ("start",)),
    "DAEMON_END": ("stopped-audit", ("process",), ("end",)),
    "CONFIG_CHANGE": ("changed-audit-configuration", ("configuration", "process"), ("change",)),
    "SERVICE_START": ("started-service", ("process",), ("start",)),
    "SERVICE_STOP": ("stopped-service", ("process",), ("end",)),
    "SYSTEM_BOOT": ("booted-system", ("host",), ("info",)),
    "SYSTEM_SHUTDOWN": ("shutdown-system", ("host",), ("info",)),
    "SOFTWARE_UPDATE": ("package-updated", ("package",), ("info",)),
    "KERN_MODULE": ("loaded-kernel-module", ("driver",), ("start",)),
    "VIRT_CONTROL": ("issued-vm-control", ("host",), ("creation",)),
    "VIRT_MACHINE_ID": ("assigned-vm-id", ("host",), ("creation",)),
    "SYSCALL": ("syscall", ("process",), ("info",)),
}


def _auditd_actions() -> str:
    """The rewrite that sets event.action and the category/type lists (``.c.``) from the record type."""
    out = ["rewrite r_auditd_actions {"]
    for rtype, (action, cat, typ) in AUDITD_ACTIONS.items():
        cond = f'condition("${{.a.type}}" eq {_q(rtype)})'
        out.append(f'    set({_q(action)} value(".ecs.event.action") {cond});')
        if cat:
            out.append(f'    set({_q(",".join(cat))} value(".c.category") {cond});')
            out.append(f'    set({_q(",".join(typ))} value(".c.type") {cond});')
    # An execve that auditd names (ENRICHED, or interpreted): Filebeat's "executed".
    out.append(
        '    set("executed" value(".ecs.event.action") condition("${.a.type}" eq "SYSCALL"'
        ' and match("^execve(at)?$" value(".ecs.auditd.log.syscall"))));'
    )
    out.append("};")
    return "\n".join(out) + "\n"


def _variants(name: str, body: Callable[[str], str], options: list[tuple[str, str]]) -> tuple[str, str]:
    """Rewrites ``r_<name>_es_<bits>`` -- one per combination of ``options`` ((condition, extra
    format-json pairs)) -- and the if/else statement that picks the one whose conditions hold."""
    import itertools

    rewrites = []
    for bits in itertools.product("01", repeat=len(options)):
        extra = "".join(pairs for (_, pairs), b in zip(options, bits, strict=True) if b == "1")
        rewrites.append(
            f'rewrite r_{name}_es_{"".join(bits)} {{ {body(extra)} set("{name}" value(".kind")); }};'
        )

    def choose(prefix: str) -> str:
        if len(prefix) == len(options):
            return f"rewrite(r_{name}_es_{prefix});"
        cond = options[len(prefix)][0]
        return f"if ({cond}) {{ {choose(prefix + '1')} }} else {{ {choose(prefix + '0')} }};"

    return "\n".join(rewrites) + "\n", choose("")


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
        # Per message, not per content: two identical bad lines are two dead letters. Set once by the
        # rewrite, the id travels with the message through the disk buffer: a retry still de-duplicates.
        "$(uuid)",
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
        # The hash becomes the _id in the action line: anything but 64 hex digits (a quote would break
        # the action line and get the whole request refused) is a dead letter instead.
        filter {{ match('^[0-9a-f]{{64}}$' value(".t.event.hash")) }};
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
        pairs = (
            "--pair @timestamp=${S_ISODATE} --pair event.sequence=int64(${.a.serial})"
            " --pair auditd.log.sequence=int64(${.a.serial}) --pair edgesec.site=" + o.site
        )
        # A pair cannot be left out of format-json conditionally and no cast may fail, so the document
        # comes in variants: with process.pid only when the kernel's pid is a number, with the category
        # and type lists only when the record type has them, with process.args only for a command.
        rewrites, choose = _variants(
            "auditd",
            lambda extra: _es_body("auditd", o, _ecs_doc(pairs=pairs + extra), "$(sha256 ${HOST} ${.a.raw})"),
            [
                (f"match({_sq(_INT64)} value(\".ecs.auditd.log.pid\"))",
                 " --pair process.pid=int64(${.ecs.auditd.log.pid})"),
                ('"${.c.category}" ne ""',
                 " --pair event.category=list(${.c.category}) --pair event.type=list(${.c.type})"),
                ('"${.h.args}" ne ""',
                 " --pair process.args=list(${.h.args})"
                 " --pair process.args_count=int64($(list-count ${.h.args}))"),
            ],
        )  # fmt: skip
        paths.append(
            _AUDITD_PARSERS
            + _auditd_actions()
            + rewrites
            + f"""
log {{
    source(s_auditd);
    if {{
        parser(p_auditd_split);
        parser(p_auditd_header);
        parser(p_auditd_body);
        parser(p_auditd_kv);
        if ("${{.a.user}}" ne "") {{ parser(p_auditd_kv_msg); rewrite(r_auditd_user); }};
        if ("${{.a.enr}}" ne "") {{ parser(p_auditd_enriched); }};
        parser(p_auditd_date);
        if (match('^2F([0-9A-F]{{2}})+$' value(".ecs.auditd.log.exe"))) {{ parser(p_auditd_exe); }};
        rewrite(r_auditd_ecs);
        rewrite(r_auditd_actions);
        if (match('^([0-9A-F]{{2}})+$' value(".ecs.auditd.log.cmd"))) {{ parser(p_auditd_cmd); }}
        elif ("${{.ecs.auditd.log.cmd}}" ne "") {{ rewrite {{ set("${{.ecs.auditd.log.cmd}}" value(".h.proctitle")); }}; }};
        if ("${{.h.proctitle}}" ne "") {{ rewrite {{ set("$(explode ' ' ${{.h.proctitle}})" value(".h.args")); }}; }}
        elif ("${{.a.type}}" eq "EXECVE") {{ rewrite(r_auditd_execve); }};
        {choose}
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
    # A parser that fails inside a branch would drop the message: each branch has its own dead letter.
    if ("${{MSGID}}" eq "checkpoint") {{
        if {{
            parser {{ json-parser(prefix(".cp.")); }};
            rewrite(r_cp_es);
            destination(d_archive);
            destination(d_es);
        }} else {{
            rewrite {{ set("checkpoint" value(".dl.kind")); set("not a checkpoint document" value(".dl.reason")); }};
            rewrite(r_deadletter_es);
            destination(d_deadletter_file);
            destination(d_es);
        }};
    }} elif ("${{MSGID}}" eq "audit") {{
        if {{
            parser(p_trail_json);
            filter {{ match('^[0-9a-f]{{64}}$' value(".t.event.hash")) }};
            parser(p_trail_date);
            rewrite(r_rec_es);
            destination(d_es);
        }} else {{
            rewrite {{ set("edgesec-syslog" value(".dl.kind")); set("not an edgesec trail record" value(".dl.reason")); }};
            rewrite(r_deadletter_es);
            destination(d_deadletter_file);
            destination(d_es);
        }};
    }} else {{
        rewrite {{ set("edgesec-syslog" value(".dl.kind")); set("unknown MSGID" value(".dl.reason")); }};
        rewrite(r_deadletter_es);
        destination(d_deadletter_file);
        destination(d_es);
    }};
    flags(flow-control);
}};
""")
    generic_pairs = (
        "--pair @timestamp=${ISODATE} --pair host.name=${HOST} --pair message=${MSG}"
        " --pair event.original=${MSG} --pair process.name=${PROGRAM}"
        " --pair log.syslog.facility.name=${FACILITY} --pair log.syslog.severity.name=${LEVEL}"
        " --pair event.kind=event --pair edgesec.site=" + o.site
    )
    generic = _ecs_doc(pairs=generic_pairs)
    generic_pid = _ecs_doc(pairs=generic_pairs + " --pair process.pid=int64(${PID})")
    # A PID is whatever the sender wrote (RFC 5424 PROCID is any text): cast only when it is a number.

    def by_pid(name: str) -> str:
        return (
            f'if (match({_sq(_INT64)} value("PID"))) {{ rewrite(r_{name}_es_pid); }}'
            f" else {{ rewrite(r_{name}_es); }};"
        )

    if o.journald:
        journald_id = "$(sha256 ${HOST} ${.journald.__CURSOR} ${MSG})"
        es = _es_body("journald", o, generic, journald_id, date="R")
        es_pid = _es_body("journald", o, generic_pid, journald_id, date="R")
        paths.append(f"""\
# -- journald -------------------------------------------------------------------------------------
rewrite r_journald_es {{ {es} set("journald" value(".kind")); }};
rewrite r_journald_es_pid {{ {es_pid} set("journald" value(".kind")); }};
log {{ source(s_journald); {by_pid("journald")} destination(d_archive); destination(d_es); flags(flow-control); }};
""")
    if o.network is not None:
        network_id = "$(sha256 ${HOST} ${ISODATE} ${PROGRAM} ${MSG})"
        es = _es_body("syslog", o, generic, network_id, date="R")
        es_pid = _es_body("syslog", o, generic_pid, network_id, date="R")
        paths.append(f"""\
# -- other hosts ----------------------------------------------------------------------------------
rewrite r_network_es {{ {es} set("syslog" value(".kind")); }};
rewrite r_network_es_pid {{ {es_pid} set("syslog" value(".kind")); }};
log {{ source(s_network); {by_pid("network")} destination(d_archive); destination(d_es); flags(flow-control); }};
""")
    paths.append("""\
# -- syslog-ng's own messages: kept in the archive --------------------------------------------------
log { source(s_internal); destination(d_internal); };
""")
    paths.insert(
        0,
        f"""\
# -- dead letters: whatever cannot be parsed is kept, in a local file and in its own index ---------
rewrite r_deadletter_es {{ {dead} set("deadletter" value(".kind")); }};
""",
    )
    # Everything sent to Elasticsearch is also journalled, as the exact _bulk item, so `edgesec auditlog
    # reconcile` can find by _id what Elasticsearch did not take (a per-item rejection inside a 200, a
    # batch dropped after retries()).
    return [p.replace("destination(d_es);", "destination(d_journal); destination(d_es);") for p in paths]


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
        template("$(format-json --pair @timestamp=${{R_ISODATE}} --pair edgesec.deadletter.source=${{.dl.kind}} --pair error.message=${{.dl.reason}} --pair host.name=${{HOST}} --pair event.original=${{MSG}})\\n")
        create-dirs(yes) dir-perm(0700) perm(0600));
}};

# Every _bulk item sent to Elasticsearch, as sent (action line and document), one file per day:
# `edgesec auditlog reconcile` re-offers them by _id and dead-letters what Elasticsearch refuses.
destination d_journal {{
    file("{archive_dir}/bulk/${{R_YEAR}}-${{R_MONTH}}-${{R_DAY}}.ndjson"
        template('{{"create":{{"_index":"${{.es.index}}","_id":"${{.es.id}}"}}}}\n${{.es.doc}}\n')
        create-dirs(yes) dir-perm(0700) perm(0600));
}};

# syslog-ng's own messages (failed sends, dropped batches, parse errors).
destination d_internal {{
    file("{archive_dir}/internal/${{R_YEAR}}-${{R_MONTH}}-${{R_DAY}}.log"
        template("${{ISODATE}} ${{MSG}}\n") create-dirs(yes) dir-perm(0700) perm(0600));
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
        # A batch Elasticsearch keeps refusing is dropped after this many tries (syslog-ng's internal()
        # log says so) instead of blocking everything behind it; the journal keeps it for reconcile.
        retries({o.retries})
        # 3.38 retries a 4xx forever by default ("not authorized or URL not found"), so one refused
        # request would hold up everything behind it. A malformed or too large request is tried
        # retries() times and then dropped; 401, 403 and 404 (credentials, a wrong URL) still wait.
        response-action(400 => retry, 413 => retry)
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
    header = _HEADER.format(conf=name, time_reopen=o.time_reopen, log_msg_size=LOG_MSG_SIZE)
    if o.driver == "elasticsearch-http":
        # The wrapper's own file, by its path under syslog-ng's include path (Debian: syslog-ng-scl);
        # not scl.conf, which lives in /etc/syslog-ng and pulls in every SCL.
        header = header.replace(
            "\noptions {", '\n@include "scl/elasticsearch/elastic-http.conf"\n\noptions {', 1
        )
    return "\n".join([header, *_sources(o), _destinations(o), *_log_paths(o)])
