"""Fuzz every service's HTTP API from its OpenAPI with schemathesis (`make fuzz`).

Starts a Tansu broker and the four services on SQLite in a temporary folder (free ports, nothing
shared with `make run`), runs schemathesis against each with a valid token (every role, subject
`fuzz`; the services verify it with a key generated in that folder; rate limits off), prints one row
per service and exits 1 if any answer was a 5xx. Other findings (e.g. a schema detail) are counted
and listed, not fatal. tests/http/test_openapi_fuzz.py runs the same, bounded, in the test suite.

    python scripts/fuzz_http.py [--max-examples 300] [--service settlement] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from contextlib import ExitStack
from pathlib import Path

from kredit_shared.auth import Role, ensure_local_key, local_key_file, mint_token, read_local_key
from kredit_shared.testing import free_port, stop_process, tansu_broker

HOST = "127.0.0.1"
SERVICES = {
    "collections": "kredit_collections",
    "invoicing": "kredit_invoicing",
    "settlement": "kredit_settlement",
    "ledger-posting": "kredit_ledger_posting",
}


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"fuzz: a service exited with {process.returncode} during start-up")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"fuzz: nothing healthy on port {port} after {timeout}s")


def start_services(
    stack: ExitStack, names: list[str], bootstrap: str, folder: Path, extra_env: dict[str, str] | None = None
) -> dict[str, int]:
    """Start the services at once (each stopped when `stack` closes); their ports once all are healthy."""
    started = {name: start_service(stack, name, SERVICES[name], bootstrap, folder, extra_env) for name in names}
    for port, process in started.values():
        wait_healthy(port, process)
    return {name: port for name, (port, _) in started.items()}


def start_service(
    stack: ExitStack, name: str, package: str, bootstrap: str, folder: Path, extra_env: dict[str, str] | None = None
) -> tuple[int, subprocess.Popen]:
    port = free_port()
    env = (
        os.environ
        | {
            "HTTP_PORT": str(port),
            "DATABASE_URL": f"sqlite+aiosqlite:///{folder / name}.db",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_SESSION_TIMEOUT_MS": "1000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
            "AUTH_SIGNING_KEY_FILE": str(ensure_local_key(local_key_file(folder))),
            "RATE_LIMIT_WRITES_PER_MINUTE": "0",  # schemathesis sends thousands; the limits have tests of their own
            "RATE_LIMIT_EXPENSIVE_READS_PER_MINUTE": "0",
        }
        | (extra_env or {})
    )
    with open(folder / f"{name}.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", package], env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_process, process)
    return port, process


def fuzz(
    name: str,
    port: int,
    folder: Path,
    max_examples: int,
    seed: int | None,
    workers: int = 2,
    phases: str = "examples,coverage,fuzzing,stateful",
) -> dict:
    har, junit = folder / f"{name}.har", folder / f"{name}.junit.xml"
    token = mint_token(read_local_key(local_key_file(folder)), "fuzz", list(Role))
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"http://{HOST}:{port}/openapi.json",
        "--max-examples",
        str(max_examples),
        "--checks",
        "all",
        # A schema-valid request may still break a business rule the schema cannot express (a journal
        # name the setup lacks, a ledger-entries query with neither account nor voucher): 422 is right.
        "--exclude-checks",
        "positive_data_acceptance",
        "--workers",
        str(workers),
        "--phases",
        phases,
        "--header",
        f"Authorization: Bearer {token}",
        "--no-color",
        "--request-timeout",
        "10",
        "--report",
        "har,junit",
        "--report-har-path",
        str(har),
        "--report-junit-path",
        str(junit),
        "--generation-database",
        "none",
        # /metrics grows with every request, which would make the run quadratic and test nothing.
        "--exclude-path",
        "/metrics",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    with open(folder / f"{name}.schemathesis.txt", "wb") as output:
        exit_code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False).returncode
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    server_errors = [e for e in entries if e["response"]["status"] >= 500]
    operations, failures = 0, []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            operations += 1
            for failure in [*case.findall("failure"), *case.findall("error")]:
                text = " ".join((failure.text or failure.get("message") or "").split())
                failures.append(f"{case.get('name')}: {text[:600]}")
    return {
        "service": name,
        "operations": operations,
        "requests": len(entries),
        "5xx": len(server_errors),
        "other failures": sum(1 for f in failures if "Server error" not in f),
        "exit": exit_code,
        "failures": failures,
        "5xx examples": [f"{e['request']['method']} {e['request']['url']}" for e in server_errors[:5]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=300, help="test cases per operation and phase")
    parser.add_argument("--service", choices=list(SERVICES), action="append", help="default: all four")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the folder with logs and reports")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kredit-fuzz-"))
    results = []
    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or stack.enter_context(tansu_broker())
        bootstrap = bootstrap.removeprefix("tcp://")
        ports = start_services(stack, args.service or list(SERVICES), bootstrap, folder)
        for name, port in ports.items():
            print(f"fuzzing {name} on port {port} ...", flush=True)
            results.append(fuzz(name, port, folder, args.max_examples, args.seed))

    columns = ["service", "operations", "requests", "5xx", "other failures"]
    print("\n" + "  ".join(f"{c:>14}" for c in columns))
    for result in results:
        print("  ".join(f"{result[c]!s:>14}" for c in columns))
    for result in results:
        for line in result["5xx examples"]:
            print(f"5xx  {result['service']}: {line}")
        for line in result["failures"]:
            print(f"fail {result['service']}: {line}")
    print(f"\nlogs and reports: {folder}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(1 if any(r["5xx"] for r in results) else 0)


if __name__ == "__main__":
    main()
