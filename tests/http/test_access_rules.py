"""Who may call what, route by route: the policy below is checked against the rules the routes
declare, and then over HTTP for every route and every role (allowed: anything but 401/403; the
other roles: 403; no token: 401, or the sign-in page for the workspace's pages).

A new route fails `test_every_route_has_a_rule_and_a_row_in_the_policy` (naming it) until it declares
`dependencies=[require(Role.<role>)]` (or `[PUBLIC]`) and gets a row in POLICY; a body for its
request goes in BODIES when an empty one would not do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from kredit_collections.app import create_app as create_collections
from kredit_collections.settings import CollectionsSettings
from kredit_invoicing.app import create_app as create_invoicing
from kredit_invoicing.settings import InvoicingSettings
from kredit_ledger_posting.app import create_app as create_ledger
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_settlement.app import create_app as create_settlement
from kredit_settlement.settings import SettlementSettings
from kredit_shared.auth import GRANTS, Role, Rule, rules_of
from kredit_shared.testing import auth_header, isolated_kafka, serve

V, C, A, ADM = Role.viewer, Role.collector, Role.accountant, Role.admin
PUBLIC = "public"
EXPENSIVE = "expensive"  # a viewer's read that is rate-limited like a write

# The policy: "METHOD path" -> the role it needs (or PUBLIC), per service. Writes and EXPENSIVE reads
# are rate-limited per token subject.
POLICY: dict[str, dict[str, Any]] = {
    "collections": {
        "GET /api/v1/customers/{account}/transactions": V,
        "GET /api/v1/aged-balances": (V, EXPENSIVE),
        "GET /api/v1/aged-balances.csv": (V, EXPENSIVE),
        "GET /api/v1/open-invoices": (V, EXPENSIVE),
        "POST /api/v1/write-offs": C,
        "GET /api/v1/write-offs/{write_off_id}": V,
        "POST /api/v1/write-offs/{write_off_id}/cancel": C,
        "GET /api/v1/parameters/write-off": V,
        "PUT /api/v1/parameters/write-off": ADM,
        "GET /api/v1/reason-codes": V,
        # the workspace's pages
        "GET /": (V, EXPENSIVE),
        "GET /customers/{account}": V,
        "POST /customers/{account}/write-off": C,
        "GET /write-offs": V,
        "GET /write-offs/{write_off_id}": V,
        "POST /write-offs/{write_off_id}/post": A,
        "POST /write-offs/{write_off_id}/cancel": C,
        # credit and collections management
        "PUT /api/v1/credit-groups/{group}": ADM,
        "GET /api/v1/credit-groups/{group}": V,
        "PUT /api/v1/customers/{account}/credit": ADM,
        "GET /api/v1/customers/{account}/credit": V,
        "POST /api/v1/credit-checks": C,  # the ERP's question before an order (issue 14: a collector's right)
        "POST /api/v1/collection-letter-runs": C,
        "GET /api/v1/customers/{account}/collection-letters": V,
        "GET /api/v1/collection-letters/{letter_id}": V,
        "GET /api/v1/collection-letters/{letter_id}/document": V,
        "POST /api/v1/interest-note-runs": C,
        "GET /api/v1/customers/{account}/interest-notes": V,
        "GET /api/v1/interest-notes/{note_id}": V,
        "GET /api/v1/interest-codes": V,
        "POST /api/v1/activities": C,
        "GET /api/v1/activities": V,
        "POST /api/v1/activities/{activity_id}/close": C,
        "POST /api/v1/disputes": C,
        "GET /api/v1/disputes": V,
        "POST /api/v1/disputes/{dispute_id}/resolve": C,
        "GET /signin": PUBLIC,
        "POST /signin": PUBLIC,
        "POST /signout": PUBLIC,
        "GET /static/{name}": PUBLIC,
    },
    "invoicing": {
        "GET /api/v1/invoices": V,
        "GET /api/v1/invoices/{invoice_id}": V,
    },
    "settlement": {
        "GET /api/v1/parameters": V,
        "PUT /api/v1/parameters": ADM,
        "POST /api/v1/settlement-preview": V,  # a POST that changes nothing
        "GET /api/v1/customers/{account}/open-transactions": V,
        "GET /api/v1/pending-marks": V,
        "POST /api/v1/pending-marks/{payment_id}/release": A,
        "POST /api/v1/settlements": A,  # settling posted transactions by hand moves money
        "GET /api/v1/settlements": V,
        "GET /api/v1/settlements/{settlement_id}": V,
        "POST /api/v1/settlements/{settlement_id}/reverse": A,
    },
    "ledger-posting": {
        "GET /api/v1/journals": (V, EXPENSIVE),
        "GET /api/v1/journals/{batch_number}": V,
        "POST /api/v1/journals/{batch_number}/post": A,
        "GET /api/v1/ledger-entries": (V, EXPENSIVE),
        "GET /api/v1/trial-balance": (V, EXPENSIVE),
        "GET /api/v1/accounts": V,
        "GET /api/v1/exchange-rates": V,
        "PUT /api/v1/exchange-rates/{currency}/{from_date}": A,  # the rates foreign documents are booked at
    },
}
EVERY_SERVICE = {
    "GET /healthz": PUBLIC,
    "GET /livez": PUBLIC,
    "GET /readyz": PUBLIC,
    # the contract's AsyncAPI document, public like /docs and /openapi.json
    "GET /asyncapi": PUBLIC,
    "GET /asyncapi.json": PUBLIC,
    "GET /asyncapi.yaml": PUBLIC,
    "GET /metrics": PUBLIC,
    "GET /api/v1/audit": ADM,
}
for rules in POLICY.values():
    rules.update(EVERY_SERVICE)

# Requests that need more than their path: query parameters or a body (JSON, or a form for the pages).
BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/write-offs": {"json": {"customer_account": "X1"}},
    "PUT /api/v1/parameters/write-off": {
        "json": {"journal_name": "WriteOff", "reason_code": "BadDebt", "separate_sales_tax": False}
    },
    "PUT /api/v1/parameters": {"json": {"calculate_cash_discounts_for_partial_payments": True}},
    "POST /api/v1/settlement-preview": {
        "json": {"customer_account": "X1", "payment_date": "2015-07-01", "marks": [{"invoice_id": "X1"}]}
    },
    "GET /api/v1/invoices": {"params": {"customer_account": "X1"}},
    "GET /api/v1/settlements": {"params": {"customer_account": "X1"}},
    "GET /api/v1/ledger-entries": {"params": {"account": "130100"}},
    "PUT /api/v1/exchange-rates/{currency}/{from_date}": {"json": {"rate": "1.10"}},
    "POST /customers/{account}/write-off": {"data": {"scope": "all"}},
}
PATH_VALUES = {"name": "app.css", "currency": "EUR", "from_date": "2026-01-01"}  # any other path parameter gets "X1"

CREATE = {
    "collections": (create_collections, CollectionsSettings),
    "invoicing": (create_invoicing, InvoicingSettings),
    "settlement": (create_settlement, SettlementSettings),
    "ledger-posting": (create_ledger, LedgerPostingSettings),
}


def declared(rule: Rule | str | None) -> Any:
    if not isinstance(rule, Rule):
        return rule
    return (rule.role, EXPENSIVE) if rule.expensive else rule.role


def needs(expected: Any) -> Role | str:
    return expected[0] if isinstance(expected, tuple) else expected


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def apps(kafka, tmp_path_factory) -> AsyncIterator[dict[str, tuple[Any, httpx.AsyncClient]]]:
    folder: Path = tmp_path_factory.mktemp("access")
    async with contextlib.AsyncExitStack() as stack:
        running = {}
        for name, (create, settings_class) in CREATE.items():
            settings = settings_class(
                database_url=f"sqlite+aiosqlite:///{folder / name}.db",
                ledger_posting_url="http://127.0.0.1:9",  # the pages' calls to ledger-posting fail fast
                **isolated_kafka(kafka),
            )
            app = create(settings)
            client = await stack.enter_async_context(serve(app))
            del client.headers["Authorization"]  # each request here says who it is
            running[name] = (app, client)
        yield running


@pytest.mark.parametrize("service", POLICY)
def test_every_route_has_a_rule_and_a_row_in_the_policy(service, tmp_path):
    create, settings_class = CREATE[service]
    app = create(settings_class(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    rules = rules_of(app)
    without_rule = sorted(route for route, rule in rules.items() if rule is None)
    assert not without_rule, f"{service}: routes without an access rule (declare require(Role.x) or PUBLIC)"
    not_in_policy = sorted(set(rules) - set(POLICY[service]))
    assert not not_in_policy, f"{service}: routes with no row in POLICY (tests/http/test_access_rules.py)"
    gone = sorted(set(POLICY[service]) - set(rules))
    assert not gone, f"{service}: POLICY names routes the service no longer has"
    differs = {route: declared(rule) for route, rule in rules.items() if declared(rule) != POLICY[service][route]}
    assert not differs, f"{service}: routes whose declared rule differs from POLICY: {differs}"


def test_the_roles_nest_and_admin_adds_configuration_to_reading_only():
    assert GRANTS == {
        V: {V},
        C: {V, C},
        A: {V, C, A},
        ADM: {V, ADM},
    }


def request_of(route: str) -> tuple[str, str, dict[str, Any]]:
    method, template = route.split(" ", 1)
    path = template
    for part in template.split("/"):
        if part.startswith("{"):
            path = path.replace(part, PATH_VALUES.get(part.strip("{}"), "X1"))
    return method, path, BODIES.get(route, {"json": {}} if method in ("POST", "PUT") else {})


CASES = [
    pytest.param(service, route, role, id=f"{service} {route} as {role or 'nobody'}")
    for service, rules in POLICY.items()
    for route in rules
    for role in [None, *Role]
]


@pytest.mark.parametrize(("service", "route", "role"), CASES)
async def test_each_route_answers_each_role_as_the_policy_says(apps, service, route, role):
    app, client = apps[service]
    method, path, extra = request_of(route)
    headers = auth_header(app, role, subject=f"access-{role}") if role else {}
    response = await client.request(method, path, headers=headers, **extra)
    expected = needs(POLICY[service][route])
    is_page = not path.startswith("/api/") and expected != PUBLIC
    if expected == PUBLIC:
        assert response.status_code not in (401, 403), response.text
    elif role is None and is_page:
        assert response.status_code == 303 and response.headers["location"].startswith("/signin?next="), response
    elif role is None:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif expected in GRANTS[role]:
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403, response.text
        assert f"this needs the role {expected.value}" in response.text


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("not-a-jwt", "Not enough segments"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "not valid"),  # alg "none"
    ],
)
async def test_a_malformed_token_is_401_saying_why(apps, token, why):
    _, client = apps["ledger-posting"]
    response = await client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and why in response.json()["detail"]
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_token_of_another_key_or_expired_or_for_another_audience_is_401(apps, tmp_path):
    from datetime import timedelta

    from kredit_shared.auth import ensure_local_key, mint_token, read_local_key

    app, client = apps["ledger-posting"]
    other_key = read_local_key(ensure_local_key(tmp_path / "other.key"))
    good_key = read_local_key(app.state.runtime.settings.auth_signing_key_file)
    for token, why in [
        (mint_token(other_key, "mallory", [ADM]), "Signature verification failed"),
        (mint_token(good_key, "ann", [V], ttl=timedelta(minutes=-5)), "Signature has expired"),
        (mint_token(good_key, "ann", [V], audience="someone-else"), "Audience doesn't match"),
        (mint_token(good_key, "ann", [V], issuer="someone-else"), "Invalid issuer"),
    ]:
        response = await client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and why in response.json()["detail"], response.text


async def test_a_token_without_a_known_role_reads_nothing(apps):
    from kredit_shared.auth import mint_token, read_local_key

    app, client = apps["invoicing"]
    key = read_local_key(app.state.runtime.settings.auth_signing_key_file)
    token = mint_token(key, "ann", [])
    response = await client.get("/api/v1/invoices/X1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and "has no role" in response.json()["detail"]
