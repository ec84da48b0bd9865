"""Settlement's HTTP API: parameters, the settlement preview and a customer's open transactions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from kredit_settlement import handlers
from kredit_settlement.domain import Mark, MarkRejected, OpenTransaction
from kredit_settlement.handlers import Postings
from kredit_shared.audit import AuditDep
from kredit_shared.auth import Role, require
from kredit_shared.contracts import MAX_LIST_LENGTH, Code, Id, IsoDate
from kredit_shared.money import Amount
from kredit_shared.service import RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["settlement"])


def _postings(request: Request) -> Postings:
    return request.app.state.postings


PostingsDep = Annotated[Postings, Depends(_postings)]


# --- schemas ----------------------------------------------------------------------------------


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameters(_Input):
    calculate_cash_discounts_for_partial_payments: StrictBool


class PreviewMarkIn(_Input):
    invoice_id: Id
    amount_to_settle: Amount | None = None  # omitted: the whole open balance
    use_cash_discount: Code = "Normal"


class PreviewIn(_Input):
    customer_account: Id
    payment_date: IsoDate
    marks: list[PreviewMarkIn] = Field(min_length=1, max_length=MAX_LIST_LENGTH)


class PreviewMarkOut(BaseModel):
    invoice_id: str
    cash_discount_date: dt.date | None
    cash_discount_amount: Amount
    use_cash_discount: str
    cash_discount_taken: Amount
    cash_discount_amount_to_take: Amount
    amount_to_settle: Amount


class PreviewOut(BaseModel):
    customer_account: str
    payment_date: dt.date
    marks: list[PreviewMarkOut]


class DiscountTierOut(BaseModel):
    date: dt.date
    percent: Decimal
    amount: Amount | None


class OpenTransactionOut(BaseModel):
    voucher: str
    type: str
    date: dt.date
    invoice_id: str | None
    original_amount: Amount
    open_amount: Amount  # signed: debit +, credit −
    currency: str
    due_date: dt.date | None
    cash_discounts: list[DiscountTierOut]
    cash_discount_taken: Amount
    cash_discount_account: str | None

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
        )


class OpenTransactionsOut(BaseModel):
    customer_account: str
    transactions: list[OpenTransactionOut]


class PendingMarkOut(BaseModel):
    payment_id: str
    customer_account: str
    payment_date: dt.date
    invoice_id: str
    amount_to_settle: Amount | None
    use_cash_discount: str
    reserved: Amount  # what of the payment's open credit this mark holds until its invoice arrives


class PendingWriteOffOut(BaseModel):
    write_off_voucher: str
    journal_batch_number: str
    customer_account: str
    voucher: str  # the transaction it names, not known to settlement yet
    amount: Amount


class PendingOut(BaseModel):
    pending_marks: list[PendingMarkOut]
    pending_write_offs: list[PendingWriteOffOut]


class ReleasedOut(BaseModel):
    payment_id: str
    settled: list[dict[str, str]]  # what the released money settled at once: invoice voucher, cash, discount
    open_amount: Amount  # what stays open on the payment, now an automatic credit


# --- routes -----------------------------------------------------------------------------------


def _parameters(row: handlers.ParametersRow) -> Parameters:
    return Parameters(calculate_cash_discounts_for_partial_payments=row.calculate_cash_discounts_for_partial_payments)


@router.get("/parameters", dependencies=[require(Role.viewer)])
async def get_parameters(runtime: RuntimeDep, postings: PostingsDep) -> Parameters:
    async with runtime.transaction() as tx:
        return _parameters(await handlers.get_parameters(postings, tx.session))


@router.put("/parameters", dependencies=[require(Role.admin)])
async def put_parameters(body: Parameters, runtime: RuntimeDep, postings: PostingsDep, audit: AuditDep) -> Parameters:
    async with runtime.transaction() as tx:
        before = _parameters(await handlers.get_parameters(postings, tx.session))
        after = _parameters(await handlers.update_parameters(postings, tx.session, **body.model_dump()))
        audit.record(
            tx.session,
            "settlement parameters changed",
            before=before.model_dump(mode="json"),
            after=after.model_dump(mode="json"),
        )
    return after


@router.post(
    "/settlement-preview",
    responses={404: {"description": "unknown invoice"}, 422: {"description": "a mark that cannot be settled"}},
    dependencies=[require(Role.viewer, audited=False)],  # a POST that changes nothing
)
async def settlement_preview(body: PreviewIn, runtime: RuntimeDep, postings: PostingsDep) -> PreviewOut:
    marks = [Mark(m.invoice_id, m.amount_to_settle, m.use_cash_discount) for m in body.marks]
    try:
        async with runtime.transaction() as tx:
            previews = await handlers.preview_settlement(
                postings, tx.session, body.customer_account, body.payment_date, marks
            )
    except handlers.UnknownInvoice as e:
        raise HTTPException(404, str(e)) from None
    except MarkRejected as e:
        raise HTTPException(422, str(e)) from None
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


@router.get("/customers/{account}/open-transactions", dependencies=[require(Role.viewer)])
async def get_open_transactions(account: Id, runtime: RuntimeDep, include_settled: bool = False) -> OpenTransactionsOut:
    """The customer's transactions with a balance still open (all of them with `include_settled=true`)."""
    async with runtime.sessions() as session:
        transactions = await handlers.open_transactions(session, account, include_settled)
    return OpenTransactionsOut(customer_account=account, transactions=[OpenTransactionOut.of(t) for t in transactions])


@router.get("/pending-marks", dependencies=[require(Role.viewer)])
async def get_pending(runtime: RuntimeDep, customer_account: str | None = None) -> PendingOut:
    """What waits for a transaction settlement has not seen yet: payment marks on unknown invoices (their
    money is reserved) and posted write-offs naming unknown transactions. State, not errors (docs/ordering.md)."""
    async with runtime.sessions() as session:
        marks = await handlers.pending_marks(session, customer_account)
        write_offs = await handlers.pending_write_offs(session, customer_account)
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
    payment_id: str, runtime: RuntimeDep, postings: PostingsDep, audit: AuditDep
) -> ReleasedOut:
    """Give up waiting: drop the payment's pending marks and turn what is open of it into an ordinary
    automatic credit, applied now to the customer's open invoices and later to new ones."""
    try:
        async with runtime.transaction() as tx:
            result = await handlers.release_payment(postings, tx, payment_id)
            audit.record(
                tx.session,
                "pending marks released",
                payment_id=payment_id,
                settled=[s.debit_voucher for s in result.settlements],
                open_amount=str(-result.unused_amount),
            )
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except handlers.NothingToRelease as e:
        raise HTTPException(409, str(e)) from None
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
