"""`kredit token`: mint a bearer token with the local signing key (the one `make run` generates).

A production deployment verifies tokens of its identity provider (AUTH_JWKS_URL); there this
command does not apply: ask the identity provider for a token instead.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from kredit_shared.auth import AuthConfigError, Role, local_key_file, mint_token, read_local_key, roles_of


def mint(
    role: Annotated[
        list[str],
        typer.Option("--role", "-r", help=f"a role the token carries; repeat for several ({', '.join(Role)})"),
    ],
    subject: Annotated[str, typer.Option("--subject", "-s", help="who the token speaks for (its `sub`), e.g. ann")],
    hours: Annotated[float, typer.Option(help="how long the token is valid", min=0.01, max=24 * 90)] = 12,
    data_dir: Annotated[
        Path | None, typer.Option(help="the data folder of the local run (default: $DATA_DIR or ./data)")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(help="the signing key (default: $AUTH_SIGNING_KEY_FILE or <data folder>/auth/signing.key)"),
    ] = None,
    audience: Annotated[str, typer.Option(help="the `aud` the services expect (AUTH_AUDIENCE)")] = "kredit",
) -> None:
    """Print a token for SUBJECT with the given roles, e.g. `kredit token --role collector --subject ann`.
    Use it as `Authorization: Bearer <token>`, or paste it on the workspace's sign-in page."""
    try:
        roles = roles_of(role)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--role") from None
    if not subject.strip() or len(subject) > 200:
        raise typer.BadParameter("1 to 200 characters", param_hint="--subject")
    if key_file is None:
        from_env = os.environ.get("AUTH_SIGNING_KEY_FILE")
        key_file = Path(from_env) if from_env else local_key_file(data_dir or Path(os.environ.get("DATA_DIR", "data")))
    try:
        key = read_local_key(key_file)
    except AuthConfigError as e:
        typer.echo(f"kredit token: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(mint_token(key, subject, roles, timedelta(hours=hours), audience=audience))


def register(app: typer.Typer) -> None:
    app.command("token")(mint)
