"""What settlement books, for the message handlers and the HTTP commands alike: the company setup as
settlement needs it, the parameters and rates a settlement reads, and the posting of settlement results (open
items saved, settled pairs recorded, customer transactions, OpenItemsSettled and ledger vouchers emitted).

The messages it emits are built with `construct` (pydantic's model_construct, faster), without the contract's
validators: those check input from other systems, and these messages are built from domain values already
checked. Every field is given, even those with a default: only then is `construct` fast. Every
message a handler test emits is parsed as its consumers parse it (the handler tests' HandlerDatabase), and
tests/unit/test_messages.py checks these builders against validation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cached_property
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from kredit_settlement import domain
from kredit_settlement.domain import OpenTransaction, SettledPair, SettlementResult
from kredit_settlement.tables import (
    OpenItems,
    SettlementRow,
    load_parameters,
)
from kredit_shared.company_setup import CompanySetup, SetupError
from kredit_shared.contracts import (
    CashDiscountTier,
    CustomerTransactionPosted,
    OpenItemsSettled,
    VoucherLine,
    VoucherPosted,
    construct,
    new_message_id,
)
from kredit_shared.currencies import Rates
from kredit_shared.exchange_rates import load_rates
from kredit_shared.money import ZERO
from kredit_shared.service import UnitOfWork


@dataclass(frozen=True)
class SettlementSetup:
    """The company setup as settlement needs it: the accounts it books to, the seed of its parameters row,
    and the company setup itself for the exchange rates."""

    accounting_currency: str
    main_accounts: frozenset[str]
    bank_account: str
    summary_account: str
    cash_discount_account: str | None  # for discounts of transactions that name none
    parameters: domain.SettlementParameters  # the seed of the parameters row
    penny_difference_account: str | None = None
    overpayment_underpayment_account: str | None = None
    realized_gain_account: str | None = None  # the setup's exchange_accounts (docs/currencies.md)
    realized_loss_account: str | None = None
    company: CompanySetup | None = None  # for the exchange rates (load_rates); None: no rates set up

    @cached_property  # asked several times a payment; the setup never changes
    def accounts(self) -> domain.Accounts:
        return domain.Accounts(
            self.cash_discount_account,
            self.penny_difference_account,
            self.overpayment_underpayment_account,
            self.accounting_currency,
            self.realized_gain_account,
            self.realized_loss_account,
        )

    def foreign(self, currency: str) -> bool:
        return currency != self.accounting_currency

    @classmethod
    def from_setup(cls, company: CompanySetup) -> SettlementSetup:
        seed = company.settlement
        parameters = domain.SettlementParameters(
            seed.calculate_cash_discounts_for_partial_payments,
            seed.calculate_cash_discounts_for_credit_notes,
            seed.maximum_penny_difference,
            seed.maximum_overpayment_or_underpayment,
            domain.CashDiscountAdministration(seed.cash_discount_administration),
            seed.automatic_settlement,
            seed.prioritize_settlement,
            seed.use_priority_for_automatic_settlements,
            tuple(domain.priority_rule(**rule.model_dump()) for rule in seed.settlement_priority),
        )
        setup = cls(
            accounting_currency=company.accounting_currency,
            main_accounts=frozenset(company.main_accounts),
            bank_account=company.default_bank_account,
            summary_account=company.customer_posting_profile.summary_account,
            cash_discount_account=domain.default_discount_account(
                seed.accounts.cash_discount, (code.account for code in company.cash_discount_codes.values())
            ),
            parameters=parameters,
            penny_difference_account=seed.accounts.penny_difference,
            overpayment_underpayment_account=seed.accounts.customer_overpayment_underpayment,
            realized_gain_account=company.exchange_accounts.realized_gain if company.exchange_accounts else None,
            realized_loss_account=company.exchange_accounts.realized_loss if company.exchange_accounts else None,
            company=company,
        )
        try:
            domain.check_parameters(parameters, setup.accounts)
        except domain.InvalidParameters as e:
            raise SetupError(f"company setup: settlement.{e}") from None
        return setup


async def parameters_of(session: AsyncSession, setup: SettlementSetup) -> domain.SettlementParameters:
    return (await load_parameters(session, setup.parameters)).to_domain()


async def rates_of(session: AsyncSession, setup: SettlementSetup) -> Rates:
    """The exchange rates documents that state none are booked at: read once per batch."""
    if setup.company is None:
        return Rates(setup.accounting_currency)
    return await load_rates(session, setup.company)


# --- posting a settlement -------------------------------------------------------------------


async def post(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    results: Sequence[SettlementResult],
    transactions: list[OpenTransaction],
    settlement_id: str,
) -> list[OpenTransaction]:
    """Book the results (discount transactions, differences, settled pairs), save, and publish.
    Returns `transactions` after them."""
    vouchers = {
        key: await _free_vouchers(store, *key, count)
        for key, count in domain.vouchers_needed(results, transactions, setup.accounts).items()
    }
    booking = domain.book(results, transactions, settlement_id, vouchers, setup.accounts)
    await store.save([*booking.transactions, *booking.discounts])
    credit_of = {p.cash_discount_voucher or p.debit_voucher: p.credit_voucher for p in booking.pairs}
    for discount in booking.discounts:
        credit = credit_of[discount.voucher]
        post_discount(uow, setup, discount, f"Cash discount settling {credit}", payment_id=credit)
    await record(setup, uow, store, booking.pairs, group_id=settlement_id)
    return list(booking.transactions)


async def _free_vouchers(store: OpenItems, prefix: str, credit: str, count: int) -> list[str]:
    taken: set[str] = set()
    while True:
        vouchers = domain.numbered_vouchers(prefix, credit, count, taken)
        if not (clash := await store.used_names(vouchers)):
            return vouchers
        taken |= clash


async def record(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    pairs: Iterable[SettledPair],
    group_id: str,
    reversal_of: str | None = None,
) -> None:
    """Keep and publish settled pairs, and post the differences they wrote off."""
    for pair in pairs:
        await store.add(SettlementRow, SettlementRow.values(pair, group_id, reversal_of))
        uow.emit(_settled(setup, pair))
        again = "reversed " if reversal_of else ""
        if pair.difference_amount and pair.difference_voucher and pair.difference_account:
            send_voucher(
                uow,
                ledger_voucher(
                    setup,
                    pair.difference_voucher,
                    pair.settlement_date,
                    pair.currency,
                    pair.customer_account,
                    -pair.difference_amount,  # an underpayment written off credits the customer
                    -pair.difference_accounting,
                    pair.difference_account,
                    f"Settlement {pair.settlement_id}: {again}difference written off",
                ),
            )
        if pair.realized_loss and pair.exchange_voucher and pair.exchange_account:
            # A loss credits the customer's summary account in the accounting currency only (EUR 0.00).
            send_voucher(
                uow,
                ledger_voucher(
                    setup,
                    pair.exchange_voucher,
                    pair.settlement_date,
                    pair.currency,
                    pair.customer_account,
                    ZERO,
                    -pair.realized_loss,
                    pair.exchange_account,
                    f"Settlement {pair.settlement_id}: {again}realized exchange "
                    + ("loss" if pair.realized_loss > 0 else "gain"),
                ),
            )


async def record_write_off_pairs(
    setup: SettlementSetup,
    uow: UnitOfWork,
    store: OpenItems,
    write_off: OpenTransaction,
    pairs: Iterable[domain.PairSettled],
    source: str,
    numbered: bool,
) -> None:
    for n, pair in enumerate(pairs, 1):
        accounting = pair.amount if pair.accounting_amount is None else pair.accounting_amount
        fx: dict[str, Any] = {}
        if setup.foreign(write_off.currency):
            fx = {
                "debit_accounting_amount": accounting,
                "credit_accounting_amount": accounting,
                "cash_discount_accounting_amount": ZERO,
                "difference_accounting_amount": ZERO,
                "realized_exchange_loss": ZERO,
            }
        settled = SettledPair(
            f"{source}:{n}" if numbered else source,
            write_off.customer_account,
            write_off.transaction_date,
            write_off.currency,
            pair.debit_voucher,
            pair.credit_voucher,
            pair.amount,
            **fx,
        )
        await store.add(SettlementRow, SettlementRow.values(settled, group_id=source))
        uow.emit(_settled(setup, settled))


def _settled(setup: SettlementSetup, pair: SettledPair) -> OpenItemsSettled:
    """OpenItemsSettled of a pair; the accounting-currency amounts only in a foreign currency."""
    foreign = setup.foreign(pair.currency)
    return construct(
        OpenItemsSettled,
        message_id=new_message_id(),
        settlement_id=pair.settlement_id,
        customer_account=pair.customer_account,
        settlement_date=pair.settlement_date,
        currency=pair.currency,
        debit_voucher=pair.debit_voucher,
        credit_voucher=pair.credit_voucher,
        amount_settled=pair.amount_settled,
        cash_discount_amount=pair.cash_discount_amount,
        cash_discount_voucher=pair.cash_discount_voucher,
        difference_amount=pair.difference_amount,
        debit_accounting_amount=pair.debit_accounting if foreign else None,
        credit_accounting_amount=pair.credit_accounting if foreign else None,
        cash_discount_accounting_amount=pair.cash_discount_accounting if foreign else None,
        difference_accounting_amount=pair.difference_accounting if foreign else None,
        realized_exchange_loss=pair.realized_loss if foreign else None,
    )


# --- emitting -------------------------------------------------------------------------------


def transaction_posted(
    setup: SettlementSetup, t: OpenTransaction, payment_id: str | None = None
) -> CustomerTransactionPosted:
    """A transaction settlement posts; in a foreign currency with the rate and accounting amount it is booked at."""
    foreign = setup.foreign(t.currency)
    return construct(
        CustomerTransactionPosted,
        message_id=new_message_id(),
        voucher=t.voucher,
        transaction_type=t.transaction_type,  # type: ignore[arg-type]  # a str in the domain; settlement posts only types the contract lists
        customer_account=t.customer_account,
        customer_name=None,
        transaction_date=t.transaction_date,
        invoice_id=t.invoice_id,
        amount=t.original_amount,
        currency=t.currency,
        due_date=t.due_date,
        cash_discounts=[
            construct(CashDiscountTier, percent=d.percent, date=d.date, amount=d.amount) for d in t.cash_discounts
        ],
        cash_discount_account=None,
        sales_tax_amount=ZERO,
        payment_id=payment_id,
        exchange_rate=t.exchange_rate if foreign else None,
        accounting_currency_amount=t.accounting_original_amount if foreign else None,
    )


def voucher_of(setup: SettlementSetup, t: OpenTransaction, account: str, text: str) -> VoucherPosted:
    """The ledger voucher of a customer transaction settlement posts: the customer's summary account by its
    amount (debit +, credit −), `account` (bank, discount) the other way; in the accounting currency."""
    return ledger_voucher(
        setup,
        t.voucher,
        t.transaction_date,
        t.currency,
        t.customer_account,
        t.original_amount,
        t.accounting_original_amount,
        account,
        text,
    )


def post_discount(
    uow: UnitOfWork, setup: SettlementSetup, discount: OpenTransaction, text: str, payment_id: str | None = None
) -> None:
    """A cash discount transaction settlement books (or reverses): to the customers' transactions, and to the
    ledger against its discount account."""
    uow.emit(transaction_posted(setup, discount, payment_id=payment_id))
    account = setup.accounts.for_discount(discount.cash_discount_account)
    send_voucher(uow, voucher_of(setup, discount, account, text))


def send_voucher(uow: UnitOfWork, voucher: VoucherPosted) -> None:
    """Send a voucher to the ledger, unless it is worth nothing in the accounting currency (JPY 1 at 0.004 is
    USD 0.00): ledger-posting refuses a voucher without an amount, and there is nothing to book."""
    if any(line.debit or line.credit for line in voucher.lines):
        uow.emit(voucher)


def ledger_voucher(
    setup: SettlementSetup,
    voucher: str,
    on: date,
    currency: str,
    customer_account: str,
    to_customer: Decimal,
    to_customer_accounting: Decimal,
    account: str,
    text: str,
) -> VoucherPosted:
    """A two-line voucher in the accounting currency: the customer's summary account by `to_customer_accounting`
    (debit +), `account` the other way. In a foreign currency both lines also carry the transaction currency
    and amount (`to_customer` on the customer's line, its opposite on the other)."""
    foreign = setup.foreign(currency)
    amount = abs(to_customer_accounting)

    def line(to: str, customer: str | None, in_currency: Decimal, debit: bool) -> VoucherLine:
        return construct(
            VoucherLine,
            account=to,
            debit=amount if debit else ZERO,
            credit=ZERO if debit else amount,
            text=text,
            customer_account=customer,
            transaction_currency=currency if foreign else None,
            transaction_currency_amount=in_currency if foreign else None,
        )

    debits = to_customer_accounting > 0
    customer = line(setup.summary_account, customer_account, to_customer, debit=debits)
    other = line(account, None, -to_customer + ZERO, debit=not debits)
    return construct(
        VoucherPosted,
        message_id=new_message_id(),
        voucher=voucher,
        posting_date=on,
        currency=setup.accounting_currency if foreign else currency,
        source="settlement",
        description=text,
        lines=[customer, other] if debits else [other, customer],  # the debit first
    )
