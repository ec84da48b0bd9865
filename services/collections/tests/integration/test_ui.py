"""The collections workspace over HTTP (the browser tests in tests/browser drive the same pages in Chromium):
aged balances with search, sort, paging and totals; the CSV export equals the JSON to the cent; the
customer page; write-off refusals shown as readable text next to the form."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import httpx

from kredit_collections import tables
from kredit_collections.app import create_app
from kredit_collections.settings import CollectionsSettings

AS_OF = "2015-12-31"


async def customers(svc) -> None:
    await svc.post_transaction(
        "FTI-1",
        "Invoice",
        "1000.00",
        on="2015-06-25",
        due="2015-07-25",
        account="4027",
        invoice_id="10020",
        name="Fabrikam customer 4027",
    )
    await svc.post_transaction("ARP-1", "Payment", "-297.00", on="2015-07-01", account="4027")
    await svc.settle("S-1", "FTI-1", "ARP-1", "297.00", on="2015-07-01", account="4027")
    await svc.post_transaction(
        "CW-1",
        "Invoice",
        "450.00",
        on="2015-03-10",
        due="2015-04-09",
        account="US-004",
        invoice_id="CW-1001",
        name="Cave Wholesales",
    )
    await svc.post_transaction(
        "CW-2",
        "Invoice",
        "200.00",
        on="2015-12-20",
        due="2016-01-19",
        account="US-004",
        invoice_id="CW-1002",
        name="Cave Wholesales",
    )
    await svc.post_transaction(
        "BI-1",
        "Invoice",
        "75.10",
        on="2015-11-15",
        due="2015-12-15",
        account="US-010",
        invoice_id="BI-3001",
        name="Birch company",
    )
    await svc.until_balances("US-010", {"BI-1": "75.10"})
    await svc.until_balances("4027", {"FTI-1": "703.00", "ARP-1": "0.00"})


def cells(html: str, table_id: str) -> list[list[str]]:
    """The text of each body row of the table (tags stripped)."""
    body = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_aged_balances_page_searches_sorts_pages_and_totals(start_collections):
    async with start_collections() as svc:
        await customers(svc)
        page = await svc.client.get("/", params={"as_of": AS_OF})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        rows = cells(page.text, "aged")
        assert [r[0] for r in rows] == ["4027", "US-004", "US-010"]
        assert rows[1][:4] == ["US-004", "Cave Wholesales", "USD", "650.00"]
        assert "Total" in page.text and "1,428.10" in page.text  # 703.00 + 650.00 + 75.10
        assert "<svg" in page.text and "Open balance per aging bucket" in page.text

        found = cells((await svc.client.get("/", params={"as_of": AS_OF, "q": "cave"})).text, "aged")
        assert [r[0] for r in found] == ["US-004"]
        by_balance = cells(
            (await svc.client.get("/", params={"as_of": AS_OF, "sort": "balance", "desc": "true"})).text, "aged"
        )
        assert [r[3] for r in by_balance] == ["703.00", "650.00", "75.10"]
        second = await svc.client.get("/", params={"as_of": AS_OF, "size": 2, "page": 2})
        assert [r[0] for r in cells(second.text, "aged")] == ["US-010"] and "Page 2 of 2" in second.text
        nobody = await svc.client.get("/", params={"as_of": AS_OF, "q": "nobody"})
        assert "No customer with an open balance matches" in nobody.text


async def test_the_csv_export_is_the_page_and_equals_the_json_to_the_cent(start_collections):
    async with start_collections() as svc:
        await customers(svc)
        as_json = await svc.get("/aged-balances", as_of=AS_OF)
        exported = await svc.client.get("/api/v1/aged-balances.csv", params={"as_of": AS_OF})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        header, *rows = read_csv(exported.text)
        assert header == ["customer_account", "customer_name", "currency", "balance", *as_json["buckets"]]
        body, [total] = rows[:-1], rows[-1:]
        assert body == [
            [
                c["customer_account"],
                c["customer_name"],
                c["currency"],
                c["balance"],
                *(c["buckets"][b] for b in as_json["buckets"]),
            ]
            for c in as_json["customers"]
        ]
        assert total[:4] == [
            "Total",
            "3 customers",
            "USD",
            str(sum(Decimal(c["balance"]) for c in as_json["customers"])),
        ]

        # The same query as a searched, sorted, paged page: exactly its rows, and the totals of all that match.
        params = {"as_of": AS_OF, "q": "0", "sort": "balance", "desc": "true", "size": 1, "page": 2}
        page = cells((await svc.client.get("/", params=params)).text, "aged")
        shown = read_csv((await svc.client.get("/api/v1/aged-balances.csv", params=params)).text)
        assert [r[:4] for r in shown[1:]] == [page[0][:4], ["Total", "3 customers", "USD", "1428.10"]]


async def test_customer_page_shows_balances_transactions_and_refusals_as_text(start_collections):
    async with start_collections() as svc:
        await customers(svc)
        page = await svc.client.get("/customers/4027", params={"show": "all"})
        assert page.status_code == 200
        rows = cells(page.text, "transactions")
        assert [(r[1], r[2], r[6], r[7], r[8]) for r in rows] == [
            ("FTI-1", "Invoice", "1,000.00", "", "703.00"),
            ("ARP-1", "Payment", "", "297.00", "0.00"),
        ]
        assert [r[1] for r in cells((await svc.client.get("/customers/4027")).text, "transactions")] == ["FTI-1"]
        assert "BadDebt – Bad debt" in page.text

        # Two write-offs of the same invoice: the second is refused, and the page says why in words.
        first = await svc.client.post(
            "/customers/US-004/write-off", data={"scope": "invoice", "invoice_id": "CW-1001", "reason_code": "BadDebt"}
        )
        assert first.status_code == 303 and first.headers["location"].startswith("/write-offs/")
        again = await svc.client.post(
            "/customers/US-004/write-off", data={"scope": "invoice", "invoice_id": "CW-1001", "reason_code": "BadDebt"}
        )
        assert again.status_code == 409
        error = re.sub(r"<[^>]+>", "", re.search(r'id="write-off-error">(.*?)</p>', again.text, re.S).group(1))
        assert "already in a write-off" in error and "CW-1" in error and "{" not in error
        assert "(requested): post or cancel it first" in error  # the write-off that holds the invoice, linked
        nothing = await svc.client.post("/customers/US-004/write-off", data={"scope": "marked"})
        assert nothing.status_code == 422 and "tick at least one open transaction" in nothing.text
        listed = await svc.client.get("/write-offs")
        assert [r[1] for r in cells(listed.text, "write-offs")] == ["US-004"]
        assert cells(listed.text, "write-offs")[0][3] == "450.00"
        missing = await svc.client.get("/customers/NOPE")
        assert missing.status_code == 404 and "has no transactions" in missing.text


async def test_ten_thousand_customers_page_search_sort_and_total(start_collections):
    """The page's answers at a realistic size (its speed is a benchmark figure, not a timed test)."""
    async with start_collections() as svc:
        async with svc.runtime.unit_of_work() as uow:
            uow.session.add_all(
                tables.CustomerTransactionRow(
                    voucher=f"V-{n}",
                    transaction_type="Invoice",
                    customer_account=f"C{n:05d}",
                    customer_name=f"Customer {n}",
                    transaction_date=dt.date(2015, 1, 1),
                    invoice_id=f"I-{n}",
                    amount=Decimal("10.01"),
                    currency="USD",
                    due_date=dt.date(2015, 1, 31),
                    sales_tax_amount=Decimal(0),
                )
                for n in range(10_000)
            )
        found = await svc.client.get("/", params={"as_of": AS_OF, "q": "C09999"})
        assert found.status_code == 200 and [r[0] for r in cells(found.text, "aged")] == ["C09999"]
        page = await svc.client.get("/", params={"as_of": AS_OF, "sort": "name", "page": 7})
        assert page.status_code == 200
        by_name = sorted(range(10_000), key=lambda n: f"customer {n}")  # "Customer 10" < "Customer 100" < ...
        assert [r[0] for r in cells(page.text, "aged")] == [f"C{n:05d}" for n in by_name[300:350]]
        assert "100,100.00" in page.text  # 10,000 x 10.01 in the totals row


