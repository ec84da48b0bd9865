"""The settlement service: its subscribers, its HTTP app, and the process entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import FastAPI, Request, Response

from kredit_settlement import api, handlers, queries, tables
from kredit_settlement.posting import SettlementSetup
from kredit_settlement.settings import SettlementSettings
from kredit_shared import exchange_rates
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    ERP_CUSTOMER_PAYMENTS,
    GL_JOURNAL_EVENTS,
    GL_JOURNAL_LINES,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    JournalEvent,
)
from kredit_shared.contracts.parsing import json_parser
from kredit_shared.migrations import of_package
from kredit_shared.service import ServiceRuntime, run_service


def create_app(settings: SettlementSettings | None = None) -> FastAPI:
    """Raises SetupError when the company setup is missing or invalid."""
    settings = settings or SettlementSettings()
    setup = SettlementSetup.from_setup(load_company_setup(settings.company_setup_file))

    runtime = ServiceRuntime(settings, tables=tables.TABLES, migrations=of_package("settlement", "kredit_settlement"))
    # Each fetch in one transaction (ServiceRuntime.subscribe_batch), messages in fetch order.
    # Its own postings (payments, discounts, write-offs) come back on this topic: it holds them already.
    runtime.subscribe_batch(
        AR_CUSTOMER_TRANSACTIONS,
        json_parser(CustomerTransactionPosted),
        partial(handlers.record_customer_transactions, setup),
        skip_own=True,
    )
    runtime.subscribe_batch(
        ERP_CUSTOMER_PAYMENTS, json_parser(CustomerPaymentReceived), partial(handlers.receive_payments, setup)
    )
    runtime.subscribe_batch(
        GL_JOURNAL_EVENTS, json_parser(JournalEvent), partial(handlers.settle_write_off_journals, setup)
    )
    runtime.publishes(AR_CUSTOMER_TRANSACTIONS, AR_SETTLEMENTS, GL_JOURNAL_LINES)

    exchange_rates.subscribe(runtime, setup.accounting_currency)  # rates set over ledger-posting's API
    app = runtime.http_app("Kredit settlement", routers=[api.router])

    @app.middleware("http")
    async def pending_gauges(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path == "/metrics":  # the gauges count database state, the same for every replica
            async with runtime.sessions() as session:
                await queries.refresh_pending_gauges(session)
        return await call_next(request)

    app.state.settlement_setup = setup
    return app


def main() -> None:
    run_service(create_app, SettlementSettings)


if __name__ == "__main__":
    main()
