"""The ledger-posting service through the real broker and database."""

from __future__ import annotations

import uuid

import pytest

from kredit_ledger_posting.app import create_app
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_shared.contracts import GL_GENERAL_JOURNALS, GL_JOURNAL_EVENTS, GL_JOURNAL_LINES, dead_letter_topic
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, serve


def voucher(number: str, *lines: tuple[str, str, str], currency: str = "USD", **changes) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "voucher": number,
        "posting_date": "2015-06-25",
        "currency": currency,
        "source": "test",
        "lines": [{"account": a, "debit": d, "credit": c} for a, d, c in lines],
    } | changes


INVOICE = (("130100", "1000.00", "0"), ("401100", "0", "1000.00"))


def write_off_request(request_id: str, amount: str = "700.00", journal_name: str = "WriteOff", **line_changes) -> dict:
    common = {
        "currency": "USD",
        "transaction_date": "2015-08-31",
        "reason_code": "BadDebt",
        "reason_comment": "Bad debt",
    }
    return {
        "message_id": str(uuid.uuid4()),
        "request_id": request_id,
        "journal_name": journal_name,
        "description": "Write off transactions for 4027",
        "lines": [
            common
            | {
                "account_type": "Customer",
                "account": "4027",
                "credit": amount,
                "text": "Write-off FTI-10020",
                "settles": [{"voucher": "FTI-10020", "invoice_id": "10020", "amount": amount}],
            },
            common
            | {"account_type": "Ledger", "account": "618900", "debit": amount, "text": "Write-off FTI-10020"}
            | line_changes,
        ],
    }


@pytest.fixture
def settings(kafka, tmp_path) -> LedgerPostingSettings:
    return LedgerPostingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", **isolated_kafka(kafka))


async def trial_balance(client, as_of: str = "2030-01-01") -> dict:
    response = await client.get("/api/v1/trial-balance", params={"as_of": as_of})
    assert response.status_code == 200
    return response.json()


def balances(tb: dict) -> dict[str, str]:
    return {row["account"]: row["balance"] for row in tb["accounts"]}


async def test_a_balanced_voucher_posts_once_however_often_it_arrives(kafka, database_url):
    settings = LedgerPostingSettings(database_url=database_url, **isolated_kafka(kafka))
    message = voucher("FTI-10020", *INVOICE)
    async with serve(create_app(settings)) as client:
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), message)
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), message)  # redelivered
        again = message | {"message_id": str(uuid.uuid4())}  # re-sent by its producer: same content
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), again)
        await publish(
            kafka.bootstrap_servers,
            settings.topic(GL_JOURNAL_LINES),
            voucher("ARP-10020", ("110110", "297.00", "0"), ("130100", "0", "297.00")),
        )

        async def both_posted():
            tb = await trial_balance(client)
            return tb if "110110" in balances(tb) else None

        tb = await eventually(both_posted)
        assert balances(tb) == {"110110": "297.00", "130100": "703.00", "401100": "-1000.00"}
        assert tb["total_debit"] == tb["total_credit"] == "1297.00"
        entries = (await client.get("/api/v1/ledger-entries", params={"voucher": "FTI-10020"})).json()["entries"]
        assert [(e["account"], e["debit"], e["credit"]) for e in entries] == [
            ("130100", "1000.00", "0.00"),
            ("401100", "0.00", "1000.00"),
        ]
        assert (await trial_balance(client, as_of="2015-06-24"))["accounts"] == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            voucher("V-UNBAL", ("130100", "100.00", "0"), ("401100", "0", "90.00")),
            "voucher V-UNBAL does not balance: debits total 100.00, credits total 90.00",
        ),
        (voucher("V-ACCT", ("130100", "100.00", "0"), ("999999", "0", "100.00")), "unknown main account '999999'"),
        (voucher("V-EUR", *INVOICE, currency="EUR"), "currency EUR is not the accounting currency USD"),
        (voucher("V-NEG", ("130100", "-100.00", "0"), ("401100", "-100.00", "0")), "negative amount"),
        (voucher("V-ZERO", ("130100", "0", "0"), ("401100", "0", "0")), "no line with a non-zero amount"),
        (
            voucher("FTI-10020", ("130100", "999.00", "0"), ("401100", "0", "999.00")),
            "voucher FTI-10020 is already posted with different content",
        ),
    ],
    ids=["unbalanced", "unknown-account", "foreign-currency", "negative", "zero-only", "conflicting-duplicate"],
)
async def test_a_voucher_that_must_not_post_is_dead_lettered_with_its_reason_and_posts_nothing(
    kafka, settings, bad, reason
):
    dlq = settings.topic(dead_letter_topic(GL_JOURNAL_LINES))
    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, [dlq]) as probe:
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), voucher("FTI-10020", *INVOICE))
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), bad)
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), voucher("NEXT-1", *INVOICE))
        [dead] = await probe.wait_for(lambda r: True)
        assert reason in dead.headers["x-dlq-reason"]
        assert dead.json()["voucher"] == bad["voucher"]

        async def next_posted():
            return (await trial_balance(client))["total_debit"] == "2000.00"

        await eventually(next_posted)
        assert balances(await trial_balance(client)) == {"130100": "2000.00", "401100": "-2000.00"}


