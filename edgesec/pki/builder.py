"""Keys, names and the one x509 builder helper every certificate of the site goes through.

Every certificate edgesec issues is built by :func:`build_certificate`: criticality set explicitly per
RFC 5280, SKI on every certificate, AKI (keyid) on every certificate but a self-signed root, a serial
from :func:`x509.random_serial_number` (159 bits of CSPRNG output, positive, within 20 octets), and a
profile that decides basicConstraints, keyUsage and extendedKeyUsage.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgesec.errors import InputError

# Backdate notBefore a little so a client whose clock runs slightly behind still accepts a fresh cert.
BACKDATE = dt.timedelta(minutes=5)

KeyType = Literal["ec-p256", "ec-p384", "rsa-3072", "rsa-4096"]
KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p384", "rsa-3072", "rsa-4096")
Profile = Literal["server", "client", "signing"]
PROFILES: tuple[Profile, ...] = ("server", "client", "signing")
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

PURPOSE_EKU: dict[str, x509.ObjectIdentifier] = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "signing": ExtendedKeyUsageOID.CODE_SIGNING,
}

# Curves and RSA sizes we accept in a CSR; anything else is weak or unsupported by the verifiers we serve.
_ALLOWED_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
MIN_RSA_BITS = 2048


def generate_key(key_type: str) -> PrivateKey:
    """A fresh private key of ``key_type``."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise InputError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """The hash a CA key signs with: SHA-384 for P-384 and RSA-4096 keys (matching strength), else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    return hashes.SHA384() if key.key_size >= 4096 else hashes.SHA256()


def describe_key(key: object) -> str:
    """``ec-p256``, ``rsa-3072``... or the class name of anything else."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}.get(
            key.curve.name, f"ec-{key.curve.name}"
        )
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    return type(key).__name__


def check_public_key(key: object) -> PublicKey:
    """Refuse weak or unsupported public keys (from a CSR); return the key typed."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InputError(f"weak key: RSA {key.key_size} bits (at least {MIN_RSA_BITS} required)")
        if key.public_numbers().e != 65537:
            raise InputError("unsupported RSA public exponent (65537 required)")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _ALLOWED_CURVES:
            raise InputError(f"weak or unsupported curve {key.curve.name} (P-256, P-384 or P-521 required)")
        return key
    raise InputError(
        f"unsupported key type {type(key).__name__} (EC P-256/P-384/P-521 or RSA >= 2048 required)"
    )


# --- names -----------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
# Roles live in their own namespace (``role:admin`` in the policy): no certificate identity may use it.
ROLE_PREFIX = "role:"
# A URI SAN: https://host[:port]/path, the form pkilint's PKIX linter accepts (it refuses spiffe: and urn:).
_URI_HTTPS_RE = re.compile(
    r"^https://(?P<host>[A-Za-z0-9.-]{1,253})(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?$"
)
MAX_URI = 512

# Which SAN types each profile certifies, and how many (the README's profiles): a server is named by DNS
# names and addresses; a client by its CN plus at most one email and one URI; a signer by its CN alone.
PROFILE_SANS: dict[str, dict[str, int]] = {
    "server": {"dns": 100, "ip": 100},
    "client": {"email": 1, "uri": 1},
    "signing": {},
}
MAX_SERVER_SANS = 100


