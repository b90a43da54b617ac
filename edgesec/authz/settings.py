"""The ``[authz]`` section of ``edgesec.toml``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgesec.authz.headers import CERT_HEADER_DEFAULT, IDENTITY_DEFAULT


class HeaderNames(BaseModel):
    """Names of the identity headers authz answers with; the proxy generators read the same names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = IDENTITY_DEFAULT[0]
    roles: str = IDENTITY_DEFAULT[1]
    tenant: str = IDENTITY_DEFAULT[2]
    method: str = IDENTITY_DEFAULT[3]


class JwtSettings(BaseModel):
    """How bearer tokens are checked. Keys come from local files only; nothing is fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jwks_file: str | None = None
    public_key_files: list[str] = Field(default_factory=list)
    algorithms: list[str] = Field(default_factory=lambda: ["ES256", "RS256"])
    issuer: str | None = None
    audience: str | None = None
    leeway_s: int = Field(30, ge=0, le=600)
    typ: str | None = None
    cookie: str | None = None
    user_claim: str = "sub"
    tenant_claim: str | None = None
    max_token_bytes: int = Field(8192, ge=256, le=65536)


class AuthzSettings(BaseModel):
    """Settings of the ForwardAuth service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("tenant_hosts")
    @classmethod
    def _hosts_lower(cls, v: dict[str, str]) -> dict[str, str]:
        # Forwarded hosts are compared lower-case and without a trailing dot or port.
        out = {}
        for host, tenant in v.items():
            key = host.strip().lower().rstrip(".")
            if not key or ":" in key or "/" in key or " " in key:
                raise ValueError(f"tenant_hosts key {host!r} must be a bare host name")
            if not tenant:
                raise ValueError(f"tenant_hosts[{host!r}] is empty")
            out[key] = tenant
        return out

    @field_validator("identity_order")
    @classmethod
    def _order(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("identity_order must name cert and/or jwt, each once")
        return v

    host: str = "127.0.0.1"
    port: int = Field(9091, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=256)
    policy_dir: str | None = Field(
        None, description="the site's casbin model+policy directory (required by serve, lint, test, explain)"
    )
    identity_order: list[Literal["cert", "jwt"]] = Field(default_factory=lambda: ["cert", "jwt"])  # type: ignore[arg-type]
    cert_header: str = CERT_HEADER_DEFAULT
    cert_identity: Literal["cn", "san-email", "san-uri", "san-dns"] = "cn"
    crl_grace_hours: float | None = Field(
        None, ge=0, description="how long past nextUpdate a CRL still counts (default: [pki] crl_grace_hours)"
    )
    tenant_hosts: dict[str, str] = Field(default_factory=dict, description="host -> tenant")
    default_tenant: str | None = None
    allow_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    headers: HeaderNames = Field(default_factory=HeaderNames)
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    url: str | None = Field(None, description="where the running service is reachable (for /readyz checks)")
    break_glass_roles: list[str] = Field(
        default_factory=lambda: ["role:breakglass"],
        description="roles whose every allowed request is a high-severity audit event",
    )
    reload_interval_s: float = Field(
        1.0, gt=0, le=3600, description="how often policy and trust files are polled"
    )
    trust_dir: str | None = Field(
        None, description="trust bundle directory (default: pki.trust_bundle_dir, else <home>/trust)"
    )
