"""Chaos run (`make chaos`): a sustained mixed load through the contract while service processes
are SIGKILLed and restarted, then a check of the converged state against a model of what was sent.

    python scripts/chaos.py [--messages 5000] [--kill-interval 5] [--seed 1] [--postgres]

Starts its own broker and services (two settlement replicas) under a fresh data folder, drives
invoices (with cash discount tiers), credit notes, payments with and without marks (Normal, Always,
Never, amount_to_settle), a fifth of the customers in EUR at rates their documents state (so settling
them realizes exchange gains and losses), write-offs requested on collections and posted on ledger-posting over
HTTP, ~1 % exact duplicates and ~1 % poison messages. Exit status 0 only if every invariant held.
See docs/operations.md for what each invariant means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import re
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
from stack import LocalStack, ServiceProcess, header, json_field, render_table, run_tool

from kredit_shared.contracts import topics
from kredit_shared.outbox import relayed_id

D = Decimal
ZERO = D("0.00")
CENT = D("0.01")
BASE_DATE = dt.date(2015, 1, 1)
CHAOS_ID = "x-chaos-id"  # our own header on every record we send: finds it again on a DLQ
# A fifth of the customers deal in FOREIGN. Each of their documents states one of DOCUMENT_RATES (accounting-currency
# units per unit), so a payment settling an invoice booked at another rate realizes a gain or a loss; their
# write-offs are booked at WRITE_OFF_RATE, set over ledger-posting's API before the load.
FOREIGN = "EUR"
DOCUMENT_RATES = (D("1.05"), D("1.10"), D("1.15"), D("1.20"))
WRITE_OFF_RATE = D("1.12")
# The demo company's accounts the invariants read (shared/src/kredit_shared/demo-company.yaml).
CASH, AR, REVENUE, SALES_TAX, DISCOUNTS, WRITE_OFFS = "110110", "130100", "401100", "222200", "520100", "618900"
EXCHANGE_GAIN, EXCHANGE_LOSS = "710100", "810100"

# --- the workload (pure: a seed gives the same messages) ---------------------------------------


@dataclass
class Send:
    """One record to produce. `kind`: valid, duplicate (same bytes again) or poison."""

    topic: str
    key: str
    value: bytes
    chaos_id: str
    kind: str
    poison_kind: str = ""


@dataclass
class WriteOff:
    customer_account: str
    invoice_id: str
    date: str


@dataclass
class MarkScenario:
    """Invoice A, invoice B, then a payment marked for B covering it in full: B must close, A stay open."""

    customer_account: str
    variant: str  # Never | Always | Normal
    a_invoice: str
    a_amount: Decimal
    b_invoice: str
    b_amount: Decimal


@dataclass
class Workload:
    steps: list[Send | WriteOff] = field(default_factory=list)
    invoices: dict[str, dict] = field(default_factory=dict)  # valid ones, by invoice_id
    payments: dict[str, dict] = field(default_factory=dict)  # valid ones, by payment_id
    poison: dict[str, Send] = field(default_factory=dict)  # by chaos id
    valid_chaos_ids: set[str] = field(default_factory=set)
    scenarios: list[MarkScenario] = field(default_factory=list)

    @property
    def accounts(self) -> list[str]:
        return sorted({m["customer_account"] for m in [*self.invoices.values(), *self.payments.values()]})

    def sends(self) -> list[Send]:
        return [s for s in self.steps if isinstance(s, Send)]


def invoice_total(message: dict) -> Decimal:
    return sum((D(line["amount"]) + D(line.get("sales_tax_amount", "0.00")) for line in message["lines"]), ZERO)


def in_accounting_currency(amount: Decimal, message: dict) -> Decimal:
    """An amount of a document in the accounting currency: at the rate it states, half-up to the cent."""
    return (amount * D(message.get("exchange_rate", "1"))).quantize(CENT, rounding=ROUND_HALF_UP)


def invoice_voucher(message: dict) -> str:
    return ("FTI-" if invoice_total(message) > 0 else "CCN-") + message["invoice_id"]


def _money(r: random.Random, low: int, high: int) -> Decimal:
    return D(r.randint(low * 100, high * 100)) * CENT


def _iso(day: int) -> str:
    return (BASE_DATE + dt.timedelta(days=day)).isoformat()


POISON_KINDS = ["not-json", "missing-field", "bad-currency", "float-amount", "amount-1e26", "tax-sign", "json-array"]


def _poison(r: random.Random, kind: str, valid_invoice: dict, valid_payment: dict) -> tuple[str, bytes]:
    """A message that must be dead-lettered, derived from a valid one (fresh message_id)."""
    invoice = json.loads(json.dumps(valid_invoice)) | {"message_id": str(uuid.UUID(int=r.getrandbits(128)))}
    payment = json.loads(json.dumps(valid_payment)) | {"message_id": str(uuid.UUID(int=r.getrandbits(128)))}
    invoice["invoice_id"] = payment["payment_id"] = f"POISON-{r.getrandbits(40):x}"
    if kind == "not-json":
        return topics.ERP_CUSTOMER_INVOICES, b'{"message_id": "truncated'
    if kind == "json-array":
        return topics.ERP_CUSTOMER_PAYMENTS, json.dumps([payment]).encode()
    if kind == "missing-field":
        del invoice["invoice_date"]
    elif kind == "bad-currency":
        payment["currency"] = "usd"
        return topics.ERP_CUSTOMER_PAYMENTS, json.dumps(payment).encode()
    elif kind == "float-amount":
        payment["amount"] = 12.5
        return topics.ERP_CUSTOMER_PAYMENTS, json.dumps(payment).encode()
    elif kind == "amount-1e26":
        invoice["lines"][0]["amount"] = "1e26"
    elif kind == "tax-sign":
        invoice["lines"] = [{"description": "Goods", "amount": "100.00", "sales_tax_amount": "-5.00"}]
    return topics.ERP_CUSTOMER_INVOICES, json.dumps(invoice).encode()


def generate(
    messages: int,
    seed: int,
    write_off_share: float = 0.02,
    poison_kinds: list[str] | None = None,
    foreign_share: float = 0.2,
) -> Workload:
    """A mixed workload of about `messages` records (plus write-off actions), reproducible by seed."""
    r = random.Random(seed)
    w = Workload()
    customers = [f"C{n:04d}" for n in range(max(10, messages // 50))]
    foreign = set(r.sample(customers, round(len(customers) * foreign_share)))  # their documents are in FOREIGN
    open_invoices: dict[str, list[dict]] = defaultdict(list)  # auto customers' invoices, for marks/write-offs
    counter = iter(range(10**9))

    def mid() -> str:
        return str(uuid.UUID(int=r.getrandbits(128)))

    def add(topic: str, message: dict) -> None:
        chaos_id = mid()
        w.steps.append(Send(topic, message["customer_account"], json.dumps(message).encode(), chaos_id, "valid"))
        w.valid_chaos_ids.add(chaos_id)
        if topic == topics.ERP_CUSTOMER_INVOICES:
            w.invoices[message["invoice_id"]] = message
        else:
            w.payments[message["payment_id"]] = message

    def in_currency(account: str, message: dict) -> dict:
        if account in foreign:
            message |= {"currency": FOREIGN, "exchange_rate": str(r.choice(DOCUMENT_RATES))}
        return message

    def invoice(account: str, day: int, amount: Decimal, tax: Decimal = ZERO, tiers: bool = False) -> dict:
        message = {
            "message_id": mid(),
            "invoice_id": f"INV-{next(counter):06d}",
            "customer_account": account,
            "customer_name": f"Customer {account}",
            "invoice_date": _iso(day),
            "currency": "USD",
            "payment_terms": "Net30",
            "lines": [
                {
                    "description": "Goods",
                    "amount": str(amount),
                    "sales_tax_amount": str(tax),
                    "revenue_account": "401100",
                }
            ],
        }
        if tiers:  # chained: 2 % within 5 days, then 1 % within 14
            message["cash_discounts"] = [
                {"percent": "2.00", "date": _iso(day + 5)},
                {"percent": "1.00", "date": _iso(day + 14)},
            ]
        return in_currency(account, message)

    def payment(account: str, day: int, amount: Decimal, settle: list[dict] | None = None) -> dict:
        message = {
            "message_id": mid(),
            "payment_id": f"PAY-{next(counter):06d}",
            "customer_account": account,
            "payment_date": _iso(day),
            "amount": str(amount),
            "currency": "USD",
        }
        if settle:
            message["settle"] = settle
        return in_currency(account, message)

    while len(w.sends()) < messages:
        account = r.choice(customers)
        day = r.randint(0, 300)
        roll = r.random()
        if roll < 0.40:
            amount = _money(r, 50, 5000)
            tax = (amount * D("0.10")).quantize(CENT) if r.random() < 0.3 else ZERO
            message = invoice(account, day, amount, tax, tiers=r.random() < 0.4)
            add(topics.ERP_CUSTOMER_INVOICES, message)
            open_invoices[account].append(message)
        elif roll < 0.45:
            add(topics.ERP_CUSTOMER_INVOICES, invoice(account, day, -_money(r, 5, 200)))
        elif roll < 0.65:
            add(topics.ERP_CUSTOMER_PAYMENTS, payment(account, day, _money(r, 20, 3000)))
        elif roll < 0.75 and open_invoices[account]:
            target = r.choice(open_invoices[account])
            total = invoice_total(target)
            use = r.choice(["Normal", "Always", "Never"])
            mark: dict[str, Any] = {"invoice_id": target["invoice_id"], "use_cash_discount": use}
            amount = total if r.random() < 0.5 else _money(r, 10, max(11, int(total)))
            if r.random() < 0.5:
                mark["amount_to_settle"] = str(amount)
            paid_day = (dt.date.fromisoformat(target["invoice_date"]) - BASE_DATE).days + r.randint(0, 20)
            add(topics.ERP_CUSTOMER_PAYMENTS, payment(account, paid_day, amount, [mark]))
        elif roll < 0.85:
            scenario_account = f"M{next(counter):06d}"
            variant = r.choice(["Never", "Always", "Normal"])
            a = invoice(scenario_account, day, D(r.randint(5, 50) * 100))
            b = invoice(scenario_account, day, D(r.randint(5, 50) * 100), tiers=variant != "Never")
            b_total = invoice_total(b)
            if variant == "Never":  # in the discount period, but no discount: the full amount
                pay_day, cash = day + 2, b_total
            elif variant == "Always":  # long after the discount date, the last tier (1 %) all the same
                pay_day, cash = day + 60, b_total - b_total / 100
            else:  # Normal, within 5 days: 2 %
                pay_day, cash = day + 3, b_total - b_total * 2 / 100
            add(topics.ERP_CUSTOMER_INVOICES, a)
            add(topics.ERP_CUSTOMER_INVOICES, b)
            add(
                topics.ERP_CUSTOMER_PAYMENTS,
                payment(
                    scenario_account,
                    pay_day,
                    cash.quantize(CENT),
                    [
                        {
                            "invoice_id": b["invoice_id"],
                            "amount_to_settle": str(cash.quantize(CENT)),
                            "use_cash_discount": variant,
                        }
                    ],
                ),
            )
            w.scenarios.append(
                MarkScenario(scenario_account, variant, a["invoice_id"], invoice_total(a), b["invoice_id"], b_total)
            )
        elif open_invoices[account] and r.random() < write_off_share / 0.15:
            target = r.choice(open_invoices[account])
            open_invoices[account].remove(target)
            w.steps.append(
                WriteOff(
                    account,
                    target["invoice_id"],
                    _iso((dt.date.fromisoformat(target["invoice_date"]) - BASE_DATE).days + 90),
                )
            )
        if r.random() < 0.01:  # an exact duplicate of an earlier valid record
            original = r.choice([s for s in w.sends() if s.kind == "valid"])
            w.steps.append(Send(original.topic, original.key, original.value, original.chaos_id, "duplicate"))
        if r.random() < 0.01 and w.invoices and w.payments:
            kind = r.choice(poison_kinds or POISON_KINDS)
            topic, value = _poison(r, kind, r.choice(list(w.invoices.values())), r.choice(list(w.payments.values())))
            send = Send(topic, account, value, mid(), "poison", kind)
            w.steps.append(send)
            w.poison[send.chaos_id] = send
    return w


# --- observations and invariants (pure) -------------------------------------------------------


@dataclass
class Observed:
    """What the converged stack shows, read through the contract."""

    trial_balance: dict  # GET /api/v1/trial-balance
    ledger_ar_vouchers: Counter  # voucher -> entries on 130100
    ledger_cash_vouchers: Counter  # voucher -> entries on 110110
    collections: dict[str, list[dict]]  # account -> GET /customers/{a}/transactions rows
    settlement: dict[str, list[dict]]  # account -> GET /customers/{a}/open-transactions?include_settled=true rows
    dlq: dict[str, list[tuple[str | None, str | None, str | None]]]  # topic -> (chaos id, message_id, reason)
    republished: dict[str, int] = field(default_factory=dict)  # output topic -> records whose message_id came before


@dataclass
class Check:
    name: str
    held: bool
    detail: str = ""
    informative: bool = False  # show the detail also when it held (figures, not a list of faults)


def account_balance(trial_balance: dict, account: str) -> Decimal:
    row = next((a for a in trial_balance["accounts"] if a["account"] == account), None)
    return D(row["balance"]) if row else ZERO


def _count(rows: list[dict], voucher: str, kinds: tuple[str, ...]) -> int:
    return sum(1 for row in rows if row["voucher"] == voucher and row["type"] in kinds)


def unique_letters(records: list[Any]) -> list[Any]:
    """Dead letters without the relay's copies: it publishes at least once, so a service killed between
    publishing a letter and marking it sent publishes it again, with the same `message-id` header (the
    letter's own id, the relay's last header; `kredit dlq list` drops copies the same way). A record
    dead-lettered twice by a consumer would carry two ids."""
    seen: set[str] = set()
    unique = []
    for record in records:
        letter = relayed_id(record.headers)
        if letter is None or letter not in seen:
            seen.add(letter or "")
            unique.append(record)
    return unique


def _examples(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" … (+{len(items) - n})" if len(items) > n else "")


def check(w: Workload, o: Observed) -> tuple[list[Check], dict[str, int]]:
    """Every invariant, and the lost/duplicated figures."""
    checks: list[Check] = []
    lost: list[str] = []  # message@where
    duplicated: list[str] = []

    for invoice_id, message in w.invoices.items():
        voucher = invoice_voucher(message)
        rows = o.collections.get(message["customer_account"], [])
        for where, n in (
            ("ledger", o.ledger_ar_vouchers[voucher]),
            ("collections", _count(rows, voucher, ("Invoice", "CreditNote"))),
        ):
            if n == 0:
                lost.append(f"{invoice_id}@{where}")
            elif n > 1:
                duplicated.append(f"{invoice_id}@{where}×{n}")
    for payment_id, message in w.payments.items():
        rows = o.collections.get(message["customer_account"], [])
        for where, n in (
            ("ledger", o.ledger_cash_vouchers[payment_id]),
            ("collections", _count(rows, payment_id, ("Payment",))),
        ):
            if n == 0:
                lost.append(f"{payment_id}@{where}")
            elif n > 1:
                duplicated.append(f"{payment_id}@{where}×{n}")
    checks.append(Check("every valid invoice and payment in ledger and collections", not lost, _examples(lost)))
    checks.append(Check("nothing posted twice", not duplicated, _examples(duplicated)))

    tb = o.trial_balance
    checks.append(
        Check(
            "trial balance: debits = credits",
            D(tb["total_debit"]) == D(tb["total_credit"]),
            f"{tb['total_debit']} / {tb['total_credit']}",
            informative=True,
        )
    )
    # In the accounting currency, as invoicing books a document (docs/currencies.md): the customer line at
    # round(total × rate), each tax line at round(tax × rate), the revenue lines the rest.
    tax = sum(
        (
            in_accounting_currency(D(line.get("sales_tax_amount", "0")), m)
            for m in w.invoices.values()
            for line in m["lines"]
        ),
        ZERO,
    )
    net = sum((in_accounting_currency(invoice_total(m), m) for m in w.invoices.values()), ZERO) - tax
    cash = sum((in_accounting_currency(D(m["amount"]), m) for m in w.payments.values()), ZERO)
    revenue, tax_posted = -account_balance(tb, REVENUE), -account_balance(tb, SALES_TAX)
    bank = account_balance(tb, CASH)
    checks.append(
        Check("revenue 401100 = valid invoices' net", revenue == net, f"ledger {revenue}, sent {net}", informative=True)
    )
    checks.append(
        Check(
            "sales tax 222200 = valid invoices' tax",
            tax_posted == tax,
            f"ledger {tax_posted}, sent {tax}",
            informative=True,
        )
    )
    checks.append(Check("cash 110110 = valid payments", bank == cash, f"ledger {bank}, sent {cash}", informative=True))

    ar = account_balance(tb, AR)
    discounts, write_offs = account_balance(tb, DISCOUNTS), account_balance(tb, WRITE_OFFS)
    # A realized gain adds to AR what it credits (its balance is negative), a loss takes off what it debits.
    exchange = account_balance(tb, EXCHANGE_GAIN) + account_balance(tb, EXCHANGE_LOSS)
    expected_ar = net + tax - cash - discounts - write_offs - exchange
    checks.append(
        Check(
            "AR 130100 = invoices − payments − discounts − write-offs ± realized exchange",
            ar == expected_ar,
            f"ledger {ar}, model {expected_ar} (discounts {discounts}, write-offs {write_offs}, exchange {exchange})",
            informative=True,
        )
    )
    in_collections = sum((_accounting_balance(row) for rows in o.collections.values() for row in rows), ZERO)
    in_settlement = sum((D(row["accounting_open_amount"]) for rows in o.settlement.values() for row in rows), ZERO)
    checks.append(
        Check(
            "AR 130100 = open balances in collections = in settlement",
            ar == in_collections == in_settlement,
            f"ledger {ar}, collections {in_collections}, settlement {in_settlement}",
            informative=True,
        )
    )
    open_in: dict[str, Counter] = {"collections": Counter(), "settlement": Counter()}
    for rows in o.collections.values():
        for row in rows:
            open_in["collections"][row["currency"]] += D(row["balance"])
    for rows in o.settlement.values():
        for row in rows:
            open_in["settlement"][row["currency"]] += D(row["open_amount"])
    currencies = sorted(set(open_in["collections"]) | set(open_in["settlement"]))
    checks.append(
        Check(
            "each currency's open balances: collections = settlement",
            all(open_in["collections"][c] == open_in["settlement"][c] for c in currencies),
            ", ".join(f"{c} {open_in['collections'][c]} / {open_in['settlement'][c]}" for c in currencies),
            informative=True,
        )
    )

    over: list[str] = []
    for account, rows in o.collections.items():
        for row in rows:
            original = D(row["debit"]) if row["debit"] is not None else -D(row["credit"])
            if not _within(D(row["balance"]), original):
                over.append(f"collections {account}/{row['voucher']} {row['balance']} of {original}")
    for account, rows in o.settlement.items():
        for row in rows:
            if not _within(D(row["open_amount"]), D(row["original_amount"])):
                over.append(f"settlement {account}/{row['voucher']} {row['open_amount']} of {row['original_amount']}")
    checks.append(Check("no transaction over-settled (0 ≤ open ≤ original)", not over, _examples(over)))

    starved: list[str] = []
    wrong_by_variant: Counter = Counter()
    for s in w.scenarios:
        open_by_invoice = {
            row["invoice_id"]: D(row["open_amount"])
            for row in o.settlement.get(s.customer_account, [])
            if row["type"] == "Invoice"
        }
        got_a, got_b = open_by_invoice.get(s.a_invoice), open_by_invoice.get(s.b_invoice)
        if got_a != s.a_amount or got_b != ZERO:
            starved.append(f"{s.customer_account}({s.variant}): A {got_a} (want {s.a_amount}), B {got_b} (want 0.00)")
            wrong_by_variant[s.variant] += 1
    per_variant = ", ".join(
        f"{v} {wrong_by_variant[v]}/{n}" for v, n in sorted(Counter(s.variant for s in w.scenarios).items())
    )
    checks.append(
        Check(
            f"marked payments settle their invoice ({len(w.scenarios)} scenarios)",
            not starved,
            f"{len(starved)} wrong ({per_variant}): {_examples(starved, 3)}",
        )
    )

    dead = {topic: Counter(cid for cid, _, _ in entries) for topic, entries in o.dlq.items()}
    reasons = {cid for entries in o.dlq.values() for cid, _, reason in entries if reason}
    missing = [
        f"{p.poison_kind}→{p.topic}"
        for cid, p in w.poison.items()
        if cid not in reasons or dead.get(p.topic, Counter())[cid] == 0
    ]
    twice = [
        f"{p.poison_kind}×{dead[p.topic][cid]}" for cid, p in w.poison.items() if dead.get(p.topic, Counter())[cid] > 1
    ]
    checks.append(
        Check(
            f"every poison message on its DLQ with a reason ({len(w.poison)} sent)",
            not missing,
            f"{len(missing)} missing: {_examples(missing)}",
        )
    )
    checks.append(
        Check("each poison message dead-lettered once", not twice, f"{len(twice)} repeated: {_examples(twice)}")
    )
    valid_ids = {json.loads(s.value)["message_id"] for s in w.sends() if s.kind == "valid"}
    # A mark waiting for its invoice is state, not a reject (issue 9); a mark that can't be honoured is.
    kept = [
        message_id
        for entries in o.dlq.values()
        for cid, message_id, reason in entries
        if (cid in w.valid_chaos_ids or message_id in valid_ids) and reason and "kept" in reason
    ]
    checks.append(
        Check(
            "DLQs hold only rejects (no pending mark)",
            not kept,
            f"{len(kept)} 'kept, invoice not there yet' entries of valid payments",
        )
    )
    return checks, {
        "lost": len({x.split("@")[0] for x in lost}),
        "duplicated": len({x.split("@")[0] for x in duplicated}),
    }


def _accounting_balance(row: dict) -> Decimal:
    """A collections transaction's open balance in the accounting currency (given apart for a foreign one)."""
    foreign = row.get("accounting_currency_balance")
    return D(foreign if foreign is not None else row["balance"])


