"""Rates set over HTTP, as every service keeps them (kredit_shared.exchange_rates), on an in-memory database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from kredit_shared.company_setup import ExchangeRatePeriod, load_company_setup
from kredit_shared.contracts import ExchangeRateSet
from kredit_shared.exchange_rates import load_rates, record_rates
from kredit_shared.testing import handler_database

D = Decimal


def rate(currency: str, from_date: str, value: str) -> ExchangeRateSet:
    return ExchangeRateSet(currency=currency, from_date=from_date, rate=value, set_by="ann")


async def test_the_latest_rate_for_a_currency_and_date_wins_and_tops_the_setups():
    setup = load_company_setup().model_copy(
        update={
            "exchange_rates": {
                "EUR": [
                    ExchangeRatePeriod(from_date=date(2026, 1, 1), rate=D("1.05")),
                    ExchangeRatePeriod(from_date=date(2026, 2, 1), rate=D("1.07")),
                ]
            }
        }
    )
    async with handler_database([]) as db:
        await db.handle(
            lambda uow: record_rates(uow, [rate("EUR", "2026-02-01", "1.08"), rate("GBP", "2026-01-01", "1.25")])
        )
        # A later message for the same currency and date replaces the rate, in its batch or a later one.
        await db.handle(
            lambda uow: record_rates(uow, [rate("GBP", "2026-01-01", "1.26"), rate("GBP", "2026-01-01", "1.27")])
        )
        async with db.unit_of_work() as uow:
            rates = await load_rates(uow.session, setup)
    assert rates.resolve("EUR", date(2026, 1, 15)) == D("1.05")  # the setup's, nothing set over HTTP for it
    assert rates.resolve("EUR", date(2026, 2, 15)) == D("1.08")  # set over HTTP for the setup's date: wins
    assert rates.resolve("GBP", date(2026, 3, 1)) == D("1.27")
    assert rates.resolve("USD", date(2026, 3, 1)) == D(1)
