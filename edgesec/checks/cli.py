"""``edgesec audit``, ``edgesec checks``, ``edgesec waiver``, ``edgesec evidence``, ``edgesec schedule``."""

from __future__ import annotations

import typer

checks_app = typer.Typer(help="List the checks and profiles.", no_args_is_help=True)


def mount(app: typer.Typer) -> None:
    app.add_typer(checks_app, name="checks")
