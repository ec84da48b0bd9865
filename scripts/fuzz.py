"""Kafka message fuzzing (`make fuzz`): a catalogue of malformed messages on every input topic,
each followed by a valid message in the same produce batch (so both arrive in one fetch).

    python scripts/fuzz.py [--postgres] [--topics erp.customer-invoices,...] [--only money,ids]

Checks per case: the malformed record is on `<topic>.dlq` with an `x-dlq-reason`; the valid one took
effect (read back over HTTP or from an output topic); the trial balance moved only by the valid
messages; no consumer is stuck (lag drains); every service's RSS stays bounded. Exit status is
non-zero on any lost valid message or stuck consumer. See docs/operations.md. On `gl.exchange-rates` a
valid rate's effect is an invoice sent before it in the rate's currency, kept for want of the rate and booked
when it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import iso4217
from stack import LocalStack, header, json_field, render_table, run_tool

from kredit_shared.contracts import topics

FUZZ_ID = "x-fuzz-id"
RSS_LIMIT_MIB = 600
D = Decimal

# --- valid messages, one builder per input topic ----------------------------------------------


def _id() -> str:
    return str(uuid.uuid4())


def _tag() -> str:
    return uuid.uuid4().hex[:10]


def invoice() -> dict:
    t = _tag()
    return {
        "message_id": _id(),
        "invoice_id": f"FZI-{t}",
        "customer_account": f"FZ-{t}",
        "customer_name": "Fuzz",
        "invoice_date": "2015-03-01",
        "currency": "USD",
        "payment_terms": "Net30",
        "lines": [
            {"description": "Goods", "amount": "100.00", "sales_tax_amount": "0.00", "revenue_account": "401100"}
        ],
    }


def payment() -> dict:
    t = _tag()
    return {
        "message_id": _id(),
        "payment_id": f"FZP-{t}",
        "customer_account": f"FZ-{t}",
        "payment_date": "2015-03-05",
        "amount": "40.00",
        "currency": "USD",
    }


def customer_transaction() -> dict:
    t = _tag()
    return {
        "message_id": _id(),
        "voucher": f"FZT-{t}",
        "transaction_type": "Invoice",
        "customer_account": f"FZ-{t}",
        "transaction_date": "2015-03-01",
        "invoice_id": f"FZT-{t}",
        "amount": "75.00",
        "currency": "USD",
        "due_date": "2015-03-31",
    }


def voucher() -> dict:
    return {
        "message_id": _id(),
        "voucher": f"FZV-{_tag()}",
        "posting_date": "2015-03-01",
        "currency": "USD",
        "source": "fuzz",
        "lines": [
            {"account": "110110", "debit": "10.00", "text": "cash sale"},
            {"account": "401100", "credit": "10.00", "text": "cash sale"},
        ],
    }


def general_journal() -> dict:
    line = {"currency": "USD", "transaction_date": "2015-03-31", "reason_code": "BadDebt"}
    return {
        "message_id": _id(),
        "request_id": f"FZR-{_tag()}",
        "journal_name": "GenJrn",
        "lines": [
            line | {"account_type": "Ledger", "account": "110110", "credit": "5.00"},
            line | {"account_type": "Ledger", "account": "618900", "debit": "5.00"},
        ],
    }


def journal_posted(target: dict | None = None) -> dict:
    """A posted write-off journal that settles `target` (a customer transaction sent before)."""
    target = target or customer_transaction()
    amount = target["amount"]
    return {
        "message_id": _id(),
        "event_type": "JournalPosted",
        "request_id": None,
        "journal_name": "WriteOff",
        "batch_number": f"FZB-{_tag()}",
        "posting_date": "2015-04-30",
        "lines": [
            {
                "account_type": "Customer",
                "account": target["customer_account"],
                "credit": amount,
                "currency": "USD",
                "transaction_date": "2015-04-30",
                "voucher": f"FZW-{_tag()}",
                "settles": [{"voucher": target["voucher"], "invoice_id": target["invoice_id"], "amount": amount}],
            },
            {
                "account_type": "Ledger",
                "account": "618900",
                "debit": amount,
                "currency": "USD",
                "transaction_date": "2015-04-30",
                "voucher": "FZW-x",
            },
        ],
    }


# A currency per rate message (the pool of ISO codes with cents), so a rate covers nothing but its own kept invoice.
_RATE_CURRENCIES = iter([c.code for c in iso4217.Currency if c.exponent == 2 and c.code != "USD"])
RATE = "1.10"


def exchange_rate() -> dict:
    currency = next(_RATE_CURRENCIES, None)
    if currency is None:
        raise RuntimeError("fuzz: out of currencies for gl.exchange-rates cases")
    return {"message_id": _id(), "currency": currency, "from_date": "2015-01-01", "rate": RATE}


def kept_invoice(rate: dict) -> dict:
    """An invoice in the rate's currency that states no rate: invoicing dead-letters and keeps it, and books it
    when the rate arrives. Its posting is how the rate is seen to have taken effect."""
    return invoice() | {"invoice_id": f"FZX-{rate['currency']}", "currency": rate["currency"]}


async def send_kept_invoice(producer: Any, rate: dict) -> None:
    invoice = kept_invoice(rate)
    await producer.send(topics.ERP_CUSTOMER_INVOICES, _json(invoice), key=invoice["customer_account"].encode())


def target_of(posted: dict) -> dict:
    """The customer transaction a `journal_posted` message settles."""
    line = posted["lines"][0]
    ref = line["settles"][0]
    return customer_transaction() | {
        "voucher": ref["voucher"],
        "invoice_id": ref["invoice_id"],
        "customer_account": line["account"],
        "amount": ref["amount"],
    }


@dataclass(frozen=True)
class TopicSpec:
    """Where the fields of a topic's message are, for the mutations below."""

    topic: str
    build: Callable[[], dict]
    key: str  # the field that is the record key
    amounts: tuple[str, ...]  # paths changed together (a balanced voucher stays balanced)
    date: str
    currency: str
    ids: tuple[str, ...]
    required: str
    lines: str | None  # a list field to inflate to 10,000 entries
    text: str  # a free text field to inflate to 1.2 MB
    domain: dict[str, Callable[[dict], None]] = field(default_factory=dict)  # rule breakers


