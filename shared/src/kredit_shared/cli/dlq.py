"""`kredit dlq`: list, show, replay and count the dead letters on the `<topic>.dlq` topics.

An entry's ID is its own position, `<dlq topic>:<partition>:<offset>` (without a deployment's topic
prefix). A replay republishes the entry's original value, key and headers to its source topic with
an `x-replay-of: <ID>` header, then notes the ID on the `kredit.dlq-replays` topic, so an entry is
replayed once: `replay` skips entries noted there. (Were the tool stopped between the two, one entry
could go out twice; its consumers' inbox makes the second a no-op, since both carry the same
message_id.) A replay that fails again is a new dead letter, with a new ID, that can be replayed in
its turn.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections import Counter
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kredit_shared.cli.settings import CliSettings
from kredit_shared.contracts.catalog import REPLAY_HEADER, TOPICS
from kredit_shared.contracts.topics import dead_letter_topic
from kredit_shared.outbox import relayed_id

REPLAYS_TOPIC = "kredit.dlq-replays"
T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Dead letters: why records were refused; replay them once fixed.")
console = Console()


@dataclass(frozen=True)
class Entry:
    """One dead letter as it is on its topic."""

    topic: str  # the dead-letter topic, without the prefix
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes | None], ...]

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        value = next((v for k, v in self.headers if k == name), None)
        return value.decode(errors="replace") if value is not None else None

    @property
    def source_topic(self) -> str:
        return self.header("x-dlq-source-topic") or self.topic.removesuffix(".dlq")

    @property
    def reason(self) -> str:
        return self.header("x-dlq-reason") or ""

    @property
    def error_type(self) -> str:
        return self.header("x-dlq-error-type") or ""

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The refused record's own headers: those before the first x-dlq-* header (the dead letter
        keeps them first, in their order; the relay's `message-id` of the letter itself comes last)."""
        kept = []
        for name, value in self.headers:
            if name.startswith("x-dlq-"):
                break
            kept.append((name, value))
        return kept


@dataclass(frozen=True)
class Replay:
    entry: str
    replayed_at: str
    to: str  # where the replayed record went: <topic>:<partition>:<offset>


def _settings() -> CliSettings:
    return CliSettings()


def _dead_letter_topics(topic: str | None) -> list[str]:
    """`--topic` may name the source topic or its dead-letter topic."""
    if topic is None:
        return [dead_letter_topic(t) for t in TOPICS]
    source = topic.removesuffix(".dlq")
    if source not in TOPICS:
        raise typer.BadParameter(
            f"{topic!r} is not a contract topic (known: {', '.join(TOPICS)})", param_hint="--topic"
        )
    return [dead_letter_topic(source)]


async def _read(settings: CliSettings, topics: Sequence[str]) -> list[ConsumerRecord]:
    """Every record now on these topics (prefixed here), from the beginning to their current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    try:
        await consumer.start()
        existing = await consumer.topics()  # a topic nobody wrote to yet has nothing to read
        partitions = [
            TopicPartition(settings.topic(t), p)
            for t in topics
            if settings.topic(t) in existing
            for p in sorted(consumer.partitions_for_topic(settings.topic(t)) or ())
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)])
        return records
    finally:
        await consumer.stop()


async def load_entries(settings: CliSettings, topics: Sequence[str]) -> list[Entry]:
    records = await _read(settings, topics)
    entries = [
        Entry(
            topic=r.topic.removeprefix(settings.topic_prefix),
            partition=r.partition,
            offset=r.offset,
            timestamp=datetime.fromtimestamp(r.timestamp / 1000, UTC),
            key=r.key,
            value=r.value or b"",
            headers=tuple(r.headers or ()),
        )
        for r in records
    ]
    return _once_each(sorted(entries, key=lambda e: (e.timestamp, e.id)))


def _once_each(entries: Iterable[Entry]) -> list[Entry]:
    """Without the copies: the outbox relay publishes at least once, so a service stopped between
    publishing a dead letter and marking it sent publishes it again after its restart. A copy has
    the same `message-id` (the letter's own id, the relay's last header), consumer and source record
    (a replay refused again is a record of its own, at another offset)."""
    seen: set[tuple[str | None, ...]] = set()
    unique = []
    for entry in entries:
        letter_id = relayed_id(entry.headers)
        identity = (letter_id, *(entry.header(f"x-dlq-{h}") for h in ("consumer", "source-partition", "source-offset")))
        if letter_id is None or identity not in seen:
            seen.add(identity)
            unique.append(entry)
    return unique


async def load_replays(settings: CliSettings) -> dict[str, Replay]:
    replays: dict[str, Replay] = {}
    for record in await _read(settings, [REPLAYS_TOPIC]):
        note = json.loads(record.value)
        replays.setdefault(note["entry"], Replay(note["entry"], note["replayed_at"], note["to"]))
    return replays


def parse_since(text: str) -> datetime:
    """`2h`, `30m`, `7d` (that long ago) or an ISO date or date and time (UTC unless it says)."""
    if match := re.fullmatch(r"(\d+)([smhd])", text.strip()):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return datetime.now(UTC) - timedelta(**{unit: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration like 2h or 7d nor an ISO date", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's work; a broker that does not answer is one clear line, not a traceback."""
    try:
        return asyncio.run(coroutine)
    except KafkaConnectionError:
        raise broker_unreachable(CliSettings()) from None


