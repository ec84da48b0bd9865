"""Publish the source scenarios into the running stack, as the upstream ERP would.

1. Customer 4027 (spec 003): invoice 10020 of 1,000.00 on 2015-06-25 (Net30, 1%14D), a partial
   payment of 297.00 on 2015-07-01 and the remaining 700.00 on 2015-07-11.
2. Customers with open invoices to write off (spec 000): US-004 Cave Wholesales (two invoices),
   US-001 Contoso Retail San Diego, Birch company, and invoice CIV-000667.

Message ids are derived from the business keys, so running the demo twice changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from kredit_shared.contracts import ERP_CUSTOMER_INVOICES, ERP_CUSTOMER_PAYMENTS

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


def payment(payment_id: str, account: str, date: str, amount: str, settle: list[dict] | None = None) -> dict:
    return {
        "message_id": str(uuid.uuid5(NAMESPACE, f"payment/{payment_id}")),
        "payment_id": payment_id,
        "customer_account": account,
        "payment_date": date,
        "amount": amount,
        "currency": "USD",
        **({"settle": settle} if settle else {}),
    }


INVOICES = [
    invoice("10020", "4027", "Fabrikam customer 4027", "2015-06-25", "1000.00", cash_discount_code="1%14D"),
    invoice("CW-1001", "US-004", "Cave Wholesales", "2015-03-10", "450.00"),
    invoice("CW-1002", "US-004", "Cave Wholesales", "2015-04-02", "180.00", "20.00"),
    invoice("CR-2001", "US-001", "Contoso Retail San Diego", "2015-05-15", "1200.00", "100.00"),
    invoice("BI-3001", "US-010", "Birch company", "2015-02-01", "75.00"),
    invoice("CIV-000667", "US-002", "Contoso Retail Los Angeles", "2015-01-20", "320.00"),
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
]


async def main() -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ.get('KAFKA_PORT', 9092)}")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
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
    print(f"published {len(INVOICES)} invoices and {len(PAYMENTS)} payments to {bootstrap}. Try:")
    for line in try_commands(Path(os.environ.get("DATA_DIR", "data"))):
        print(line)


def try_commands(data_dir: Path) -> list[str]:
    """curl commands against the running stack, each with the token of the role it needs (the local
    run writes them to <data folder>/tokens/). The write-off is requested by local-collector and its
    journal posted by local-accountant: with four-eyes on, the requester may not post it."""
    tokens = data_dir / "tokens"

    def auth(role: str) -> str:
        return f'-H "Authorization: Bearer $(cat {tokens / role}.token)"'

    return [
        f"  curl -s {auth('viewer')} localhost:8080/api/v1/customers/4027/transactions",
        f"  curl -s {auth('viewer')} 'localhost:8080/api/v1/aged-balances?as_of=2015-09-30'",
        f"  curl -s {auth('collector')} -XPOST localhost:8080/api/v1/write-offs -H 'content-type: application/json' "
        '-d \'{"customer_account": "US-004", "reason_comment": "Bad debt"}\'',
        f"  curl -s {auth('viewer')} 'localhost:8083/api/v1/journals?journal_name=WriteOff&status=open'",
        f"  curl -s {auth('accountant')} -XPOST localhost:8083/api/v1/journals/WOJ-000001/post",
        f"  curl -s {auth('viewer')} 'localhost:8083/api/v1/trial-balance?as_of=2015-12-31'",
        f"  curl -s {auth('admin')} localhost:8083/api/v1/audit",
        f"tokens for other people: .venv/bin/kredit token --role collector --subject ann --data-dir {data_dir}",
    ]


if __name__ == "__main__":
    asyncio.run(main())
