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
MIN_PASSPHRASE = 8

PassphraseSource = bytes | str | Callable[[], bytes | None] | None


def read_passphrase_file(path: str | os.PathLike[str], *, what: str = "passphrase file") -> bytes:
    data = read_input_file(Path(path), what=what, limit=4096)
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise InputError(f"{what} is empty: {path}")
    return line


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


def check_new_passphrase(p: bytes) -> bytes:
    if len(p) < MIN_PASSPHRASE:
        raise InputError(f"the CA passphrase must be at least {MIN_PASSPHRASE} characters")
    return p


def encryption_for(passphrase: bytes | None) -> serialization.KeySerializationEncryption:
    # BestAvailableEncryption writes PKCS#8 PBES2 (PBKDF2-SHA256, AES-256-CBC) with cryptography on OpenSSL 3.
    return serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()


def key_to_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, passphrase: bytes | None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption_for(passphrase)
    )


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
