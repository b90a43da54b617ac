"""``edgesec authz ...`` commands."""

from __future__ import annotations

import typer

authz_app = typer.Typer(
    help="ForwardAuth service: serve, explain, test, lint, gen, policy.", no_args_is_help=True
)


def mount(app: typer.Typer) -> None:
    app.add_typer(authz_app, name="authz")
