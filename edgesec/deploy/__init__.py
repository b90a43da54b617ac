"""edgesec.deploy: the top layer that turns the parts into a running site; nothing else imports it.

It builds the example site of ``edgesec demo`` (:mod:`.demo`, with :mod:`.backend` as its stand-in app),
renders hardened systemd units for ``edgesec authz serve`` replicas (:mod:`.units`) and installs the periodic
jobs (:mod:`.schedule`, ``edgesec schedule install``). The audit-result documents for Elasticsearch that
``edgesec site results-template``/``results-docs`` write live with the trail's, in
:mod:`edgesec.auditing.results_template`; the processes the ``authz`` and ``auditing`` checks judge are found by
:mod:`edgesec.checks.discover`; reading a proxy's config back lives beside the generators, in
:mod:`edgesec.authz.proxyconf`.
"""
