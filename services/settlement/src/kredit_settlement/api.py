"""Settlement's HTTP API: parameters, the preview, settling and reversing by hand, open transactions, pending marks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from kredit_settlement import commands, queries, tables
from kredit_settlement.domain import (
    CashDiscountAdministration,
    InvalidParameters,
    Mark,
    MarkRejected,
    NothingToRelease,
    OpenTransaction,
    ReversalRefused,
    SettledPair,
    SettlementError,
    SettlementParameters,
    Unknown,
    priority_rule,
)
from kredit_settlement.posting import SettlementSetup
from kredit_shared.audit import AuditDep
from kredit_shared.auth import Role, require
from kredit_shared.contracts import MAX_LIST_LENGTH, Code, Id, IsoDate, Voucher
from kredit_shared.currencies import ExchangeRate
from kredit_shared.http import refusals_as_problems
from kredit_shared.money import Amount, TransactionAmount
from kredit_shared.service import RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["settlement"])


def _settlement_setup(request: Request) -> SettlementSetup:
    return request.app.state.settlement_setup


SettlementSetupDep = Annotated[SettlementSetup, Depends(_settlement_setup)]


# --- schemas ----------------------------------------------------------------------------------


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriorityRuleIO(_Input):
    criterion: Literal["TransactionType", "DueDate", "TransactionDate", "CashDiscountDate", "Amount", "Voucher"]
    direction: Literal["Ascending", "Descending"] = "Ascending"
    order: list[Code] | None = Field(default=None, max_length=20)  # TransactionType: the types settled first


class Parameters(_Input):
    """Settlement's parameters (D365 *Accounts receivable parameters*, Settlement). A PUT sends any non-empty
    subset. An answer lists calculate_cash_discounts_for_partial_payments and each other parameter that was ever
    changed or differs from its default (all of them with ?include_defaults=true), so a client of the original
    contract reads the answer it always read."""

    calculate_cash_discounts_for_partial_payments: StrictBool | None = None
    calculate_cash_discounts_for_credit_notes: StrictBool | None = None
    maximum_penny_difference: Amount | None = None
    maximum_overpayment_or_underpayment: Amount | None = None
    cash_discount_administration: Literal["Specific", "Unspecific"] | None = None
    automatic_settlement: StrictBool | None = None
    prioritize_settlement: StrictBool | None = None
    use_priority_for_automatic_settlements: StrictBool | None = None
    settlement_priority: list[PriorityRuleIO] | None = Field(default=None, max_length=6)

    @model_validator(mode="after")
    def _some_and_no_nulls(self) -> Parameters:
        if not self.model_fields_set:
            raise ValueError("send at least one parameter")
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))}: null is not a value; leave the field out to keep it")
        return self

    def changes(self) -> dict[str, Any]:
        """The parameters sent, as the domain's values."""
        changes: dict[str, Any] = {name: getattr(self, name) for name in self.model_fields_set}
        if "cash_discount_administration" in changes:
            changes["cash_discount_administration"] = CashDiscountAdministration(
                changes["cash_discount_administration"]
            )
        if "settlement_priority" in changes:
            changes["settlement_priority"] = tuple(
                priority_rule(**r.model_dump()) for r in changes["settlement_priority"]
            )
        return changes

    @classmethod
    def of(cls, row: tables.ParametersRow, include_defaults: bool) -> Parameters:
        p = row.to_domain()
        values = {
            "calculate_cash_discounts_for_partial_payments": p.calculate_cash_discounts_for_partial_payments,
            "calculate_cash_discounts_for_credit_notes": p.calculate_cash_discounts_for_credit_notes,
            "maximum_penny_difference": p.maximum_penny_difference,
            "maximum_overpayment_or_underpayment": p.maximum_overpayment_or_underpayment,
            "cash_discount_administration": p.cash_discount_administration.value,
            "automatic_settlement": p.automatic_settlement,
            "prioritize_settlement": p.prioritize_settlement,
            "use_priority_for_automatic_settlements": p.use_priority_for_automatic_settlements,
            "settlement_priority": [PriorityRuleIO(**rule) for rule in row.settlement_priority],
        }
        defaults = cls.of_defaults()
        shown = {
            name
            for name, value in values.items()
            if include_defaults
            or name in ("calculate_cash_discounts_for_partial_payments", *row.set_fields)
            or value != defaults[name]
        }
        return cls(**{name: values[name] for name in shown})

    @staticmethod
    def of_defaults() -> dict[str, Any]:
        d = SettlementParameters()
        return {
            "calculate_cash_discounts_for_credit_notes": d.calculate_cash_discounts_for_credit_notes,
            "maximum_penny_difference": d.maximum_penny_difference,
            "maximum_overpayment_or_underpayment": d.maximum_overpayment_or_underpayment,
            "cash_discount_administration": d.cash_discount_administration.value,
            "automatic_settlement": d.automatic_settlement,
            "prioritize_settlement": d.prioritize_settlement,
            "use_priority_for_automatic_settlements": d.use_priority_for_automatic_settlements,
            "settlement_priority": [],
            "calculate_cash_discounts_for_partial_payments": d.calculate_cash_discounts_for_partial_payments,
        }


