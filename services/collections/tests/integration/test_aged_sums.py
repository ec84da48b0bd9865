"""The aged balances the database adds up (tables.aged_sums) are the domain's (age_balances over every
transaction read into Python), to the cent, on SQLite and PostgreSQL: any as-of date, pages of customers,
three-decimal amounts, foreign currencies, settlements after the as-of date, names that change or are missing."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from kredit_collections import handlers, tables
from kredit_collections.domain import CustomerTransaction, SettlementDelta, age_balances
from kredit_shared.company_setup import load_company_setup
from kredit_shared.database import create_engine, create_session_factory, create_tables

SETUP = load_company_setup()  # accounting currency USD; buckets Current, 1-30, 31-60, 61-90, 91+
START = date(2015, 1, 1)


def random_read_model(rng: random.Random) -> tuple[list[CustomerTransaction], list[SettlementDelta]]:
    transactions, deltas = [], []
    for n in range(600):
        account = rng.choice(["A", "B", "C", "Ä", "a", "b-2", "Z"]) + str(rng.randrange(4))
        kind = rng.choice(["usd", "usd", "eur", "kwd", "payment"])
        day = START + timedelta(days=rng.randrange(120))  # some on the same day: the voucher decides
        amount = Decimal(rng.randint(-5_000, 500_000)) / 100
        accounting = None
        if kind == "eur":  # foreign: counted at its accounting-currency amount
            accounting = (amount * Decimal("1.0837")).quantize(Decimal("0.01"))
        elif kind == "kwd":  # three decimals, no accounting amount (from before foreign currencies)
            amount = Decimal(rng.randint(1, 900_000)) / 1000
        elif kind == "payment":
            amount = -amount
        transaction = CustomerTransaction(
            voucher=rng.choice(["FTI-", "ARP-", "fti-", "É-", "X:1.", "FTI"]) + str(n),  # FTI-1 < FTI-10 < FTI1
            transaction_type="Payment" if kind == "payment" else "Invoice",
            customer_account=account,
            transaction_date=day,
            amount=amount,
            currency={"eur": "EUR", "kwd": "KWD"}.get(kind, "USD"),
            due_date=None if kind == "payment" or rng.random() < 0.1 else day + timedelta(days=rng.choice([0, 14, 30])),
            customer_name=rng.choice([None, "", f"Name {account}", f"New name {account}", "Ünïcode"]),
            exchange_rate=Decimal("1.0837") if accounting is not None else None,
            accounting_currency_amount=accounting,
        )
        transactions.append(transaction)
        for m in range(rng.choice([0, 0, 1, 2])):  # settlements move it, some in the accounting currency too
            moved = -(amount * Decimal(rng.choice(["0.25", "0.5", "0.3333", "1"]))).quantize(
                Decimal("0.001") if kind == "kwd" else Decimal("0.01")
            )
            moved_accounting = None if accounting is None else (moved * Decimal("1.09")).quantize(Decimal("0.01"))
            deltas.append(
                SettlementDelta(
                    f"S-{n}-{m}", transaction.voucher, moved, day + timedelta(days=rng.randrange(90)), moved_accounting
                )
            )
    return transactions, deltas


async def test_the_database_ages_balances_as_the_domain_does(database_url):
    engine = create_engine(database_url)
    try:
        await create_tables(engine, tables.TABLES)
        sessions = create_session_factory(engine)
        transactions, deltas = random_read_model(random.Random(7))
        async with sessions() as session, session.begin():
            await tables.add_transactions(session, transactions)
            await tables.add_settlement_deltas(session, deltas)
        async with sessions() as session:
            for as_of in (date(2014, 12, 31), START, date(2015, 2, 14), date(2015, 5, 31), date(2016, 1, 1)):
                expected = age_balances(transactions, deltas, as_of, SETUP.aging_buckets, SETUP.accounting_currency)
                assert await handlers.aged_balances(session, SETUP, as_of) == expected, as_of
                some = sorted({t.customer_account for t in transactions})[::3]
                assert await handlers.aged_balances(session, SETUP, as_of, some) == [
                    r for r in expected if r.customer_account in some
                ]
            assert expected and any(r.currency == "KWD" for r in expected), "the data covers what it should"
            pages, cursor = [], None
            while True:
                page, cursor = await handlers.aged_balances_page(session, SETUP, date(2015, 5, 31), 4, cursor)
                pages += page
                if cursor is None:
                    break
            whole = age_balances(transactions, deltas, date(2015, 5, 31), SETUP.aging_buckets, "USD")
            assert sorted(pages, key=lambda r: (r.customer_account, r.currency)) == whole
    finally:
        await engine.dispose()
