"""Proxy configuration that puts a site's app behind the ForwardAuth service, with mutual TLS.

Pure renderers (``render_*(site) -> str``); the CLI writes the files. Each output does the same four
things: require and verify a client certificate from the site CA; hand the certificate and the original
method/URI/host to ``/auth``; strip any client-sent copy of the identity headers; pass the identity
headers authz answered with to the backend.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edgesec._fs import read_input_file
from edgesec.authz.headers import CERT_HEADER_DEFAULT, IDENTITY_DEFAULT, TRAEFIK_SETS, strip_list
from edgesec.authz.settings import AuthzSettings
from edgesec.errors import InputError

__all__ = ["ProxySite", "render_caddy", "render_nginx", "render_traefik_dynamic", "render_traefik_static"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


@dataclass(frozen=True)
class ProxySite:
    """What a generated proxy config needs to know."""

    server_name: str
    backend: str  # http://host:port of the app
    auth_url: str  # http://host:port of the ForwardAuth service (no path)
    ca_file: str  # the trust bundle's ca-bundle.pem
    cert_file: str  # the proxy's server certificate and key
    key_file: str
    listen: str = "0.0.0.0:443"
    crl_file: str | None = None
    header_user: str = IDENTITY_DEFAULT[0]
    header_roles: str = IDENTITY_DEFAULT[1]
    header_tenant: str = IDENTITY_DEFAULT[2]
    header_method: str = IDENTITY_DEFAULT[3]
    cert_header: str = CERT_HEADER_DEFAULT
    # Peers allowed to set X-Forwarded-* (a load balancer in front of the proxy); none by default, and then
    # Traefik's forwardAuth does not trust them either.
    trusted_ips: tuple[str, ...] = field(default_factory=tuple)
    entrypoint: str = "websecure"
    # Every certificate of ca_file as base64 DER (:meth:`with_ca_certs`): Caddy 2.6 reads only the first
    # certificate of a trusted_ca_cert_file, so the Caddyfile names each one inline.
    ca_certs: tuple[str, ...] = ()

    @property
    def identity_headers(self) -> tuple[str, str, str, str]:
        return (self.header_user, self.header_roles, self.header_tenant, self.header_method)

    def with_ca_certs(self) -> ProxySite:
        """This site with ``ca_certs`` read from ``ca_file``; :class:`InputError` if it holds none."""
        raw = read_input_file(Path(self.ca_file), what="client CA bundle", limit=4 * 1024 * 1024)
        try:
            certs = x509.load_pem_x509_certificates(raw)
        except ValueError as exc:
            raise InputError(f"client CA bundle {self.ca_file} holds no PEM certificate: {exc}") from None
        der = tuple(base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in certs)
        return replace(self, ca_certs=der)

    def strip(self, keep: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Client headers this site's proxy deletes first (see :func:`edgesec.authz.headers.strip_list`)."""
        return strip_list(self.identity_headers, self.cert_header, keep)

    def validate(self) -> None:
        """One-line errors for values that would break or weaken the generated config."""
        if not _NAME.fullmatch(self.server_name):
            raise InputError(f"server name {self.server_name!r} is not a host name")
        for url, what in ((self.backend, "backend"), (self.auth_url, "authz URL")):
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query:
                raise InputError(f"{what} {url!r} must be http(s)://host:port with no path")
        for h in (*self.identity_headers, self.cert_header):
            if not _HEADER.fullmatch(h):
                raise InputError(f"header name {h!r} is not a token")
        for p in (self.ca_file, self.cert_file, self.key_file, *(self.crl_file or "",)):
            if any(c in p for c in "\n\r\"'{};`$ ") and p:
                raise InputError(f"path {p!r} holds characters a proxy config cannot quote safely")
        if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[0-9.]+|[A-Za-z0-9.-]*):[0-9]{1,5}", self.listen):
            raise InputError(f"listen address {self.listen!r} must be HOST:PORT")

    @classmethod
    def from_settings(cls, s: AuthzSettings, **kwargs: Any) -> ProxySite:
        auth_host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host  # noqa: S104
        auth_url = kwargs.pop("auth_url", None) or (s.url or f"http://{auth_host}:{s.port}").rstrip("/")
        site = cls(
            auth_url=auth_url,
            header_user=s.headers.user,
            header_roles=s.headers.roles,
            header_tenant=s.headers.tenant,
            header_method=s.headers.method,
            cert_header=s.cert_header,
            **kwargs,
        )
        site.validate()
        return site


