"""Traces across the HTTP and Kafka hops: one invoice is one trace from invoicing's consumer through the
outbox relay to ledger-posting's consumer (an in-memory exporter records the spans)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from kredit_invoicing.app import create_app as create_invoicing
from kredit_invoicing.settings import InvoicingSettings
from kredit_ledger_posting.app import create_app as create_ledger
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_shared import telemetry
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, GL_JOURNAL_LINES
from kredit_shared.outbox import OutboxMessage
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, serve


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.enable_tracing("test", SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        telemetry.disable_tracing()


def invoice(invoice_id: str) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": "4027",
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "lines": [{"amount": "1000.00", "revenue_account": "401100"}],
    }


@contextlib.asynccontextmanager
async def invoicing_and_ledger(kafka, tmp_path):
    kafka_settings = isolated_kafka(kafka)
    invoicing = create_invoicing(
        InvoicingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'i.db'}", **kafka_settings)
    )
    ledger = create_ledger(
        LedgerPostingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'l.db'}", **kafka_settings)
    )
    async with serve(invoicing) as invoicing_client, serve(ledger) as ledger_client:
        yield kafka_settings["topic_prefix"], invoicing_client, ledger_client, invoicing


async def test_one_invoice_is_one_trace_from_invoicing_to_ledger_posting(kafka, tmp_path, spans):
    async with invoicing_and_ledger(kafka, tmp_path) as (prefix, _, ledger, _app):
        await publish(kafka.bootstrap_servers, prefix + ERP_CUSTOMER_INVOICES, invoice("T-1"), key="4027")

        def ledger_span():
            return [
                s
                for s in spans.get_finished_spans()
                if s.name == f"process {GL_JOURNAL_LINES}" and s.attributes["kredit.service"] == "ledger-posting"
            ]

        (posted,) = await eventually(ledger_span, timeout=20)
        trial_balance = (await ledger.get("/api/v1/trial-balance", params={"as_of": "2100-01-01"})).json()
        assert {a["account"] for a in trial_balance["accounts"]} >= {"130100", "401100"}

    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    chain = [posted]
    while chain[-1].parent is not None:
        chain.append(by_id[chain[-1].parent.span_id])
    assert [(s.attributes["kredit.service"], s.name) for s in reversed(chain)] == [
        ("invoicing", f"process {ERP_CUSTOMER_INVOICES}"),
        ("invoicing", f"send {GL_JOURNAL_LINES}"),
        ("ledger-posting", f"process {GL_JOURNAL_LINES}"),
    ]
    trace_id = posted.context.trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    # the invoice's other output (its customer transaction) is in the same trace
    assert {s.name for s in in_trace} >= {"send ar.customer-transactions", f"send {GL_JOURNAL_LINES}"}
    assert chain[-1].attributes["messaging.message.id"]


async def test_an_http_request_continues_the_callers_trace(kafka, tmp_path, spans):
    caller_trace = uuid.uuid4().hex
    async with invoicing_and_ledger(kafka, tmp_path) as (_, _, ledger, _app):
        response = await ledger.get(
            "/api/v1/trial-balance",
            params={"as_of": "2100-01-01"},
            headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
        )
        assert response.status_code == 200
    (server,) = [s for s in spans.get_finished_spans() if s.name == "GET /api/v1/trial-balance"]
    assert format(server.context.trace_id, "032x") == caller_trace
    assert server.attributes["http.response.status_code"] == 200


async def test_with_tracing_off_no_trace_header_is_written_or_sent(kafka, tmp_path):
    async with invoicing_and_ledger(kafka, tmp_path) as (prefix, _, _ledger, invoicing_app):
        async with TopicProbe(kafka.bootstrap_servers, [prefix + GL_JOURNAL_LINES]) as out:
            await publish(kafka.bootstrap_servers, prefix + ERP_CUSTOMER_INVOICES, invoice("T-2"), key="4027")
            (record,) = await out.wait_for(lambda r: True, timeout=20)
        async with invoicing_app.state.runtime.sessions() as session:
            rows = (await session.exec(select(OutboxMessage))).scalars().all()
    assert "traceparent" not in record.headers
    assert rows and all(name != "traceparent" for row in rows for name, _ in row.headers)
