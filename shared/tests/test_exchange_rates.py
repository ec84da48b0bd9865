"""Rates set over HTTP, as every service keeps them (kredit_shared.exchange_rates), on an in-memory database; and
through a runtime on a real broker, the documents kept for a rate booked when it arrives."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date
from decimal import Decimal
from functools import partial

import pytest
from prometheus_client import REGISTRY
from sqlmodel import Field, SQLModel, select

from kredit_shared import exchange_rates
from kredit_shared.company_setup import ExchangeRatePeriod, load_company_setup
from kredit_shared.contracts import (
    ERP_CUSTOMER_INVOICES,
    GL_EXCHANGE_RATES,
    CustomerInvoiceIssued,
    ExchangeRateSet,
    dead_letter_topic,
)
from kredit_shared.currencies import RateNotSet
from kredit_shared.database import create_engine, create_session_factory, create_tables
from kredit_shared.exchange_rates import (
    BOOKED_WHEN_RATE_IS_SET,
    ExchangeRateRow,
    RateRecordedMeanwhile,
    WaitingDocumentRow,
    keep_until_rate,
    load_rates,
    record_rates,
)
from kredit_shared.migrations import SHARED_TABLES
from kredit_shared.service import ServiceRuntime, UnitOfWork
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import TopicProbe, handler_database, isolated_kafka, publish, serve

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
            lambda uow: record_rates(uow, [rate("EUR", "2026-02-01", "1.08"), rate("GBP", "2026-01-01", "1.25")], "USD")
        )
        # A later message for the same currency and date replaces the rate, in its batch or a later one.
        await db.handle(
            lambda uow: record_rates(uow, [rate("GBP", "2026-01-01", "1.26"), rate("GBP", "2026-01-01", "1.27")], "USD")
        )
        async with db.unit_of_work() as uow:
            rates = await load_rates(uow.session, setup)
    assert rates.resolve("EUR", date(2026, 1, 15)) == D("1.05")  # the setup's, nothing set over HTTP for it
    assert rates.resolve("EUR", date(2026, 2, 15)) == D("1.08")  # set over HTTP for the setup's date: wins
    assert rates.resolve("GBP", date(2026, 3, 1)) == D("1.27")
    assert rates.resolve("USD", date(2026, 3, 1)) == D(1)


async def test_a_rate_for_the_accounting_currency_is_dead_lettered_with_the_apis_reason_and_the_rest_recorded():
    """Ledger-posting's API refuses it (422); a message carrying one all the same comes from another producer."""
    async with handler_database([]) as db:
        handled = await db.deliver(
            GL_EXCHANGE_RATES,
            [rate("USD", "2026-01-01", "1.10"), rate("EUR", "2026-01-01", "1.08")],
            partial(record_rates, accounting_currency="USD"),
        )
        stored = await db.all(select(ExchangeRateRow))
    assert handled.rejected == ["USD is the accounting currency: its rate is always 1"]
    assert [(e.topic, e.reason) for e in handled.emitted] == [
        (dead_letter_topic(GL_EXCHANGE_RATES), "USD is the accounting currency: its rate is always 1")
    ]
    assert [(row.currency, row.rate) for row in stored] == [("EUR", D("1.08"))]


class KeptInvoice(SQLModel, table=True):
    __tablename__ = "test_rates_booked_invoice"
    invoice_id: str = Field(primary_key=True)
    rate: Decimal


async def take_invoices(uow: UnitOfWork, invoices: list[CustomerInvoiceIssued]) -> None:
    """A minimal invoicing: keeps an invoice without a rate; REJECT- ones are refused for another reason."""
    rates = await load_rates(uow.session, load_company_setup())
    for invoice in invoices:
        try:
            rate = rates.resolve(invoice.currency, invoice.invoice_date)
        except RateNotSet as e:
            await keep_until_rate(uow, ERP_CUSTOMER_INVOICES, invoice, e.currency, e.on, str(e))
            continue
        if invoice.invoice_id.startswith("REJECT"):
            uow.reject(ERP_CUSTOMER_INVOICES, invoice, f"invoice {invoice.invoice_id} is not wanted")
            continue
        uow.session.add(KeptInvoice(invoice_id=invoice.invoice_id, rate=rate))


def euro_invoice(invoice_id: str) -> bytes:
    body = {
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": "A",
        "invoice_date": "2026-03-01",
        "currency": "EUR",
        "lines": [{"amount": "10.00"}],
    }
    return json.dumps(body).encode()


def consumed(service: str, topic: str, outcome: str) -> float:
    labels = {"service": service, "topic": topic, "outcome": outcome}
    return REGISTRY.get_sample_value("kredit_messages_consumed_total", labels) or 0.0