def _set(message: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    target: Any = message
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(parts[-1])] = value
    else:
        target[parts[-1]] = value


def _get(message: dict, path: str) -> Any:
    target: Any = message
    for part in path.split("."):
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target


def _del(message: dict, path: str) -> None:
    *head, last = path.split(".")
    target = _get(message, ".".join(head)) if head else message
    del target[last]


SPECS = [
    TopicSpec(
        topics.ERP_CUSTOMER_INVOICES,
        invoice,
        "customer_account",
        ("lines.0.amount",),
        "invoice_date",
        "currency",
        ("invoice_id", "customer_account"),
        "invoice_date",
        "lines",
        "customer_name",
        {
            "unknown revenue account": lambda m: _set(m, "lines.0.revenue_account", "999999"),
            "tax and amount of different signs": lambda m: _set(m, "lines.0.sales_tax_amount", "-5.00"),
            "no lines": lambda m: _set(m, "lines", []),
        },
    ),
    TopicSpec(
        topics.ERP_CUSTOMER_PAYMENTS,
        payment,
        "customer_account",
        ("amount",),
        "payment_date",
        "currency",
        ("payment_id", "customer_account"),
        "payment_date",
        None,
        "bank_account",
        {
            "unknown bank account": lambda m: _set(m, "bank_account", "999999"),
            "negative payment": lambda m: _set(m, "amount", "-40.00"),
        },
    ),
    TopicSpec(
        topics.AR_CUSTOMER_TRANSACTIONS,
        customer_transaction,
        "customer_account",
        ("amount",),
        "transaction_date",
        "currency",
        ("voucher", "customer_account"),
        "transaction_type",
        "cash_discounts",
        "customer_name",
        {"unknown transaction type": lambda m: _set(m, "transaction_type", "Bribe")},
    ),
    TopicSpec(
        topics.GL_JOURNAL_LINES,
        voucher,
        "voucher",
        ("lines.0.debit", "lines.1.credit"),
        "posting_date",
        "currency",
        ("voucher", "lines.0.account"),
        "lines",
        "lines",
        "description",
        {
            "unbalanced voucher": lambda m: _set(m, "lines.1.credit", "9.99"),
            "unknown account": lambda m: _set(m, "lines.0.account", "999999"),
        },
    ),
    TopicSpec(
        topics.GL_GENERAL_JOURNALS,
        general_journal,
        "request_id",
        ("lines.0.credit", "lines.1.debit"),
        "lines.0.transaction_date",
        "lines.0.currency",
        ("request_id", "lines.0.account"),
        "journal_name",
        "lines",
        "description",
        {
            "unbalanced journal": lambda m: _set(m, "lines.1.debit", "4.99"),
            "unknown account": lambda m: _set(m, "lines.0.account", "999999"),
            "unknown journal name": lambda m: _set(m, "journal_name", "NoSuchJournal"),
        },
    ),
    TopicSpec(
        topics.GL_JOURNAL_EVENTS,
        journal_posted,
        "batch_number",
        ("lines.0.credit", "lines.1.debit"),
        "posting_date",
        "lines.0.currency",
        ("batch_number", "lines.0.account"),
        "event_type",
        "lines",
        "journal_name",
        {
            "unknown event type": lambda m: _set(m, "event_type", "JournalExploded"),
            "settles an unknown voucher": lambda m: _set(m, "lines.0.settles.0.voucher", "NO-SUCH-VOUCHER"),
        },
    ),
    TopicSpec(
        topics.GL_EXCHANGE_RATES,
        exchange_rate,
        "currency",
        ("rate",),
        "from_date",
        "currency",
        ("currency",),
        "rate",
        None,
        "set_by",
        {"rate for the accounting currency": lambda m: _set(m, "currency", "USD")},
    ),
]