def _within(open_amount: Decimal, original: Decimal) -> bool:
    return 0 <= open_amount <= original if original >= 0 else original <= open_amount <= 0


# --- driving the stack ------------------------------------------------------------------------


@dataclass
class Run:
    stack: LocalStack
    workload: Workload
    kills: int = 0
    write_offs: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)  # why collections refused a write-off, ids left out
    restart_seconds: list[float] = field(default_factory=list)  # SIGKILL to /healthz 200 again
    last_send: float = 0.0


async def _http(
    client: httpx.AsyncClient, method: str, url: str, patience: float = 180, **kwargs: Any
) -> httpx.Response | None:
    """Retries while the service is down: a restart after a kill takes up to a minute on a loaded
    machine, so a write-off is not given up while its service is merely starting."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = await client.request(method, url, **kwargs)
            if response.status_code < 500:
                return response
        await asyncio.sleep(1)
    return None


async def write_off(run: Run, client: httpx.AsyncClient, step: WriteOff) -> None:
    """Request the write-off on collections, wait for its journal, post it on ledger-posting."""
    stack = run.stack
    response = await _http(
        client,
        "POST",
        f"{stack.url('collections')}/api/v1/write-offs",
        headers=stack.auth("collector"),
        json={
            "customer_account": step.customer_account,
            "invoice_id": step.invoice_id,
            "date": step.date,
            "reason_comment": "chaos",
        },
    )
    if response is None or response.status_code != 202:
        run.write_offs[f"refused {response.status_code if response else 'no answer'}"] += 1
        if response is not None:
            run.refusals[_without_ids(_reason(response))] += 1
        return
    write_off_id = response.json()["write_off_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = await _http(client, "GET", f"{stack.url('collections')}/api/v1/write-offs/{write_off_id}")
        status = body.json() if body is not None and body.status_code == 200 else {}
        if status.get("journal_batch_number"):
            # Another person than the requester (four-eyes): local-accountant.
            posted = await _http(
                client,
                "POST",
                f"{stack.url('ledger-posting')}/api/v1/journals/{status['journal_batch_number']}/post",
                headers=stack.auth("accountant"),
            )
            run.write_offs[
                "posted"
                if posted is not None and posted.status_code in (200, 409)
                else f"post failed {posted.status_code if posted else 'no answer'}"
            ] += 1
            return
        if status.get("status") == "rejected":
            run.write_offs["rejected by ledger"] += 1
            return
        await asyncio.sleep(1)
    run.write_offs["no journal within 120 s"] += 1


def _reason(response: httpx.Response) -> str:
    """The `detail` of a problem answer, else its body."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("detail"):
            return str(body["detail"])
    return response.text


