"""Vouchers and journals at the contract's bounds (1,000 lines of the largest amount) post and sum exactly."""

from __future__ import annotations

import uuid
from decimal import Decimal

from kredit_ledger_posting.app import create_app
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_shared.contracts import GL_GENERAL_JOURNALS, GL_JOURNAL_EVENTS, GL_JOURNAL_LINES
from kredit_shared.money import MAX_AMOUNT
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, serve

LARGEST = str(MAX_AMOUNT)
HALF = 500  # lines per side: 1,000 in all, the most a message may hold


async def test_a_trial_balance_of_many_largest_amounts_is_exact(kafka, database_url):
    # 500 entries of 10^17 cents on one account: SQLite's SUM() of int64 overflowed (HTTP 500).
    settings = LedgerPostingSettings(database_url=database_url, **isolated_kafka(kafka))
    lines = [{"account": "130100", "debit": LARGEST}] * HALF + [{"account": "401100", "credit": LARGEST}] * HALF
    message = {
        "message_id": str(uuid.uuid4()),
        "voucher": "FTI-MAX",
        "posting_date": "2015-06-25",
        "currency": "USD",
        "source": "test",
        "lines": lines,
    }
    async with serve(create_app(settings)) as client:
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), message)

        async def posted():
            response = await client.get("/api/v1/trial-balance", params={"as_of": "2030-01-01"})
            assert response.status_code == 200, response.text
            assert response.json()["accounts"]
            return response.json()

        tb = await eventually(posted)
        total = str(MAX_AMOUNT * HALF)
        assert tb["total_debit"] == tb["total_credit"] == total == "499999999999999995.00"
        assert {r["account"]: r["balance"] for r in tb["accounts"]} == {"130100": total, "401100": f"-{total}"}


async def test_a_journal_of_largest_amounts_is_listed_and_posts(kafka, database_url):
    settings = LedgerPostingSettings(database_url=database_url, **isolated_kafka(kafka))
    common = {"account_type": "Ledger", "currency": "USD", "transaction_date": "2015-08-31"}
    lines = [common | {"account": "618900", "debit": LARGEST}] * HALF + [
        common | {"account": "110110", "credit": LARGEST}
    ] * HALF
    request = {"message_id": str(uuid.uuid4()), "request_id": "gen-max", "journal_name": "GenJrn", "lines": lines}
    events = settings.topic(GL_JOURNAL_EVENTS)
    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, [events]) as probe:
        await publish(kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), request, key="gen-max")
        [created] = await probe.wait_for(lambda r: r.json()["event_type"] == "JournalCreated")
        batch = created.json()["batch_number"]

        listed = await client.get("/api/v1/journals")
        assert listed.status_code == 200, listed.text
        [summary] = listed.json()["journals"]
        assert Decimal(summary["total_debit"]) == Decimal(summary["total_credit"]) == MAX_AMOUNT * HALF

        posted = await client.post(f"/api/v1/journals/{batch}/post")
        assert posted.status_code == 200, posted.text
        tb = (await client.get("/api/v1/trial-balance", params={"as_of": "2030-01-01"})).json()
        assert Decimal(tb["total_debit"]) == Decimal(tb["total_credit"]) == MAX_AMOUNT * HALF
