"""The stack as real processes (broker from the root conftest, four services on SQLite, each on a free
port) fed with the source scenario of scripts/demo.py, and headless Chromium driven by Playwright.

Chromium is Debian's package at /usr/bin/chromium (`make test` installs it when it can); without it,
or without Playwright, every browser test is skipped and says why."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kredit_shared.auth import Role
from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, ERP_CUSTOMER_PAYMENTS
from kredit_shared.testing import (
    free_port,
    isolated_kafka,
    publish,
    service_process,
    token_header,
    wait_until_healthy,
)

CHROMIUM = "/usr/bin/chromium"
DEMO = Path(__file__).parents[2] / "scripts" / "demo.py"
SERVICES = {
    "ledger": "kredit_ledger_posting",
    "invoicing": "kredit_invoicing",
    "settlement": "kredit_settlement",
    "collections": "kredit_collections",
}


@dataclass
class RunningStack:
    ports: dict[str, int]

    def url(self, path: str = "/", service: str = "collections") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"


def demo_messages():
    """The source scenario as `make demo` publishes it (scripts/demo.py is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("kredit_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo.INVOICES, demo.PAYMENTS


def wait_for(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s")


@pytest.fixture(scope="module")
def running_stack(kafka, tmp_path_factory) -> Iterator[RunningStack]:
    folder = tmp_path_factory.mktemp("browser-stack")
    isolated = isolated_kafka(kafka)
    prefix = isolated["topic_prefix"]
    ports = {name: free_port() for name in SERVICES}
    common = {key.upper(): str(value) for key, value in isolated.items()}
    with contextlib.ExitStack() as processes:
        for name, package in SERVICES.items():
            env = common | {
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(ports[name]),
                "DATABASE_URL": f"sqlite+aiosqlite:///{folder / name}.db",
                "LEDGER_POSTING_URL": f"http://127.0.0.1:{ports['ledger']}",
                # The pages reload until messages have arrived; the limits have tests of their own.
                "RATE_LIMIT_EXPENSIVE_READS_PER_MINUTE": "0",
            }
            process = processes.enter_context(service_process(package, env, str(folder / f"{name}.log")))
            wait_until_healthy(ports[name], process=process)
        stack = RunningStack(ports)

        invoices, payments = demo_messages()
        for message in invoices:
            asyncio.run(
                publish(
                    kafka.bootstrap_servers, prefix + ERP_CUSTOMER_INVOICES, message, key=message["customer_account"]
                )
            )

        def all_open_in_settlement() -> bool:  # payments settle only invoices settlement already holds
            for message in invoices:
                account = message["customer_account"]
                response = httpx.get(
                    stack.url(f"/api/v1/customers/{account}/open-transactions", "settlement"),
                    headers=token_header(Role.viewer),
                )
                if response.status_code != 200 or message["invoice_id"] not in response.text:
                    return False
            return True

        wait_for(all_open_in_settlement, what="every demo invoice open in settlement")
        for message in payments:
            asyncio.run(
                publish(
                    kafka.bootstrap_servers, prefix + ERP_CUSTOMER_PAYMENTS, message, key=message["customer_account"]
                )
            )
        yield stack


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package when run as root "
            "with apt-get; install it (apt-get install chromium) to run the browser tests"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (it is in the dev group: run `make setup`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def shoot(page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG under the test's tmp dir; also copied to $UI_SHOTS_DIR when that is set."""
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    if folder := os.environ.get("UI_SHOTS_DIR"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / shot.name)
    return shot


def sign_in(page, stack: RunningStack, role: str) -> None:
    """The one-click sign-in of the local run (the services verify with the locally generated key)."""
    page.goto(stack.url("/signin"))
    page.click(f"#as-{role}")
    page.wait_for_selector("#signed-in-as")


def sign_out(page) -> None:
    page.click("#sign-out")
    page.wait_for_selector("#token-form")


@pytest.fixture
def page(browser, tmp_path, request):
    """A fresh page; a screenshot of where it ended is saved under the test's tmp dir (also on failure)."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    with contextlib.suppress(Exception):
        page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
