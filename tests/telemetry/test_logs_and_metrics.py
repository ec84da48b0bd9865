"""Structured logs (one JSON object per line from every library, the handled message's context bound)
and the Prometheus metrics: consumer lag per partition, HTTP requests, dead-letter entries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from kredit_invoicing.app import create_app as create_invoicing
from kredit_invoicing.settings import InvoicingSettings
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES
from kredit_shared.testing import (
    eventually,
    free_port,
    isolated_kafka,
    publish,
    serve,
    stop_process,
    wait_until_healthy,
)


def invoice(invoice_id: str, **changes) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "invoice_id": invoice_id,
        "customer_account": "C-77",
        "invoice_date": "2015-06-25",
        "currency": "USD",
        "lines": [{"amount": "10.00"}],
    } | changes


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def invoice_dead_letters(text: str) -> float:
    """Invoicing's dead letters of erp.customer-invoices so far. The registry is the process's, so
    earlier tests in the same run may have counted some: tests compare before and after."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metric_lines(text, "kredit_dead_letters_total")
        if 'topic="erp.customer-invoices"' in line and 'service="invoicing"' in line
    )


async def test_metrics_show_lag_per_partition_http_requests_and_dead_letters(kafka, tmp_path):
    settings = InvoicingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'i.db'}", **isolated_kafka(kafka))
    async with serve(create_invoicing(settings)) as client:
        topic = settings.topic(ERP_CUSTOMER_INVOICES)
        before = invoice_dead_letters((await client.get("/metrics")).text)
        bad = invoice("M-BAD", payment_terms="Net999")
        await publish(kafka.bootstrap_servers, topic, invoice("M-1"), key="C-77")
        await publish(kafka.bootstrap_servers, topic, bad, key="C-77")

        async def scraped():
            text = (await client.get("/metrics")).text
            return text if invoice_dead_letters(text) == before + 1 else None

        text = await eventually(scraped, timeout=20)
        lag = metric_lines(text, "kredit_consumer_lag")
        lagging_partitions = {
            re.search(r'partition="(\d+)"', line).group(1) for line in lag if 'topic="erp.customer-invoices"' in line
        }
        assert lagging_partitions == {str(p) for p in range(settings.topic_partitions)}
        assert all(line.endswith(" 0.0") for line in lag), lag  # everything handled
        await client.get("/api/v1/invoices/M-1")
        await client.get("/no/such/page/12345")
        text = (await client.get("/metrics")).text
        requests = metric_lines(text, "kredit_http_requests_total")
        assert any('route="/api/v1/invoices/{invoice_id}"' in line and 'status="200"' in line for line in requests), (
            requests
        )
        assert any('route="unmatched"' in line and 'status="404"' in line for line in requests)
        assert not any("12345" in line for line in requests), "raw paths would make unbounded labels"


@pytest.mark.slow
async def test_json_logs_are_one_object_per_line_from_every_library_with_the_message_bound(kafka, tmp_path):
    settings = isolated_kafka(kafka)
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
        "HTTP_PORT": str(port),
        "KAFKA_BOOTSTRAP_SERVERS": settings["kafka_bootstrap_servers"],
        "TOPIC_PREFIX": settings["topic_prefix"],
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }
    log_path = tmp_path / "invoicing.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kredit_invoicing"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_healthy(port, process=process)
        bad = invoice("L-BAD", payment_terms="Net999")
        await publish(kafka.bootstrap_servers, settings["topic_prefix"] + ERP_CUSTOMER_INVOICES, bad, key="C-77")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/invoices/none", timeout=5)
        deadline = time.monotonic() + 20
        while "dead-lettering" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop_process(process)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert "\x1b" not in log_path.read_text() and "\\u001b" not in log_path.read_text(), "no colour codes"
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    loggers = {e.get("logger", "").split(".")[0] for e in events}
    assert {"uvicorn", "kredit_shared", "alembic"} <= loggers, loggers
    (dead_letter,) = [e for e in events if "dead-lettering" in e["event"]]
    assert dead_letter["level"] == "warning"
    assert dead_letter["message_id"] == bad["message_id"] and dead_letter["customer_account"] == "C-77"
    assert dead_letter["topic"] == ERP_CUSTOMER_INVOICES
    assert isinstance(dead_letter["partition"], int) and isinstance(dead_letter["offset"], int)
    access = [e for e in events if e.get("logger") == "uvicorn.access"]
    assert any("/api/v1/invoices/none" in e["event"] for e in access)
    assert not any("/healthz" in e["event"] for e in access), "probe requests are not logged"
