"""Settlement's own Prometheus metrics: what waits for an invoice or a transaction it has not seen yet."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from kredit_shared.service import UnitOfWork

PENDING_MARK_EVENTS = Counter(
    "kredit_settlement_pending_mark_events_total",
    "Payment marks on invoices not known yet: kept, resolved (the invoice arrived), released by an operator",
    ["outcome"],
)
PENDING_MARKS = Gauge("kredit_settlement_pending_marks", "Payment marks waiting for their invoice")
RESERVED_AMOUNT = Gauge(
    "kredit_settlement_reserved_amount", "Money of marked payments reserved for invoices not known yet (all currencies)"
)
PENDING_WRITE_OFFS = Gauge(
    "kredit_settlement_pending_write_offs", "Posted write-off amounts waiting for the transaction they name"
)


def count_on_commit(uow: UnitOfWork, outcome: str, n: int) -> None:
    """Count once the transaction commits, so a retried message is not counted twice."""
    if n:
        uow.on_commit(PENDING_MARK_EVENTS.labels(outcome).inc, n)
