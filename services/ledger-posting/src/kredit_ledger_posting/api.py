"""Ledger-posting HTTP API: journals (list, detail, post), ledger entries, trial balance, accounts."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select

from kredit_ledger_posting import domain, handlers
from kredit_ledger_posting.tables import JournalRow, LedgerEntryRow
from kredit_shared.audit import AuditDep
from kredit_shared.auth import PrincipalDep, Role, require
from kredit_shared.contracts import Id, IsoDate, PostedJournalLine, Voucher
from kredit_shared.http import refusals_as_problems
from kredit_shared.money import Amount, Total, TransactionAmount
from kredit_shared.service import RuntimeDep, SessionDep, SetupDep

router = APIRouter(prefix="/api/v1", tags=["ledger"])


def _is_none(value: object) -> bool:
    return value is None


# Foreign-currency fields are left out in the accounting currency: those responses stay as they were.
def _foreign(description: str) -> Any:
    return Field(default=None, exclude_if=_is_none, description=description)


class JournalLineOut(PostedJournalLine):
    """A journal line: `debit`/`credit` in its `currency`; in a foreign currency also in the accounting
    currency at its `exchange_rate`."""

    line_number: int
    accounting_debit: Total | None = _foreign("the debit in the accounting currency; only in a foreign currency")
    accounting_credit: Total | None = _foreign("the credit in the accounting currency; only in a foreign currency")


class JournalSummary(BaseModel):
    batch_number: str
    journal_name: str
    description: str
    status: domain.JournalStatus = Field(
        description="open (awaiting review), posted, or voided (cancelled by its requester: kept, never postable)"
    )
    request_id: str | None
    requested_by: str | None = Field(default=None, description="the token subject that requested the journal")
    posted_by: str | None = Field(default=None, description="the token subject that posted it")
    created_at: datetime
    posted_at: datetime | None
    posting_date: date | None
    total_debit: Total = Field(description="in the accounting currency")
    total_credit: Total = Field(description="in the accounting currency")

    @classmethod
    def of(cls, row: JournalRow, accounting_currency: str) -> JournalSummary:
        lines = [
            _in_accounting_currency(PostedJournalLine.model_validate(line), accounting_currency) for line in row.lines
        ]
        return cls(
            batch_number=row.batch_number,
            journal_name=row.journal_name,
            description=row.description,
            status=row.status,
            request_id=row.request_id,
            requested_by=row.requested_by,
            posted_by=row.posted_by,
            created_at=row.created_at,
            posted_at=row.posted_at,
            posting_date=row.posting_date,
            total_debit=sum((debit for debit, _ in lines), Decimal(0)),
            total_credit=sum((credit for _, credit in lines), Decimal(0)),
        )


def _in_accounting_currency(line: PostedJournalLine, accounting_currency: str) -> tuple[Decimal, Decimal]:
    converted = domain.journal_line_accounting(line, accounting_currency)
    return (line.debit, line.credit) if converted is None else converted


class JournalDetail(JournalSummary):
    lines: list[JournalLineOut]

    @classmethod
    def of(cls, row: JournalRow, accounting_currency: str) -> JournalDetail:
        lines = []
        for n, raw in enumerate(row.lines, 1):
            line = JournalLineOut(**raw, line_number=n)
            if (converted := domain.journal_line_accounting(line, accounting_currency)) is not None:
                line = line.model_copy(update={"accounting_debit": converted[0], "accounting_credit": converted[1]})
            lines.append(line)
        return cls(**JournalSummary.of(row, accounting_currency).model_dump(), lines=lines)


class JournalList(BaseModel):
    journals: list[JournalSummary]


class LedgerEntryOut(BaseModel):
    voucher: str
    account: str
    debit: Amount
    credit: Amount
    currency: str
    posting_date: date
    text: str
    source: str
    customer_account: str | None
    transaction_currency: str | None = _foreign("the currency the entry books, when not the accounting currency")
    transaction_currency_amount: TransactionAmount | None = _foreign(
        "the amount in that currency, signed (debit positive); `debit`/`credit` are in the accounting currency"
    )


class LedgerEntryList(BaseModel):
    entries: list[LedgerEntryOut]


class TrialBalanceRowOut(BaseModel):
    account: str
    name: str
    debit: Total
    credit: Total
    balance: Total


class TrialBalanceOut(BaseModel):
    as_of: date
    currency: str
    accounts: list[TrialBalanceRowOut]
    total_debit: Total
    total_credit: Total


class AccountOut(BaseModel):
    account: str
    name: str
    type: str


@router.get("/journals", response_model=JournalList, dependencies=[require(Role.viewer, expensive=True)])
async def list_journals(
    session: SessionDep,
    setup: SetupDep,
    journal_name: Id | None = None,
    status: domain.JournalStatus | None = None,
) -> JournalList:
    query = select(JournalRow).order_by(col(JournalRow.created_at), col(JournalRow.batch_number))
    if journal_name is not None:
        query = query.where(col(JournalRow.journal_name) == journal_name)
    if status is not None:
        query = query.where(col(JournalRow.status) == status)
    rows = (await session.exec(query)).all()
    return JournalList(journals=[JournalSummary.of(row, setup.accounting_currency) for row in rows])


@router.get(
    "/journals/{batch_number}",
    response_model=JournalDetail,
    responses={404: {"description": "unknown batch"}},
    dependencies=[require(Role.viewer)],
)
async def get_journal(batch_number: Voucher, session: SessionDep, setup: SetupDep) -> JournalDetail:
    row = await session.get(JournalRow, batch_number)
    if row is None:
        raise HTTPException(404, f"no journal with batch number {batch_number!r}")
    return JournalDetail.of(row, setup.accounting_currency)


@router.post(
    "/journals/{batch_number}/post",
    response_model=JournalDetail,
    responses={
        404: {"description": "unknown batch"},
        409: {"description": "already posted, voided (its request was cancelled) or unbalanced"},
        403: {"description": "the caller requested this write-off, and four-eyes (the setup) is on"},
    },
    dependencies=[require(Role.accountant)],
)
async def post_journal(
    batch_number: Voucher, runtime: RuntimeDep, setup: SetupDep, principal: PrincipalDep, audit: AuditDep
) -> JournalDetail:
    """Post the journal to the ledger. With the setup's `four_eyes_write_off`, whoever requested the
    write-off may not post it (403): another accountant does."""
    refused: dict[type[Exception], int] = {domain.FourEyesViolation: 403, domain.JournalNotPostable: 409}
    with refusals_as_problems(tuple(refused), refused):
        async with runtime.unit_of_work() as uow:
            row = await handlers.post_general_journal(uow, batch_number, setup, posted_by=principal.subject)
            if row is None:
                raise HTTPException(404, f"no journal with batch number {batch_number!r}")
            audit.record(
                uow.session,
                "journal posted",
                batch_number=batch_number,
                journal_name=row.journal_name,
                requested_by=row.requested_by,
            )
    return JournalDetail.of(row, setup.accounting_currency)


@router.get(
    "/ledger-entries",
    response_model=LedgerEntryList,
    responses={422: {"description": "neither an account nor a voucher given, or an invalid one"}},
    dependencies=[require(Role.viewer, expensive=True)],
)
async def ledger_entries(
    session: SessionDep, account: Id | None = None, voucher: Voucher | None = None
) -> LedgerEntryList:
    if account is None and voucher is None:
        raise HTTPException(422, "give an account or a voucher")
    query = select(LedgerEntryRow).order_by(col(LedgerEntryRow.id))
    if account is not None:
        query = query.where(col(LedgerEntryRow.account) == account)
    if voucher is not None:
        query = query.where(col(LedgerEntryRow.voucher) == voucher)
    rows = (await session.exec(query)).all()
    return LedgerEntryList(entries=[LedgerEntryOut.model_validate(row, from_attributes=True) for row in rows])


@router.get("/trial-balance", response_model=TrialBalanceOut, dependencies=[require(Role.viewer, expensive=True)])
async def get_trial_balance(
    session: SessionDep,
    setup: SetupDep,
    as_of: Annotated[IsoDate | None, Query(description="YYYY-MM-DD; default: today")] = None,
) -> TrialBalanceOut:
    balance = await handlers.trial_balance(session, setup, as_of or date.today())
    return TrialBalanceOut(
        as_of=balance.as_of,
        currency=setup.accounting_currency,
        accounts=[TrialBalanceRowOut.model_validate(row, from_attributes=True) for row in balance.accounts],
        total_debit=balance.total_debit,
        total_credit=balance.total_credit,
    )


@router.get("/accounts", response_model=list[AccountOut], dependencies=[require(Role.viewer)])
async def chart_of_accounts(setup: SetupDep) -> list[AccountOut]:
    return [AccountOut(account=number, name=a.name, type=a.type) for number, a in sorted(setup.main_accounts.items())]
