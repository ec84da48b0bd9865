"""Dead letters from outside: `kredit dlq` as a real process against the real broker and services.

A poison invoice lands on the DLQ, `kredit dlq list` shows it with its reason, the company setup
gains the missing payment terms, `kredit dlq replay` republishes it and it posts exactly once;
replaying again publishes and posts nothing. And every dead letter, whether the runtime or a
handler wrote it, carries the original bytes and headers and the same x-dlq-* headers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from kredit_invoicing.app import create_app as invoicing_app
from kredit_invoicing.settings import InvoicingSettings
from kredit_ledger_posting.app import create_app as ledger_posting_app
from kredit_ledger_posting.settings import LedgerPostingSettings
from kredit_shared.company_setup import DEMO_SETUP_FILE
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, GL_GENERAL_JOURNALS, GL_JOURNAL_LINES, dead_letter_topic
from kredit_shared.contracts.catalog import DEAD_LETTER_REQUIRED_HEADERS
from kredit_shared.testing import TopicProbe, eventually, isolated_kafka, publish, serve

pytestmark = pytest.mark.slow  # runs the `kredit` CLI as processes

DLQ = dead_letter_topic(ERP_CUSTOMER_INVOICES)


async def kredit(kafka: dict, cwd: Path, *args: str) -> tuple[int, str]:
    """Run the `kredit` CLI as its own process (without blocking the services in this event loop)."""
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka["kafka_bootstrap_servers"],
        "TOPIC_PREFIX": kafka["topic_prefix"],
        "COLUMNS": "250",  # one table row per line
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kredit_shared.cli",
        *args,
        cwd=cwd,  # no .env of the repository
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode or 0, output.decode()


def invoice(invoice_id: str, payment_terms: str) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": "US-009",
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "payment_terms": payment_terms,
        "lines": [{"description": "Goods", "amount": "250.00"}],
    }


async def test_a_poison_invoice_is_listed_replayed_once_its_cause_is_fixed_and_posts_exactly_once(kafka, tmp_path):
    k = isolated_kafka(kafka)
    setup_file = tmp_path / "company.yaml"
    setup_file.write_text(DEMO_SETUP_FILE.read_text())
    invoicing = InvoicingSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'invoicing.db'}", company_setup_file=setup_file, **k
    )
    ledger = LedgerPostingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", **k)
    watched = [invoicing.topic(t) for t in (ERP_CUSTOMER_INVOICES, DLQ, GL_JOURNAL_LINES)]

    def on(topic: str) -> list:
        return [r for r in probe.records if r.topic == invoicing.topic(topic)]

    async with (
        serve(ledger_posting_app(ledger)) as ledger_http,
        TopicProbe(k["kafka_bootstrap_servers"], watched) as probe,
    ):
        async with serve(invoicing_app(invoicing)):
            await publish(
                k["kafka_bootstrap_servers"], invoicing.topic(ERP_CUSTOMER_INVOICES), invoice("GL-1", "Net60")
            )
            [dead] = await probe.wait_for(lambda r: r.topic == invoicing.topic(DLQ))
        assert dead.headers["x-dlq-reason"] == "invoice GL-1: unknown payment terms 'Net60'"

        code, listing = await kredit(k, tmp_path, "dlq", "list", "--topic", ERP_CUSTOMER_INVOICES)
        assert code == 0, listing
        assert "1 dead letter(s)" in listing
        assert "invoice GL-1: unknown payment terms 'Net60'" in listing
        code, as_json = await kredit(k, tmp_path, "dlq", "list", "--json")
        [entry] = [json.loads(line) for line in as_json.splitlines()]
        assert entry["id"].startswith(f"{DLQ}:") and entry["error_type"] == "rejected"
        assert entry["replayed_to"] is None

        # The cause is fixed: the company setup gains Net60, and invoicing restarts with it.
        setup_file.write_text(
            DEMO_SETUP_FILE.read_text().replace("  Net10: {days: 10}\n", "  Net10: {days: 10}\n  Net60: {days: 60}\n")
        )
        async with serve(invoicing_app(invoicing)) as invoicing_http:
            code, output = await kredit(k, tmp_path, "dlq", "replay", entry["id"])
            assert code == 0, output
            assert "1 replayed" in output
            await probe.wait_for(lambda r: r.topic == invoicing.topic(GL_JOURNAL_LINES) and r.key == "FTI-GL-1")
            posted = await invoicing_http.get("/api/v1/invoices/GL-1")
            assert posted.json()["due_date"] == "2015-08-24"  # 60 days: the fixed setup took effect

            async def ledger_entries() -> list[dict]:
                response = await ledger_http.get("/api/v1/ledger-entries", params={"voucher": "FTI-GL-1"})
                return response.json()["entries"]

            await eventually(ledger_entries)

            code, again = await kredit(k, tmp_path, "dlq", "replay", entry["id"])
            assert code == 0 and "replayed before" in again and "nothing to replay" in again, again
            code, again = await kredit(k, tmp_path, "dlq", "replay", "--all", "--topic", ERP_CUSTOMER_INVOICES)
            assert code == 0 and "nothing to replay" in again, again
            await probe.settle(2)

            replayed = [r for r in on(ERP_CUSTOMER_INVOICES) if "x-replay-of" in r.headers]
            assert [r.headers["x-replay-of"] for r in replayed] == [entry["id"]], "republished once"
            assert replayed[0].value == on(ERP_CUSTOMER_INVOICES)[0].value, "the original bytes"
            assert [r.key for r in on(GL_JOURNAL_LINES)] == ["FTI-GL-1"], "posted exactly once"
            assert sorted((e["account"], e["debit"], e["credit"]) for e in await ledger_entries()) == [
                ("130100", "250.00", "0.00"),
                ("401100", "0.00", "250.00"),
            ]
            # (The DLQ may hold a copy of the first letter: invoicing was stopped right after publishing it.)
            assert not [r for r in on(DLQ) if "x-replay-of" in r.headers], "the replay was not refused again"

        code, listing = await kredit(k, tmp_path, "dlq", "list", "--json")
        assert json.loads(listing)["replayed_to"].startswith(f"{ERP_CUSTOMER_INVOICES}:")
        code, stats = await kredit(k, tmp_path, "dlq", "stats")
        assert code == 0
        assert [[c.strip() for c in line.split("│")[1:6]] for line in stats.splitlines() if DLQ in line] == [
            [DLQ, "1", "rejected 1", "1", "0"]
        ], stats
        code, shown = await kredit(k, tmp_path, "dlq", "show", entry["id"])
        assert code == 0 and "x-dlq-source-offset" in shown and '"payment_terms": "Net60"' in shown, shown


async def test_every_dead_letter_keeps_the_original_record_and_has_the_same_headers_whoever_wrote_it(kafka, tmp_path):
    """ledger-posting: a record that is not JSON (the runtime refuses it), an unbalanced voucher (the
    batch handler refuses it) and a journal with an unknown journal name (the handler refuses it and
    tells the requester)."""
    settings = LedgerPostingSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", **isolated_kafka(kafka)
    )
    voucher = {
        "message_id": str(uuid.uuid4()),
        "voucher": "V-UNBALANCED",
        "posting_date": "2015-06-25",
        "currency": "USD",
        "lines": [{"account": "130100", "debit": "100.00"}, {"account": "401100", "credit": "99.00"}],
    }
    journal = {
        "message_id": str(uuid.uuid4()),
        "request_id": "R-1",
        "journal_name": "NoSuchJournal",
        "lines": [
            {
                "account_type": "Ledger",
                "account": "618900",
                "debit": "5.00",
                "currency": "USD",
                "transaction_date": "2015-08-31",
            },
            {
                "account_type": "Ledger",
                "account": "130100",
                "credit": "5.00",
                "currency": "USD",
                "transaction_date": "2015-08-31",
            },
        ],
    }
    # (topic, value, error type); the spacing of the JSON is kept only if the original bytes are.
    bad = [
        (GL_JOURNAL_LINES, b'{"voucher": "V-1", oops', "invalid"),
        (GL_JOURNAL_LINES, json.dumps(voucher, indent=3).encode(), "rejected"),
        (GL_GENERAL_JOURNALS, json.dumps(journal, indent=3).encode(), "rejected"),
    ]

    def counted(topic: str, error_type: str) -> float:
        labels = {"service": "ledger-posting", "topic": topic, "error_type": error_type}
        return REGISTRY.get_sample_value("kredit_dead_letters_total", labels) or 0.0

    before = {(t, e): counted(t, e) for t, _, e in bad}
    dlqs = [settings.topic(dead_letter_topic(t)) for t in (GL_JOURNAL_LINES, GL_GENERAL_JOURNALS)]
    async with serve(ledger_posting_app(settings)), TopicProbe(kafka.bootstrap_servers, dlqs) as probe:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
        await producer.start()
        try:
            positions = []
            for n, (topic, value, _) in enumerate(bad):
                headers = [("trace", f"t-{n}".encode()), ("binary", b"\xff\x00")]
                sent = await producer.send_and_wait(
                    settings.topic(topic), value, key=f"k-{n}".encode(), headers=headers
                )
                positions.append((sent.partition, sent.offset))
        finally:
            await producer.stop()
        letters = await probe.wait_for(lambda r: True, count=len(bad))

        def all_counted() -> bool:  # the relay counts each dead letter once it is published
            expected = {key: before[key] + sum(1 for t, _, e in bad if (t, e) == key) for key in before}
            return all(counted(*key) == value for key, value in expected.items())

        await eventually(all_counted)
    by_trace = {r.headers["trace"]: r for r in letters}
    dlq_header_names = set()
    for n, (topic, value, error_type) in enumerate(bad):
        letter = by_trace[f"t-{n}"]
        assert letter.value == value, "the original bytes"
        assert letter.key == f"k-{n}"
        names = list(letter.headers)
        assert names[:2] == ["trace", "binary"], "the original headers first, in their order"
        assert letter.headers["binary"] == b"\xff\x00".decode(errors="replace")
        assert set(DEAD_LETTER_REQUIRED_HEADERS) <= set(names)
        assert letter.headers["x-dlq-source-topic"] == topic
        assert letter.headers["x-dlq-error-type"] == error_type
        assert (int(letter.headers["x-dlq-source-partition"]), int(letter.headers["x-dlq-source-offset"])) == positions[
            n
        ]
        assert letter.headers["x-dlq-consumer"] == settings.group_id
        dlq_header_names.add(tuple(sorted(h for h in names if h.startswith("x-dlq-"))))
    assert len(dlq_header_names) == 1, f"the same x-dlq-* headers on every dead letter: {dlq_header_names}"
    assert "V-UNBALANCED" in by_trace["t-1"].headers["x-dlq-reason"]
    assert "NoSuchJournal" in by_trace["t-2"].headers["x-dlq-reason"]
