"""The exchange rates a service books foreign-currency documents at (docs/currencies.md).

The company setup's `exchange_rates` are the seed. Rates set later over HTTP (ledger-posting's
`PUT /api/v1/exchange-rates/{currency}/{from_date}`) reach every service on `gl.exchange-rates`; each
keeps them in its own `exchange_rate` table, and they win over the setup's for the same currency and date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared.company_setup import CompanySetup, ExchangeRatePeriod
from kredit_shared.contracts import GL_EXCHANGE_RATES, ExchangeRateSet
from kredit_shared.currencies import Rates
from kredit_shared.database import ExactDecimal, insert_new
from kredit_shared.outbox import utcnow

if TYPE_CHECKING:  # the runtime's module imports this one (its tables)
    from kredit_shared.service import ServiceRuntime, UnitOfWork

RATE_PLACES = 10  # the contract's rate has at most 10 decimals


class ExchangeRateRow(SQLModel, table=True):
    """A rate set over HTTP: the latest message per currency and date wins."""

    __tablename__ = "exchange_rate"

    currency: str = Field(primary_key=True, max_length=3)
    from_date: dt.date = Field(primary_key=True)
    rate: Decimal = Field(sa_type=ExactDecimal(RATE_PLACES), nullable=False)
    set_by: str | None = None
    recorded_at: dt.datetime = Field(default_factory=utcnow)


async def record_rates(uow: UnitOfWork, messages: Sequence[ExchangeRateSet]) -> None:
    """Keep the rates a batch carries; a later message for the same currency and date replaces an earlier one."""
    latest = {(m.currency, m.from_date): m for m in messages}  # in fetch order: a key's messages in order
    session = uow.session
    query = select(ExchangeRateRow).where(col(ExchangeRateRow.currency).in_(sorted({c for c, _ in latest})))
    existing = {(row.currency, row.from_date): row for row in (await session.exec(query)).all()}
    new = []
    for key, message in latest.items():
        if (row := existing.get(key)) is not None:
            row.rate, row.set_by, row.recorded_at = message.rate, message.set_by, utcnow()
        else:
            new.append(
                {
                    "currency": message.currency,
                    "from_date": message.from_date,
                    "rate": message.rate,
                    "set_by": message.set_by,
                    "recorded_at": utcnow(),
                }
            )
    await insert_new(session, ExchangeRateRow, new)


def subscribe(runtime: ServiceRuntime) -> None:
    """Every service that books foreign documents keeps the rates set over HTTP."""
    runtime.subscribe_batch(GL_EXCHANGE_RATES, ExchangeRateSet.model_validate_json, record_rates)


async def load_rates(session: AsyncSession, setup: CompanySetup) -> Rates:
    """The setup's rates with those set over HTTP on top: one read per batch, not per document."""
    stored = (await session.exec(select(ExchangeRateRow))).all()
    periods: dict[str, dict[dt.date, ExchangeRatePeriod]] = {
        currency: {p.from_date: p for p in setup_periods} for currency, setup_periods in setup.exchange_rates.items()
    }
    for row in stored:
        periods.setdefault(row.currency, {})[row.from_date] = ExchangeRatePeriod(from_date=row.from_date, rate=row.rate)
    return Rates(setup.accounting_currency, {currency: list(p.values()) for currency, p in periods.items()})
