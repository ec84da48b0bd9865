"""Local use: `make demo` takes the broker and ports from the same settings as `make run` (environment
and .env), never publishes when no stack answers there, and says so in one line; the Makefile's uv
bootstrap works on an externally managed Python (PEP 668), simulated with this machine's Debian 12
/usr/bin/python3."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, ERP_CUSTOMER_PAYMENTS
from kredit_shared.testing import free_port, tansu_broker

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
ENSURE_UV = ROOT / "scripts" / "ensure_uv.sh"


@contextlib.contextmanager
def answering_livez() -> Iterator[int]:
    """A stand-in for a running stack's collections service: /livez answers 200."""

    class Livez(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API
            self.send_response(200 if self.path == "/livez" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Livez)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_demo(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_PORT") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run(
        [sys.executable, str(DEMO)], env=clean | env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def records_on(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return 0
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


def test_the_demo_publishes_to_the_configured_broker_and_prints_curls_for_the_configured_ports(tmp_path):
    ledger_port = free_port()
    with tansu_broker() as bootstrap, answering_livez() as collections_port:
        kafka_port = bootstrap.rsplit(":", 1)[1]
        # the ports come from .env, as `make run` reads them
        (tmp_path / ".env").write_text(
            f"KAFKA_PORT={kafka_port}\nCOLLECTIONS_PORT={collections_port}\nLEDGER_POSTING_PORT={ledger_port}\n"
        )
        result = run_demo(tmp_path)
        assert result.returncode == 0, result.stderr
        assert asyncio.run(records_on(bootstrap, ERP_CUSTOMER_INVOICES)) == 8
        assert asyncio.run(records_on(bootstrap, ERP_CUSTOMER_PAYMENTS)) == 3
    curls = [line for line in result.stdout.splitlines() if "curl" in line]
    assert curls and all(f"localhost:{collections_port}/" in c or f"localhost:{ledger_port}/" in c for c in curls)
    assert any(f"localhost:{ledger_port}/api/v1/trial-balance" in c for c in curls)
    assert ":8080" not in result.stdout and ":8083" not in result.stdout


def test_the_demo_publishes_nothing_when_no_stack_answers_and_says_so_in_one_line(tmp_path):
    with tansu_broker() as bootstrap:
        result = run_demo(tmp_path, KAFKA_BOOTSTRAP_SERVERS=bootstrap, COLLECTIONS_PORT=str(free_port()))
        assert asyncio.run(records_on(bootstrap, ERP_CUSTOMER_INVOICES)) == 0
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no Kredit stack answers" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_demo_without_a_broker_says_so_in_one_line(tmp_path):
    with answering_livez() as collections_port:
        result = run_demo(tmp_path, KAFKA_PORT=str(free_port()), COLLECTIONS_PORT=str(collections_port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"kredit: cannot reach the Kafka broker at 127.0.0.1:{result.stderr.split('127.0.0.1:')[1].split(';')[0]}; "
        "is `make run` up?"
    ]
    assert "Traceback" not in result.stdout


DEBIAN_PYTHON = Path("/usr/bin/python3")


def externally_managed(python: Path) -> bool:
    if not python.exists():
        return False
    stdlib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"], capture_output=True, text=True
    ).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


@pytest.mark.slow
@pytest.mark.parametrize("venv", ["with python3-venv", "without python3-venv"])
def test_uv_is_installed_privately_on_an_externally_managed_python(tmp_path, venv):
    """PATH=/usr/bin:/bin (no uv), Debian's python3 refusing `pip install` (PEP 668): the bootstrap puts
    uv in .venv-tools through a venv, or with `pip install --target` where `python3 -m venv` fails."""
    if not externally_managed(DEBIAN_PYTHON):
        pytest.skip("no externally managed /usr/bin/python3 (Debian 12 / Ubuntu 24.04) here")
    if shutil.which("uv", path="/usr/bin:/bin"):
        pytest.skip("uv is installed in /usr/bin: nothing to bootstrap")
    network = {k: v for k, v in os.environ.items() if k in ("SSL_CERT_FILE", "PIP_CERT", "PIP_INDEX_URL")}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **network}
    refused = subprocess.run(
        [str(DEBIAN_PYTHON), "-m", "pip", "install", "uv"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stdout + refused.stderr
    python = str(DEBIAN_PYTHON)
    if venv == "without python3-venv":  # as on a Debian without the python3-venv package
        wrapper = tmp_path / "python3"
        wrapper.write_text(
            '#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then echo "ensurepip is not available" >&2; exit 1; fi\n'
            f'exec {DEBIAN_PYTHON} "$@"\n'
        )
        wrapper.chmod(0o755)
        python = str(wrapper)
    result = subprocess.run(
        ["sh", str(ENSURE_UV)],
        env=env | {"PYTHON": python},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0 and "connection" in result.stderr.lower():
        pytest.skip(f"PyPI not reachable: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ".venv-tools/bin/uv"
    version = subprocess.run([str(tmp_path / ".venv-tools/bin/uv"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("uv ")
    again = subprocess.run(["sh", str(ENSURE_UV)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == ".venv-tools/bin/uv" and "installing" not in again.stderr  # found, not reinstalled
