"""``edgesec config init|show|check``: write the site config; the effective config and each value's source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgesec._console import result, state
from edgesec._fs import atomic_write
from edgesec.config import SYSTEM_CONFIG, flatten, parse_config
from edgesec.errors import AlreadyExists, InputError

config_app = typer.Typer(help="Show and check the site config (edgesec.toml).", no_args_is_help=True)


def _effective() -> dict[str, Any]:
    cfg = state().config()
    values = flatten(cfg.settings)
    rows = [{"key": k, "value": v, "source": cfg.source_of(k)} for k, v in values.items()]
    return {
        "config_file": str(cfg.path) if cfg.path else None,
        "home": str(cfg.home),
        "home_source": cfg.home_source,
        "values": rows,
    }


def _render(doc: dict[str, Any], title: str) -> Any:
    def human(con: Console) -> None:
        con.print(f"{title}: {doc['config_file'] or 'none found, using built-in defaults'}", markup=False)
        con.print(f"home: {doc['home']}  (from {doc['home_source']})", markup=False)
        table = Table("key", "value", "source", show_lines=False)
        for row in doc["values"]:
            table.add_row(row["key"], repr(row["value"]), row["source"])
        con.print(table)

    return human


@config_app.command("show")
def show() -> None:
    """Print every effective setting with its source (file:line or default)."""
    doc = _effective()
    result(doc, _render(doc, "config file"))


@config_app.command("check")
def check() -> None:
    """Validate the config; exit 2 with one line naming file, line and key if it is invalid."""
    doc = _effective()
    doc["valid"] = True
    result(doc, _render(doc, "config OK"))


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    return json.dumps(value, ensure_ascii=False)


def render_site_config(
    *,
    site: str,
    org: str,
    profile: str,
    policy_dir: Path,
    authz_url: str,
    models: list[Path],
    checkpoint_signer: str | None,
    syslog: str,
) -> str:
    """The ``edgesec.toml`` that ``config init`` writes: every path the later go-live steps read."""
    lines = [
        "# edgesec site config, written by `edgesec config init`; `edgesec config show` lists every key.",
        "[site]",
        f"name = {_toml_str(site)}",
        f"org = {_toml_str(org)}",
        f"profile = {_toml_str(profile)}",
        "",
        "[authz]",
        "# The site policy (`edgesec authz policy init` this directory); serve, lint and test read it.",
        f"policy_dir = {_toml_str(str(policy_dir))}",
        "# Where the replicas are reached (the internal load balancer); the audit asks its /readyz.",
        f"url = {_toml_str(authz_url)}",
        "",
        "[auditing]",
        f"syslog = {_toml_str(syslog)}",
    ]
    if checkpoint_signer:
        lines += [
            "# Signs the hourly trail checkpoint (`edgesec pki issue signing NAME`).",
            f"checkpoint_signer = {_toml_str(checkpoint_signer)}",
        ]
    lines += ["", "[models]", "# Directories that must verify against their signature and scan clean."]
    lines.append("dirs = [" + ", ".join(_toml_str(str(m)) for m in models) + "]")
    return "\n".join(lines) + "\n"


@config_app.command("init")
def init(
    site: Annotated[str, typer.Option("--site", help="site name ([site] name), e.g. branch-042")],
    org: Annotated[str, typer.Option("--org", help="organisation ([site] org)")],
    profile: Annotated[str, typer.Option("--profile", help="baseline, bank, clinic or factory")] = "baseline",
    policy_dir: Annotated[Path, typer.Option("--policy-dir", help="the site policy directory")] = Path(
        "/etc/edgesec/policy"
    ),
    authz_url: Annotated[
        str, typer.Option("--authz-url", help="the replicas' load balancer")
    ] = "http://127.0.0.1:9100",
    model: Annotated[
        list[Path] | None, typer.Option("--model", help="a model directory (repeat for several)")
    ] = None,
    checkpoint_signer: Annotated[
        str | None, typer.Option("--checkpoint-signer", help="signing certificate name for checkpoints")
    ] = None,
    syslog: Annotated[
        str, typer.Option("--syslog", help="trail records to syslog-ng: off, unix, tcp or tls")
    ] = "off",
    out: Annotated[Path, typer.Option("--out", help="where to write it (never overwritten)")] = SYSTEM_CONFIG,
) -> None:
    """Write the site config (default /etc/edgesec/edgesec.toml) with the paths the later steps read."""
    from edgesec.checks.profiles import load_profile

    load_profile(profile)  # an unknown profile is a one-line error now, not at the first audit
    out = out.expanduser().absolute()
    text = render_site_config(
        site=site,
        org=org,
        profile=profile,
        policy_dir=policy_dir.expanduser().absolute(),
        authz_url=authz_url,
        models=[m.expanduser().absolute() for m in model or []],
        checkpoint_signer=checkpoint_signer,
        syslog=syslog,
    )
    parse_config(text, Path("edgesec config init"))  # every value validates before anything is written
    if out.exists():
        raise AlreadyExists(f"{out} exists; nothing was changed", hint="edit it, or choose another --out")
    if not out.parent.is_dir():
        if out.parent.exists():
            raise InputError(f"{out.parent} is not a directory")
        out.parent.mkdir(parents=True, mode=0o755)
    # 0644: the ForwardAuth service account reads it; it names paths, never a secret.
    atomic_write(out, text, mode=0o644, exclusive=True)
    result({"written": str(out), "config": text}, f"wrote {out}\ncheck it: edgesec config check")


def mount(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