class MarkIn(_Input):
    """A marked transaction: an invoice (or other debit) or credit note by its invoice id, an open payment by its
    voucher. Unknown fields are refused."""

    invoice_id: Id
    # Up to three decimals here; checked against the marked transaction's currency (domain.check_mark_precision).
    amount_to_settle: TransactionAmount | None = None  # omitted: the whole open balance
    use_cash_discount: Code = "Normal"
    full_settlement: StrictBool = False
    cash_discount_amount: TransactionAmount | None = None

    def to_domain(self) -> Mark:
        return Mark(
            self.invoice_id,
            self.amount_to_settle,
            self.use_cash_discount,
            self.full_settlement,
            self.cash_discount_amount,
        )


class PreviewIn(_Input):
    customer_account: Id
    payment_date: IsoDate
    date_to_use_for_calculating_discounts: IsoDate | None = None
    marks: list[MarkIn] = Field(min_length=1, max_length=MAX_LIST_LENGTH)


class SettleIn(_Input):
    customer_account: Id
    date: IsoDate | None = None  # omitted: the latest date of the marked transactions
    date_to_use_for_calculating_discounts: IsoDate | None = None
    marks: list[MarkIn] = Field(min_length=2, max_length=MAX_LIST_LENGTH)


class ReverseIn(_Input):
    date: IsoDate | None = None  # omitted: the date of the settlement


class PreviewMarkOut(BaseModel):
    invoice_id: str
    cash_discount_date: dt.date | None
    cash_discount_amount: TransactionAmount
    use_cash_discount: str
    cash_discount_taken: TransactionAmount
    cash_discount_amount_to_take: TransactionAmount
    amount_to_settle: TransactionAmount


class PreviewOut(BaseModel):
    customer_account: str
    payment_date: dt.date
    marks: list[PreviewMarkOut]


class DiscountTierOut(BaseModel):
    date: dt.date
    percent: Decimal
    amount: TransactionAmount | None


class OpenTransactionOut(BaseModel):
    voucher: str
    type: str
    date: dt.date
    invoice_id: str | None
    original_amount: TransactionAmount
    open_amount: TransactionAmount  # signed: debit +, credit −
    currency: str
    due_date: dt.date | None
    cash_discounts: list[DiscountTierOut]
    cash_discount_taken: TransactionAmount
    cash_discount_account: str | None
    # The rate it was booked at (1 in the accounting currency) and its amounts in the accounting currency.
    exchange_rate: ExchangeRate
    accounting_original_amount: Amount
    accounting_open_amount: Amount

    @classmethod
    def of(cls, t: OpenTransaction) -> OpenTransactionOut:
        return cls(
            voucher=t.voucher,
            type=t.transaction_type,
            date=t.transaction_date,
            invoice_id=t.invoice_id,
            original_amount=t.original_amount,
            open_amount=t.open_amount,
            currency=t.currency,
            due_date=t.due_date,
            cash_discounts=[DiscountTierOut(date=d.date, percent=d.percent, amount=d.amount) for d in t.cash_discounts],
            cash_discount_taken=t.discount_taken,
            cash_discount_account=t.cash_discount_account,
            exchange_rate=t.exchange_rate,
            accounting_original_amount=t.accounting_original_amount,
            accounting_open_amount=t.accounting_open_amount,
        )