async def test_a_service_books_the_invoices_kept_for_a_rate_when_it_arrives_and_counts_each_on_its_topic(
    kafka, database_url
):
    """Through the runtime: the rates' batch books one kept invoice and dead-letters the other again, and that
    rejection counts on the invoices' topic, not against the rate message (which counts as processed)."""
    service = f"rates-{uuid.uuid4().hex[:6]}"
    settings = ServiceSettings(service_name=service, http_port=0, database_url=database_url, **isolated_kafka(kafka))
    runtime = ServiceRuntime(settings, tables=[KeptInvoice.__table__])
    runtime.subscribe_batch(ERP_CUSTOMER_INVOICES, CustomerInvoiceIssued.model_validate_json, take_invoices)
    exchange_rates.subscribe(runtime, "USD")
    dlq = settings.topic(dead_letter_topic(ERP_CUSTOMER_INVOICES))
    async with serve(runtime.http_app("rates")), TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        for invoice_id in ("E-1", "REJECT-1"):
            await publish(kafka.bootstrap_servers, settings.topic(ERP_CUSTOMER_INVOICES), euro_invoice(invoice_id))
        first = await probe.wait_for(lambda r: r.topic == dlq, count=2)
        assert all(r.headers["x-dlq-reason"].endswith(BOOKED_WHEN_RATE_IS_SET) for r in first)

        rate = ExchangeRateSet(currency="EUR", from_date="2026-02-01", rate="1.10")
        await publish(kafka.bootstrap_servers, settings.topic(GL_EXCHANGE_RATES), rate.model_dump_json())

        [again] = (await probe.wait_for(lambda r: r.topic == dlq, count=3))[2:]
        assert again.headers["x-dlq-reason"] == "invoice REJECT-1 is not wanted"
        async with runtime.sessions() as session:
            booked = (await session.exec(select(KeptInvoice))).all()
            assert [(i.invoice_id, i.rate) for i in booked] == [("E-1", D("1.10"))]
            assert (await session.exec(select(WaitingDocumentRow))).all() == []
    assert consumed(service, GL_EXCHANGE_RATES, "processed") == 1
    assert consumed(service, GL_EXCHANGE_RATES, "duplicate") == 0
    assert consumed(service, ERP_CUSTOMER_INVOICES, "dead_lettered") == 3


async def test_on_postgresql_a_document_kept_while_another_replica_records_its_rate_is_not_missed(database_url):
    """Two replicas at once (two transactions): the rate waits for the document kept first and books it; a
    document kept after the rate was recorded (its rates read before) fails, to be handled again and booked."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: its transactions cannot interleave so")
    engine = create_engine(database_url)
    await create_tables(engine, [*SHARED_TABLES, KeptInvoice.__table__])
    sessions = create_session_factory(engine)
    handler_of = {ERP_CUSTOMER_INVOICES: (CustomerInvoiceIssued.model_validate_json, take_invoices)}.get

    async def record(currency: str) -> None:
        async with sessions() as session, session.begin():
            rate = ExchangeRateSet(currency=currency, from_date="2026-02-01", rate="1.10")
            await record_rates(UnitOfWork(session, group_id="g"), [rate], "USD", handler_of)

    async def keep(uow: UnitOfWork, invoice_id: str, currency: str) -> None:
        invoice = CustomerInvoiceIssued.model_validate_json(euro_invoice(invoice_id)).model_copy(
            update={"currency": currency}
        )
        await keep_until_rate(uow, ERP_CUSTOMER_INVOICES, invoice, currency, invoice.invoice_date, "no rate")

    async def keep_alone(invoice_id: str, currency: str) -> None:
        async with sessions() as session, session.begin():
            await keep(UnitOfWork(session, group_id="g"), invoice_id, currency)

    try:
        async with sessions() as session, session.begin():
            await keep(UnitOfWork(session, group_id="g"), "E-1", "EUR")
            recording = asyncio.create_task(record("EUR"))
            await asyncio.sleep(0.5)
            assert not recording.done(), "the rate waits for the document being kept"
        await recording
        async with sessions() as session:
            assert [i.invoice_id for i in (await session.exec(select(KeptInvoice))).all()] == ["E-1"]

        async with sessions() as session, session.begin():
            gbp = ExchangeRateSet(currency="GBP", from_date="2026-02-01", rate="1.25")
            await record_rates(UnitOfWork(session, group_id="g"), [gbp], "USD", handler_of)
            keeping = asyncio.create_task(keep_alone("G-1", "GBP"))
            await asyncio.sleep(0.5)
            assert not keeping.done(), "the document waits for the rate being recorded"
        with pytest.raises(RateRecordedMeanwhile):
            await keeping
        async with sessions() as session:
            assert (await session.exec(select(WaitingDocumentRow))).all() == []
    finally:
        await engine.dispose()