def _yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter: block mappings and sequences, every scalar as a JSON (double-quoted) string."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines.append(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict | list) and v:
                inner = _yaml(v, indent + 1).lstrip()
                lines.append(f"{pad}- {inner}")
            else:
                lines.append(f"{pad}- {_scalar(v)}")
    return "\n".join(lines)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return json.dumps(str(v))


def traefik_dynamic(site: ProxySite) -> dict[str, Any]:
    """Traefik v3 dynamic configuration (file provider) as a dict."""
    return {
        "http": {
            "routers": {
                "edgesec-app": {
                    "rule": f"Host(`{site.server_name}`)",
                    "entryPoints": [site.entrypoint],
                    # Strip first, then passTLSClientCert: forwardAuth must see the header it sets.
                    "middlewares": ["edgesec-strip", "edgesec-client-cert", "edgesec-forward-auth"],
                    "service": "edgesec-app",
                    "tls": {"options": "edgesec-mtls"},
                }
            },
            "middlewares": {
                # Every client-sent spelling of a protected header ("" deletes), except the ones the
                # entrypoint itself replaces for an untrusted peer.
                "edgesec-strip": {
                    "headers": {"customRequestHeaders": {h: "" for h in site.strip(TRAEFIK_SETS)}}
                },
                "edgesec-client-cert": {"passTLSClientCert": {"pem": True}},
                "edgesec-forward-auth": {
                    "forwardAuth": {
                        "address": f"{site.auth_url}/auth",
                        # true is what keeps passTLSClientCert's X-Forwarded-Tls-Client-Cert (Traefik drops
                        # every X-Forwarded-* otherwise). It trusts only Traefik's own values: edgesec-strip
                        # deleted the client's X-Forwarded-Uri/-Method/-Prefix (every spelling), and the
                        # entrypoint replaces the rest unless the peer is a named --trusted-ip.
                        "trustForwardHeader": True,
                        "authResponseHeaders": list(site.identity_headers),
                        # Only what authz reads (Traefik adds its managed X-Forwarded-* itself): other
                        # client headers never reach the decision.
                        "authRequestHeaders": ["Authorization", "Cookie", site.cert_header],
                    }
                },
            },
            "services": {"edgesec-app": {"loadBalancer": {"servers": [{"url": site.backend}]}}},
        },
        "tls": {
            "certificates": [{"certFile": site.cert_file, "keyFile": site.key_file}],
            "options": {
                "edgesec-mtls": {
                    "minVersion": "VersionTLS12",
                    "sniStrict": True,
                    "clientAuth": {"caFiles": [site.ca_file], "clientAuthType": "RequireAndVerifyClientCert"},
                }
            },
        },
    }


def traefik_static(site: ProxySite, dynamic_file: str) -> dict[str, Any]:
    """The static-config part the dynamic config depends on: the entrypoint and the file provider, and
    no update check or usage report (a sealed site's proxy never phones home)."""
    entry: dict[str, Any] = {"address": site.listen}
    if site.trusted_ips:
        # Only these peers may set X-Forwarded-*; Traefik drops client-sent copies otherwise.
        entry["forwardedHeaders"] = {"trustedIPs": list(site.trusted_ips)}
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {site.entrypoint: entry},
        "providers": {"file": {"filename": dynamic_file, "watch": True}},
    }


# The file names `edgesec authz gen traefik --out DIR` writes; `edgesec site units`' Traefik unit runs the static one.
TRAEFIK_DYNAMIC = "edgesec-dynamic.yml"
TRAEFIK_STATIC = "edgesec-static.yml"


def render_traefik_dynamic(site: ProxySite) -> str:
    return (
        "# Traefik dynamic configuration generated by edgesec authz gen traefik\n"
        + _yaml(traefik_dynamic(site))
        + "\n"
    )


def render_traefik_static(site: ProxySite, dynamic_file: str) -> str:
    return (
        "# Traefik static configuration snippet generated by edgesec authz gen traefik\n"
        + _yaml(traefik_static(site, dynamic_file))
        + "\n"
    )


