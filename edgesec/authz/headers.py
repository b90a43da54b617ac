"""Which request headers a client must never set: one definition for the generators and the proxy check.

A header is *protected* when the decision or the application reads it as a fact the proxy or authz
established: the identity headers authz answers with, the client-certificate header, the ``X-Forwarded-*``
family a proxy sets itself, nginx's ``X-Original-*``, rewrite overrides and method overrides. Two names
are the same header here when they are equal case-insensitively with ``_`` and ``-`` treated as equal:
WSGI (``HTTP_X_USER_ID``), CGI and several frameworks fold them, so ``X_User_ID`` *is* ``X-User-ID`` to
the application. Every generated proxy config removes every client-sent spelling of every protected
header before anything else runs, then sets only the decided values; :mod:`edgesec.authz.proxyconf`
judges a running config by the same list.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "CERT_HEADER_DEFAULT",
    "FORWARDED_SET",
    "HOP_BY_HOP",
    "IDENTITY_DEFAULT",
    "OVERRIDES",
    "TRAEFIK_SETS",
    "fold",
    "nginx_client_headers",
    "protected",
    "spellings",
    "strip_list",
]

# The identity headers authz answers with, by default ([authz.headers] may rename them), and the header a
# proxy forwards the client certificate in (Traefik's passTLSClientCert name; [authz] cert_header).
IDENTITY_DEFAULT = ("X-User-ID", "X-Roles", "X-Tenant", "X-Auth-Method")
CERT_HEADER_DEFAULT = "X-Forwarded-Tls-Client-Cert"

# Set (or consumed) by a proxy, never by a client: the request attributes authz decides on and the
# backend may read (client address, scheme, host, prefix, the original URI and method).
FORWARDED_SET = (
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "X-Forwarded-Prefix",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Forwarded-Ssl",
    "X-Forwarded-Tls-Client-Cert",
    "X-Forwarded-Tls-Client-Cert-Info",
    "X-Real-IP",
    "X-Original-URI",
    "X-Original-Method",
    "X-Original-URL",
    "X-Rewrite-URL",
)

# Ask a framework to treat the request as another method: a client-chosen request attribute.
OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")

# X-Forwarded-* a Traefik entrypoint deletes from an untrusted peer's request and sets itself; the
# generated Traefik config leaves their dash spellings to it (the backend wants Traefik's values).
TRAEFIK_SETS = (
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "X-Forwarded-Tls-Client-Cert-Info",
    "X-Real-IP",
)

# A client's Connection header names headers a proxy deletes as hop-by-hop -- including ones the proxy
# itself added (forward_auth's identity copies). Generated configs delete it before anything else.
HOP_BY_HOP = ("Connection",)


def fold(name: str) -> str:
    """The comparison key of a header name: lower case, ``_`` read as ``-``."""
    return name.strip().lower().replace("_", "-")


def protected(identity: Iterable[str] = IDENTITY_DEFAULT, cert_header: str | None = None) -> tuple[str, ...]:
    """Every protected header name (canonical spelling), identity headers first, no fold-duplicates."""
    out: list[str] = []
    seen: set[str] = set()
    for h in (*identity, *((cert_header,) if cert_header else ()), *FORWARDED_SET, *OVERRIDES):
        if fold(h) not in seen:
            seen.add(fold(h))
            out.append(h)
    return tuple(out)


def spellings(name: str) -> list[str]:
    """``name`` with ``-`` or ``_`` at each separator (``X-User-ID``, ``X_User-ID``, ..., ``X_User_ID``).

    Case needs no variants for Go proxies (Traefik, Caddy): they store a header under its canonical key
    and delete by it, so ``x_USER_id`` and ``X_User_ID`` are one entry there.
    """
    parts = name.replace("_", "-").split("-")
    out = []
    for seps in itertools.product("-_", repeat=len(parts) - 1):
        out.append(parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True)))
    return out


def underscore_spellings(names: Sequence[str]) -> list[str]:
    """Every spelling of ``names`` with at least one ``_``: what a proxy must delete beside the name."""
    return [s for n in names for s in spellings(n) if "_" in s]


_NGINX_HTTP_VAR = re.compile(r"\$\{?http_([A-Za-z0-9_]+)")


def nginx_client_headers(value: str) -> list[str]:
    """The client headers an nginx value reads (``"$http_x_user_id"`` -> ``["x-user-id"]``), folded;
    ``$proxy_add_x_forwarded_for`` is the client's X-Forwarded-For with the peer address appended."""
    found = [fold(m) for m in _NGINX_HTTP_VAR.findall(value)]
    if "proxy_add_x_forwarded_for" in value:
        found.append("x-forwarded-for")
    return found


def strip_list(
    identity: Iterable[str] = IDENTITY_DEFAULT, cert_header: str | None = None, keep: Iterable[str] = ()
) -> tuple[str, ...]:
    """What a proxy must delete from a client request before anything else runs: every spelling of every
    protected header and ``Connection``, except the dash spellings in ``keep`` (headers the proxy itself
    replaces with its own value before they reach anyone)."""
    kept = {fold(k) for k in keep}
    out: list[str] = []
    for name in protected(identity, cert_header):
        for s in spellings(name):
            if "_" in s or fold(s) not in kept:
                out.append(s)
    return (*out, *HOP_BY_HOP)
