"""The invoicing service: consumes erp.customer-invoices, serves the invoices over HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from kredit_invoicing import api, handlers
from kredit_invoicing.settings import InvoicingSettings
from kredit_invoicing.tables import TABLES
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued
from kredit_shared.service import ServiceRuntime, Transaction, run_service


def create_app(settings: InvoicingSettings | None = None) -> FastAPI:
    """Build the service; raises SetupError if the company setup is invalid."""
    settings = settings or InvoicingSettings()
    setup = load_company_setup(settings.company_setup_file)
    runtime = ServiceRuntime(settings, tables=TABLES)

    async def on_customer_invoice_issued(tx: Transaction, message: CustomerInvoiceIssued) -> None:
        await handlers.issue_invoice(tx, message, setup)

    runtime.subscribe(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, on_customer_invoice_issued)
    return runtime.http_app("Kredit invoicing", routers=[api.router])


def main() -> None:
    run_service(create_app, InvoicingSettings)