# --- the catalogue of malformed records -------------------------------------------------------


@dataclass
class Case:
    topic: str
    category: str
    name: str
    value: bytes
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    key: str = "fuzz"
    message_id: str | None = None
    # A case whose bad record is the second use of a message_id: the first (valid) use goes before it.
    first: dict | None = None


def _json(message: Any) -> bytes:
    return json.dumps(message).encode()


def catalogue(spec: TopicSpec) -> list[Case]:
    cases: list[Case] = []

    def add(
        category: str,
        name: str,
        message: dict | None = None,
        value: bytes | None = None,
        headers: list | None = None,
        first: dict | None = None,
    ) -> None:
        body = value if value is not None else _json(message)
        key = str(message.get(spec.key, "fuzz"))[:200] if isinstance(message, dict) else "fuzz"
        message_id = message.get("message_id") if isinstance(message, dict) else None
        cases.append(Case(spec.topic, category, name, body, headers or [], key, message_id, first))

    def mutated(change: Callable[[dict], None]) -> dict:
        m = spec.build()
        change(m)
        return m

    good = spec.build()
    raw = _json(good)
    add("syntax", "not JSON", value=b"this is not json")
    add("syntax", "truncated JSON", value=raw[: len(raw) // 2])
    add("syntax", "JSON array", value=_json([good]))
    add("syntax", "5,000-deep nesting", value=b"[" * 5000 + b"]" * 5000)
    add("syntax", "5,000-deep nesting in a field", value=raw[:-1] + b', "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    add("syntax", "empty body", value=b"")

    add("headers", "non-UTF-8 header value", spec.build(), headers=[("traceparent", b"\xff\xfe\xfd")])
    add("headers", "null header value", spec.build(), headers=[("traceparent", None)])
    add("headers", "content-type JSON, body not JSON", value=b"<xml/>", headers=[("content-type", b"application/json")])
    add("headers", "non-UTF-8 body (text/plain)", value=b"\xff\xfe" + raw, headers=[("content-type", b"text/plain")])
    add("headers", "non-UTF-8 byte in a JSON string", value=raw.replace(b'"USD"', b'"US\xff"'))

    money: list[tuple[str, Any]] = [
        ("1e26", "1e26"),
        ("1e309", "1e309"),
        ("28-digit string", "9" * 28),
        ("JSON int >= 10^26", 10**26),
        ("' 1.00 '", " 1.00 "),
        ("'1_0.00'", "1_0.00"),
        ("full-width digits", "\uff11\uff10.\uff10\uff10"),
        ("'1E+2'", "1E+2"),
        ("NaN literal", float("nan")),
        ("Infinity literal", float("inf")),
        ("float 0.1", 0.1),
        ("3 decimals", "1.005"),
        ("empty string", ""),
        ("bool", True),
        ("20 integer digits", "12345678901234567890.00"),
    ]
    for name, amount in money:
        add("money", name, mutated(lambda m, a=amount: [_set(m, p, a) for p in spec.amounts]))
    for name, date in [
        ("30 February", "2015-02-30"),
        ("slashes", "2015/03/01"),
        ("no dashes", "20150301"),
        ("number", 20150301),
        ("year 0", "0000-01-01"),
        ("with time", "2015-03-01T00:00:00"),
    ]:
        add("dates", name, mutated(lambda m, d=date: _set(m, spec.date, d)))
    # Valid dates at the ends of the calendar: taken, or refused with a reason (an invoice whose due date would
    # be after 9999-12-31), never an error.
    for name, date in [("the last date there is", "9999-12-31"), ("the first date there is", "0001-01-01")]:
        add("edge dates", name, mutated(lambda m, d=date: _set(m, spec.date, d)))
    for name, currency in [
        ("lower case", "usd"),
        ("unknown code", "ZZZ"),
        ("empty", ""),
        ("number", 840),
        ("null", None),
    ]:
        add("currency", name, mutated(lambda m, c=currency: _set(m, spec.currency, c)))

    add("ids", "missing message_id", mutated(lambda m: m.pop("message_id")))
    add("ids", "message_id not a UUID", mutated(lambda m: _set(m, "message_id", "not-a-uuid")))
    add("ids", f"'/' in {spec.ids[-1]}", mutated(lambda m: _set(m, spec.ids[-1], f"A/{_tag()}")))
    for path in spec.ids:
        add("ids", f"10k-char {path}", mutated(lambda m, p=path: _set(m, p, "X" * 10_000)))
    add("ids", "empty id", mutated(lambda m: _set(m, spec.ids[0], "")))

    add("structure", f"missing {spec.required}", mutated(lambda m: _del(m, spec.required)))
    add("structure", "wrong type (object for an amount)", mutated(lambda m: _set(m, spec.amounts[0], {"v": 1})))
    add(
        "structure",
        "wrong type (string for a list)",
        mutated(lambda m: _set(m, spec.lines or spec.ids[0], "not a list" if spec.lines else ["a", "list"])),
    )
    add("structure", "JSON null body", value=b"null")
    if spec.lines:

        def many_lines(m: dict) -> None:
            items = m.get(spec.lines) or []
            filler = items[0] if items else {"percent": "1.00", "date": "2015-03-05"}
            _set(m, spec.lines, [copy.deepcopy(filler) for _ in range(10_000)])

        add("structure", "10,000 list entries", mutated(many_lines))

    for name, change in spec.domain.items():
        add("domain", name, mutated(change))

    add("size", "1.2 MB text field", mutated(lambda m: _set(m, spec.text, "x" * 1_200_000)))

    first = spec.build()
    reused = copy.deepcopy(first)
    for p in spec.amounts:
        _set(reused, p, "1.00")
    reused[spec.ids[0]] = f"{_get(first, spec.ids[0])}-B"
    add("duplicates", "message_id reused with different content", reused, first=first)
    return cases


# --- effects of the valid messages (read back through the contract) --------------------------


class Probe:
    def __init__(self, stack: LocalStack, client: httpx.AsyncClient) -> None:
        self.stack, self.client = stack, client
        self.journal_requests: set[str] = set()

    async def _get(self, service: str, path: str, **params: Any) -> Any:
        response = await self.client.get(f"{self.stack.url(service)}{path}", params=params)
        return response.json() if response.status_code == 200 else None

    async def ledger_has(self, voucher: str) -> bool:
        body = await self._get("ledger-posting", "/api/v1/ledger-entries", voucher=voucher)
        return bool(body and body["entries"])

    async def collections_has(self, account: str, voucher: str) -> bool:
        body = await self._get("collections", f"/api/v1/customers/{account}/transactions")
        return bool(body) and any(r["voucher"] == voucher for r in body["transactions"])

    async def settlement_rows(self, account: str) -> list[dict]:
        body = await self._get("settlement", f"/api/v1/customers/{account}/open-transactions", include_settled="true")
        return body["transactions"] if body else []

    async def took_effect(self, topic: str, m: dict) -> bool:
        if topic == topics.ERP_CUSTOMER_INVOICES:
            voucher = "FTI-" + m["invoice_id"]
            return await self.ledger_has(voucher) and await self.collections_has(m["customer_account"], voucher)
        if topic == topics.ERP_CUSTOMER_PAYMENTS:
            return await self.ledger_has(m["payment_id"]) and await self.collections_has(
                m["customer_account"], m["payment_id"]
            )
        if topic == topics.AR_CUSTOMER_TRANSACTIONS:
            rows = await self.settlement_rows(m["customer_account"])
            return any(r["voucher"] == m["voucher"] for r in rows) and await self.collections_has(
                m["customer_account"], m["voucher"]
            )
        if topic == topics.GL_JOURNAL_LINES:
            return await self.ledger_has(m["voucher"])
        if topic == topics.GL_GENERAL_JOURNALS:
            return m["request_id"] in self.journal_requests
        if topic == topics.GL_JOURNAL_EVENTS:
            line = m["lines"][0]
            rows = {r["voucher"]: r for r in await self.settlement_rows(line["account"])}
            settled = rows.get(line["settles"][0]["voucher"])
            return line["voucher"] in rows and settled is not None and D(settled["open_amount"]) == 0
        if topic == topics.GL_EXCHANGE_RATES:
            return await self.ledger_has("FTI-" + kept_invoice(m)["invoice_id"])
        raise ValueError(topic)

    async def refresh_journal_requests(self) -> None:
        for record in await self.stack.read_topic(topics.GL_JOURNAL_EVENTS):
            if json_field(record.value, "event_type") == "JournalCreated":
                self.journal_requests.add(json_field(record.value, "request_id"))


def ledger_effect(topic: str, m: dict) -> dict[str, Decimal]:
    """What a valid message adds to the trial balance, per account (debit − credit)."""
    if topic == topics.ERP_CUSTOMER_INVOICES:
        total = sum((D(line["amount"]) for line in m["lines"]), D(0))
        return {"130100": total, "401100": -total}
    if topic == topics.ERP_CUSTOMER_PAYMENTS:
        return {"110110": D(m["amount"]), "130100": -D(m["amount"])}
    if topic == topics.GL_EXCHANGE_RATES:  # its kept invoice's, booked at it
        invoice = ledger_effect(topics.ERP_CUSTOMER_INVOICES, kept_invoice(m))
        return {a: (amount * D(m["rate"])).quantize(D("0.01"), ROUND_HALF_UP) for a, amount in invoice.items()}
    if topic == topics.GL_JOURNAL_LINES:
        effect: dict[str, Decimal] = defaultdict(Decimal)
        for line in m["lines"]:
            effect[line["account"]] += D(line.get("debit", "0")) - D(line.get("credit", "0"))
        return effect
    return {}  # the others move no ledger account by themselves (a general journal stays open)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Sent:
    case: Case
    valid_topic: str
    valid: dict
    fuzz_id: str
    effect: bool = False
    dead_lettered: int = 0
    reasons: list[str] = field(default_factory=list)


async def send_pair(producer: Any, case: Case, valid: dict, partition: int) -> str:
    """The malformed record and then a valid one, in one produce batch on one partition."""
    fuzz_id = _id()
    valid_key = str(
        valid.get("customer_account")
        or valid.get("voucher")
        or valid.get("request_id")
        or valid.get("batch_number")
        or valid.get("currency")
    )
    batch = producer.create_batch()
    appended = [
        batch.append(
            key=case.key.encode(),
            value=case.value,
            timestamp=None,
            headers=[(FUZZ_ID, fuzz_id.encode()), *case.headers],
        ),
        batch.append(
            key=valid_key.encode(), value=_json(valid), timestamp=None, headers=[(FUZZ_ID, f"valid-{fuzz_id}".encode())]
        ),
    ]
    # append answers None for a record the batch has no room for: it would never be sent (and the fuzzer would
    # report its partner lost when it was the fuzzer that dropped it).
    if None in appended:
        raise RuntimeError(f"case {case.name!r}: the pair does not fit in one produce batch; raise max_batch_size")
    await (await producer.send_batch(batch, case.topic, partition=partition))
    return fuzz_id


async def run_topic(producer: Any, spec: TopicSpec, cases: list[Case], pace: float) -> list[Sent]:
    sent: list[Sent] = []
    targets: list[dict] = []
    rates: list[dict] = []
    if spec.topic == topics.GL_EXCHANGE_RATES:
        # Each valid rate books an invoice kept for it: send those first.
        rates = [spec.build() for _ in cases]
        for rate in rates + [case.first for case in cases if case.first]:
            await send_kept_invoice(producer, rate)
        await producer.flush()
        await asyncio.sleep(5)
    if spec.topic == topics.GL_JOURNAL_EVENTS:
        # The write-offs need open transactions to settle: send them first and let settlement see them.
        for case in cases:
            t = customer_transaction()
            targets.append(t)
            for target in [t] + ([target_of(case.first)] if case.first else []):
                await producer.send(
                    topics.AR_CUSTOMER_TRANSACTIONS, _json(target), key=target["customer_account"].encode()
                )
        await producer.flush()
        await asyncio.sleep(5)
    for n, case in enumerate(cases):
        if case.first is not None:  # the first use of the message_id, alone and valid
            await producer.send_and_wait(case.topic, _json(case.first), key=str(case.first[spec.key]).encode())
            await asyncio.sleep(pace)
        valid = journal_posted(targets[n]) if targets else rates[n] if rates else spec.build()
        partition = n % 4
        try:
            fuzz_id = await send_pair(producer, case, valid, partition)
        except Exception as e:  # e.g. too large for the broker: the case could not be sent
            print(f"fuzz: could not send {case.topic} / {case.name}: {e!r}", flush=True)
            continue
        sent.append(Sent(case, case.topic, valid, fuzz_id))
        if case.first is not None:  # the first use is a valid message that must have taken effect as well
            sent.append(
                Sent(
                    Case(case.topic, case.category, f"{case.name} (first use)", b""),
                    case.topic,
                    case.first,
                    "",
                    dead_lettered=-1,
                )
            )
        await asyncio.sleep(pace)
    return sent


async def canaries(producer: Any, probe: Probe, specs: list[TopicSpec], timeout: float = 60) -> list[Sent]:
    """Topics whose consumers no longer process a fresh valid message: those are stuck. (Lag alone can
    also be records a consumer skipped without committing, which nothing later commits past.)"""
    sent = {}
    for spec in specs:
        if spec.topic == topics.GL_JOURNAL_EVENTS:
            target = customer_transaction()
            await producer.send_and_wait(
                topics.AR_CUSTOMER_TRANSACTIONS, _json(target), key=target["customer_account"].encode()
            )
            await asyncio.sleep(3)
            message = journal_posted(target)
        elif spec.topic == topics.GL_EXCHANGE_RATES:
            message = spec.build()
            await send_kept_invoice(producer, message)
            await producer.flush()
            await asyncio.sleep(3)
        else:
            message = spec.build()
        await producer.send_and_wait(spec.topic, _json(message), key=str(message[spec.key]).encode())
        sent[spec.topic] = Sent(
            Case(spec.topic, "canary", "a valid message after all the cases", b""),
            spec.topic,
            message,
            "",
            dead_lettered=-1,
        )
    waiting = dict(sent)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(2)
        if topics.GL_GENERAL_JOURNALS in waiting:
            await probe.refresh_journal_requests()
        for topic, canary in list(waiting.items()):
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
                if await probe.took_effect(topic, canary.valid):
                    del waiting[topic]
    return list(sent.values())


async def wait_drained(stack: LocalStack, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    lag: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            lag = await stack.lag()
            if not any(lag.values()):
                return lag
        await asyncio.sleep(2)
    return lag


async def main(args: argparse.Namespace) -> int:
    specs = [s for s in SPECS if not args.topics or s.topic in args.topics.split(",")]
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="kredit-fuzz-"))
    print(f"fuzz: data and logs in {data_dir}", flush=True)
    results: list[Sent] = []
    rss_peak: Counter = Counter()
    async with (
        LocalStack(data_dir, postgres=args.postgres) as stack,
        httpx.AsyncClient(timeout=30, headers=stack.auth("viewer")) as client,
    ):
        print(
            f"fuzz: stack healthy (broker {stack.bootstrap}, {'PostgreSQL' if args.postgres else 'SQLite'})", flush=True
        )
        probe = Probe(stack, client)
        producer = await stack.producer()

        async def watch_rss() -> None:
            while True:
                for label, kib in stack.rss_kib().items():
                    rss_peak[label] = max(rss_peak[label], kib or 0)
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch_rss())
        try:
            for spec in specs:
                cases = [c for c in catalogue(spec) if not args.only or c.category in args.only.split(",")]
                print(f"fuzz: {spec.topic}: {len(cases)} malformed records, each with a valid one", flush=True)
                results += await run_topic(producer, spec, cases, args.pace)
            print("fuzz: all sent; waiting for the consumers to drain ...", flush=True)
            lag = await wait_drained(stack, args.drain_timeout)
            canary = await canaries(producer, probe, specs)
            results += canary
            await probe.refresh_journal_requests()
            for s in results:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, TypeError):
                    s.effect = await probe.took_effect(s.valid_topic, s.valid)
            dead = defaultdict(list)
            for spec in specs:
                for record in await stack.read_topic(topics.dead_letter_topic(spec.topic)):
                    dead[header(record, FUZZ_ID) or json_field(record.value, "message_id")].append(
                        header(record, "x-dlq-reason") or ""
                    )
            for s in results:
                if s.dead_lettered >= 0:
                    entries = dead.get(s.fuzz_id, []) + (dead.get(s.case.message_id, []) if s.case.message_id else [])
                    s.dead_lettered = len(entries)
                    s.reasons = [r for r in entries if r]
            tb = (
                await client.get(f"{stack.url('ledger-posting')}/api/v1/trial-balance", params={"as_of": "9999-12-31"})
            ).json()
            alive = {p.label: p.running() for p in stack.processes}
        finally:
            watcher.cancel()
            await producer.stop()
    return report(results, lag, tb, rss_peak, alive, args.verbose)


