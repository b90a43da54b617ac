"""The ``[checks]``, ``[gpu]`` and ``[models]`` sections of ``edgesec.toml``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class ProbeTarget(BaseModel):
    """A host:port the opt-in active egress probe tries; it must be blocked on a locked-down site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(443, ge=1, le=65535)
    protocol: str = Field("tcp", pattern="^(tcp|dns)$")


class ChecksSettings(BaseModel):
    """Settings of the check runner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = "baseline"
    fail_on: str = Field("high", pattern="^(info|low|medium|high|critical)$")
    waivers_file: str | None = None
    check_timeout_s: float = Field(20.0, gt=0, le=3600)
    workers: int = Field(8, ge=1, le=64)
    history_keep: int = Field(400, ge=1)
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDRs outbound peers may be in (loopback always allowed)"
    )
    probe_targets: list[ProbeTarget] = Field(default_factory=list, description="opt-in active egress probe")
    probe_timeout_s: float = Field(2.0, gt=0, le=30)
    lang: str = Field("en", pattern="^(en|zh-CN)$")
    schedule_on_calendar: str = Field(
        "*-*-* 02:30:00", description="systemd OnCalendar= of the nightly audit"
    )
    schedule_cron: str = Field("30 2 * * *", description="cron time fields of the nightly audit")
    prom_textfile: str | None = Field(None, description="Prometheus textfile the scheduled audit writes")


class GpuAssignment(BaseModel):
    """Which service (by executable, user or systemd unit) may use which GPU or MIG instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    gpus: list[str] = Field(default_factory=list, description="GPU indexes, UUIDs or MIG UUIDs")
    user: str | None = None
    executable: str | None = None
    unit: str | None = None


class GpuSettings(BaseModel):
    """Settings of the gpu checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    assignments: list[GpuAssignment] = Field(default_factory=list)
    dcgm_exporter_url: str | None = Field(None, description="loopback URL of a DCGM exporter, if any")
    require_mig: bool | None = Field(None, description="default: from the profile")
    python_envs: list[str] = Field(
        default_factory=list, description="extra site-packages dirs to search for CUDA wheels and torch"
    )


class ModelsSettings(BaseModel):
    """Settings of model integrity checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dirs: list[str] = Field(default_factory=list, description="model directories that must verify and scan")
    ignore: list[str] = Field(
        default_factory=list, description="glob patterns of unsigned paths tolerated when verifying"
    )
    follow_symlinks: bool = False
    allowed_formats: list[str] = Field(default_factory=lambda: ["safetensors", "gguf", "onnx"])
    unknown_format_severity: Literal["low", "medium", "high", "critical"] = Field(
        "high", description="severity of a model file whose format scan cannot identify"
    )
    pins: dict[str, Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=dict,
        description="model directory -> the sha256 manifest digest it must carry (a rollback is refused)",
    )
