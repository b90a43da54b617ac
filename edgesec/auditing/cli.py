"""``edgesec auditlog ...`` commands."""

from __future__ import annotations

import typer

auditlog_app = typer.Typer(
    help="The audit trail and its syslog-ng / Elasticsearch pipeline.", no_args_is_help=True
)


def mount(app: typer.Typer) -> None:
    app.add_typer(auditlog_app, name="auditlog")
