"""The credit and collections management HTTP API: credit groups and limits, credit checks, collection
letters, interest notes, collection activities and disputes (docs/credit-and-collections.md).

Names of the credit endpoints and fields are fixed by the contract (docs/contract.md)."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import HTMLResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
)

from kredit_collections import credit_handlers as handlers
from kredit_collections.credit_domain import Activity, Conflict, CreditManagementError, NotFound
from kredit_collections.credit_tables import (
    CollectionLetterItemRow,
    CollectionLetterRow,
    DisputeRow,
    InterestNoteLineRow,
    InterestNoteRow,
)
from kredit_shared.auth import Role, require
from kredit_shared.contracts import Code, Id, IsoDate, Name, Text, Voucher
from kredit_shared.http import refusals_as_problems
from kredit_shared.money import (
    MAX_AMOUNT,
    Amount,
    Total,
    TransactionAmount,
    TransactionTotal,
    format_amount,
    parse_amount,
)
from kredit_shared.service import RuntimeDep, SessionDep, SetupDep

router = APIRouter(prefix="/api/v1", tags=["credit and collections"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    return value


# An amount that cannot be negative (limits, order amounts), so the schema says so too.
PlainAmount = Annotated[
    Decimal,
    BeforeValidator(parse_amount),
    AfterValidator(_not_negative),
    PlainSerializer(format_amount, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,15}(\.[0-9]{1,2})?$", "examples": ["1000.00"]},
                {"type": "integer", "minimum": 0, "maximum": int(MAX_AMOUNT)},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$"}, mode="serialization"),
]


def _refusals_as_http_errors() -> AbstractContextManager[None]:
    return refusals_as_problems(CreditManagementError, {NotFound: 404, Conflict: 409})


# --- credit groups and limits ---------------------------------------------------------------


class CreditGroupIn(_In):
    credit_limit: PlainAmount = Field(description="Shared by every customer of the group (accounting currency).")


class CreditGroupOut(BaseModel):
    credit_group: str
    credit_limit: Amount
    customers: list[str]
    balance: Total = Field(description="What the group's customers owe together now.")


@router.put("/credit-groups/{group}", dependencies=[require(Role.admin)])
async def put_credit_group(group: Id, body: CreditGroupIn, runtime: RuntimeDep, setup: SetupDep) -> CreditGroupOut:
    """Create or change a customer credit group and its shared credit limit."""
    async with runtime.unit_of_work() as uow:
        await handlers.set_credit_group(uow, group, body.credit_limit)
    async with runtime.sessions() as session:
        limit, members, balance = await handlers.credit_group(session, setup, group)
    return CreditGroupOut(credit_group=group, credit_limit=limit, customers=members, balance=balance)


@router.get(
    "/credit-groups/{group}",
    responses={404: {"description": "No such credit group"}},
    dependencies=[require(Role.viewer)],
)
async def get_credit_group(group: Id, session: SessionDep, setup: SetupDep) -> CreditGroupOut:
    with _refusals_as_http_errors():
        limit, members, balance = await handlers.credit_group(session, setup, group)
    return CreditGroupOut(credit_group=group, credit_limit=limit, customers=members, balance=balance)


class CustomerCreditIn(_In):
    """Any subset: a field left out keeps its value, null clears the limit or the group."""

    credit_limit: PlainAmount | None = Field(default=None, description="Individual limit; null = not set.")
    credit_group: Id | None = Field(default=None, description="A group created with PUT /api/v1/credit-groups/{group}.")
    mandatory_credit_limit: StrictBool = Field(
        default=False, description="The individual limit counts as it is, even 0.00."
    )
    unlimited_credit_limit: StrictBool = Field(default=False, description="No credit check at all.")


class CustomerCreditOut(BaseModel):
    customer_account: str
    credit_limit: Amount | None
    credit_group: str | None
    mandatory_credit_limit: bool
    unlimited_credit_limit: bool
    group_credit_limit: Amount | None = Field(description="The group's shared limit, if the customer is in one.")
    effective_credit_limit: Total | None = Field(description="The limit orders are checked against; null = unlimited.")
    balance: Total = Field(description="What the customer owes now (accounting currency).")
    available_credit: Total | None = Field(description="Effective limit − balance; null = unlimited.")

    @classmethod
    def of(cls, status: handlers.CreditStatus) -> CustomerCreditOut:
        c = status.credit
        return cls(
            customer_account=c.customer_account,
            credit_limit=c.credit_limit,
            credit_group=c.credit_group,
            mandatory_credit_limit=c.mandatory_credit_limit,
            unlimited_credit_limit=c.unlimited_credit_limit,
            group_credit_limit=status.group_limit,
            effective_credit_limit=status.effective_credit_limit,
            balance=status.balance,
            available_credit=status.available_credit,
        )


@router.put(
    "/customers/{account}/credit",
    responses={422: {"description": "Unknown credit group, negative limit"}},
    dependencies=[require(Role.admin)],
)
async def put_customer_credit(
    account: Id, body: CustomerCreditIn, runtime: RuntimeDep, setup: SetupDep
) -> CustomerCreditOut:
    """Set the customer's credit limit, credit group, mandatory and unlimited options (D365's Credit
    management fields); the customer need not have transactions yet."""
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            await handlers.set_customer_credit(uow, account, body.model_dump(exclude_unset=True))
    async with runtime.sessions() as session:
        return CustomerCreditOut.of(await handlers.customer_credit_status(session, setup, account))


@router.get("/customers/{account}/credit", dependencies=[require(Role.viewer)])
async def get_customer_credit(account: Id, session: SessionDep, setup: SetupDep) -> CustomerCreditOut:
    """The customer's credit settings with the effective limit (D365's rules), balance and available credit."""
    return CustomerCreditOut.of(await handlers.customer_credit_status(session, setup, account))


class CreditCheckIn(_In):
    customer_account: Id
    amount: PlainAmount = Field(description="The order's amount (accounting currency).")
    open_orders_amount: PlainAmount = Field(
        default=Decimal("0.00"), description="Confirmed orders not invoiced yet, as the ERP knows them."
    )


class CreditCheckOut(BaseModel):
    customer_account: str
    amount: Amount
    blocked: bool
    effective_credit_limit: Total | None
    balance: Total
    available_credit: Total | None
    reason: str


@router.post("/credit-checks", dependencies=[require(Role.collector, audited=False)])
async def post_credit_check(body: CreditCheckIn, session: SessionDep, setup: SetupDep) -> CreditCheckOut:
    """What the upstream ERP asks before confirming an order: balance + open orders + the order against
    the effective credit limit (and the group's shared limit). At the limit passes; a cent over is blocked."""
    decision = await handlers.credit_check(session, setup, body.customer_account, body.amount, body.open_orders_amount)
    return CreditCheckOut(
        customer_account=body.customer_account,
        amount=body.amount,
        blocked=decision.blocked,
        effective_credit_limit=decision.effective_credit_limit,
        balance=decision.balance,
        available_credit=decision.available_credit,
        reason=decision.reason,
    )


# --- collection letters ---------------------------------------------------------------------


class RunIn(_In):
    as_of: IsoDate | None = Field(default=None, description="Default today.")


class LetterItemOut(BaseModel):
    voucher: str
    invoice_id: str | None
    due_date: dt.date
    days_overdue: int
    balance: TransactionAmount

    @classmethod
    def of(cls, row: CollectionLetterItemRow) -> LetterItemOut:
        return cls(**row.model_dump(include=set(cls.model_fields)))


class LetterOut(BaseModel):
    letter_id: str
    customer_account: str
    customer_name: str | None
    letter_date: dt.date
    level: int = Field(description="1 = the first letter of the sequence.")
    code: str
    currency: str
    total: TransactionTotal = Field(description="The listed invoices' open balances.")
    fee: Amount
    fee_invoice_id: str | None = Field(description="The CollectionLetterFee transaction's invoice id, if a fee.")
    document_url: str
    invoices: list[LetterItemOut]

    @classmethod
    def of(cls, row: CollectionLetterRow, items: list[CollectionLetterItemRow]) -> LetterOut:
        return cls(
            **row.model_dump(exclude={"level", "document", "created_at"}),
            level=row.level + 1,
            document_url=f"/api/v1/collection-letters/{row.letter_id}/document",
            invoices=[LetterItemOut.of(i) for i in items],
        )


class LettersOut(BaseModel):
    customer_account: str | None = None
    as_of: dt.date | None = None
    letters: list[LetterOut]


@router.post(
    "/collection-letter-runs",
    responses={422: {"description": "No collection letter sequence set up"}},
    dependencies=[require(Role.collector)],
)
async def run_collection_letters(
    runtime: RuntimeDep, setup: SetupDep, body: Annotated[RunIn | None, Body()] = None
) -> LettersOut:
    """Create the collection letters due as of a date: per customer and level, listing the overdue invoices
    that reached the level and have not had it; a fee is posted as a CollectionLetterFee. Idempotent:
    running again for the same date creates nothing new."""
    as_of = (body.as_of if body else None) or dt.date.today()
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            ids = await handlers.run_collection_letters(uow, setup, as_of)
    async with runtime.sessions() as session:
        return LettersOut(as_of=as_of, letters=[LetterOut.of(*await handlers.letter(session, i)) for i in ids])


@router.get("/customers/{account}/collection-letters", dependencies=[require(Role.viewer)])
async def get_customer_letters(account: Id, session: SessionDep) -> LettersOut:
    """The customer's collection letters, oldest first."""
    rows = await handlers.letters(session, account)
    return LettersOut(customer_account=account, letters=[LetterOut.of(r, items) for r, items in rows])


@router.get(
    "/collection-letters/{letter_id}",
    responses={404: {"description": "No such letter"}},
    dependencies=[require(Role.viewer)],
)
async def get_letter(letter_id: Voucher, session: SessionDep) -> LetterOut:
    with _refusals_as_http_errors():
        return LetterOut.of(*await handlers.letter(session, letter_id))


@router.get(
    "/collection-letters/{letter_id}/document",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}, 404: {"description": "No such letter"}},
    dependencies=[require(Role.viewer)],
)
async def get_letter_document(letter_id: Voucher, session: SessionDep) -> HTMLResponse:
    """The letter as sent (HTML, printable)."""
    with _refusals_as_http_errors():
        row, _ = await handlers.letter(session, letter_id)
    return HTMLResponse(row.document)


