"""Settlement ends in the same state whatever the interleaving of its input topics (docs/ordering.md).

A generated scenario (customers, invoices with discount tiers, credit notes, payments with and without
marks, posted write-offs) is fed to the real handlers on an in-memory SQLite database, once in the
order "settlement never lags" (every invoice first, then write-offs, then payments) and once in a random
interleaving that keep each topic's per-customer order. The final open balances, discounts taken,
settled pairs, pending marks and ledger totals must be identical. The generator keeps to the orders the
document says can be made equivalent.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import StaticPool
from sqlmodel import select

from kredit_settlement import handlers, tables
from kredit_settlement.domain import SettlementParameters
from kredit_settlement.posting import SettlementSetup
from kredit_shared import outbox
from kredit_shared.contracts import (
    GL_JOURNAL_LINES,
    CustomerPaymentReceived,
    CustomerTransactionPosted,
    journal_event_adapter,
)
from kredit_shared.database import create_session_factory, create_tables
from kredit_shared.service import Rejected, UnitOfWork

D = Decimal
START = date(2015, 6, 1)
SETUP = SettlementSetup(
    accounting_currency="USD",
    main_accounts=frozenset({"110110", "130100", "401100", "520100", "618900"}),
    bank_account="110110",
    summary_account="130100",
    cash_discount_account="520100",
    parameters=SettlementParameters(calculate_cash_discounts_for_partial_payments=True),
)


@dataclass(frozen=True)
class Message:
    stream: str  # messages of one stream keep their order; streams interleave freely
    handle: Any
    body: Any


# --- generating scenarios ---------------------------------------------------------------------

cents = st.integers(1_000, 200_000).map(lambda c: D(c).scaleb(-2))


@st.composite
def tiers(draw: st.DrawFn, on: date) -> list[dict]:
    kind = draw(st.sampled_from(["none", "2%10D", "2%5D+1%14D"]))
    if kind == "none":
        return []
    if kind == "2%10D":
        return [{"date": (on + timedelta(days=10)).isoformat(), "percent": "2.00"}]
    return [
        {"date": (on + timedelta(days=5)).isoformat(), "percent": "2.00"},
        {"date": (on + timedelta(days=14)).isoformat(), "percent": "1.00"},
    ]


@st.composite
def customer(draw: st.DrawFn, account: str, foreign_invoice: str | None) -> list[Message]:
    """One customer's messages. Invoices are dated (and due) in the order the ERP sends them."""
    kind = draw(st.sampled_from(["payments", "payments", "write-offs", "credit-notes"]))
    transactions: list[Message] = []
    invoice_ids: list[str] = []
    amounts: dict[str, Decimal] = {}
    on = START
    for n in range(draw(st.integers(1, 4))):
        on += timedelta(days=draw(st.integers(1, 6)))
        amount = draw(cents)
        note = kind == "credit-notes" and n > 0 and draw(st.booleans())
        invoice_id = f"{account}-{n}"
        event = {
            "message_id": str(uuid.uuid4()),
            "voucher": ("CCN-" if note else "FTI-") + invoice_id,
            "transaction_type": "CreditNote" if note else "Invoice",
            "customer_account": account,
            "transaction_date": on.isoformat(),
            "invoice_id": invoice_id,
            "currency": "USD",
            "amount": str(-amount if note else amount),
            "due_date": (on + timedelta(days=30)).isoformat(),
            "cash_discounts": [] if note else draw(tiers(on)),
            "cash_discount_account": "520100",
        }
        transactions.append(
            Message(
                f"{account}/invoices",
                handlers.record_customer_transaction,
                CustomerTransactionPosted.model_validate(event),
            )
        )
        if not note:
            invoice_ids.append(invoice_id)
            amounts[invoice_id] = amount
    if draw(st.booleans()):  # an invoice the ERP never sends: its marks and write-offs wait for ever
        invoice_ids.append(f"{account}-never")
        amounts[f"{account}-never"] = D("50.00")

    messages = list(transactions)
    written_off: list[str] = []
    if kind == "write-offs":
        written_off = draw(st.lists(st.sampled_from(invoice_ids), unique=True, max_size=2))
        for n, invoice_id in enumerate(written_off):
            named = draw(st.sampled_from([amounts[invoice_id], D("10.00")]))
            messages.append(
                Message(
                    f"{account}/journal-{n}",
                    handlers.settle_write_offs,
                    write_off(f"WO-{account}-{n}", account, f"FTI-{invoice_id}", named),
                )
            )
    if kind != "credit-notes":
        markable = [i for i in invoice_ids if i not in written_off] + ([foreign_invoice] if foreign_invoice else [])
        if not markable:
            return messages
        paid_on = START
        for n in range(draw(st.integers(0, 4))):
            paid_on += timedelta(days=draw(st.integers(0, 8)))
            marked = kind == "write-offs" or draw(st.booleans())
            settle = None
            if marked:
                chosen = draw(st.lists(st.sampled_from(markable), min_size=1, max_size=3))  # repeats: marked twice
                settle = [
                    {
                        "invoice_id": i,
                        "use_cash_discount": draw(st.sampled_from(["Normal", "Normal", "Always", "Never"])),
                    }
                    | ({"amount_to_settle": str(draw(cents))} if draw(st.booleans()) else {})
                    for i in chosen
                ]
            messages.append(
                Message(
                    f"{account}/payments",
                    handlers.receive_payment,
                    CustomerPaymentReceived.model_validate(
                        {
                            "message_id": str(uuid.uuid4()),
                            "payment_id": f"ARP-{account}-{n}",
                            "customer_account": account,
                            "payment_date": paid_on.isoformat(),
                            "amount": str(draw(cents)),
                            "currency": "USD",
                            "settle": settle,
                        }
                    ),
                )
            )
    return messages


