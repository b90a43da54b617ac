"""The ``[pki]`` section of ``edgesec.toml``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

KeyType = Literal["ec-p256", "ec-p384", "rsa-3072", "rsa-4096"]


class PkiSettings(BaseModel):
    """Settings of the offline CA. Paths default to locations under the edgesec home."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_dir: str | None = Field(None, description="CA store directory (default: <home>/pki)")
    key_type: KeyType = Field("ec-p256", description="key type for new CA and leaf keys")
    root_days: int = Field(3650, ge=1, le=36500, description="root certificate lifetime")
    intermediate_days: int = Field(1825, ge=1, le=36500, description="intermediate certificate lifetime")
    server_days: int = Field(397, ge=1, le=3650, description="server certificate lifetime")
    client_days: int = Field(365, ge=1, le=3650, description="client certificate lifetime")
    signing_days: int = Field(730, ge=1, le=3650, description="signing certificate lifetime")
    crl_days: int = Field(7, ge=1, le=365, description="CRL nextUpdate, days after thisUpdate")
    root_crl_days: int = Field(
        365, ge=1, le=3650, description="the root's CRL nextUpdate (re-signed with the root key at rotation)"
    )
    crl_grace_hours: int = Field(
        24, ge=0, le=720, description="how long past nextUpdate a CRL is still accepted by verify"
    )
    trust_bundle_dir: str | None = Field(
        None,
        description="where the public trust bundle (CA certs + CRL) is published (default: <home>/trust)",
    )
    reload_hooks: list[str] = Field(
        default_factory=list, description="commands run after the trust bundle changes (e.g. nginx -s reload)"
    )
    passphrase_file: str | None = Field(None, description="file holding the CA key passphrase (root-only)")
