"""The audit trail every service keeps: who changed what over HTTP, when and from where.

Append-only: rows are inserted, never updated or deleted by the code. A route that changes state
records what it did in the same transaction as the change (so the row exists exactly when the
change does), with before/after for parameters:

    async def put_parameters(body: ..., runtime: RuntimeDep, audit: AuditDep) -> ...:
        async with runtime.unit_of_work() as uow:
            before = ...
            after = ...
            audit.record(uow.session, "settlement parameters changed", before=before, after=after)

`AuditTrail` (an ASGI middleware the runtime installs) catches what routes do not record: a
successful state change of a route that recorded nothing gets a generic row after the response,
and every refusal of an authenticated caller (403) is recorded with its reason.
`GET /api/v1/audit` (admin) reads the trail, newest first.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kredit_shared.auth import SAFE_METHODS, Principal, Role, Rule, client_address, context, require
from kredit_shared.outbox import utcnow

log = logging.getLogger(__name__)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow, index=True)
    subject: str = Field(index=True)
    roles: str  # the token's roles, comma-separated, as they were at the time
    client: str  # the caller's address
    method: str
    path: str
    action: str  # what happened, in a few words ("write-off requested", "refused: ...")
    status: int  # the HTTP status answered
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def _entry(known: dict[str, Any], method: str, path: str, client: str, action: str, status: int, **detail: Any):
    principal: Principal = known["principal"]
    return AuditEntry(
        subject=principal.subject,
        roles=",".join(sorted(principal.roles)),
        client=client,
        method=method,
        path=path,
        action=action,
        status=status,
        detail=detail,
    )


class Audit:
    """What one request records about the change it makes (see the module docstring)."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def record(self, session: AsyncSession, action: str, status: int = 200, **detail: Any) -> None:
        """Add the row to `session`'s transaction. `detail` must be JSON (ids, before/after dicts)."""
        known = context(self.request)
        entry = _entry(
            known,
            self.request.method,
            self.request.url.path,
            client_address(self.request),
            action,
            status,
            **detail,
        )
        session.add(entry)
        known["audited"] = True


def _audit_of(request: Request) -> Audit:
    return Audit(request)


AuditDep = Annotated[Audit, Depends(_audit_of)]


class AuditTrail:
    """Records, after the response, what the route did not: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        known = context(scope)
        if "principal" not in known or known.get("audited"):
            return
        rule: Rule | None = known.get("rule")
        if status == 403:
            action = f"refused: {known.get('refusal', 'forbidden')}"
        elif scope["method"] not in SAFE_METHODS and status < 400 and (rule is None or rule.audited):
            action = f"{scope['method']} {scope['path']}"
        else:
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        runtime = scope["app"].state.runtime
        try:
            async with runtime.unit_of_work() as uow:
                uow.session.add(_entry(known, scope["method"], scope["path"], client, action, status))
        except Exception:  # the answer is sent; a lost row is logged, loudly
            log.exception("could not record the audit entry %s %s (%s)", scope["method"], scope["path"], action)


# --- GET /api/v1/audit -------------------------------------------------------------------------


class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    subject: str
    roles: list[str]
    client: str
    method: str
    path: str
    action: str
    status: int
    detail: dict[str, Any]


class AuditList(BaseModel):
    entries: list[AuditEntryOut]
    next_before_id: int | None  # pass as `before_id` for the next (older) page; null on the last


def _iso_datetime(value: object) -> object:
    # Pydantic would also take a number of seconds ("0.5") as a time; the parameter says ISO 8601.
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_datetime)]
router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", dependencies=[require(Role.admin)])
async def read_audit_trail(
    request: Request,
    subject: Annotated[str | None, Query(max_length=200, description="only this token subject")] = None,
    since: Annotated[IsoDateTime | None, Query(description="only entries at or after this time (ISO 8601)")] = None,
    before_id: Annotated[
        # At most a database BIGINT: a larger number is a 422, not an overflow in the driver (found by schemathesis).
        int | None, Query(ge=1, le=2**63 - 1, description="only entries older than this id (paging)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditList:
    """The audit trail of this service, newest first: every state change made over HTTP (who, when,
    from where, what; before and after for parameters) and every refused attempt."""
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit + 1)
    if subject is not None:
        query = query.where(col(AuditEntry.subject) == subject)
    if since is not None:
        query = query.where(col(AuditEntry.at) >= (since if since.tzinfo else since.replace(tzinfo=dt.UTC)))
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    async with request.app.state.runtime.sessions() as session:
        rows = list((await session.exec(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditList(
        entries=[
            AuditEntryOut(**row.model_dump(exclude={"roles"}), roles=[r for r in row.roles.split(",") if r])
            for row in rows
        ],
        next_before_id=rows[-1].id if more else None,
    )
