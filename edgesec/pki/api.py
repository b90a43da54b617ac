"""The public face of edgesec's PKI: what authz, the audit trail, model signing and the checks call.

Verify a certificate a proxy forwarded (parse the bundle once, reload it when it changes)::

    from edgesec.pki.api import TrustBundle, verify_certificate
    from edgesec.errors import VerificationError

    trust = TrustBundle.load("/var/lib/edgesec/trust")      # root + intermediates + CRLs
    trust = trust.reload_if_changed()                       # cheap: a few stat() calls
    try:
        v = verify_certificate(chain, purpose="client", trust=trust)   # leaf first
    except VerificationError as exc:
        deny(exc.message)            # untrusted / expired / revoked / wrong purpose / CRL stale
    user = v.common_name             # v.sans.emails, v.sans.uris, v.serial, v.fingerprint_sha256

Verify the signer of a detached signature (the one rule: valid and unrevoked now, unless the signing
time is proven, e.g. by :func:`edgesec.auditing.proof.prove_signing_time`)::

    v = verify_certificate(chain, trust=trust, policy=Policy.signature(proven=None))

Before signing, refuse what the site would not accept (exit 2): ``pki.trust.refuse_unless_accepted(chain,
trust_for_signing(cfg))``. ``load_anchors(path)`` reads a ``--trust`` argument: a bundle directory or one
PEM file of CA certificates and CRLs.

Issue and use certificates from the CA store (only pki reads the store)::

    from edgesec.pki.api import CertificateAuthority

    ca = CertificateAuthority.open(home, passphrase=b"...")   # or the EDGESEC_CA_PASSPHRASE env var
    cert, key = ca.issue_signing("model-publisher")
    cert, key = ca.leaf("model-publisher")                   # later: the current cert and its key
    ca.export_pem("model-publisher", "/etc/edgesec/signing")  # cert.pem, chain.pem, fullchain.pem, key.pem
    ca.revoke("alice", "key-compromise")                     # regenerates and publishes the CRL

For a site configured through ``edgesec.toml`` use :func:`open_ca` / :func:`load_trust`, which honour
``[pki] store_dir``, ``trust_bundle_dir``, ``crl_grace_hours`` and ``reload_hooks``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from edgesec.config import LoadedConfig
from edgesec.errors import NotFound
from edgesec.pki.builder import KEY_TYPES, PROFILES, NameConstraints, SubjectAltNames
from edgesec.pki.ca import CertificateAuthority
from edgesec.pki.csr import load_csr
from edgesec.pki.inventory import CertRecord, ClientRequest, PublishResult
from edgesec.pki.secrets import PassphraseSource
from edgesec.pki.trust import (
    Policy,
    ProvenTime,
    Purpose,
    TrustBundle,
    VerifiedCertificate,
    load_anchors,
    load_certificate_file,
    load_certificates,
    refuse_unless_accepted,
    verify_certificate,
)

__all__ = [
    "KEY_TYPES",
    "PROFILES",
    "CertRecord",
    "CertificateAuthority",
    "ClientRequest",
    "NameConstraints",
    "Policy",
    "ProvenTime",
    "PublishResult",
    "Purpose",
    "SubjectAltNames",
    "TrustBundle",
    "VerifiedCertificate",
    "load_anchors",
    "load_certificate_file",
    "load_certificates",
    "load_csr",
    "load_trust",
    "open_ca",
    "refuse_unless_accepted",
    "store_dir",
    "trust_dir",
    "trust_for_signing",
    "verify_certificate",
]


def store_dir(cfg: LoadedConfig) -> Path:
    """The CA store directory of a site (``[pki] store_dir``, default ``<home>/pki``)."""
    return cfg.path_in_home(cfg.settings.pki.store_dir, "pki")


def trust_dir(cfg: LoadedConfig) -> Path:
    """The published trust bundle directory (``[pki] trust_bundle_dir``, default ``<home>/trust``)."""
    return cfg.path_in_home(cfg.settings.pki.trust_bundle_dir, "trust")


def open_ca(cfg: LoadedConfig, *, passphrase: PassphraseSource = None) -> CertificateAuthority:
    """The site's CA store, as the config describes it."""
    return CertificateAuthority.open(
        store_dir(cfg), passphrase=passphrase, settings=cfg.settings.pki, trust_dir=trust_dir(cfg), exact=True
    )


def load_trust(cfg: LoadedConfig, directory: str | os.PathLike[str] | None = None) -> TrustBundle:
    """The site's published trust bundle (from ``directory``, else the config's trust bundle dir)."""
    d = Path(directory) if directory else trust_dir(cfg)
    return TrustBundle.load(d, crl_grace=dt.timedelta(hours=cfg.settings.pki.crl_grace_hours))


def trust_for_signing(
    cfg: LoadedConfig, directory: str | os.PathLike[str] | None = None
) -> TrustBundle | None:
    """The trust bundle a signing command checks its certificate against before it signs
    (:func:`edgesec.pki.trust.refuse_unless_accepted`): None when none is published (the check then
    refuses); a bundle that does not load (a forged CRL) is a refusal too, exit 2."""
    from edgesec.errors import EdgesecError, InputError

    try:
        return load_trust(cfg, directory)
    except NotFound:
        return None
    except InputError:
        raise
    except EdgesecError as exc:
        raise InputError(f"refusing to sign: the trust bundle cannot be used: {exc.message}") from None