def broker_unreachable(settings: CliSettings) -> typer.Exit:
    console.print(
        f"[red]kredit: no broker answers at {settings.bootstrap_servers}[/red] "
        "(set KAFKA_BOOTSTRAP_SERVERS, or KAFKA_PORT for the local one)",
        soft_wrap=True,
    )
    return typer.Exit(2)


def _text(value: bytes | None) -> str:
    if value is None:
        return "null"
    try:
        return value.decode()
    except UnicodeDecodeError:
        return f"base64:{base64.b64encode(value).decode()}"


TopicOption = Annotated[str | None, typer.Option("--topic", "-t", help="A source topic (or its .dlq); default: all")]


@app.command("list")
def list_entries(
    topic: TopicOption = None,
    since: Annotated[str | None, typer.Option(help="Only entries since: 2h, 7d, or an ISO date/time")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table")] = False,
) -> None:
    """The dead letters, oldest first: where each came from, why, and whether it was replayed."""
    settings = _settings()

    async def work() -> tuple[list[Entry], dict[str, Replay]]:
        return await load_entries(settings, _dead_letter_topics(topic)), await load_replays(settings)

    entries, replays = _run(work())
    if since is not None:
        start = parse_since(since)
        entries = [e for e in entries if e.timestamp >= start]
    if as_json:
        for e in entries:
            replay = replays.get(e.id)
            print(
                json.dumps(
                    {
                        "id": e.id,
                        "time": e.timestamp.isoformat(),
                        "source_topic": e.source_topic,
                        "error_type": e.error_type,
                        "reason": e.reason,
                        "replayed_to": replay.to if replay else None,
                    }
                )
            )
        return
    table = Table("ID", "time (UTC)", "source", "error", "reason", "replayed", title=f"{len(entries)} dead letter(s)")
    for e in entries:
        replay = replays.get(e.id)
        table.add_row(
            e.id,
            e.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            f"{e.source_topic}@{e.header('x-dlq-source-partition') or '-'}:{e.header('x-dlq-source-offset') or '-'}",
            e.error_type,
            e.reason,
            f"yes, as {replay.to}" if replay else "",
        )
    console.print(table)


def _find(entries: Iterable[Entry], entry_id: str) -> Entry:
    entry = next((e for e in entries if e.id == entry_id), None)
    if entry is None:
        console.print(f"[red]no dead letter {entry_id} (IDs as `kredit dlq list` shows them)[/red]")
        raise typer.Exit(1)
    return entry


def _topic_of_id(entry_id: str) -> str:
    topic, *position = entry_id.rsplit(":", 2)
    if (
        len(position) != 2
        or not all(p.isdigit() for p in position)
        or dead_letter_topic(topic.removesuffix(".dlq")) != topic
        or topic.removesuffix(".dlq") not in TOPICS
    ):
        raise typer.BadParameter(f"{entry_id!r} is not a dead letter ID like erp.customer-invoices.dlq:0:12")
    return topic


@app.command("show")
def show(entry_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """One dead letter in full: its headers and its original value."""
    settings = _settings()

    async def work() -> tuple[list[Entry], dict[str, Replay]]:
        return await load_entries(settings, [_topic_of_id(entry_id)]), await load_replays(settings)

    entries, replays = _run(work())
    entry = _find(entries, entry_id)
    console.print(f"[bold]{entry.id}[/bold]  {entry.timestamp.isoformat()}")
    console.print(f"key: {_text(entry.key)}")
    headers = Table("header", "value", show_header=False)
    for name, value in entry.headers:
        headers.add_row(name, _text(value))
    console.print(headers)
    if replay := replays.get(entry.id):
        console.print(f"replayed {replay.replayed_at} as {replay.to}")
    try:
        console.print_json(entry.value.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        console.print(f"value ({len(entry.value)} bytes, not JSON): {_text(entry.value)!r}"[:4000])


async def _replay(settings: CliSettings, entries: Sequence[Entry], progress: Progress | None) -> list[Replay]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await producer.start()
        await admin.start()
        if settings.topic(REPLAYS_TOPIC) not in await admin.list_topics():
            await admin.create_topics([NewTopic(settings.topic(REPLAYS_TOPIC), 1, 1)])
        task = progress.add_task("replaying", total=len(entries)) if progress else None
        done = []
        for entry in entries:
            # A replay of a refused replay names this entry, not the first one.
            kept = [(k, v) for k, v in entry.original_headers() if k != REPLAY_HEADER]
            headers = [*kept, (REPLAY_HEADER, entry.id.encode())]
            sent = await producer.send_and_wait(
                settings.topic(entry.source_topic), entry.value, key=entry.key, headers=headers
            )
            replay = Replay(
                entry.id, datetime.now(UTC).isoformat(), f"{entry.source_topic}:{sent.partition}:{sent.offset}"
            )
            note = json.dumps(dataclasses.asdict(replay)).encode()
            await producer.send_and_wait(settings.topic(REPLAYS_TOPIC), note, key=entry.id.encode())
            done.append(replay)
            if progress is not None and task is not None:
                progress.advance(task)
        return done
    finally:
        await admin.close()
        await producer.stop()


@app.command("replay")
def replay(
    entry_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="The dead letter to replay")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every entry of --topic not replayed yet")] = False,
    topic: TopicOption = None,
) -> None:
    """Republish dead letters to their source topic, once each, after their cause is fixed."""
    if (entry_id is None) == (not replay_all):
        raise typer.BadParameter("give an ID, or --all with --topic")
    if replay_all and topic is None:
        raise typer.BadParameter("--all needs --topic (one source topic at a time)", param_hint="--topic")
    settings = _settings()
    topics = _dead_letter_topics(topic) if replay_all else [_topic_of_id(entry_id or "")]

    async def work() -> tuple[list[Entry], dict[str, Replay]]:
        return await load_entries(settings, topics), await load_replays(settings)

    entries, replays = _run(work())
    chosen = [e for e in entries if replay_all or e.id == entry_id]
    if entry_id is not None:
        _find(chosen, entry_id)
    waiting, skipped = [], []
    for e in chosen:
        if e.id in replays:
            skipped.append(f"{e.id}: replayed before ({replays[e.id].replayed_at}, as {replays[e.id].to})")
        elif e.header("x-dlq-truncated") == "true":
            skipped.append(f"{e.id}: only the first part of the original was kept (x-dlq-truncated); not replayable")
        else:
            waiting.append(e)
    for line in skipped:
        console.print(f"[yellow]skipped {line}[/yellow]")
    if not waiting:
        console.print("nothing to replay")
        return
    with Progress(console=console, transient=False) as progress:
        done = _run(_replay(settings, waiting, progress))
    for r in done:
        console.print(f"replayed {r.entry} as {r.to}")
    console.print(f"[green]{len(done)} replayed[/green], {len(skipped)} skipped")


@app.command("stats")
def stats(topic: TopicOption = None) -> None:
    """Dead letters per topic: how many, of which error types, how many replayed, the oldest waiting."""
    settings = _settings()

    async def work() -> tuple[list[Entry], dict[str, Replay]]:
        return await load_entries(settings, _dead_letter_topics(topic)), await load_replays(settings)

    entries, replays = _run(work())
    table = Table("dead-letter topic", "entries", "by error type", "replayed", "waiting", "oldest waiting (UTC)")
    for name in _dead_letter_topics(topic):
        mine = [e for e in entries if e.topic == name]
        if not mine:
            continue
        waiting = [e for e in mine if e.id not in replays]
        kinds = Counter(e.error_type for e in mine)
        table.add_row(
            name,
            str(len(mine)),
            ", ".join(f"{k or '?'} {n}" for k, n in sorted(kinds.items())),
            str(len(mine) - len(waiting)),
            str(len(waiting)),
            waiting[0].timestamp.strftime("%Y-%m-%d %H:%M:%S") if waiting else "",
        )
    console.print(table if table.row_count else "no dead letters")