class OpenTransactionsOut(BaseModel):
    customer_account: str
    transactions: list[OpenTransactionOut]


class PendingMarkOut(BaseModel):
    payment_id: str
    customer_account: str
    payment_date: dt.date
    invoice_id: str
    amount_to_settle: TransactionAmount | None
    use_cash_discount: str
    reserved: TransactionAmount  # what of the payment's open credit this mark holds until its invoice arrives


class PendingWriteOffOut(BaseModel):
    write_off_voucher: str
    journal_batch_number: str
    customer_account: str
    voucher: str  # the transaction it names, not known to settlement yet
    amount: TransactionAmount


class PendingOut(BaseModel):
    pending_marks: list[PendingMarkOut]
    pending_write_offs: list[PendingWriteOffOut]


class SettledPairOut(BaseModel):
    settlement_id: str
    debit_voucher: str
    credit_voucher: str
    amount_settled: TransactionAmount
    cash_discount_amount: TransactionAmount
    cash_discount_voucher: str | None
    difference_amount: TransactionAmount  # + an underpayment written off, − an overpayment written off
    difference_account: str | None
    # In the accounting currency (equal to the amounts above in it): what the debit's balance fell by, the
    # credit's rose by, the discount and difference, and the realized exchange loss (negative: a gain)
    # posted on exchange_voucher (docs/currencies.md).
    debit_accounting_amount: Amount
    credit_accounting_amount: Amount
    cash_discount_accounting_amount: Amount
    difference_accounting_amount: Amount
    realized_exchange_loss: Amount
    exchange_voucher: str | None

    @classmethod
    def of(cls, p: SettledPair) -> SettledPairOut:
        return cls(
            settlement_id=p.settlement_id,
            debit_voucher=p.debit_voucher,
            credit_voucher=p.credit_voucher,
            amount_settled=p.amount_settled,
            cash_discount_amount=p.cash_discount_amount,
            cash_discount_voucher=p.cash_discount_voucher,
            difference_amount=p.difference_amount,
            difference_account=p.difference_account,
            debit_accounting_amount=p.debit_accounting,
            credit_accounting_amount=p.credit_accounting,
            cash_discount_accounting_amount=p.cash_discount_accounting,
            difference_accounting_amount=p.difference_accounting,
            realized_exchange_loss=p.realized_loss,
            exchange_voucher=p.exchange_voucher,
        )


class SettlementOut(BaseModel):
    settlement_id: str  # what POST /api/v1/settlements/{settlement_id}/reverse takes
    customer_account: str
    date: dt.date
    reversed_by: str | None = None
    reversal_of: str | None = None
    pairs: list[SettledPairOut]
    transactions: list[OpenTransactionOut] = []  # the transactions it moved, as they are after it

    @classmethod
    def of_rows(cls, group: str, rows: list[tables.SettlementRow]) -> SettlementOut:
        return cls(
            settlement_id=group,
            customer_account=rows[0].customer_account,
            date=rows[0].settlement_date,
            reversed_by=next((r.reversed_by for r in rows if r.reversed_by), None),
            reversal_of=rows[0].reversal_of,
            pairs=[SettledPairOut.of(r.to_domain()) for r in rows],
        )

    @classmethod
    def of_settled(cls, s: commands.Settled, reversal_of: str | None = None) -> SettlementOut:
        return cls(
            settlement_id=s.settlement_id,
            customer_account=s.customer_account,
            date=s.settlement_date,
            reversal_of=reversal_of,
            pairs=[SettledPairOut.of(p) for p in s.pairs],
            transactions=[OpenTransactionOut.of(t) for t in s.transactions],
        )


class SettlementsOut(BaseModel):
    customer_account: str
    settlements: list[SettlementOut]


class ReleasedOut(BaseModel):
    payment_id: str
    settled: list[dict[str, str]]  # what the released money settled at once: invoice voucher, cash, discount
    open_amount: TransactionAmount  # what stays open on the payment, now an automatic credit


# --- routes -----------------------------------------------------------------------------------


@router.get("/parameters", response_model_exclude_unset=True, dependencies=[require(Role.viewer)])
async def get_parameters(runtime: RuntimeDep, setup: SettlementSetupDep, include_defaults: bool = False) -> Parameters:
    async with runtime.unit_of_work() as uow:
        row = await commands.get_parameters(setup, uow.session)
    return Parameters.of(row, include_defaults)


