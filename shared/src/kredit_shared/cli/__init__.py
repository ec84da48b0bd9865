"""`kredit`: the operations command line (Typer + Rich), one module per command group.

    kredit dlq list|show|replay|stats      dead letters: see why, replay once the cause is fixed
    kredit import invoices FILE.csv        opening balances at go-live, through the contract
    kredit export aged-balances --as-of D FILE.csv
    kredit token --role collector --subject ann   a bearer token for the APIs (local signing key)

Settings come from the environment and `.env` (cli/settings.py), as for the services.
"""

from __future__ import annotations

import logging

import typer

from kredit_shared.cli import dlq, exports, imports, token

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures are reported once, as one line

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a traceback must not print settings (a token) or message bodies
    help="Kredit operations: dead letters, imports, exports, tokens.",
)
app.add_typer(dlq.app, name="dlq")
app.add_typer(imports.app, name="import")
app.add_typer(exports.app, name="export")
token.register(app)
