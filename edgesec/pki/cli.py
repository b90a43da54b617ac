"""``edgesec pki ...`` commands."""

from __future__ import annotations

import typer

pki_app = typer.Typer(
    help="Offline CA: init, issue, revoke, CRL, renew, export, verify, list.", no_args_is_help=True
)


def mount(app: typer.Typer) -> None:
    app.add_typer(pki_app, name="pki")