# --- interest notes -------------------------------------------------------------------------


class InterestRunIn(RunIn):
    interest_code: Code | None = Field(default=None, description="Default: the setup's default code.")
    customer_account: Id | None = Field(default=None, description="Only this customer; default all.")


class InterestLineOut(BaseModel):
    voucher: str
    invoice_id: str | None
    due_date: dt.date
    from_date: dt.date
    to_date: dt.date
    days: int
    balance: TransactionAmount
    interest: TransactionAmount

    @classmethod
    def of(cls, row: InterestNoteLineRow) -> InterestLineOut:
        return cls(**row.model_dump(include=set(cls.model_fields)))


class InterestNoteOut(BaseModel):
    note_id: str = Field(description="Also the invoice id of the InterestNote customer transaction.")
    customer_account: str
    customer_name: str | None
    note_date: dt.date
    interest_code: str
    currency: str
    total: TransactionAmount
    lines: list[InterestLineOut]

    @classmethod
    def of(cls, row: InterestNoteRow, lines: list[InterestNoteLineRow]) -> InterestNoteOut:
        return cls(**row.model_dump(exclude={"created_at"}), lines=[InterestLineOut.of(line) for line in lines])


class InterestNotesOut(BaseModel):
    customer_account: str | None = None
    as_of: dt.date | None = None
    interest_notes: list[InterestNoteOut]


