"""Loading the exchange rates a service books foreign-currency documents at (docs/currencies.md).

The company setup's `exchange_rates` are the seed; rates set later over HTTP (ledger-posting's
`PUT /api/v1/exchange-rates/...`) reach every service on `gl.exchange-rates` and win over the setup's
for the same currency and date.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_shared.company_setup import CompanySetup
from kredit_shared.currencies import Rates


async def load_rates(session: AsyncSession, setup: CompanySetup) -> Rates:
    """The rates as of now: one read per batch, not per document."""
    del session  # the rates set over HTTP are read here once they exist (issue 17, step 2)
    return Rates(setup.accounting_currency, setup.exchange_rates)
