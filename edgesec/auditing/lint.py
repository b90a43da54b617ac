"""Check an existing syslog-ng configuration for the mistakes that lose or corrupt audit logs.

A pattern scan over the config text (comments stripped), not a full parser: each rule names a
mistake seen in configs copied from blogs and answers, why it matters, and the fix.

Rules:

* ``beats-port`` -- a ``tcp()``/``network()``/``syslog()`` *destination* on port 5044: that is Logstash's
  Beats (Lumberjack) input, which cannot read syslog-ng's output (a source on 5044 is only a port);
* ``plaintext-remote`` -- a ``tcp()``/``udp()``/``network()``/``syslog()`` destination to another host
  without TLS: the audit stream crosses the network readable and alterable (UDP also drops);
* ``no-flow-control`` -- a ``log {}`` path with a destination but no ``flags(flow-control)``: when the
  destination's queue fills, syslog-ng drops messages instead of reading its sources more slowly;
* ``ecs-name`` -- a ``format-json`` pair that writes a value where ECS has an object (``host``, ``user``,
  ``process``...): Elasticsearch refuses the document (a mapping conflict); ``ecs-unknown-field`` (a
  warning) -- a name under an ECS field set that is not an ECS field edgesec maps (a misspelling);
* ``no-internal`` -- no ``internal()`` source: syslog-ng's own errors go nowhere (a warning);
* ``http-4xx-forever`` -- an ``http()`` destination without ``response-action(400 => ...)``: 3.38 retries a
  refused request forever and blocks what is queued behind it (a warning);
* ``include-missing`` -- an ``@include`` that cannot be read: what is in it was not checked. Included
  files are linted too (``lint_paths``), each finding naming its file;
* ``es-type`` -- ``elasticsearch-http()`` with a non-empty ``type()``: Elasticsearch 8 rejects ``_type``;
* ``es-type-missing`` -- ``elasticsearch-http()`` without ``type()``: 3.38 requires it (``type("")``);
* ``no-disk-buffer`` -- an Elasticsearch/HTTP/network destination without ``disk-buffer()``: an outage
  longer than the memory queue loses logs;
* ``disk-buffer-unreliable`` -- ``disk-buffer()`` without ``reliable(yes)``: a crash loses what is in memory;
* ``tls-no-verify`` -- ``peer-verify(no)``/``optional-untrusted``/``optional-trusted``: a man in the middle
  reads or drops the audit stream;
* ``http-no-tls`` -- an ``http://`` URL for Elasticsearch: logs cross the network in clear text;
* ``no-archive`` -- no ``file()`` destination: no local copy when the central cluster is unreachable;
* ``archive-perms`` -- a ``file()`` destination whose ``perm()`` lets group or others read the logs;
* ``literal-template-name`` -- ``template("name")`` where ``name`` is a defined template: 3.38 sends
  the word itself; use ``template("$(template name)")``;
* ``format-json-cast`` -- a numeric ECS field (``process.pid``, ``event.sequence``...) given to
  ``format-json`` without a type hint is sent as a string (a warning: ES coerces it, but ``_source``
  then disagrees with the mapping).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class LintFinding:
    """One mistake: rule id, severity, line (1-based), message and fix."""

    rule: str
    severity: str
    line: int
    message: str
    fix: str
    file: str | None = None  # the included file it is in (lint_paths); None: the file linted

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "rule": self.rule,
            "severity": self.severity,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }


def _strip_comments(text: str) -> str:
    """Remove ``#`` comments outside quoted strings, keeping line numbers."""
    out = []
    for line in text.splitlines():
        q: str | None = None
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if q:
                if c == "\\" and q == '"':
                    i += 2
                    continue
                if c == q:
                    q = None
            elif c in "\"'":
                q = c
            elif c == "#":
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


def _blocks(text: str, keyword: str) -> list[tuple[int, str, int]]:
    """``keyword( ... )`` calls with balanced parentheses: (start line, body, offset)."""
    return _balanced(text, keyword, "(", ")")


def _balanced(text: str, keyword: str, open_: str, close: str) -> list[tuple[int, str, int]]:
    """``keyword`` followed by ``open_``, up to its balanced ``close`` (quotes respected): (start line, body,
    offset)."""
    found = []
    for m in re.finditer(r"(?<![\w-])" + re.escape(keyword) + r"\s*" + re.escape(open_), text):
        depth, i, q = 1, m.end(), None
        while i < len(text) and depth:
            c = text[i]
            if q:
                if c == "\\" and q == '"':
                    i += 1
                elif c == q:
                    q = None
            elif c in "\"'":
                q = c
            elif c == open_:
                depth += 1
            elif c == close:
                depth -= 1
            i += 1
        found.append((text.count("\n", 0, m.start()) + 1, text[m.end() : i - 1], m.start()))
    return found


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def lint_config(text: str) -> list[LintFinding]:
    """Every finding in one syslog-ng configuration text (its includes not followed), in line order."""
    t = _strip_comments(text)
    return sorted(_lint_text(t) + _lint_whole(t), key=lambda x: (x.line, x.rule))


