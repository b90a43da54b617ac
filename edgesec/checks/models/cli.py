"""``edgesec model sign|verify|scan``."""

from __future__ import annotations

import typer

model_app = typer.Typer(help="Sign, verify and scan model directories.", no_args_is_help=True)


def mount(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
