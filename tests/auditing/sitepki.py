"""The site PKI for the auditing tests: an adapter of the shared builder (``tests/_pki.py``).

One CA store issues the loopback Elasticsearch endpoint's server certificate, syslog-ng's client
certificate and the trail checkpoint signer; its published trust bundle (``root.pem``,
``intermediates.pem``, ``ca-bundle.pem``, ``crl.pem``) is what the code under test verifies against.
A second, unrelated CA issues a "rogue" signer the site must not trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests._pki import Leaf, export, new_ca


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


def make_site_pki(d: Path) -> SitePki:
    d.mkdir(parents=True, exist_ok=True)
    ca = new_ca(d, "edgesec test")
    try:
        ca.issue_server("es-server", ["DNS:localhost", "IP:127.0.0.1"])
        ca.issue_client("syslog-ng-client")
        ca.issue_signing("trail-signer")
        server, client, signing = (
            export(ca, n, d) for n in ("es-server", "syslog-ng-client", "trail-signer")
        )
    finally:
        ca.close()
    rogue = new_ca(d, "rogue", store="rogue-ca", trust="rogue-trust")
    try:
        rogue.issue_signing("rogue-signer")
        other = export(rogue, "rogue-signer", d)
    finally:
        rogue.close()
    return SitePki(d / "trust", d / "trust" / "ca-bundle.pem", server, client, signing, other, d / "ca")