def lint_paths(path: Path, read: Callable[[Path], str]) -> list[LintFinding]:
    """Every finding in a configuration file and the files it ``@include`` s (each finding names its
    file; ``read`` reads one file, raising for one that cannot be read)."""
    texts: list[tuple[str, str]] = []
    missing: list[LintFinding] = []
    seen: set[Path] = set()

    def visit(p: Path, depth: int) -> None:
        rp = p.resolve()
        if rp in seen or depth > 16:
            return
        seen.add(rp)
        t = _strip_comments(read(p))
        texts.append((str(p), t))
        for m in _INCLUDE.finditer(t):
            target = m.group(1)
            base = Path(target) if target.startswith("/") else p.parent / target
            found = sorted(base.parent.glob(base.name)) if any(c in base.name for c in "*?[") else [base]
            files = [x for f in found for x in (sorted(f.iterdir()) if f.is_dir() else [f]) if x.is_file()]
            if not files:
                if _is_scl(target):
                    continue  # the syslog-ng configuration library, from its include path
                missing.append(
                    LintFinding(
                        "include-missing",
                        WARNING,
                        _line_of(t, m.start()),
                        f"@include {target!r} is not readable here: what it holds was not checked",
                        "run lint where the included files are, or lint them one by one",
                        str(p),
                    )
                )
            for x in files:
                visit(x, depth + 1)

    visit(path, 0)
    out = missing + [dataclasses.replace(x, file=name) for name, t in texts for x in _lint_text(t)]
    out += [dataclasses.replace(x, file=str(path)) for x in _lint_whole("\n".join(t for _, t in texts))]
    return sorted(out, key=lambda x: (x.file or "", x.line, x.rule))


_INCLUDE = re.compile(r'^\s*@include\s+"([^"]+)"', re.M)


def _is_scl(target: str) -> bool:
    return target == "scl.conf" or target.startswith("scl/")


def includes(text: str) -> list[str]:
    """The files a configuration text ``@include`` s, but the syslog-ng configuration library (SCL)."""
    return [m.group(1) for m in _INCLUDE.finditer(_strip_comments(text)) if not _is_scl(m.group(1))]


def _lint_whole(t: str) -> list[LintFinding]:
    """Rules about the configuration as a whole (all its files together)."""
    out = []
    if not any(_in_destination(t, pos) for _, _, pos in _blocks(t, "file")):
        out.append(
            LintFinding(
                "no-archive",
                WARNING,
                1,
                "no file() destination: no local archive while the central cluster is unreachable",
                "add a file() destination with date macros in the path and perm(0600)",
            )
        )
    if not re.search(r"(?<![\w-])internal\s*\(\s*\)", t):
        out.append(
            LintFinding(
                "no-internal",
                WARNING,
                1,
                "no internal() source: syslog-ng's own messages (a failing destination, dropped messages) go nowhere",
                "add source s_internal { internal(); }; and a log path to a file() destination",
            )
        )
    return out


_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost|ip6-localhost)$")
_ECS_OBJECTS = (
    "agent", "client", "cloud", "container", "destination", "dns", "ecs", "error", "event", "file", "group",
    "host", "http", "log", "network", "observer", "organization", "process", "rule", "server", "service",
    "source", "threat", "tls", "url", "user", "user_agent",
)  # fmt: skip


def _known_ecs() -> set[str]:
    from edgesec.auditing.ecs import FIELD_TYPES
    from edgesec.auditing.elastic import CUSTOM_MAPPED, ECS_MAPPED

    return set(ECS_MAPPED) | set(FIELD_TYPES) | set(CUSTOM_MAPPED) | {
        "log.syslog.facility.name", "log.syslog.severity.name", "log.syslog.priority", "log.syslog.appname",
        "log.syslog.hostname", "log.syslog.msgid", "log.syslog.procid", "log.syslog.version",
        "log.syslog.structured_data", "log.file.path", "log.logger", "log.origin.file.name",
        "event.timezone", "event.created", "event.start", "event.end", "event.code", "event.provider",
        "process.parent.pid", "process.command_line", "process.exit_code", "process.thread.id",
        "source.address", "destination.address", "destination.port", "source.domain", "destination.domain",
        "network.transport", "network.protocol", "network.direction", "host.hostname", "host.ip",
        "host.architecture", "user.changes.id", "user.changes.name", "user.target.group.id",
        "observer.hostname", "observer.ip", "observer.type", "observer.vendor", "observer.product",
    }  # fmt: skip