def _shown(value: object, limit: int = 48) -> str:
    """A value for an error line: repr, cut to ``limit`` characters (a 2 kB CN is not echoed whole)."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[: limit - 1]}… ({len(str(value))} characters)"


_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
_URI_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[!-~]+$")


def check_name(name: str) -> str:
    """A certificate's inventory name (also its CN): 1-64 of ``A-Za-z0-9._@+-``, starting alphanumeric."""
    if isinstance(name, str) and name.lower().startswith(ROLE_PREFIX):
        raise InputError(
            f"certificate name {_shown(name)} is in the role namespace ({ROLE_PREFIX}...)",
            hint="roles are granted by the policy, never by a certificate; name the user or host instead",
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(
            f"invalid certificate name {_shown(name)}",
            hint="use 1-64 characters of letters, digits and . _ @ + -, starting with a letter or digit",
        )
    return name


def check_dns_name(value: str, *, allow_wildcard: bool = False) -> str:
    """A DNS SAN in canonical form (lower case, no trailing dot). IDNs must be given as punycode.

    Wildcards are refused by default: RFC 5280 does not define them (pkilint's PKIX linter flags them), and
    a site CA knows every host name it certifies.
    """
    v = value.strip().rstrip(".").lower() if isinstance(value, str) else ""
    if not v or len(v) > 253:
        raise InputError(f"invalid DNS name {value!r}")
    labels = v.split(".")
    if labels[0] == "*" and not allow_wildcard:
        raise InputError(
            f"wildcard DNS name {value!r} is not allowed", hint="list each host name as its own SAN"
        )
    if allow_wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    for label in labels:
        if not _LABEL_RE.match(label):
            raise InputError(
                f"invalid DNS name {value!r}",
                hint="letters, digits and hyphens per label; IDNs as xn-- punycode",
            )
    if labels[-1].isdigit():
        raise InputError(f"invalid DNS name {value!r} (an IP address belongs in IP:)")
    return v


def check_email(value: str) -> str:
    """An rfc822Name SAN: ASCII ``local@domain``."""
    if not isinstance(value, str) or value.count("@") != 1:
        raise InputError(f"invalid email address {value!r}")
    local, domain = value.split("@")
    if not _EMAIL_LOCAL_RE.match(local) or ".." in local or local.startswith(".") or local.endswith("."):
        raise InputError(f"invalid email address {value!r}")
    try:
        domain = check_dns_name(domain, allow_wildcard=False)
    except InputError:
        raise InputError(f"invalid email address {value!r}") from None
    return f"{local}@{domain}"


def check_uri(value: str) -> str:
    """A URI SAN: ``https://host[:port]/path`` with a valid DNS host -- the form pkilint's PKIX linter
    accepts, so every certificate lints clean. Anything in the role namespace is refused."""
    if isinstance(value, str) and value.lower().startswith(ROLE_PREFIX):
        raise InputError(
            f"URI {_shown(value)} is in the role namespace ({ROLE_PREFIX}...)",
            hint="roles are granted by the policy, never by a certificate",
        )
    m = _URI_HTTPS_RE.match(value) if isinstance(value, str) and len(value) <= MAX_URI else None
    if m is not None:
        try:
            check_dns_name(m.group("host"))
        except InputError:
            m = None
    if m is None or (m.group("port") and not 0 < int(m.group("port")) < 65536):
        hint = "give an https URI such as https://bank.local/users/alice"
        if isinstance(value, str) and _URI_RE.match(value) and not value.lower().startswith("https://"):
            hint += (
                " (spiffe:, urn: and other schemes fail the PKIX lint this CA is held to: "
                "pkilint's invalid_uri_syntax)"
            )
        raise InputError(f"invalid or unsupported URI {_shown(value)}", hint=hint)
    return value


def check_profile_sans(profile: str, sans: SubjectAltNames) -> None:
    """Only the SAN types ``profile`` defines, within its count limits; one line naming what is refused."""
    allowed = PROFILE_SANS.get(profile, {})
    counts = {"dns": len(sans.dns), "ip": len(sans.ips), "email": len(sans.emails), "uri": len(sans.uris)}
    label = {"dns": "DNS", "ip": "IP", "email": "email", "uri": "URI"}
    for kind, n in counts.items():
        if n and kind not in allowed:
            what = ", ".join(label[k] for k in allowed) or "none"
            raise InputError(
                f"a {profile} certificate carries no {label[kind]} SAN (allowed: {what})",
                hint="the profile decides the names; use the profile that fits the identity",
            )
        if n > allowed.get(kind, 0):
            raise InputError(
                f"{n} {label[kind]} SANs: a {profile} certificate carries at most {allowed[kind]}"
            )
    if profile == "server" and counts["dns"] + counts["ip"] > MAX_SERVER_SANS:
        raise InputError(f"a server certificate carries at most {MAX_SERVER_SANS} SANs")


@dataclass(frozen=True)
class SubjectAltNames:
    """The SANs of one certificate, validated and canonical."""

    dns: tuple[str, ...] = ()
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    emails: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dns or self.ips or self.emails or self.uris)

    def general_names(self) -> list[x509.GeneralName]:
        out: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        out += [x509.IPAddress(i) for i in self.ips]
        out += [_rfc822(e) for e in self.emails]
        out += [x509.UniformResourceIdentifier(u) for u in self.uris]
        return out

    def as_strings(self) -> list[str]:
        return (
            [f"DNS:{d}" for d in self.dns]
            + [f"IP:{i}" for i in self.ips]
            + [f"email:{e}" for e in self.emails]
            + [f"URI:{u}" for u in self.uris]
        )

    @classmethod
    def parse(cls, items: Sequence[str]) -> SubjectAltNames:
        """Parse ``DNS:a.example,IP:10.0.0.1`` style items (each item may hold a comma-separated list)."""
        dns: list[str] = []
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        emails: list[str] = []
        uris: list[str] = []
        for item in items:
            for raw in _split_sans(item):
                kind, sep, value = raw.partition(":")
                k = kind.strip().upper()
                if not sep or not value:
                    raise InputError(
                        f"invalid SAN {raw!r}", hint="write DNS:name, IP:addr, email:addr or URI:uri"
                    )
                if k == "DNS":
                    dns.append(check_dns_name(value))
                elif k == "IP":
                    try:
                        ips.append(ipaddress.ip_address(value.strip()))
                    except ValueError:
                        raise InputError(f"invalid IP address in SAN {raw!r}") from None
                elif k in ("EMAIL", "RFC822"):
                    emails.append(check_email(value.strip()))
                elif k == "URI":
                    uris.append(check_uri(value.strip()))
                else:
                    raise InputError(f"unknown SAN type {kind!r}", hint="use DNS:, IP:, email: or URI:")
        return cls(
            tuple(dict.fromkeys(dns)),
            tuple(dict.fromkeys(ips)),
            tuple(dict.fromkeys(emails)),
            tuple(dict.fromkeys(uris)),
        )

    @classmethod
    def from_extension(cls, ext: x509.SubjectAlternativeName) -> SubjectAltNames:
        """SANs read from a certificate or CSR, validated like typed ones (other name types are refused)."""
        items: list[str] = []
        for gn in ext:
            if isinstance(gn, x509.DNSName):
                items.append(f"DNS:{gn.value}")
            elif isinstance(gn, x509.IPAddress):
                if not isinstance(gn.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                    raise InputError("IP network in a SAN is not allowed")
                items.append(f"IP:{gn.value}")
            elif isinstance(gn, x509.RFC822Name):
                items.append(f"email:{gn.value}")
            elif isinstance(gn, x509.UniformResourceIdentifier):
                items.append(f"URI:{gn.value}")
            else:
                raise InputError(f"unsupported SAN type {type(gn).__name__}")
        return cls.parse(items)


def _rfc822(value: str) -> x509.RFC822Name:
    # check_email() has already validated the address (ASCII local@domain); the library's own check goes
    # through email.utils.parseaddr at ~30 us a name, a tenth of a batch issuance, so skip it when we can.
    fast = getattr(x509.RFC822Name, "_init_without_validation", None)
    return fast(value) if fast is not None else x509.RFC822Name(value)  # type: ignore[no-any-return]


def _split_sans(item: str) -> list[str]:
    return [p.strip() for p in item.split(",") if p.strip()]


# --- name constraints ----------------------------------------------------------------------------------


def cn_as_dns_name(cn: str) -> str | None:
    """The CN as OpenSSL reads it under DNS name constraints (``cn2dnsid`` in ``crypto/x509/v3_ncons.c``):
    a host name when it is letters, digits, ``_``, inner ``-`` and at least one inner ``.`` not next to
    another ``.`` or a ``-``; otherwise None (``Alice Smith``, ``teller-one`` are no host names)."""
    is_dns = False
    n = len(cn)
    for i, c in enumerate(cn):
        if c.isascii() and (c.isalnum() or c == "_"):
            continue
        if 0 < i < n - 1:
            if c == "-":
                continue
            if c == "." and cn[i + 1] != "." and cn[i - 1] != "-" and cn[i + 1] != "-":
                is_dns = True
                continue
        return None
    return cn if is_dns else None


def dns_within(name: str, base: str) -> bool:
    """OpenSSL's ``nc_dns``: ``base`` matches itself and any name with more labels on the left."""
    name, base = name.lower(), base.lower()
    if not base:
        return True
    if len(name) > len(base):
        if not base.startswith(".") and name[len(name) - len(base) - 1] != ".":
            return False
        name = name[len(name) - len(base) :]
    return name == base


@dataclass(frozen=True)
class NameConstraints:
    """Permitted DNS suffixes and IP networks the intermediate may certify (empty: unconstrained)."""

    dns: tuple[str, ...] = ()
    ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dns or self.ips)

    @classmethod
    def parse(cls, dns: Sequence[str], ips: Sequence[str]) -> NameConstraints:
        d = tuple(dict.fromkeys(check_dns_name(s.lstrip("."), allow_wildcard=False) for s in dns))
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for s in ips:
            try:
                nets.append(ipaddress.ip_network(s.strip(), strict=True))
            except ValueError as exc:
                raise InputError(f"invalid --permit-ip network {s!r}: {exc}") from None
        return cls(d, tuple(dict.fromkeys(nets)))

    def to_json(self) -> dict[str, list[str]]:
        return {"dns": list(self.dns), "ip": [str(n) for n in self.ips]}

    @classmethod
    def from_json(cls, d: dict[str, list[str]]) -> NameConstraints:
        return cls.parse(d.get("dns", []), d.get("ip", []))

    def extension(self) -> x509.NameConstraints:
        permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        permitted += [x509.IPAddress(n) for n in self.ips]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)

    def check(self, sans: SubjectAltNames, common_name: str | None = None) -> None:
        """Refuse names the intermediate's name constraints would make verifiers reject: DNS and IP SANs,
        and, without a DNS SAN, a CN that reads as a host name (OpenSSL and nginx hold it to the DNS
        constraints; so does edgesec's verifier). The matching is :func:`dns_within`, the verifier's."""
        if self.dns:
            for name in sans.dns:
                bare = name[2:] if name.startswith("*.") else name
                if not any(dns_within(bare, s) for s in self.dns):
                    raise InputError(
                        f"DNS name {name} is outside the CA's name constraints ({', '.join(self.dns)})"
                    )
            host = cn_as_dns_name(common_name) if common_name and not sans.dns else None
            if host and not any(dns_within(host, s) for s in self.dns):
                raise InputError(
                    f"the name {common_name!r} reads as a host name, outside the CA's name constraints "
                    f"({', '.join(self.dns)}): OpenSSL, nginx and edgesec would refuse the certificate",
                    hint="choose a name without dots (e.g. teller-one), or one inside the permitted names",
                )
        if self.ips:
            for ip in sans.ips:
                if not any(ip.version == n.version and ip in n for n in self.ips):
                    raise InputError(
                        f"IP address {ip} is outside the CA's name constraints "
                        f"({', '.join(str(n) for n in self.ips)})"
                    )