async def test_a_write_off_journal_is_kept_open_numbered_posted_once_and_moves_the_balance(kafka, database_url):
    settings = LedgerPostingSettings(database_url=database_url, **isolated_kafka(kafka))
    events = settings.topic(GL_JOURNAL_EVENTS)
    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, [events]) as probe:
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), voucher("FTI-10020", *INVOICE))
        first = write_off_request("wo-1")
        for request in (
            first,
            first,
            write_off_request("wo-2", amount="300.00"),
            write_off_request("gen-1", journal_name="GenJrn"),
        ):
            await publish(
                kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), request, key=request["request_id"]
            )
        created = await probe.wait_for(lambda r: r.json()["event_type"] == "JournalCreated", count=3)
        batch_of = {e.json()["request_id"]: e.json()["batch_number"] for e in created}
        # Requests are keyed by request id, so they may be processed in either order.
        assert sorted(batch_of.values()) == ["GNJ-000001", "WOJ-000001", "WOJ-000002"]
        assert batch_of["gen-1"] == "GNJ-000001"
        open_write_offs = (
            await client.get("/api/v1/journals", params={"journal_name": "WriteOff", "status": "open"})
        ).json()
        assert {j["batch_number"] for j in open_write_offs["journals"]} == {"WOJ-000001", "WOJ-000002"}
        batch = batch_of["wo-1"]
        journal = (await client.get(f"/api/v1/journals/{batch}")).json()
        assert [
            (l["account_type"], l["account"], l["debit"], l["credit"], l["reason_code"], l["reason_comment"])
            for l in journal["lines"]
        ] == [
            ("Customer", "4027", "0.00", "700.00", "BadDebt", "Bad debt"),
            ("Ledger", "618900", "700.00", "0.00", "BadDebt", "Bad debt"),
        ]
        assert journal["lines"][0]["settles"] == [{"voucher": "FTI-10020", "invoice_id": "10020", "amount": "700.00"}]
        assert balances(await trial_balance(client)) == {"130100": "1000.00", "401100": "-1000.00"}, (
            "open journals post nothing"
        )

        posted = await client.post(f"/api/v1/journals/{batch}/post")
        assert posted.status_code == 200 and posted.json()["status"] == "posted"
        again = await client.post(f"/api/v1/journals/{batch}/post")
        assert again.status_code == 409 and "already posted" in again.json()["detail"]
        assert (await client.post("/api/v1/journals/WOJ-999999/post")).status_code == 404

        [event] = await probe.wait_for(lambda r: r.json()["event_type"] == "JournalPosted")
        assert event.key == batch
        assert event.json()["lines"][0]["voucher"] == journal["lines"][0]["voucher"]
        assert journal["lines"][0]["voucher"] in {"WOV-000001", "WOV-000002"}
        tb = await trial_balance(client)
        assert balances(tb) == {"130100": "300.00", "401100": "-1000.00", "618900": "700.00"}
        assert tb["total_debit"] == tb["total_credit"] == "1700.00"