@router.post(
    "/interest-note-runs",
    responses={422: {"description": "No interest set up, or an unknown code"}},
    dependencies=[require(Role.collector)],
)
async def run_interest_notes(
    runtime: RuntimeDep, setup: SetupDep, body: Annotated[InterestRunIn | None, Body()] = None
) -> InterestNotesOut:
    """Create the interest notes due as of a date: per customer, interest on each overdue invoice's open
    balance since its due date (or the last note), posted as an InterestNote. Idempotent per date."""
    body = body or InterestRunIn()
    as_of = body.as_of or dt.date.today()
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            ids = await handlers.run_interest_notes(uow, setup, as_of, body.interest_code, body.customer_account)
    async with runtime.sessions() as session:
        notes = [InterestNoteOut.of(*await handlers.interest_note(session, i)) for i in ids]
    return InterestNotesOut(as_of=as_of, interest_notes=notes)


@router.get("/customers/{account}/interest-notes", dependencies=[require(Role.viewer)])
async def get_customer_interest_notes(account: Id, session: SessionDep) -> InterestNotesOut:
    rows = await handlers.interest_notes(session, account)
    return InterestNotesOut(customer_account=account, interest_notes=[InterestNoteOut.of(r, ls) for r, ls in rows])


@router.get(
    "/interest-notes/{note_id}",
    responses={404: {"description": "No such interest note"}},
    dependencies=[require(Role.viewer)],
)
async def get_interest_note(note_id: Voucher, session: SessionDep) -> InterestNoteOut:
    with _refusals_as_http_errors():
        return InterestNoteOut.of(*await handlers.interest_note(session, note_id))


