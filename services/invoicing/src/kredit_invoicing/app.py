"""The invoicing service: consumes erp.customer-invoices, serves the invoices over HTTP."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from kredit_invoicing import api, handlers
from kredit_invoicing.settings import InvoicingSettings
from kredit_invoicing.tables import TABLES
from kredit_shared import exchange_rates
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    ERP_CUSTOMER_INVOICES,
    GL_JOURNAL_LINES,
    CustomerInvoiceIssued,
)
from kredit_shared.contracts.parsing import json_parser
from kredit_shared.migrations import of_package
from kredit_shared.service import ServiceRuntime, run_service


def create_app(settings: InvoicingSettings | None = None) -> FastAPI:
    """Build the service; raises SetupError if the company setup is invalid."""
    settings = settings or InvoicingSettings()
    setup = load_company_setup(settings.company_setup_file)
    runtime = ServiceRuntime(settings, tables=TABLES, migrations=of_package("invoicing", "kredit_invoicing"))
    runtime.subscribe_batch(
        ERP_CUSTOMER_INVOICES, json_parser(CustomerInvoiceIssued), partial(handlers.issue_invoices, setup=setup)
    )
    runtime.publishes(AR_CUSTOMER_TRANSACTIONS, GL_JOURNAL_LINES)
    exchange_rates.subscribe(runtime, setup.accounting_currency)  # rates set over ledger-posting's API
    return runtime.http_app("Kredit invoicing", routers=[api.router])


def main() -> None:
    run_service(create_app, InvoicingSettings)
