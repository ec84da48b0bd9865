"""Hostile HTTP input gets a 4xx problem+json saying what is wrong, never a 500, on every service.

The apps run in-process without their lifespan: every request here is refused before a handler
would touch the broker or the database (the 500 test relies on the tables not existing)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from kredit_collections.app import create_app as collections_app
from kredit_collections.settings import CollectionsSettings
from kredit_invoicing.app import create_app as invoicing_app
from kredit_invoicing.settings import InvoicingSettings
from kredit_ledger_posting.app import create_app as ledger_app
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_settlement.app import create_app as settlement_app
from kredit_settlement.settings import SettlementSettings
from kredit_shared.testing import auth_header

APPS = {
    "collections": (collections_app, CollectionsSettings),
    "invoicing": (invoicing_app, InvoicingSettings),
    "settlement": (settlement_app, SettlementSettings),
    "ledger-posting": (ledger_app, LedgerPostingSettings),
}
TWENTY_NINE_DIGITS = "1" * 29 + ".00"
PREVIEW = {
    "customer_account": "4027",
    "payment_date": "2015-07-01",
    "marks": [{"invoice_id": "10020", "amount_to_settle": "297.00"}],
}


def client_of(service: str, tmp_path, **settings) -> httpx.AsyncClient:
    create_app, settings_class = APPS[service]
    app = create_app(settings_class(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", **settings))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
        headers=auth_header(
            app
        ),  # every role: these tests are about the input, tests/http/test_access_rules about roles
    )


@pytest.fixture
async def clients(tmp_path) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients = {service: client_of(service, tmp_path) for service in APPS}
    yield clients
    for client in clients.values():
        await client.aclose()


def assert_problem(response: httpx.Response, status: int, *detail_parts: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    for part in detail_parts:
        assert part in body["detail"], body["detail"]
    return body


def raw_json(text: str) -> dict:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


BAD_BODIES = [
    # NaN and Infinity are JSON literals Python's parser accepts; FastAPI's error handler then
    # failed to echo them back (500).
    ("collections", "POST", "/api/v1/write-offs", '{"customer_account": NaN}', "customer_account"),
    ("collections", "POST", "/api/v1/write-offs", '{"customer_account": "4027", "date": Infinity}', "date"),
    (
        "collections",
        "PUT",
        "/api/v1/parameters/write-off",
        '{"journal_name": "WriteOff", "reason_code": "BadDebt", "separate_sales_tax": -Infinity}',
        "separate_sales_tax",
    ),
    ("collections", "POST", "/api/v1/write-offs", '{"customer_account": "40/27"}', "customer_account"),
    (
        "collections",
        "POST",
        "/api/v1/write-offs",
        '{"customer_account": "4027", "reason_comment": "a\\u0000"}',
        "reason_comment",
    ),
    ("collections", "POST", "/api/v1/write-offs", "{}", "customer_account: Field required"),
    ("collections", "POST", "/api/v1/write-offs", "[1, 2", "body"),
    (
        "settlement",
        "POST",
        "/api/v1/settlement-preview",
        json.dumps(PREVIEW | {"marks": [{"invoice_id": "10020", "amount_to_settle": TWENTY_NINE_DIGITS}]}),
        "amount_to_settle",
    ),
    (
        "settlement",
        "POST",
        "/api/v1/settlement-preview",
        json.dumps(PREVIEW).replace('"297.00"', "NaN"),
        "amount_to_settle",
    ),
    (
        "settlement",
        "POST",
        "/api/v1/settlement-preview",
        json.dumps(PREVIEW | {"marks": [{"invoice_id": "10020", "amount_to_settle": 10**26}]}),
        "amount_to_settle",
    ),
    (
        "settlement",
        "POST",
        "/api/v1/settlement-preview",
        json.dumps(PREVIEW | {"marks": PREVIEW["marks"] * 1001}),
        "marks",
    ),
    ("settlement", "POST", "/api/v1/settlement-preview", '{"payment_date": "2015-07-01"}', "customer_account"),
    (
        "settlement",
        "PUT",
        "/api/v1/parameters",
        '{"calculate_cash_discounts_for_partial_payments": NaN}',
        "calculate_cash_discounts_for_partial_payments",
    ),
    # A date in the path too, not a Unix timestamp (schemathesis found "0" accepted as 1970-01-01).
    ("ledger-posting", "PUT", "/api/v1/exchange-rates/EUR/0", '{"rate": "1.10"}', "from_date"),
    ("ledger-posting", "PUT", "/api/v1/exchange-rates/EUR/2026-02-30", '{"rate": "1.10"}', "from_date"),
]


@pytest.mark.parametrize(("service", "method", "path", "body", "names"), BAD_BODIES)
async def test_a_bad_body_is_a_422_problem_naming_the_field(clients, service, method, path, body, names):
    response = await clients[service].request(method, path, **raw_json(body))
    problem = assert_problem(response, 422, names)
    assert problem["errors"] and all({"loc", "msg", "type"} <= set(e) for e in problem["errors"])


BAD_QUERIES = [
    ("invoicing", "/api/v1/invoices", "customer_account: Field required"),
    ("invoicing", "/api/v1/invoices?customer_account=a%00b", "customer_account"),
    ("invoicing", "/api/v1/invoices/" + "9" * 65, "invoice_id"),
    ("ledger-posting", "/api/v1/ledger-entries", "give an account or a voucher"),
    ("ledger-posting", "/api/v1/trial-balance?as_of=2015-02-30", "as_of"),
    ("ledger-posting", "/api/v1/trial-balance?as_of=0", "as_of"),  # a date, not a Unix timestamp
    ("collections", "/api/v1/aged-balances?as_of=1", "as_of"),
    ("collections", "/api/v1/customers/%20/transactions", "account"),
    ("settlement", "/api/v1/customers/4027%00/open-transactions", "account"),
]


@pytest.mark.parametrize(("service", "url", "names"), BAD_QUERIES)
async def test_a_bad_path_or_query_is_a_422_problem(clients, service, url, names):
    assert_problem(await clients[service].get(url), 422, names)


@pytest.mark.parametrize("service", list(APPS))
async def test_a_body_over_the_limit_is_refused_before_it_is_read(clients, service):
    # A 20 MB body used to be parsed whole and held collections for 29 s.
    started = time.perf_counter()
    response = await clients[service].post("/api/v1/write-offs", **raw_json('{"a": "' + "x" * 20_000_000 + '"}'))
    assert_problem(response, 413, "larger than 1048576 bytes")
    assert time.perf_counter() - started < 2


async def test_a_streamed_body_without_length_is_cut_off_at_the_limit(tmp_path):
    async def chunks():
        for _ in range(100):
            yield b"x" * 100_000

    async with client_of("settlement", tmp_path, http_max_body_bytes=1000) as client:
        response = await client.post(
            "/api/v1/settlement-preview", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_problem(response, 413, "larger than 1000 bytes")
        small = await client.post("/api/v1/settlement-preview", **raw_json("{}"))
        assert_problem(small, 422)


async def test_unknown_paths_and_methods_answer_problems(clients):
    assert_problem(await clients["ledger-posting"].get("/api/v1/nowhere"), 404, "Not Found")
    refused = await clients["settlement"].delete("/api/v1/parameters")
    assert_problem(refused, 405)
    assert refused.headers["allow"] == "GET, PUT"  # both routes of the path, not just the first


async def test_a_route_that_crashes_answers_500_without_the_exception_text(clients):
    # The tables were never created (no lifespan), so the query fails inside the route.
    response = await clients["invoicing"].get("/api/v1/invoices", params={"customer_account": "4027"})
    body = assert_problem(response, 500)
    assert "table" not in response.text.lower() and "sql" not in response.text.lower()
    assert body["detail"] == "internal error; the service log has the details"


@pytest.mark.parametrize("service", list(APPS))
async def test_every_error_answer_is_documented_as_a_problem(clients, service):
    schema = (await clients[service].get("/openapi.json")).json()
    assert "Problem" in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(responses), (method, path)
            if "{" in path:
                assert {"404", "422"} <= set(responses), (method, path)
            for code, response in responses.items():
                if int(code) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)