async def test_an_unbalanced_journal_cannot_post_and_a_bad_request_is_rejected(kafka, settings):
    events = settings.topic(GL_JOURNAL_EVENTS)
    dlq = settings.topic(dead_letter_topic(GL_GENERAL_JOURNALS))
    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, [events, dlq]) as probe:
        unbalanced = write_off_request("wo-unbal", debit="699.00")
        unknown_name = write_off_request("wo-name", journal_name="NoSuchJournal")
        unknown_account = write_off_request("wo-acct", account="999999")
        for request in (unbalanced, unknown_name, unknown_account):
            await publish(
                kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), request, key=request["request_id"]
            )
        await probe.wait_for(lambda r: r.topic == events, count=3)
        by_request = {r.json()["request_id"]: r.json() for r in probe.records if r.topic == events}
        assert by_request["wo-name"]["event_type"] == "JournalRejected"
        assert "unknown journal name 'NoSuchJournal'" in by_request["wo-name"]["reason"]
        assert "unknown main account '999999'" in by_request["wo-acct"]["reason"]
        dead = await probe.wait_for(lambda r: r.topic == dlq, count=2)
        assert {d.json()["request_id"] for d in dead} == {"wo-name", "wo-acct"}

        batch = by_request["wo-unbal"]["batch_number"]
        response = await client.post(f"/api/v1/journals/{batch}/post")
        assert response.status_code == 409
        assert "does not balance: debits total 699.00, credits total 700.00" in response.json()["detail"]
        assert (await trial_balance(client))["accounts"] == []


def cancel_request(request_id: str, reason: str = "requested by mistake") -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "message_type": "GeneralJournalCancelRequested",
        "request_id": request_id,
        "journal_name": "WriteOff",
        "reason": reason,
    }


async def test_a_cancelled_journal_is_voided_once_kept_and_never_posts_and_a_posted_one_refuses(kafka, database_url):
    settings = LedgerPostingSettings(database_url=database_url, **isolated_kafka(kafka))
    events = settings.topic(GL_JOURNAL_EVENTS)
    dlq = settings.topic(dead_letter_topic(GL_GENERAL_JOURNALS))

    async def send(*messages: dict) -> None:
        for message in messages:
            await publish(
                kafka.bootstrap_servers,
                settings.topic(GL_GENERAL_JOURNALS),
                message,
                key=message.get("request_id", "k"),
            )

    def of(kind: str, request_id: str):
        return lambda r: r.topic == events and r.json()["event_type"] == kind and r.json()["request_id"] == request_id

    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, [events, dlq]) as probe:
        cancel = cancel_request("wo-1")
        # wo-1: requested, cancelled, the cancel redelivered and sent again; wo-3: the cancel overtakes the request.
        await send(
            write_off_request("wo-1"),
            cancel,
            cancel,
            cancel_request("wo-1"),
            write_off_request("wo-2"),
            cancel_request("wo-3", reason="overtaken"),
            write_off_request("wo-3"),
            {"message_id": str(uuid.uuid4()), "message_type": "GeneralJournalCancelRequested"},
        )
        [voided] = await probe.wait_for(of("JournalVoided", "wo-1"))
        [created] = await probe.wait_for(of("JournalCreated", "wo-1"))
        batch = created.json()["batch_number"]
        assert (voided.key, voided.json()["batch_number"], voided.json()["journal_name"], voided.json()["reason"]) == (
            batch,
            batch,
            "WriteOff",
            "requested by mistake",
        )
        [late] = await probe.wait_for(of("JournalVoided", "wo-3"))
        assert late.json()["reason"] == "overtaken"
        [dead] = await probe.wait_for(lambda r: r.topic == dlq)
        assert "request_id" in dead.headers["x-dlq-reason"]

        async def listed(status: str) -> set[str]:
            body = (await client.get("/api/v1/journals", params={"status": status})).json()
            return {j["request_id"] for j in body["journals"]}

        assert await listed("voided") == {"wo-1", "wo-3"}
        assert await listed("open") == {"wo-2"}
        journal = (await client.get(f"/api/v1/journals/{batch}")).json()
        assert journal["status"] == "voided" and len(journal["lines"]) == 2, "kept for audit"
        refused = await client.post(f"/api/v1/journals/{batch}/post")
        assert refused.status_code == 409 and "voided" in refused.json()["detail"]
        assert (await trial_balance(client))["accounts"] == [], "a voided journal posts nothing"

        # Posted first, cancelled after: the cancel is refused, the journal stays posted.
        [open_one] = await probe.wait_for(of("JournalCreated", "wo-2"))
        assert (await client.post(f"/api/v1/journals/{open_one.json()['batch_number']}/post")).status_code == 200
        await send(cancel_request("wo-2"))
        [no] = await probe.wait_for(of("JournalCancelRefused", "wo-2"))
        assert no.key == open_one.json()["batch_number"]
        assert "already posted" in no.json()["reason"] and "cannot be cancelled" in no.json()["reason"]
        assert await listed("posted") == {"wo-2"}
        assert balances(await trial_balance(client)) == {"130100": "-700.00", "618900": "700.00"}

        await probe.settle(0.5)
        voids = [
            r.json()["request_id"]
            for r in probe.records
            if r.topic == events and r.json()["event_type"] == "JournalVoided"
        ]
        assert sorted(voids) == ["wo-1", "wo-3"], "each journal is voided once, however often it is cancelled"


