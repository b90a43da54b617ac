"""auditd in syslog-ng: the parsers that split a raw auditd line into kernel and user-space fields, and the
record type -> (event.action, event.category, event.type) table after Filebeat's auditd module."""

from __future__ import annotations

from edgesec.auditing.syslogng.options import quote

AUDITD_PARSERS = r"""
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


def auditd_actions() -> str:
    """The rewrite that sets event.action and the category/type lists (``.c.``) from the record type."""
    out = ["rewrite r_auditd_actions {"]
    for rtype, (action, cat, typ) in AUDITD_ACTIONS.items():
        cond = f'condition("${{.a.type}}" eq {quote(rtype)})'
        out.append(f'    set({quote(action)} value(".ecs.event.action") {cond});')
        if cat:
            out.append(f'    set({quote(",".join(cat))} value(".c.category") {cond});')
            out.append(f'    set({quote(",".join(typ))} value(".c.type") {cond});')
    # An execve that auditd names (ENRICHED, or interpreted): Filebeat's "executed".
    out.append(
        '    set("executed" value(".ecs.event.action") condition("${.a.type}" eq "SYSCALL"'
        ' and match("^execve(at)?$" value(".ecs.auditd.log.syscall"))));'
    )
    out.append("};")
    return "\n".join(out) + "\n"