@router.put("/parameters", response_model_exclude_unset=True, dependencies=[require(Role.admin)])
async def put_parameters(
    body: Parameters, runtime: RuntimeDep, setup: SettlementSetupDep, audit: AuditDep
) -> Parameters:
    """Change the parameters sent; the others keep their values. 422 for unknown fields, or values that
    contradict each other or the setup (a tolerance without an account to post it to)."""
    try:
        async with runtime.unit_of_work() as uow:
            before = Parameters.of(await commands.get_parameters(setup, uow.session), include_defaults=True)
            row = await commands.update_parameters(setup, uow.session, body.changes())
            after = Parameters.of(row, include_defaults=True)
            audit.record(
                uow.session,
                "settlement parameters changed",
                before=before.model_dump(mode="json"),
                after=after.model_dump(mode="json"),
            )
    except InvalidParameters as e:
        raise RequestValidationError(
            [{"loc": ("body", *e.field.split(".")), "msg": str(e), "type": "value_error"}]
        ) from None
    return Parameters.of(row, include_defaults=False)


@router.post(
    "/settlement-preview",
    responses={404: {"description": "unknown invoice"}, 422: {"description": "a mark that cannot be settled"}},
    dependencies=[require(Role.viewer, audited=False)],  # a POST that changes nothing
)
async def settlement_preview(body: PreviewIn, runtime: RuntimeDep, setup: SettlementSetupDep) -> PreviewOut:
    """The *Settle open transactions* page: what each mark would take if settled on `payment_date`, each on its
    own. A mark names an invoice, interest note or fee, a credit note (its own discount and amount to settle
    shown negative) or an open payment (by its voucher)."""
    with refusals_as_problems((Unknown, MarkRejected), {Unknown: 404}):
        async with runtime.unit_of_work() as uow:
            previews = await commands.preview_settlement(
                setup,
                uow.session,
                body.customer_account,
                body.payment_date,
                [m.to_domain() for m in body.marks],
                body.date_to_use_for_calculating_discounts,
            )
    return PreviewOut(
        customer_account=body.customer_account,
        payment_date=body.payment_date,
        marks=[
            PreviewMarkOut(
                invoice_id=p.invoice_id,
                cash_discount_date=p.cash_discount_date,
                cash_discount_amount=p.cash_discount_amount,
                use_cash_discount=p.use_cash_discount.value,
                cash_discount_taken=p.cash_discount_taken,
                cash_discount_amount_to_take=p.cash_discount_amount_to_take,
                amount_to_settle=p.amount_to_settle,
            )
            for p in previews
        ],
    )


@router.post(
    "/settlements",
    status_code=201,
    responses={
        404: {"description": "a marked transaction is unknown"},
        422: {"description": "marks that cannot be settled"},
    },
    dependencies=[require(Role.accountant)],
)
async def post_settlement(body: SettleIn, runtime: RuntimeDep, setup: SettlementSetupDep) -> SettlementOut:
    """Settle posted transactions of one customer against each other (D365 *Settle transactions*): open payments
    and credit notes against invoices, interest notes and fees, with the same mark fields and discount rules as a
    payment's marks. Emits the customer transactions, OpenItemsSettled and vouchers a payment's settlement does.
    All or nothing: a mark that cannot be settled settles nothing."""
    # Marks that cannot be settled, or a realized exchange difference without exchange_accounts: 422.
    with refusals_as_problems(SettlementError, {Unknown: 404}):
        async with runtime.unit_of_work() as uow:
            settled = await commands.settle_transactions(
                setup,
                uow,
                body.customer_account,
                [m.to_domain() for m in body.marks],
                body.date,
                body.date_to_use_for_calculating_discounts,
            )
    return SettlementOut.of_settled(settled)


@router.get("/settlements", dependencies=[require(Role.viewer)])
async def get_settlements(customer_account: Id, runtime: RuntimeDep) -> SettlementsOut:
    """A customer's settlements, oldest first: payments', credit notes', people's, and reversals."""
    async with runtime.sessions() as session:
        groups = await queries.settlements(session, customer_account)
    return SettlementsOut(
        customer_account=customer_account,
        settlements=[SettlementOut.of_rows(group, rows) for group, rows in groups.items()],
    )


