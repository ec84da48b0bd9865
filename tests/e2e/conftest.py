"""The whole stack in one event loop: four services on one broker (own topic prefix), each with its
own fresh PostgreSQL database (SQLite when no PostgreSQL server can be had)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from kredit_collections.app import create_app as create_collections
from kredit_collections.settings import CollectionsSettings
from kredit_invoicing.app import create_app as create_invoicing
from kredit_invoicing.settings import InvoicingSettings
from kredit_ledger_posting.app import create_app as create_ledger
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_settlement.app import create_app as create_settlement
from kredit_settlement.settings import SettlementSettings
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, ERP_CUSTOMER_PAYMENTS
from kredit_shared.testing import auth_header, eventually, fresh_postgres_database, isolated_kafka, publish, serve


@dataclass
class Stack:
    bootstrap_servers: str
    topic_prefix: str
    collections: httpx.AsyncClient
    invoicing: httpx.AsyncClient
    settlement: httpx.AsyncClient
    ledger: httpx.AsyncClient

    async def erp_invoice(self, **fields: Any) -> None:
        message = {"message_id": str(uuid.uuid4()), "currency": "USD"} | fields
        await publish(
            self.bootstrap_servers, self.topic_prefix + ERP_CUSTOMER_INVOICES, message, key=fields["customer_account"]
        )

    async def erp_payment(self, **fields: Any) -> None:
        message = {"message_id": str(uuid.uuid4()), "currency": "USD"} | fields
        await publish(
            self.bootstrap_servers, self.topic_prefix + ERP_CUSTOMER_PAYMENTS, message, key=fields["customer_account"]
        )

    async def transactions(self, account: str) -> list[dict]:
        response = await self.collections.get(f"/api/v1/customers/{account}/transactions")
        return response.json()["transactions"] if response.status_code == 200 else []

    async def wait_for_transactions(self, account: str, check) -> list[dict]:
        async def ready():
            rows = await self.transactions(account)
            return rows if check(rows) else None

        return await eventually(ready, timeout=20)

    async def wait_until_open_in_settlement(self, account: str, voucher: str) -> None:
        async def is_open():
            response = await self.settlement.get(f"/api/v1/customers/{account}/open-transactions")
            return response.status_code == 200 and voucher in response.text

        await eventually(is_open, timeout=20)

    async def wait_until_booked(self, *vouchers: str) -> None:
        """Until ledger-posting has booked every voucher: collections and settlement learn of a posting apart
        from the ledger, so a trial balance taken as a baseline waits for the ledger too."""

        async def booked(voucher: str) -> bool:
            response = await self.ledger.get("/api/v1/ledger-entries", params={"voucher": voucher})
            return response.status_code == 200 and bool(response.json()["entries"])

        for voucher in vouchers:
            await eventually(lambda voucher=voucher: booked(voucher), timeout=20)

    async def trial_balance(self, as_of: str = "2100-01-01") -> dict[str, dict]:
        body = (await self.ledger.get("/api/v1/trial-balance", params={"as_of": as_of})).json()
        assert body["total_debit"] == body["total_credit"], "the ledger always balances"
        return {row["account"]: row for row in body["accounts"]}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(kafka, postgres_admin_url, tmp_path_factory) -> AsyncIterator[Stack]:
    kafka_settings = isolated_kafka(kafka)
    folder: Path = tmp_path_factory.mktemp("stack")
    async with contextlib.AsyncExitStack() as resources:

        async def database(name: str) -> str:
            if postgres_admin_url is None:
                return f"sqlite+aiosqlite:///{folder / name}.db"
            return await resources.enter_async_context(fresh_postgres_database(postgres_admin_url))

        clients = {}
        for name, settings_class, create in [
            ("ledger", LedgerPostingSettings, create_ledger),
            ("invoicing", InvoicingSettings, create_invoicing),
            ("settlement", SettlementSettings, create_settlement),
            ("collections", CollectionsSettings, create_collections),
        ]:
            # The tests poll the ledger's trial balance until what they sent is booked: unlimited expensive reads
            # (tests/http checks the limits).
            settings = settings_class(
                database_url=await database(name), rate_limit_expensive_reads_per_minute=0, **kafka_settings
            )
            app = create(settings)
            clients[name] = await resources.enter_async_context(serve(app))
            # A subject per client: the write-off requested through collections is posted on the ledger
            # by someone else, as four-eyes wants (test_write_off_four_eyes.py tests the refusal).
            clients[name].headers.update(auth_header(app, subject=f"e2e-{name}"))
        yield Stack(kafka.bootstrap_servers, kafka_settings["topic_prefix"], **clients)
