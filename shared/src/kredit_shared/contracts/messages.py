"""Message models of the contract (see ARCHITECTURE.md, "Contract: topics").

Every message carries `message_id`, fixed by its producer (the outbox row), which consumers use
as the idempotency key. Unknown fields are ignored so producers can extend messages compatibly.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, TypeAdapter, WithJsonSchema

from kredit_shared.contracts import topics
from kredit_shared.money import Amount, Currency

__all__ = [
    "AccountType",
    "CashDiscountTier",
    "ContractMessage",
    "CustomerInvoiceIssued",
    "CustomerPaymentReceived",
    "CustomerTransactionPosted",
    "GeneralJournalCancelRequested",
    "GeneralJournalLine",
    "GeneralJournalMessage",
    "GeneralJournalRequested",
    "InvoiceLine",
    "IsoDate",
    "JournalCancelRefused",
    "JournalCreated",
    "JournalEvent",
    "JournalPosted",
    "JournalRejected",
    "JournalVoided",
    "MessageId",
    "OpenItemsSettled",
    "PostedJournalLine",
    "Percent",
    "SettleMark",
    "SettledTransactionRef",
    "TransactionType",
    "VoucherLine",
    "VoucherPosted",
    "general_journal_adapter",
    "journal_event_adapter",
    "new_message_id",
]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_iso_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError(f"{value!r} is not an ISO date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid calendar date") from None


IsoDate = Annotated[
    date,
    BeforeValidator(_parse_iso_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]


def _parse_percent(value: Any) -> Decimal:
    if isinstance(value, (float, bool)):
        raise ValueError("percent must be a decimal string such as \"1.00\"")
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"percent {value!r} is not a decimal number") from None
    if not parsed.is_finite() or not (0 <= parsed <= 100):
        raise ValueError(f"percent {value!r} must be between 0 and 100")
    return parsed


Percent = Annotated[
    Decimal,
    BeforeValidator(_parse_percent),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["1.00"]}),
]


def _parse_message_id(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"message_id {value!r} is not a UUID") from None


MessageId = Annotated[str, BeforeValidator(_parse_message_id)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=100)]

TransactionType = Literal["Invoice", "CreditNote", "Payment", "CashDiscount", "WriteOff"]
AccountType = Literal["Ledger", "Customer"]


def new_message_id() -> str:
    return str(uuid.uuid4())


class ContractMessage(BaseModel):
    """Base of every message: its topic and key are part of the contract."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    topic: ClassVar[str]

    message_id: MessageId = Field(default_factory=new_message_id)

    def key(self) -> str:
        raise NotImplementedError


# --- upstream ERP -> invoicing ---------------------------------------------------------------


class CashDiscountTier(BaseModel):
    """One tier of a (possibly chained) cash discount: `percent` if paid on or before `date`.

    `amount` is filled in by invoicing from the invoice total; the ERP may omit it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    percent: Percent
    date: IsoDate
    amount: Amount | None = None


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    description: str = ""
    amount: Amount  # net of sales tax; negative on a credit note
    sales_tax_amount: Amount = Decimal("0.00")
    revenue_account: str | None = None  # default from the company setup (401100)


class CustomerInvoiceIssued(ContractMessage):
    topic: ClassVar[str] = topics.ERP_CUSTOMER_INVOICES

    invoice_id: NonEmpty
    customer_account: NonEmpty
    customer_name: str | None = None
    invoice_date: IsoDate
    currency: Currency
    payment_terms: str | None = None
    due_date: IsoDate | None = None
    cash_discount_code: str | None = None
    cash_discounts: list[CashDiscountTier] | None = None
    lines: list[InvoiceLine] = Field(min_length=1)

    def key(self) -> str:
        return self.customer_account


# --- upstream ERP/bank -> settlement ---------------------------------------------------------


class SettleMark(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    invoice_id: NonEmpty
    amount_to_settle: Amount | None = None
    # Kept a plain string so an invalid value rejects the mark, not the whole payment.
    use_cash_discount: str = "Normal"


class CustomerPaymentReceived(ContractMessage):
    topic: ClassVar[str] = topics.ERP_CUSTOMER_PAYMENTS

    payment_id: NonEmpty
    customer_account: NonEmpty
    payment_date: IsoDate
    amount: Amount
    currency: Currency
    bank_account: str | None = None  # default from the company setup (110110)
    settle: list[SettleMark] | None = None

    def key(self) -> str:
        return self.customer_account


# --- invoicing, settlement -> settlement, collections ----------------------------------------


class CustomerTransactionPosted(ContractMessage):
    """A posted customer (subledger) transaction. `amount` is signed: debit positive, credit negative."""

    topic: ClassVar[str] = topics.AR_CUSTOMER_TRANSACTIONS

    voucher: NonEmpty
    transaction_type: TransactionType
    customer_account: NonEmpty
    customer_name: str | None = None
    transaction_date: IsoDate
    invoice_id: str | None = None
    amount: Amount
    currency: Currency
    due_date: IsoDate | None = None
    cash_discounts: list[CashDiscountTier] = Field(default_factory=list)
    cash_discount_account: str | None = None
    sales_tax_amount: Amount = Decimal("0.00")
    payment_id: str | None = None

    def key(self) -> str:
        return self.customer_account


class OpenItemsSettled(ContractMessage):
    """One settlement of a debit transaction against a credit transaction.

    The debit's open balance falls by `amount_settled + cash_discount_amount`, the credit's
    rises (towards zero) by `amount_settled`, and the cash discount transaction (if any) is
    settled in full against the debit. Deltas commute, so readers converge in any order."""

    topic: ClassVar[str] = topics.AR_SETTLEMENTS

    settlement_id: NonEmpty
    customer_account: NonEmpty
    settlement_date: IsoDate
    currency: Currency
    debit_voucher: NonEmpty
    credit_voucher: NonEmpty
    amount_settled: Amount
    cash_discount_amount: Amount = Decimal("0.00")
    cash_discount_voucher: str | None = None

    def key(self) -> str:
        return self.customer_account


# --- invoicing, settlement -> ledger-posting (posted at once) --------------------------------


class VoucherLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    account: NonEmpty
    debit: Amount = Decimal("0.00")
    credit: Amount = Decimal("0.00")
    text: str = ""
    customer_account: str | None = None


class VoucherPosted(ContractMessage):
    topic: ClassVar[str] = topics.GL_JOURNAL_LINES

    voucher: NonEmpty
    posting_date: IsoDate
    currency: Currency
    source: str = ""
    description: str = ""
    lines: list[VoucherLine] = Field(min_length=1)

    def key(self) -> str:
        return self.voucher


# --- collections -> ledger-posting (kept open for review) ------------------------------------


class SettledTransactionRef(BaseModel):
    """An open customer transaction that a `Customer` journal line settles, and by how much."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    voucher: NonEmpty
    invoice_id: str | None = None
    amount: Amount  # signed like the transaction's open balance it removes


class GeneralJournalLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    account_type: AccountType
    account: NonEmpty
    debit: Amount = Decimal("0.00")
    credit: Amount = Decimal("0.00")
    currency: Currency
    transaction_date: IsoDate
    text: str = ""
    reason_code: str | None = None
    reason_comment: str | None = None
    settles: list[SettledTransactionRef] = Field(default_factory=list)
    # Lines with the same group share one ledger voucher (numbered by ledger-posting); no group
    # anywhere = the whole journal is one voucher. A write-off groups each customer line with its
    # write-off account lines, so every written-off transaction gets a voucher of its own.
    voucher_group: str | None = None


class GeneralJournalRequested(ContractMessage):
    topic: ClassVar[str] = topics.GL_GENERAL_JOURNALS

    request_id: NonEmpty
    journal_name: NonEmpty
    description: str = ""
    lines: list[GeneralJournalLine] = Field(min_length=1)

    def key(self) -> str:
        return self.request_id


# --- ledger-posting -> settlement, collections -----------------------------------------------


class PostedJournalLine(GeneralJournalLine):
    voucher: NonEmpty


class _JournalEvent(ContractMessage):
    topic: ClassVar[str] = topics.GL_JOURNAL_EVENTS

    request_id: str | None = None
    journal_name: NonEmpty
    batch_number: NonEmpty

    def key(self) -> str:
        return self.batch_number


class JournalCreated(_JournalEvent):
    event_type: Literal["JournalCreated"] = "JournalCreated"


class JournalPosted(_JournalEvent):
    event_type: Literal["JournalPosted"] = "JournalPosted"
    posting_date: IsoDate
    lines: list[PostedJournalLine]


class JournalRejected(ContractMessage):
    """A general journal request that ledger-posting could not accept (extension of the contract)."""

    topic: ClassVar[str] = topics.GL_JOURNAL_EVENTS
    event_type: Literal["JournalRejected"] = "JournalRejected"
    request_id: NonEmpty
    journal_name: str
    reason: str

    def key(self) -> str:
        return self.request_id


# --- cancelling a requested journal (extension of the contract, docs/write-offs.md) ----------


class GeneralJournalCancelRequested(ContractMessage):
    """collections -> ledger-posting: withdraw a journal request that is not posted yet.

    Keyed like its GeneralJournalRequested (by request id), so it arrives after the request.
    `message_type` is required: it is what tells a cancel from a (possibly malformed) request."""

    topic: ClassVar[str] = topics.GL_GENERAL_JOURNALS
    message_type: Literal["GeneralJournalCancelRequested"]
    request_id: NonEmpty
    journal_name: NonEmpty
    reason: str = ""

    def key(self) -> str:
        return self.request_id


# What gl.general-journals carries. A GeneralJournalRequested has no `message_type` (it predates it),
# so it is tried first; only a message naming its type can be a cancel.
GeneralJournalMessage = Annotated[
    GeneralJournalRequested | GeneralJournalCancelRequested, Field(union_mode="left_to_right")
]
general_journal_adapter: TypeAdapter[GeneralJournalMessage] = TypeAdapter(GeneralJournalMessage)


class JournalVoided(_JournalEvent):
    """ledger-posting -> collections, settlement: the open journal was voided on its requester's
    cancel (kept for audit, never postable); whatever it proposed is free again."""

    event_type: Literal["JournalVoided"] = "JournalVoided"
    reason: str = ""


class JournalCancelRefused(_JournalEvent):
    """ledger-posting -> collections: a cancel came too late, the journal is already posted.

    Keyed by batch number like JournalPosted, so it arrives after it."""

    event_type: Literal["JournalCancelRefused"] = "JournalCancelRefused"
    reason: str


JournalEvent = Annotated[
    JournalCreated | JournalPosted | JournalRejected | JournalVoided | JournalCancelRefused,
    Field(discriminator="event_type"),
]
journal_event_adapter: TypeAdapter[JournalEvent] = TypeAdapter(JournalEvent)
