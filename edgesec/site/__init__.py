"""edgesec.site: what makes the parts one site -- the demo site, systemd units, audit results for Elasticsearch.

It builds the example site of ``edgesec demo``, renders hardened systemd units for ``edgesec authz serve``
replicas, and finds the processes the ``authz`` and ``auditing`` checks judge (:mod:`.discover`). Reading a
proxy's config back lives beside the generators, in :mod:`edgesec.authz.proxyconf`.
"""
