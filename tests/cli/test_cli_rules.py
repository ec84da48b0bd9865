"""The CLI's own rules, without a broker: reading an opening-balance file, dead-letter IDs and copies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer

from kredit_shared.cli.dlq import Entry, _once_each, _topic_of_id, parse_since
from kredit_shared.cli.imports import opening_balance_id, read_invoices


def test_each_row_becomes_the_contract_message_and_a_bad_row_is_rejected_with_its_line_and_reason(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "customer_account,invoice_id,invoice_date,currency,amount,payment_terms,revenue_account\n"
        "4027,OB-10,2015-06-25,USD,1000.00,Net30,399900\n"
        "4027,OB-11,2015-06-25,USD,1e3,,\n"
        "4027,,2015-06-25,USD,5.00,,\n"
    )
    invoices, rejects = read_invoices(path)
    [invoice] = invoices
    assert invoice.message_id == opening_balance_id("OB-10")
    assert invoice.payment_terms == "Net30" and invoice.due_date is None
    assert [(line.description, str(line.amount), line.revenue_account) for line in invoice.lines] == [
        ("Opening balance", "1000.00", "399900")
    ]
    assert [(r.row, r.invoice_id) for r in rejects] == [(3, "OB-11"), (4, "")]
    assert rejects[0].reason.startswith("amount:")
    assert rejects[1].reason.startswith("invoice_id:")


def test_a_file_without_a_required_column_or_with_an_unknown_one_is_refused_as_a_whole(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("invoice_id,customer_account,invoice_date,amount\nOB-1,4027,2015-06-25,1.00\n")
    with pytest.raises(typer.BadParameter, match="missing column"):
        read_invoices(path)
    path.write_text("invoice_id,customer_account,invoice_date,currency,amount,colour\n")
    with pytest.raises(typer.BadParameter, match="unknown column"):
        read_invoices(path)


def test_the_opening_balance_id_is_a_uuid_that_depends_only_on_the_invoice():
    assert opening_balance_id("OB-1") == opening_balance_id("OB-1") != opening_balance_id("OB-2")


def test_dead_letter_ids_name_a_contract_dead_letter_topic_and_a_position():
    assert _topic_of_id("erp.customer-invoices.dlq:3:1017") == "erp.customer-invoices.dlq"
    for bad in (
        "erp.customer-invoices:3:1017",
        "nope.dlq:0:1",
        "erp.customer-invoices.dlq:x:1",
        "gl.journal-lines.dlq",
    ):
        with pytest.raises(typer.BadParameter):
            _topic_of_id(bad)


def test_since_takes_a_duration_or_an_iso_date():
    assert abs(parse_since("2h") - (datetime.now(UTC) - timedelta(hours=2))) < timedelta(seconds=5)
    assert parse_since("2015-07-01") == datetime(2015, 7, 1, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        parse_since("yesterday")


def _letter(offset: int, letter_id: str, source_offset: str, consumer: str = "kredit-ledger-posting") -> Entry:
    headers = (
        ("x-dlq-reason", b"unbalanced"),
        ("x-dlq-consumer", consumer.encode()),
        ("x-dlq-source-partition", b"0"),
        ("x-dlq-source-offset", source_offset.encode()),
        ("message-id", letter_id.encode()),
    )
    return Entry("gl.journal-lines.dlq", 0, offset, datetime.now(UTC), b"k", b"{}", headers)


def test_a_dead_letter_the_relay_published_twice_is_listed_once_but_a_refused_replay_is_its_own_entry():
    original = _letter(0, "a", "5")
    relay_copy = _letter(1, "a", "5")
    refused_replay = _letter(2, "a", "9")  # a handler's letter keeps the message's id; the record is new
    other_consumer = _letter(3, "a", "5", consumer="kredit-collections")
    assert _once_each([original, relay_copy, refused_replay, other_consumer]) == [
        original,
        refused_replay,
        other_consumer,
    ]
