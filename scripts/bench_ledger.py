"""Benchmark (not a test): ledger-posting throughput and end-to-end latency, on SQLite and PostgreSQL.

Starts the real ledger-posting service as a process (`python -m kredit_ledger_posting`) against the
real broker (KAFKA_BOOTSTRAP_SERVERS with a unique topic prefix, else a Tansu broker of our own) and
one database: a temp SQLite file, then a fresh PostgreSQL database (skipped when none is reachable).
It publishes balanced two-line vouchers (debit 130100 / credit 401100, random amounts, unique
voucher numbers) to `gl.journal-lines` with one aiokafka producer (acks=all) and reads
`ledger_posted_voucher.posted_at` (set by the service in the transaction that posts the voucher)
straight from the database once all of them are posted.

- throughput: N vouchers sent as fast as possible (pipelined, linger 5 ms);
  vouchers/s = N / (last posted_at - first send time).
- latency: N/2 vouchers paced at R/s (linger 0); latency = posted_at - that voucher's send time.

Each pair of runs is repeated (--repeats, default 3) on the same service process; the table shows
the median of the repeats. Finally the service's trial balance must balance and equal the sum sent.

    uv run python scripts/bench_ledger.py [--vouchers 2000] [--rate 200] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from kredit_shared.auth import Role, ensure_local_key, mint_token, read_local_key
from kredit_shared.contracts import GL_JOURNAL_LINES
from kredit_shared.testing import (
    free_port,
    fresh_postgres_database,
    postgres_server,
    service_process,
    tansu_broker,
    wait_until_healthy,
)


class PostedVouchers:
    """Reads `voucher, posted_at` of the vouchers with a given prefix from the service's database."""

    def __init__(self, url: str) -> None:
        self.url, self._pg = url, None

    async def __aenter__(self) -> PostedVouchers:
        if not self.url.startswith("sqlite"):
            self._pg = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pg is not None:
            await self._pg.close()

    async def _query(self, sql: str, prefix: str) -> list[tuple]:
        if self._pg is not None:
            return [tuple(r) for r in await self._pg.fetch(sql, prefix + "%")]

        def read() -> list[tuple]:
            with contextlib.closing(sqlite3.connect(self.url.split("///", 1)[1])) as db:
                return db.execute(sql.replace("$1", "?"), (prefix + "%",)).fetchall()

        return await asyncio.to_thread(read)

    async def wait_for(self, prefix: str, count: int, timeout: float) -> dict[str, float]:
        """Poll the count until `count` are posted, then return {voucher: posted_at as epoch seconds}."""
        deadline = time.monotonic() + timeout
        while (
            n := (await self._query("SELECT count(*) FROM ledger_posted_voucher WHERE voucher LIKE $1", prefix))[0][0]
        ) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} of {count} vouchers posted after {timeout:.0f}s")
            await asyncio.sleep(0.1)
        rows = await self._query("SELECT voucher, posted_at FROM ledger_posted_voucher WHERE voucher LIKE $1", prefix)
        return {voucher: _epoch(posted_at) for voucher, posted_at in rows}


def _epoch(value: str | datetime) -> float:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()  # stored as naive UTC


def voucher_message(voucher: str, amount: Decimal) -> bytes:
    return json.dumps(
        {
            "message_id": str(uuid.uuid4()),
            "voucher": voucher,
            "posting_date": "2025-01-15",
            "currency": "USD",
            "source": "bench",
            "description": "benchmark voucher",
            "lines": [{"account": "130100", "debit": str(amount)}, {"account": "401100", "credit": str(amount)}],
        }
    ).encode()


