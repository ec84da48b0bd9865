"""Issue 15: the collections workspace in headless Chromium against the whole stack as real processes,
fed with the source scenario (scripts/demo.py). A viewer finds customer 4027 and its transactions, a
collector writes off a demo customer's whole balance and an accountant reviews and posts the journal,
a collector cancels another request. Issue 14: signing in (one click on the local run, or a pasted
token), four-eyes in the pages, and a role's limits shown as a page."""

from __future__ import annotations

import re

import pytest
from tests.browser.conftest import shoot, sign_in, sign_out, wait_for

from kredit_shared.auth import Role
from kredit_shared.testing import token_header

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed").expect


def column(page, table: str, index: int) -> list[str]:
    return [c.strip() for c in page.locator(f"#{table} tbody tr td:nth-child({index})").all_inner_texts()]


def reload_until(page, check, what: str, timeout: float = 30):
    """Messages are on their way between services: reload the page until it shows their effect."""

    def shown():
        page.wait_for_load_state()  # a navigation still under way (a form just sent) is not reloaded over
        page.reload()
        return check()

    return wait_for(shown, timeout=timeout, what=what)


def test_find_customer_4027_by_search_and_see_the_source_tables_balances(running_stack, page, tmp_path):
    page.goto(running_stack.url("/?as_of=2015-07-05"))
    expect(page).to_have_url(re.compile(r"/signin\?next=%2F%3Fas_of%3D2015-07-05$"))  # not signed in yet
    shoot(page, tmp_path, "sign-in")
    page.click("#as-viewer")
    expect(page).to_have_url(re.compile(r"/\?as_of=2015-07-05$"))  # back where the person was going
    expect(page.locator("#signed-in-as")).to_have_text("local-viewer")
    page.fill("input[name=q]", "4027")
    page.press("input[name=q]", "Enter")
    # Between the two payments: 1,000.00 - 297.00 paid - 3.00 cash discount.
    reload_until(
        page,
        lambda: column(page, "aged", 1) == ["4027"] and column(page, "aged", 4) == ["700.00"],
        "customer 4027 with 700.00 open on 2015-07-05",
    )
    expect(page.locator("#aged tfoot")).to_contain_text("700.00")
    expect(page.locator("svg[role=img]")).to_be_visible()
    shoot(page, tmp_path, "aged-balances-4027")

    page.click("#aged >> text=4027")
    expect(page).to_have_url(re.compile(r"/customers/4027$"))
    page.check("input[name=show][value=all]")
    expect(page).to_have_url(re.compile(r"show=all"))
    reload_until(page, lambda: len(column(page, "transactions", 2)) == 4, "the four transactions of 4027")
    rows = list(
        zip(
            column(page, "transactions", 2),
            column(page, "transactions", 3),
            column(page, "transactions", 7),
            column(page, "transactions", 8),
            column(page, "transactions", 9),
        )
    )
    assert rows == [  # the source table (spec 003)
        ("FTI-10020", "Invoice", "1,000.00", "", "0.00"),
        ("ARP-10020", "Payment", "", "297.00", "0.00"),
        ("DISC-10020", "CashDiscount", "", "3.00", "0.00"),
        ("ARP-10021", "Payment", "", "700.00", "0.00"),
    ]
    expect(page.locator("#summary")).to_contain_text("0.00")
    shoot(page, tmp_path, "customer-4027")


def test_write_off_a_whole_balance_review_and_post_the_journal_and_the_customer_leaves(running_stack, page, tmp_path):
    sign_in(page, running_stack, "collector")
    page.goto(running_stack.url("/?as_of=2015-12-31"))
    page.fill("input[name=q]", "cave")
    page.press("input[name=q]", "Enter")
    reload_until(page, lambda: column(page, "aged", 1) == ["US-004"], "Cave Wholesales in the aged balances")
    page.click("#aged >> text=US-004")

    expect(page.locator("#write-off-amount")).to_have_text("650.00")  # 450.00 + 180.00 + 20.00 tax
    page.check("input[name=scope][value=all]")
    page.select_option("select[name=reason_code]", "BadDebt")
    page.fill("input[name=reason_comment]", "Customer went out of business")
    page.click("#write-off-form button[type=submit]")

    expect(page).to_have_url(re.compile(r"/write-offs/[0-9a-f-]+$"))
    expect(page.locator("#status")).to_have_text("journal-created")  # the page reloads itself until then
    expect(page.locator("#journal-status")).to_have_text("open")
    lines = page.locator("#lines tbody tr")
    expect(lines).to_have_count(len(column(page, "lines", 1)))
    assert column(page, "lines", 2).count("Customer") == 1, "one line reverses the customer balance (seed 000)"
    assert set(column(page, "lines", 8)) == {"BadDebt"}
    credits = [c for c in column(page, "lines", 5) if c != "0.00"]
    assert credits == ["650.00"]
    expect(page.locator("#lines tfoot")).to_contain_text("650.00")
    expect(page.locator("#requested-by")).to_have_text("local-collector")
    expect(page.locator("#post")).to_have_count(0)  # a collector requests; an accountant posts
    shoot(page, tmp_path, "write-off-journal-review")

    write_off_url = page.url
    sign_out(page)
    sign_in(page, running_stack, "accountant")
    page.goto(write_off_url)
    page.click("#post")
    expect(page.locator("#status")).to_have_text("posted")
    expect(page.locator("#journal-status")).to_have_text("posted")
    expect(page.locator("#post")).to_have_count(0)
    expect(page.locator("#posted-by")).to_have_text("local-accountant")
    shoot(page, tmp_path, "write-off-posted")

    page.click("text=US-004")
    reload_until(
        page,
        lambda: page.locator("#balance").count() == 1 and page.inner_text("#balance") == "0.00",
        "Cave Wholesales' balance at 0.00 once settlement settled the write-off",
    )
    page.check("input[name=show][value=all]")
    expect(page).to_have_url(re.compile(r"show=all"))
    assert set(column(page, "transactions", 9)) == {"0.00"}
    assert column(page, "transactions", 3).count("WriteOff") == 1
    expect(page.locator("#customer-write-offs")).to_contain_text("posted")

    page.goto(running_stack.url("/?as_of=2100-01-01&q=cave"))
    expect(page.locator("#aged tbody")).to_contain_text("No customer with an open balance matches")
    shoot(page, tmp_path, "aged-balances-after-write-off")


