"""Generate a complete syslog-ng 3.38 configuration for the audit pipeline.

The package: :mod:`.options` (what the site chooses, validated; syslog-ng quoting), :mod:`.auditd` (the auditd
parsers and the record type -> ECS action table), :mod:`.render` (sources, ECS documents, destinations,
log paths).

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

from edgesec.auditing.syslogng.auditd import AUDITD_ACTIONS
from edgesec.auditing.syslogng.options import KINDS, LOG_MSG_SIZE, NetworkSource, PipelineOptions
from edgesec.auditing.syslogng.render import render

__all__ = ["AUDITD_ACTIONS", "KINDS", "LOG_MSG_SIZE", "NetworkSource", "PipelineOptions", "render"]
