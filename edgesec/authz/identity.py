"""Who is calling: the client certificate a proxy forwards, or a bearer token; both fail closed.

Certificate header formats (one header, configured name, format detected from the value):

* Traefik ``passTLSClientCert`` with ``pem: true``: each certificate's base64 DER, leaf first,
  comma-joined; URL-escaped (Go ``QueryEscape``) before Traefik 2.9.2;
* Caddy ``{http.request.tls.client.certificate_der_base64}``: the leaf's base64 DER;
* nginx ``$ssl_client_escaped_cert``: the leaf's PEM, URI-component-escaped.

The proxy may not have checked the chain, and no proxy here checks our CRL: the chain and the CRL are
verified with pki's verify against the site's trust bundle. Tokens are checked with PyJWT against local
keys only, with the algorithm bound to each key (RFC 8725).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from edgesec._fs import read_input_file
from edgesec.authz.settings import JwtSettings
from edgesec.errors import ConfigError

__all__ = [
    "ROLE_PREFIX",
    "CertIdentity",
    "IdentityRejected",
    "JwtVerifier",
    "TokenIdentity",
    "identity_from_cert",
    "parse_cert_header",
    "role_clash",
]

_MAX_CERT_HEADER = 32 * 1024
_MAX_CHAIN = 4
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class IdentityRejected(Exception):
    """An identity was presented and is not acceptable (401); ``reason`` is a short class for audit."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class CertIdentity:
    """A verified client certificate's identity."""

    user: str
    serial: str
    subject: str
    not_after: str
    not_after_ts: float = 0.0


@dataclass(frozen=True)
class TokenIdentity:
    """A verified bearer token's identity."""

    user: str
    tenant: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)


def parse_cert_header(value: str) -> list[x509.Certificate]:
    """Certificates from a proxy's client-certificate header, leaf first; raises :class:`IdentityRejected`."""
    if not value or len(value) > _MAX_CERT_HEADER:
        raise IdentityRejected("cert-header", "empty or oversized client certificate header")
    text = value.strip()
    if "%" in text:
        # URL-escaped: old Traefik (QueryEscape) and nginx ($ssl_client_escaped_cert). Base64 and PEM
        # never contain '%', so a value with one is escaped exactly once; unquote, never unquote_plus
        # ('+' is a base64 character).
        text = unquote(text, errors="strict")
    try:
        if text.startswith("-----BEGIN"):
            certs = x509.load_pem_x509_certificates(text.encode("ascii"))
        else:
            certs = []
            for part in text.split(","):
                part = part.strip()
                if not _B64.fullmatch(part):
                    raise IdentityRejected("cert-header", "client certificate header is not base64 DER")
                certs.append(x509.load_der_x509_certificate(base64.b64decode(part, validate=True)))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise IdentityRejected("cert-header", f"client certificate header does not parse: {exc}") from None
    if not certs or len(certs) > _MAX_CHAIN:
        raise IdentityRejected("cert-header", "client certificate header holds no or too many certificates")
    return certs


def identity_from_cert(cert: x509.Certificate, source: str) -> str:
    """The user a certificate names: its CN, or the first SAN of the chosen kind."""
    if source == "cn":
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1:
            raise IdentityRejected("cert-identity", "client certificate must carry exactly one CN")
        name = cns[0].value
        name = name.decode() if isinstance(name, bytes) else name
    else:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise IdentityRejected("cert-identity", "client certificate has no SAN") from None
        kind: Any = {"san-email": x509.RFC822Name, "san-uri": x509.UniformResourceIdentifier}.get(
            source, x509.DNSName
        )
        values = san.get_values_for_type(kind)
        if len(values) != 1:
            raise IdentityRejected("cert-identity", f"client certificate must carry exactly one {source}")
        name = values[0]
    if not _valid_user(name):
        raise IdentityRejected("cert-identity", "the certificate's identity is not a usable user name")
    return name


# Roles are named with this prefix (``role:teller``); users never are. casbin keeps users and roles in one
# namespace, so an identity equal to a role name would *be* that role.
ROLE_PREFIX = "role:"


def role_clash(user: str, role_names: Collection[str]) -> str | None:
    """Why ``user`` (a CN, SAN or token subject) cannot be an identity, or ``None``: it uses the role
    prefix (any case) or equals a name the policy grants as a role. Refused at ``/auth`` (401, audited),
    in ``authz explain`` and ``authz test``."""
    if user.lower().startswith(ROLE_PREFIX):
        return f"identity {user!r} uses the role prefix {ROLE_PREFIX!r}: users and roles are separate"
    if user in role_names:
        return f"identity {user!r} is the name of a role in the policy: users and roles are separate"
    return None


_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+/-]{0,254}")


def _valid_user(name: str) -> bool:
    # A user id ends up in a header and a casbin subject: no commas, spaces or control characters.
    return bool(_USER.fullmatch(name))


def _numeric_date(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


# Which algorithms each key type may verify (RFC 8725 3.1: bind the algorithm to the key).
_FAMILY = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512", "ES256K"),
    "OKP": ("EdDSA",),
    "oct": ("HS256", "HS384", "HS512"),
}
_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}


@dataclass(frozen=True)
class _Key:
    kid: str | None
    key: Any
    algorithms: tuple[str, ...]