async def test_cors_preflight_answers_only_configured_origins(tmp_path):
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}

    async def options(origin: str, **settings) -> httpx.Response:
        # A preflight is answered before any route runs: no lifespan (broker, database) needed.
        app = create_app(CollectionsSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", **settings))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            return await client.options("/api/v1/write-offs", headers=preflight | {"origin": origin})

    configured = {"cors_origins": "https://ar.example.test, http://localhost:5173"}
    allowed = await options("https://ar.example.test", **configured)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ar.example.test"
    other = await options("https://evil.test", **configured)
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    default = await options("https://ar.example.test")  # none by default
    assert default.status_code == 405 and "access-control-allow-origin" not in default.headers


async def test_the_pages_need_a_signed_in_user_and_their_forms_the_csrf_token(start_collections):
    """Issue 14: a page without a session goes to the sign-in page and back; the local run's one-click
    sign-in sets an HttpOnly, SameSite=Strict cookie; a form sent with that cookie needs its CSRF token."""
    from kredit_shared.auth import SESSION_COOKIE, Role, csrf_token
    from kredit_shared.testing import eventually, token_header

    async with start_collections() as svc:
        await customers(svc)
        app = svc.client._transport.app  # the same app, as a browser would see it
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as browser:
            first = await browser.get("/customers/US-004")
            assert first.status_code == 303 and first.headers["location"] == "/signin?next=%2Fcustomers%2FUS-004"
            sign_in = await browser.get(first.headers["location"])
            assert 'id="as-collector"' in sign_in.text and 'value="/customers/US-004"' in sign_in.text

            foreign = await browser.post(
                "/signin", data={"local_role": "collector"}, headers={"Origin": "https://evil.example"}
            )
            assert foreign.status_code == 403 and SESSION_COOKIE not in foreign.cookies
            forged = await browser.post("/signin", data={"token": "not.a.token", "next": "/"})
            assert forged.status_code == 401 and "not valid" in forged.text
            signed = await browser.post("/signin", data={"local_role": "collector", "next": "/customers/US-004"})
            assert signed.status_code == 303 and signed.headers["location"] == "/customers/US-004"
            cookie = signed.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
            token = browser.cookies[SESSION_COOKIE]

            page = await browser.get("/customers/US-004")
            assert page.status_code == 200 and ">local-collector<" in page.text
            assert f'name="csrf_token" value="{csrf_token(token)}"' in page.text
            without = await browser.post("/customers/US-004/write-off", data={"scope": "all"})
            assert without.status_code == 403 and "CSRF token" in without.text
            sent = await browser.post(
                "/customers/US-004/write-off", data={"scope": "all", "csrf_token": csrf_token(token)}
            )
            assert sent.status_code == 303 and sent.headers["location"].startswith("/write-offs/")
            write_off = (
                await svc.client.get(sent.headers["location"].replace("/write-offs/", "/api/v1/write-offs/"))
            ).json()
            assert write_off["requested_by"] == "local-collector"

            post = await browser.post(f"{sent.headers['location']}/post", data={"csrf_token": csrf_token(token)})
            assert post.status_code == 403 and "this needs the role accountant" in post.text

            signed_out = await browser.post("/signout")
            assert signed_out.status_code == 303 and SESSION_COOKIE not in browser.cookies

        async def trail() -> list[str]:
            entries = (await svc.client.get("/api/v1/audit", headers=token_header(Role.admin))).json()["entries"]
            actions = [e["action"] for e in entries if e["subject"] == "local-collector"]
            assert len(actions) == 4, actions
            return actions

        refused_post, requested, refused_csrf, signed_in = await eventually(trail)
        assert signed_in == "signed in to the workspace" and requested == "write-off requested"
        assert refused_csrf.startswith("refused: the form's CSRF token") and "accountant" in refused_post
