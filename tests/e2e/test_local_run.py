"""`make run`'s supervisor: the whole stack healthy within 60 s, stopped cleanly, clear errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kredit_shared.service import port_is_free
from kredit_shared.testing import free_port

pytestmark = pytest.mark.slow
RUN_LOCAL = Path(__file__).parents[2] / "scripts" / "run_local.py"
SERVICES = ("COLLECTIONS", "INVOICING", "SETTLEMENT", "LEDGER_POSTING")


@pytest.fixture
def ports() -> dict[str, int]:
    return {"KAFKA_PORT": free_port()} | {f"{name}_PORT": free_port() for name in SERVICES}


def start(ports: dict[str, int], data_dir: Path, dotenv: bool = False) -> subprocess.Popen:
    """Ports from the environment, or (dotenv) from a `.env` file in the working directory only."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS" and k not in ports}
    if dotenv:
        (data_dir / ".env").write_text("".join(f"{key}={port}\n" for key, port in ports.items()))
    else:
        env |= {key: str(port) for key, port in ports.items()}
    env["DATA_DIR"] = str(data_dir)
    return subprocess.Popen(
        [sys.executable, str(RUN_LOCAL)],
        env=env,
        cwd=data_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status
    except OSError:
        return None


def api_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_local_stack_takes_its_ports_from_dotenv_is_healthy_within_a_minute_and_stops_without_orphans(
    ports, tmp_path
):
    stack = start(ports, tmp_path, dotenv=True)
    try:
        started = time.monotonic()
        for line in stack.stdout:
            if line.startswith("kredit: running"):
                break
        elapsed = time.monotonic() - started
        assert elapsed < 60, f"took {elapsed:.0f}s"
        assert [status(ports[f"{name}_PORT"]) for name in SERVICES] == [200, 200, 200, 200]
        printed = []
        for line in stack.stdout:
            printed.append(line)
            if "make demo" in line:
                break
        # The authentication contract: one token per role under <data folder>/tokens, said where.
        assert f"{tmp_path / 'tokens'}/<role>.token" in "".join(printed)
        assert "kredit token --role collector --subject ann" in "".join(printed)
        url = f"http://127.0.0.1:{ports['COLLECTIONS_PORT']}/api/v1/aged-balances"
        assert api_status(url) == 401
        for role in ("viewer", "collector", "accountant", "admin"):
            token = (tmp_path / "tokens" / f"{role}.token").read_text().strip()
            assert api_status(url, token) == 200, role
        assert {p.name for p in tmp_path.glob("*.db")} == {
            "collections.db",
            "invoicing.db",
            "settlement.db",
            "ledger-posting.db",
        }

        stack.send_signal(signal.SIGTERM)
        assert stack.wait(30) == 0
        # An orphaned service or broker would still hold its port.
        assert all(port_is_free("127.0.0.1", port) for port in ports.values())
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()


def test_a_port_already_in_use_gives_a_clear_message_not_a_traceback(ports, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["SETTLEMENT_PORT"]))
        taken.listen()
        stack = start(ports, tmp_path)
        output, _ = stack.communicate(timeout=30)
    assert stack.returncode == 1
    assert f"port {ports['SETTLEMENT_PORT']} for settlement is already in use" in output
    assert "Traceback" not in output