@router.get(
    "/settlements/{settlement_id}",
    responses={404: {"description": "unknown settlement"}},
    dependencies=[require(Role.viewer)],
)
async def get_settlement(settlement_id: Voucher, runtime: RuntimeDep) -> SettlementOut:
    async with runtime.sessions() as session:
        rows = await tables.settlement_rows(session, settlement_id)
    if not rows:
        raise HTTPException(404, f"no settlement {settlement_id!r} is known")
    return SettlementOut.of_rows(settlement_id, rows)


@router.post(
    "/settlements/{settlement_id}/reverse",
    responses={
        404: {"description": "unknown settlement"},
        409: {"description": "already reversed, a reversal, or a write-off's settlement"},
    },
    dependencies=[require(Role.accountant)],
)
async def reverse_settlement(
    settlement_id: Voucher, runtime: RuntimeDep, setup: SettlementSetupDep, body: ReverseIn | None = None
) -> SettlementOut:
    """Undo a settlement (every pair settled together under this id, or one pair by its own id) by new,
    opposite postings: the balances and discounts taken come back, opposite cash discount transactions and
    vouchers are posted, nothing is deleted. Reversing twice answers 409."""
    with refusals_as_problems((Unknown, ReversalRefused), {Unknown: 404}, default=409):
        async with runtime.unit_of_work() as uow:
            reversed_ = await commands.reverse_settlement(setup, uow, settlement_id, body.date if body else None)
    return SettlementOut.of_settled(reversed_, reversal_of=settlement_id)


@router.get("/customers/{account}/open-transactions", dependencies=[require(Role.viewer)])
async def get_open_transactions(account: Id, runtime: RuntimeDep, include_settled: bool = False) -> OpenTransactionsOut:
    """The customer's transactions with a balance still open (all of them with `include_settled=true`)."""
    async with runtime.sessions() as session:
        transactions = await queries.open_transactions(session, account, include_settled)
    return OpenTransactionsOut(customer_account=account, transactions=[OpenTransactionOut.of(t) for t in transactions])


@router.get("/pending-marks", dependencies=[require(Role.viewer)])
async def get_pending(runtime: RuntimeDep, customer_account: str | None = None) -> PendingOut:
    """What waits for a transaction settlement has not seen yet: payment marks on unknown invoices (their
    money is reserved) and posted write-offs naming unknown transactions. State, not errors (docs/ordering.md)."""
    async with runtime.sessions() as session:
        marks = await queries.pending_marks(session, customer_account)
        write_offs = await queries.pending_write_offs(session, customer_account)
    return PendingOut(
        pending_marks=[PendingMarkOut(**vars(m)) for m in marks],
        pending_write_offs=[
            PendingWriteOffOut(
                write_off_voucher=w.write_off_voucher,
                voucher=w.voucher,
                journal_batch_number=w.journal_batch_number,
                customer_account=w.customer_account,
                amount=w.amount,
            )
            for w in write_offs
        ],
    )


@router.post(
    "/pending-marks/{payment_id}/release",
    responses={404: {"description": "unknown payment"}, 409: {"description": "the payment holds nothing"}},
    dependencies=[require(Role.accountant)],
)
async def release_pending_marks(
    payment_id: str, runtime: RuntimeDep, setup: SettlementSetupDep, audit: AuditDep
) -> ReleasedOut:
    """Give up waiting: drop the payment's pending marks and turn what is open of it into an ordinary
    automatic credit, applied now to the customer's open invoices and later to new ones."""
    with refusals_as_problems((Unknown, NothingToRelease), {Unknown: 404}, default=409):
        async with runtime.unit_of_work() as uow:
            result = await commands.release_payment(setup, uow, payment_id)
            audit.record(
                uow.session,
                "pending marks released",
                payment_id=payment_id,
                settled=[s.debit_voucher for s in result.settlements],
                open_amount=str(-result.unused_amount),
            )
    return ReleasedOut(
        payment_id=payment_id,
        open_amount=-result.unused_amount,
        settled=[
            {
                "debit_voucher": s.debit_voucher,
                "cash_applied": str(s.cash_applied),
                "cash_discount": str(s.cash_discount),
            }
            for s in result.settlements
        ],
    )
