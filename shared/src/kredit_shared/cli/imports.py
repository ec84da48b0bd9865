"""`kredit import invoices FILE.csv`: the open invoices at go-live (opening balances), published to
`erp.customer-invoices` as the ERP would publish them, through the contract's own model.

One row per open invoice; the header row names the columns (any order):

    invoice_id, customer_account, invoice_date, currency, amount          required
    customer_name, due_date, payment_terms, sales_tax_amount, description,
    revenue_account, exchange_rate                                        optional

`amount` is what is open (net of sales tax; negative for an open credit note). The ledger side of
each invoice goes to `revenue_account` (default: the setup's revenue account): at go-live, name
your opening-balance account there, so the old system's revenue is not booked twice. An invoice in
a foreign currency is booked at its `exchange_rate` (accounting-currency units per unit; empty: the
rate set for its date), so give the rate the old system booked it at (docs/currencies.md).

A row the contract refuses is listed with its reason and not published; the others are. Each
message_id is derived from the invoice id, so importing a file again changes nothing. What the
contract accepts but invoicing's rules refuse (an unknown payment term, a revenue account not in the
setup) lands on `erp.customer-invoices.dlq`: `kredit dlq list --topic erp.customer-invoices`.
"""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kredit_shared.cli.dlq import broker_unreachable
from kredit_shared.cli.settings import CliSettings
from kredit_shared.contracts import CustomerInvoiceIssued, derived_message_id
from kredit_shared.errors import describe_validation_error

app = typer.Typer(no_args_is_help=True, help="Bring data in through the contract.")
console = Console()

REQUIRED = ("invoice_id", "customer_account", "invoice_date", "currency", "amount")
OPTIONAL = (
    "customer_name",
    "due_date",
    "payment_terms",
    "sales_tax_amount",
    "description",
    "revenue_account",
    "exchange_rate",
)
LINE_FIELDS = ("amount", "sales_tax_amount", "description", "revenue_account")  # the invoice's one line
_NAMESPACE = uuid.UUID("6b726564-6974-4f70-656e-696e67000000")


@dataclass(frozen=True)
class Reject:
    row: int  # line number in the file (the header is line 1)
    invoice_id: str
    reason: str


def opening_balance_id(invoice_id: str) -> str:
    """The message_id of an invoice's opening balance: the same on every import of it."""
    return derived_message_id(_NAMESPACE, f"opening-balance/{invoice_id}")


def invoice_of(row: dict[str, str]) -> CustomerInvoiceIssued:
    """The contract message of one CSV row (an empty cell is an absent field); raises ValidationError."""
    cell = {k: v.strip() for k, v in row.items() if k and v is not None and v.strip()}
    line = {"description": "Opening balance"} | {k: cell[k] for k in LINE_FIELDS if k in cell}
    body: dict[str, object] = {k: cell[k] for k in (*REQUIRED, *OPTIONAL) if k in cell and k not in LINE_FIELDS}
    body |= {"message_id": opening_balance_id(cell.get("invoice_id", "")), "lines": [line]}
    # As JSON, the way invoicing will read it: every cell is parsed by the contract's own rules.
    return CustomerInvoiceIssued.model_validate_json(json.dumps(body))


def read_invoices(path: Path) -> tuple[list[CustomerInvoiceIssued], list[Reject]]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        if missing := [c for c in REQUIRED if c not in columns]:
            raise typer.BadParameter(f"{path}: missing column(s) {', '.join(missing)}", param_hint="FILE")
        if unknown := [c for c in columns if c not in REQUIRED + OPTIONAL]:
            raise typer.BadParameter(
                f"{path}: unknown column(s) {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})",
                param_hint="FILE",
            )
        invoices: list[CustomerInvoiceIssued] = []
        rejects: list[Reject] = []
        seen: dict[str, int] = {}
        for row in reader:
            number = reader.line_num
            invoice_id = (row.get("invoice_id") or "").strip()
            if invoice_id in seen:
                rejects.append(Reject(number, invoice_id, f"invoice {invoice_id} is on line {seen[invoice_id]} too"))
                continue
            try:
                invoices.append(invoice_of(row))
            except ValidationError as e:
                reason = describe_validation_error(e, whole="row").replace("lines.0.", "")  # the row's own cells
                rejects.append(Reject(number, invoice_id, reason))
                continue
            seen[invoice_id] = number
    return invoices, rejects


async def publish(settings: CliSettings, invoices: list[CustomerInvoiceIssued], progress: Progress) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5)
    try:
        await producer.start()
        task = progress.add_task("publishing", total=len(invoices))
        deliveries = []
        for invoice in invoices:
            delivery = await producer.send(
                settings.topic(invoice.topic),
                invoice.model_dump_json().encode(),
                key=invoice.key().encode(),
                headers=[("message-type", b"CustomerInvoiceIssued"), ("message-id", invoice.message_id.encode())],
            )
            delivery.add_done_callback(lambda _: progress.advance(task))
            deliveries.append(delivery)
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


@app.command("invoices")
def import_invoices(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE.csv")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file; publish nothing")] = False,
) -> None:
    """Publish the open invoices of a CSV file (opening balances at go-live) to erp.customer-invoices."""
    invoices, rejects = read_invoices(file)
    settings = CliSettings()
    if invoices and not dry_run:
        with Progress(console=console) as progress:
            try:
                asyncio.run(publish(settings, invoices, progress))
            except KafkaConnectionError:
                raise broker_unreachable(settings) from None
    if rejects:
        table = Table("line", "invoice", "reason", title="rejected (not published)")
        for r in rejects:
            table.add_row(str(r.row), r.invoice_id, r.reason)
        console.print(table)
    verb = (
        "valid (dry run: nothing published)"
        if dry_run
        else f"published to {settings.topic(CustomerInvoiceIssued.topic)}"
    )
    console.print(f"{len(invoices)} invoice(s) {verb}; {len(rejects)} rejected")
    if rejects:
        raise typer.Exit(1)
