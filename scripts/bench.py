"""Pipeline benchmark (`make bench`; not a test): the whole stack on SQLite and PostgreSQL, measured
against the raw broker hop of the same run.

For each database it starts a stack of its own (scripts/stack.py: a Tansu broker and the four
services as real processes) and drives it from outside, through Kafka and HTTP. Commit times are read
from ledger-posting's own table (`ledger_posted_voucher.posted_at`, set in the transaction that posts
a voucher), as scripts/bench_ledger.py does.

- raw hop: a batched consume -> produce relay (aiokafka, acks=all, its own process, on uvloop as the services)
  on the same broker;
  records/s = N / (last relayed record's timestamp - first send). The ceiling of one service hop.
- invoices/s ERP -> invoicing -> ledger-posting: N invoices sent at once; N / (last posted - first sent).
- payments/s ERP -> settlement -> ledger-posting: N payments, each with one settle mark on an open
  invoice (sent once settlement knows the invoices); the payment vouchers in the ledger. With
  --discount-share, that share of them pays within the discount period and takes the cash discount.
- collections catch-up: a second collections process with a fresh database and its own consumer
  group reads every AR topic of the run from the beginning; records / (lag 0 - healthy).
- latency: invoices and payments paced at --rate/s; posted_at - send time, p50/p99.
- payment vs a customer with --big-customer open invoices: payments one at a time (automatic and
  marked); the time until its settlement is on ar.settlements (two broker hops included), and
  settlement's mean handler time from its /metrics.
- aged balances: a collections process on its own (empty) topics whose database is loaded with
  --aged-transactions open transactions of --aged-customers customers (no broker; see seed_collections);
  GET /api/v1/aged-balances timed over HTTP (median of --aged-requests).
- CPU per message: each process's CPU time (user + system, /proc) over the throughput runs divided by
  the messages of that stage, per service, the broker and the bench itself: where the two cores go.
- messages per fetch: per service and topic, the messages its handler took per fetch in those runs (from
  /metrics); each fetch costs one transaction whatever its size, so small fetches cost more per message.
- idle CPU: each process's CPU, % of one core, over --idle-seconds while the stack has nothing to do.
- peak RSS (VmHWM) of every service process at the end.

Throughput runs are repeated (--repeats) on the same stack; tables show medians and ranges.

    uv run python scripts/bench.py [--databases sqlite,postgresql] [--invoices 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from stack import SERVICES, LocalStack, ServiceProcess, render_table, run_tool

from kredit_shared.contracts import topics
from kredit_shared.testing import free_port

INVOICE_DATE = dt.date(2025, 1, 15)
AR_TOPICS = (topics.AR_CUSTOMER_TRANSACTIONS, topics.AR_SETTLEMENTS, topics.GL_JOURNAL_EVENTS)
# --stages: throughput = raw hop, invoices and payments/s, paced latency, catch-up; big = one customer with
# many open invoices; aged = aged balances over a large read model; sustained = RSS under steady load.
STAGES = ("throughput", "big", "aged", "sustained")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


def invoice_message(invoice_id: str, customer: str, amount: Decimal) -> bytes:
    return json.dumps(
        {
            "message_id": str(uuid.uuid4()),
            "invoice_id": invoice_id,
            "customer_account": customer,
            "customer_name": f"Bench customer {customer}",
            "invoice_date": INVOICE_DATE.isoformat(),
            "currency": "USD",
            "payment_terms": "Net30",
            "cash_discount_code": "1%14D",
            "lines": [{"description": "Goods", "amount": str(amount), "revenue_account": "401100"}],
        }
    ).encode()


def payment_message(
    payment_id: str, customer: str, amount: Decimal, invoice_id: str | None, discount: bool = False
) -> bytes:
    """A payment of `amount` marked for `invoice_id`, after its discount date; with `discount`, within the 1%14D
    period for the amount less its 1 % (marked Normal), so settling it posts a cash discount too."""
    days, use = 20, "Never"
    if discount:
        days, use = 10, "Normal"
        amount -= (amount / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    body: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "payment_id": payment_id,
        "customer_account": customer,
        "payment_date": (INVOICE_DATE + dt.timedelta(days=days)).isoformat(),
        "amount": str(amount),
        "currency": "USD",
    }
    if invoice_id is not None:
        body["settle"] = [{"invoice_id": invoice_id, "amount_to_settle": str(amount), "use_cash_discount": use}]
    return json.dumps(body).encode()


# --- reading commit times -----------------------------------------------------------------------


class Database:
    """Read-only queries on one service's database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: asyncpg.Connection | None = None

    async def __aenter__(self) -> Database:
        if self.postgres:
            self._pg = await asyncpg.connect("postgresql://" + self.url.split("://", 1)[1])
        return self

    @property
    def postgres(self) -> bool:
        return not self.url.startswith("sqlite")

    async def __aexit__(self, *exc: object) -> None:
        if self._pg is not None:
            await self._pg.close()

    async def query(self, sql: str, *args: Any) -> list[tuple]:
        if self._pg is not None:
            return [tuple(r) for r in await self._pg.fetch(sql, *args)]

        def read() -> list[tuple]:
            with contextlib.closing(sqlite3.connect(self.url.split("///", 1)[1], timeout=30)) as db:
                sql_ = sql
                for n in range(len(args), 0, -1):
                    sql_ = sql_.replace(f"${n}", "?")
                return db.execute(sql_, args).fetchall()

        return await asyncio.to_thread(read)


