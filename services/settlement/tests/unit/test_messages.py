"""The messages settlement emits are built with `construct` (kredit_settlement.posting): for any transaction
and settled pair the domain hands it, in the accounting currency or a foreign one of none, two or three decimals,
each is what the contract's validating constructor makes of the same fields, to the byte, parses as its
consumers parse it, and was given every field (`construct` is fast only then)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date
from decimal import Decimal
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from kredit_settlement import posting
from kredit_settlement.domain import DiscountTier, OpenTransaction, SettledPair, SettlementParameters
from kredit_shared.contracts import ContractMessage, TransactionType
from kredit_shared.currencies import minor_units
from kredit_shared.money import tidy
from kredit_shared.testing import assert_constructed_as_validated

D = Decimal
SETUP = posting.SettlementSetup(
    accounting_currency="USD",
    main_accounts=frozenset({"110110", "130100", "520100", "710100", "810100"}),
    bank_account="110110",
    summary_account="130100",
    cash_discount_account="520100",
    parameters=SettlementParameters(),
    realized_gain_account="710100",
    realized_loss_account="810100",
)
ACCOUNTING = st.sampled_from(["USD", "EUR", "JPY"])  # a company books in a currency of at most two decimals
CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "KWD"])
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
DATES = st.dates(date(2000, 1, 1), date(2099, 12, 31))


@st.composite
def amounts(draw: st.DrawFn, currency: str, zero: bool = True) -> Decimal:
    """An amount in `currency` in any form the domain holds one: JPY 5, 5.00; USD 5.00; KWD 1.230, 1.23."""
    units = minor_units(currency)
    value = D(draw(st.integers(-(10**12), 10**12).filter(lambda n: zero or n))).scaleb(-units)
    return draw(st.sampled_from([value, tidy(value), *(value.quantize(D(1).scaleb(-p)) for p in range(units, 3))]))


RATES = st.builds(lambda n, places: D(n).scaleb(-places), st.integers(1, 10**8 - 1), st.integers(0, 10))
PERCENTS = st.builds(lambda n, places: D(n).scaleb(-places), st.integers(0, 100), st.integers(0, 6))


@st.composite
def transactions(draw: st.DrawFn, setup: posting.SettlementSetup) -> OpenTransaction:
    currency = draw(CURRENCIES)
    amount = draw(amounts(currency))
    fx: dict[str, Any] = {}
    if setup.foreign(currency):
        accounting = draw(amounts(setup.accounting_currency))
        fx = {"exchange_rate": draw(RATES), "accounting_original_amount": accounting}
    tiers = draw(st.lists(st.builds(DiscountTier, DATES, PERCENTS, st.none() | amounts(currency)), max_size=3))
    return OpenTransaction(
        voucher=draw(IDS),
        customer_account=draw(IDS),
        transaction_type=draw(st.sampled_from(get_args(TransactionType))),
        transaction_date=draw(DATES),
        currency=currency,
        original_amount=amount,
        open_amount=amount,
        invoice_id=draw(st.none() | IDS),
        due_date=draw(st.none() | DATES),
        cash_discounts=tuple(tiers),
        cash_discount_account=draw(st.none() | st.just("520100")),
        **fx,
    )


@st.composite
def pairs(draw: st.DrawFn, setup: posting.SettlementSetup) -> SettledPair:
    currency = draw(CURRENCIES)
    debit, credit = draw(IDS), draw(IDS)
    discount = draw(st.just(D("0.00")) | amounts(currency, zero=False))
    difference = draw(st.just(D("0.00")) | amounts(currency, zero=False))
    fx: dict[str, Any] = {}
    if setup.foreign(currency):
        accounting = amounts(setup.accounting_currency)
        fx = {
            "debit_accounting_amount": draw(accounting),
            "credit_accounting_amount": draw(accounting),
            "cash_discount_accounting_amount": draw(accounting),
            "difference_accounting_amount": draw(accounting),
            "realized_exchange_loss": draw(st.just(D("0.00")) | accounting),
            "exchange_account": draw(st.sampled_from(["710100", "810100"])),
            "exchange_voucher": f"FX-{credit}",
        }
    return SettledPair(
        settlement_id=f"{debit}/{credit}",
        customer_account=draw(IDS),
        settlement_date=draw(DATES),
        currency=currency,
        debit_voucher=debit,
        credit_voucher=credit,
        amount_settled=draw(amounts(currency)),
        cash_discount_amount=discount,
        cash_discount_voucher=f"CD-{credit}" if discount else None,
        difference_amount=difference,
        difference_account="710100" if difference else None,
        difference_voucher=f"DIF-{credit}" if difference else None,
        **fx,
    )


class Outbox:
    """Stands in for the unit of work (what it emits) and the open items store (rows kept: none)."""

    def __init__(self) -> None:
        self.messages: list[ContractMessage] = []

    def emit(self, message: ContractMessage) -> None:
        self.messages.append(message)

    async def add(self, *row: object) -> None:
        pass


@st.composite
def setups(draw: st.DrawFn) -> posting.SettlementSetup:
    return dataclasses.replace(SETUP, accounting_currency=draw(ACCOUNTING))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_posted_transaction_and_its_voucher_are_what_validation_makes_of_them(data):
    setup = data.draw(setups())
    t = data.draw(transactions(setup))
    outbox = Outbox()
    posting.post_discount(outbox, setup, t, "Cash discount settling ARP-1", payment_id=data.draw(st.none() | IDS))
    assert [type(m).__name__ for m in outbox.messages][0] == "CustomerTransactionPosted"
    for message in outbox.messages:
        assert_constructed_as_validated(message)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_settled_pair_and_its_difference_and_exchange_vouchers_are_what_validation_makes_of_them(data):
    setup = data.draw(setups())
    pair = data.draw(pairs(setup))
    outbox = Outbox()
    reversal_of = data.draw(st.none() | st.just("S-1"))
    asyncio.run(posting.record(setup, outbox, outbox, [pair], group_id="S-2", reversal_of=reversal_of))
    assert [type(m).__name__ for m in outbox.messages][0] == "OpenItemsSettled"
    for message in outbox.messages:
        assert_constructed_as_validated(message)
