"""Check an existing syslog-ng configuration for the mistakes that lose or corrupt audit logs.

A pattern scan over the config text (comments stripped), not a full parser: each rule names a
mistake seen in configs copied from blogs and answers, why it matters, and the fix.

Rules:

* ``beats-port`` -- ``tcp()``/``network()``/``syslog()`` to port 5044: that is Logstash's Beats
  (Lumberjack) input, which cannot read syslog-ng's output;
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

import re
from dataclasses import dataclass

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

    def to_dict(self) -> dict[str, object]:
        return {
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
    found = []
    for m in re.finditer(r"(?<![\w-])" + re.escape(keyword) + r"\s*\(", text):
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
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            i += 1
        found.append((text.count("\n", 0, m.start()) + 1, text[m.end() : i - 1], m.start()))
    return found


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def lint_config(text: str) -> list[LintFinding]:
    """Every finding in a syslog-ng configuration text, in line order."""
    t = _strip_comments(text)
    f: list[LintFinding] = []

    for kw in ("tcp", "network", "syslog", "tcp6"):
        for line, body, _ in _blocks(t, kw):
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

    if not any(_in_destination(t, pos) for _, _, pos in _blocks(t, "file")):
        f.append(
            LintFinding(
                "no-archive",
                WARNING,
                1,
                "no file() destination: no local archive while the central cluster is unreachable",
                "add a file() destination with date macros in the path and perm(0600)",
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
    return sorted(f, key=lambda x: (x.line, x.rule))


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
