"""The collections workspace: server-rendered pages (Jinja2, plain forms, a little vanilla JS) at `/`.

The pages call the same handlers as the JSON API. Journal review and posting go through
ledger-posting's HTTP API (LEDGER_POSTING_URL) with the signed-in user's own token: services never
import each other's code, and ledger-posting sees who posts (four-eyes). Refusals are shown next to
the action that caused them, as the domain's sentence.

Signing in (/signin) puts the user's token in a cookie (HttpOnly, SameSite=Strict): the pages are
plain forms and links, which cannot send an Authorization header. Every form that changes state
carries the CSRF token derived from the session (kredit_shared.auth), so a foreign page cannot post
them even in a browser that ignores SameSite. With the locally generated key (the local run), the
sign-in page also offers one click per role, to callers on this machine only.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from kredit_collections import credit_handlers, handlers
from kredit_collections.domain import AgedBalance, WriteOffError, WriteOffStatus, days_past_due
from kredit_collections.settings import CollectionsSettings
from kredit_shared import auth
from kredit_shared.audit import AuditDep
from kredit_shared.auth import PUBLIC, PrincipalDep, Role, require
from kredit_shared.company_setup import CompanySetup
from kredit_shared.contracts import IsoDate
from kredit_shared.currencies import format_rate
from kredit_shared.http import http_error
from kredit_shared.money import CENT, MIL, ZERO
from kredit_shared.service import RuntimeDep, SessionDep, SetupDep

HERE = Path(__file__).parent
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}
PAGE_SIZES = (25, 50, 100, 200)
# A write-off still moving (the page reloads itself until ledger-posting's answer has arrived).
MOVING = (WriteOffStatus.REQUESTED, WriteOffStatus.CANCELLING)

router = APIRouter(include_in_schema=False)
csv_router = APIRouter(prefix="/api/v1", tags=["collections"])


def money(value: Decimal | int | None) -> str:
    """1,234.50; an amount in a three-decimal currency shows its third decimal when it has one (KWD 1,000.125).
    A template's `sum` of nothing is the int 0."""
    if value is None:
        return ""
    value = Decimal(value)
    if value != value.quantize(CENT) and value == value.quantize(MIL):
        return f"{value:,.3f}"
    return f"{value:,.2f}"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["money"] = money
templates.env.filters["rate"] = lambda value: "" if value is None else format_rate(value)
templates.env.filters["dec"] = lambda value: Decimal(str(value))  # amounts in ledger-posting's JSON are strings


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal = auth.principal_of(request)
    context.setdefault("principal", principal)
    context.setdefault("csrf", auth.csrf_token(principal.token) if principal else "")
    return templates.TemplateResponse(request, template, context, status_code=status_code)


# --- signing in ------------------------------------------------------------------------------


