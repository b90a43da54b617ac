"""The ``pki`` check family: the health of the site CA and its published trust bundle.

The checks read files only, through ``ctx.system``: the store's CA certificates and key files
(``<store>/ca/``), the store's ``status.json`` (expiring leaves, written after every change), and the
published bundle (``root.pem``, ``intermediates.pem``, ``crl.pem``). Without a CA they SKIP with a reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edgesec.checks.interface import Check, CheckContext, CheckMeta, Finding, Severity
from edgesec.pki.layout import (
    CA_DIR,
    CRL_FILE,
    DB_FILE,
    INTERMEDIATES_FILE,
    MANIFEST_FILE,
    PENDING_FILE,
    ROOT_CERT_FILE,
    ROOT_FILE,
    ROOT_KEY_FILE,
    STATUS_FILE,
    configured_store,
    intermediate_number,
)
from edgesec.pki.trust import crl_signed_by


@dataclass
class _Site:
    store: str
    trust: str


def _site(ctx: CheckContext) -> _Site:
    s = ctx.config.settings.pki
    store = str(ctx.config.path_in_home(s.store_dir, "pki"))
    # As the store does: a configured store_dir naming the directory that holds ``pki/`` is accepted.
    store = configured_store(store, lambda p: ctx.system.stat(p) is not None)
    return _Site(store, str(ctx.config.path_in_home(s.trust_bundle_dir, "trust")))


def _no_ca(check: Check, ctx: CheckContext) -> Finding | None:
    site = _site(ctx)
    if ctx.system.stat(f"{site.store}/{DB_FILE}") is None:
        return check.skipped(
            f"no CA store at {site.store}: this site has not set up its PKI (run `edgesec pki init`)",
            evidence={"store": site.store},
        )
    return None


def _certs(ctx: CheckContext, path: str) -> list[x509.Certificate]:
    text = ctx.system.read_text(path)
    if not text or "-----BEGIN CERTIFICATE-----" not in text:
        return []
    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        return []


def _ca_certs(ctx: CheckContext, store: str) -> dict[str, x509.Certificate]:
    out: dict[str, x509.Certificate] = {}
    for p in ctx.system.glob(f"{store}/{CA_DIR}/*.pem"):
        certs = _certs(ctx, p)
        if certs:
            out[Path(p).name] = certs[0]
    return out


def _active_intermediate(
    cas: dict[str, x509.Certificate],
    status: dict | None = None,  # type: ignore[type-arg]
) -> tuple[str, x509.Certificate] | None:
    """The active intermediate: the one status.json names (files a killed rotation left are not it), else
    the highest-numbered certificate file of the store."""
    fp = ((status or {}).get("publication") or {}).get("active_intermediate")
    if fp:
        for n, c in cas.items():
            if intermediate_number(n) is not None and c.fingerprint(hashes.SHA256()).hex() == fp:
                return n, c
    inters = [(num, n) for n in cas if (num := intermediate_number(n)) is not None]
    if not inters:
        return None
    _, name = max(inters)
    return name, cas[name]


def _days_left(cert: x509.Certificate, now: dt.datetime) -> float:
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


class CaValidity(Check):
    """The root and the active intermediate are valid, and not close to expiry."""

    meta = CheckMeta(
        id="pki.ca-validity",
        title="The site CA certificates are valid and not about to expire",
        severity=Severity.HIGH,
        rationale="When the root or the intermediate expires every certificate below it stops verifying at once: "
        "mutual TLS, model signatures and signed audit evidence all fail together.",
        remediation="Run `edgesec pki rotate-intermediate` (with the root key) well before the intermediate expires; "
        "plan a new root before the root's last year.",
        controls=("pci-dss-4.0:4.2.1", "iec-62443-3-3:SR 1.8"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        skip = _no_ca(self, ctx)
        if skip:
            yield skip
            return
        site = _site(ctx)
        now = ctx.now()
        cas = _ca_certs(ctx, site.store)
        warn_root = float(ctx.param(self.meta.id, "root_warn_days", 365))
        warn_inter = float(ctx.param(self.meta.id, "intermediate_warn_days", 180))
        fail_days = float(ctx.param(self.meta.id, "fail_days", 30))
        targets: list[tuple[str, x509.Certificate, float]] = []
        if ROOT_CERT_FILE in cas:
            targets.append(("root", cas[ROOT_CERT_FILE], warn_root))
        else:
            yield self.failed(
                "the CA store has no root certificate", resource=f"{site.store}/{CA_DIR}/{ROOT_CERT_FILE}"
            )
        act = _active_intermediate(cas, _status(ctx, site))
        if act is None:
            yield self.failed("the CA store has no intermediate certificate", resource=f"{site.store}/ca")
        else:
            targets.append(("intermediate", act[1], warn_inter))
        for role, cert, warn_days in targets:
            left = _days_left(cert, now)
            ev = {"subject": cert.subject.rfc4514_string(), "not_after": cert.not_valid_after_utc.isoformat(),
                  "days_left": round(left, 1)}  # fmt: skip
            res = f"{role}:{cert.subject.rfc4514_string()}"
            if now < cert.not_valid_before_utc:
                yield self.failed(
                    f"the {role} certificate is not valid yet (clock wrong?)", resource=res, evidence=ev
                )
            elif left <= 0:
                yield self.failed(f"the {role} certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                                  resource=res, evidence=ev, severity=Severity.CRITICAL)  # fmt: skip
            elif left <= fail_days:
                yield self.failed(
                    f"the {role} certificate expires in {left:.0f} days", resource=res, evidence=ev
                )
            elif left <= warn_days:
                yield self.warned(
                    f"the {role} certificate expires in {left:.0f} days", resource=res, evidence=ev
                )
            else:
                yield self.passed(
                    f"the {role} certificate is valid for {left:.0f} more days", resource=res, evidence=ev
                )


class CrlFreshness(Check):
    """The published bundle carries a current, correctly signed CRL for every CA, and matches the store."""

    meta = CheckMeta(
        id="pki.crl-freshness",
        title="The published CRLs are fresh and the trust bundle is current",
        severity=Severity.HIGH,
        rationale="An expired CRL locks every client out (nginx refuses all of them) or, where CRLs are optional, "
        "lets revoked certificates back in; a stale bundle misses a rotation.",
        remediation="Schedule `edgesec pki crl` (e.g. `edgesec schedule install`) at least daily; the intermediate's "
        "passphrase reaches it through systemd credentials or a root-only passphrase file.",
        controls=("pci-dss-4.0:4.2.1", "iec-62443-3-3:SR 1.9"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        skip = _no_ca(self, ctx)
        if skip:
            yield skip
            return
        site = _site(ctx)
        now = ctx.now()
        warn_hours = float(ctx.param(self.meta.id, "warn_hours", 48))
        # The root's CRL is re-signed by a ceremony with the offline root key: announce it a month ahead.
        root_warn_days = float(ctx.param(self.meta.id, "root_warn_days", 30))
        roots = _certs(ctx, f"{site.trust}/{ROOT_FILE}")
        inters = _certs(ctx, f"{site.trust}/{INTERMEDIATES_FILE}")
        if not roots:
            yield self.failed(f"no trust bundle is published in {site.trust}", resource=site.trust)
            return
        cas = _ca_certs(ctx, site.store)
        status = _status(ctx, site)
        act = _active_intermediate(cas, status)
        if cas.get(ROOT_CERT_FILE) is not None and cas[ROOT_CERT_FILE] != roots[0]:
            yield self.failed(
                "the published root differs from the store's root", resource=f"{site.trust}/{ROOT_FILE}"
            )
        if act is not None and act[1] not in inters:
            yield self.failed(
                "the published bundle lacks the active intermediate (a rotation was not published)",
                resource=f"{site.trust}/{INTERMEDIATES_FILE}",
                remediation="run `edgesec pki publish`",
            )
        text = ctx.system.read_text(f"{site.trust}/{CRL_FILE}", CRL_READ_LIMIT) or ""
        crls: list[x509.CertificateRevocationList] = []
        for block in text.split("-----END X509 CRL-----")[:-1]:
            try:
                crls.append(x509.load_pem_x509_crl((block + "-----END X509 CRL-----\n").strip().encode()))
            except ValueError:
                yield self.failed(
                    "the published crl.pem holds a corrupt CRL", resource=f"{site.trust}/{CRL_FILE}"
                )
        yield from self._published_vs_inventory(ctx, site, status, text, crls, inters)
        for ca in [*roots, *[c for c in inters if c.not_valid_after_utc > now]]:
            name = ca.subject.rfc4514_string()
            mine = [c for c in crls if crl_signed_by(c, ca)]
            if not mine:
                yield self.failed(f"no valid CRL from {name} in the bundle", resource=name)
                continue
            crl = max(mine, key=lambda c: c.last_update_utc)
            nu = crl.next_update_utc
            ev = {"issuer": name, "this_update": crl.last_update_utc.isoformat(),
                  "next_update": nu.isoformat() if nu else None, "entries": len(crl)}  # fmt: skip
            if nu is None:
                yield self.warned(f"the CRL of {name} has no nextUpdate", resource=name, evidence=ev)
            elif nu <= now:
                yield self.failed(f"the CRL of {name} expired at {nu.isoformat()}", resource=name, evidence=ev,
                                  severity=Severity.CRITICAL)  # fmt: skip
            elif ca in roots and (nu - now).days < root_warn_days:
                yield self.warned(
                    f"the root's CRL expires in {(nu - now).days} days: re-sign it with the root key "
                    "(`edgesec pki crl --root --offline-root DIR`)",
                    resource=name,
                    evidence=ev,
                )
            elif (nu - now).total_seconds() < warn_hours * 3600:
                yield self.warned(
                    f"the CRL of {name} expires within {warn_hours:.0f} h", resource=name, evidence=ev
                )
            else:
                yield self.passed(
                    f"the CRL of {name} is fresh until {nu:%Y-%m-%d %H:%M}", resource=name, evidence=ev
                )

    def _published_vs_inventory(
        self,
        ctx: CheckContext,
        site: _Site,
        status: dict | None,  # type: ignore[type-arg]
        crl_text: str,
        crls: list[x509.CertificateRevocationList],
        inters: list[x509.Certificate],
    ) -> Iterator[Finding]:
        """The inventory against the published bundle: every revocation in the CRL, every intermediate in
        use in the bundle, no change left unpublished. status.json (written after every change) says what
        the inventory holds; publish.pending says a change is committed but not yet published."""
        fix = "run `edgesec pki publish` (any `edgesec pki` command also finishes an interrupted one)"
        pending = f"{site.store}/{PENDING_FILE}"
        if ctx.system.stat(pending) is not None:
            yield self.failed(
                "a CA change is committed but not published: a CA command was interrupted or could not "
                "write the trust bundle",
                resource=pending,
                evidence={"marker": (ctx.system.read_text(pending, 4096) or "").strip()},
                remediation=fix,
            )
        pub = (status or {}).get("publication")
        if not isinstance(pub, dict) or "crl_sha256" not in pub:
            yield self.warned(
                "not assessed: the store's status.json does not record what must be published, so the "
                "bundle cannot be compared with the inventory",
                resource=f"{site.store}/{STATUS_FILE}",
                remediation="run `edgesec pki crl` (it rewrites status.json)",
            )
            return
        manifest = ctx.system.read_text(f"{site.trust}/{MANIFEST_FILE}") or ""
        try:
            published_at = json.loads(manifest).get("published_at")
        except (ValueError, AttributeError):
            published_at = None
        evidence: dict[str, object] = {
            "published_crl_sha256": hashlib.sha256(crl_text.encode("ascii", "replace")).hexdigest(),
            "inventory_crl_sha256": pub["crl_sha256"],
            "published_at": published_at,
            "inventory_crl_signed_at": pub.get("crl_changed_at"),
        }
        ok = True
        if evidence["published_crl_sha256"] != pub["crl_sha256"]:
            ok = False
            missing = []
            for r in pub.get("recent_revocations", []):
                serial = int(r["serial"], 16)
                if not any(
                    c.issuer.rfc4514_string() == r["issuer"]
                    and c.get_revoked_certificate_by_serial_number(serial) is not None
                    for c in crls
                ):
                    missing.append(r)
            for r in missing:
                yield self.failed(
                    f"certificate {r['name']} (serial {r['serial']}) is revoked in the inventory but not in "
                    "the published CRL: servers still accept it",
                    resource=f"{site.trust}/{CRL_FILE}",
                    evidence={**evidence, "revoked_at": r["revoked_at"], "issuer": r["issuer"]},
                    severity=Severity.CRITICAL,
                    remediation=fix,
                )
            if not missing:
                yield self.failed(
                    "the published crl.pem is not the inventory's current CRLs",
                    resource=f"{site.trust}/{CRL_FILE}",
                    evidence=evidence,
                    remediation=fix,
                )
        published = {c.fingerprint(hashes.SHA256()).hex() for c in inters}
        for fp in pub.get("intermediates", []):
            if fp not in published:
                ok = False
                yield self.failed(
                    "an intermediate in use is missing from the published bundle"
                    + (
                        " (the active one: certificates it issues do not chain)"
                        if fp == pub.get("active_intermediate")
                        else ""
                    ),
                    resource=f"{site.trust}/{INTERMEDIATES_FILE}",
                    evidence={"sha256": fp, "published": sorted(published)},
                    remediation=fix,
                )
        if ok:
            yield self.passed(
                "the published bundle matches the inventory (CRLs and intermediates)",
                resource=site.trust,
                evidence={**evidence, "intermediates": len(pub.get("intermediates", []))},
            )


CRL_READ_LIMIT = 256 << 20


class KeyProtection(Check):
    """CA keys are encrypted, key files are 0600, the store is 0700; the root key is offline."""

    meta = CheckMeta(
        id="pki.key-protection",
        title="CA and leaf keys are protected on disk",
        severity=Severity.HIGH,
        rationale="Whoever reads an unencrypted CA key can mint certificates the whole site trusts.",
        remediation="Keep the store 0700 and keys 0600; re-create the CA with encrypted keys (no --no-encrypt); "
        "keep the root key on removable media (`edgesec pki init --offline-root DIR`).",
        controls=("pci-dss-4.0:3.6.1", "iec-62443-3-3:SR 1.9", "hipaa:164.312(a)(2)(iv)"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        skip = _no_ca(self, ctx)
        if skip:
            yield skip
            return
        site = _site(ctx)
        st = ctx.system.stat(site.store)
        if st is not None and st.perms & 0o077:
            yield self.failed(f"the CA store is mode {st.perms:o}, not 0700", resource=site.store,
                              evidence={"mode": f"{st.perms:o}"})  # fmt: skip
        for name in (DB_FILE, STATUS_FILE):
            fst = ctx.system.stat(f"{site.store}/{name}")
            if fst is not None and fst.perms & 0o077:
                yield self.failed(f"{name} (holds leaf keys) is mode {fst.perms:o}, not 0600",
                                  resource=f"{site.store}/{name}")  # fmt: skip
        keys = ctx.system.glob(f"{site.store}/{CA_DIR}/*.key")
        for k in keys:
            kst = ctx.system.stat(k)
            head = (ctx.system.read_text(k, 64) or "").strip()
            ev = {
                "mode": f"{kst.perms:o}" if kst else None,
                "encrypted": head.startswith("-----BEGIN ENCRYPTED"),
            }
            if kst is not None and kst.perms & 0o077:
                yield self.failed(
                    f"CA key {Path(k).name} is mode {kst.perms:o}, not 0600", resource=k, evidence=ev
                )
            elif not ev["encrypted"]:
                yield self.failed(f"CA key {Path(k).name} is stored unencrypted", resource=k, evidence=ev)
            else:
                yield self.passed(f"CA key {Path(k).name} is encrypted and 0600", resource=k, evidence=ev)
        if f"{site.store}/{CA_DIR}/{ROOT_KEY_FILE}" in keys:
            yield self.warned(
                "the root key is online in the CA store",
                resource=f"{site.store}/{CA_DIR}/{ROOT_KEY_FILE}",
                severity=Severity.LOW,
                remediation="move it to removable media kept offline; `rotate-intermediate --offline-root DIR` "
                "reads it from there when needed",
            )


_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


class WeakAlgorithms(Check):
    """No CA certificate uses a weak key or signature algorithm."""

    meta = CheckMeta(
        id="pki.weak-algorithms",
        title="The CA uses strong keys and signature algorithms",
        severity=Severity.HIGH,
        rationale="RSA below 2048 bits, SHA-1 or MD5 signatures and non-NIST curves are breakable or refused by "
        "current verifiers.",
        remediation="Create a new CA with `--key-type ec-p256` (or ec-p384, rsa-3072) and re-issue.",
        controls=("pci-dss-4.0:4.2.1", "mlps-2.0-l3:8.1.4.8"),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        skip = _no_ca(self, ctx)
        if skip:
            yield skip
            return
        site = _site(ctx)
        certs = {**_ca_certs(ctx, site.store)}
        for i, c in enumerate(_certs(ctx, f"{site.trust}/{INTERMEDIATES_FILE}")):
            certs.setdefault(f"bundle-intermediate-{i}", c)
        for name, cert in sorted(certs.items()):
            problems = _weakness(cert)
            res = f"{name}:{cert.subject.rfc4514_string()}"
            if problems:
                yield self.failed("; ".join(problems), resource=res)
            else:
                yield self.passed("strong key and signature", resource=res)
        status = _status(ctx, site)
        if status is not None:
            weak = [k for k in status.get("valid_key_types", [])
                    if k not in ("ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "rsa-4096")]  # fmt: skip
            if weak:
                yield self.failed(
                    f"valid leaf certificates with weak or unusual keys: {', '.join(weak)}",
                    resource=site.store,
                )


def _weakness(cert: x509.Certificate) -> list[str]:
    out = []
    h = cert.signature_hash_algorithm
    if h is None or isinstance(h, _WEAK_HASHES):
        out.append(f"signature hash {h.name if h else 'none'} is weak")
    try:
        key = cert.public_key()
    except ValueError:
        return [*out, "unreadable public key"]
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        out.append(f"RSA key of {key.key_size} bits")
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        out.append(f"curve {key.curve.name}")
    elif not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        out.append(f"key type {type(key).__name__}")
    return out


def _status(ctx: CheckContext, site: _Site) -> dict | None:  # type: ignore[type-arg]
    text = ctx.system.read_text(f"{site.store}/{STATUS_FILE}")
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class LeafExpiry(Check):
    """No current certificate is about to expire unnoticed."""

    meta = CheckMeta(
        id="pki.leaf-expiry",
        title="No issued certificate is about to expire",
        severity=Severity.MEDIUM,
        rationale="An expired server or client certificate takes a service or a user offline without warning.",
        remediation="Run `edgesec pki list --expiring 30`, then `edgesec pki renew NAME` and redeploy with "
        "`edgesec pki export NAME --pem DIR --replace`.",
        controls=("pci-dss-4.0:4.2.1.1",),
    )

    def run(self, ctx: CheckContext) -> Iterator[Finding]:
        skip = _no_ca(self, ctx)
        if skip:
            yield skip
            return
        site = _site(ctx)
        now = ctx.now()
        warn_days = float(ctx.param(self.meta.id, "warn_days", 30))
        status = _status(ctx, site)
        if status is None:
            yield self.warned("the store has no readable status.json; run `edgesec pki crl` to refresh it",
                              resource=f"{site.store}/{STATUS_FILE}")  # fmt: skip
            return
        written = dt.datetime.fromisoformat(status["written_at"])
        window = float(status.get("window_days", 120))
        if (now - written).days > window - warn_days:
            yield self.warned(f"the CA status was last refreshed on {written:%Y-%m-%d}; run `edgesec pki crl`",
                              resource=f"{site.store}/{STATUS_FILE}")  # fmt: skip
        soon = 0
        for e in status.get("expiring", []):
            na = dt.datetime.fromisoformat(e["not_after"])
            left = (na - now).total_seconds() / 86400
            res = f"{e['profile']}:{e['name']}"
            ev = {"serial": e["serial"], "not_after": e["not_after"], "days_left": round(left, 1)}
            if left <= 0:
                yield self.failed(f"{e['profile']} certificate {e['name']} expired on {na:%Y-%m-%d} and was not renewed",
                                  resource=res, evidence=ev)  # fmt: skip
                soon += 1
            elif left <= warn_days:
                yield self.warned(f"{e['profile']} certificate {e['name']} expires in {left:.0f} days",
                                  resource=res, evidence=ev)  # fmt: skip
                soon += 1
        if soon == 0:
            yield self.passed(f"no current certificate expires within {warn_days:.0f} days")


CHECKS: list[type[Check]] = [CaValidity, CrlFreshness, KeyProtection, WeakAlgorithms, LeafExpiry]
