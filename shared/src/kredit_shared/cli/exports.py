"""`kredit export aged-balances --as-of D FILE.csv`: collections' aged balances (every customer, not
one page) as CSV, read over its HTTP API (COLLECTIONS_URL, default http://127.0.0.1:8080)."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from kredit_shared.cli.settings import CliSettings

app = typer.Typer(no_args_is_help=True, help="Take data out, as files.")
console = Console(stderr=True)  # the CSV may go to stdout


def fetch_aged_balances(settings: CliSettings, as_of: dt.date, page_size: int = 1000) -> dict[str, Any]:
    """Every customer's row: the API answers a page at a time, so follow `next_cursor` to the end."""
    token = settings.token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{settings.collections}/api/v1/aged-balances"
    params: dict[str, Any] = {"as_of": as_of.isoformat(), "limit": page_size}
    body: dict[str, Any] | None = None
    while True:
        try:
            response = httpx.get(url, params=params, headers=headers, timeout=60)
        except httpx.TransportError as e:
            console.print(
                f"[red]collections does not answer at {settings.collections} ({e}); set COLLECTIONS_URL[/red]"
            )
            raise typer.Exit(2) from None
        if response.status_code != 200:
            is_json = "json" in response.headers.get("content-type", "")
            detail = response.json().get("detail") if is_json else response.text
            hint = (
                " (set KREDIT_TOKEN, or run `make run` for data/tokens/viewer.token)"
                if response.status_code == 401
                else ""
            )
            console.print(f"[red]{url} answered {response.status_code}: {detail}{hint}[/red]")
            raise typer.Exit(1)
        page = response.json()
        if body is None:
            body = page
        else:
            body["customers"].extend(page["customers"])
        if not page.get("next_cursor"):
            return body
        params["cursor"] = page["next_cursor"]


def write_csv(body: dict[str, Any], out: Any) -> None:
    """One row per customer and currency: account, name, currency, balance, then each bucket."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["customer_account", "customer_name", "currency", "balance", *body["buckets"]])
    for row in body["customers"]:
        buckets = [row["buckets"].get(label, "0.00") for label in body["buckets"]]
        writer.writerow(
            [row["customer_account"], row["customer_name"] or "", row["currency"], row["balance"], *buckets]
        )


@app.command("aged-balances")
def aged_balances(
    file: Annotated[str, typer.Argument(metavar="FILE.csv", help="Where to write; - for standard output")],
    as_of: Annotated[dt.datetime, typer.Option("--as-of", formats=["%Y-%m-%d"], help="YYYY-MM-DD")],
    page_size: Annotated[int, typer.Option(hidden=True, min=1, max=1000)] = 1000,  # tests force paging
) -> None:
    """Aged balances of every customer as of a date, by due date into the setup's buckets."""
    body = fetch_aged_balances(CliSettings(), as_of.date(), page_size)
    if file == "-":
        write_csv(body, sys.stdout)
    else:
        with Path(file).open("w", newline="", encoding="utf-8") as out:
            write_csv(body, out)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in body["customers"]:
        totals[row["currency"]] += Decimal(row["balance"])
    table = Table("currency", "customers", "balance", title=f"aged balances as of {body['as_of']}")
    for currency, total in sorted(totals.items()):
        count = sum(1 for r in body["customers"] if r["currency"] == currency)
        table.add_row(currency, str(count), f"{total:.2f}")
    console.print(table if totals else "nothing open")
    if file != "-":
        console.print(f"wrote {len(body['customers'])} row(s) to {file}")