class InterestCodeOut(BaseModel):
    interest_code: str
    description: str
    percent: str
    per: str
    minimum_amount: Amount
    grace_days: int
    default: bool


@router.get("/interest-codes", dependencies=[require(Role.viewer)])
async def get_interest_codes(setup: SetupDep) -> list[InterestCodeOut]:
    """The setup's interest codes (day count: docs/credit-and-collections.md)."""
    if setup.interest is None:
        return []
    return [
        InterestCodeOut(
            interest_code=name,
            description=c.description,
            percent=format(c.percent, "f"),
            per=c.per,
            minimum_amount=c.minimum_amount,
            grace_days=c.grace_days,
            default=name == setup.interest.default_code,
        )
        for name, c in setup.interest.codes.items()
    ]


# --- collection activities ------------------------------------------------------------------


class ActivityIn(_In):
    customer_account: Id
    activity_type: Literal["Note", "Call", "PromiseToPay"]
    description: Text = Field(default="", max_length=1000)
    follow_up_date: IsoDate | None = Field(default=None, description="A promise's default: its promised_date.")
    owner: Name | None = Field(default=None, max_length=100, description="The collector following it up.")
    promised_amount: PlainAmount | None = Field(default=None, description="PromiseToPay only.")
    promised_date: IsoDate | None = Field(default=None, description="PromiseToPay only.")


class ActivityOut(BaseModel):
    activity_id: str
    customer_account: str
    activity_type: str
    description: str
    created_on: dt.date
    follow_up_date: dt.date | None
    owner: str | None
    promised_amount: Amount | None
    promised_date: dt.date | None
    closed: bool
    promise_status: str | None = Field(description="kept, broken or open for a PromiseToPay; null otherwise.")

    @classmethod
    def of(cls, activity: Activity, status: str | None) -> ActivityOut:
        return cls(**activity.__dict__, promise_status=status)


class ActivitiesOut(BaseModel):
    activities: list[ActivityOut]


@router.post(
    "/activities",
    status_code=201,
    responses={422: {"description": "A promise without amount or date"}},
    dependencies=[require(Role.collector)],
)
async def post_activity(body: ActivityIn, runtime: RuntimeDep) -> ActivityOut:
    """Record a note, a call or a promise to pay for a customer, with a follow-up date and an owner."""
    today = dt.date.today()
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            activity = await handlers.add_activity(
                uow, body.customer_account, today, **body.model_dump(exclude={"customer_account"})
            )
    return ActivityOut.of(activity, "open" if activity.activity_type == "PromiseToPay" else None)


