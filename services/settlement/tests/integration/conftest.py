"""A settlement service run in-process on the real test broker, with helpers to feed it and watch it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kredit_settlement.app import create_app
from kredit_settlement.settings import SettlementSettings
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    ERP_CUSTOMER_PAYMENTS,
    GL_JOURNAL_EVENTS,
    GL_JOURNAL_LINES,
    dead_letter_topic,
)
from kredit_shared.testing import BrokerUnderTest, Record, TopicProbe, eventually, isolated_kafka, publish, serve

WATCHED = [
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    GL_JOURNAL_LINES,
    *(dead_letter_topic(t) for t in (ERP_CUSTOMER_PAYMENTS, AR_CUSTOMER_TRANSACTIONS, GL_JOURNAL_EVENTS)),
]


@dataclass
class Settlement:
    """One running settlement service and what it published."""

    kafka: BrokerUnderTest
    settings: SettlementSettings
    http: httpx.AsyncClient
    probe: TopicProbe

    # --- feeding ------------------------------------------------------------------------------

    async def publish(self, topic: str, value: dict | bytes, key: str = "4027") -> None:
        await publish(self.kafka.bootstrap_servers, self.settings.topic(topic), value, key=key)

    async def invoice(
        self,
        invoice_id: str,
        amount: str = "1000.00",
        *,
        customer: str = "4027",
        on: str = "2015-06-25",
        due: str = "2015-07-25",
        tiers: list[tuple[str, str, str]] | None = None,
        wait: bool = True,
        **changes: Any,
    ) -> dict:
        """Post an invoice as invoicing would; by default FTI-10020's terms (1 % until 9 July) and wait until
        settlement holds it. Negative amounts make a credit note."""
        tiers = [("2015-07-09", "1.00", "10.00")] if tiers is None else tiers
        credit_note = amount.startswith("-")
        event = {
            "message_id": str(uuid.uuid4()),
            "voucher": ("CCN-" if credit_note else "FTI-") + invoice_id,
            "transaction_type": "CreditNote" if credit_note else "Invoice",
            "customer_account": customer,
            "transaction_date": on,
            "invoice_id": invoice_id,
            "amount": amount,
            "currency": "USD",
            "due_date": due,
            "cash_discounts": [{"date": d, "percent": p, "amount": a} for d, p, a in tiers],
            "cash_discount_account": "520100" if tiers else None,
        } | changes
        await self.publish(AR_CUSTOMER_TRANSACTIONS, event, key=customer)
        if wait:
            await eventually(lambda: self.balance(event["voucher"], customer))
        return event

    async def pay(
        self,
        payment_id: str,
        amount: str,
        on: str,
        *,
        customer: str = "4027",
        marks: list[tuple[str, str | None, str]] | None = None,
        key: str | None = None,
        **changes: Any,
    ) -> dict:
        """Publish a payment; marks are (invoice_id, amount_to_settle, use_cash_discount)."""
        message = {
            "message_id": str(uuid.uuid4()),
            "payment_id": payment_id,
            "customer_account": customer,
            "payment_date": on,
            "amount": amount,
            "currency": "USD",
        } | changes
        if marks is not None:
            message["settle"] = [
                {"invoice_id": i, "use_cash_discount": u} | ({"amount_to_settle": a} if a else {}) for i, a, u in marks
            ]
        await self.publish(ERP_CUSTOMER_PAYMENTS, message, key=key or customer)
        return message

    # --- watching -----------------------------------------------------------------------------

    async def wait_for(
        self, topic: str, predicate: Callable[[dict], bool] = lambda m: True, count: int = 1, timeout: float = 15
    ) -> list[dict]:
        physical = self.settings.topic(topic)
        records = await self.probe.wait_for(lambda r: r.topic == physical and predicate(r.json()), count, timeout)
        return [r.json() for r in records]

    async def transaction(self, voucher: str) -> dict:
        [t] = await self.wait_for(AR_CUSTOMER_TRANSACTIONS, lambda m: m["voucher"] == voucher)
        return t

    async def settlements(self, count: int = 1, **fields: str) -> list[dict]:
        return await self.wait_for(AR_SETTLEMENTS, lambda m: all(m[k] == v for k, v in fields.items()), count)

    async def voucher(self, voucher: str) -> dict:
        [v] = await self.wait_for(GL_JOURNAL_LINES, lambda m: m["voucher"] == voucher)
        return v

    async def dead_letters(self, topic: str, count: int = 1, containing: str = "") -> list[Record]:
        physical = self.settings.topic(dead_letter_topic(topic))
        return await self.probe.wait_for(
            lambda r: r.topic == physical and containing in r.headers.get("x-dlq-reason", ""), count
        )

    async def published(self, topic: str, seconds: float = 0.5) -> list[dict]:
        """Everything on `topic` once nothing more has come for `seconds`."""
        await self.probe.settle(seconds)
        return [r.json() for r in self.probe.records if r.topic == self.settings.topic(topic)]

    # --- asking over HTTP ---------------------------------------------------------------------

    async def open_transactions(self, customer: str = "4027", include_settled: bool = False) -> dict[str, dict]:
        response = await self.http.get(
            f"/api/v1/customers/{customer}/open-transactions", params={"include_settled": include_settled}
        )
        assert response.status_code == 200, response.text
        return {t["voucher"]: t for t in response.json()["transactions"]}

    async def balance(self, voucher: str, customer: str = "4027") -> Decimal | None:
        t = (await self.open_transactions(customer, include_settled=True)).get(voucher)
        return None if t is None else Decimal(t["open_amount"])

    async def preview(
        self, payment_date: str, *marks: tuple[str, str | None, str], customer: str = "4027"
    ) -> httpx.Response:
        return await self.http.post(
            "/api/v1/settlement-preview",
            json={
                "customer_account": customer,
                "payment_date": payment_date,
                "marks": [
                    {"invoice_id": i, "use_cash_discount": u} | ({"amount_to_settle": a} if a else {})
                    for i, a, u in marks
                ],
            },
        )


StartSettlement = Callable[..., AbstractAsyncContextManager[Settlement]]


@pytest.fixture
def start_settlement(kafka: BrokerUnderTest, tmp_path) -> StartSettlement:
    """`async with start_settlement(database_url=None, **settings) as service:` (SQLite in tmp_path by default)."""

    @asynccontextmanager
    async def start(database_url: str | None = None, **overrides: Any) -> AsyncIterator[Settlement]:
        settings = SettlementSettings(
            http_port=0,
            database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'settlement.db'}",
            **isolated_kafka(kafka) | overrides,
        )
        topics = [settings.topic(t) for t in WATCHED]
        async with TopicProbe(kafka.bootstrap_servers, topics) as probe, serve(create_app(settings)) as http:
            yield Settlement(kafka, settings, http, probe)

    return start