async def test_four_eyes_the_requester_may_not_post_the_write_off_another_accountant_does(kafka, settings):
    """The setup's write_off.four_eyes_write_off (on in the demo company): 403 with the reason for the
    requester; another accountant posts; JournalPosted, the journal and the audit trail name both."""
    from kredit_shared.auth import Role
    from kredit_shared.testing import auth_header

    events = settings.topic(GL_JOURNAL_EVENTS)
    app = create_app(settings)
    async with serve(app) as client, TopicProbe(kafka.bootstrap_servers, [events]) as probe:
        request = write_off_request("wo-4e") | {"requested_by": "ann"}
        await publish(kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), request, key="wo-4e")
        [created] = await probe.wait_for(lambda r: r.json()["event_type"] == "JournalCreated")
        batch = created.json()["batch_number"]

        ann, bob = (auth_header(app, Role.accountant, subject=who) for who in ("ann", "bob"))
        refused = await client.post(f"/api/v1/journals/{batch}/post", headers=ann)
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"] == (
            f"ann requested journal {batch} and may not also post it (four-eyes: the setup's "
            "write_off.four_eyes_write_off); another accountant must post it"
        )
        assert (await client.get(f"/api/v1/journals/{batch}")).json()["status"] == "open"

        posted = await client.post(f"/api/v1/journals/{batch}/post", headers=bob)
        assert posted.status_code == 200, posted.text
        assert (posted.json()["requested_by"], posted.json()["posted_by"]) == ("ann", "bob")
        journal = (await client.get(f"/api/v1/journals/{batch}")).json()
        assert (journal["status"], journal["requested_by"], journal["posted_by"]) == ("posted", "ann", "bob")
        [event] = await probe.wait_for(lambda r: r.json()["event_type"] == "JournalPosted")
        assert (event.json()["requested_by"], event.json()["posted_by"]) == ("ann", "bob")

        async def trail() -> list[dict]:
            entries = (await client.get("/api/v1/audit", headers=auth_header(app, Role.admin))).json()["entries"]
            assert len(entries) == 2, entries
            return entries

        post, refusal = await eventually(trail)
        assert (refusal["subject"], refusal["status"], refusal["path"]) == (
            "ann",
            403,
            f"/api/v1/journals/{batch}/post",
        )
        assert refusal["action"].startswith("refused: ann requested journal")
        assert (post["subject"], post["action"], post["detail"]["requested_by"]) == ("bob", "journal posted", "ann")


async def test_without_four_eyes_the_requester_may_post_it(kafka, tmp_path):
    from kredit_shared.auth import Role
    from kredit_shared.company_setup import DEMO_SETUP_FILE
    from kredit_shared.testing import auth_header

    setup = tmp_path / "company.yaml"
    setup.write_text(DEMO_SETUP_FILE.read_text().replace("four_eyes_write_off: true", "four_eyes_write_off: false"))
    settings = LedgerPostingSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", company_setup_file=setup, **isolated_kafka(kafka)
    )
    events = settings.topic(GL_JOURNAL_EVENTS)
    app = create_app(settings)
    async with serve(app) as client, TopicProbe(kafka.bootstrap_servers, [events]) as probe:
        request = write_off_request("wo-1e") | {"requested_by": "ann"}
        await publish(kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), request, key="wo-1e")
        [created] = await probe.wait_for(lambda r: r.json()["event_type"] == "JournalCreated")
        ann = auth_header(app, Role.accountant, subject="ann")
        posted = await client.post(f"/api/v1/journals/{created.json()['batch_number']}/post", headers=ann)
        assert posted.status_code == 200 and posted.json()["posted_by"] == "ann"