def _epoch(value: str | dt.datetime) -> float:
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()  # stored as naive UTC


async def posted_vouchers(ledger: Database, prefix: str, count: int, timeout: float) -> dict[str, float]:
    """Wait until `count` vouchers starting with `prefix` are posted; {voucher: posted_at epoch}.

    The bench is an observer: its polling must not take CPU from the stack it measures (the rates come from
    the stored posted_at times, not from when the poll sees them). SQLite's LIKE ignores case, so it cannot
    use the primary key and would scan the whole table each poll; GLOB can. PostgreSQL counts in its server."""
    deadline = time.monotonic() + timeout
    match = "voucher LIKE $1" if ledger.postgres else "voucher GLOB $1"
    pattern = prefix + ("%" if ledger.postgres else "*")
    sql = f"SELECT count(*) FROM ledger_posted_voucher WHERE {match}"
    while (n := (await ledger.query(sql, pattern))[0][0]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {n} of {count} vouchers {prefix}* posted after {timeout:.0f}s")
        await asyncio.sleep(0.25)
    rows = await ledger.query(f"SELECT voucher, posted_at FROM ledger_posted_voucher WHERE {match}", pattern)
    return {voucher: _epoch(at) for voucher, at in rows}


# --- Kafka helpers ------------------------------------------------------------------------------


async def send_all(
    producer: AIOKafkaProducer, records: list[tuple[str, str, bytes]], rate: float | None = None
) -> list[float]:
    """Produce (topic, key, value) records, paced at `rate`/s if given; each one's send time (epoch)."""
    sent, acks, start = [], [], time.perf_counter()
    for i, (topic, key, value) in enumerate(records):
        if rate and (delay := start + i / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        sent.append(time.time())
        acks.append(await producer.send(topic, value, key=key.encode()))
    await asyncio.gather(*acks)
    return sent


async def group_lag(bootstrap: str, group: str, names: tuple[str, ...]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()  # aiokafka has no public refresh
            partitions = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()]
        ends = await consumer.end_offsets(partitions)
        lag = 0
        for tp in partitions:
            lag += max(ends[tp] - (await consumer.committed(tp) or 0), 0)
        return lag
    finally:
        await consumer.stop()


async def topic_size(bootstrap: str, names: tuple[str, ...]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(interval)


# --- the raw hop ----------------------------------------------------------------------------------


async def raw_relay(bootstrap: str, source: str, target: str) -> None:
    """The relay process: consume a batch, produce every record (pipelined, acks=all), commit."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id="bench-raw-relay",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_poll_records=500,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            acks = [await producer.send(target, r.value, key=r.key) for records in batches.values() for r in records]
            await asyncio.gather(*acks)
            if acks:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def bench_raw_hop(stack: LocalStack, producer: AIOKafkaProducer, count: int, log_dir: Path) -> float:
    run = uuid.uuid4().hex[:6]
    source, target = f"bench.raw-in-{run}", f"bench.raw-out-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 4, 1) for t in (source, target)])
    finally:
        await admin.close()
    reader = AIOKafkaConsumer(target, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest")
    with open(log_dir / "raw-relay.log", "ab") as log:
        relay = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--raw-relay", stack.bootstrap, source, target, stdout=log, stderr=log
        )
    await reader.start()
    try:

        async def relayed(n: int, timeout: float) -> list[int]:
            stamps: list[int] = []
            deadline = time.monotonic() + timeout
            while len(stamps) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"raw hop: {len(stamps)} of {n} relayed")
                for records in (await reader.getmany(timeout_ms=200, max_records=5000)).values():
                    stamps += [r.timestamp for r in records]
            return stamps

        await send_all(producer, [(source, "w", b"warm-up")])
        await relayed(1, 180)  # the relay process starting and joining its group (slow on a loaded machine)
        value = invoice_message("RAW-000000", "C0000", Decimal("100.00"))
        sent = await send_all(producer, [(source, f"C{i % 200:04d}", value) for i in range(count)])
        stamps = await relayed(count, 120)
        return count / (max(stamps) / 1000 - sent[0])
    finally:
        await reader.stop()
        relay.terminate()
        await relay.wait()


# --- the pipeline ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def cpu_snapshot(stack: LocalStack) -> dict[str, float]:
    """CPU seconds so far of every service process, the broker and this process (the bench's sender)."""
    pids = {p.label: p.process.pid for p in stack.processes if p.running() and p.process is not None}
    if stack.broker is not None:
        pids["broker"] = stack.broker.pid
    pids["bench"] = os.getpid()
    return {label: cpu_seconds(pid) for label, pid in pids.items()}


async def fetch_snapshot(stack: LocalStack) -> dict[str, list[float]]:
    """Per service process and topic ("settlement#1 erp.customer-payments"): [fetches its handlers took,
    messages in them], from its /metrics (kredit_handler_seconds_count, kredit_messages_consumed_total)."""
    found: dict[str, list[float]] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for process in stack.processes:
            if not process.running():
                continue
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(f"{process.url}/metrics")).text
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if not (topic := sample.labels.get("topic")):
                            continue
                        if sample.name == "kredit_handler_seconds_count":
                            column = 0
                        elif sample.name == "kredit_messages_consumed_total" and sample.labels.get("outcome") in (
                            "processed",
                            "duplicate",
                        ):
                            column = 1
                        else:
                            continue
                        found.setdefault(f"{process.label} {topic}", [0.0, 0.0])[column] += sample.value
    return found


class Pipeline:
    def __init__(
        self,
        stack: LocalStack,
        producer: AIOKafkaProducer,
        ledger: Database,
        customers: int,
        discount_share: float = 0.0,
    ) -> None:
        self.stack, self.producer, self.ledger, self.customers = stack, producer, ledger, customers
        self.discount_share = discount_share  # of the payments, those taking their invoice's cash discount
        self.runs = 0
        self.cpu: dict[str, dict[str, list[float]]] = {}  # stage -> process -> CPU ms per message, per run
        self.fetch_sizes: dict[str, dict[str, list[float]]] = {}  # stage -> "process topic" -> messages per fetch

    async def _note_cpu(
        self, stage: str, before: dict[str, float], fetches_before: dict[str, list[float]], count: int
    ) -> None:
        after = cpu_snapshot(self.stack)
        for label, seconds in after.items():
            if label in before:
                per_message = (seconds - before[label]) * 1000 / count
                self.cpu.setdefault(stage, {}).setdefault(label, []).append(per_message)
        for key, (fetches, messages) in (await fetch_snapshot(self.stack)).items():
            fetches_then, messages_then = fetches_before.get(key, [0.0, 0.0])
            if fetches > fetches_then:
                size = (messages - messages_then) / (fetches - fetches_then)
                self.fetch_sizes.setdefault(stage, {}).setdefault(key, []).append(size)

    def _prefix(self, kind: str) -> str:
        self.runs += 1
        return f"{kind}{self.runs:02d}{uuid.uuid4().hex[:4]}-"

    async def invoices(self, count: int, rate: float | None = None) -> tuple[float, list[float], list[tuple]]:
        """Send `count` invoices; returns invoices/s, latencies (ms) and the invoices (id, customer, total)."""
        prefix = self._prefix("I")
        made = [
            (f"{prefix}{i:06d}", f"{prefix[:-1]}C{i % self.customers:04d}", Decimal(random.randint(100, 999_999)) / 100)
            for i in range(count)
        ]
        records = [(topics.ERP_CUSTOMER_INVOICES, c, invoice_message(i, c, a)) for i, c, a in made]
        cpu, fetches = cpu_snapshot(self.stack), await fetch_snapshot(self.stack)
        sent = await send_all(self.producer, records, rate)
        posted = await posted_vouchers(self.ledger, f"FTI-{prefix}", count, timeout=120 + count / 10)
        if rate is None and count > 1:
            await self._note_cpu("invoices", cpu, fetches, count)
        latencies = [(posted[f"FTI-{i}"] - s) * 1000 for (i, _, _), s in zip(made, sent)]
        return count / (max(posted.values()) - sent[0]), latencies, made

    async def payments(self, invoices: list[tuple], rate: float | None = None) -> tuple[float, list[float]]:
        """One payment per invoice, marked for it: for the whole amount, or (a `discount_share` of them, spread
        evenly) within the discount period for the amount less the discount."""
        await self.settlement_caught_up()
        prefix = self._prefix("P")
        made = [(f"{prefix}{n:06d}", c, a, i) for n, (i, c, a) in enumerate(invoices)]
        share = self.discount_share
        records = [
            (topics.ERP_CUSTOMER_PAYMENTS, c, payment_message(p, c, a, i, discount=n * share % 1 < share))
            for n, (p, c, a, i) in enumerate(made)
        ]
        cpu, fetches = cpu_snapshot(self.stack), await fetch_snapshot(self.stack)
        sent = await send_all(self.producer, records, rate)
        posted = await posted_vouchers(self.ledger, prefix, len(made), timeout=120 + len(made) / 10)
        if rate is None:
            await self._note_cpu("payments", cpu, fetches, len(made))
        latencies = [(posted[p] - s) * 1000 for (p, _, _, _), s in zip(made, sent)]
        return len(made) / (max(posted.values()) - sent[0]), latencies

    async def settlement_caught_up(self, timeout: float = 900) -> None:
        async def no_lag() -> bool:
            return await group_lag(self.stack.bootstrap, "kredit-settlement", (topics.AR_CUSTOMER_TRANSACTIONS,)) == 0

        await wait_for(no_lag, timeout, "settlement catching up with the invoices")


async def bench_catch_up(stack: LocalStack, timeout: float) -> tuple[float, int]:
    """A fresh collections process with its own consumer group reads every AR topic of the run."""
    for service in ("collections", "settlement"):

        async def idle(service: str = service) -> bool:
            return await group_lag(stack.bootstrap, f"kredit-{service}", SERVICES[service][1]) == 0

        await wait_for(idle, timeout, f"{service} catching up")
    records = await topic_size(stack.bootstrap, AR_TOPICS)
    group = f"bench-catch-up-{uuid.uuid4().hex[:6]}"
    first = stack.replicas_of("collections")[0]
    process = ServiceProcess(
        "collections",
        len(stack.processes) + 1,
        free_port(),
        first.env | {"DATABASE_URL": await stack._database(f"collections-catch-up-{group}"), "CONSUMER_GROUP": group},
        stack.data_dir / "logs" / "collections-catch-up.log",
    )
    process.env["HTTP_PORT"] = str(process.port)
    process.env["RATE_LIMIT_EXPENSIVE_READS_PER_MINUTE"] = "0"  # the timed reads are many and expensive by design
    stack.processes.append(process)
    process.start()
    try:
        await stack.wait_healthy([process], timeout=120)
        started = time.monotonic()

        async def caught_up() -> bool:
            return await group_lag(stack.bootstrap, group, AR_TOPICS) == 0

        await wait_for(caught_up, timeout, "the catch-up collections", interval=0.1)
        return records / (time.monotonic() - started), records
    finally:
        process.stop()


# --- one customer with many open invoices ------------------------------------------------------------


async def settlement_handler_seconds(url: str) -> tuple[float, float]:
    """(sum, count) of settlement's handler time for erp.customer-payments, from its /metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{url}/metrics")).text
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        if line.startswith("kredit_handler_seconds_") and topics.ERP_CUSTOMER_PAYMENTS in line:
            name = line.split("{", 1)[0].rsplit("_", 1)[1]
            if name in found:
                found[name] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


async def bench_big_customer(pipeline: Pipeline, open_invoices: int, payments: int) -> dict[str, float]:
    stack, customer = pipeline.stack, f"BIG{uuid.uuid4().hex[:6]}"
    made = [(f"{customer}-{i:06d}", customer, Decimal("100.00")) for i in range(open_invoices)]
    started = time.monotonic()
    await send_all(pipeline.producer, [(topics.ERP_CUSTOMER_INVOICES, c, invoice_message(i, c, a)) for i, c, a in made])
    await posted_vouchers(pipeline.ledger, f"FTI-{customer}-", open_invoices, timeout=1800)
    await pipeline.settlement_caught_up(timeout=1800)
    loaded = time.monotonic() - started
    settlements = AIOKafkaConsumer(topics.AR_SETTLEMENTS, bootstrap_servers=stack.bootstrap, auto_offset_reset="latest")
    await settlements.start()
    try:
        await settlements.getmany(timeout_ms=500)  # positioned at the end before the first payment
        before = await settlement_handler_seconds(stack.url("settlement"))
        times: dict[str, list[float]] = {"automatic": [], "marked": []}
        service: dict[str, list[float]] = {"automatic": [], "marked": []}  # settlement's own time per payment
        for n in range(payments):
            kind = "automatic" if n % 2 == 0 else "marked"
            payment_id = f"{customer}-P{n:04d}"
            invoice_id = None if kind == "automatic" else random.choice(made)[0]
            value = payment_message(payment_id, customer, Decimal("10.00"), invoice_id)
            handled_before = await settlement_handler_seconds(stack.url("settlement"))
            sent = time.monotonic()
            await pipeline.producer.send_and_wait(topics.ERP_CUSTOMER_PAYMENTS, value, key=customer.encode())
            while True:
                batches = await settlements.getmany(timeout_ms=50)
                if any(payment_id in r.value.decode() for rs in batches.values() for r in rs):
                    break
                if time.monotonic() - sent > 60:
                    raise TimeoutError(f"no settlement of {payment_id} within 60 s")
            times[kind].append((time.monotonic() - sent) * 1000)
            service[kind].append(await payment_service_ms(stack.url("settlement"), handled_before))
        after = await settlement_handler_seconds(stack.url("settlement"))
    finally:
        await settlements.stop()
    handled = after[1] - before[1]
    return {
        "load_s": loaded,
        "automatic_p50": statistics.median(times["automatic"]),
        "marked_p50": statistics.median(times["marked"]),
        "handler_mean": (after[0] - before[0]) / handled * 1000 if handled else float("nan"),
        "automatic_service_p50": statistics.median(service["automatic"]),
        "marked_service_p50": statistics.median(service["marked"]),
    }


async def payment_service_ms(url: str, before: tuple[float, float]) -> float:
    """Settlement's handler time for the one payment sent since `before` (its handler metric is observed once
    per fetch, and a payment sent alone is a fetch of its own), in ms."""
    for _ in range(50):  # the metric is observed just after the commit the settlement came out of
        total, count = await settlement_handler_seconds(url)
        if count > before[1]:
            return (total - before[0]) / (count - before[1]) * 1000
        await asyncio.sleep(0.02)
    return float("nan")


# --- aged balances over a large read model -------------------------------------------------------------


async def seed_collections(database_url: str, transactions: int, customers: int) -> None:
    """Load the read model straight into collections' tables, without the broker: COPY on PostgreSQL,
    the service's own bulk insert (tables.add_transactions) on SQLite. Every tenth invoice is half paid."""
    from kredit_collections import tables
    from kredit_collections.domain import CustomerTransaction, SettlementDelta

    rng = random.Random(11)
    start = dt.date(2024, 1, 1)
    rows: list[CustomerTransaction] = []
    deltas: list[SettlementDelta] = []
    for c in range(customers):
        account = f"A{c:05d}"
        for n in range(transactions // customers):
            day = start + dt.timedelta(days=rng.randrange(365))
            amount = Decimal(rng.randint(100, 500_000)) / 100
            voucher = f"FTI-{account}-{n:04d}"
            rows.append(
                CustomerTransaction(
                    voucher=voucher,
                    transaction_type="Invoice",
                    customer_account=account,
                    transaction_date=day,
                    amount=amount,
                    currency="USD",
                    invoice_id=f"{account}-{n:04d}",
                    due_date=day + dt.timedelta(days=30),
                    customer_name=f"Customer {account}",
                )
            )
            if n % 10 == 0:  # still open, and dates before the payment age the whole amount
                half = -(amount / 2).quantize(Decimal("0.01"))
                deltas.append(SettlementDelta(f"S-{voucher}", voucher, half, day + dt.timedelta(days=20)))
    if database_url.startswith("postgresql"):
        connection = await asyncpg.connect("postgresql://" + database_url.split("://", 1)[1])
        try:
            for table, values in (
                (tables.CustomerTransactionRow.__table__, rows),
                (tables.SettlementDeltaRow.__table__, deltas),
            ):
                records = [asdict(v) for v in values]
                columns = list(records[0])
                await connection.copy_records_to_table(
                    table.name, records=[tuple(r[c] for c in columns) for r in records], columns=columns
                )
            # A table loaded by COPY has no planner statistics until autovacuum reaches it (a minute or more);
            # a table that grew in production has them. Without, the aged page ran ~10x slower right after.
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        return
    from kredit_shared.database import create_engine, create_session_factory

    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        for n in range(0, len(rows), 10_000):
            async with sessions() as session, session.begin():
                if hasattr(tables, "add_transactions"):
                    await tables.add_transactions(session, rows[n : n + 10_000])
                else:  # the code before issue 11 had no bulk write path: a plain Core executemany
                    await (await session.connection()).execute(
                        insert(tables.CustomerTransactionRow.__table__), [asdict(t) for t in rows[n : n + 10_000]]
                    )
        async with sessions() as session, session.begin():
            await (await session.connection()).execute(
                insert(tables.SettlementDeltaRow.__table__), [asdict(d) for d in deltas]
            )
    finally:
        await engine.dispose()


async def bench_aged_balances(
    stack: LocalStack, transactions: int, customers: int, requests: int, page_requests: int
) -> dict[str, Any]:
    first = stack.replicas_of("collections")[0]
    database = await stack._database(f"collections-aged-{uuid.uuid4().hex[:6]}")
    process = ServiceProcess(
        "collections",
        len(stack.processes) + 1,
        free_port(),
        first.env | {"DATABASE_URL": database, "TOPIC_PREFIX": f"bench-aged-{uuid.uuid4().hex[:6]}."},
        stack.data_dir / "logs" / "collections-aged.log",
    )
    process.env["HTTP_PORT"] = str(process.port)
    process.env["RATE_LIMIT_EXPENSIVE_READS_PER_MINUTE"] = "0"  # the timed reads are many and expensive by design
    stack.processes.append(process)
    process.start()
    try:
        await stack.wait_healthy([process], timeout=120)  # its tables exist
        started = time.monotonic()
        await seed_collections(database, transactions, customers)
        seeded = time.monotonic() - started
        print(f"    loaded in {seeded:.0f} s", flush=True)
        some = f"A{customers * 3 // 7:05d}"
        queries = {  # the code before issue 11 ignores limit, cursor and customer_account: all customers
            "default (first page)": {"as_of": "2025-01-31"},
            "next page (cursor)": {"as_of": "2025-01-31", "cursor": "A00099"},
            "one customer": {"as_of": "2025-01-31", "customer_account": some},
            "as of 2024-09-30": {"as_of": "2024-09-30"},
            "limit 1000": {"as_of": "2025-01-31", "limit": 1000},
        }
        figures: dict[str, Any] = {"seed_s": seeded}
        async with httpx.AsyncClient(base_url=process.url, timeout=600, headers=stack.auth("viewer")) as client:
            for label, params in queries.items():
                times, rows = [], 0
                for _ in range(requests):
                    t0 = time.perf_counter()
                    response = await client.get("/api/v1/aged-balances", params=params)
                    times.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                    rows = len(response.json()["customers"])
                figures[label] = (statistics.median(times), rows)
                print(f"    {label}: {figures[label][0]:,.0f} ms, {rows} rows", flush=True)
            figures |= await time_aged_workspace(client, page_requests)
        figures["rss_mib"] = peak_rss_mib(process)
        return figures
    finally:
        process.stop()


async def time_aged_workspace(client: httpx.AsyncClient, requests: int) -> dict[str, tuple[float, int]]:
    """The collections workspace's aged balances page and its CSV (every customer's sums: totals, sorting,
    search), median of `requests` each, in ms, with the rows they show."""
    pages = {
        "workspace page": ("/", {"as_of": "2025-01-31"}),
        "workspace by balance": ("/", {"as_of": "2025-01-31", "sort": "balance", "desc": "true", "page": 3}),
        "workspace CSV": ("/api/v1/aged-balances.csv", {"as_of": "2025-01-31", "q": "A001"}),
    }
    figures: dict[str, tuple[float, int]] = {}
    for label, (path, params) in pages.items() if requests else ():
        times, rows = [], 0
        for _ in range(requests):
            t0 = time.perf_counter()
            response = await client.get(path, params=params)
            times.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
            rows = (
                response.text.count("\n") - 1 if path.endswith(".csv") else response.text.count('<a href="/customers/')
            )
        figures[label] = (statistics.median(times), rows)
        print(f"    {label}: {figures[label][0]:,.0f} ms, {rows} rows", flush=True)
    return figures


def peak_rss_mib(process: ServiceProcess) -> float | None:
    """VmHWM (peak resident set) of a running process we started."""
    if not process.running():
        return None
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


async def idle_cpu(stack: LocalStack, seconds: float) -> dict[str, float]:
    """Each process's CPU, % of one core, while the stack has nothing to do (after a few idle fetches have
    lengthened the consumers' waits: kredit_shared.fetch_pacing)."""
    await asyncio.sleep(2)
    before, started = cpu_snapshot(stack), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = cpu_snapshot(stack), time.monotonic() - started
    return {label: 100 * (after[label] - before[label]) / elapsed for label in before if label != "bench"}


async def bench_throughput(
    name: str,
    stack: LocalStack,
    producer: AIOKafkaProducer,
    paced: AIOKafkaProducer,
    args: argparse.Namespace,
    workdir: Path,
    result: dict[str, Any],
) -> None:
    """The raw hop, invoices and payments/s, the paced latencies and collections' catch-up."""
    print(f"  {name}: raw hop ...", flush=True)
    result["raw"] = [await bench_raw_hop(stack, producer, args.raw, workdir) for _ in range(args.repeats)]
    print(f"  {name}: raw hop {', '.join(f'{r:.0f}' for r in result['raw'])} records/s", flush=True)
    async with Database(stack.replicas_of("ledger-posting")[0].env["DATABASE_URL"]) as ledger:
        pipeline = Pipeline(stack, producer, ledger, args.customers, args.discount_share)
        await pipeline.invoices(1)  # the warm-up waits out every consumer's group join
        if args.idle_seconds:
            result["idle"] = await idle_cpu(stack, args.idle_seconds)
        result["invoices"], result["payments"] = [], []
        for n in range(args.repeats):
            rate, _, made = await pipeline.invoices(args.invoices)
            result["invoices"].append(rate)
            rate, _ = await pipeline.payments(made[: args.payments])
            result["payments"].append(rate)
            print(
                f"  {name}: run {n + 1}: invoices {result['invoices'][-1]:.0f}/s, "
                f"payments {result['payments'][-1]:.0f}/s",
                flush=True,
            )
        result["cpu"], result["fetch_sizes"] = pipeline.cpu, pipeline.fetch_sizes
        pipeline.producer = paced
        _, result["invoice_latency"], made = await pipeline.invoices(args.latency, rate=args.rate)
        _, result["payment_latency"] = await pipeline.payments(made, rate=args.rate)
        print(
            f"  {name}: latency p50 invoices {percentile(result['invoice_latency'], 50):.0f} ms, "
            f"payments {percentile(result['payment_latency'], 50):.0f} ms",
            flush=True,
        )
        pipeline.producer = producer
        print(f"  {name}: collections catch-up ...", flush=True)
        result["catch_up"] = await bench_catch_up(stack, timeout=args.timeout)
        print(f"  {name}: catch-up {result['catch_up'][0]:.0f} records/s", flush=True)


# --- RSS under sustained load ----------------------------------------------------------------------------


async def bench_sustained(
    stack: LocalStack, producer: AIOKafkaProducer, seconds: float, rate: float, interval: float, customers: int
) -> dict[str, Any]:
    """Invoices and payments at a fixed `rate`/s (half each: a payment marks an invoice sent 10 s
    before) for `seconds`; every `interval` s each service's VmRSS, and at the end the consumers' lag."""
    run = uuid.uuid4().hex[:4]
    samples: list[tuple[float, dict[str, int | None]]] = []
    sent, started = 0, time.monotonic()
    waiting: list[tuple[float, str, str, Decimal]] = []  # invoices not paid yet: (sent at, id, customer, amount)
    next_sample = started
    while (now := time.monotonic()) - started < seconds:
        if now >= next_sample:
            samples.append((now - started, stack.rss_kib()))
            print(f"    {now - started:4.0f} s: " + _rss_line(samples[-1][1]), flush=True)
            next_sample += interval
        # The records due by now (at most a second's worth at once, so a stall does not turn into a burst).
        due = min(int((now - started) * rate) - sent, max(1, int(rate)))
        for _ in range(max(due, 0)):
            if sent % 2 == 0 or not waiting or waiting[0][0] > now - 10:
                invoice_id, customer = f"S{run}-{sent:07d}", f"S{run}-C{sent % customers:04d}"
                amount = Decimal(random.randint(100, 999_999)) / 100
                value = invoice_message(invoice_id, customer, amount)
                await producer.send(topics.ERP_CUSTOMER_INVOICES, value, key=customer.encode())
                waiting.append((now, invoice_id, customer, amount))
            else:
                _, invoice_id, customer, amount = waiting.pop(0)
                value = payment_message(f"{invoice_id}-P", customer, amount, invoice_id)
                await producer.send(topics.ERP_CUSTOMER_PAYMENTS, value, key=customer.encode())
            sent += 1
        await asyncio.sleep(0.05)
    samples.append((time.monotonic() - started, stack.rss_kib()))
    print(f"    {samples[-1][0]:4.0f} s: " + _rss_line(samples[-1][1]), flush=True)
    return {"samples": samples, "sent": sent, "lag": await stack.lag()}


def _rss_line(rss: dict[str, int | None]) -> str:
    return ", ".join(f"{label} {kib / 1024:.0f}" for label, kib in sorted(rss.items()) if kib)


def sustained_table(result: dict[str, Any]) -> list[list[str]]:
    """Per service: RSS at minute 2 and at the end (the sample nearest each), and their ratio."""
    samples = result["samples"]
    at_two = min(samples, key=lambda s: abs(s[0] - 120))
    last = samples[-1]
    rows = []
    for label in sorted(last[1]):
        early, late = at_two[1].get(label), last[1].get(label)
        if early and late:
            rows.append([label, f"{early / 1024:.0f}", f"{late / 1024:.0f}", f"{late / early:.3f}"])
    return rows


# --- one database --------------------------------------------------------------------------------


async def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"database": name}
    async with LocalStack(workdir / name, postgres=name == "postgresql", replicas=args.replicas) as stack:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
        )
        paced = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        await paced.start()
        try:
            if "throughput" in args.stages:
                await bench_throughput(name, stack, producer, paced, args, workdir, result)
            if "big" in args.stages and args.big_customer:
                print(f"  {name}: a customer with {args.big_customer} open invoices ...", flush=True)
                async with Database(stack.replicas_of("ledger-posting")[0].env["DATABASE_URL"]) as ledger:
                    pipeline = Pipeline(stack, producer, ledger, args.customers)
                    result["big"] = await bench_big_customer(pipeline, args.big_customer, args.big_payments)
                print(f"  {name}: {result['big']}", flush=True)
            if "sustained" in args.stages and args.sustained_seconds:
                print(f"  {name}: {args.sustained_seconds:.0f} s at {args.sustained_rate:g} messages/s ...", flush=True)
                result["sustained"] = await bench_sustained(
                    stack, paced, args.sustained_seconds, args.sustained_rate, args.sustained_sample, args.customers
                )
            result["rss"] = {p.label: peak_rss_mib(p) for p in stack.processes if p.running()}
            if "aged" in args.stages and args.aged_transactions:
                print(f"  {name}: aged balances over {args.aged_transactions} transactions ...", flush=True)
                result["aged"] = await bench_aged_balances(
                    stack, args.aged_transactions, args.aged_customers, args.aged_requests, args.aged_page_requests
                )
                print(f"  {name}: {result['aged']}", flush=True)
        finally:
            await producer.stop()
            await paced.stop()
    return result


def report_throughput(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def med(values: list[float]) -> str:
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

    rows = []
    for r in results:
        raw = statistics.median(r["raw"])
        rows.append([r["database"], "raw broker hop (consume->produce)", med(r["raw"]), "1.000"])
        for key, label in (
            ("invoices", "invoices ERP -> ledger"),
            ("payments", "payments ERP -> settlement -> ledger"),
        ):
            rows.append([r["database"], label, med(r[key]), f"{statistics.median(r[key]) / raw:.3f}"])
        rate, records = r["catch_up"]
        rows.append([r["database"], f"collections catch-up ({records} records)", f"{rate:,.0f}", f"{rate / raw:.3f}"])
    print(render_table(["database", "msg/s", "median (range)", "ratio to raw hop"], rows))

    if idle := [r for r in results if "idle" in r]:
        print(f"\nan idle stack's CPU over {args.idle_seconds:g} s, % of one core")
        rows = [
            [
                r["database"],
                f"{sum(r['idle'].values()):.1f}",
                " ".join(f"{label}: {v:.1f}" for label, v in sorted(r["idle"].items())),
            ]
            for r in idle
        ]
        print(render_table(["database", "total", "per process"], rows))
    print(f"\nend-to-end latency at {args.rate:g}/s (ERP send -> posted in the ledger), ms")
    rows = []
    for r in results:
        for key, label in (("invoice_latency", "invoices"), ("payment_latency", "payments")):
            values = r[key]
            rows.append(
                [r["database"], label, len(values), f"{percentile(values, 50):.0f}", f"{percentile(values, 99):.0f}"]
            )
    print(render_table(["database", "messages", "n", "p50", "p99"], rows))


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nKredit pipeline benchmark — {os.cpu_count()} cores ({platform.machine()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}), shared with whatever else runs; "
        f"Tansu broker (memory), one per database; medians of {args.repeats} (range)."
    )
    if args.replicas:
        print("replicas: " + ", ".join(f"{service} ×{count}" for service, count in sorted(args.replicas.items())))

    if throughput := [r for r in results if "raw" in r]:
        report_throughput(throughput, args)

    if any("big" in r for r in results):
        print(
            f"\npayment vs one customer with {args.big_customer} open invoices "
            "(ERP send -> OpenItemsSettled on ar.settlements, two broker hops included; handler = settlement's mean)"
        )
        rows = [
            [
                r["database"],
                f"{r['big']['load_s']:.0f}",
                f"{r['big']['automatic_p50']:.0f}",
                f"{r['big']['marked_p50']:.0f}",
                f"{r['big']['handler_mean']:.0f}",
                f"{r['big']['automatic_service_p50']:.1f}",
                f"{r['big']['marked_service_p50']:.1f}",
            ]
            for r in results
            if "big" in r
        ]
        headers = ["database", "load s", "automatic p50 ms", "marked p50 ms", "handler mean ms"]
        print(render_table([*headers, "service p50 automatic ms", "service p50 marked ms"], rows))

    if any("aged" in r for r in results):
        print(
            f"\nGET /api/v1/aged-balances over {args.aged_transactions:,} open transactions of "
            f"{args.aged_customers:,} customers (median of {args.aged_requests}), ms (rows)"
        )
        labels = [k for k in results[0].get("aged", {}) if isinstance(results[0]["aged"][k], tuple)]
        rows = [
            [r["database"], f"{r['aged']['seed_s']:.0f}"]
            + [f"{r['aged'][k][0]:,.0f} ({r['aged'][k][1]})" for k in labels]
            for r in results
            if "aged" in r
        ]
        print(render_table(["database", "load s", *labels], rows))

    for r in results:
        if "sustained" in r:
            found = r["sustained"]
            print(
                f"\nRSS under sustained load on {r['database']}: {found['sent']} invoices and payments at "
                f"{args.sustained_rate:g}/s for {args.sustained_seconds:.0f} s (VmRSS, MiB; lag at the end "
                f"{found['lag']})"
            )
            print(render_table(["service", "at minute 2", "at the end", "end / minute 2"], sustained_table(found)))

    if any("cpu" in r for r in results):
        print(
            "\nCPU per message in the throughput runs (user + system, every process's CPU time over the run / "
            "messages; the processes still at work on the previous stage count too), ms, median"
        )
        rows = []
        for r in results:
            for stage, per_process in r.get("cpu", {}).items():
                medians = {label: statistics.median(v) for label, v in per_process.items()}
                shown = [f"{label}: {v:.2f}" for label, v in sorted(medians.items()) if v >= 0.005]
                rows.append([r["database"], stage, f"{sum(medians.values()):.2f}", " ".join(shown)])
        print(render_table(["database", "stage", "total", "per process"], rows))
        print(
            "\nmessages per fetch in the throughput runs (each handler's fetches and messages from its /metrics; "
            "a fetch's fixed cost, one transaction and its statements, is shared by that many), median"
        )
        rows = [
            [r["database"], stage, key, f"{statistics.median(sizes):.1f}"]
            for r in results
            for stage, per_key in r.get("fetch_sizes", {}).items()
            for key, sizes in sorted(per_key.items())
        ]
        print(render_table(["database", "stage", "process and topic", "messages per fetch"], rows))

    print("\npeak RSS (VmHWM) per service process, MiB")
    rows = [[r["database"]] + [f"{label}: {v:.0f}" for label, v in sorted(r["rss"].items()) if v] for r in results]
    width = max(len(row) for row in rows)
    print(render_table(["database"] + [""] * (width - 1), [row + [""] * (width - len(row)) for row in rows]))


async def amain(args: argparse.Namespace) -> int:
    print(
        f"{args.invoices} invoices and {args.payments} payments per run, {args.repeats} runs, "
        f"{args.latency} of each at {args.rate:g}/s; databases: {', '.join(args.databases)}"
        + (f"; {args.discount_share:.0%} of the payments take a cash discount" if args.discount_share else ""),
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in args.databases:
            results.append(await bench_database(name, args, Path(tmp)))
    report(results, args)
    return 0


def replica_counts(text: str) -> dict[str, int]:
    """`settlement=2,collections=2` -> {"settlement": 2, "collections": 2}."""
    counts: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        service, _, count = item.partition("=")
        if service not in SERVICES or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected <service>=<count ≥ 1>, services {', '.join(SERVICES)}"
            )
        counts[service] = int(count)
    return counts


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-relay":
        # On the event loop the services run on (uvicorn picks uvloop), so the ceiling is a like-for-like hop.
        uvloop.run(raw_relay(*sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql", type=lambda s: [d for d in s.split(",") if d])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--raw", type=int, default=20000, help="records per raw-hop run")
    parser.add_argument("--invoices", type=int, default=5000, help="invoices per throughput run")
    parser.add_argument("--payments", type=int, default=5000, help="payments per throughput run (<= invoices)")
    parser.add_argument("--customers", type=int, default=200, help="customers the invoices of a run spread over")
    parser.add_argument(
        "--discount-share",
        type=float,
        default=0.0,
        help="of the throughput runs' payments, the share paid within the discount period, taking the cash discount",
    )
    parser.add_argument("--latency", type=int, default=1000, help="invoices and payments of the paced runs")
    parser.add_argument("--rate", type=float, default=200, help="messages/s of the paced runs")
    parser.add_argument("--idle-seconds", type=float, default=10, help="the idle stack's CPU over this long (0: skip)")
    parser.add_argument("--big-customer", type=int, default=10000, help="open invoices of one customer (0: skip)")
    parser.add_argument("--big-payments", type=int, default=40, help="payments against that customer")
    parser.add_argument("--aged-transactions", type=int, default=1_000_000, help="0: skip the aged balances figure")
    parser.add_argument("--aged-customers", type=int, default=10_000)
    parser.add_argument("--aged-requests", type=int, default=7)
    parser.add_argument("--aged-page-requests", type=int, default=3, help="of the workspace page and CSV (0: skip)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds any one stage may take")
    parser.add_argument("--sustained-seconds", type=float, default=600, help="length of the sustained-load stage")
    parser.add_argument("--sustained-rate", type=float, default=40, help="invoices + payments per second in it")
    parser.add_argument("--sustained-sample", type=float, default=30, help="seconds between RSS samples")
    parser.add_argument(
        "--replicas",
        default={},
        type=replica_counts,
        help="processes of a service, e.g. settlement=2 (default one each): a scaled-out stack on the same cores",
    )
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        type=lambda s: [x for x in s.split(",") if x],
        help=f"which stages to run, of {','.join(STAGES)} (default all)",
    )
    args = parser.parse_args()
    if unknown := set(args.databases) - {"sqlite", "postgresql"}:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    if unknown := set(args.stages) - set(STAGES):
        parser.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    args.payments = min(args.payments, args.invoices)
    run_tool("bench", amain(args))


if __name__ == "__main__":
    main()
