"""A throw-away Kredit stack for the external verification tools (`make chaos`, `make fuzz`).

It starts its own Tansu broker and the four services as real processes on free ports, with their
own data folder (SQLite) or fresh PostgreSQL databases, and knows how to kill and restart them by
PID. Everything it talks to is the contract: Kafka topics and HTTP. `async with LocalStack(...)`
stops every process it started and drops every database it created, also on Ctrl-C or failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kredit_shared.auth import local_key_file, local_tokens_dir, write_local_tokens
from kredit_shared.contracts import topics
from kredit_shared.testing import LOCAL_POSTGRES, free_port, stop_process, tansu_binary

HOST = "127.0.0.1"

# (service, python package, the contract topics its consumer group reads): for lag and start-up.
SERVICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ledger-posting": ("kredit_ledger_posting", (topics.GL_JOURNAL_LINES, topics.GL_GENERAL_JOURNALS)),
    "invoicing": ("kredit_invoicing", (topics.ERP_CUSTOMER_INVOICES,)),
    "settlement": (
        "kredit_settlement",
        (topics.AR_CUSTOMER_TRANSACTIONS, topics.ERP_CUSTOMER_PAYMENTS, topics.GL_JOURNAL_EVENTS),
    ),
    "collections": (
        "kredit_collections",
        (topics.AR_CUSTOMER_TRANSACTIONS, topics.AR_SETTLEMENTS, topics.GL_JOURNAL_EVENTS),
    ),
}


def run_tool(name: str, main: Any) -> None:
    """Run a tool's async `main()` and exit with its code. SIGTERM behaves like Ctrl-C, so the `finally`
    blocks stop what the tool started."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        sys.exit(asyncio.run(main))
    except KeyboardInterrupt:
        print(f"{name}: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)


@dataclass
class ServiceProcess:
    """One replica of a service: a `python -m kredit_<svc>` process we started (and may kill)."""

    service: str
    replica: int
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def label(self) -> str:
        return f"{self.service}#{self.replica}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            log.write(f"\n===== start {self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", SERVICES[self.service][0]],
                env=os.environ | self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL our own process, by its PID."""
        if self.running():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace_seconds=10)

    def log_count(self, text: str) -> int:
        """Lines of this replica's log (all its starts) containing `text`."""
        with contextlib.suppress(OSError):
            return sum(text in line for line in self.log.read_text(errors="replace").splitlines())
        return 0

    def rss_kib(self) -> int | None:
        """VmRSS of the process, from /proc (None once it is gone)."""
        if not self.running():
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None


@dataclass
class LocalStack:
    data_dir: Path
    postgres: bool = False
    replicas: dict[str, int] = field(default_factory=dict)  # e.g. {"settlement": 2}; default 1 each
    session_timeout_ms: int = 1000
    heartbeat_interval_ms: int = 200
    broker: subprocess.Popen | None = None
    bootstrap: str = ""
    processes: list[ServiceProcess] = field(default_factory=list)
    _databases: list[str] = field(default_factory=list)

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> LocalStack:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        write_local_tokens(self.data_dir)  # the services verify with its key; the tools use its tokens
        port = free_port()
        address = f"tcp://{HOST}:{port}"
        with open(self.data_dir / "logs" / "broker.log", "ab") as log:
            self.broker = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    address,
                    "--advertised-listener-url",
                    address,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.bootstrap = f"{HOST}:{port}"
        for service in SERVICES:
            database = await self._database(service)
            for replica in range(1, self.replicas.get(service, 1) + 1):
                env = {
                    "HTTP_HOST": HOST,
                    "HTTP_PORT": "0",
                    "DATABASE_URL": database,
                    "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                    "KAFKA_SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
                    "KAFKA_HEARTBEAT_INTERVAL_MS": str(self.heartbeat_interval_ms),
                    "PYTHONUNBUFFERED": "1",
                    "AUTH_SIGNING_KEY_FILE": str(local_key_file(self.data_dir)),
                    # The tools check the books, not the rate limits (tests/http and shared/tests do).
                    "RATE_LIMIT_WRITES_PER_MINUTE": "0",
                    "RATE_LIMIT_EXPENSIVE_READS_PER_MINUTE": "0",
                }
                p = ServiceProcess(
                    service, replica, free_port(), env, self.data_dir / "logs" / f"{service}-{replica}.log"
                )
                p.env["HTTP_PORT"] = str(p.port)
                self.processes.append(p)
        # The first replica of each service creates the schema alone (concurrent create_all on a
        # fresh PostgreSQL database is a known start-up race, not what these tools measure).
        firsts = [p for p in self.processes if p.replica == 1]
        for p in firsts:
            p.start()
        await self.wait_healthy(firsts, timeout=180)
        rest = [p for p in self.processes if p.replica > 1]
        for p in rest:
            p.start()
        await self.wait_healthy(rest, timeout=180)

    async def _database(self, service: str) -> str:
        if not self.postgres:
            return f"sqlite+aiosqlite:///{self.data_dir / service}.db"
        name = f"kredit_tool_{service.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(LOCAL_POSTGRES, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self._databases.append(name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"

    async def close(self) -> None:
        for p in self.processes:
            if p.process is not None and p.process.poll() is None:
                p.process.terminate()
        for p in self.processes:
            p.stop()
        if self.broker is not None:
            stop_process(self.broker)
        for name in self._databases:
            with contextlib.suppress(Exception):
                admin = await asyncpg.connect(LOCAL_POSTGRES, timeout=5)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await admin.close()
        self._databases.clear()

    # --- processes --------------------------------------------------------------------------

    def replicas_of(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.service == service]

    def auth(self, role: str = "viewer") -> dict[str, str]:
        """The Authorization header of the local token for `role` (subject local-<role>)."""
        token = (local_tokens_dir(self.data_dir) / f"{role}.token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def url(self, service: str) -> str:
        """Base URL of a running replica of `service` (the first one that is up)."""
        replicas = self.replicas_of(service)
        return next((p.url for p in replicas if p.running()), replicas[0].url)

    async def wait_healthy(self, processes: Iterable[ServiceProcess], timeout: float = 120) -> float:
        """Seconds until every process answers /healthz 200; raises if one exits or time runs out."""
        waiting = list(processes)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while waiting:
                for p in list(waiting):
                    if not p.running():
                        raise RuntimeError(f"{p.label} exited with {p.process.returncode}; see {p.log}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{p.url}/healthz")).status_code == 200:
                            waiting.remove(p)
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"not healthy after {timeout:.0f}s: {[p.label for p in waiting]}")
                await asyncio.sleep(0.25)
        return time.monotonic() - started

    def rss_kib(self) -> dict[str, int | None]:
        return {p.label: p.rss_kib() for p in self.processes}

    # --- Kafka ------------------------------------------------------------------------------

    async def producer(self) -> AIOKafkaProducer:
        # A batch as large as a request: the fuzzer puts a 1.2 MB record and its valid partner in one batch.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
            max_batch_size=4 * 1024 * 1024,
        )
        await producer.start()
        return producer

    async def lag(self) -> dict[str, int]:
        """Per service: the records its consumer group has not committed yet (end offset − committed)."""
        result = {}
        for service, (_, names) in SERVICES.items():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=f"kredit-{service}", enable_auto_commit=False
            )
            await consumer.start()
            try:
                partitions = [TopicPartition(t, p) for t in names for p in await _partitions(consumer, t)]
                ends = await consumer.end_offsets(partitions)
                lag = 0
                for tp in partitions:
                    committed = await consumer.committed(tp) or 0
                    lag += max(ends[tp] - committed, 0)
                result[service] = lag
            finally:
                await consumer.stop()
        return result

    async def read_topic(self, topic: str) -> list[Any]:
        """Every record of `topic` from the beginning up to its current end (no consumer group)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
            if not partitions:
                return []
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
            records: list[Any] = []
            deadline = time.monotonic() + 60
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} took over 60 s")
                for batch in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                    records.extend(batch)
            return records
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(20):
        found = consumer.partitions_for_topic(topic)
        if found:
            return found
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        await asyncio.sleep(0.1)
    return set()


def header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name and value is not None:
            return value.decode(errors="replace")
    return None


def json_field(value: bytes, name: str) -> Any:
    """A top-level field of a JSON object record, or None (not JSON, not an object, no such field)."""
    try:
        body = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return body.get(name) if isinstance(body, dict) else None


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
