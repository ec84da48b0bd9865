"""Exchange rates over HTTP (docs/currencies.md): the general ledger owns them, as in Dynamics 365.

A rate set here is kept in ledger-posting's own table and published on `gl.exchange-rates` in the same
transaction, so invoicing, settlement and collections book documents that state no rate at it too.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from sqlmodel import select

from kredit_shared.audit import AuditDep
from kredit_shared.auth import PrincipalDep, Role, require
from kredit_shared.contracts import ExchangeRateSet, IsoDate
from kredit_shared.currencies import ExchangeRate, rate_refusal
from kredit_shared.exchange_rates import ExchangeRateRow
from kredit_shared.money import Currency
from kredit_shared.service import RuntimeDep, SessionDep, SetupDep

router = APIRouter(prefix="/api/v1", tags=["exchange rates"])


class ExchangeRateIn(BaseModel):
    rate: ExchangeRate = Field(description="Accounting-currency units per one unit of the currency, e.g. 1.10.")


class ExchangeRateOut(BaseModel):
    currency: str
    from_date: dt.date = Field(description="The rate holds from this date until the currency's next rate starts.")
    rate: ExchangeRate
    source: Literal["setup", "api"] = Field(description="The company setup file, or set over this API (wins).")
    set_by: str | None = None


class ExchangeRatesOut(BaseModel):
    accounting_currency: str
    rates: list[ExchangeRateOut]


@router.get("/exchange-rates", dependencies=[require(Role.viewer)])
async def list_exchange_rates(
    session: SessionDep, setup: SetupDep, currency: Currency | None = None
) -> ExchangeRatesOut:
    """Every rate, oldest first per currency; one set over the API replaces the setup's for the same date."""
    rates: dict[tuple[str, dt.date], ExchangeRateOut] = {
        (code, period.from_date): ExchangeRateOut(
            currency=code, from_date=period.from_date, rate=period.rate, source="setup"
        )
        for code, periods in setup.exchange_rates.items()
        for period in periods
    }
    for row in (await session.exec(select(ExchangeRateRow))).all():
        rates[row.currency, row.from_date] = ExchangeRateOut(
            currency=row.currency, from_date=row.from_date, rate=row.rate, source="api", set_by=row.set_by
        )
    chosen = [rate for key, rate in sorted(rates.items()) if currency is None or key[0] == currency]
    return ExchangeRatesOut(accounting_currency=setup.accounting_currency, rates=chosen)


@router.put(
    "/exchange-rates/{currency}/{from_date}",
    responses={422: {"description": "The accounting currency, a currency Kredit cannot book, or a bad rate"}},
    dependencies=[require(Role.accountant)],
)
async def set_exchange_rate(
    currency: Currency,
    from_date: IsoDate,  # YYYY-MM-DD only: a plain date would also take "0" (a Unix time) as 1970-01-01
    body: ExchangeRateIn,
    runtime: RuntimeDep,
    setup: SetupDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> ExchangeRateOut:
    """Set the rate of `currency` from `from_date` on. Documents already booked keep their rate; a document
    that lacked one (dead-lettered and kept) is booked by its service once the rate reaches it."""
    if (reason := rate_refusal(currency, setup.accounting_currency)) is not None:
        raise HTTPException(422, reason)
    async with runtime.unit_of_work() as uow:
        row = await uow.session.get(ExchangeRateRow, (currency, from_date))
        before: Decimal | None = None if row is None else row.rate
        if row is None:
            row = ExchangeRateRow(currency=currency, from_date=from_date, rate=body.rate)
        row.rate, row.set_by = body.rate, principal.subject
        uow.session.add(row)
        uow.emit(ExchangeRateSet(currency=currency, from_date=from_date, rate=body.rate, set_by=principal.subject))
        audit.record(
            uow.session,
            "exchange rate set",
            currency=currency,
            from_date=from_date.isoformat(),
            before=None if before is None else format(before, "f"),
            after=format(body.rate, "f"),
        )
    return ExchangeRateOut(currency=currency, from_date=from_date, rate=body.rate, source="api", set_by=row.set_by)
