"""Foreign currencies through the real broker (docs/currencies.md): a EUR invoice and payment at their own
rates, a settlement between them, the aged balances in USD, the customer page in both currencies, and a
EUR write-off at the write-off date's rate with its exchange difference as realized gain."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import kredit_shared
from kredit_shared.contracts import CustomerTransactionPosted, OpenItemsSettled

D = Decimal
ACCOUNT = "DE-001"


def setup_with_eur_rate(tmp_path: Path) -> Path:
    """The demo company with EUR at 1.20 from 2026-02-01."""
    demo = (Path(kredit_shared.__file__).parent / "demo-company.yaml").read_text()
    changed = demo.replace("exchange_rates: {}", 'exchange_rates: {EUR: [{from_date: 2026-02-01, rate: "1.20"}]}')
    assert changed != demo
    path = tmp_path / "company.yaml"
    path.write_text(changed)
    return path


def eur_transaction(
    voucher: str, type: str, amount: str, rate: str, accounting: str, **extra
) -> CustomerTransactionPosted:
    return CustomerTransactionPosted(
        voucher=voucher,
        transaction_type=type,
        customer_account=ACCOUNT,
        customer_name="Kunde GmbH",
        transaction_date="2026-01-15",
        amount=D(amount),
        currency="EUR",
        exchange_rate=D(rate),
        accounting_currency_amount=D(accounting),
        **extra,
    )


async def test_a_eur_invoice_and_a_partial_payment_age_in_usd_and_show_both_currencies(start_collections, database_url):
    async with start_collections(database_url) as svc:
        await svc.publish(
            eur_transaction("FTI-E1", "Invoice", "1000.00", "1.10", "1100.00", invoice_id="E1", due_date="2026-02-14"),
            eur_transaction("ARP-E1", "Payment", "-500.00", "0.80", "-400.00"),
            # EUR 500.00 settled: the invoice falls by 550.00 USD (its rate), the payment rises by 400.00 (its
            # rate): a 150.00 realized loss (settlement posts it).
            OpenItemsSettled(
                settlement_id="ARP-E1/FTI-E1:1",
                customer_account=ACCOUNT,
                settlement_date="2026-01-20",
                currency="EUR",
                debit_voucher="FTI-E1",
                credit_voucher="ARP-E1",
                amount_settled=D("500.00"),
                debit_accounting_amount=D("550.00"),
                credit_accounting_amount=D("400.00"),
                realized_exchange_loss=D("150.00"),
            ),
        )
        await svc.post_transaction("CIV-U1", "Invoice", "25.00", on="2026-01-15", account=ACCOUNT, due="2026-02-14")
        await svc.until_balances(ACCOUNT, {"FTI-E1": "500.00", "ARP-E1": "0.00", "CIV-U1": "25.00"})

        aged = await svc.get("/aged-balances", as_of="2026-03-01")
        [row] = [r for r in aged["customers"] if r["customer_account"] == ACCOUNT]
        assert (row["currency"], row["balance"], row["buckets"]["1-30"]) == ("USD", "575.00", "575.00")
        [row] = (await svc.get("/aged-balances", as_of="2026-03-01", customer_account=ACCOUNT))["customers"]
        assert (row["currency"], row["balance"]) == ("USD", "575.00")

        page = {t["voucher"]: t for t in (await svc.get(f"/customers/{ACCOUNT}/transactions"))["transactions"]}
        assert {k: page["FTI-E1"][k] for k in ("debit", "balance", "currency")} == {
            "debit": "1000.00",
            "balance": "500.00",
            "currency": "EUR",
        }
        assert {k: page["FTI-E1"][k] for k in ("exchange_rate", "accounting_currency_amount")} == {
            "exchange_rate": "1.10",
            "accounting_currency_amount": "1100.00",
        }
        assert page["FTI-E1"]["accounting_currency_balance"] == "550.00"
        assert (page["ARP-E1"]["credit"], page["ARP-E1"]["accounting_currency_balance"]) == ("500.00", "0.00")
        assert "accounting_currency_balance" not in page["CIV-U1"]  # the accounting currency: as before

        credit = await svc.get(f"/customers/{ACCOUNT}/credit")
        assert D(credit["balance"]) == D("575.00")

        html = (await svc.client.get(f"/customers/{ACCOUNT}", params={"show": "all"})).text
        assert '<th class="num">Balance USD</th>' in html
        invoice_row = re.search(r'<tr data-voucher="FTI-E1">.*?</tr>', html, re.S)
        assert invoice_row is not None
        cells = re.findall(r"<td[^>]*>(.*?)</td>", invoice_row.group(0), re.S)
        assert cells[6:13] == ["1,000.00", "", "500.00", "EUR", "1.10", "1,100.00", "550.00"]
        assert 'id="balance-USD">575.00<' in html


async def test_a_eur_write_off_posts_its_exchange_difference_as_realized_gain(start_collections, tmp_path):
    async with start_collections(company_setup_file=setup_with_eur_rate(tmp_path)) as svc:
        await svc.publish(
            eur_transaction("FTI-E2", "Invoice", "100.00", "1.10", "110.00", invoice_id="E2", due_date="2026-02-14")
        )
        await svc.until_balances(ACCOUNT, {"FTI-E2": "100.00"})

        # Before the first EUR rate: no rate for the write-off date, so the request is rejected with the reason.
        early = await svc.write_off(customer_account=ACCOUNT, date="2026-01-31")
        refused = await svc.get(f"/write-offs/{early}")
        assert refused["status"] == "rejected" and refused["lines"] == []
        assert "no EUR rate for 2026-01-31" in refused["reason"]

        # At 1.20 the EUR 100.00 are worth 120.00; receivables hold 110.00: a 10.00 realized gain.
        write_off_id = await svc.write_off(customer_account=ACCOUNT, date="2026-03-01")
        journal = await svc.journal(write_off_id)
        assert [(l.account_type, l.account, l.currency, l.debit, l.credit, l.exchange_rate) for l in journal.lines] == [
            ("Customer", ACCOUNT, "EUR", D("0.00"), D("100.00"), D("1.20")),
            ("Ledger", "618900", "EUR", D("100.00"), D("0.00"), D("1.20")),
            ("Customer", ACCOUNT, "USD", D("10.00"), D("0.00"), None),
            ("Ledger", "710100", "USD", D("0.00"), D("10.00"), None),
        ]
        [ref] = journal.lines[0].settles
        assert (ref.voucher, ref.amount, ref.accounting_currency_amount) == ("FTI-E2", D("100.00"), D("110.00"))

        await svc.journal_created(write_off_id, "GNJ-000009")
        await svc.journal_posted(journal, "GNJ-000009")
        posted = await svc.until_status(write_off_id, "posted")
        assert posted["reason"] is None
        page = (await svc.client.get("/write-offs")).text
        assert "100.00" in page