@router.get("/activities", dependencies=[require(Role.viewer)])
async def get_activities(
    session: SessionDep,
    due_before: Annotated[IsoDate | None, Query(description="Follow-up date before this date (the worklist).")] = None,
    customer_account: Id | None = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    include_closed: bool = False,
    as_of: Annotated[IsoDate | None, Query(description="Judge promises as of this date; default today.")] = None,
) -> ActivitiesOut:
    """The collector's worklist: open activities by follow-up date, with broken promises to pay marked."""
    rows = await handlers.activities(
        session,
        as_of or dt.date.today(),
        customer_account=customer_account,
        due_before=due_before,
        owner=owner,
        include_closed=include_closed,
    )
    return ActivitiesOut(activities=[ActivityOut.of(a, status) for a, status in rows])


@router.post(
    "/activities/{activity_id}/close",
    responses={404: {"description": "No such activity"}},
    dependencies=[require(Role.collector)],
)
async def close_activity(activity_id: Id, runtime: RuntimeDep) -> ActivityOut:
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            activity = await handlers.close_activity(uow, activity_id)
    return ActivityOut.of(activity, None)


# --- disputes -------------------------------------------------------------------------------


class DisputeIn(_In):
    customer_account: Id
    invoice_id: Id | None = None
    voucher: Voucher | None = None
    reason: Text = Field(min_length=1, max_length=1000)


class DisputeResolveIn(_In):
    resolution: Text | None = Field(default=None, max_length=1000)


class DisputeOut(BaseModel):
    dispute_id: str
    customer_account: str
    voucher: str
    invoice_id: str | None
    reason: str
    status: str = Field(description="open or resolved")
    opened_on: dt.date
    resolved_on: dt.date | None
    resolution: str | None

    @classmethod
    def of(cls, row: DisputeRow) -> DisputeOut:
        return cls(**row.model_dump(exclude={"created_at"}))


class DisputesOut(BaseModel):
    disputes: list[DisputeOut]


@router.post(
    "/disputes",
    status_code=201,
    responses={
        404: {"description": "No such invoice of the customer"},
        409: {"description": "Already disputed"},
        422: {"description": "Settled, or neither/both of invoice_id and voucher"},
    },
    dependencies=[require(Role.collector)],
)
async def post_dispute(body: DisputeIn, runtime: RuntimeDep) -> DisputeOut:
    """Mark an open invoice disputed: it is left out of collection letters and interest notes and shown
    as disputed in the aging until the dispute is resolved."""
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            row = await handlers.open_dispute(
                uow,
                body.customer_account,
                body.reason,
                dt.date.today(),
                invoice_id=body.invoice_id,
                voucher=body.voucher,
            )
    return DisputeOut.of(row)


@router.get("/disputes", dependencies=[require(Role.viewer)])
async def get_disputes(
    session: SessionDep, customer_account: Id | None = None, status: Literal["open", "resolved"] | None = None
) -> DisputesOut:
    return DisputesOut(
        disputes=[DisputeOut.of(r) for r in await handlers.store.disputes(session, customer_account, status)]
    )


@router.post(
    "/disputes/{dispute_id}/resolve",
    responses={404: {"description": "No such dispute"}},
    dependencies=[require(Role.collector)],
)
async def resolve_dispute(
    dispute_id: Id, runtime: RuntimeDep, body: Annotated[DisputeResolveIn | None, Body()] = None
) -> DisputeOut:
    """Close the dispute: the invoice takes part in letters and interest again (resolving twice changes nothing)."""
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            row = await handlers.resolve_dispute(uow, dispute_id, body.resolution if body else None, dt.date.today())
    return DisputeOut.of(row)
