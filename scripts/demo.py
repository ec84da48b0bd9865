"""Publish the source scenarios into the running stack, as the upstream ERP would.

1. Customer 4027 (spec 003): invoice 10020 of 1,000.00 on 2015-06-25 (Net30, 1%14D), a partial
   payment of 297.00 on 2015-07-01 and the remaining 700.00 on 2015-07-11.
2. Customers with open invoices to write off (spec 000): US-004 Cave Wholesales (two invoices),
   US-001 Contoso Retail San Diego, Birch company, and invoice CIV-000667.

Message ids are derived from the business keys, so running the demo twice changes nothing. The broker
and the ports come from the same settings as `make run` (environment and `.env`); nothing is published
unless the stack answers on those ports, so the demo never writes into someone else's broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.request
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, ERP_CUSTOMER_PAYMENTS
from kredit_shared.settings import LocalStackSettings

NAMESPACE = uuid.UUID("6b726564-6974-4465-6d6f-000000000000")


def invoice(invoice_id: str, account: str, name: str, date: str, amount: str, tax: str = "0.00", **extra) -> dict:
    return {
        "message_id": str(uuid.uuid5(NAMESPACE, f"invoice/{invoice_id}")),
        "invoice_id": invoice_id,
        "customer_account": account,
        "customer_name": name,
        "invoice_date": date,
        "currency": "USD",
        "payment_terms": "Net30",
        "lines": [{"description": "Goods", "amount": amount, "sales_tax_amount": tax, "revenue_account": "401100"}],
    } | extra


def payment(payment_id: str, account: str, date: str, amount: str, settle: list[dict] | None = None, **extra) -> dict:
    return {
        "message_id": str(uuid.uuid5(NAMESPACE, f"payment/{payment_id}")),
        "payment_id": payment_id,
        "customer_account": account,
        "payment_date": date,
        "amount": amount,
        "currency": "USD",
        **({"settle": settle} if settle else {}),
    } | extra


# A customer billed in EUR (docs/currencies.md): Dynamics 365's exchange-rate example (invoice at 1.10, paid at
# 0.80 with the 2 % discount: a realized loss of 300.00 USD), and an invoice still open, aged in USD.
EUR = {"currency": "EUR"}


INVOICES = [
    invoice("10020", "4027", "Fabrikam customer 4027", "2015-06-25", "1000.00", cash_discount_code="1%14D"),
    invoice("CW-1001", "US-004", "Cave Wholesales", "2015-03-10", "450.00"),
    invoice("CW-1002", "US-004", "Cave Wholesales", "2015-04-02", "180.00", "20.00"),
    invoice("CR-2001", "US-001", "Contoso Retail San Diego", "2015-05-15", "1200.00", "100.00"),
    invoice("BI-3001", "US-010", "Birch company", "2015-02-01", "75.00"),
    invoice("CIV-000667", "US-002", "Contoso Retail Los Angeles", "2015-01-20", "320.00"),
    invoice(
        "EU-1001",
        "DE-001",
        "Fabrikam Deutschland",
        "2015-06-25",
        "1000.00",
        **EUR,
        exchange_rate="1.10",
        cash_discount_code="2%10D",
    ),
    invoice("EU-1002", "DE-001", "Fabrikam Deutschland", "2015-07-10", "500.00", **EUR, exchange_rate="1.12"),
]
PAYMENTS = [
    payment(
        "ARP-10020",
        "4027",
        "2015-07-01",
        "297.00",
        [{"invoice_id": "10020", "amount_to_settle": "297.00", "use_cash_discount": "Normal"}],
    ),
    payment(
        "ARP-10021",
        "4027",
        "2015-07-11",
        "700.00",
        [{"invoice_id": "10020", "amount_to_settle": "700.00", "use_cash_discount": "Normal"}],
    ),
    payment("EUP-1001", "DE-001", "2015-07-01", "980.00", [{"invoice_id": "EU-1001"}], **EUR, exchange_rate="0.80"),
]


def stack_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


async def publish_scenarios(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
        for message in INVOICES:
            await producer.send_and_wait(
                ERP_CUSTOMER_INVOICES, json.dumps(message).encode(), key=message["customer_account"].encode()
            )
        # The payments follow once the invoice is open in settlement (a real bank file arrives days later).
        await asyncio.sleep(2)
        for message in PAYMENTS:
            await producer.send_and_wait(
                ERP_CUSTOMER_PAYMENTS, json.dumps(message).encode(), key=message["customer_account"].encode()
            )
    finally:
        await producer.stop()


def main() -> int:
    logging.getLogger("aiokafka").disabled = True  # its connection errors would repeat our one line
    settings = LocalStackSettings()
    collections = settings.port("collections")
    if not stack_answers(collections):
        print(
            f"kredit: no Kredit stack answers on http://127.0.0.1:{collections} (start it with `make run`; "
            f"the ports and the broker come from the environment and .env)",
            file=sys.stderr,
        )
        return 1
    try:
        asyncio.run(publish_scenarios(settings.bootstrap))
    except KafkaConnectionError:
        print(f"kredit: cannot reach the Kafka broker at {settings.bootstrap}; is `make run` up?", file=sys.stderr)
        return 1
    print(f"published {len(INVOICES)} invoices and {len(PAYMENTS)} payments to {settings.bootstrap}. Try:")
    for line in try_commands(settings.data_dir, collections, settings.port("ledger-posting")):
        print(line)
    return 0


def try_commands(data_dir: Path, collections: int, ledger: int) -> list[str]:
    """curl commands against the running stack, each with the token of the role it needs (the local
    run writes them to <data folder>/tokens/). The write-off is requested by local-collector and its
    journal posted by local-accountant: with four-eyes on, the requester may not post it."""
    tokens = data_dir / "tokens"

    def auth(role: str) -> str:
        return f'-H "Authorization: Bearer $(cat {tokens / role}.token)"'

    return [
        f"  curl -s {auth('viewer')} localhost:{collections}/api/v1/customers/4027/transactions",
        f"  curl -s {auth('viewer')} 'localhost:{collections}/api/v1/aged-balances?as_of=2015-09-30'",
        f"  curl -s {auth('viewer')} localhost:{collections}/api/v1/customers/DE-001/transactions  # EUR and USD",
        f"  curl -s {auth('collector')} -XPOST localhost:{collections}/api/v1/write-offs "
        '-H \'content-type: application/json\' -d \'{"customer_account": "US-004", "reason_comment": "Bad debt"}\'',
        f"  curl -s {auth('viewer')} 'localhost:{ledger}/api/v1/journals?journal_name=WriteOff&status=open'",
        f"  curl -s {auth('accountant')} -XPOST localhost:{ledger}/api/v1/journals/WOJ-000001/post",
        f"  curl -s {auth('viewer')} 'localhost:{ledger}/api/v1/trial-balance?as_of=2015-12-31'",
        f"  curl -s {auth('admin')} localhost:{ledger}/api/v1/audit",
        f"tokens for other people: .venv/bin/kredit token --role collector --subject ann --data-dir {data_dir}",
    ]


if __name__ == "__main__":
    sys.exit(main())
