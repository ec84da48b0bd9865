"""The settlement service: its subscribers, its HTTP app, and the process entry point."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from kredit_settlement import api, handlers, tables
from kredit_settlement.handlers import Postings
from kredit_settlement.settings import SettlementSettings
from kredit_shared.company_setup import SetupError, load_company_setup
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    ERP_CUSTOMER_PAYMENTS,
    GL_JOURNAL_EVENTS,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    journal_event_adapter,
)
from kredit_shared.database import normalise_url
from kredit_shared.service import ServiceRuntime, run_service
from kredit_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Raises SetupError when the company setup is missing or invalid."""
    settings = settings or SettlementSettings()
    postings = Postings.from_setup(load_company_setup(settings.company_setup_file))
    _ensure_sqlite_folder(settings.database_url)

    runtime = ServiceRuntime(settings, tables=tables.TABLES)
    runtime.subscribe(AR_CUSTOMER_TRANSACTIONS, CustomerTransactionPosted.model_validate_json,
                      partial(handlers.record_customer_transaction, postings))
    runtime.subscribe(ERP_CUSTOMER_PAYMENTS, CustomerPaymentReceived.model_validate_json,
                      partial(handlers.receive_payment, postings))
    runtime.subscribe(GL_JOURNAL_EVENTS, journal_event_adapter.validate_json, partial(handlers.settle_write_offs, postings))

    app = runtime.http_app("Kredit settlement", routers=[api.router])
    app.state.postings = postings
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with started(a):
            async with runtime.transaction() as tx:  # seeds the parameters from the setup on first start
                await handlers.get_parameters(postings, tx.session)
            yield

    app.router.lifespan_context = lifespan
    return app


def _ensure_sqlite_folder(url: str) -> None:
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def main() -> None:
    try:
        run_service(create_app, SettlementSettings())
    except SetupError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
