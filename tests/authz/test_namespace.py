"""Users and roles in separate namespaces at ``/auth``: an identity that names a role is refused (401, audited).

casbin keeps users and roles in one namespace: a certificate CN, URI SAN or token subject equal to
``role:admin`` would *be* the admin role. The certificates here are signed by hand with the site's issuing
key (pki itself refuses to issue them), as an older CA or a hand-signed CSR would have produced them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgesec import auditing
from edgesec.auditing.trail import trail_files
from edgesec.authz.identity import role_clash
from tests.authz.conftest import SiteCA, bank_files, fwd
from tests.authz.test_identity import claims, jwt_settings, keys  # noqa: F401 -- the module fixture


def hand_signed(site_ca: SiteCA, cn: str, uri: str | None = None) -> str:
    """A client certificate like alice's, with another CN and optionally one URI SAN, as base64 DER."""
    _, issuer, key = site_ca.ca.signer()
    model = site_ca.certs["alice"]
    now = dt.datetime.now(dt.UTC)
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for ext in model.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName | x509.SubjectKeyIdentifier):
            continue
        b = b.add_extension(ext.value, ext.critical)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), False)
    if uri is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
    cert = b.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@pytest.fixture
def trail(tmp_path: Path) -> Any:
    with auditing.configured(tmp_path / "audit", durability="none"):
        yield tmp_path / "audit"


def decisions(trail: Path) -> list[dict[str, Any]]:
    auditing.flush()
    out = []
    for f in trail_files(trail):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return [e for e in out if e["event"]["action"] == "authz.decision"]


def test_role_clash_rule() -> None:
    roles = {"role:admin", "auditors"}
    assert role_clash("alice", roles) is None
    assert role_clash("role:admin", roles) and role_clash("ROLE:Teller", roles)  # the prefix, any case
    assert role_clash("role:nonexistent", roles)  # the prefix alone is enough
    assert role_clash("auditors", roles)  # a role without the prefix, by name
    assert role_clash("auditor", roles) is None


@pytest.mark.parametrize(
    ("cn", "uri", "source"), [("role:admin", None, "cn"), ("erin-ok", "role:admin", "san-uri")]
)
def test_certificate_naming_a_role_gets_401_and_is_audited(  # type: ignore[no-untyped-def]
    make_authorizer, site_ca, trail, cn: str, uri: str | None, source: str
) -> None:
    a = make_authorizer(cert_identity=source)
    cert = hand_signed(site_ca, cn, uri)
    st, h = a.authorize(fwd("DELETE", "/console/api/apps/7", cert=cert), "10.1.2.3")
    assert st == 401 and not any(k == "X-User-ID" for k, _ in h)
    ev = decisions(trail)[-1]
    assert ev["http"]["response"]["status_code"] == 401
    assert ev["edgesec"]["authz"]["reason"] == "identity-names-role"
    # The same hand-signed shape with an ordinary name is accepted: the refusal is about the name.
    ok = hand_signed(site_ca, "erin" if source == "cn" else "erin-ok", None if source == "cn" else "erin")
    assert a.authorize(fwd("GET", "/console/api/apps", cert=ok), None)[0] == 200


@pytest.mark.parametrize("sub", ["role:admin", "Role:Admin", "role:breakglass", "role:teller"])
def test_token_subject_naming_a_role_gets_401(make_authorizer, keys, trail, sub: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a = make_authorizer(identity_order=["jwt"], jwt=jwt_settings(keys))
    token = jwt.encode(claims(sub=sub), keys["ec"], algorithm="ES256", headers={"kid": "ec"})
    st, _ = a.authorize([*fwd("DELETE", "/console/api/apps/7"), ("Authorization", f"Bearer {token}")], None)
    assert st == 401
    assert decisions(trail)[-1]["http"]["response"]["status_code"] == 401


def test_explain_and_test_agree_with_auth(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pdir = bank_files(tmp_path).policy.parent
    code, out, err = cli(
        "--json", "authz", "explain", "--user", "role:admin", "--tenant", "branch", "--method", "DELETE",
        "--uri", "/console/api/apps/7", "--policy-dir", str(pdir),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)["result"]
    assert doc["allowed"] is False and doc["effect"] == "rejected" and "identity-names-role" in doc["reason"]
    table = tmp_path / "t.csv"
    table.write_text("user,tenant,method,uri,expect\nrole:admin,branch,DELETE,/console/api/apps/7,deny\n")
    code, out, err = cli("--json", "authz", "test", str(table), "--policy-dir", str(pdir))
    assert code == 0, (out, err)
