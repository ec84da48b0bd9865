"""What settlement accepts from others and in which order what waits is settled: the checks on a posted
transaction and a received payment, and the order of the credits waiting for a new invoice (docs/ordering.md)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal

from kredit_settlement.domain.model import (
    ONE,
    POSTED_ELSEWHERE,
    Accounts,
    Mark,
    OpenTransaction,
    PaymentAwaitsRate,
    RejectedMark,
    SettlementError,
    SettlementParameters,
    TransactionRejected,
)
from kredit_shared.currencies import NoExchangeRate, RateNotSet, Rates


def admit_transaction(
    new: OpenTransaction,
    known: OpenTransaction | None,
    invoice_id_taken: bool,
    parameters: SettlementParameters,
    accounting_currency: str | None = None,
) -> OpenTransaction | None:
    """The transaction to keep as an open item, None for a re-send of one already kept (settlement's own postings
    come back on the topic too), or TransactionRejected saying why it cannot be taken. In the accounting
    currency it must be at rate 1; in a foreign currency its accounting amount must be on the amount's side."""
    if known is not None:
        if (known.transaction_type, known.customer_account, known.original_amount) != (
            new.transaction_type,
            new.customer_account,
            new.original_amount,
        ):
            raise TransactionRejected(
                f"voucher {new.voucher} is already a {known.transaction_type} of customer "
                f"{known.customer_account} for {known.original_amount}"
            )
        return None
    if new.transaction_type not in POSTED_ELSEWHERE:
        raise TransactionRejected(
            f"{new.transaction_type} {new.voucher} is unknown: settlement posts payments, cash "
            f"discounts and write-offs itself and takes only invoices and credit notes from others"
        )
    if (new.transaction_type == "CreditNote") != (new.original_amount < 0) or new.original_amount == 0:
        raise TransactionRejected(
            f"{new.transaction_type} {new.voucher} has the wrong sign: amount {new.original_amount}"
        )
    if accounting_currency is not None and (problem := _accounting_problem(new, accounting_currency)):
        raise TransactionRejected(f"{new.transaction_type} {new.voucher} {problem}")
    if invoice_id_taken:
        raise TransactionRejected(
            f"invoice id {new.invoice_id} of {new.voucher} is already used by another transaction"
        )
    # A credit note posted while automatic settlement is off waits for a person (D365 *Automatic settlement*).
    return new if parameters.automatic_settlement else replace(new, auto_settle=False)


def _accounting_problem(t: OpenTransaction, accounting_currency: str) -> str | None:
    if t.currency == accounting_currency:
        if t.exchange_rate != ONE or t.accounting_original_amount != t.original_amount:
            return (
                f"is in the accounting currency {accounting_currency}; its exchange_rate must be 1 and its "
                f"accounting_currency_amount its amount, not {t.exchange_rate:f} and {t.accounting_original_amount}"
            )
        return None
    if t.accounting_original_amount * t.original_amount < 0:
        return (
            f"has the wrong sign in the accounting currency: amount {t.original_amount} {t.currency}, "
            f"accounting_currency_amount {t.accounting_original_amount} {accounting_currency}"
        )
    return None


def check_currency(what: str, currency: str, accounts: Accounts) -> None:
    """TransactionRejected for a document in a foreign currency when the setup names no exchange_accounts: its
    settlement may realize an exchange difference, with no account to post it to."""
    if currency != accounts.accounting_currency and (accounts.realized_gain is None or accounts.realized_loss is None):
        raise TransactionRejected(
            f"{what} is in {currency}, not the accounting currency {accounts.accounting_currency}, and the company "
            f"setup names no exchange_accounts for the realized exchange differences its settlement may post"
        )


def marks_to_keep(marks: Sequence[Mark], rejected: Iterable[RejectedMark]) -> list[tuple[int, Mark]]:
    """The payment's marks on transactions not known yet, each with its place in the payment's list (an invoice
    marked twice: its first mark). They are kept, not refused: the payment's money waits for them."""
    positions = {m.invoice_id: n for n, m in reversed(list(enumerate(marks)))}
    return [(positions[r.invoice_id], marks[positions[r.invoice_id]]) for r in rejected if r.invoice_unknown]


class NothingToRelease(SettlementError):
    """A payment whose money is held by no mark (HTTP 409)."""


def release(payment_id: str, payment: OpenTransaction | None) -> OpenTransaction:
    """A marked payment an operator releases, as an ordinary automatic credit from now on; NothingToRelease
    when it holds nothing (unknown as a transaction, automatic already, or nothing of it open)."""
    if payment is None or payment.auto_settle or payment.open_amount >= 0:
        raise NothingToRelease(
            f"payment {payment_id} holds nothing: "
            + ("it settles automatically already" if payment and payment.auto_settle else "nothing of it is open")
        )
    return replace(payment, auto_settle=True)


def admit_payment(
    payment_id: str, currency: str, bank_account: str, accounting_currency: str, main_accounts: Collection[str]
) -> None:
    """TransactionRejected for a payment settlement cannot post. A payment in another currency than the
    accounting currency is booked at its rate (payment_rate)."""
    del currency, accounting_currency  # any currency with a rate (payment_rate)
    if bank_account not in main_accounts:
        raise TransactionRejected(f"payment {payment_id}: bank account {bank_account!r} is not a main account")


def payment_rate(payment_id: str, currency: str, on: date, given: Decimal | None, rates: Rates) -> Decimal:
    """The rate a payment is booked at: the one it states, else the rate set for its currency on its date
    (Rates.resolve); TransactionRejected saying why when there is none (PaymentAwaitsRate when only a rate for
    its currency and date is missing)."""
    try:
        return rates.resolve(currency, on, given, document=f"payment {payment_id}")
    except NoExchangeRate as e:
        reason = (
            f"payment {payment_id} is in {currency}; payments are accepted in the accounting currency "
            f"{rates.accounting_currency} only, or in another currency at a known exchange rate: {e}"
        )
        if isinstance(e, RateNotSet):
            raise PaymentAwaitsRate(reason, e.currency, e.on) from None
        raise TransactionRejected(reason) from None


def refused_pending_marks(credit_note: OpenTransaction, payment_vouchers: Sequence[str]) -> list[str]:
    """Why the payments' pending marks on a newly arrived credit note cannot be settled with it: a mark on what
    turns out to be a credit note settles nothing by itself (two credits are settled together by a person)."""
    return [
        f"pending mark of payment {voucher}: {credit_note.voucher} is a credit note; settle them together with "
        f"POST /api/v1/settlements"
        for voucher in payment_vouchers
    ]


def waiting_credits(
    pending: Sequence[tuple[OpenTransaction, Mark]],
    others: Sequence[OpenTransaction],
    arrival: Callable[[str], int],
    parameters: SettlementParameters,
) -> list[tuple[OpenTransaction, Mark | None]]:
    """The credits a new invoice takes, in their order of arrival: the payments whose pending marks name it, and
    (with automatic settlement) the customer's automatic credits."""
    credits: list[tuple[OpenTransaction, Mark | None]] = list(pending)
    if parameters.automatic_settlement:
        credits += [(t, None) for t in others if t.open_amount < 0 and t.auto_settle]
    return sorted(credits, key=lambda c: arrival(c[0].voucher))