def render_caddy(site: ProxySite) -> str:
    """A Caddyfile (Caddy 2.6+) with mTLS and forward_auth; strips client-sent identity headers itself."""
    auth = urlsplit(site.auth_url)
    upstream = f"{auth.hostname}:{auth.port or (443 if auth.scheme == 'https' else 80)}"
    strip = "\n".join(f"\t\trequest_header -{h}" for h in site.strip())
    copy = " ".join(site.identity_headers)
    host, port = site.listen.rsplit(":", 1)
    if site.ca_certs:
        # Caddy 2.6 reads only the first certificate of a trusted_ca_cert_file (the root of ca-bundle.pem):
        # a client sending only its leaf would be refused. Every certificate of the bundle, inline.
        trust = f"\t\t\t# every certificate of {site.ca_file}; regenerate when the CA rotates\n" + "\n".join(
            f"\t\t\ttrusted_ca_cert {b}" for b in site.ca_certs
        )
    else:
        trust = f"\t\t\ttrusted_ca_cert_file {site.ca_file}"
    bind = f"\tbind {host}\n" if host not in ("", "0.0.0.0", "[::]") else ""  # noqa: S104
    return f"""# Caddyfile generated by edgesec authz gen caddy
{{
\tauto_https off
\tadmin off
}}

https://{site.server_name}:{port} {{
{bind}\ttls {site.cert_file} {site.key_file} {{
\t\tclient_auth {{
\t\t\tmode require_and_verify
{trust}
\t\t}}
\t}}
\t# Caddy before 2.11.2 passes client-sent copies of copied headers on: strip them, inside the same
\t# route as forward_auth so the strip runs first (a site-level request_header would run after
\t# forward_auth and delete what it copied).
\troute {{
{strip}
\t\trequest_header -X-Original-URI
\t\trequest_header -X-Original-Method
\t\tforward_auth {auth.scheme}://{upstream} {{
\t\t\turi /auth
\t\t\theader_up {site.cert_header} {{http.request.tls.client.certificate_der_base64}}
\t\t\tcopy_headers {copy}
\t\t}}
\t\treverse_proxy {site.backend}
\t}}
}}
"""


def _nginx_headers(site: ProxySite, values: dict[str, str]) -> str:
    """``proxy_set_header`` lines: ``values`` first, then ``""`` (nginx then sends no such header) for every
    other protected header; its underscore spellings are dropped by ``underscores_in_headers off``."""
    lines = [f"        proxy_set_header {h} {v};" for h, v in values.items()]
    done = {h.lower() for h in values}
    lines += [
        f'        proxy_set_header {h} "";'
        for h in site.strip()
        if "_" not in h and h.lower() not in done and h != "Connection"
    ]
    return "\n".join(lines)


def render_nginx(site: ProxySite) -> str:
    """An nginx server block with mTLS and auth_request."""
    auth = site.auth_url.rstrip("/")
    var = {h: "edgesec_" + h.lower().replace("-", "_") for h in site.identity_headers}
    set_vars = "\n".join(
        f"        auth_request_set ${var[h]} $upstream_http_{h.lower().replace('-', '_')};"
        for h in site.identity_headers
    )
    to_auth = _nginx_headers(
        site,
        {
            "Content-Length": '""',
            "X-Original-URI": "$request_uri",
            "X-Original-Method": "$request_method",
            "X-Forwarded-Host": "$host",
            "X-Forwarded-Proto": "$scheme",
            "X-Forwarded-For": "$remote_addr",
            site.cert_header: "$ssl_client_escaped_cert",
        },
    )
    to_backend = _nginx_headers(
        site,
        {
            **{h: "$" + var[h] for h in site.identity_headers},
            "Host": "$host",
            "X-Forwarded-Host": "$host",
            "X-Forwarded-Proto": "$scheme",
            "X-Forwarded-For": "$remote_addr",
        },
    )
    crl = f"    ssl_crl {site.crl_file};\n" if site.crl_file else ""
    return f"""# nginx server block generated by edgesec authz gen nginx
server {{
    listen {site.listen} ssl;
    server_name {site.server_name};
    ssl_certificate {site.cert_file};
    ssl_certificate_key {site.key_file};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate {site.ca_file};
    ssl_verify_client on;
    ssl_verify_depth 3;
{crl}    # Headers with underscores could alias the ones authz reads: drop them.
    underscores_in_headers off;
    ignore_invalid_headers on;

    location = /_edgesec_auth {{
        internal;
        proxy_pass {auth}/auth;
        proxy_pass_request_body off;
        # What authz decides on, set here; every other protected header is sent empty, i.e. not at all.
{to_auth}
    }}

    location / {{
        auth_request /_edgesec_auth;
{set_vars}
        # Identity from authz's answer; no client-sent X-Forwarded-*, X-Original-* or method override.
{to_backend}
        proxy_pass {site.backend};
    }}
}}
"""
