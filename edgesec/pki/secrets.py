"""Where the CA key passphrase comes from, and how keys are encrypted at rest.

Order, first that gives a value wins:

1. an explicit passphrase (API) or ``--passphrase-file F`` (CLI);
2. ``$EDGESEC_CA_PASSPHRASE``;
3. systemd credentials: ``$CREDENTIALS_DIRECTORY/edgesec-ca-passphrase`` (``LoadCredential=`` in the unit,
   so a timer renewing the CRL never sees the passphrase in its environment or on a command line);
4. ``[pki] passphrase_file`` in the site config (a root-only file);
5. an interactive prompt, only when stdin is a terminal.

A passphrase file holds the passphrase on its first line; a trailing newline is not part of it.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edgesec._fs import read_input_file
from edgesec.errors import InputError, VerificationError

CREDENTIAL_NAME = "edgesec-ca-passphrase"
ENV_PASSPHRASE = "EDGESEC_CA_PASSPHRASE"  # noqa: S105 - the name of the variable, not a secret
# The offline root's own passphrase: never read from the site config, so the CRL job never holds it.
ROOT_CREDENTIAL_NAME = "edgesec-ca-root-passphrase"
ENV_ROOT_PASSPHRASE = "EDGESEC_CA_ROOT_PASSPHRASE"  # noqa: S105 - a variable name
MIN_PASSPHRASE = 8

PassphraseSource = bytes | str | Callable[[], bytes | None] | None


def read_passphrase_file(path: str | os.PathLike[str], *, what: str = "passphrase file") -> bytes:
    """The passphrase on the file's first line. Refused unless the file is owned by the running user (or
    root) and neither readable nor writable by group or others: a secret others can read is not one, and
    one others can write chooses the key's protection for them."""
    data = read_input_file(Path(path), what=what, limit=4096)
    check_secret_file(Path(path), what=what)
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise InputError(f"{what} is empty: {path}")
    return line


def check_secret_file(path: Path, *, what: str) -> None:
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(f"cannot stat {what} {path}: {exc.strerror or exc}") from None
    if st.st_uid not in (os.geteuid(), 0):
        raise InputError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this user or root",
            hint=f"chown it to the user that runs edgesec and chmod 600 {path}",
        )
    if st.st_mode & 0o077:
        raise InputError(
            f"{what} {path} is accessible to group or others (mode {st.st_mode & 0o777:o})",
            hint=f"chmod 600 {path}",
        )


def resolve_passphrase(
    explicit: bytes | str | None = None,
    *,
    passphrase_file: str | None = None,
    config_file: str | None = None,
    prompt: str = "CA key passphrase: ",
    confirm: bool = False,
) -> bytes | None:
    """The passphrase per the order in the module docstring, or None when no source has one."""
    if explicit is not None:
        return explicit.encode() if isinstance(explicit, str) else explicit
    if passphrase_file:
        return read_passphrase_file(passphrase_file)
    env = os.environ.get(ENV_PASSPHRASE)
    if env:
        return env.encode()
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
        return read_passphrase_file(Path(creds) / CREDENTIAL_NAME, what="systemd credential")
    if config_file:
        return read_passphrase_file(config_file, what="[pki] passphrase_file")
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != first:
            raise InputError("the passphrases do not match")
        return first.encode() if first else None
    return None


def resolve_root_passphrase(
    *, passphrase_file: str | None = None, prompt: str | None = None, confirm: bool = False
) -> bytes | None:
    """The root key's own passphrase: ``--root-passphrase-file``, ``$EDGESEC_CA_ROOT_PASSPHRASE``, systemd
    credential ``edgesec-ca-root-passphrase``, or (with ``prompt``) a prompt on a terminal -- never the site
    config, never the intermediate's sources. None when none has one."""
    if passphrase_file:
        return read_passphrase_file(passphrase_file, what="root passphrase file")
    env = os.environ.get(ENV_ROOT_PASSPHRASE)
    if env:
        return env.encode()
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / ROOT_CREDENTIAL_NAME).is_file():
        return read_passphrase_file(Path(creds) / ROOT_CREDENTIAL_NAME, what="systemd credential")
    if prompt and sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != first:
            raise InputError("the passphrases do not match")
        return first.encode() if first else None
    return None


def check_new_passphrase(p: bytes) -> bytes:
    if len(p) < MIN_PASSPHRASE:
        raise InputError(f"the CA passphrase must be at least {MIN_PASSPHRASE} characters")
    return p


# PKCS#8 key encryption: PBES2 with PBKDF2-HMAC-SHA256 at this many iterations (OWASP 2023: >= 600,000) and
# AES-256-CBC. The library's BestAvailableEncryption uses 2,048 iterations and offers no way to raise them,
# so the EncryptedPrivateKeyInfo is written here (RFC 8018 A.4 / RFC 5958); OpenSSL and the library read it.
PBKDF2_ITERATIONS = 600_000
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_HMAC_SHA256 = "1.2.840.113549.2.9"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + body


def _der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for v in parts[2:]:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _der_int(v: int) -> bytes:
    return _der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def encrypt_pkcs8(der: bytes, passphrase: bytes, *, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """An EncryptedPrivateKeyInfo (DER) of the PKCS#8 ``der``: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC."""
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations).derive(
        passphrase
    )
    padder = padding.PKCS7(128).padder()
    plain = padder.update(der) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(plain) + enc.finalize()
    prf = _der(0x30, _der_oid(_OID_HMAC_SHA256) + b"\x05\x00")
    kdf = _der(0x30, _der_oid(_OID_PBKDF2) + _der(0x30, _der(0x04, salt) + _der_int(iterations) + prf))
    scheme = _der(0x30, _der_oid(_OID_AES256_CBC) + _der(0x04, iv))
    alg = _der(0x30, _der_oid(_OID_PBES2) + _der(0x30, kdf + scheme))
    return _der(0x30, alg + _der(0x04, ct))


def key_to_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, passphrase: bytes | None) -> bytes:
    """PKCS#8 PEM: encrypted (:func:`encrypt_pkcs8`) when a passphrase is given, else in clear."""
    if not passphrase:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    import base64
    import textwrap

    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    b64 = base64.b64encode(encrypt_pkcs8(der, passphrase)).decode("ascii")
    body = "\n".join(textwrap.wrap(b64, 64))
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----\n".encode()


def is_encrypted_pem(pem: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem


def load_key_pem(
    pem: bytes, passphrase: bytes | None, *, what: str
) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """Load a private key; one clear line for a wrong or missing passphrase or a corrupt key."""
    encrypted = is_encrypted_pem(pem)
    if encrypted and not passphrase:
        raise InputError(
            f"{what} is encrypted and no passphrase was given",
            hint=f"use --passphrase-file, ${ENV_PASSPHRASE} or systemd credential {CREDENTIAL_NAME}",
        )
    try:
        key = serialization.load_pem_private_key(pem, passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted and ("decrypt" in str(exc).lower() or "password" in str(exc).lower()):
            raise VerificationError(f"wrong passphrase for {what}") from None
        raise InputError(f"{what} is corrupt or not a private key") from None
    except TypeError:
        raise InputError(f"{what} is corrupt or not a private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InputError(f"{what} holds an unsupported key type {type(key).__name__}")
    return key
