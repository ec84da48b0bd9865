"""The collections HTTP API's request and response bodies (docs/contract.md, "HTTP")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from kredit_collections.domain import AgedBalance, TransactionBalance
from kredit_collections.tables import WriteOffRequestRow
from kredit_shared.company_setup import WriteOffParameters
from kredit_shared.contracts import (
    MAX_LIST_LENGTH,
    Code,
    ExchangeRate,
    GeneralJournalLine,
    Id,
    IsoDate,
    Text,
    TransactionType,
    Voucher,
)
from kredit_shared.currencies import plain_rate
from kredit_shared.money import Total, TransactionAmount, TransactionTotal


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- customer transactions -------------------------------------------------------------------


class CustomerTransactionOut(BaseModel):
    voucher: str
    type: TransactionType
    date: dt.date
    invoice_id: str | None
    debit: TransactionAmount | None = Field(description="The original amount of a debit transaction; null on a credit.")
    credit: TransactionAmount | None = Field(
        description="The original amount of a credit transaction; null on a debit."
    )
    balance: TransactionTotal = Field(description="What is still open on the transaction: signed, debit positive.")
    currency: str
    due_date: dt.date | None
    disputed: bool = Field(default=False, description="An open dispute holds it out of letters and interest.")
    # Foreign currencies (docs/currencies.md): only on a transaction in a foreign currency (left out in the
    # accounting currency, where they equal the amounts above), so such answers are exactly as before.
    exchange_rate: ExchangeRate | None = Field(
        default=None,
        description="Foreign currency only: accounting-currency units per unit of `currency` it was booked at.",
    )
    accounting_currency_amount: Total | None = Field(
        default=None,
        description="Foreign currency only: the original amount in the accounting currency, signed (debit +).",
    )
    accounting_currency_balance: Total | None = Field(
        default=None,
        description="Foreign currency only: what is still open in the accounting currency, signed (debit +).",
    )

    @classmethod
    def of(cls, row: TransactionBalance, disputed: Collection[str] = ()) -> CustomerTransactionOut:
        t = row.transaction
        return cls(
            voucher=t.voucher,
            type=t.transaction_type,
            date=t.transaction_date,
            invoice_id=t.invoice_id,
            debit=row.debit or None,
            credit=row.credit or None,
            balance=row.balance,
            currency=t.currency,
            due_date=t.due_date,
            disputed=t.voucher in disputed,
            **(
                {
                    "exchange_rate": plain_rate(t.exchange_rate) if t.exchange_rate is not None else None,
                    "accounting_currency_amount": t.accounting_amount,
                    "accounting_currency_balance": row.accounting,
                }
                if t.accounting_currency_amount is not None
                else {}
            ),
        )


class CustomerTransactionsOut(BaseModel):
    customer_account: str
    transactions: list[CustomerTransactionOut]


# --- aged balances and open invoices ---------------------------------------------------------


class AgedBalanceOut(BaseModel):
    customer_account: str
    customer_name: str | None
    currency: str
    balance: Total
    buckets: dict[str, Total] = Field(description="Open amount per aging bucket (days past the due date).")
    over_credit_limit: bool = Field(default=False, description="The balance is over the customer's effective limit.")
    disputed: Total = Field(default=Decimal("0.00"), description="Open amount of the customer's disputed invoices.")

    @classmethod
    def of(
        cls,
        row: AgedBalance,
        over_limit: Collection[str] = (),
        disputed: Mapping[tuple[str, str], Decimal] | None = None,
    ) -> AgedBalanceOut:
        return cls(
            customer_account=row.customer_account,
            customer_name=row.customer_name,
            currency=row.currency,
            balance=row.balance,
            buckets=dict(row.buckets),
            over_credit_limit=row.customer_account in over_limit,
            disputed=(disputed or {}).get((row.customer_account, row.currency), Decimal("0.00")),
        )


class AgedBalancesOut(BaseModel):
    as_of: dt.date
    buckets: list[str] = Field(description="The bucket labels, in the order of the setup.")
    customers: list[AgedBalanceOut] = Field(description="One row per customer and currency with anything open.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class OpenInvoiceOut(BaseModel):
    customer_account: str
    customer_name: str | None
    invoice_id: str | None
    voucher: str
    type: TransactionType
    date: dt.date
    due_date: dt.date | None
    currency: str
    amount: TransactionAmount = Field(description="The invoice's original amount, signed (negative on a credit note).")
    balance: TransactionTotal = Field(description="What is still open, signed.")
    disputed: bool = Field(default=False, description="An open dispute holds it out of letters and interest.")

    @classmethod
    def of(cls, row: TransactionBalance, disputed: Collection[str] = ()) -> OpenInvoiceOut:
        t = row.transaction
        return cls(
            customer_account=t.customer_account,
            customer_name=t.customer_name,
            invoice_id=t.invoice_id,
            voucher=t.voucher,
            type=t.transaction_type,
            date=t.transaction_date,
            due_date=t.due_date,
            currency=t.currency,
            amount=t.amount,
            balance=row.balance,
            disputed=t.voucher in disputed,
        )


class OpenInvoicesOut(BaseModel):
    invoices: list[OpenInvoiceOut]


# --- write-offs ------------------------------------------------------------------------------


class WriteOffIn(_In):
    """Without `vouchers` or `invoice_id`, the customer's whole open balance is written off."""

    customer_account: Id
    vouchers: list[Voucher] | None = Field(
        default=None, max_length=MAX_LIST_LENGTH, description="Write off just these open transactions."
    )
    invoice_id: Id | None = Field(default=None, description="Write off just this open invoice.")
    reason_code: Code | None = Field(default=None, description="Default: the write-off parameters' reason code.")
    reason_comment: Text | None = Field(default=None, max_length=500)
    date: IsoDate | None = Field(default=None, description="The write-off's transaction date; default today.")


