"""`kredit import invoices` and `kredit export aged-balances` as real processes, against the real
broker, invoicing and collections (collections on a real port, since the export speaks HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import uvicorn
from pydantic import ValidationError

from kredit_collections.app import create_app as collections_app
from kredit_collections.settings import CollectionsSettings
from kredit_invoicing.app import create_app as invoicing_app
from kredit_invoicing.settings import InvoicingSettings
from kredit_shared.auth import Role
from kredit_shared.cli.imports import invoice_of
from kredit_shared.testing import eventually, free_port, isolated_kafka, serve, token_header

pytestmark = pytest.mark.slow  # runs the `kredit` CLI as processes

OPENING_BALANCES = """\
invoice_id,customer_account,customer_name,invoice_date,due_date,currency,amount,sales_tax_amount,description
OB-1,US-100,Alpine Ski House,2015-01-10,2015-02-09,USD,400.00,,Opening balance
OB-2,US-100,Alpine Ski House,2015-03-01,2015-03-31,USD,100.00,25.00,
OB-3,US-200,Coho Winery,2014-11-15,2014-12-15,USD,1200.00,,
OB-4,US-300,Fourth Coffee,2015-02-01,2015-03-01,USD,12.345,,
OB-5,US-300,Fourth Coffee,2015-02-30,,USD,80.00,,
OB-1,US-100,Alpine Ski House,2015-01-10,2015-02-09,USD,400.00,,a second time
"""


@contextlib.asynccontextmanager
async def on_a_port(app) -> AsyncIterator[str]:
    """Serve the app with uvicorn on a free local port (lifespan included); stopped even on failure."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def kredit(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """The `kredit` console script of this environment, as its own process."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kredit"),
        *args,
        cwd=cwd,
        env=os.environ | {"COLUMNS": "250"} | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode or 0, output.decode()


async def test_opening_balances_are_imported_once_with_their_rejects_listed_and_exported_as_aged_balances(
    kafka, tmp_path
):
    k = isolated_kafka(kafka)
    invoicing = InvoicingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'invoicing.db'}", **k)
    collections = CollectionsSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'collections.db'}", **k)
    balances = tmp_path / "opening-balances.csv"
    balances.write_text(OPENING_BALANCES)
    async with serve(invoicing_app(invoicing)), on_a_port(collections_app(collections)) as collections_url:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": k["kafka_bootstrap_servers"],
            "TOPIC_PREFIX": k["topic_prefix"],
            "COLLECTIONS_URL": collections_url,
            "KREDIT_TOKEN": token_header(Role.viewer)["Authorization"].removeprefix("Bearer "),
        }
        code, output = await kredit(env, tmp_path, "import", "invoices", str(balances))
        assert code == 1, output  # some rows were rejected
        assert "3 invoice(s) published" in output and "3 rejected" in output
        rejects = {line.split("│")[1].strip(): line for line in output.splitlines() if line.count("│") == 4}
        assert "amount 12.345 has more than two decimals" in rejects["5"]
        assert "'2015-02-30' is not a valid calendar date" in rejects["6"]
        assert "invoice OB-1 is on line 2 too" in rejects["7"]

        out = tmp_path / "aged.csv"

        async def exported() -> list[dict]:
            # One customer per page: the export follows the pages to the end.
            code, output = await kredit(
                env, tmp_path, "export", "aged-balances", "--as-of", "2015-03-31", "--page-size", "1", str(out)
            )
            assert code == 0, output
            rows = list(csv.DictReader(out.open()))
            return rows if len(rows) == 2 else []

        rows = await eventually(exported, timeout=60)
        assert rows == [
            {
                "customer_account": "US-100",
                "customer_name": "Alpine Ski House",
                "currency": "USD",
                "balance": "525.00",
                "Current": "125.00",
                "1-30": "0.00",
                "31-60": "400.00",
                "61-90": "0.00",
                "91+": "0.00",
            },
            {
                "customer_account": "US-200",
                "customer_name": "Coho Winery",
                "currency": "USD",
                "balance": "1200.00",
                "Current": "0.00",
                "1-30": "0.00",
                "31-60": "0.00",
                "61-90": "0.00",
                "91+": "1200.00",
            },
        ]

        # The same file again: the message ids are the same, so nothing is posted twice.
        code, output = await kredit(env, tmp_path, "import", "invoices", str(balances))
        assert "3 invoice(s) published" in output
        await asyncio.sleep(3)
        code, output = await kredit(env, tmp_path, "export", "aged-balances", "--as-of", "2015-03-31", "-")
        assert code == 0
        assert [line.split(",")[:4] for line in output.splitlines() if line.startswith("US-")] == [
            ["US-100", "Alpine Ski House", "USD", "525.00"],
            ["US-200", "Coho Winery", "USD", "1200.00"],
        ]

        code, output = await kredit(env, tmp_path, "import", "invoices", "--dry-run", str(balances))
        assert "3 invoice(s) valid (dry run: nothing published); 3 rejected" in output


async def test_the_export_says_so_when_collections_does_not_answer(tmp_path):
    env = {"COLLECTIONS_URL": f"http://127.0.0.1:{free_port()}"}
    code, output = await kredit(env, tmp_path, "export", "aged-balances", "--as-of", "2015-03-31", "x.csv")
    assert code == 2
    assert "collections does not answer" in output
    assert "Traceback" not in output


async def test_the_export_without_a_token_says_how_to_get_one(kafka, tmp_path):
    collections = CollectionsSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'collections.db'}", **isolated_kafka(kafka)
    )
    async with on_a_port(collections_app(collections)) as collections_url:
        env = {"COLLECTIONS_URL": collections_url, "DATA_DIR": str(tmp_path / "no-data")}
        code, output = await kredit(env, tmp_path, "export", "aged-balances", "--as-of", "2015-03-31", "-")
    assert code == 1
    assert "answered 401" in output and "KREDIT_TOKEN" in output


def test_an_opening_balance_in_a_foreign_currency_keeps_the_rate_the_old_system_booked_it_at():
    row = {"invoice_id": "OB-7", "customer_account": "DE-1", "invoice_date": "2026-01-31", "currency": "EUR"}
    assert invoice_of(row | {"amount": "100.00", "exchange_rate": "1.10"}).exchange_rate == Decimal("1.10")
    assert invoice_of(row | {"amount": "100.00", "exchange_rate": ""}).exchange_rate is None
    with pytest.raises(ValidationError, match="exchange_rate"):
        invoice_of(row | {"amount": "100.00", "exchange_rate": "1,10"})
