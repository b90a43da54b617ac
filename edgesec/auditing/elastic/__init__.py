"""Elasticsearch side of the pipeline: index templates, ILM, ingest pipeline; ``push`` and ``ship``.

The package: :mod:`.templates` (what is installed: mappings, templates, ILM, ingest pipeline; pure),
:mod:`.client` (the TLS client and ``push``), :mod:`.ship` (``ship``: the trail bulk-indexed), and
:mod:`.reconcile` (``reconcile``: the syslog-ng bulk journal offered again, refusals dead-lettered).

Generated objects (``render(...)`` is pure; ``push`` installs them with elasticsearch-py 8.x):

* component template ``<prefix>-ecs``: ECS 8.17 mappings of every field edgesec and the generated
  syslog-ng config produce (types as ECS defines them; ``auditd.log`` is ``flattened``, the raw
  key/value pairs of auditd as Elastic's module keeps them);
* component template ``<prefix>-settings-<kind>``: ILM policy and default ingest pipeline;
* one composable index template per kind (``audit``, ``auditd``, ``checkpoint``, ``journald``,
  ``syslog``, ``deadletter``) matching ``<prefix>-<kind>-*``;
* ILM policy ``<prefix>-retention``: hot, then lower priority after 90 days (PCI DSS 10.5.1 wants the last
  three months immediately available; never read-only, so a late event still lands), deleted a month
  after the retention the site profile requires has passed from the index's creation, so that the newest
  event of a monthly index is kept the whole retention (see :func:`delete_after_days`);
* ingest pipeline ``<prefix>-ingest``: sets ``event.ingested``; any failure moves the document to
  ``<prefix>-deadletter-ingest`` with the reason, because syslog-ng 3.38 does not read bulk responses
  and a rejected document would otherwise vanish; for the same reason every index sets
  ``index.mapping.ignore_malformed`` (a malformed value is kept but not indexed, never the document lost).

``ship`` bulk-indexes the trail itself (a backfill, or a site without syslog-ng): ``create`` actions
with the record's hash as ``_id`` into the same index syslog-ng would use, so the two paths and any
rerun never duplicate a record; it resumes after the last record Elasticsearch acknowledged.
"""

from edgesec.auditing.elastic.client import make_client, push
from edgesec.auditing.elastic.reconcile import DEADLETTER_ORIGINAL_BYTES, reconcile, send_dead_letters
from edgesec.auditing.elastic.ship import ShipState, index_for, ship
from edgesec.auditing.elastic.templates import (
    AUDITD_EXTENSION_FIELDS,
    CUSTOM_MAPPED,
    ECS_MAPPED,
    HOT_DAYS,
    MONTH_DAYS,
    ElasticOptions,
    delete_after_days,
    ilm_name,
    pipeline_id,
    render,
    render_files,
    retention_for,
)

__all__ = [
    "AUDITD_EXTENSION_FIELDS",
    "CUSTOM_MAPPED",
    "DEADLETTER_ORIGINAL_BYTES",
    "ECS_MAPPED",
    "HOT_DAYS",
    "MONTH_DAYS",
    "ElasticOptions",
    "ShipState",
    "delete_after_days",
    "ilm_name",
    "index_for",
    "make_client",
    "pipeline_id",
    "push",
    "reconcile",
    "render",
    "render_files",
    "retention_for",
    "send_dead_letters",
    "ship",
]
