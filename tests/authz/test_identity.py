"""Identity: the proxies' client-certificate header formats (Traefik's own vectors) and JWT attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from edgesec.authz.identity import IdentityRejected, JwtVerifier, identity_from_cert, parse_cert_header
from edgesec.authz.settings import JwtSettings
from edgesec.errors import ConfigError
from tests.authz.conftest import fwd

# --- Traefik passTLSClientCert vectors -------------------------------------------------------------


def _vectors(conformance: Path) -> dict[str, Any]:
    return json.loads((conformance / "traefik" / "passtlsclientcert-vectors.json").read_text())


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _dn(name: x509.Name, *, with_ou: bool) -> str:
    """Traefik's rendering of a DN (vectors' ``dn_order``): an independent oracle for what we parsed."""

    def vals(oid: x509.ObjectIdentifier) -> list[str]:
        return [str(a.value) for a in name.get_attributes_for_oid(oid)]

    parts: list[str] = []
    parts += [f"DC={v}" for v in vals(NameOID.DOMAIN_COMPONENT)]
    parts += [f"C={v}" for v in vals(NameOID.COUNTRY_NAME)]
    parts += [f"ST={v}" for v in vals(NameOID.STATE_OR_PROVINCE_NAME)]
    parts += [f"L={v}" for v in vals(NameOID.LOCALITY_NAME)]
    parts += [f"O={v}" for v in vals(NameOID.ORGANIZATION_NAME)]
    if with_ou:
        parts += [f"OU={v}" for v in vals(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    parts += [f"SN={v}" for v in vals(NameOID.SERIAL_NUMBER)]
    cns = vals(NameOID.COMMON_NAME)
    if cns:
        parts.append(f"CN={cns[-1]}")
    return ",".join(parts)


def _info(cert: x509.Certificate) -> str:
    out = [
        f'Subject="{_dn(cert.subject, with_ou=True)}"',
        f'Issuer="{_dn(cert.issuer, with_ou=False)}"',
        f'SerialNumber="{cert.serial_number}"',
        f'NB="{int(cert.not_valid_before_utc.timestamp())}"',
        f'NA="{int(cert.not_valid_after_utc.timestamp())}"',
    ]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = (
            san.get_values_for_type(x509.DNSName)
            + san.get_values_for_type(x509.RFC822Name)
            + [str(i) for i in san.get_values_for_type(x509.IPAddress)]
            + san.get_values_for_type(x509.UniformResourceIdentifier)
        )
        if names:
            out.append(f'SAN="{",".join(names)}"')
    except x509.ExtensionNotFound:
        pass
    return ";".join(out)


def test_traefik_pem_vectors_parse_to_the_same_certificates(conformance: Path) -> None:
    v = _vectors(conformance)
    cases = [
        c for c in v["cases"] if c.get("header") == "X-Forwarded-Tls-Client-Cert" and c.get("header_present")
    ]
    assert len(cases) >= 4
    for case in cases:
        value = case["value"]
        for form in (value, quote(value, safe="")):  # current Traefik, and QueryEscaped before 2.9.2
            certs = parse_cert_header(form)
            assert [_b64(c) for c in certs] == value.split(","), case["description"]
            names = case["certs"]
            for cert, name in zip(certs, names, strict=True):
                key = "integration.server.pem" if name == "fixtures/server.pem" else f"pem_header.{name}"
                assert _b64(cert) == v["expected"][key]


def test_traefik_info_vectors_describe_what_we_parsed(conformance: Path) -> None:
    v = _vectors(conformance)
    e = v["expected"]
    minimal = parse_cert_header(e["pem_header.minimalCheeseCrt"])[0]
    complete = parse_cert_header(e["pem_header.completeCheeseCrt"])[0]
    assert _info(minimal) == e["minimalCheeseCertAllInfo"]
    assert _info(complete) == e["completeCertAllInfo"]
    two = next(c for c in v["cases"] if c["description"] == "TLS with 2 certificates, with all info")
    chain = parse_cert_header(f"{e['pem_header.minimalCheeseCrt']},{e['pem_header.completeCheeseCrt']}")
    assert ",".join(_info(c) for c in chain) == two["value"]


def test_traefik_vectors_identity(conformance: Path) -> None:
    e = _vectors(conformance)["expected"]
    server = parse_cert_header(e["integration.server.pem"])[0]
    assert identity_from_cert(server, "cn") == "server"
    # No CN at all, and two CNs (Go keeps the last one; we refuse the ambiguity).
    with pytest.raises(IdentityRejected):
        identity_from_cert(parse_cert_header(e["pem_header.minimalCheeseCrt"])[0], "cn")
    with pytest.raises(IdentityRejected):
        identity_from_cert(parse_cert_header(e["pem_header.completeCheeseCrt"])[0], "cn")
    # Two e-mail SANs: refused as an identity too.
    with pytest.raises(IdentityRejected):
        identity_from_cert(parse_cert_header(e["pem_header.completeCheeseCrt"])[0], "san-email")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "%",
        "%zz",
        "MII=,",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        "a" * 40000,
        "TUlJ",
        ",".join(["MIIB"] * 6),
    ],
)
def test_garbage_cert_headers_are_rejected(value: str) -> None:
    with pytest.raises(IdentityRejected):
        parse_cert_header(value)


# --- the three proxies' formats, verified against the site CA ---------------------------------------


def test_each_proxy_format_identifies_the_user(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    leaf = site_ca.certs["alice"]
    inter = site_ca.ca.intermediates()[0]
    forms = {
        "traefik": _b64(leaf),
        "traefik-chain": f"{_b64(leaf)},{_b64(inter)}",
        "traefik-escaped": quote(f"{_b64(leaf)},{_b64(inter)}", safe=""),
        "caddy": _b64(leaf),
        "nginx": quote(site_ca.pem("alice"), safe=""),
    }
    for name, value in forms.items():
        st, h = a.authorize(fwd("POST", "/v1/chat-messages", cert=value), "127.0.0.1")
        assert st == 200, name
        assert dict(h)["X-User-ID"] == "alice"
        assert dict(h)["X-Auth-Method"] == "cert"


def test_wrong_purpose_expired_and_revoked_certificates_get_401(make_authorizer, site_ca) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer()
    for name in ("server", "revoked-rita", "stranger"):
        assert a.authorize(fwd("GET", "/v1/parameters", cert=site_ca.der_b64(name)), None)[0] == 401, name
    later = time.time() + 400 * 86400
    b = make_authorizer(clock=lambda: later, crl_grace_hours=24 * 1000)
    assert b.authorize(fwd("POST", "/v1/chat-messages", cert=site_ca.der_b64("alice")), None)[0] == 401


def test_san_identity_source(site_ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, _ = site_ca.ca.issue_client("ops-zhang", email="zhang@branch.example")
    assert identity_from_cert(cert, "san-email") == "zhang@branch.example"
    assert identity_from_cert(cert, "cn") == "ops-zhang"
    with pytest.raises(IdentityRejected):
        identity_from_cert(cert, "san-uri")


# --- JWT ------------------------------------------------------------------------------------------

ISS = "https://idp.branch.local"
AUD = "edgesec-authz"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("jwt")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (d / "ec.pem").write_bytes(ec_pub)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="rsa-1", use="sig", alg="RS256")
    (d / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    return {"ec": ec_key, "rsa": rsa_key, "rsa_pub": rsa_pub, "dir": d}


def jwt_settings(keys: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {
        "jwks_file": str(keys["dir"] / "jwks.json"),
        "public_key_files": [str(keys["dir"] / "ec.pem")],
        "algorithms": ["ES256", "RS256"],
        "issuer": ISS,
        "audience": AUD,
        "leeway_s": 5,
        "tenant_claim": "tenant",
    }
    base.update(kw)
    return base


def claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 300}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def es(keys: dict[str, Any], headers: dict[str, Any] | None = None, **kw: Any) -> str:
    return jwt.encode(claims(**kw), keys["ec"], algorithm="ES256", headers={"kid": "ec", **(headers or {})})


def _raw_token(header: dict[str, Any], payload: dict[str, Any], sign: Any) -> str:
    def enc(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    signing_input = enc(json.dumps(header).encode()) + "." + enc(json.dumps(payload).encode())
    return signing_input + "." + enc(sign(signing_input.encode()))


@pytest.fixture
def jwt_authz(make_authorizer, keys):  # type: ignore[no-untyped-def]
    return make_authorizer(identity_order=["jwt"], jwt=jwt_settings(keys))


def call(a: Any, token: str, **kw: Any) -> tuple[int, dict[str, str]]:
    st, h = a.authorize([*fwd("POST", "/v1/chat-messages", **kw), ("Authorization", f"Bearer {token}")], None)
    return st, dict(h)


def test_valid_tokens_are_accepted(jwt_authz, keys) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    # A NumericDate may hold a fraction (RFC 7519 2).
    assert call(jwt_authz, es(keys, iat=now - 1.5, exp=now + 300.25, nbf=now - 2.0))[0] == 200
    st, h = call(jwt_authz, es(keys))
    assert st == 200 and h["X-User-ID"] == "alice" and h["X-Auth-Method"] == "jwt"
    rs = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "rsa-1"})
    assert call(jwt_authz, rs)[0] == 200


def _attacks(keys: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())
    return {
        "alg-none": _raw_token({"alg": "none", "typ": "JWT"}, claims(), lambda _: b""),
        "alg-none-kid": _raw_token({"alg": "none", "kid": "ec"}, claims(), lambda _: b""),
        "rs-hs-confusion": _raw_token(
            {"alg": "HS256", "kid": "rsa-1"},
            claims(),
            lambda m: hmac.new(keys["rsa_pub"], m, hashlib.sha256).digest(),
        ),
        "hs-with-ec-pem": _raw_token(
            {"alg": "HS256"},
            claims(),
            lambda m: hmac.new((keys["dir"] / "ec.pem").read_bytes(), m, hashlib.sha256).digest(),
        ),
        "wrong-aud": es(keys, aud="another-app"),
        "wrong-iss": es(keys, iss="https://evil.example"),
        "expired": es(keys, exp=now - 3600, iat=now - 7200),
        "not-yet-valid": es(keys, nbf=now + 3600),
        "issued-in-future": es(keys, iat=now + 3600, exp=now + 7200),
        "no-exp": es(keys, exp=None),
        "no-iat": es(keys, iat=None),
        "no-aud": es(keys, aud=None),
        "unknown-kid": es(keys, headers={"kid": "nope"}),
        "crit": es(keys, headers={"crit": ["exp"], "exp": 1}),
        "jku": es(keys, headers={"jku": "https://evil.example/jwks.json"}),
        "x5u": es(keys, headers={"x5u": "https://evil.example/cert.pem"}),
        "oversized": es(keys, pad="x" * 9000),
        "wrong-key": jwt.encode(
            claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "ec"}
        ),
        "ec-key-rs-alg": jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "ec"}),
        "tampered": es(keys)[:-4] + "AAAA",
        "garbage": "not.a.token",
        "bad-sub": es(keys, sub="alice, admin"),
        # RFC 7519 NumericDate is a JSON number: not a numeric string, not a boolean.
        "exp-string": es(keys, exp=str(now + 300)),
        "iat-bool": es(keys, iat=True),
        "nbf-bool": es(keys, nbf=True),
        "nbf-string": es(keys, nbf=str(now - 10)),
        "role-sub": es(keys, sub="role:admin"),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "alg-none",
        "alg-none-kid",
        "rs-hs-confusion",
        "hs-with-ec-pem",
        "wrong-aud",
        "wrong-iss",
        "expired",
        "not-yet-valid",
        "issued-in-future",
        "no-exp",
        "no-iat",
        "no-aud",
        "unknown-kid",
        "crit",
        "jku",
        "x5u",
        "oversized",
        "wrong-key",
        "ec-key-rs-alg",
        "tampered",
        "garbage",
        "bad-sub",
        "exp-string",
        "iat-bool",
        "nbf-bool",
        "nbf-string",
        "role-sub",
    ],
)
def test_jwt_attacks_get_401(jwt_authz, keys, attack: str) -> None:  # type: ignore[no-untyped-def]
    token = _attacks(keys)[attack]
    st, h = call(jwt_authz, token)
    assert st == 401, attack
    assert h["WWW-Authenticate"].startswith("Bearer ") and 'error="invalid_token"' in h["WWW-Authenticate"]
    assert "X-User-ID" not in h


def test_hs256_in_the_allow_list_still_never_verifies_with_public_keys(make_authorizer, keys) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer(
        identity_order=["jwt"], jwt=jwt_settings(keys, algorithms=["ES256", "RS256", "HS256"])
    )
    assert call(a, _attacks(keys)["rs-hs-confusion"])[0] == 401


def test_typ_and_cookie_and_tenant_claim(make_authorizer, keys) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer(identity_order=["jwt"], jwt=jwt_settings(keys, typ="at+jwt", cookie="edgesec_token"))
    assert call(a, es(keys))[0] == 401  # typ JWT, at+jwt required
    good = es(keys, headers={"typ": "at+jwt"})
    assert call(a, good)[0] == 200
    st, _ = a.authorize([*fwd("POST", "/v1/chat-messages"), ("Cookie", f"x=1; edgesec_token={good}")], None)
    assert st == 200
    st, _ = a.authorize(
        [*fwd("POST", "/v1/chat-messages"), ("Cookie", f"edgesec_token={good}; edgesec_token={good}")], None
    )
    assert st == 401
    assert call(a, es(keys, headers={"typ": "at+jwt"}, tenant="other"))[0] == 403  # host says branch
    assert call(a, es(keys, headers={"typ": "at+jwt"}, tenant="branch\r\nX-Roles: admin"))[0] == 401


def test_certificate_and_token_must_name_the_same_user(make_authorizer, keys, site_ca) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer(identity_order=["cert", "jwt"], jwt=jwt_settings(keys))
    st, h = call(a, es(keys), cert=site_ca.der_b64("alice"))
    assert st == 200 and h["X-Auth-Method"] == "cert+jwt"
    st, h = call(a, es(keys, sub="erin"), cert=site_ca.der_b64("alice"))
    assert st == 403
    # A bad token next to a good certificate is not ignored.
    st, h = call(a, _attacks(keys)["expired"], cert=site_ca.der_b64("alice"))
    assert st == 401


def test_jwt_config_errors(keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        JwtVerifier(JwtSettings(public_key_files=[str(keys["dir"] / "ec.pem")]))  # no issuer/audience
    (tmp_path / "oct.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    with pytest.raises(ConfigError):
        JwtVerifier(JwtSettings(jwks_file=str(tmp_path / "oct.json"), issuer=ISS, audience=AUD))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError):
        JwtVerifier(JwtSettings(jwks_file=str(tmp_path / "bad.json"), issuer=ISS, audience=AUD))
    with pytest.raises(ConfigError):  # only HS256 allowed: no public key can verify anything
        JwtVerifier(
            JwtSettings(
                public_key_files=[str(keys["dir"] / "ec.pem")], algorithms=["HS256"], issuer=ISS, audience=AUD
            )
        )


def test_leeway_is_applied(make_authorizer, keys) -> None:  # type: ignore[no-untyped-def]
    a = make_authorizer(identity_order=["jwt"], jwt=jwt_settings(keys, leeway_s=60))
    now = int(time.time())
    assert call(a, es(keys, exp=now - 30, iat=now - 600))[0] == 200
    assert call(a, es(keys, exp=now - 120, iat=now - 600))[0] == 401


def test_token_keys_reload_on_rotation(make_authorizer, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    d = tmp_path / "keys"
    shutil.copytree(keys["dir"], d)
    a = make_authorizer(
        identity_order=["jwt"],
        jwt=jwt_settings(keys, jwks_file=str(d / "jwks.json"), public_key_files=[str(d / "ec.pem")]),
    )
    assert call(a, es(keys))[0] == 200
    new = ec.generate_private_key(ec.SECP256R1())
    (d / "ec.pem").write_bytes(
        new.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    a.check_reload()
    assert call(a, es(keys))[0] == 401  # the retired key no longer verifies
    assert call(a, jwt.encode(claims(), new, algorithm="ES256", headers={"kid": "ec"}))[0] == 200
    (d / "jwks.json").write_text("{broken")
    a.check_reload()  # keeps the keys it has
    assert call(a, jwt.encode(claims(), new, algorithm="ES256", headers={"kid": "ec"}))[0] == 200