def test_a_refused_write_off_reads_as_text_and_a_cancelled_request_frees_its_invoice(running_stack, page, tmp_path):
    sign_in(page, running_stack, "collector")
    page.goto(running_stack.url("/customers/US-010"))
    reload_until(page, lambda: "BI-3001" in page.inner_text("#transactions"), "Birch company's invoice")
    page.check("input[name=scope][value=invoice]")
    page.select_option("select[name=invoice_id]", "BI-3001")
    expect(page.locator("#write-off-amount")).to_have_text("75.00")
    page.click("#write-off-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("journal-created")
    write_off_url = page.url

    # The same invoice again (as the whole balance): refused, and said in words next to the form.
    page.click("h1 >> text=US-010")
    expect(page.locator("#transactions tr[data-voucher=FTI-BI-3001] .badge")).to_have_text("in write-off")
    page.check("input[name=scope][value=all]")
    page.click("#write-off-form button[type=submit]")
    error = page.locator("#write-off-error")
    expect(error).to_contain_text("already in a write-off that is not yet posted and settled: FTI-BI-3001")
    expect(error).to_contain_text("Write-off WOJ-")  # a link to the write-off that holds the invoice
    assert "{" not in error.inner_text() and "Traceback" not in page.content()
    shoot(page, tmp_path, "write-off-refused")

    page.goto(write_off_url)
    page.fill("input[name=reason]", "wrong customer")
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#journal-status")).to_have_text("voided")
    expect(page.locator("#reason")).to_have_text("wrong customer")
    shoot(page, tmp_path, "write-off-cancelled")

    page.click("h1 >> text=US-010")
    row = page.locator("#transactions tr[data-voucher=FTI-BI-3001]")
    expect(row.locator(".badge")).to_have_count(0)
    expect(row.locator("input[name=voucher]")).to_be_enabled()  # free to be marked and written off again
    expect(page.locator("#write-off-amount")).to_have_text("75.00")
    page.goto(running_stack.url("/write-offs?status=cancelled"))
    expect(page.locator("#write-offs tbody")).to_contain_text("US-010")


def test_four_eyes_the_accountant_who_requested_a_write_off_sees_why_there_is_no_post(running_stack, page, tmp_path):
    sign_in(page, running_stack, "accountant")
    page.goto(running_stack.url("/customers/US-002"))
    reload_until(page, lambda: "CIV-000667" in page.inner_text("#transactions"), "Contoso Los Angeles' invoice")
    page.check("input[name=scope][value=all]")
    page.click("#write-off-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("journal-created")
    expect(page.locator("#requested-by")).to_have_text("local-accountant")
    expect(page.locator("#post")).to_have_count(0)
    expect(page.locator("#four-eyes")).to_contain_text("another accountant posts its journal")
    shoot(page, tmp_path, "four-eyes")


def test_a_pasted_token_signs_in_and_a_viewer_sees_the_limits_of_the_role_as_a_page(running_stack, page, tmp_path):
    page.goto(running_stack.url("/signin"))
    token = token_header(Role.viewer, subject="vera")["Authorization"].removeprefix("Bearer ")
    page.fill("#token", token)
    page.click("#sign-in")
    expect(page.locator("#signed-in-as")).to_have_text("vera")
    page.goto(running_stack.url("/customers/4027"))
    # The dialog is shown, its button disabled with the reason; the server refuses the form all the same.
    button = page.locator("#write-off-form button[type=submit]")
    expect(button).to_be_disabled()
    expect(page.locator("#write-off-role")).to_have_text(
        "Writing off needs the role collector (or one that includes it); vera has viewer."
    )
    button.evaluate("b => { b.disabled = false; }")
    button.click()
    expect(page.locator("main")).to_contain_text("this needs the role collector")
    shoot(page, tmp_path, "viewer-refused")

    page.goto(running_stack.url("/signin"))
    page.fill("#token", token[:-4] + "AAAA")  # a forged signature
    page.click("#sign-in")
    expect(page.locator("#signin-error")).to_contain_text("Signature verification failed")