def _without_ids(reason: str) -> str:
    """A refusal's reason with the workload's customer, invoice and voucher ids as placeholders, so alike
    refusals count as one."""
    return re.sub(r"\b(?:FTI-|CCN-)?INV-\d+\b", "<invoice>", re.sub(r"\b[CM]\d{4,6}\b", "<customer>", reason))


async def set_write_off_rate(stack: LocalStack) -> None:
    """The rate foreign write-offs are booked at (the documents state their own), from before any of them."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.put(
            f"{stack.url('ledger-posting')}/api/v1/exchange-rates/{FOREIGN}/2000-01-01",
            headers=stack.auth("accountant"),
            json={"rate": str(WRITE_OFF_RATE)},
        )
        response.raise_for_status()


async def drive(run: Run, rate: float) -> None:
    producer = await run.stack.producer()
    tasks: list[asyncio.Task] = []
    futures = []
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=10, headers=run.stack.auth("viewer")) as client:
            for n, step in enumerate(run.workload.steps):
                if isinstance(step, WriteOff):
                    tasks.append(asyncio.create_task(write_off(run, client, step)))
                    continue
                futures.append(
                    await producer.send(
                        step.topic, step.value, key=step.key.encode(), headers=[(CHAOS_ID, step.chaos_id.encode())]
                    )
                )
                if (wait := started + n / rate - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
            await asyncio.gather(*futures)
            run.last_send = time.monotonic()
            print(
                f"chaos: sent {len(futures)} records in {run.last_send - started:.0f}s; "
                f"{len(tasks)} write-offs in progress",
                flush=True,
            )
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await producer.stop()


async def kill_loop(run: Run, interval: float, r: random.Random, stop: asyncio.Event) -> None:
    """Every `interval` seconds SIGKILL one running service process (ours, by PID) and restart it."""
    restarts: list[asyncio.Task] = []
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
            await asyncio.gather(*restarts)
            return
        candidates = [p for p in run.stack.processes if p.running()]
        if not candidates:
            continue
        victim = r.choice(candidates)
        victim.kill()
        run.kills += 1
        print(f"chaos: SIGKILL {victim.label} (kill {run.kills})", flush=True)
        victim.start()
        restarts.append(asyncio.create_task(time_restart(run, victim)))


async def time_restart(run: Run, process: ServiceProcess) -> None:
    with contextlib.suppress(RuntimeError, TimeoutError):  # killed again meanwhile, or never healthy
        run.restart_seconds.append(await run.stack.wait_healthy([process], timeout=180))


async def snapshot(stack: LocalStack, client: httpx.AsyncClient) -> tuple:
    tb = (
        await client.get(f"{stack.url('ledger-posting')}/api/v1/trial-balance", params={"as_of": "2100-01-01"})
    ).json()
    aged = (await client.get(f"{stack.url('collections')}/api/v1/aged-balances", params={"as_of": "2100-01-01"})).json()
    return (
        tb["total_debit"],
        tuple((a["account"], a["balance"]) for a in tb["accounts"]),
        json.dumps(aged, sort_keys=True),
    )


@dataclass
class Stillness:
    """When the stack has converged: every consumer group's lag is 0 and neither the state nor the lag
    changed for `quiet` seconds. Lag above 0 that does not move is work still pending (a consumer
    rejoining its group, starting after a kill, or retrying a batch), never convergence; if nothing at
    all moves for `stuck` seconds with lag left, the run stops waiting and reports it."""

    quiet: float = 10
    stuck: float = 180
    previous: tuple | None = None
    still_since: float = 0

    def observe(self, now: float, state: tuple, lag: dict[str, int]) -> tuple[bool, float] | None:
        """(True, start of the still state) once converged, (False, its start) once stuck, else None."""
        current = (state, tuple(sorted(lag.items())))
        if current != self.previous:
            self.previous, self.still_since = current, now
            return None
        if not any(lag.values()):
            return (True, self.still_since) if now - self.still_since >= self.quiet else None
        return (False, self.still_since) if now - self.still_since >= self.stuck else None


async def converge(run: Run, timeout: float) -> tuple[float | None, dict[str, int]]:
    """Seconds from the end of the load until the stack is still with every lag 0 (see Stillness;
    None if that does not happen within `timeout`), and the lag at the end."""
    stack = run.stack
    for attempt in (1, 2):  # a process restarted by the last kill may itself die at start-up: once more
        for p in stack.processes:
            if not p.running():
                p.start()
        try:
            await stack.wait_healthy(stack.processes, timeout=timeout)
            break
        except (RuntimeError, TimeoutError) as e:
            print(f"chaos: after the load: {e}", flush=True)
            if attempt == 2:
                raise
    deadline = time.monotonic() + timeout
    stillness, lag, reported = Stillness(), {}, time.monotonic()
    async with httpx.AsyncClient(timeout=10, headers=stack.auth("viewer")) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                lag = await stack.lag()
                now = time.monotonic()
                if now - reported >= 30:  # the trend shows a slow consumer from a stuck one
                    print(f"chaos: {now - run.last_send:.0f}s after the last record, lag {lag}", flush=True)
                    reported = now
                outcome = stillness.observe(now, await snapshot(stack, client), lag)
                if outcome is not None:
                    converged, since = outcome
                    if not converged:
                        print(f"chaos: nothing moved for {stillness.stuck:.0f}s with lag {lag}", flush=True)
                    return (since - run.last_send if converged else None), lag
            await asyncio.sleep(1)
    return None, lag


async def observe(run: Run) -> Observed:
    stack = run.stack
    async with httpx.AsyncClient(timeout=30, headers=stack.auth("viewer")) as client:
        ledger = stack.url("ledger-posting")
        tb = (await client.get(f"{ledger}/api/v1/trial-balance", params={"as_of": "2100-01-01"})).json()

        async def vouchers(account: str) -> Counter:
            body = (await client.get(f"{ledger}/api/v1/ledger-entries", params={"account": account})).json()
            return Counter(e["voucher"] for e in body["entries"])

        semaphore = asyncio.Semaphore(8)

        async def rows(url: str, **params: Any) -> list[dict]:
            async with semaphore:
                response = await client.get(url, params=params)
                return response.json()["transactions"] if response.status_code == 200 else []

        accounts = run.workload.accounts
        collections = await asyncio.gather(
            *(rows(f"{stack.url('collections')}/api/v1/customers/{a}/transactions") for a in accounts)
        )
        settlement = await asyncio.gather(
            *(
                rows(f"{stack.url('settlement')}/api/v1/customers/{a}/open-transactions", include_settled="true")
                for a in accounts
            )
        )
        dlq = {}
        for topic in (topics.ERP_CUSTOMER_INVOICES, topics.ERP_CUSTOMER_PAYMENTS):
            records = await stack.read_topic(topics.dead_letter_topic(topic))
            dlq[topic] = [
                (header(r, CHAOS_ID), json_field(r.value, "message_id"), header(r, "x-dlq-reason"))
                for r in unique_letters(records)
            ]
        republished = {}
        for topic in (
            topics.AR_CUSTOMER_TRANSACTIONS,
            topics.AR_SETTLEMENTS,
            topics.GL_JOURNAL_LINES,
            *(topics.dead_letter_topic(t) for t in (topics.ERP_CUSTOMER_INVOICES, topics.ERP_CUSTOMER_PAYMENTS)),
        ):
            ids = Counter(json_field(r.value, "message_id") for r in await stack.read_topic(topic))
            republished[topic] = sum(n - 1 for message_id, n in ids.items() if message_id)
        return Observed(
            tb,
            await vouchers(AR),
            await vouchers(CASH),
            dict(zip(accounts, collections, strict=True)),
            dict(zip(accounts, settlement, strict=True)),
            dlq,
            republished,
        )


async def main(args: argparse.Namespace) -> int:
    workload = generate(args.messages, args.seed, poison_kinds=args.poison.split(",") if args.poison else None)
    sends = workload.sends()
    print(
        f"chaos: seed {args.seed}: {len(sends)} records ({sum(s.kind == 'duplicate' for s in sends)} duplicates, "
        f"{len(workload.poison)} poison), {len(workload.steps) - len(sends)} write-offs, "
        f"{len(workload.scenarios)} mark scenarios, {len(workload.accounts)} customers",
        flush=True,
    )
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="kredit-chaos-"))
    print(f"chaos: data and logs in {data_dir}", flush=True)
    started = time.monotonic()
    async with LocalStack(
        data_dir,
        postgres=args.postgres,
        replicas={"settlement": 2},
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.session_timeout_ms // 5,
    ) as stack:
        print(
            f"chaos: stack healthy after {time.monotonic() - started:.0f}s (broker {stack.bootstrap}, "
            f"{'PostgreSQL' if args.postgres else 'SQLite'})",
            flush=True,
        )
        await set_write_off_rate(stack)
        run = Run(stack, workload)
        stop = asyncio.Event()
        killer = asyncio.create_task(kill_loop(run, args.kill_interval, random.Random(args.seed + 1), stop))
        try:
            await drive(run, args.rate)
        finally:
            stop.set()
            await killer
        print(f"chaos: load done, {run.kills} kills; waiting for convergence ...", flush=True)
        converged, lag = await converge(run, args.converge_timeout)
        observed = await observe(run)
        rss = stack.rss_kib()
        # Joins beyond a process's own starts are rebalances: a replica (re)joining, or a live member
        # evicted because it missed its session timeout (what a too-short timeout does under load).
        rejoins = {p.label: p.log_count("Joined group") - p.starts for p in stack.processes}
        expired = sum(
            p.log_count("Heartbeat session expired")
            + p.log_count("member_id was not recognized")
            + p.log_count("generation id is not  current")
            for p in stack.processes
        )
    checks, figures = check(workload, observed)
    checks.append(
        Check(
            "every consumer group committed all its input (lag 0)",
            not any(lag.values()),
            f"records left: { {k: v for k, v in lag.items() if v} }",
        )
    )
    checks.append(
        Check(
            "converged",
            converged is not None,
            f"{converged:.1f}s after the last record"
            if converged is not None
            else f"not within {args.converge_timeout:.0f}s",
            informative=True,
        )
    )
    rows = [
        ["records sent", len(sends)],
        ["  of which exact duplicates", sum(s.kind == "duplicate" for s in sends)],
        ["  of which poison", len(workload.poison)],
        ["valid invoices / payments", f"{len(workload.invoices)} / {len(workload.payments)}"],
        ["write-offs", dict(run.write_offs) or 0],
        *(["  refused: " + reason, n] for reason, n in run.refusals.most_common()),
        ["kills (SIGKILL)", run.kills],
        ["restart to healthy (s, min/median/max)", _spread(run.restart_seconds)],
        ["lost", figures["lost"]],
        ["duplicated", figures["duplicated"]],
        ["time to converge", f"{converged:.1f}s" if converged is not None else "never"],
        ["max RSS (MiB)", max((v or 0) for v in rss.values()) // 1024],
        ["consumer group rejoins beyond starts", {k: v for k, v in rejoins.items() if v} or 0],
        ["evictions seen in the logs (session expired, member or generation unknown)", expired],
        ["records published again (same message_id)", {t: n for t, n in observed.republished.items() if n} or 0],
    ]
    print()
    print(render_table(["figure", "value"], rows))
    print()
    print(
        render_table(
            ["invariant", "result", "detail"],
            [
                [c.name, "held" if c.held else "VIOLATED", c.detail if not c.held or c.informative else ""]
                for c in checks
            ],
        )
    )
    violated = [c for c in checks if not c.held]
    print(
        f"\nchaos: {'PASS' if not violated else f'FAIL ({len(violated)} invariants violated)'}; logs in {data_dir / 'logs'}"
    )
    return 1 if violated else 0


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[0]:.0f} / {ordered[len(ordered) // 2]:.0f} / {ordered[-1]:.0f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="records to send (default 5000)")
    parser.add_argument("--kill-interval", type=float, default=5, help="seconds between SIGKILLs (default 5)")
    parser.add_argument("--rate", type=float, default=50, help="records per second (default 50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="fresh databases on 127.0.0.1:5432 instead of SQLite")
    parser.add_argument(
        "--poison", help=f"comma-separated poison kinds to send (default all: {','.join(POISON_KINDS)})"
    )
    parser.add_argument("--session-timeout-ms", type=int, default=1000, help="consumer session timeout (default 1000)")
    parser.add_argument("--converge-timeout", type=float, default=300)
    parser.add_argument("--data-dir", help="default: a new temporary folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_tool("chaos", main(parse_args()))
