"""One example of every contract message, built from the models (so each is valid by construction).

The figures follow the source scenarios (docs/scenarios.md): customer 4027's invoice 10020 of
1,000.00 with 1 % cash discount within 14 days, a partial payment of 297.00 that takes 3.00 of
discount, and a write-off of Cave Wholesales' invoice. They appear in the AsyncAPI documents and
in docs/messages.md; tests check that each one validates as its topic's consumers read it.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from kredit_shared.contracts import messages as m

_NAMESPACE = uuid.UUID("6b726564-6974-4578-616d-706c65000000")


def _id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name))


D = Decimal
JUN25, JUL1, JUL9, JUL25 = date(2015, 6, 25), date(2015, 7, 1), date(2015, 7, 9), date(2015, 7, 25)
WRITE_OFF_DAY = date(2015, 9, 30)

_write_off_lines = [
    m.GeneralJournalLine(
        account_type="Customer",
        account="US-004",
        credit=D("450.00"),
        currency="USD",
        transaction_date=WRITE_OFF_DAY,
        text="Write-off FTI-CW-1001",
        reason_code="BadDebt",
        reason_comment="Bad debt",
        settles=[m.SettledTransactionRef(voucher="FTI-CW-1001", invoice_id="CW-1001", amount=D("450.00"))],
        voucher_group="FTI-CW-1001",
    ),
    m.GeneralJournalLine(
        account_type="Ledger",
        account="618900",
        debit=D("450.00"),
        currency="USD",
        transaction_date=WRITE_OFF_DAY,
        text="Write-off FTI-CW-1001",
        reason_code="BadDebt",
        reason_comment="Bad debt",
        voucher_group="FTI-CW-1001",
    ),
]

EXAMPLES: dict[type[m.ContractMessage], m.ContractMessage] = {
    type(e): e
    for e in (
        m.CustomerInvoiceIssued(
            message_id=_id("CustomerInvoiceIssued"),
            invoice_id="10020",
            customer_account="4027",
            customer_name="Fabrikam customer 4027",
            invoice_date=JUN25,
            currency="USD",
            payment_terms="Net30",
            cash_discount_code="1%14D",
            lines=[m.InvoiceLine(description="Goods", amount=D("1000.00"), revenue_account="401100")],
        ),
        m.CustomerPaymentReceived(
            message_id=_id("CustomerPaymentReceived"),
            payment_id="ARP-10020",
            customer_account="4027",
            payment_date=JUL1,
            amount=D("297.00"),
            currency="USD",
            settle=[m.SettleMark(invoice_id="10020", amount_to_settle=D("297.00"), use_cash_discount="Normal")],
        ),
        m.CustomerTransactionPosted(
            message_id=_id("CustomerTransactionPosted"),
            voucher="FTI-10020",
            transaction_type="Invoice",
            customer_account="4027",
            customer_name="Fabrikam customer 4027",
            transaction_date=JUN25,
            invoice_id="10020",
            amount=D("1000.00"),
            currency="USD",
            due_date=JUL25,
            cash_discounts=[m.CashDiscountTier(percent=D("1.00"), date=JUL9, amount=D("10.00"))],
            cash_discount_account="520100",
        ),
        m.OpenItemsSettled(
            message_id=_id("OpenItemsSettled"),
            settlement_id="ARP-10020:1",
            customer_account="4027",
            settlement_date=JUL1,
            currency="USD",
            debit_voucher="FTI-10020",
            credit_voucher="ARP-10020",
            amount_settled=D("297.00"),
            cash_discount_amount=D("3.00"),
            cash_discount_voucher="DISC-10020",
        ),
        m.VoucherPosted(
            message_id=_id("VoucherPosted"),
            voucher="FTI-10020",
            posting_date=JUN25,
            currency="USD",
            source="invoicing",
            description="Invoice 10020, customer 4027",
            lines=[
                m.VoucherLine(account="130100", debit=D("1000.00"), text="Invoice 10020", customer_account="4027"),
                m.VoucherLine(account="401100", credit=D("1000.00"), text="Goods"),
            ],
        ),
        m.GeneralJournalRequested(
            message_id=_id("GeneralJournalRequested"),
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="WriteOff",
            description="Write off transactions for US-004 Cave Wholesales",
            lines=_write_off_lines,
        ),
        m.GeneralJournalCancelRequested(
            message_id=_id("GeneralJournalCancelRequested"),
            message_type="GeneralJournalCancelRequested",
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="WriteOff",
            reason="Customer paid after all",
        ),
        m.JournalCreated(
            message_id=_id("JournalCreated"),
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="WriteOff",
            batch_number="WOJ-000001",
        ),
        m.JournalPosted(
            message_id=_id("JournalPosted"),
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="WriteOff",
            batch_number="WOJ-000001",
            posting_date=WRITE_OFF_DAY,
            lines=[m.PostedJournalLine(**line.model_dump(), voucher="WOV-000001") for line in _write_off_lines],
        ),
        m.JournalRejected(
            message_id=_id("JournalRejected"),
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="Writeoff",
            reason="unknown journal name 'Writeoff' (known: GenJrn, WriteOff)",
        ),
        m.JournalVoided(
            message_id=_id("JournalVoided"),
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="WriteOff",
            batch_number="WOJ-000001",
            reason="Customer paid after all",
        ),
        m.JournalCancelRefused(
            message_id=_id("JournalCancelRefused"),
            request_id="3f0c9a52-2d1e-4e0b-9a57-6c1b0d7e4a10",
            journal_name="WriteOff",
            batch_number="WOJ-000001",
            reason="journal WOJ-000001 is already posted (posting date 2015-09-30)",
        ),
        m.ExchangeRateSet(
            message_id=_id("ExchangeRateSet"),
            currency="EUR",
            from_date=date(2015, 6, 1),
            rate=Decimal("1.10"),
            set_by="local-accountant",
        ),
    )
}