def _is_local_caller(request: Request) -> bool:
    try:
        return request.client is not None and ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def _offers_local_sign_in(request: Request) -> bool:
    """One-click sign-in mints a token: only with the local key, and only for callers on this machine."""
    return request.app.state.auth.local and _is_local_caller(request)


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _sign_in_page(request: Request, next_path: str, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    return _page(
        request,
        "signin.html",
        status_code,
        next_path=_local_path(next_path),
        error=error,
        local_roles=list(Role) if _offers_local_sign_in(request) else [],
        principal=None,
    )


@router.get("/signin", response_class=HTMLResponse, dependencies=[PUBLIC])
async def sign_in_page(request: Request, next: str = "/") -> HTMLResponse:
    return _sign_in_page(request, next)


@router.post("/signin", response_class=HTMLResponse, dependencies=[auth.public(rate_limited=True)])
async def sign_in(request: Request, runtime: RuntimeDep, audit: AuditDep) -> Response:
    """Paste a token (from the identity provider or `kredit token`), or with the local key pick a role."""
    form = {k: v[0] for k, v in (await _form(request)).items() if v}
    next_path = form.get("next", "/")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return _sign_in_page(request, next_path, "sign in from this site's own page", 403)
    verifier: auth.TokenVerifier = request.app.state.auth
    if local_role := form.get("local_role"):
        if not _offers_local_sign_in(request) or local_role not in Role.__members__:
            return _sign_in_page(request, next_path, "one-click sign-in is for the local run only", 403)
        token = verifier.mint_local(f"local-{local_role}", [Role(local_role)])
    else:
        token = form.get("token", "").strip()
        if not token:
            return _sign_in_page(request, next_path, "paste a token first", 422)
    try:
        principal = await verifier.verify(token)
    except HTTPException as e:
        return _sign_in_page(request, next_path, str(e.detail), e.status_code)
    auth.context(request)["principal"] = principal
    async with runtime.unit_of_work() as uow:
        audit.record(uow.session, "signed in to the workspace", 303)
    response = RedirectResponse(_local_path(next_path), status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/signout", dependencies=[PUBLIC])
async def sign_out() -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def auth_error(request: Request, error: Exception) -> Response:
    """401/403/429 on a page: to the sign-in page, or the reason as a page. The API keeps problem+json."""
    assert isinstance(error, StarletteHTTPException)
    if request.url.path.startswith("/api/"):
        return await http_error(request, error)
    if error.status_code == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":  # a form sent with an expired session: back to the page it came from
            referer = urlsplit(request.headers.get("referer", ""))
            target = referer.path if referer.netloc == request.headers.get("host") else "/"
        return RedirectResponse("/signin?" + urlencode({"next": target}), status_code=303)
    if error.status_code == 403:
        auth.context(request)["refusal"] = error.detail  # the audit trail records it
    response = _page(request, "message.html", error.status_code, title="Not allowed", message=error.detail)
    if error.headers:
        response.headers.update(error.headers)
    return response


@router.get("/static/{name}", dependencies=[PUBLIC])
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


# --- aged balances ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AgedView:
    """What the aged balances page shows: one page of the matching rows, and totals of all of them."""

    as_of: dt.date
    buckets: list[str]
    rows: list[AgedBalance]  # this page
    matching: int
    totals: dict[str, dict[str, Decimal]]  # currency -> "balance" and each bucket, over every matching row
    page: int
    pages: int


def sort_key(column: str, buckets: list[str]):
    if column in buckets:
        return lambda r: r.buckets[column]
    return {
        "account": lambda r: r.customer_account,
        "name": lambda r: (r.customer_name or "").lower(),
        "currency": lambda r: r.currency,
        "balance": lambda r: r.balance,
    }.get(column, lambda r: r.customer_account)


def aged_view(
    rows: list[AgedBalance], buckets: list[str], as_of: dt.date, q: str, sort: str, desc: bool, page: int, size: int
) -> AgedView:
    if needle := q.strip().lower():
        rows = [r for r in rows if needle in r.customer_account.lower() or needle in (r.customer_name or "").lower()]
    rows = sorted(rows, key=sort_key(sort, buckets), reverse=desc)
    totals: dict[str, dict[str, Decimal]] = {}
    for r in rows:
        total = totals.setdefault(r.currency, {"balance": ZERO} | {b: ZERO for b in buckets})
        total["balance"] += r.balance
        for b in buckets:
            total[b] += r.buckets[b]
    pages = max(1, math.ceil(len(rows) / size))
    page = min(max(page, 1), pages)
    return AgedView(as_of, buckets, rows[(page - 1) * size : page * size], len(rows), totals, page, pages)


def bucket_chart(view: AgedView) -> list[dict[str, Any]]:
    """Bars of the bucket totals per currency, as SVG coordinates (drawn by the template)."""
    charts = []
    for currency, total in view.totals.items():
        amounts = [total[b] for b in view.buckets]
        top = max([abs(a) for a in amounts] + [Decimal(1)])
        bars = []
        for i, (label, amount) in enumerate(zip(view.buckets, amounts)):
            height = float(abs(amount) / top) * 120
            bars.append(
                {
                    "label": label,
                    "amount": amount,
                    "x": 20 + i * 110,
                    "y": 140 - height,
                    "height": height,
                    "negative": amount < 0,
                }
            )
        charts.append({"currency": currency, "bars": bars, "width": 40 + len(amounts) * 110})
    return charts


AsOf = Annotated[IsoDate | None, Query(description="YYYY-MM-DD; default today")]
Search = Annotated[str, Query(description="part of the customer account or name")]
Sort = Annotated[str, Query(description="account, name, currency, balance or a bucket label")]
Size = Annotated[int, Query(ge=1, le=1000)]


@dataclass(frozen=True)
class AgedQuery:
    """The aged balances page as asked (the page and its CSV take the same query), and what it shows."""

    q: str
    sort: str
    desc: bool
    size: int
    view: AgedView

    def params(self) -> dict[str, Any]:
        """The query of the page shown (its links and its CSV keep it)."""
        query = {"as_of": self.view.as_of.isoformat(), "q": self.q, "sort": self.sort, "desc": str(self.desc).lower()}
        return query | {"size": self.size, "page": self.view.page}


async def aged_query(
    session: SessionDep,
    setup: SetupDep,
    as_of: AsOf = None,
    q: Search = "",
    sort: Sort = "account",
    desc: bool = False,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Size = 50,
) -> AgedQuery:
    as_of = as_of or dt.date.today()
    rows = await handlers.aged_balances(session, setup, as_of)
    view = aged_view(rows, [b.label for b in setup.aging_buckets], as_of, q, sort, desc, page, size)
    return AgedQuery(q, sort, desc, size, view)


AgedQueryDep = Annotated[AgedQuery, Depends(aged_query)]


@router.get("/", response_class=HTMLResponse, dependencies=[require(Role.viewer, expensive=True)])
async def aged_balances_page(
    request: Request, session: SessionDep, setup: SetupDep, aged: AgedQueryDep
) -> HTMLResponse:
    view = aged.view
    over_limit, disputed = await credit_handlers.aging_flags(session, setup, view.rows, view.as_of)

    def link(**changes: Any) -> str:
        return "/?" + urlencode(aged.params() | changes)

    return _page(
        request,
        "aged_balances.html",
        view=view,
        q=aged.q,
        sort=aged.sort,
        desc=aged.desc,
        size=aged.size,
        sizes=PAGE_SIZES,
        link=link,
        charts=bucket_chart(view),
        over_limit=over_limit,
        disputed_amounts=disputed,
        csv_url="/api/v1/aged-balances.csv?" + urlencode(aged.params()),
    )


@csv_router.get(
    "/aged-balances.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The rows of the page, then totals"}},
    dependencies=[require(Role.viewer, expensive=True)],
)
async def aged_balances_csv(aged: AgedQueryDep) -> Response:
    """Exactly what the aged balances page shows for the same query: that page's rows, then one
    total row per currency over every matching row (the page's totals row)."""
    view = aged.view
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["customer_account", "customer_name", "currency", "balance", *view.buckets])
    for r in view.rows:
        writer.writerow(
            [r.customer_account, r.customer_name or "", r.currency, r.balance, *(r.buckets[b] for b in view.buckets)]
        )
    for currency, total in view.totals.items():
        writer.writerow(
            ["Total", f"{view.matching} customers", currency, total["balance"], *(total[b] for b in view.buckets)]
        )
    filename = f"aged-balances-{view.as_of.isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