class WriteOffCancelIn(_In):
    reason: Text | None = Field(default=None, max_length=500, description="Why the write-off is withdrawn.")


class WriteOffAccepted(BaseModel):
    write_off_id: str


class WriteOffOut(BaseModel):
    write_off_id: str
    customer_account: str
    status: str = Field(
        description="requested, journal-created, posted or rejected; after a cancel, cancelling "
        "and then cancelled (journal voided) or posted (the posting came first)"
    )
    reason: str | None = Field(
        description="Why ledger-posting rejected the journal, why the write-off was cancelled, "
        "or why its cancel was refused."
    )
    journal_name: str
    journal_batch_number: str | None
    lines: list[GeneralJournalLine] = Field(description="The proposed journal lines.")
    requested_by: str | None = Field(default=None, description="The token subject that requested the write-off.")
    posted_by: str | None = Field(default=None, description="The token subject that posted its journal.")

    @classmethod
    def of(cls, row: WriteOffRequestRow) -> WriteOffOut:
        return cls(
            write_off_id=row.id,
            customer_account=row.customer_account,
            status=row.status,
            reason=row.reason,
            journal_name=row.journal_name,
            journal_batch_number=row.journal_batch_number,
            lines=row.journal_lines,
            requested_by=row.requested_by,
            posted_by=row.posted_by,
        )


# --- parameters and reason codes -------------------------------------------------------------


class WriteOffParametersIO(_In):
    journal_name: Id
    reason_code: Code
    separate_sales_tax: StrictBool  # true or false, not "yes" or 1

    @classmethod
    def of(cls, parameters: WriteOffParameters) -> WriteOffParametersIO:
        return cls(**parameters.model_dump(exclude={"four_eyes_write_off"}))  # the setup's, not a parameter

    def to_setup(self) -> WriteOffParameters:
        return WriteOffParameters(**self.model_dump())


class ReasonCodeOut(BaseModel):
    code: str
    description: str


class ReasonCodesOut(BaseModel):
    reason_codes: list[ReasonCodeOut]
