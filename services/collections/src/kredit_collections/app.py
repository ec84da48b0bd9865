"""The collections service: its subscribers, its HTTP API, and `create_app(settings)`."""

from __future__ import annotations

from fastapi import FastAPI

from kredit_collections import api, credit_api, handlers, ui
from kredit_collections.settings import CollectionsSettings
from kredit_collections.tables import TABLES
from kredit_shared import auth, exchange_rates
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    ERP_CUSTOMER_INVOICES,
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_EVENTS,
    CustomerTransactionPosted,
    JournalEvent,
    OpenItemsSettled,
)
from kredit_shared.contracts.parsing import json_parser
from kredit_shared.migrations import of_package
from kredit_shared.service import ServiceRuntime, run_service


def create_app(settings: CollectionsSettings | None = None) -> FastAPI:
    settings = settings or CollectionsSettings()
    setup = load_company_setup(settings.company_setup_file)
    runtime = ServiceRuntime(settings, tables=TABLES, migrations=of_package("collections", "kredit_collections"))
    runtime.subscribe_batch(
        AR_CUSTOMER_TRANSACTIONS, json_parser(CustomerTransactionPosted), handlers.record_customer_transactions
    )
    runtime.subscribe_batch(AR_SETTLEMENTS, json_parser(OpenItemsSettled), handlers.record_settlements)
    runtime.subscribe_batch(GL_JOURNAL_EVENTS, json_parser(JournalEvent), handlers.record_journal_events)
    # Write-off journals and their cancels; interest notes and letter fees, posted through invoicing.
    exchange_rates.subscribe(runtime, setup.accounting_currency)  # rates set over ledger-posting's API
    runtime.publishes(GL_GENERAL_JOURNALS, ERP_CUSTOMER_INVOICES)
    app = runtime.http_app("Kredit collections", routers=[api.router, credit_api.router, ui.csv_router, ui.router])
    for error in (auth.Unauthorized, auth.Forbidden, auth.TooManyRequests):
        app.add_exception_handler(error, ui.auth_error)  # pages: to the sign-in page; the API: problem+json
    app.state.setup = setup
    return app


def main() -> None:
    run_service(create_app, CollectionsSettings)
