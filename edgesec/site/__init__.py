"""edgesec.site: what makes the parts one site -- proxy configs read back, the demo site, systemd units.

Nothing here owns state of its own: it reads the configs a site's proxies and pipeline run with (so the
``authz`` and ``auditing`` checks can judge them), builds the example site of ``edgesec demo``, and
renders hardened systemd units for ``edgesec authz serve`` replicas.
"""