# --- foreign currencies (docs/currencies.md) --------------------------------------------------


async def test_foreign_currency_lines_keep_their_currency_and_a_eur_journal_posts_at_its_rate(kafka, database_url):
    settings = LedgerPostingSettings(database_url=database_url, **isolated_kafka(kafka))
    events = settings.topic(GL_JOURNAL_EVENTS)
    dlq = settings.topic(dead_letter_topic(GL_GENERAL_JOURNALS))
    eur = {"currency": "EUR", "exchange_rate": "1.10"}
    async with serve(create_app(settings)) as client, TopicProbe(kafka.bootstrap_servers, [events, dlq]) as probe:
        invoice = voucher("FTI-E1", *INVOICE) | {
            "lines": [
                {
                    "account": "130100",
                    "debit": "1100.00",
                    "transaction_currency": "EUR",
                    "transaction_currency_amount": "1000.00",
                },
                {
                    "account": "401100",
                    "credit": "1100.00",
                    "transaction_currency": "EUR",
                    "transaction_currency_amount": "-1000.00",
                },
            ]
        }
        await publish(kafka.bootstrap_servers, settings.topic(GL_JOURNAL_LINES), invoice)
        request = write_off_request("wo-eur", **eur)
        request["lines"][0] |= eur
        await publish(kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), request, key="wo-eur")
        no_rate = write_off_request("wo-norate", currency="EUR")
        no_rate["lines"][0]["currency"] = "EUR"
        await publish(kafka.bootstrap_servers, settings.topic(GL_GENERAL_JOURNALS), no_rate, key="wo-norate")

        await probe.wait_for(lambda r: r.topic == events, count=2)
        by_request = {r.json()["request_id"]: r.json() for r in probe.records if r.topic == events}
        assert by_request["wo-norate"] == {
            "event_type": "JournalRejected",
            "request_id": "wo-norate",
            "journal_name": "WriteOff",
            "message_id": by_request["wo-norate"]["message_id"],
            "reason": "journal request wo-norate line 1: currency EUR is not the accounting currency USD; the line "
            "is in EUR and states no exchange_rate, and there is no EUR rate for 2015-08-31 (send exchange_rate, "
            "or set a rate: docs/currencies.md)",
        }
        [dead] = await probe.wait_for(lambda r: r.topic == dlq)
        assert dead.json()["request_id"] == "wo-norate"

        batch = by_request["wo-eur"]["batch_number"]
        journal = (await client.get(f"/api/v1/journals/{batch}")).json()
        assert (journal["total_debit"], journal["total_credit"]) == ("770.00", "770.00")
        assert [
            (l["currency"], l["debit"], l["credit"], l["exchange_rate"], l["accounting_debit"], l["accounting_credit"])
            for l in journal["lines"]
        ] == [("EUR", "0.00", "700.00", "1.10", "0.00", "770.00"), ("EUR", "700.00", "0.00", "1.10", "770.00", "0.00")]
        posted = await client.post(f"/api/v1/journals/{batch}/post")
        assert posted.status_code == 200, posted.text

        [event] = await probe.wait_for(lambda r: r.json().get("event_type") == "JournalPosted")
        assert [(l["currency"], l["debit"], l["credit"], l["exchange_rate"]) for l in event.json()["lines"]] == [
            ("EUR", "0.00", "700.00", "1.10"),
            ("EUR", "700.00", "0.00", "1.10"),
        ]
        voucher_of_journal = event.json()["lines"][0]["voucher"]
        for number, expected in (
            ("FTI-E1", [("130100", "1100.00", "0.00", "1000.00"), ("401100", "0.00", "1100.00", "-1000.00")]),
            (voucher_of_journal, [("130100", "0.00", "770.00", "-700.00"), ("618900", "770.00", "0.00", "700.00")]),
        ):
            entries = (await client.get("/api/v1/ledger-entries", params={"voucher": number})).json()["entries"]
            assert [
                (e["account"], e["debit"], e["credit"], e["transaction_currency_amount"]) for e in entries
            ] == expected
            assert {(e["currency"], e["transaction_currency"]) for e in entries} == {("USD", "EUR")}
        tb = await trial_balance(client)
        assert tb["currency"] == "USD"
        assert balances(tb) == {"130100": "330.00", "401100": "-1100.00", "618900": "770.00"}
