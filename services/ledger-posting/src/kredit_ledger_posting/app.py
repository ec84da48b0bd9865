"""The ledger-posting service: consumes subledger vouchers and general journal requests (and their cancels)."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from kredit_ledger_posting import api, exchange_rates_api, handlers
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_ledger_posting.tables import TABLES
from kredit_shared.company_setup import load_company_setup
from kredit_shared.contracts import (
    GL_EXCHANGE_RATES,
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_EVENTS,
    GL_JOURNAL_LINES,
    GeneralJournalMessage,
    VoucherPosted,
)
from kredit_shared.contracts.parsing import json_parser
from kredit_shared.migrations import of_package
from kredit_shared.service import ServiceRuntime, run_service


def create_app(settings: LedgerPostingSettings | None = None) -> FastAPI:
    settings = settings or LedgerPostingSettings()
    setup = load_company_setup(settings.company_setup_file)
    runtime = ServiceRuntime(settings, tables=TABLES, migrations=of_package("ledger-posting", "kredit_ledger_posting"))
    runtime.subscribe_batch(GL_JOURNAL_LINES, json_parser(VoucherPosted), partial(handlers.post_vouchers, setup=setup))
    runtime.subscribe(
        GL_GENERAL_JOURNALS,
        json_parser(GeneralJournalMessage),
        partial(handlers.on_general_journal_message, setup=setup),
    )
    # Exchange rates set over HTTP: kept in its own table by the route itself, published for the others.
    runtime.publishes(GL_JOURNAL_EVENTS, GL_EXCHANGE_RATES)
    app = runtime.http_app("Kredit ledger-posting", routers=[api.router, exchange_rates_api.router])
    app.state.setup = setup
    return app


def main() -> None:
    run_service(create_app, LedgerPostingSettings)
