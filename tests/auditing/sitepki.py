"""The site PKI for the auditing tests, made with edgesec's own CA (``edgesec.pki.api``).

One CA store issues the loopback Elasticsearch endpoint's server certificate, syslog-ng's client
certificate and the trail checkpoint signer; its published trust bundle (``root.pem``,
``intermediates.pem``, ``ca-bundle.pem``, ``crl.pem``) is what the code under test verifies against.
A second, unrelated CA issues a "rogue" signer the site must not trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesec.pki.api import CertificateAuthority


@dataclass
class Leaf:
    """A certificate (with its chain) and its private key, exported as PEM files."""

    cert: Path  # leaf + intermediate (fullchain.pem)
    key: Path


@dataclass
class SitePki:
    """What the tests need of a site PKI: the trust bundle and one leaf per role."""

    trust: Path  # the published bundle directory
    ca_bundle: Path
    server: Leaf
    client: Leaf
    signing: Leaf
    other_signing: Leaf  # issued by a CA the site does not trust
    store: Path  # the site CA store (for [pki] store_dir)


def _export(ca: CertificateAuthority, name: str, d: Path) -> Leaf:
    files = ca.export_pem(name, d / name)
    return Leaf(Path(files["fullchain.pem"]), Path(files["key.pem"]))


def make_site_pki(d: Path) -> SitePki:
    d.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.init(d / "ca", org="edgesec test", encrypt=False, trust_dir=d / "trust")
    try:
        ca.issue_server("es-server", ["DNS:localhost", "IP:127.0.0.1"])
        ca.issue_client("syslog-ng-client")
        ca.issue_signing("trail-signer")
        server, client, signing = (
            _export(ca, n, d) for n in ("es-server", "syslog-ng-client", "trail-signer")
        )
    finally:
        ca.close()
    rogue = CertificateAuthority.init(d / "rogue-ca", org="rogue", encrypt=False, trust_dir=d / "rogue-trust")
    try:
        rogue.issue_signing("rogue-signer")
        other = _export(rogue, "rogue-signer", d)
    finally:
        rogue.close()
    return SitePki(d / "trust", d / "trust" / "ca-bundle.pem", server, client, signing, other, d / "ca")