# --- the builder ---------------------------------------------------------------------------------------


def subject_name(common_name: str, org: str, site: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if site:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


CertKind = Literal["root", "intermediate", "server", "client", "signing"]


def build_certificate(
    *,
    kind: CertKind,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    sans: SubjectAltNames | None = None,
    constraints: NameConstraints | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Build and sign one certificate of ``kind``; the only place extensions are chosen."""
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    # SKI on every certificate: RFC 5280 requires it on CAs and recommends it on leaves; path building
    # in every verifier we serve (OpenSSL, cryptography, Go) matches AKI against it.
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if kind != "root":
        # AKI keyid on everything the root did not sign itself (cryptography's verifier requires it on leaves).
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    if kind in ("root", "intermediate"):
        # basicConstraints critical on CAs; the root may sign one more CA level (the intermediate), the
        # intermediate none.
        b = b.add_extension(
            x509.BasicConstraints(ca=True, path_length=1 if kind == "root" else 0), critical=True
        )
        # CA keys sign certificates and CRLs, nothing else.
        b = b.add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        # No EKU on either CA: an EKU on a CA constrains every certificate below it in cryptography and
        # browsers, and the site's leaves need serverAuth, clientAuth and codeSigning.
        if kind == "intermediate" and constraints:
            # RFC 5280: name constraints MUST be critical.
            b = b.add_extension(constraints.extension(), critical=True)
    else:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if kind == "server" and is_rsa:
            # RSA key exchange in TLS 1.2 needs keyEncipherment; ECDHE signs only.
            ku = _key_usage(digital_signature=True, key_encipherment=True)
        else:
            # digitalSignature: TLS handshake signatures and manifest signatures.
            ku = _key_usage(digital_signature=True)
        b = b.add_extension(ku, critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([PURPOSE_EKU[kind]]), critical=False)
    if sans:
        # Non-critical: every leaf keeps a non-empty subject (CN + O).
        b = b.add_extension(x509.SubjectAlternativeName(sans.general_names()), critical=False)
    return b.sign(issuer_key, signature_hash(issuer_key))


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def cert_sans(cert: x509.Certificate) -> SubjectAltNames:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    return SubjectAltNames.from_extension(ext)


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    v = attrs[0].value if attrs else ""
    return v if isinstance(v, str) else v.decode("utf-8", "replace")
