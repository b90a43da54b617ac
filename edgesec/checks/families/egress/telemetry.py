"""``egress.telemetry``: telemetry and hub switches of running model servers."""

from __future__ import annotations

from collections.abc import Iterator

from edgesec.checks.families.egress._base import (
    ENVIRON_LIMIT,
    EgressCheck,
)
from edgesec.checks.interface import CheckContext, CheckMeta, Finding, Severity

# name pattern of the process -> switches that must be set, as (variable, accepted values)
_SERVERS: dict[str, tuple[str, ...]] = {
    "vllm": ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE"),
    "text-generation": ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "sglang": ("HF_HUB_OFFLINE", "DO_NOT_TRACK"),
    "tritonserver": ("HF_HUB_OFFLINE",),
    "trtllm-serve": ("HF_HUB_OFFLINE", "DO_NOT_TRACK"),
    "llama-server": (),
    "ollama": (),
    "gradio": ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE"),
    "transformers": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "huggingface": ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "dify": ("HF_HUB_OFFLINE",),
}
_ON = {"1", "true", "yes", "on"}
_SWITCH_OK: dict[str, set[str]] = {
    "HF_HUB_OFFLINE": _ON,
    "TRANSFORMERS_OFFLINE": _ON,
    "HF_HUB_DISABLE_TELEMETRY": _ON,
    "DO_NOT_TRACK": _ON,
    "VLLM_NO_USAGE_STATS": _ON,
    "GRADIO_ANALYTICS_ENABLED": {"0", "false", "no", "off"},
}


class Telemetry(EgressCheck):
    """Telemetry and hub switches of running model servers."""

    meta = CheckMeta(
        id="egress.telemetry",
        title="Model servers run with telemetry and hub access switched off",
        severity=Severity.MEDIUM,
        rationale="Model servers and hub libraries phone home (usage statistics, model downloads, update "
        "checks) unless told not to; on a sealed site that is a failed connection at best and a leak at worst.",
        remediation="Set the listed variables in the service's unit or container environment "
        "(e.g. HF_HUB_OFFLINE=1, DO_NOT_TRACK=1, VLLM_NO_USAGE_STATS=1) and restart it.",
        controls=("pci-dss-4.0:1.3.2", "mlps-2.0-l3:8.1.3.1"),
    )

    def evaluate(self, ctx: CheckContext) -> Iterator[Finding]:
        servers = dict(_SERVERS)
        servers.update({k: tuple(v) for k, v in ctx.param(self.meta.id, "servers", {}).items()})
        seen = 0
        unreadable = 0
        for cmd_path in ctx.system.glob("/proc/[0-9]*/cmdline"):
            pid = cmd_path.split("/")[2]
            raw_cmd = ctx.system.read_text(cmd_path, 1 << 14)
            if raw_cmd is None:
                unreadable += ctx.system.stat(f"/proc/{pid}") is not None  # gone since the listing is fine
                continue
            cmdline = raw_cmd.replace("\0", " ").strip()
            if not cmdline or "edgesec" in cmdline:
                continue
            exe = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1]
            first_args = " ".join(cmdline.split()[:4])
            match = next((n for n in servers if n in exe or n in first_args), None)
            if match is None:
                continue
            seen += 1
            raw = ctx.system.read_text(f"/proc/{pid}/environ", ENVIRON_LIMIT)
            if raw is None:
                yield self.warned(
                    f"model server {exe} (pid {pid}): its environment is not readable",
                    resource=f"pid {pid} ({exe})",
                )
                continue
            env = dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)
            missing = [
                s for s in servers[match] if env.get(s, "").strip().lower() not in _SWITCH_OK.get(s, _ON)
            ]
            ev = {
                "pid": int(pid),
                "cmdline": cmdline[:300],
                "server": match,
                "required": list(servers[match]),
                "set": {s: env.get(s) for s in servers[match]},
            }
            if missing:
                yield self.failed(
                    f"model server {match} (pid {pid}) runs without {', '.join(missing)}",
                    resource=f"pid {pid} ({match})",
                    evidence=ev,
                )
            else:
                yield self.passed(
                    f"model server {match} (pid {pid}) has its telemetry switches set",
                    resource=f"pid {pid} ({match})",
                    evidence=ev,
                )
        if unreadable:
            yield self.warned(
                f"the command line of {unreadable} running processes could not be read: a model server among "
                "them would be unseen",
                evidence={"stats": {"processes_unreadable": unreadable}},
            )
        elif not seen:
            yield self.skipped(
                "no running model server recognised (vLLM, TGI, SGLang, Triton, TensorRT-LLM, llama.cpp, Ollama)"
            )
