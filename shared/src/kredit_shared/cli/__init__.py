"""The `kredit` command line: one Typer app, each command group in its own module.

kredit token --role collector --subject ann      (cli/token.py)
"""

from __future__ import annotations

import typer

from kredit_shared.cli import token

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def kredit() -> None:
    """Kredit operations from the command line."""  # a callback keeps `kredit <command>` with one command


token.register(app)


def main() -> None:
    app()