def report(
    results: list[Sent], lag: dict[str, int], tb: dict, rss_peak: Counter, alive: dict[str, bool], verbose: bool
) -> int:
    rows = []
    groups: dict[tuple[str, str], list[Sent]] = defaultdict(list)
    for s in results:
        groups[(s.case.topic, s.case.category)].append(s)
    for (topic, category), items in groups.items():
        bad = [s for s in items if s.dead_lettered >= 0]
        rows.append(
            [topic, category, len(bad), sum(1 for s in bad if s.reasons), sum(1 for s in items if not s.effect)]
        )
    print()
    print(render_table(["topic", "category", "sent", "dead-lettered", "valid lost"], rows))

    failures = [s for s in results if not s.effect or (s.dead_lettered >= 0 and not s.reasons)]
    if failures:
        print()
        print(
            render_table(
                ["topic", "case", "bad on DLQ", "valid took effect"],
                [
                    [
                        s.case.topic,
                        s.case.name,
                        "-" if s.dead_lettered < 0 else "yes" if s.reasons else "NO",
                        "yes" if s.effect else "LOST",
                    ]
                    for s in failures
                ],
            )
        )
    if verbose:
        for s in results:
            print(f"  {s.case.topic} / {s.case.name}: {s.reasons[:1]}")

    expected: dict[str, Decimal] = defaultdict(Decimal)
    for s in results:
        for account, amount in ledger_effect(s.valid_topic, s.valid).items():
            expected[account] += amount
        # A valid body (odd header values, an edge date), taken; a rate's moves nothing: no invoice waits for it.
        taken = s.case.category in ("headers", "edge dates") and s.dead_lettered == 0
        if taken and s.case.topic != topics.GL_EXCHANGE_RATES:
            with contextlib.suppress(ValueError):
                for account, amount in ledger_effect(s.case.topic, json.loads(s.case.value)).items():
                    expected[account] += amount
    actual = {a["account"]: D(a["balance"]) for a in tb["accounts"]}
    moved = {
        a: (actual.get(a, D(0)), expected.get(a, D(0)))
        for a in set(actual) | set(expected)
        if actual.get(a, D(0)) != expected.get(a, D(0))
    }
    lost = sum(1 for s in results if not s.effect and s.case.category != "canary")
    left = {g: n for g, n in lag.items() if n}
    stuck = [s.case.topic for s in results if s.case.category == "canary" and not s.effect]
    over = {label: kib // 1024 for label, kib in rss_peak.items() if kib // 1024 > RSS_LIMIT_MIB}
    dead = [label for label, up in alive.items() if not up]
    print()
    print(
        render_table(
            ["check", "result"],
            [
                ["valid messages lost", lost],
                ["malformed records not dead-lettered with a reason", sum(1 for s in results if s.dead_lettered == 0)],
                [
                    "trial balance moved only by valid messages",
                    "yes"
                    if not moved
                    else "NO: "
                    + ", ".join(f"{a} is {got}, valid ones give {want}" for a, (got, want) in sorted(moved.items())),
                ],
                ["trial balance debits = credits", "yes" if D(tb["total_debit"]) == D(tb["total_credit"]) else "NO"],
                ["records never committed (lag left after draining)", left or 0],
                ["stuck topics: a fresh valid message took no effect in 60 s (consumer or relay wedged)", stuck or 0],
                ["peak RSS per process (MiB)", {k: v // 1024 for k, v in sorted(rss_peak.items())}],
                [f"processes over {RSS_LIMIT_MIB} MiB", over or 0],
                ["processes that died", dead or 0],
            ],
        )
    )
    failed = lost or stuck or dead
    print(f"\nfuzz: {'FAIL' if failed else 'PASS'} ({lost} valid lost, {len(stuck)} stuck topics, {len(dead)} dead)")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="fresh databases on 127.0.0.1:5432 instead of SQLite")
    parser.add_argument("--topics", help="comma-separated input topics (default: all seven)")
    parser.add_argument("--only", help="comma-separated categories, e.g. money,ids")
    parser.add_argument("--pace", type=float, default=0.3, help="seconds between two cases (default 0.3)")
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument("--data-dir", help="default: a new temporary folder")
    parser.add_argument("--verbose", action="store_true", help="print every case's DLQ reason")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_tool("fuzz", main(parse_args()))