def _lint_text(t: str) -> list[LintFinding]:
    """Rules about one file's text (comments already stripped)."""
    f: list[LintFinding] = []

    for kw in ("tcp", "network", "syslog", "tcp6"):
        for line, body, pos in _blocks(t, kw):
            if not _in_destination(t, pos):
                continue  # a source listening on 5044 is only a port
            if re.search(r"\bport\s*\(\s*\"?5044\"?\s*\)", body) or re.search(
                r"^\s*\"[^\"]+\"\s+port\s*\(\s*5044", body
            ):
                f.append(
                    LintFinding(
                        "beats-port",
                        ERROR,
                        line,
                        f"{kw}() to port 5044: that is Logstash's Beats (Lumberjack) input, which cannot read syslog",
                        "send to Elasticsearch with http()/elasticsearch-http(), or to a Logstash tcp input with the json_lines codec",
                    )
                )

    es_blocks = _blocks(t, "elasticsearch-http")
    for line, body, _ in es_blocks:
        m = re.search(r"\btype\s*\(\s*\"([^\"]*)\"\s*\)", body)
        if m is None:
            f.append(
                LintFinding(
                    "es-type-missing",
                    ERROR,
                    line,
                    "elasticsearch-http() without type(): syslog-ng 3.38 requires it",
                    'add type("") -- an empty type omits _type, which Elasticsearch 8 rejects',
                )
            )
        elif m.group(1):
            f.append(
                LintFinding(
                    "es-type",
                    ERROR,
                    line,
                    f'elasticsearch-http() with type("{m.group(1)}"): Elasticsearch 8 rejects _type in bulk requests',
                    'use type("")',
                )
            )
    outputs = [(ln, b, "elasticsearch-http") for ln, b, _ in es_blocks] + [
        (ln, b, "http") for ln, b, _ in _blocks(t, "http")
    ]
    for kw in ("network", "syslog", "tcp", "tcp6"):
        for ln, b, pos in _blocks(t, kw):
            if _in_destination(t, pos):
                outputs.append((ln, b, kw))
    for line, body, kw in outputs:
        if "disk-buffer" not in body:
            f.append(
                LintFinding(
                    "no-disk-buffer",
                    ERROR,
                    line,
                    f"{kw}() destination without disk-buffer(): logs are lost when the target is down longer than the memory queue lasts",
                    "add disk-buffer(reliable(yes) dir(...) disk-buf-size(...))",
                )
            )
        else:
            for _, db, _ in _blocks(body, "disk-buffer"):
                if not re.search(r"\breliable\s*\(\s*(yes|1|on)\s*\)", db):
                    f.append(
                        LintFinding(
                            "disk-buffer-unreliable",
                            WARNING,
                            line,
                            f"{kw}() disk-buffer() without reliable(yes): what is in memory is lost on a crash",
                            "use disk-buffer(reliable(yes) ...)",
                        )
                    )
        if kw in ("http", "elasticsearch-http") and not re.search(
            r"\bresponse-action\s*\([^)]*\b400\b", body
        ):
            f.append(
                LintFinding(
                    "http-4xx-forever",
                    WARNING,
                    line,
                    f"{kw}() without response-action(400 => retry): syslog-ng 3.38 retries a refused request "
                    "forever, and everything queued behind it waits",
                    "add retries(5) response-action(400 => retry, 413 => retry), and reconcile what is dropped",
                )
            )
        for m in re.finditer(r"\burl\s*\(([^)]*)\)", body):
            if "http://" in m.group(1):
                f.append(
                    LintFinding(
                        "http-no-tls",
                        ERROR,
                        line,
                        f"{kw}() sends audit logs over plain http://",
                        "use https:// with tls(ca-file() cert-file() key-file() peer-verify(yes))",
                    )
                )

    for m in re.finditer(
        r"\bpeer-verify\s*\(\s*\"?(no|optional-untrusted|optional-trusted|0|off)\"?\s*\)", t
    ):
        f.append(
            LintFinding(
                "tls-no-verify",
                ERROR,
                _line_of(t, m.start()),
                f"peer-verify({m.group(1)}): the other side is not verified",
                "use peer-verify(yes) on destinations and peer-verify(required-trusted) with trusted-dn() on sources",
            )
        )

    for line, body, pos in _blocks(t, "file"):
        m = re.search(r"\bperm\(\s*(0?[0-7]{3,4})\s*\)", body)
        if _in_destination(t, pos) and m and int(m.group(1), 8) & 0o077:
            f.append(
                LintFinding(
                    "archive-perms",
                    WARNING,
                    line,
                    f"file() destination with perm({m.group(1)}): audit logs readable or writable by others",
                    "use perm(0600) and dir-perm(0700); give auditors copies, not access",
                )
            )

    names = set(re.findall(r"(?<![\w-])template\s+([A-Za-z_][\w-]*)\s*\{", t))
    for m in re.finditer(r"(?<![\w-])template\s*\(\s*\"([A-Za-z_][\w-]*)\"\s*\)", t):
        if m.group(1) in names:
            f.append(
                LintFinding(
                    "literal-template-name",
                    ERROR,
                    _line_of(t, m.start()),
                    f'template("{m.group(1)}") is sent as the literal text "{m.group(1)}" in 3.38',
                    f'use template("$(template {m.group(1)})")',
                )
            )

    numeric = r"(process\.pid|process\.ppid|event\.sequence|event\.severity|source\.port|destination\.port|file\.size|http\.response\.status_code)"
    for m in re.finditer(r"--pair\s+" + numeric + r"=(?!int64\(|int32\(|double\()", t):
        f.append(
            LintFinding(
                "format-json-cast",
                WARNING,
                _line_of(t, m.start()),
                f"format-json sends {m.group(1)} as a string in 3.38 (ECS says long)",
                f"give it a type hint: --pair {m.group(1)}=int64(...)",
            )
        )

    for kw in ("tcp", "udp", "tcp6", "udp6", "network", "syslog"):
        for line, body, pos in _blocks(t, kw):
            if not _in_destination(t, pos):
                continue
            host = re.match(r'\s*"([^"]*)"', body)
            transport = re.search(r'\btransport\s*\(\s*"?([\w-]+)"?\s*\)', body)
            proto = kw.rstrip("6") if kw in ("tcp", "udp", "tcp6", "udp6") else (
                transport.group(1) if transport else "tcp"
            )  # fmt: skip
            if host is None or _LOOPBACK.match(host.group(1)) or "tls" in proto:
                continue
            f.append(
                LintFinding(
                    "plaintext-remote",
                    ERROR,
                    line,
                    f"{kw}() sends audit logs to {host.group(1)} over plain {proto.upper()}: readable and "
                    "alterable on the way" + (", and UDP drops them silently" if proto == "udp" else ""),
                    'use transport("tls") with tls(peer-verify(yes) ca-file() cert-file() key-file())',
                )
            )

    internal_sources = {
        m.group(1) for m in re.finditer(r"(?<![\w-])source\s+([\w-]+)\s*\{\s*internal\s*\(\s*\)\s*;\s*\}", t)
    }
    for line, body in _braces(t, "log"):
        if "destination" not in body or re.search(r"\bflow-control\b", body):
            continue
        sources = set(re.findall(r"\bsource\s*\(\s*([\w-]+)\s*\)", body))
        if sources and sources <= internal_sources:
            continue  # syslog-ng's own messages cannot be slowed down
        f.append(
            LintFinding(
                "no-flow-control",
                ERROR,
                line,
                "log path without flags(flow-control): when a destination's queue is full, messages are dropped",
                "add flags(flow-control); to the log path (with a disk-buffer() on the remote destination)",
            )
        )

    known = _known_ecs()
    for m in re.finditer(r"--pair\s+([@\w.]+)=", t):
        name = m.group(1)
        top = name.split(".", 1)[0]
        if top not in _ECS_OBJECTS or name in known:
            continue
        if "." not in name:
            f.append(
                LintFinding(
                    "ecs-name",
                    ERROR,
                    _line_of(t, m.start()),
                    f"format-json writes a value at {name!r}, which ECS defines as an object: Elasticsearch "
                    "refuses the document (mapping conflict)",
                    f"use a field of it, for example {name}.name, as ECS 8.17 names them",
                )
            )
        else:
            f.append(
                LintFinding(
                    "ecs-unknown-field",
                    WARNING,
                    _line_of(t, m.start()),
                    f"{name!r} is not an ECS 8.17 field the edgesec templates map: a misspelling?",
                    "check the name against ECS 8.17, or put custom fields under a top-level name of your own",
                )
            )
    return f


def _braces(text: str, keyword: str) -> list[tuple[int, str]]:
    """``keyword { ... }`` blocks with balanced braces: (start line, body)."""
    return [(line, body) for line, body, _ in _balanced(text, keyword, "{", "}")]


def _in_destination(text: str, pos: int) -> bool:
    """Whether offset ``pos`` is inside a ``destination NAME { ... }`` block (by brace depth)."""
    upto = text[:pos]
    last = None
    for m in re.finditer(r"(?<![\w-])(source|destination|log|parser|rewrite|filter|options)\b[^{;]*\{", upto):
        last = m
    if last is None or last.group(1) != "destination":
        return False
    seg = upto[last.end() :]
    return seg.count("}") == 0 or seg.count("{") >= seg.count("}")
