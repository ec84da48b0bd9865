"""Message models of the contract (docs/contract.md; every topic with its key: contracts/catalog.py).

Every message carries `message_id`, fixed by its producer (the outbox row), which consumers use
as the idempotency key: a message parsed from JSON must have one; only Python code constructing a
message gets a fresh one. Unknown fields are ignored so producers can extend messages compatibly.

Bounds (the same for Kafka and HTTP, and in the JSON schemas), so that hostile input is a
validation error and never a database or arithmetic failure further on:
- amounts: `money.Amount` (at most 15 integer digits, two decimals); an amount in a transaction currency
  (`money.TransactionAmount`) may carry as many decimals as that currency has, up to three (KWD "1.234"),
  never more (USD "1.005", JPY "1.50" are refused); percents 0-100, six decimals;
- identifiers (`Id`: customer accounts, invoice and payment ids, ledger accounts): 1-64 characters
  of letters, digits and `.`, `_`, `:`, `-`, starting with a letter or digit, so every id works
  unescaped as a URL path segment; vouchers, batch numbers and settlement ids, which services
  derive from other ids by adding prefixes and suffixes, are `Voucher`s: the same characters, 1-128;
  settlement ids (two vouchers joined by "/") 1-300 characters without control characters;
- codes (`Code`: payment terms, cash discount codes such as "1%14D", reason codes): 1-64
  characters, no control characters; names 200; free text 1,000 (tab and line breaks allowed);
- lists (lines, tiers, settle marks, settled transactions): at most 1,000 entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from kredit_shared.contracts import topics
from kredit_shared.currencies import (
    ExchangeRate,
    SettledInAccountingCurrency,
    check_precision,
    minor_units,
    unsupported_reason,
)
from kredit_shared.money import Amount, Currency, TransactionAmount, check_amount_bound, document_decimals, is_currency

__all__ = [
    "AccountType",
    "CashDiscountTier",
    "Code",
    "ContractMessage",
    "CustomerInvoiceIssued",
    "CustomerPaymentReceived",
    "CustomerTransactionPosted",
    "DocumentType",
    "ExchangeRate",
    "ExchangeRateSet",
    "GeneralJournalCancelRequested",
    "GeneralJournalLine",
    "GeneralJournalMessage",
    "GeneralJournalRequested",
    "Id",
    "InvoiceLine",
    "IsoDate",
    "JournalCancelRefused",
    "JournalCreated",
    "JournalEvent",
    "JournalPosted",
    "JournalRejected",
    "JournalVoided",
    "MAX_LIST_LENGTH",
    "MessageId",
    "Name",
    "OpenItemsSettled",
    "PostedJournalLine",
    "Percent",
    "SettleMark",
    "SettledTransactionRef",
    "Subject",
    "Text",
    "TransactionType",
    "Voucher",
    "VoucherLine",
    "VoucherPosted",
    "construct",
    "content_fingerprint",
    "derived_message_id",
    "digest",
    "general_journal_adapter",
    "journal_event_adapter",
    "new_message_id",
]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_iso_date(value: Any) -> date:
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
    BeforeValidator(parse_iso_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]


PERCENT_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,6})?$"
_PERCENT = re.compile(PERCENT_PATTERN)


def parse_percent(value: Any) -> Decimal:
    """A JSON string such as "1.00" (or an integer, or a Decimal in Python) from 0 to 100."""
    if isinstance(value, float) and value.is_integer() and 0 <= value <= 100:
        value = int(value)  # JSON's 2.0 is the integer 2
    if isinstance(value, (float, bool)):
        raise ValueError('percent must be a decimal string such as "1.00"')
    if isinstance(value, str):
        if len(value) > 12 or not _PERCENT.fullmatch(value):
            raise ValueError(f'percent {value[:20]!r} is not a decimal string like "1.00" (up to six decimals)')
        parsed = Decimal(value)
    elif isinstance(value, int):
        parsed = Decimal(value) if -1 <= value <= 101 else Decimal(101)  # out of range either way
    elif isinstance(value, Decimal):
        parsed = value
    else:
        raise ValueError(f"percent must be a decimal string, got {type(value).__name__}")
    if not parsed.is_finite() or not (0 <= parsed <= 100):
        raise ValueError(f"percent {value!r} must be between 0 and 100")
    return parsed


Percent = Annotated[
    Decimal,
    BeforeValidator(parse_percent),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PERCENT_PATTERN, "examples": ["1.00"]},
                {"type": "integer", "minimum": 0, "maximum": 100},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema({"type": "string", "examples": ["1.00"]}, mode="serialization"),
]


def parse_message_id(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        if not isinstance(value, str):
            raise ValueError
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"message_id {value!r} is not a UUID string") from None


MessageId = Annotated[str, BeforeValidator(parse_message_id), WithJsonSchema({"type": "string", "format": "uuid"})]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
# C0 controls and DEL never; free text keeps tab, line feed and carriage return.
_NO_CONTROLS = r"^[^\x00-\x1F\x7F]*$"
_TEXT = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*$"
MAX_LIST_LENGTH = 1000

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
Voucher = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_NO_CONTROLS)]
Name = Annotated[str, StringConstraints(max_length=200, pattern=_NO_CONTROLS)]
Text = Annotated[str, StringConstraints(max_length=1000, pattern=_TEXT)]
# Who did it: the subject (`sub`) of the caller's token (kredit_shared.auth).
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_NO_CONTROLS)]

# What an ERP document is (contract extension `document_type`); the customer transaction carries it as its type.
DocumentType = Literal["Invoice", "CreditNote", "InterestNote", "CollectionLetterFee", "PaymentFee"]
TransactionType = Literal[
    "Invoice", "CreditNote", "Payment", "CashDiscount", "WriteOff", "InterestNote", "CollectionLetterFee", "PaymentFee"
]
AccountType = Literal["Ledger", "Customer"]


def new_message_id() -> str:
    """The message_id rule, first half: a new fact gets a random id (its outbox row then keeps it,
    so re-publishing after a crash sends the same id). `str(uuid.uuid4())`."""
    return _uuid_text(os.urandom(16).hex(), 4)


def derived_message_id(namespace: uuid.UUID, name: str) -> str:
    """The message_id rule, second half: a message that may be built again from the same input (a
    crash before the commit, a file imported twice) gets an id derived from that input, a UUID 5 of
    `name` in the producer's `namespace`, so every copy has the same id and inboxes drop the repeats.
    `str(uuid.uuid5(namespace, name))`."""
    return _uuid_text(hashlib.sha1(namespace.bytes + name.encode()).hexdigest(), 5)


def _uuid_text(digits: str, version: int) -> str:
    """The UUID of `version` made of the first 32 hex `digits`, as str(uuid.UUID(...)) writes it (written
    directly: uuid.UUID's constructor and formatting cost more than the hash, and every message has an id)."""
    variant = "89ab"[int(digits[16], 16) & 3]  # RFC 4122: the top bits of byte 8 are 10
    return f"{digits[:8]}-{digits[8:12]}-{version}{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:32]}"


Model = TypeVar("Model", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


def construct(model: type[Model], **values: Any) -> Model:
    """`model.model_construct(**values)` (no validation) for a model given every one of its fields, as the services
    build what they emit (testing.assert_constructed_as_validated checks that): without model_construct's
    per-field alias and default lookups, which cost more than the rest of building the message. Given fewer or
    other fields, it is model_construct."""
    if values.keys() != model.__pydantic_fields__.keys() or model.__pydantic_post_init__:
        return model.model_construct(**values)
    built = model.__new__(model)
    object.__setattr__(built, "__dict__", values)
    object.__setattr__(built, "__pydantic_fields_set__", set(values))
    object.__setattr__(built, "__pydantic_extra__", None)
    object.__setattr__(built, "__pydantic_private__", None)
    return built


def digest(text: str | bytes) -> str:
    """The hash of every content fingerprint: SHA-256 of the text (UTF-8), in hex."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def content_fingerprint(content: Any, default: Callable[[Any], Any] | None = None) -> str:
    """A fingerprint of `content` (JSON-like values) that ignores key order and spacing: the digest of
    its canonical JSON (keys sorted, no spaces). `default` writes the values JSON cannot hold.
    Equal fingerprints mean the same content; what counts as the same is the caller's choice of `content`."""
    return digest(json.dumps(content, sort_keys=True, separators=(",", ":"), default=default))


# Model validators that contracts.parsing leaves out of its canonical form (see there): what it takes needs neither.
NOT_IN_THE_CANONICAL_FORM: set[Callable[..., Any]] = set()


def _not_in_the_canonical_form(validator: F) -> F:
    NOT_IN_THE_CANONICAL_FORM.add(validator)
    return validator


def _message_id_is_required(schema: dict[str, Any]) -> None:
    """In the JSON schemas too: only Python code constructing a message may leave it out."""
    schema["required"] = ["message_id", *(f for f in schema.get("required", []) if f != "message_id")]


class ContractMessage(BaseModel):
    """Base of every message: its topic and key are part of the contract."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_message_id_is_required)
    topic: ClassVar[str]

    message_id: MessageId = Field(default_factory=new_message_id)

    @model_validator(mode="before")
    @classmethod
    @_not_in_the_canonical_form
    def _message_id_from_its_producer(cls, data: Any, info: ValidationInfo) -> Any:
        """A message read from JSON (a consumer) must carry its producer's id: a made-up one would
        turn every redelivery into a new message. Python code constructing one gets a fresh id."""
        if info.mode == "json" and isinstance(data, dict) and "message_id" not in data:
            raise ValueError("message_id is required (the producer's UUID, used to skip redeliveries)")
        return data

    def key(self) -> str:
        raise NotImplementedError


def _check_document_currency(currency: str, amounts: list[tuple[str, Decimal]]) -> None:
    """A document from the ERP: its currency can be booked, and no amount has more decimals than it
    (JPY has none)."""
    if (reason := unsupported_reason(currency)) is not None:
        raise ValueError(reason)
    _check_precision(currency, amounts)


def _decimals_from(field: str) -> Any:
    """A model validator: the model's transaction amounts may carry as many decimals as the currency in `field`
    has (at least two, at most three), e.g. three in a KWD document. In a two-decimal currency "1.005" is
    refused by the amount itself, with the message it always had."""

    def validate(cls: type[BaseModel], data: Any, handler: Any) -> Any:
        currency = data.get(field) if isinstance(data, dict) else getattr(data, field, None)
        with document_decimals(minor_units(currency) if is_currency(currency) else 2):
            return handler(data)

    return model_validator(mode="wrap")(classmethod(_not_in_the_canonical_form(validate)))  # type: ignore[arg-type]


def _check_precision(currency: str | None, amounts: Sequence[tuple[str, Decimal | None]]) -> None:
    """No amount has more decimals than its currency (JPY none, USD two, KWD three). The amounts were validated
    with at most max(2, the currency's decimals) (_decimals_from), so only a currency with fewer than two has any
    to refuse."""
    if currency is None or minor_units(currency) >= 2:
        return
    for what, amount in amounts:
        if amount is not None:
            check_precision(amount, currency, what)


def _unset(value: Any) -> bool:
    """`exclude_if` of the foreign-currency fields: left out while unset, so a document in the accounting
    currency is published exactly as before they existed. (Per field, in pydantic's serializer: a model-wide
    wrap serializer would make every dump of the message a round trip through Python.)"""
    return value is None


def _zero(value: Decimal) -> bool:
    return not value


# --- upstream ERP -> invoicing ---------------------------------------------------------------


class CashDiscountTier(BaseModel):
    """One tier of a (possibly chained) cash discount: `percent` if paid on or before `date`.

    `amount` is filled in by invoicing from the invoice total; the ERP may omit it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    percent: Percent
    date: IsoDate
    amount: TransactionAmount | None = None


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    description: Text = ""
    amount: TransactionAmount  # net of sales tax; negative on a credit note
    sales_tax_amount: TransactionAmount = Decimal("0.00")
    revenue_account: Id | None = None  # default from the company setup (401100)


class CustomerInvoiceIssued(ContractMessage):
    topic: ClassVar[str] = topics.ERP_CUSTOMER_INVOICES

    invoice_id: Id
    customer_account: Id
    customer_name: Name | None = None
    invoice_date: IsoDate
    currency: Currency
    payment_terms: Code | None = None
    due_date: IsoDate | None = None
    cash_discount_code: Code | None = None
    cash_discounts: list[CashDiscountTier] | None = Field(default=None, max_length=MAX_LIST_LENGTH)
    lines: list[InvoiceLine] = Field(min_length=1, max_length=MAX_LIST_LENGTH)
    document_type: DocumentType | None = None  # None: Invoice, or CreditNote for a negative total
    # Accounting-currency units per one unit of `currency`; None: the setup's rate for the invoice date.
    exchange_rate: ExchangeRate | None = Field(default=None, exclude_if=_unset)

    _amounts_in_currency = _decimals_from("currency")

    @model_validator(mode="after")
    def _totals_within_bounds(self) -> CustomerInvoiceIssued:
        """The invoice's totals are stored and posted like any amount, so they have its bound too."""
        net = sum((line.amount for line in self.lines), Decimal(0))
        tax = sum((line.sales_tax_amount for line in self.lines), Decimal(0))
        check_amount_bound(net, "the invoice's net amount")
        check_amount_bound(tax, "the invoice's sales tax amount")
        check_amount_bound(net + tax, "the invoice's total")
        _check_document_currency(
            self.currency,
            [
                *((f"lines.{n}.amount", line.amount) for n, line in enumerate(self.lines)),
                *((f"lines.{n}.sales_tax_amount", line.sales_tax_amount) for n, line in enumerate(self.lines)),
                *(
                    (f"cash_discounts.{n}.amount", tier.amount)
                    for n, tier in enumerate(self.cash_discounts or [])
                    if tier.amount is not None
                ),
            ],
        )
        return self

    def key(self) -> str:
        return self.customer_account


# --- upstream ERP/bank -> settlement ---------------------------------------------------------


class SettleMark(BaseModel):
    """A transaction the payment settles: an invoice (or other debit), a credit note or an open payment.

    Unknown fields are kept, not ignored, so settlement can reject the mark naming them: a clerk who
    sends a field settlement does not know must not get a different settlement without a word."""

    model_config = ConfigDict(extra="allow", frozen=True)
    invoice_id: Id
    amount_to_settle: TransactionAmount | None = None
    # Kept a plain string so an invalid value rejects the mark, not the whole payment.
    use_cash_discount: Code = "Normal"
    full_settlement: bool = False  # close the invoice; the unpaid rest is posted as extra cash discount
    cash_discount_amount: TransactionAmount | None = None  # overrides the calculated discount


class CustomerPaymentReceived(ContractMessage):
    topic: ClassVar[str] = topics.ERP_CUSTOMER_PAYMENTS

    payment_id: Id
    customer_account: Id
    payment_date: IsoDate
    amount: TransactionAmount
    currency: Currency
    bank_account: Id | None = None  # default from the company setup (110110)
    settle: list[SettleMark] | None = Field(default=None, max_length=MAX_LIST_LENGTH)
    date_to_use_for_calculating_discounts: IsoDate | None = None  # D365's "Selected date"; None: the payment date
    # Accounting-currency units per one unit of `currency`; None: the setup's rate for the payment date.
    exchange_rate: ExchangeRate | None = Field(default=None, exclude_if=_unset)

    _amounts_in_currency = _decimals_from("currency")

    @model_validator(mode="after")
    def _amounts_fit_the_currency(self) -> CustomerPaymentReceived:
        _check_document_currency(
            self.currency,
            [
                ("amount", self.amount),
                *(
                    (f"settle.{n}.{field}", value)
                    for n, mark in enumerate(self.settle or [])
                    for field, value in (
                        ("amount_to_settle", mark.amount_to_settle),
                        ("cash_discount_amount", mark.cash_discount_amount),
                    )
                    if value is not None
                ),
            ],
        )
        return self

    def key(self) -> str:
        return self.customer_account


# --- invoicing, settlement -> settlement, collections ----------------------------------------


class CustomerTransactionPosted(ContractMessage):
    """A posted customer (subledger) transaction. `amount` is signed: debit positive, credit negative.

    In a foreign currency it also carries the rate it was booked at and its value in the accounting
    currency (signed like `amount`); both are absent in the accounting currency."""

    topic: ClassVar[str] = topics.AR_CUSTOMER_TRANSACTIONS

    voucher: Voucher
    transaction_type: TransactionType
    customer_account: Id
    customer_name: Name | None = None
    transaction_date: IsoDate
    invoice_id: Id | None = None
    amount: TransactionAmount
    currency: Currency
    due_date: IsoDate | None = None
    cash_discounts: list[CashDiscountTier] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    cash_discount_account: Id | None = None
    sales_tax_amount: TransactionAmount = Decimal("0.00")
    payment_id: Id | None = None
    exchange_rate: ExchangeRate | None = Field(default=None, exclude_if=_unset)
    accounting_currency_amount: Amount | None = Field(default=None, exclude_if=_unset)

    _amounts_in_currency = _decimals_from("currency")

    @model_validator(mode="after")
    def _amounts_fit_the_currency(self) -> CustomerTransactionPosted:
        _check_precision(
            self.currency,
            [
                ("amount", self.amount),
                ("sales_tax_amount", self.sales_tax_amount),
                *((f"cash_discounts.{n}.amount", tier.amount) for n, tier in enumerate(self.cash_discounts)),
            ],
        )
        return self

    @property
    def accounting_amount(self) -> Decimal:
        """The amount in the accounting currency (the amount itself when booked in it)."""
        return self.amount if self.accounting_currency_amount is None else self.accounting_currency_amount

    def key(self) -> str:
        return self.customer_account


class OpenItemsSettled(SettledInAccountingCurrency, ContractMessage):
    """One settlement of a debit transaction against a credit transaction.

    The debit's open balance falls by `amount_settled + cash_discount_amount + difference_amount`,
    the credit's rises (towards zero) by `amount_settled`, and the cash discount transaction (if
    any) rises by `cash_discount_amount` (it is settled in full against the debit). Deltas commute,
    so readers converge in any order. A reversal is the same message with every amount negated.

    In a foreign currency, the `*_accounting_amount` fields say the same in the accounting currency: the
    debit's accounting balance falls by `debit_accounting_amount` (at the debit's rate; the rest of it when
    the debit closes), the credit's rises by `credit_accounting_amount` (at the credit's rate), the cash
    discount and difference are converted at the credit's rate, and `realized_exchange_loss` (negative: a
    gain) is what makes them balance: debit = credit + discount + difference + realized loss. All absent
    in the accounting currency (each then equals its transaction-currency amount, and the loss is 0)."""

    topic: ClassVar[str] = topics.AR_SETTLEMENTS

    # Made by settlement from two vouchers ("ARP-10020/FTI-10020:1"); never part of a URL.
    settlement_id: Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=_NO_CONTROLS)]
    customer_account: Id
    settlement_date: IsoDate
    currency: Currency
    debit_voucher: Voucher
    credit_voucher: Voucher
    amount_settled: TransactionAmount
    cash_discount_amount: TransactionAmount = Decimal("0.00")
    cash_discount_voucher: Voucher | None = None
    # A penny difference or over/underpayment the settlement wrote off (extension): positive when the
    # debit was underpaid (it falls by this too), negative when the credit overpaid it (the credit's
    # `amount_settled` includes the overpayment). Posted to the setup's difference account.
    # Without a difference, and in the accounting currency, a settlement is published exactly as before these
    # fields existed: they are left out.
    difference_amount: TransactionAmount = Field(default=Decimal("0.00"), exclude_if=_zero)
    debit_accounting_amount: Amount | None = Field(default=None, exclude_if=_unset)
    credit_accounting_amount: Amount | None = Field(default=None, exclude_if=_unset)
    cash_discount_accounting_amount: Amount | None = Field(default=None, exclude_if=_unset)
    difference_accounting_amount: Amount | None = Field(default=None, exclude_if=_unset)
    realized_exchange_loss: Amount | None = Field(default=None, exclude_if=_unset)

    _amounts_in_currency = _decimals_from("currency")

    @model_validator(mode="after")
    def _amounts_fit_the_currency(self) -> OpenItemsSettled:
        _check_precision(
            self.currency,
            [
                ("amount_settled", self.amount_settled),
                ("cash_discount_amount", self.cash_discount_amount),
                ("difference_amount", self.difference_amount),
            ],
        )
        return self

    def key(self) -> str:
        return self.customer_account


# --- invoicing, settlement -> ledger-posting (posted at once) --------------------------------


class VoucherLine(BaseModel):
    """`debit` and `credit` are in the voucher's currency (the accounting currency). A line that books a
    foreign-currency amount also carries it: `transaction_currency` and `transaction_currency_amount`
    (signed: debit positive), absent in the accounting currency."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    account: Id
    debit: Amount = Decimal("0.00")
    credit: Amount = Decimal("0.00")
    text: Text = ""
    customer_account: Id | None = None
    transaction_currency: Currency | None = Field(default=None, exclude_if=_unset)
    transaction_currency_amount: TransactionAmount | None = Field(default=None, exclude_if=_unset)

    _amounts_in_currency = _decimals_from("transaction_currency")

    @model_validator(mode="after")
    def _amount_fits_the_currency(self) -> VoucherLine:
        _check_precision(self.transaction_currency, [("transaction_currency_amount", self.transaction_currency_amount)])
        return self


class VoucherPosted(ContractMessage):
    topic: ClassVar[str] = topics.GL_JOURNAL_LINES

    voucher: Voucher
    posting_date: IsoDate
    currency: Currency
    source: Name = ""
    description: Text = ""
    lines: list[VoucherLine] = Field(min_length=1, max_length=MAX_LIST_LENGTH)

    def key(self) -> str:
        return self.voucher


# --- collections -> ledger-posting (kept open for review) ------------------------------------


class SettledTransactionRef(BaseModel):
    """An open customer transaction that a `Customer` journal line settles, and by how much."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    voucher: Voucher
    invoice_id: Id | None = None
    amount: TransactionAmount  # signed like the transaction's open balance it removes, in the transaction's currency
    # In a foreign currency: what it removes from the transaction's accounting-currency balance (signed the same).
    accounting_currency_amount: Amount | None = Field(default=None, exclude_if=_unset)

    @property
    def accounting_amount(self) -> Decimal:
        return self.amount if self.accounting_currency_amount is None else self.accounting_currency_amount


class GeneralJournalLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    account_type: AccountType
    account: Id
    debit: TransactionAmount = Decimal("0.00")  # in `currency`
    credit: TransactionAmount = Decimal("0.00")
    currency: Currency
    transaction_date: IsoDate
    text: Text = ""
    reason_code: Code | None = None
    reason_comment: Text | None = None
    settles: list[SettledTransactionRef] = Field(default_factory=list, max_length=MAX_LIST_LENGTH)
    # Lines with the same group share one ledger voucher (numbered by ledger-posting); no group
    # anywhere = the whole journal is one voucher. A write-off groups each customer line with its
    # write-off account lines, so every written-off transaction gets a voucher of its own.
    voucher_group: Voucher | None = None
    # `debit`/`credit` are in `currency`; ledger-posting books them in the accounting currency at this rate
    # (None: 1 in the accounting currency, else the setup's rate for the transaction date).
    exchange_rate: ExchangeRate | None = Field(default=None, exclude_if=_unset)

    # The line's amounts and the amounts it settles are in `currency` (a write-off settles transactions of its
    # line's currency only). Their precision in the currency (JPY "10.50") is checked by ledger-posting, which
    # rejects the journal with the reason (JournalRejected) rather than dead-lettering the request.
    _amounts_in_currency = _decimals_from("currency")


class GeneralJournalRequested(ContractMessage):
    topic: ClassVar[str] = topics.GL_GENERAL_JOURNALS

    request_id: Id
    journal_name: Id
    description: Text = ""
    lines: list[GeneralJournalLine] = Field(min_length=1, max_length=MAX_LIST_LENGTH)
    # Who asked for the journal: with the setup's `four_eyes_write_off`, not the one who may post it.
    requested_by: Subject | None = None

    def key(self) -> str:
        return self.request_id


# --- ledger-posting -> settlement, collections -----------------------------------------------


class PostedJournalLine(GeneralJournalLine):
    voucher: Voucher


class _JournalEvent(ContractMessage):
    topic: ClassVar[str] = topics.GL_JOURNAL_EVENTS

    request_id: Id | None = None
    journal_name: Id
    batch_number: Voucher

    def key(self) -> str:
        return self.batch_number


class JournalCreated(_JournalEvent):
    event_type: Literal["JournalCreated"] = "JournalCreated"


class JournalPosted(_JournalEvent):
    event_type: Literal["JournalPosted"] = "JournalPosted"
    posting_date: IsoDate
    lines: list[PostedJournalLine] = Field(max_length=MAX_LIST_LENGTH)
    requested_by: Subject | None = None  # as on the GeneralJournalRequested
    posted_by: Subject | None = None  # who posted it


class JournalRejected(ContractMessage):
    """A general journal request that ledger-posting could not accept (extension of the contract)."""

    topic: ClassVar[str] = topics.GL_JOURNAL_EVENTS
    event_type: Literal["JournalRejected"] = "JournalRejected"
    request_id: Id
    journal_name: Name
    # Written by ledger-posting from the journal it refused; not bounded in length so that no
    # reason, however long, makes the refusal itself fail.
    reason: Annotated[str, StringConstraints(pattern=_TEXT)]

    def key(self) -> str:
        return self.request_id


# --- cancelling a requested journal (extension of the contract, docs/write-offs.md) ----------


class GeneralJournalCancelRequested(ContractMessage):
    """collections -> ledger-posting: withdraw a journal request that is not posted yet.

    Keyed like its GeneralJournalRequested (by request id), so it arrives after the request.
    `message_type` is required: it is what tells a cancel from a (possibly malformed) request."""

    topic: ClassVar[str] = topics.GL_GENERAL_JOURNALS
    message_type: Literal["GeneralJournalCancelRequested"]
    request_id: Id
    journal_name: Id
    reason: Text = ""

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
    reason: Text = ""


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


# --- ledger-posting -> every service: exchange rates set over HTTP (docs/currencies.md) ---------------


class ExchangeRateSet(ContractMessage):
    """A rate for `currency` from `from_date` on (until the next rate of the currency starts), set over
    ledger-posting's HTTP API. It wins over the company setup's rate for the same currency and date.
    Keyed by currency, so a currency's changes arrive in the order they were made."""

    topic: ClassVar[str] = topics.GL_EXCHANGE_RATES

    currency: Currency
    from_date: IsoDate
    rate: ExchangeRate
    set_by: Subject | None = None

    def key(self) -> str:
        return self.currency
