"""Crash recovery of a real service process, killed with SIGKILL at the worst moments.

The ledger-posting service turns a general journal request into a journal and a JournalCreated
event, so it shows both halves: the effect (the journal and its number) and the output (the event).
"""

from __future__ import annotations

import signal
import uuid

import httpx
import pytest

from kredit_shared.auth import Role
from kredit_shared.contracts import (
    AR_CUSTOMER_TRANSACTIONS,
    AR_SETTLEMENTS,
    ERP_CUSTOMER_INVOICES,
    ERP_CUSTOMER_PAYMENTS,
    GL_GENERAL_JOURNALS,
    GL_JOURNAL_EVENTS,
    GL_JOURNAL_LINES,
    dead_letter_topic,
)
from kredit_shared.testing import (
    SERVICE_START_SECONDS,
    TopicProbe,
    eventually,
    free_port,
    isolated_kafka,
    publish,
    publish_many,
    service_process,
    token_header,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow


def request(request_id: str) -> dict:
    line = {"currency": "USD", "transaction_date": "2015-08-31", "reason_code": "BadDebt"}
    return {
        "message_id": str(uuid.uuid4()),
        "request_id": request_id,
        "journal_name": "WriteOff",
        "lines": [
            line | {"account_type": "Customer", "account": "4027", "credit": "10.00"},
            line | {"account_type": "Ledger", "account": "618900", "debit": "10.00"},
        ],
    }


@pytest.fixture
def ledger_env(kafka, tmp_path) -> dict[str, str]:
    isolated = isolated_kafka(kafka)
    return {
        "HTTP_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        **{key.upper(): str(value) for key, value in isolated.items()},
    }


def journals(env: dict[str, str]) -> list[str]:
    response = httpx.get(
        f"http://127.0.0.1:{env['HTTP_PORT']}/api/v1/journals",
        params={"journal_name": "WriteOff"},
        headers=token_header(Role.viewer),
    )
    return [j["batch_number"] for j in response.json()["journals"]]


@pytest.mark.parametrize(
    "failpoint",
    ["relay-before-publish", "consumer-after-commit"],
    ids=["killed-after-commit-before-publish", "killed-after-commit-before-offset-commit"],
)
async def test_a_service_killed_mid_message_publishes_its_output_exactly_once_after_restart(
    kafka, ledger_env, tmp_path, failpoint
):
    events = ledger_env["TOPIC_PREFIX"] + GL_JOURNAL_EVENTS
    log = str(tmp_path / "ledger.log")
    async with TopicProbe(kafka.bootstrap_servers, [events]) as probe:
        with service_process("kredit_ledger_posting", ledger_env | {"FAILPOINTS": failpoint}, log) as doomed:
            wait_until_healthy(int(ledger_env["HTTP_PORT"]), process=doomed)
            await publish(kafka.bootstrap_servers, ledger_env["TOPIC_PREFIX"] + GL_GENERAL_JOURNALS, request("r-1"))
            assert doomed.wait(20) == -signal.SIGKILL
        assert await probe.settle(0.5) == [], "nothing was published before the crash"

        with service_process("kredit_ledger_posting", ledger_env, log) as restarted:
            wait_until_healthy(int(ledger_env["HTTP_PORT"]), process=restarted)
            await publish(kafka.bootstrap_servers, ledger_env["TOPIC_PREFIX"] + GL_GENERAL_JOURNALS, request("r-2"))
            await probe.wait_for(lambda r: True, count=2)
            await probe.settle(1.0)
            created = [(r.json()["request_id"], r.json()["batch_number"]) for r in probe.records]
            assert sorted(created) == [("r-1", "WOJ-000001"), ("r-2", "WOJ-000002")], (
                "each journal once, numbers not skipped"
            )
            assert journals(ledger_env) == ["WOJ-000001", "WOJ-000002"]
            redelivered_and_skipped = duplicates_seen(ledger_env)
            assert redelivered_and_skipped == (1 if failpoint == "consumer-after-commit" else 0)


def duplicates_seen(env: dict[str, str]) -> int:
    """The inbox's count of messages it recognised as already processed (from /metrics)."""
    metrics = httpx.get(f"http://127.0.0.1:{env['HTTP_PORT']}/metrics").text
    for line in metrics.splitlines():
        if line.startswith("kredit_messages_consumed_total{") and 'outcome="duplicate"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


@pytest.mark.parametrize(
    "failpoint",
    ["relay-before-publish", "consumer-after-commit"],
    ids=["killed-after-commit-before-publish", "killed-after-commit-before-offset-commit"],
)
async def test_a_service_killed_mid_batch_posts_every_invoice_of_the_fetch_exactly_once(kafka, tmp_path, failpoint):
    """Invoicing commits a whole fetch in one transaction: a SIGKILL after it loses and doubles nothing."""
    isolated = isolated_kafka(kafka)
    env = {
        "HTTP_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'invoicing.db'}",
        **{key.upper(): str(value) for key, value in isolated.items()},
    }
    prefix, log = env["TOPIC_PREFIX"], str(tmp_path / "invoicing.log")
    invoices = [
        {
            "message_id": str(uuid.uuid4()),
            "invoice_id": f"K-{n}",
            "customer_account": f"C{n % 3}",
            "invoice_date": "2015-06-25",
            "currency": "USD",
            "lines": [{"amount": "10.00"}],
        }
        for n in range(20)
    ]
    # First, so it is in the fetch the crash interrupts: rejected whole, its dead letter must not double.
    invoices.insert(
        0, invoices[0] | {"message_id": str(uuid.uuid4()), "invoice_id": "K-BAD", "payment_terms": "Net999"}
    )
    dlq = prefix + dead_letter_topic(ERP_CUSTOMER_INVOICES)
    async with TopicProbe(kafka.bootstrap_servers, [prefix + GL_JOURNAL_LINES, dlq]) as probe:
        with service_process("kredit_invoicing", env | {"FAILPOINTS": failpoint}, log) as doomed:
            wait_until_healthy(int(env["HTTP_PORT"]), process=doomed)
            await publish_many(kafka.bootstrap_servers, prefix + ERP_CUSTOMER_INVOICES, invoices)
            assert doomed.wait(20) == -signal.SIGKILL
        with service_process("kredit_invoicing", env, log) as restarted:
            wait_until_healthy(int(env["HTTP_PORT"]), process=restarted)
            await probe.wait_for(lambda r: r.topic != dlq, count=20)
            await probe.settle(1.0)
        posted = [r.key for r in probe.records if r.topic != dlq]
        assert sorted(posted) == sorted(f"FTI-K-{n}" for n in range(20)), "each once"
        assert [r.headers["x-dlq-reason"] for r in probe.records if r.topic == dlq] == [
            "invoice K-BAD: unknown payment terms 'Net999'"
        ], "the rejected invoice dead-lettered once"


@pytest.mark.parametrize(
    "failpoint",
    ["relay-before-publish", "consumer-after-commit"],
    ids=["killed-after-commit-before-publish", "killed-after-commit-before-offset-commit"],
)
async def test_settlement_killed_mid_batch_settles_every_payment_of_the_fetch_exactly_once(kafka, tmp_path, failpoint):
    """Settlement commits a fetch of payments in one transaction: a SIGKILL after it loses and doubles nothing."""
    isolated = isolated_kafka(kafka)
    env = {
        "HTTP_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'settlement.db'}",
        **{key.upper(): str(value) for key, value in isolated.items()},
    }
    prefix, log, port = env["TOPIC_PREFIX"], str(tmp_path / "settlement.log"), int(env["HTTP_PORT"])
    customers = [f"K{n}" for n in range(4)]
    invoices = [
        {
            "message_id": str(uuid.uuid4()),
            "voucher": f"FTI-{c}-{n}",
            "transaction_type": "Invoice",
            "customer_account": c,
            "transaction_date": "2015-07-01",
            "invoice_id": f"{c}-{n}",
            "amount": "100.00",
            "currency": "USD",
            "due_date": f"2015-07-0{n + 1}",
            "cash_discounts": [],
        }
        for c in customers
        for n in range(2)
    ]
    # Per customer: an automatic payment (the oldest invoice first), then a marked one for the other invoice.
    payments = [
        {
            "message_id": str(uuid.uuid4()),
            "payment_id": f"P-{c}-{n}",
            "customer_account": c,
            "payment_date": "2015-08-01",
            "amount": "100.00",
            "currency": "USD",
        }
        | ({"settle": [{"invoice_id": f"{c}-1", "use_cash_discount": "Never"}]} if n else {})
        for c in customers
        for n in range(2)
    ]
    topics = [prefix + t for t in (AR_SETTLEMENTS, GL_JOURNAL_LINES)]
    async with TopicProbe(kafka.bootstrap_servers, topics) as probe:
        with service_process("kredit_settlement", env, log) as first:
            wait_until_healthy(port, process=first)
            await publish_many(kafka.bootstrap_servers, prefix + AR_CUSTOMER_TRANSACTIONS, invoices)
            for c in customers:
                await eventually(lambda c=c: len(open_transactions(port, c)) == 2)
        await publish_many(kafka.bootstrap_servers, prefix + ERP_CUSTOMER_PAYMENTS, payments)
        with service_process("kredit_settlement", env | {"FAILPOINTS": failpoint}, log) as doomed:
            # A whole start (the payments wait for it), then the fetch: the start dominates under load.
            assert doomed.wait(SERVICE_START_SECONDS) == -signal.SIGKILL
        with service_process("kredit_settlement", env, log) as restarted:
            wait_until_healthy(port, process=restarted)
            await probe.wait_for(lambda r: r.topic == prefix + AR_SETTLEMENTS, count=8)
            await probe.settle(1.0)
            assert all(open_transactions(port, c) == {} for c in customers), "every invoice and payment used up"
        settled = sorted(
            (r.json()["credit_voucher"], r.json()["debit_voucher"])
            for r in probe.records
            if r.topic == prefix + AR_SETTLEMENTS
        )
        assert settled == sorted((f"P-{c}-{n}", f"FTI-{c}-{n}") for c in customers for n in range(2)), "each once"
        vouchers = sorted(r.key for r in probe.records if r.topic == prefix + GL_JOURNAL_LINES)
        assert vouchers == sorted(p["payment_id"] for p in payments), "each payment's voucher once"


def open_transactions(port: int, customer: str) -> dict:
    response = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/customers/{customer}/open-transactions", headers=token_header(Role.viewer)
    )
    assert response.status_code == 200, response.text
    return {t["voucher"]: t["open_amount"] for t in response.json()["transactions"]}