def write_off(batch: str, account: str, voucher: str, amount: Decimal) -> Any:
    line = {
        "account_type": "Customer",
        "account": account,
        "debit": "0.00",
        "credit": str(amount),
        "currency": "USD",
        "transaction_date": "2015-09-30",
        "voucher": f"WOV-{batch}",
        "settles": [{"voucher": voucher, "amount": str(amount)}],
    }
    ledger = {
        "account_type": "Ledger",
        "account": "618900",
        "debit": str(amount),
        "credit": "0.00",
        "currency": "USD",
        "transaction_date": "2015-09-30",
        "voucher": f"WOV-{batch}",
    }
    return journal_event_adapter.validate_python(
        {
            "message_id": str(uuid.uuid4()),
            "event_type": "JournalPosted",
            "journal_name": "WriteOff",
            "batch_number": batch,
            "request_id": f"req-{batch}",
            "posting_date": "2015-09-30",
            "lines": [line, ledger],
        }
    )


@st.composite
def scenarios(draw: st.DrawFn) -> list[Message]:
    accounts = [f"C{n}" for n in range(draw(st.integers(1, 3)))]
    messages = []
    for n, account in enumerate(accounts):
        foreign = f"{accounts[(n + 1) % len(accounts)]}-0" if len(accounts) > 1 else None
        messages += draw(customer(account, foreign_invoice=foreign))
    return messages


def interleave(messages: list[Message], rng: random.Random) -> list[Message]:
    """A random merge of the streams, each stream's messages kept in order."""
    streams: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        streams[m.stream].append(m)
    order = [name for name, stream in streams.items() for _ in stream]
    rng.shuffle(order)
    positions = {name: iter(stream) for name, stream in streams.items()}
    return [next(positions[name]) for name in order]


def never_lagging(messages: list[Message]) -> list[Message]:
    rank = {handlers.record_customer_transaction: 0, handlers.settle_write_offs: 1, handlers.receive_payment: 2}
    return sorted(messages, key=lambda m: rank[m.handle])  # sorted() is stable: each stream keeps its order


# --- running ----------------------------------------------------------------------------------


async def final_states(orders: list[list[Message]]) -> list[dict[str, Any]]:
    """Run each order on one in-memory database, emptied in between (cheaper than a new schema)."""
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    all_tables = [*tables.TABLES, outbox.OutboxMessage.__table__]
    states = []
    try:
        await create_tables(engine, all_tables)
        sessions = create_session_factory(engine)
        for messages in orders:
            for m in messages:
                try:
                    async with sessions() as session, session.begin():
                        await m.handle(SETUP, UnitOfWork(session), m.body)
                except Rejected:
                    pass  # the runtime dead-letters it; its transaction rolled back
            async with sessions() as session:
                states.append(await _snapshot(session))
            async with engine.begin() as connection:
                for table in all_tables:
                    await connection.execute(table.delete())
        return states
    finally:
        await engine.dispose()


