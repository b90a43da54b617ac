"""edgesec.authz: the ForwardAuth service (identity, canonical request, casbin decision).

Beside it, the proxy side: :mod:`.gen` writes the nginx/Caddy/Traefik configs and :mod:`.proxyconf` reads a
site's (edited) configs back and judges them, for the ``authz.*`` checks.
"""
