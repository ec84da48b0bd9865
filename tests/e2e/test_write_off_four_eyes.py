"""Issue 14, separation of duties, end to end: a write-off requested by ann through collections may
not be posted by ann (four-eyes is on in the demo company), bob posts it, and both ends show who did
what: the write-off and the journal carry requested_by/posted_by, each service's audit trail has it."""

from __future__ import annotations

import pytest

from kredit_shared.auth import Role
from kredit_shared.testing import eventually, token_header

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]  # a whole stack per module


def as_(who: str, *roles: Role) -> dict[str, str]:
    return token_header(*roles, subject=who)


async def test_the_requester_may_not_post_its_write_off_another_accountant_does(stack):
    account = "US-414"
    await stack.erp_invoice(
        invoice_id="FE-4141",
        customer_account=account,
        customer_name="Four Eyes Trading",
        invoice_date="2015-03-10",
        payment_terms="Net30",
        lines=[{"description": "Goods", "amount": "410.00", "sales_tax_amount": "0.00"}],
    )
    await stack.wait_for_transactions(account, lambda rows: len(rows) == 1)
    await stack.wait_until_open_in_settlement(account, "FTI-FE-4141")

    ann = as_("ann", Role.accountant)  # an accountant may request write-offs too
    response = await stack.collections.post("/api/v1/write-offs", json={"customer_account": account}, headers=ann)
    assert response.status_code == 202, response.text
    write_off_id = response.json()["write_off_id"]

    async def write_off(status: str) -> dict:
        current = (await stack.collections.get(f"/api/v1/write-offs/{write_off_id}")).json()
        assert current["status"] == status, current
        return current

    created = await eventually(lambda: write_off("journal-created"), timeout=20)
    assert created["requested_by"] == "ann"
    batch = created["journal_batch_number"]
    assert (await stack.ledger.get(f"/api/v1/journals/{batch}")).json()["requested_by"] == "ann"

    refused = await stack.ledger.post(f"/api/v1/journals/{batch}/post", headers=ann)
    assert refused.status_code == 403, refused.text
    assert "ann requested journal" in refused.json()["detail"] and "four-eyes" in refused.json()["detail"]
    collector = await stack.ledger.post(f"/api/v1/journals/{batch}/post", headers=as_("carl", Role.collector))
    assert collector.status_code == 403 and "needs the role accountant" in collector.json()["detail"]

    posted = await stack.ledger.post(f"/api/v1/journals/{batch}/post", headers=as_("bob", Role.accountant))
    assert posted.status_code == 200, posted.text
    assert (posted.json()["requested_by"], posted.json()["posted_by"]) == ("ann", "bob")
    done = await eventually(lambda: write_off("posted"), timeout=20)
    assert (done["requested_by"], done["posted_by"]) == ("ann", "bob")

    admin = as_("ada", Role.admin)

    async def ledger_trail() -> list[dict]:
        entries = (await stack.ledger.get("/api/v1/audit", headers=admin)).json()["entries"]
        mine = [e for e in entries if e["path"] == f"/api/v1/journals/{batch}/post"]
        assert len(mine) == 3, mine
        return mine

    post, carl, refusal = await eventually(ledger_trail)
    assert (refusal["subject"], refusal["status"]) == ("ann", 403) and "four-eyes" in refusal["action"]
    assert (carl["subject"], carl["status"]) == ("carl", 403)
    assert (post["subject"], post["action"], post["status"]) == ("bob", "journal posted", 200)
    requests = (await stack.collections.get("/api/v1/audit", headers=admin, params={"subject": "ann"})).json()
    [requested] = [e for e in requests["entries"] if e["detail"].get("write_off_id") == write_off_id]
    assert (requested["action"], requested["status"], requested["method"]) == ("write-off requested", 202, "POST")
    assert requested["detail"]["request"] == {"customer_account": account}