async def _snapshot(session: Any) -> dict[str, Any]:
    rows = (await session.exec(select(tables.OpenTransactionRow))).all()
    pairs: dict[tuple[str, str], tuple[Decimal, Decimal]] = defaultdict(lambda: (D(0), D(0)))
    for s in (await session.exec(select(tables.SettlementRow))).all():
        cash, discount = pairs[(s.debit_voucher, s.credit_voucher)]
        pairs[(s.debit_voucher, s.credit_voucher)] = (cash + s.amount_settled, discount + s.cash_discount_amount)
    ledger: dict[str, Decimal] = defaultdict(D)
    for message in (await session.exec(select(outbox.OutboxMessage))).all():
        if message.topic == GL_JOURNAL_LINES:
            for line in json.loads(message.payload)["lines"]:
                ledger[line["account"]] += D(line["debit"]) - D(line["credit"])
    pending = (await session.exec(select(tables.PendingMarkRow))).all()
    waiting = (await session.exec(select(tables.PendingWriteOffRow))).all()
    return {
        # Cash discount vouchers are numbered in the order discounts are taken: compared by their totals.
        "open": {r.voucher: (r.open_amount, r.discount_taken) for r in rows if r.transaction_type != "CashDiscount"},
        "discounts": sum((r.original_amount for r in rows if r.transaction_type == "CashDiscount"), D(0)),
        "pairs": {k: v for k, v in pairs.items() if v != (D(0), D(0))},
        "ledger": {a: v for a, v in ledger.items() if v},
        "pending marks": sorted((r.payment_voucher, r.invoice_id) for r in pending),
        "pending write-offs": sorted((r.write_off_voucher, r.voucher, r.amount) for r in waiting),
    }


@pytest.mark.slow  # hundreds of scenarios through the real handlers
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_any_interleaving_of_the_input_topics_gives_the_same_final_state(messages, rng):
    orders = [never_lagging(messages), interleave(messages, rng)]
    expected, *others = asyncio.run(final_states(orders))
    for order, state in zip(orders[1:], others):
        assert state == expected, [
            getattr(m.body, "voucher", None) or getattr(m.body, "payment_id", None) or m.body.batch_number
            for m in order
        ]


# --- batches ------------------------------------------------------------------------------------

BATCH_OF = {
    handlers.record_customer_transaction: handlers.record_customer_transactions,
    handlers.settle_write_offs: handlers.settle_write_off_journals,
    handlers.receive_payment: handlers.receive_payments,
}


def with_bad_payments(messages: list[Message], rng: random.Random) -> list[Message]:
    """The scenario plus, after some payments, a re-send of it (a new message id, the same content: a no-op)
    and a payment that cannot be taken (its id again with other content, or a currency settlement does not
    book): what a batch has to tell apart from its neighbours."""
    out = []
    for m in messages:
        out.append(m)
        if m.handle is not handlers.receive_payment or rng.random() < 0.5:
            continue
        payment = m.body
        again = payment.model_copy(update={"message_id": str(uuid.uuid4())})
        out.append(Message(m.stream, m.handle, again))
        bad = rng.choice([{"amount": payment.amount + D("1.00")}, {"payment_id": f"{payment.payment_id}-EUR"}])
        if "payment_id" in bad:
            bad["currency"] = "EUR"
        body = payment.model_copy(update={"message_id": str(uuid.uuid4()), **bad})
        out.append(Message(m.stream, m.handle, CustomerPaymentReceived.model_validate(body.model_dump())))
    return out


def batched(messages: list[Message], rng: random.Random) -> list[list[Message]]:
    """The messages in order, cut into batches of one topic each (as a fetch hands them over), of random size."""
    batches: list[list[Message]] = []
    for m in messages:
        if batches and batches[-1][0].handle is m.handle and rng.random() < 0.8:
            batches[-1].append(m)
        else:
            batches.append([m])
    return batches