# --- customer --------------------------------------------------------------------------------


async def _customer_page(
    request: Request,
    session,
    setup: CompanySetup,
    account: str,
    *,
    show: str = "open",
    type_: str = "",
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    today = dt.date.today()
    principal = auth.principal_of(request)
    try:
        rows = await handlers.customer_transactions(session, account)
    except WriteOffError as e:
        return _page(request, "message.html", 404, title=f"Customer {account}", message=str(e))
    aged = await handlers.customer_aged_balances(session, setup, account, today)
    name = next((r.transaction.customer_name for r in reversed(rows) if r.transaction.customer_name), "")
    overdue: dict[str, Decimal] = {}  # in the currencies of the aged balances (foreign: the accounting currency)
    for r in rows:
        if r.is_open and days_past_due(r.transaction, today) > 0:
            currency = r.transaction.balance_currency(setup.accounting_currency)
            overdue[currency] = overdue.get(currency, ZERO) + r.accounting
    types = sorted({r.transaction.transaction_type for r in rows})
    shown = [r for r in rows if (show == "all" or r.is_open) and (not type_ or r.transaction.transaction_type == type_)]
    parameters = await handlers.write_off_parameters(session, setup)
    claimed = await handlers.claimed_by(session, account)
    write_offs = await handlers.write_off_requests(session, account)
    # A refusal names the vouchers already in a write-off: link those write-offs next to the message.
    holding = {claimed[v] for v in claimed if error and v in error}
    return _page(
        request,
        "customer.html",
        status_code,
        account=account,
        name=name,
        aged=aged,
        buckets=[b.label for b in setup.aging_buckets],
        overdue=overdue,
        rows=shown,
        show=show,
        type_=type_,
        types=types,
        claimed=claimed,
        write_offs=write_offs,
        holding=[w for w in write_offs if w.id in holding],
        reason_codes=setup.reason_codes,
        parameters=parameters,
        today=today,
        error=error,
        form=form or {},
        open_rows=[r for r in rows if r.is_open],
        # With a foreign-currency transaction, the accounting-currency columns beside the transaction currency.
        accounting_currency=setup.accounting_currency,
        foreign=any(r.transaction.currency != setup.accounting_currency for r in rows),
        # The dialog is shown to every role (what a write-off would take), but says up front who may send it.
        may_write_off=principal is not None and principal.may(Role.collector),
    )


@router.get("/customers/{account}", response_class=HTMLResponse, dependencies=[require(Role.viewer)])
async def customer_page(
    request: Request, account: str, session: SessionDep, setup: SetupDep, show: str = "open", type: str = ""
) -> HTMLResponse:
    return await _customer_page(request, session, setup, account, show=show, type_=type)


async def _form(request: Request) -> dict[str, list[str]]:
    # Plain urlencoded forms: parsed here rather than adding python-multipart for Form(...).
    return parse_qs((await request.body()).decode(), keep_blank_values=True)


@router.post("/customers/{account}/write-off", response_class=HTMLResponse, dependencies=[require(Role.collector)])
async def write_off_from_page(
    request: Request, account: str, runtime: RuntimeDep, setup: SetupDep, principal: PrincipalDep, audit: AuditDep
) -> Response:
    """The write-off dialog: scope `all` (whole balance), `marked` (the ticked vouchers) or `invoice`."""
    form = await _form(request)
    first = {k: v[0] for k, v in form.items() if v}
    scope = first.get("scope", "all")
    vouchers = form.get("voucher", []) if scope == "marked" else None
    invoice_id = first.get("invoice_id") if scope == "invoice" else None
    try:
        on = dt.date.fromisoformat(first["date"]) if first.get("date") else None
        if scope == "marked" and not vouchers:
            raise WriteOffError("tick at least one open transaction to write off the marked transactions")
        async with runtime.unit_of_work() as uow:
            write_off_id = await handlers.request_write_off(
                uow,
                setup,
                account,
                vouchers=vouchers,
                invoice_id=invoice_id,
                reason_code=first.get("reason_code") or None,
                reason_comment=first.get("reason_comment") or None,
                on=on,
                requested_by=principal.subject,
            )
            audit.record(
                uow.session,
                "write-off requested",
                303,
                write_off_id=write_off_id,
                customer_account=account,
                scope=scope,
                vouchers=vouchers,
                invoice_id=invoice_id,
            )
    except (WriteOffError, ValueError) as e:
        async with runtime.sessions() as session:
            return await _customer_page(
                request,
                session,
                setup,
                account,
                error=str(e),
                form=first | {"vouchers": set(form.get("voucher", []))},
                status_code=409 if "already" in str(e) else 422,
            )
    return RedirectResponse(f"/write-offs/{write_off_id}", status_code=303)


# --- write-off requests and their journals ---------------------------------------------------


def _settings(runtime) -> CollectionsSettings:
    return runtime.settings


@dataclass(frozen=True)
class LedgerAnswer:
    body: dict | None
    error: str | None = None  # the sentence to show when ledger-posting refused or could not be reached
    status: int = 200


async def _ledger(runtime, principal: auth.Principal, method: str, path: str) -> LedgerAnswer:
    """Ledger-posting's answer, asked with the signed-in user's token (so it knows who posts)."""
    url = _settings(runtime).ledger_posting_url.rstrip("/") + path
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.request(method, url, headers={"Authorization": f"Bearer {principal.token}"})
    except httpx.HTTPError as e:
        return LedgerAnswer(None, f"ledger-posting at {url} did not answer ({type(e).__name__})", 502)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        return LedgerAnswer(None, f"ledger-posting refused: {detail}", response.status_code)
    return LedgerAnswer(response.json())


@router.get("/write-offs", response_class=HTMLResponse, dependencies=[require(Role.viewer)])
async def write_offs_page(request: Request, session: SessionDep, status: str = "") -> HTMLResponse:
    rows = await handlers.write_off_requests(session)
    statuses = sorted({r.status for r in rows})
    if status:
        rows = [r for r in rows if r.status == status]
    return _page(request, "write_offs.html", rows=rows, status=status, statuses=statuses, amount=written_off)


def written_off(row) -> Decimal:
    """The amount a write-off request takes off the customer: its Customer lines, credit minus debit, in the
    write-off's currency (the exchange difference lines of a foreign write-off settle nothing: not counted)."""
    return sum(
        (
            line.credit - line.debit
            for line in row.journal_lines
            if line.account_type == "Customer" and line.currency == row.currency
        ),
        ZERO,
    )


async def _write_off_page(
    request: Request, runtime, write_off_id: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    principal = auth.principal_of(request)
    assert principal is not None  # every page declares require(...)
    async with runtime.sessions() as session:
        row = await handlers.write_off_request(session, write_off_id)
    if row is None:
        return _page(request, "message.html", 404, title="Write-off", message=f"no write-off {write_off_id!r}")
    journal, ledger_error = (None, None)
    if row.journal_batch_number:
        answer = await _ledger(runtime, principal, "GET", f"/api/v1/journals/{row.journal_batch_number}")
        journal, ledger_error = answer.body, answer.error
    setup: CompanySetup = request.app.state.setup
    # Four-eyes (the setup): the requester sees why there is no Post button; ledger-posting refuses anyway.
    own_request = setup.write_off.four_eyes_write_off and row.requested_by == principal.subject
    # Reload until ledger-posting's answer has come back (a posted journal whose event is on its way too).
    moving = row.status in MOVING or bool(journal and journal["status"] == "posted" and row.status != "posted")
    return _page(
        request,
        "write_off.html",
        status_code,
        row=row,
        journal=journal,
        ledger_error=ledger_error,
        error=error,
        moving=moving,
        amount=written_off(row),
        can_post=row.status == WriteOffStatus.JOURNAL_CREATED
        and bool(journal and journal["status"] == "open")
        and principal.may(Role.accountant)
        and not own_request,
        own_request=own_request and row.status == WriteOffStatus.JOURNAL_CREATED,
        can_cancel=row.status in (WriteOffStatus.REQUESTED, WriteOffStatus.JOURNAL_CREATED)
        and principal.may(Role.collector),
        cancelled=row.status == WriteOffStatus.CANCELLED,
    )


@router.get("/write-offs/{write_off_id}", response_class=HTMLResponse, dependencies=[require(Role.viewer)])
async def write_off_page(request: Request, write_off_id: str, runtime: RuntimeDep) -> HTMLResponse:
    return await _write_off_page(request, runtime, write_off_id)


@router.post("/write-offs/{write_off_id}/post", response_class=HTMLResponse, dependencies=[require(Role.accountant)])
async def post_journal(
    request: Request, write_off_id: str, runtime: RuntimeDep, principal: PrincipalDep, audit: AuditDep
) -> Response:
    """The accountant's Post: collections asks ledger-posting to post the write-off's journal, as the
    signed-in user (ledger-posting records who posted, and refuses the requester under four-eyes)."""
    async with runtime.sessions() as session:
        row = await handlers.write_off_request(session, write_off_id)
    if row is None or not row.journal_batch_number:
        return await _write_off_page(request, runtime, write_off_id, "there is no journal to post yet", 409)
    answer = await _ledger(runtime, principal, "POST", f"/api/v1/journals/{row.journal_batch_number}/post")
    if answer.error:
        if answer.status == 403:
            auth.context(request)["refusal"] = answer.error  # the audit trail records the refusal
        return await _write_off_page(request, runtime, write_off_id, answer.error, answer.status)
    async with runtime.unit_of_work() as uow:
        audit.record(uow.session, "journal posted", 303, write_off_id=write_off_id, batch=row.journal_batch_number)
    return RedirectResponse(f"/write-offs/{write_off_id}", status_code=303)


@router.post("/write-offs/{write_off_id}/cancel", response_class=HTMLResponse, dependencies=[require(Role.collector)])
async def cancel_from_page(request: Request, write_off_id: str, runtime: RuntimeDep, audit: AuditDep) -> Response:
    reason = {k: v[0] for k, v in (await _form(request)).items() if v}.get("reason") or None
    try:
        async with runtime.unit_of_work() as uow:
            row = await handlers.cancel_write_off(uow, write_off_id, reason)
            if row is not None:
                audit.record(uow.session, "write-off cancel requested", 303, write_off_id=write_off_id)
    except WriteOffError as e:
        return await _write_off_page(request, runtime, write_off_id, str(e), 409)
    if row is None:
        return _page(request, "message.html", 404, title="Write-off", message=f"no write-off {write_off_id!r}")
    return RedirectResponse(f"/write-offs/{write_off_id}", status_code=303)
