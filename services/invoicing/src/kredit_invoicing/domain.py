"""Invoicing rules: a CustomerInvoiceIssued becomes a posted customer transaction and its balanced ledger voucher.

Pure: values in, decisions out. The handler stores `PostedInvoice` (with its fingerprint) and puts
`PostedInvoice.messages` in the outbox in the same transaction. Those messages are built with `construct`
(every field given) from the validated invoice, as settlement builds its own (kredit_settlement.posting says why).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _json_string  # json.dumps' own, ensure_ascii

from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import (
    CashDiscountTier,
    CustomerInvoiceIssued,
    CustomerTransactionPosted,
    TransactionType,
    VoucherLine,
    VoucherPosted,
    construct,
    derived_message_id,
    digest,
)
from kredit_shared.currencies import NoExchangeRate, RateNotSet, Rates, round_to, to_accounting
from kredit_shared.money import MAX_AMOUNT, ZERO

INVOICE_VOUCHER_PREFIX = "FTI-"  # as in the source: invoice 10020 is voucher FTI-10020
CREDIT_NOTE_VOUCHER_PREFIX = "CCN-"  # our choice: credit note 10021 is voucher CCN-10021
# Our choice for the other documents (contract field document_type).
VOUCHER_PREFIXES = {
    "Invoice": INVOICE_VOUCHER_PREFIX,
    "CreditNote": CREDIT_NOTE_VOUCHER_PREFIX,
    "InterestNote": "INT-",
    "CollectionLetterFee": "CLF-",
    "PaymentFee": "PFE-",
}
LABELS = {
    "Invoice": "Invoice",
    "CreditNote": "Credit note",
    "InterestNote": "Interest note",
    "CollectionLetterFee": "Collection letter fee",
    "PaymentFee": "Payment fee",
}
SOURCE = "invoicing"
_MESSAGE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "invoicing.kredit")


class InvoiceRejected(Exception):
    """The invoice cannot be posted; `reason` says why (it goes to the dead-letter headers and the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvoiceAwaitsRate(InvoiceRejected):
    """Rejected only because no rate is known for its `currency` on `on`: a rate set later books it."""

    def __init__(self, reason: str, currency: str, on: date) -> None:
        super().__init__(reason)
        self.currency = currency
        self.on = on


@dataclass(frozen=True)
class PostedInvoice:
    """The outcome of posting one invoice or credit note. Amounts are signed: negative on a credit note."""

    invoice_id: str
    customer_account: str
    voucher: str
    transaction_type: TransactionType
    invoice_date: date
    due_date: date
    currency: str
    net_amount: Decimal
    sales_tax_amount: Decimal
    total: Decimal
    cash_discounts: tuple[CashDiscountTier, ...]  # in date order, amounts filled in
    cash_discount_account: str | None
    fingerprint: str
    # In a foreign currency: the rate it is booked at and the total in the accounting currency
    # (None in the accounting currency, where the rate is 1 and the total is the accounting total).
    exchange_rate: Decimal | None
    accounting_total: Decimal | None
    transaction: CustomerTransactionPosted  # -> ar.customer-transactions
    ledger_voucher: VoucherPosted  # -> gl.journal-lines

    @property
    def messages(self) -> tuple[CustomerTransactionPosted, VoucherPosted]:
        return (self.transaction, self.ledger_voucher)


def post_invoice(message: CustomerInvoiceIssued, setup: CompanySetup, rates: Rates | None = None) -> PostedInvoice:
    """Post an invoice (positive total) or credit note (negative total); raise InvoiceRejected if it is not valid.

    A foreign-currency invoice is booked at the rate it states, else at `rates`' rate for its date
    (default: the setup's rates); with neither it is rejected (docs/currencies.md)."""
    rates = rates if rates is not None else Rates(setup.accounting_currency, setup.exchange_rates)
    try:
        rate = rates.resolve(
            message.currency, message.invoice_date, message.exchange_rate, document=f"invoice {message.invoice_id}"
        )
    except RateNotSet as e:  # only a rate is missing: a rate set later books it (the reasons name the invoice)
        raise InvoiceAwaitsRate(str(e), e.currency, e.on) from None
    except NoExchangeRate as e:
        raise InvoiceRejected(str(e)) from None
    try:
        return _post(message, setup, rate)
    except InvoiceRejected as e:
        raise InvoiceRejected(f"invoice {message.invoice_id}: {e.reason}") from None


def compute_due_date(
    invoice_date: date, payment_terms: str | None, explicit_due_date: date | None, setup: CompanySetup
) -> date:
    """Explicit due date wins, else invoice date + the terms' days, else the invoice date itself."""
    # An unknown code is refused even when an explicit date would win: it means the ERP and we disagree on setup.
    if payment_terms is not None and payment_terms not in setup.payment_terms:
        raise InvoiceRejected(f"unknown payment terms {payment_terms!r}")
    if explicit_due_date is not None:
        if explicit_due_date < invoice_date:
            raise InvoiceRejected(f"due date {explicit_due_date} is before the invoice date {invoice_date}")
        return explicit_due_date
    if payment_terms is None:
        return invoice_date
    return _days_after(invoice_date, setup.payment_terms[payment_terms].days, "the due date")


def _days_after(start: date, days: int, what: str) -> date:
    """`days` after `start`; refused if that is past the last date there is (an invoice dated 9999-12-31)."""
    try:
        return start + timedelta(days=days)
    except OverflowError:
        raise InvoiceRejected(f"{what} ({start} + {days} days) is after {date.max}") from None


def discount_amount(total: Decimal, percent: Decimal, currency: str = "USD") -> Decimal:
    """percent × total, half-up to the currency's minor unit (JPY: whole yen), signed like the total
    (a credit note's discount is negative)."""
    # The base is the total including sales tax: D365's default (no "discount on net amount" parameter here).
    return round_to(total * percent / 100, currency) + ZERO  # + ZERO turns -0.00 into 0.00


def compute_cash_discounts(
    invoice_date: date,
    total: Decimal,
    cash_discount_code: str | None,
    explicit_tiers: list[CashDiscountTier] | None,
    setup: CompanySetup,
    currency: str = "USD",
) -> tuple[CashDiscountTier, ...]:
    """Explicit tiers win (an empty list means no discount), else the code and its chain of next codes.

    Amounts are in the transaction currency, rounded to its minor unit."""
    if cash_discount_code is not None and cash_discount_code not in setup.cash_discount_codes:
        raise InvoiceRejected(f"unknown cash discount code {cash_discount_code!r}")
    if explicit_tiers is not None:
        raw = [(t.percent, t.date, t.amount) for t in explicit_tiers]
    elif cash_discount_code is not None:
        chain = setup.discount_chain(cash_discount_code)
        raw = [(c.percent, _days_after(invoice_date, c.days, "the cash discount date"), None) for c in chain]
    else:
        return ()
    tiers: list[CashDiscountTier] = []
    for percent, until, given in sorted(raw, key=lambda t: t[1]):
        amount = discount_amount(total, percent, currency)
        if until < invoice_date:
            raise InvoiceRejected(f"cash discount date {until} is before the invoice date {invoice_date}")
        if tiers and tiers[-1].date == until:
            raise InvoiceRejected(f"two cash discount tiers end on the same date {until}")
        # An amount sent by the ERP must agree with ours; replacing it silently would hide a disagreement.
        if given is not None and given != amount:
            raise InvoiceRejected(
                f"cash discount amount {given} until {until} is not {percent} % of the total {total} ({amount})"
            )
        tiers.append(construct(CashDiscountTier, percent=percent, date=until, amount=amount))
    return tuple(tiers)


def invoice_fingerprint(message: CustomerInvoiceIssued) -> str:
    """A digest of the invoice's content without its message_id: equal digests mean the same invoice.

    The content is the canonical JSON (content_fingerprint's: keys sorted, no spaces) of model_dump(mode="python")
    with every decimal in its shortest form ("1" and "1.00" percent, "1000" and "1000.00" amounts are the same
    content) and dates in ISO form. It is written out here field by field, as model_dump and json.dumps' callbacks
    cost more than the rest of posting an invoice; stored fingerprints are compared byte for byte, so the unit tests
    (test_fingerprint.py) check it against that original definition over generated invoices of every shape."""
    # A document_type that only says what the total's sign says anyway (or none) leaves the digest as it
    # was before the field existed, so an invoice posted then and sent again is still the same invoice.
    total = sum((line.amount + line.sales_tax_amount for line in message.lines), Decimal(0))
    implied = message.document_type in (None, "Invoice" if total > 0 else "CreditNote")
    tiers = (
        "null"
        if message.cash_discounts is None
        else "["
        + ",".join(
            f'{{"amount":{_number(t.amount)},"date":"{t.date.isoformat()}","percent":{_number(t.percent)}}}'
            for t in message.cash_discounts
        )
        + "]"
    )
    lines = ",".join(
        f'{{"amount":{_number(line.amount)},"description":{_text(line.description)},'
        f'"revenue_account":{_text(line.revenue_account)},"sales_tax_amount":{_number(line.sales_tax_amount)}}}'
        for line in message.lines
    )
    return digest(
        f'{{"cash_discount_code":{_text(message.cash_discount_code)},"cash_discounts":{tiers},'
        f'"currency":{_text(message.currency)},"customer_account":{_text(message.customer_account)},'
        f'"customer_name":{_text(message.customer_name)},'
        + ("" if implied else f'"document_type":{_text(message.document_type)},')
        + f'"due_date":{_day(message.due_date)},'
        # left out while unset (the contract's exclude_if), as from the dump
        + ("" if message.exchange_rate is None else f'"exchange_rate":{_number(message.exchange_rate)},')
        + f'"invoice_date":{_day(message.invoice_date)},"invoice_id":{_text(message.invoice_id)},'
        f'"lines":[{lines}],"payment_terms":{_text(message.payment_terms)}}}'
    )


def _text(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def _number(value: Decimal | None) -> str:
    return "null" if value is None else f'"{(value + 0).normalize():f}"'


def _day(value: date | None) -> str:
    return "null" if value is None else f'"{value.isoformat()}"'


def ensure_same_invoice(posted_fingerprint: str, message: CustomerInvoiceIssued) -> None:
    """For a message whose invoice_id is already posted: return if it is the same invoice (a no-op), else reject."""
    if invoice_fingerprint(message) != posted_fingerprint:
        raise InvoiceRejected(
            f"invoice {message.invoice_id}: already posted with different content; correct it with a credit note"
        )


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def document_transaction_type(document_type: str | None, total: Decimal) -> TransactionType:
    """The customer transaction's type: the document type, or by the sign of the total when none is given.

    A credit note credits the customer and every other document debits it, so a type the ERP states must
    agree with the sign of the total."""
    kind = document_type or ("Invoice" if total > 0 else "CreditNote")
    if (kind == "CreditNote") != (total < 0):
        raise InvoiceRejected(
            f"document_type {kind} needs a {'negative' if kind == 'CreditNote' else 'positive'} total, not {total}"
        )
    return kind  # type: ignore[return-value]


def _post(message: CustomerInvoiceIssued, setup: CompanySetup, rate: Decimal) -> PostedInvoice:
    foreign = message.currency != setup.accounting_currency
    revenue: list[
        tuple[str, Decimal, str, str | None]
    ] = []  # (account, signed amount, text, customer) per line, debit positive
    for n, line in enumerate(message.lines, 1):
        account = line.revenue_account or setup.default_revenue_account
        if account not in setup.main_accounts:
            raise InvoiceRejected(f"line {n}: unknown revenue account {account!r}")
        # Tax follows its line's direction; tax on a zero or opposite line is a data error in the ERP.
        if line.sales_tax_amount and _sign(line.sales_tax_amount) != _sign(line.amount):
            raise InvoiceRejected(
                f"line {n}: sales tax {line.sales_tax_amount} and amount {line.amount} have different signs"
            )
        revenue.append((account, -line.amount, line.description, None))

    net = sum((line.amount for line in message.lines), ZERO)
    tax = sum((line.sales_tax_amount for line in message.lines), ZERO)
    total = net + tax
    if total == 0:
        raise InvoiceRejected(f"the lines total 0.00 (net {net}, sales tax {tax}): nothing to post")
    # Mixed-sign lines are fine (e.g. a negative rebate line), but the net must point the same way as the total.
    if _sign(net) != _sign(total):
        raise InvoiceRejected(f"net amount {net} and total {total} have different signs")

    kind = document_transaction_type(message.document_type, total)
    voucher = VOUCHER_PREFIXES[kind] + message.invoice_id
    label = f"{LABELS[kind]} {message.invoice_id}"
    due = compute_due_date(message.invoice_date, message.payment_terms, message.due_date, setup)
    tiers = compute_cash_discounts(
        message.invoice_date, total, message.cash_discount_code, message.cash_discounts, setup, message.currency
    )
    code = message.cash_discount_code
    # Explicit tiers without a code carry no account: settlement then uses its own default.
    discount_account = setup.cash_discount_codes[code].account if code is not None else None

    # Signed postings (debit positive); a credit note's negative total yields the mirror image by itself.
    postings: list[tuple[str, Decimal, str, str | None]] = [
        (setup.customer_posting_profile.summary_account, total, label, message.customer_account)
    ]
    postings += revenue + [(setup.sales_tax_account, -tax, f"Sales tax, {label.lower()}", None)]
    accounting = [amt for _, amt, _, _ in postings]
    if foreign:
        accounting = convert_postings(accounting, rate, setup.accounting_currency)
        if accounting[0] == 0:
            raise InvoiceRejected(
                f"the total {total} {message.currency} at the exchange rate {rate:f} is 0.00 "
                f"{setup.accounting_currency}: nothing to post"
            )
        # a large total at a rate above 1, or a large line of a small total
        if (largest := max(accounting, key=abs)) and abs(largest) > MAX_AMOUNT:
            raise InvoiceRejected(
                f"at the exchange rate {rate:f}, {abs(largest)} {setup.accounting_currency} is more than the "
                f"largest amount {MAX_AMOUNT}"
            )
    accounting_total = accounting[0]  # the customer's line: the total
    voucher_lines = [
        construct(
            VoucherLine,
            account=acc,
            debit=max(acc_amt, ZERO),
            credit=max(-acc_amt, ZERO),
            text=text or label,
            customer_account=cust,
            transaction_currency=message.currency if foreign else None,
            transaction_currency_amount=amt if foreign else None,
        )
        for (acc, amt, text, cust), acc_amt in zip(postings, accounting, strict=True)
        if acc_amt != 0  # a tiny amount can be worth 0.00 in the accounting currency: the ledger refuses 0 lines
    ]

    transaction = construct(
        CustomerTransactionPosted,
        message_id=_message_id(setup, voucher, CustomerTransactionPosted.topic),
        voucher=voucher,
        transaction_type=kind,
        customer_account=message.customer_account,
        customer_name=message.customer_name,
        transaction_date=message.invoice_date,
        invoice_id=message.invoice_id,
        amount=total,
        currency=message.currency,
        due_date=due,
        cash_discounts=list(tiers),
        cash_discount_account=discount_account,
        sales_tax_amount=tax,
        payment_id=None,
        exchange_rate=rate if foreign else None,
        accounting_currency_amount=accounting_total if foreign else None,
    )
    ledger_voucher = construct(
        VoucherPosted,
        message_id=_message_id(setup, voucher, VoucherPosted.topic),
        voucher=voucher,
        posting_date=message.invoice_date,
        currency=setup.accounting_currency,
        source=SOURCE,
        description=f"{label}, customer {message.customer_account}",
        lines=voucher_lines,
    )
    return PostedInvoice(
        invoice_id=message.invoice_id,
        customer_account=message.customer_account,
        voucher=voucher,
        transaction_type=kind,
        invoice_date=message.invoice_date,
        due_date=due,
        currency=message.currency,
        net_amount=net,
        sales_tax_amount=tax,
        total=total,
        cash_discounts=tiers,
        cash_discount_account=discount_account,
        fingerprint=invoice_fingerprint(message),
        exchange_rate=rate if foreign else None,
        accounting_total=accounting_total if foreign else None,
        transaction=transaction,
        ledger_voucher=ledger_voucher,
    )


def convert_postings(amounts: list[Decimal], rate: Decimal, accounting_currency: str) -> list[Decimal]:
    """The accounting-currency values of an invoice voucher's signed postings (debit positive): the
    customer's total first, then the revenue lines, then sales tax (docs/currencies.md).

    The customer line is `to_accounting(total, rate)`; every other line is converted on its own, and the
    rounding difference, if any, goes to the largest revenue line, so the values sum to zero."""
    converted = [to_accounting(amount, rate, accounting_currency) for amount in amounts]
    difference = sum(converted, ZERO)
    if difference:
        revenue = range(1, len(amounts) - 1)  # between the customer line and the sales tax line
        largest = max(revenue, key=lambda n: abs(amounts[n]))  # the first of equals
        converted[largest] -= difference
    return [value + ZERO for value in converted]


def _message_id(setup: CompanySetup, voucher: str, topic: str) -> str:
    # Derived from the voucher, not random: posting the same invoice again (a crash before the inbox
    # commit) emits the same ids, which downstream inboxes then ignore. invoice_id is unique per company.
    return derived_message_id(_MESSAGE_ID_NAMESPACE, f"{setup.company}/{voucher}/{topic}")