async def final_states_and_rejections(
    one_by_one: list[Message], batches: list[list[Message]]
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The final state and the rejected messages (by message id, in order) of the messages handled one per
    transaction and of the same messages handled a batch per transaction."""
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    all_tables = [*tables.TABLES, outbox.OutboxMessage.__table__]
    states, rejections = [], []
    try:
        await create_tables(engine, all_tables)
        sessions = create_session_factory(engine)
        rejected: list[str] = []
        for m in one_by_one:
            try:
                async with sessions() as session, session.begin():
                    await m.handle(SETUP, UnitOfWork(session), m.body)
            except Rejected:
                rejected.append(m.body.message_id)
        async with sessions() as session:
            states.append(await _snapshot(session))
        rejections.append(rejected)
        async with engine.begin() as connection:
            for table in all_tables:
                await connection.execute(table.delete())
        rejected = []
        for batch in batches:
            async with sessions() as session, session.begin():
                uow = UnitOfWork(session)
                await BATCH_OF[batch[0].handle](SETUP, uow, [m.body for m in batch])
                rejected += [r.message.message_id for r in uow.rejected]
        async with sessions() as session:
            states.append(await _snapshot(session))
        rejections.append(rejected)
        return states, rejections
    finally:
        await engine.dispose()


@pytest.mark.slow  # hundreds of scenarios through the real handlers
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_a_batch_per_transaction_ends_as_one_message_per_transaction(messages, rng):
    """Batches holding several customers' messages, re-sent payments and payments that cannot be taken settle
    exactly as the same messages one at a time, and reject the same messages, alone."""
    order = with_bad_payments(interleave(messages, rng), rng)
    (expected, state), (rejected_alone, rejected_in_batches) = asyncio.run(
        final_states_and_rejections(order, batched(order, rng))
    )
    assert state == expected
    assert rejected_in_batches == rejected_alone


@pytest.mark.slow  # hundreds of scenarios through the real handlers
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_a_batch_answering_automatic_payments_from_small_debit_windows_ends_as_one_by_one(messages, rng):
    """The same with an automatic payment reading its first open debit only (`_FIRST_DEBITS` 1, so the batch's
    windows hold 2): a window runs short, is read again, and is dropped when a debit reopens or is new."""
    order = with_bad_payments(interleave(messages, rng), rng)
    with mock.patch.object(handlers, "_FIRST_DEBITS", 1):
        (expected, state), (rejected_alone, rejected_in_batches) = asyncio.run(
            final_states_and_rejections(order, batched(order, rng))
        )
    assert state == expected
    assert rejected_in_batches == rejected_alone


def test_automatic_payments_in_one_batch_read_on_when_their_debit_window_runs_short():
    """Eight invoices, then one batch of six automatic payments each paying one (the last one short) and a
    marked one reopening nothing: with windows of 2 debits the batch reads on as it runs short, and ends as
    the payments one at a time do (and as they do with the usual window)."""
    invoices = [
        Message(
            "C1/invoices",
            handlers.record_customer_transaction,
            CustomerTransactionPosted.model_validate(
                {
                    "voucher": f"FTI-C1-{n}",
                    "transaction_type": "Invoice",
                    "customer_account": "C1",
                    "transaction_date": (START + timedelta(days=n)).isoformat(),
                    "invoice_id": f"C1-{n}",
                    "currency": "USD",
                    "amount": "100.00",
                    "due_date": (START + timedelta(days=30 + n)).isoformat(),
                }
            ),
        )
        for n in range(8)
    ]
    payments = [
        Message(
            "C1/payments",
            handlers.receive_payment,
            CustomerPaymentReceived.model_validate(
                {
                    "payment_id": f"ARP-C1-{n}",
                    "customer_account": "C1",
                    "payment_date": (START + timedelta(days=40)).isoformat(),
                    "amount": "60.00" if n == 5 else "100.00" if n != 2 else "150.00",
                    "currency": "USD",
                    "settle": [{"invoice_id": "C1-7", "use_cash_discount": "Never"}] if n == 3 else None,
                }
            ),
        )
        for n in range(6)
    ]
    order = [*invoices, *payments]
    batches = [[m] for m in invoices] + [payments]
    with mock.patch.object(handlers, "_FIRST_DEBITS", 1):
        (expected, state), (rejected_alone, rejected_in_batches) = asyncio.run(
            final_states_and_rejections(order, batches)
        )
    assert state == expected
    assert rejected_in_batches == rejected_alone == []
    (usual, _), _ = asyncio.run(final_states_and_rejections(order, batches))
    assert usual == expected