def _key_algs(key: Any, kty: str, allowed: Sequence[str], jwk_alg: str | None) -> tuple[str, ...]:
    fam = set(_FAMILY.get(kty, ()))
    if isinstance(key, ec.EllipticCurvePublicKey):
        fam = {_CURVE_ALG.get(key.curve.name, "")}
    algs = tuple(a for a in allowed if a in fam and (jwk_alg is None or a == jwk_alg))
    return algs


class JwtVerifier:
    """Checks bearer tokens against local keys (a JWKS file and/or PEM public keys)."""

    def __init__(self, settings: JwtSettings) -> None:
        if not settings.issuer or not settings.audience:
            raise ConfigError(
                "authz.jwt needs issuer and audience when bearer tokens are accepted",
                hint="set [authz.jwt] issuer and audience, or drop 'jwt' from authz.identity_order",
            )
        self.settings = settings
        self.keys: list[_Key] = []
        if settings.jwks_file:
            self._load_jwks(Path(settings.jwks_file).expanduser())
        for f in settings.public_key_files:
            self._load_pem(Path(f).expanduser())
        if not self.keys:
            raise ConfigError(
                "authz.jwt has no usable key for the allowed algorithms",
                hint="set [authz.jwt] jwks_file or public_key_files and algorithms",
            )

    def _load_jwks(self, path: Path) -> None:
        try:
            data = json.loads(read_input_file(path, what="JWKS file", limit=1024 * 1024))
            entries = data["keys"]
            if not isinstance(entries, list):
                raise TypeError("keys is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"JWKS file {path} is not a JSON Web Key Set: {exc}") from None
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            kty = entry.get("kty")
            if kty == "oct":
                # A shared secret in a file meant for public keys is a confusion hazard: refuse it.
                raise ConfigError(f"JWKS file {path} holds a symmetric ('oct') key; only public keys")
            try:
                jwk = jwt.PyJWK(entry)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"JWKS file {path}: unusable key {entry.get('kid')!r}: {exc}") from None
            algs = _key_algs(jwk.key, str(kty), self.settings.algorithms, entry.get("alg"))
            if algs:
                self.keys.append(_Key(entry.get("kid"), jwk.key, algs))

    def _load_pem(self, path: Path) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        raw = read_input_file(path, what="public key file", limit=1024 * 1024)
        try:
            key = load_pem_public_key(raw)
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM public key: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey):
            kty = "RSA"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            kty = "EC"
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            kty = "OKP"
        else:
            raise ConfigError(f"{path}: unsupported public key type")
        algs = _key_algs(key, kty, self.settings.algorithms, None)
        if algs:
            self.keys.append(_Key(path.stem, key, algs))

    def verify(self, token: str) -> TokenIdentity:
        """The token's identity; raises :class:`IdentityRejected` for anything not fully valid."""
        s = self.settings
        if len(token) > s.max_token_bytes:
            raise IdentityRejected("jwt-oversized", "bearer token is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise IdentityRejected("jwt-malformed", f"bearer token does not parse: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in s.algorithms:
            raise IdentityRejected("jwt-alg", f"token algorithm {alg!r} is not allowed")
        if "crit" in header:
            # We implement no JWS extension, so any critical one must be refused (RFC 7515 4.1.11).
            raise IdentityRejected("jwt-crit", "token carries critical header extensions")
        for banned in ("jku", "x5u", "jwk", "x5c"):
            if banned in header:
                raise IdentityRejected("jwt-key-ref", f"token names its own key ({banned}); keys are local")
        if s.typ is not None:
            typ = str(header.get("typ", ""))
            if typ.lower().removeprefix("application/") != s.typ.lower().removeprefix("application/"):
                raise IdentityRejected("jwt-typ", "token typ does not match")
        kid = header.get("kid")
        if kid is not None:
            keys = [k for k in self.keys if k.kid == kid]
            if not keys:
                raise IdentityRejected("jwt-kid", "token kid names no local key")
        else:
            keys = self.keys
        keys = [k for k in keys if alg in k.algorithms]
        if not keys:
            raise IdentityRejected("jwt-alg", f"no local key accepts {alg}")
        last: Exception | None = None
        for k in keys:
            try:
                claims = jwt.decode(
                    token,
                    key=k.key,
                    algorithms=[alg],
                    audience=s.audience,
                    issuer=s.issuer,
                    leeway=s.leeway_s,
                    options={"require": ["exp", "iat", "iss", "aud"], "verify_signature": True},
                )
                break
            except jwt.PyJWTError as exc:
                last = exc
        else:
            raise IdentityRejected("jwt-invalid", f"bearer token rejected: {last}")
        for name in ("exp", "nbf", "iat"):
            # RFC 7519 2: a NumericDate is a JSON number. PyJWT also takes "1796404221" for exp and
            # true for iat/nbf; a token whose times are not numbers is not a valid token.
            if name in claims and not _numeric_date(claims[name]):
                raise IdentityRejected(
                    "jwt-claims", f"token claim {name!r} is not a NumericDate (a JSON number)"
                )
        user = claims.get(s.user_claim)
        if not isinstance(user, str) or not _valid_user(user):
            raise IdentityRejected(
                "jwt-claims", f"token claim {s.user_claim!r} is missing or not a user name"
            )
        tenant = None
        if s.tenant_claim:
            t = claims.get(s.tenant_claim)
            if t is not None and (not isinstance(t, str) or not _TENANT.fullmatch(t)):
                raise IdentityRejected("jwt-claims", "token tenant claim is not a tenant name")
            tenant = t
        return TokenIdentity(user=user, tenant=tenant, claims=claims)
