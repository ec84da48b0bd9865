"""The collections service in-process on the real test broker, fed as the other services feed it.

`start_collections()` runs the service and yields a `Collections` driver: it publishes contract
messages on the service's (prefixed) topics, calls the HTTP API, and probes gl.general-journals.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from kredit_collections.app import create_app
from kredit_collections.settings import CollectionsSettings
from kredit_shared.contracts import (
    GL_GENERAL_JOURNALS,
    ContractMessage,
    CustomerTransactionPosted,
    GeneralJournalCancelRequested,
    GeneralJournalRequested,
    JournalCancelRefused,
    JournalCreated,
    JournalPosted,
    JournalRejected,
    JournalVoided,
    OpenItemsSettled,
    PostedJournalLine,
)
from kredit_shared.service import ServiceRuntime
from kredit_shared.testing import BrokerUnderTest, TopicProbe, eventually, isolated_kafka, serve


@dataclass
class Collections:
    settings: CollectionsSettings
    client: httpx.AsyncClient
    journals: TopicProbe  # what the service published on gl.general-journals
    producer: AIOKafkaProducer
    runtime: ServiceRuntime  # for the few checks the API cannot show

    # --- as the other services would publish ----------------------------------------------------

    async def publish(self, *messages: ContractMessage) -> None:
        for message in messages:
            await self.producer.send_and_wait(
                self.settings.topic(message.topic), message.model_dump_json().encode(), key=message.key().encode()
            )

    async def post_transaction(
        self,
        voucher: str,
        type: str,
        amount: str,
        *,
        on: str,
        account: str,
        name: str | None = None,
        invoice_id: str | None = None,
        due: str | None = None,
        tax: str = "0.00",
        currency: str = "USD",
    ) -> None:
        await self.publish(
            CustomerTransactionPosted(
                voucher=voucher,
                transaction_type=type,
                customer_account=account,
                customer_name=name,
                transaction_date=on,
                invoice_id=invoice_id,
                amount=Decimal(amount),
                currency=currency,
                due_date=due,
                sales_tax_amount=Decimal(tax),
            )
        )

    async def settle(
        self,
        settlement_id: str,
        debit: str,
        credit: str,
        amount: str,
        *,
        on: str,
        account: str,
        discount: str = "0.00",
        discount_voucher: str | None = None,
    ) -> None:
        await self.publish(
            OpenItemsSettled(
                settlement_id=settlement_id,
                customer_account=account,
                settlement_date=on,
                currency="USD",
                debit_voucher=debit,
                credit_voucher=credit,
                amount_settled=Decimal(amount),
                cash_discount_amount=Decimal(discount),
                cash_discount_voucher=discount_voucher,
            )
        )

    async def journal_created(self, write_off_id: str, batch: str) -> None:
        await self.publish(JournalCreated(request_id=write_off_id, journal_name="WriteOff", batch_number=batch))

    async def journal_posted(self, journal: GeneralJournalRequested, batch: str) -> None:
        vouchers = {g: f"WOV-{n:06d}" for n, g in enumerate(dict.fromkeys(l.voucher_group for l in journal.lines), 1)}
        lines = [PostedJournalLine(**l.model_dump(), voucher=vouchers[l.voucher_group]) for l in journal.lines]
        await self.publish(
            JournalPosted(
                request_id=journal.request_id,
                journal_name=journal.journal_name,
                batch_number=batch,
                posting_date=journal.lines[0].transaction_date,
                lines=lines,
            )
        )

    async def journal_rejected(self, write_off_id: str, reason: str) -> None:
        await self.publish(JournalRejected(request_id=write_off_id, journal_name="WriteOff", reason=reason))

    async def journal_voided(self, write_off_id: str, batch: str) -> None:
        await self.publish(JournalVoided(request_id=write_off_id, journal_name="WriteOff", batch_number=batch))

    async def cancel_refused(self, write_off_id: str, batch: str, reason: str) -> None:
        await self.publish(
            JournalCancelRefused(request_id=write_off_id, journal_name="WriteOff", batch_number=batch, reason=reason)
        )

    # --- the HTTP API ---------------------------------------------------------------------------

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(f"/api/v1{path}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def balances(self, account: str) -> dict[str, str]:
        """voucher -> open balance, once the customer is known."""
        response = await self.client.get(f"/api/v1/customers/{account}/transactions")
        if response.status_code == 404:
            return {}
        return {t["voucher"]: t["balance"] for t in response.json()["transactions"]}

    async def until_balances(self, account: str, expected: dict[str, str]) -> None:
        async def check() -> bool:
            assert await self.balances(account) == expected
            return True

        await eventually(check)

    async def write_off(self, **body: Any) -> str:
        response = await self.client.post("/api/v1/write-offs", json=body)
        assert response.status_code == 202, response.text
        return response.json()["write_off_id"]

    async def refused(self, status: int, **body: Any) -> str:
        response = await self.client.post("/api/v1/write-offs", json=body)
        assert response.status_code == status, response.text
        return response.json()["detail"]

    async def journal(self, write_off_id: str) -> GeneralJournalRequested:
        [record] = await self.journals.wait_for(lambda r: r.key == write_off_id and "message_type" not in r.json())
        return GeneralJournalRequested.model_validate_json(record.value)

    async def cancel(self, write_off_id: str, status: int, **body: Any) -> dict[str, Any]:
        response = await self.client.post(f"/api/v1/write-offs/{write_off_id}/cancel", json=body or None)
        assert response.status_code == status, response.text
        return response.json()

    async def cancels(self, write_off_id: str, count: int = 1) -> list[GeneralJournalCancelRequested]:
        """The cancels the service published for the write-off (exactly `count`, after a short settle)."""

        def is_cancel(r) -> bool:
            return r.key == write_off_id and r.json().get("message_type") == "GeneralJournalCancelRequested"

        await self.journals.wait_for(is_cancel, count=count)
        await self.journals.settle(0.3)
        found = [
            GeneralJournalCancelRequested.model_validate_json(r.value) for r in self.journals.records if is_cancel(r)
        ]
        assert len(found) == count, found
        return found

    async def until_status(self, write_off_id: str, status: str) -> dict[str, Any]:
        async def check() -> dict[str, Any]:
            write_off = await self.get(f"/write-offs/{write_off_id}")
            assert write_off["status"] == status, write_off
            return write_off

        return await eventually(check)


@pytest.fixture
def start_collections(
    kafka: BrokerUnderTest, tmp_path: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[Collections]]:
    @contextlib.asynccontextmanager
    async def start(database_url: str | None = None, **overrides: Any) -> AsyncIterator[Collections]:
        settings = CollectionsSettings(
            database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'collections.db'}",
            **isolated_kafka(kafka),
            **overrides,
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
        await producer.start()
        try:
            app = create_app(settings)
            async with (
                serve(app) as client,
                TopicProbe(kafka.bootstrap_servers, [settings.topic(GL_GENERAL_JOURNALS)]) as journals,
            ):
                yield Collections(settings, client, journals, producer, app.state.runtime)
        finally:
            await producer.stop()

    return start
