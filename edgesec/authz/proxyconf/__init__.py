"""Read a site's proxy configuration back and judge it: is every route behind ForwardAuth and mutual TLS?

The generators in :mod:`edgesec.authz.gen` write configs that are right; sites edit them afterwards. These
functions parse what a proxy actually runs with -- an nginx config with its ``include`` files, a
Caddyfile, a Traefik dynamic (and static) config -- and report each way a request could reach the app
without the site's client certificate or without a ForwardAuth decision. They are pure functions of file
contents (a ``read`` callable), so the checks feed them through the probe and tests feed them text.
"""

from edgesec.authz.proxyconf.caddy import check_caddy, parse_caddyfile
from edgesec.authz.proxyconf.nginx import check_nginx, load_nginx, parse_nginx
from edgesec.authz.proxyconf.report import Issue, ProxyReport, SiteTrust
from edgesec.authz.proxyconf.traefik import check_traefik, load_structured

__all__ = [
    "Issue",
    "ProxyReport",
    "SiteTrust",
    "check_caddy",
    "check_nginx",
    "check_traefik",
    "load_nginx",
    "load_structured",
    "parse_caddyfile",
    "parse_nginx",
]
