"""``edgesec config show|check``: the effective site config and where each value came from."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from edgesec._console import result, state
from edgesec.config import flatten

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


def mount(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