async def publish(
    producer: AIOKafkaProducer, topic: str, vouchers: dict[str, Decimal], rate: float | None
) -> dict[str, float]:
    """Send every voucher (paced at `rate`/s if given); returns each voucher's send time (epoch seconds)."""
    sent, acks, start = {}, [], time.perf_counter()
    for i, (voucher, amount) in enumerate(vouchers.items()):
        if rate and (delay := start + i / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        sent[voucher] = time.time()
        acks.append(await producer.send(topic, voucher_message(voucher, amount), key=voucher.encode()))
    await asyncio.gather(*acks)
    return sent


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


async def bench_database(
    name: str, db_url: str, bootstrap: str, args: argparse.Namespace, workdir: Path
) -> tuple[list[dict], str]:
    port, log = free_port(), workdir / f"ledger-{name}.log"
    topic_prefix = f"bench-{uuid.uuid4().hex[:8]}."  # own topics and consumer group per service
    key_file = ensure_local_key(workdir / "auth" / "signing.key")
    env = {
        "AUTH_SIGNING_KEY_FILE": str(key_file),
        "HTTP_PORT": str(port),
        "DATABASE_URL": db_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_PREFIX": topic_prefix,
        "KAFKA_SESSION_TIMEOUT_MS": "1000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
    }
    topic, results, total_sent = topic_prefix + GL_JOURNAL_LINES, [], Decimal("0.00")
    fast = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    paced = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        with service_process("kredit_ledger_posting", env, str(log)) as process:
            await asyncio.to_thread(wait_until_healthy, port, 60, process)
            await fast.start()
            await paced.start()
            async with PostedVouchers(db_url) as posted:

                async def run(label: str, count: int, rate: float | None, producer: AIOKafkaProducer) -> dict:
                    nonlocal total_sent
                    prefix = f"{label[:1].upper()}{uuid.uuid4().hex[:6]}-"
                    vouchers = {f"{prefix}{i:06d}": Decimal(random.randint(1, 999_999)) / 100 for i in range(count)}
                    total_sent += sum(vouchers.values())
                    sent = await publish(producer, topic, vouchers, rate)
                    at = await posted.wait_for(prefix, count, timeout=60 + count / 20)
                    latencies = [(at[v] - sent[v]) * 1000 for v in vouchers]
                    result = {
                        "database": name,
                        "run": label,
                        "vouchers": count,
                        "rate": count / (max(at.values()) - min(sent.values())),
                        **{f"p{p}": percentile(latencies, p) for p in (50, 90, 99)},
                        "max": max(latencies),
                    }
                    if label != "warmup":
                        print(
                            f"  {name:<10} {label:<10} {count:>6} vouchers  {result['rate']:8.0f}/s  "
                            f"p50 {result['p50']:7.1f} ms  p99 {result['p99']:7.1f} ms",
                            flush=True,
                        )
                    return result

                await run("warmup", 1, None, paced)  # waits out the consumer's group join
                for _ in range(args.repeats):
                    results.append(await run("throughput", args.vouchers, None, fast))
                    results.append(await run("latency", max(1, args.vouchers // 2), args.rate, paced))
            token = mint_token(read_local_key(key_file), "bench", [Role.viewer])
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/trial-balance?as_of=2100-01-01",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                tb = json.load(r)
        debit, credit = Decimal(str(tb["total_debit"])), Decimal(str(tb["total_credit"]))
        ok = debit == credit == total_sent
        verdict = f"{'OK' if ok else 'MISMATCH'}: debit {debit} credit {credit}, sent {total_sent}"
        return results, verdict
    except Exception:
        print(
            f"  {name}: failed; last lines of {log.name}:\n"
            + "".join(log.read_text(errors="replace").splitlines(True)[-20:])
        )
        raise
    finally:
        await fast.stop()
        await paced.stop()


def print_table(results: list[dict], verdicts: dict[str, str], broker: str, rate: float) -> None:
    print(
        f"\nledger-posting, median of the repeats — machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; broker: {broker}"
    )
    header = f"{'database':<11}{'run':<11}{'vouchers':>9}{'vouchers/s':>11}{'(range)':>14}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(header + "\n" + "-" * len(header))
    for key in dict.fromkeys((r["database"], r["run"]) for r in results):
        group = [r for r in results if (r["database"], r["run"]) == key]
        med = {f: statistics.median(r[f] for r in group) for f in ("rate", "p50", "p90", "p99", "max")}
        spread = f"{min(r['rate'] for r in group):.0f}-{max(r['rate'] for r in group):.0f}"
        print(
            f"{key[0]:<11}{key[1]:<11}{group[0]['vouchers']:>9}{med['rate']:>11.0f}{spread:>14}"
            f"{med['p50']:>9.1f}{med['p90']:>9.1f}{med['p99']:>9.1f}{med['max']:>9.1f}"
            + ("  SATURATED" if key[1] == "latency" and med["rate"] < 0.9 * rate else "")
        )
    print("\nthroughput-run latencies are queueing (all sent at once); the latency run is the end-to-end figure.")
    if any(r["run"] == "latency" and r["rate"] < 0.9 * rate for r in results):
        print(
            f"SATURATED: the service posts fewer than the {rate:g}/s sent, so those latencies are queueing;"
            " lower --rate below the throughput figure for end-to-end latency."
        )
    print(
        "Quote medians (this table), not single runs. Broker ceiling for one consume->produce hop: ~27k msg/s, p50 7 ms."
    )
    for name, verdict in verdicts.items():
        print(f"trial balance {name}: {verdict}")


async def amain(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # SIGTERM cleans up like Ctrl-C
    results, verdicts = [], {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or stack.enter_context(tansu_broker())
        broker = f"{bootstrap} ({'KAFKA_BOOTSTRAP_SERVERS' if os.environ.get('KAFKA_BOOTSTRAP_SERVERS') else 'Tansu, memory'})"
        print(
            f"{args.vouchers} vouchers per throughput run, {args.vouchers // 2} at {args.rate:g}/s per latency run, "
            f"{args.repeats} repeats; broker {broker}",
            flush=True,
        )
        for name in args.databases:
            if name == "sqlite":
                found = await bench_database(name, f"sqlite+aiosqlite:///{tmp}/ledger.db", bootstrap, args, Path(tmp))
            else:
                async with postgres_server() as admin:
                    if admin is None:
                        print(
                            "  postgresql: skipped, no PostgreSQL server reachable (POSTGRES_URL, 127.0.0.1:5432, Docker)"
                        )
                        continue
                    async with fresh_postgres_database(admin) as url:
                        found = await bench_database(name, url, bootstrap, args, Path(tmp))
            results += found[0]
            verdicts[name] = found[1]
    print_table(results, verdicts, broker, args.rate)
    return 0 if all(v.startswith("OK") for v in verdicts.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vouchers", type=int, default=2000, help="vouchers per throughput run (latency run: half)")
    parser.add_argument("--rate", type=float, default=200, help="vouchers/s of the paced latency run")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", type=lambda s: [d.strip() for d in s.split(",") if d.strip()]
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if unknown := set(args.databases) - {"sqlite", "postgresql"}:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    try:
        raise SystemExit(asyncio.run(amain(args)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; everything started was stopped")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
