"""The collections HTTP API (the collections UI's backend): routes parse, call one handler, answer."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response

from kredit_collections import credit_handlers, handlers
from kredit_collections.domain import UnknownCustomer, WriteOffConflict, WriteOffError, WriteOffStatus
from kredit_collections.schemas import (
    AgedBalanceOut,
    AgedBalancesOut,
    CustomerTransactionOut,
    CustomerTransactionsOut,
    OpenInvoiceOut,
    OpenInvoicesOut,
    ReasonCodeOut,
    ReasonCodesOut,
    WriteOffAccepted,
    WriteOffCancelIn,
    WriteOffIn,
    WriteOffOut,
    WriteOffParametersIO,
)
from kredit_shared.audit import AuditDep
from kredit_shared.auth import PrincipalDep, Role, require
from kredit_shared.contracts import Id, IsoDate
from kredit_shared.http import refusals_as_problems
from kredit_shared.service import RuntimeDep, SessionDep, SetupDep

router = APIRouter(prefix="/api/v1", tags=["collections"])

# Aged balances come in pages of customers, so an answer costs the same however many customers there are.
DEFAULT_PAGE, MAX_PAGE = 100, 1000


@router.get(
    "/customers/{account}/transactions",
    responses={404: {"description": "No transactions of this customer"}},
    dependencies=[require(Role.viewer)],
    response_model_exclude_unset=True,  # the accounting-currency fields of a foreign transaction only
)
async def get_customer_transactions(account: Id, session: SessionDep) -> CustomerTransactionsOut:
    """The customer's transactions, oldest first. `debit` and `credit` show the original amount in its
    column and null in the other; `balance` is what is still open (0.00 once settled), all in the
    transaction's `currency`. A transaction in a foreign currency also has `exchange_rate`,
    `accounting_currency_amount` and `accounting_currency_balance` (docs/currencies.md)."""
    with _refusals_as_http_errors():
        rows = await handlers.customer_transactions(session, account)
    disputed = await credit_handlers.store.disputed_vouchers(session, account)
    return CustomerTransactionsOut(
        customer_account=account, transactions=[CustomerTransactionOut.of(r, disputed) for r in rows]
    )


@router.get("/aged-balances", dependencies=[require(Role.viewer, expensive=True)])
async def get_aged_balances(
    session: SessionDep,
    setup: SetupDep,
    as_of: Annotated[IsoDate | None, Query(description="YYYY-MM-DD; default today")] = None,
    customer_account: Annotated[Id | None, Query(description="Only this customer (no paging)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Customers per page")] = DEFAULT_PAGE,
    cursor: Annotated[Id | None, Query(description="`next_cursor` of the previous page")] = None,
) -> AgedBalancesOut:
    """Open balances per customer (and currency) as of a date, aged by due date into the setup's buckets,
    in customer account order, one page at a time: `next_cursor` (null on the last page) is passed back
    as `cursor` for the next. A page holds up to `limit` customers (a customer with balances in two
    currencies has two rows); customers with nothing open are left out. Transactions in a foreign currency
    count in the accounting currency, at their accounting-currency balances (docs/currencies.md)."""
    as_of = as_of or dt.date.today()
    if customer_account is not None:
        rows, next_cursor = await handlers.customer_aged_balances(session, setup, customer_account, as_of), None
    else:
        rows, next_cursor = await handlers.aged_balances_page(session, setup, as_of, limit, after=cursor)
    over, disputed = await credit_handlers.aging_flags(session, setup, rows, as_of)
    return AgedBalancesOut(
        as_of=as_of,
        buckets=[b.label for b in setup.aging_buckets],
        customers=[AgedBalanceOut.of(r, over, disputed) for r in rows],
        next_cursor=next_cursor,
    )


@router.get("/open-invoices", dependencies=[require(Role.viewer, expensive=True)])
async def get_open_invoices(session: SessionDep, customer_account: Id | None = None) -> OpenInvoicesOut:
    """Invoices and credit notes with a remaining balance, by due date; all customers unless filtered."""
    rows = await handlers.open_customer_invoices(session, customer_account)
    disputed = await credit_handlers.store.disputed_vouchers(session, customer_account)
    return OpenInvoicesOut(invoices=[OpenInvoiceOut.of(r, disputed) for r in rows])


@router.post(
    "/write-offs",
    status_code=202,
    responses={
        404: {"description": "Unknown customer"},
        409: {"description": "A selected transaction is already in a write-off that is not posted and settled"},
        422: {
            "description": "Nothing open, a selection that is not this customer's open items, an unknown reason "
            "code, or mixed currencies"
        },
    },
    dependencies=[require(Role.collector)],
)
async def post_write_off(
    body: WriteOffIn, runtime: RuntimeDep, setup: SetupDep, principal: PrincipalDep, audit: AuditDep
) -> WriteOffAccepted:
    """Propose a write-off journal to ledger-posting (the journal name of the write-off parameters).
    The caller is its requester: with four-eyes on (the setup), someone else must post the journal.
    Open items in a foreign currency are written off at the rate of the write-off date, the difference to
    their accounting-currency balance as realized gain or loss; with no rate for that date the write-off is
    recorded as `rejected` with the reason (docs/currencies.md)."""
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            write_off_id = await handlers.request_write_off(
                uow,
                setup,
                body.customer_account,
                vouchers=body.vouchers,
                invoice_id=body.invoice_id,
                reason_code=body.reason_code,
                reason_comment=body.reason_comment,
                on=body.date,
                requested_by=principal.subject,
            )
            audit.record(
                uow.session,
                "write-off requested",
                202,
                write_off_id=write_off_id,
                request=body.model_dump(mode="json", exclude_none=True),
            )
    return WriteOffAccepted(write_off_id=write_off_id)


@router.get(
    "/write-offs/{write_off_id}",
    responses={404: {"description": "Unknown write-off"}},
    dependencies=[require(Role.viewer)],
)
async def get_write_off(write_off_id: Id, session: SessionDep) -> WriteOffOut:
    if (row := await handlers.write_off_request(session, write_off_id)) is None:
        raise HTTPException(404, f"no write-off {write_off_id!r}")
    return WriteOffOut.of(row)


@router.post(
    "/write-offs/{write_off_id}/cancel",
    status_code=202,
    responses={
        200: {"description": "Already cancelled: its journal is voided and its transactions are free again"},
        404: {"description": "Unknown write-off"},
        409: {"description": "Already posted or rejected: nothing to cancel (the reason says which)"},
    },
    dependencies=[require(Role.collector)],
)
async def cancel_write_off(
    write_off_id: Id,
    runtime: RuntimeDep,
    response: Response,
    audit: AuditDep,
    body: Annotated[WriteOffCancelIn | None, Body()] = None,
) -> WriteOffOut:
    """Withdraw a write-off that is not posted yet (status requested or journal-created).

    The write-off becomes `cancelling` (202) and ledger-posting is asked to void its journal. Once it
    is voided the write-off is `cancelled` and its transactions can be written off again; if the
    journal was posted before the cancel reached ledger-posting, the write-off ends `posted` and the
    refusal is its `reason`. The transactions stay reserved while `cancelling`, so an item is never
    written off twice. Asking again answers the current state and sends nothing more."""
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            row = await handlers.cancel_write_off(uow, write_off_id, body.reason if body else None)
            if row is not None:
                audit.record(
                    uow.session,
                    "write-off cancel requested",
                    200 if row.status == WriteOffStatus.CANCELLED else 202,
                    write_off_id=write_off_id,
                    write_off_status=row.status,
                )
    if row is None:
        raise HTTPException(404, f"no write-off {write_off_id!r}")
    if row.status == WriteOffStatus.CANCELLED:
        response.status_code = 200
    return WriteOffOut.of(row)


@router.get("/parameters/write-off", dependencies=[require(Role.viewer)])
async def get_write_off_parameters(runtime: RuntimeDep, setup: SetupDep) -> WriteOffParametersIO:
    async with runtime.unit_of_work() as uow:  # the first read seeds the parameters from the setup
        return WriteOffParametersIO.of(await handlers.write_off_parameters(uow.session, setup))


@router.put(
    "/parameters/write-off",
    responses={422: {"description": "Unknown journal name or reason code"}},
    dependencies=[require(Role.admin)],
)
async def put_write_off_parameters(
    body: WriteOffParametersIO, runtime: RuntimeDep, setup: SetupDep, audit: AuditDep
) -> WriteOffParametersIO:
    with _refusals_as_http_errors():
        async with runtime.unit_of_work() as uow:
            before = WriteOffParametersIO.of(await handlers.write_off_parameters(uow.session, setup))
            after = WriteOffParametersIO.of(await handlers.change_write_off_parameters(uow, setup, body.to_setup()))
            audit.record(
                uow.session, "write-off parameters changed", before=before.model_dump(), after=after.model_dump()
            )
            return after


@router.get("/reason-codes", dependencies=[require(Role.viewer)])
async def get_reason_codes(setup: SetupDep) -> ReasonCodesOut:
    return ReasonCodesOut(reason_codes=[ReasonCodeOut(code=c, description=d) for c, d in setup.reason_codes.items()])


def _refusals_as_http_errors() -> AbstractContextManager[None]:
    """A refused write-off (or parameter change, or an unknown customer) answers 4xx with the domain's message."""
    return refusals_as_problems(WriteOffError, {UnknownCustomer: 404, WriteOffConflict: 409})
