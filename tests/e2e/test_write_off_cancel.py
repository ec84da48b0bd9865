"""Issue 9 end to end: a mistaken write-off is cancelled before its journal is posted. The journal is
voided (kept, never postable), the ledger does not move, and the invoice can be written off again."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kredit_shared.contracts import GL_JOURNAL_EVENTS, dead_letter_topic
from kredit_shared.testing import TopicProbe, eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]  # a whole stack per module


async def test_a_cancelled_write_off_voids_its_journal_moves_nothing_and_frees_the_invoice(stack):
    account = "US-090"
    await stack.erp_invoice(
        invoice_id="MW-9001",
        customer_account=account,
        customer_name="Mistaken Wholesales",
        invoice_date="2015-03-10",
        payment_terms="Net30",
        lines=[{"description": "Goods", "amount": "250.00", "sales_tax_amount": "0.00"}],
    )
    await stack.wait_for_transactions(account, lambda rows: len(rows) == 1)
    await stack.wait_until_open_in_settlement(account, "FTI-MW-9001")
    await stack.wait_until_booked("FTI-MW-9001")
    before = await stack.trial_balance()

    async def write_off() -> tuple[str, str]:
        response = await stack.collections.post(
            "/api/v1/write-offs", json={"customer_account": account, "invoice_id": "MW-9001"}
        )
        assert response.status_code == 202, response.text
        write_off_id = response.json()["write_off_id"]
        created = await until_status(write_off_id, "journal-created")
        return write_off_id, created["journal_batch_number"]

    async def until_status(write_off_id: str, expected: str) -> dict:
        async def check():
            current = (await stack.collections.get(f"/api/v1/write-offs/{write_off_id}")).json()
            return current if current["status"] == expected else None

        return await eventually(check, timeout=20)

    dlq = stack.topic_prefix + dead_letter_topic(GL_JOURNAL_EVENTS)
    async with TopicProbe(stack.bootstrap_servers, [dlq]) as dead_letters:
        mistaken, voided_batch = await write_off()
        cancel = await stack.collections.post(f"/api/v1/write-offs/{mistaken}/cancel", json={"reason": "wrong invoice"})
        assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling", cancel.text
        await until_status(mistaken, "cancelled")
        again = await stack.collections.post(f"/api/v1/write-offs/{mistaken}/cancel")
        assert (again.status_code, again.json()["status"]) == (200, "cancelled")

        journal = (await stack.ledger.get(f"/api/v1/journals/{voided_batch}")).json()
        assert journal["status"] == "voided" and journal["request_id"] == mistaken
        voided = (await stack.ledger.get("/api/v1/journals", params={"status": "voided"})).json()["journals"]
        assert voided_batch in {j["batch_number"] for j in voided}
        refused = await stack.ledger.post(f"/api/v1/journals/{voided_batch}/post")
        assert refused.status_code == 409 and "voided" in refused.json()["detail"]
        assert await stack.trial_balance() == before, "a voided journal moves nothing"
        await stack.wait_until_open_in_settlement(account, "FTI-MW-9001")  # settlement ignored JournalVoided

        # The same invoice again: a new journal, which posts and settles the invoice.
        second, batch = await write_off()
        assert batch != voided_batch
        posted = await stack.ledger.post(f"/api/v1/journals/{batch}/post")
        assert posted.status_code == 200, posted.text
        await until_status(second, "posted")
        rows = await stack.wait_for_transactions(
            account, lambda rows: len(rows) == 2 and all(r["balance"] == "0.00" for r in rows)
        )
        assert sorted(r["type"] for r in rows) == ["Invoice", "WriteOff"]
        after = await stack.trial_balance()
        moved = {
            a: Decimal(after[a]["balance"]) - Decimal(before.get(a, {"balance": "0"})["balance"])
            for a in ("130100", "618900")
        }
        assert moved == {"130100": Decimal("-250.00"), "618900": Decimal("250.00")}
        assert (await stack.ledger.post(f"/api/v1/journals/{voided_batch}/post")).status_code == 409

        await dead_letters.settle(0.5)
        assert not [r for r in dead_letters.records if mistaken in r.value.decode()], "nobody dead-lettered the void"
