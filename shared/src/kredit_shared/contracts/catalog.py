"""The contract per topic: what it carries, which field is its record key, its headers.

One place that the AsyncAPI documents (`kredit_shared.asyncapi`, docs/asyncapi/), the message
reference (docs/messages.md) and the `kredit dlq` tool read, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kredit_shared.contracts import messages as m
from kredit_shared.contracts import topics


@dataclass(frozen=True)
class TopicContract:
    topic: str
    summary: str
    # Each message type the topic carries, and the field its record key is (the partitioning key:
    # one customer's, voucher's or batch's messages stay in order).
    keys: dict[type[m.ContractMessage], str]
    # What a consumer validates a record as: the one message type, or the union of them.
    payload: Any

    @property
    def messages(self) -> list[type[m.ContractMessage]]:
        return list(self.keys)


TOPICS: dict[str, TopicContract] = {
    c.topic: c
    for c in (
        TopicContract(
            topics.ERP_CUSTOMER_INVOICES,
            "Invoices and credit notes issued by the upstream ERP (a negative total is a credit note).",
            {m.CustomerInvoiceIssued: "customer_account"},
            m.CustomerInvoiceIssued,
        ),
        TopicContract(
            topics.ERP_CUSTOMER_PAYMENTS,
            "Customer payments from the ERP or the bank, optionally marked for the invoices they settle.",
            {m.CustomerPaymentReceived: "customer_account"},
            m.CustomerPaymentReceived,
        ),
        TopicContract(
            topics.AR_CUSTOMER_TRANSACTIONS,
            "Posted customer (subledger) transactions: invoices, credit notes, payments, cash discounts, write-offs.",
            {m.CustomerTransactionPosted: "customer_account"},
            m.CustomerTransactionPosted,
        ),
        TopicContract(
            topics.AR_SETTLEMENTS,
            "One settlement of a debit transaction against a credit transaction (deltas: any order converges).",
            {m.OpenItemsSettled: "customer_account"},
            m.OpenItemsSettled,
        ),
        TopicContract(
            topics.GL_JOURNAL_LINES,
            "Balanced ledger vouchers from the subledgers, posted at once by ledger-posting.",
            {m.VoucherPosted: "voucher"},
            m.VoucherPosted,
        ),
        TopicContract(
            topics.GL_GENERAL_JOURNALS,
            "General journal requests kept open for review (write-offs), and their cancels.",
            {m.GeneralJournalRequested: "request_id", m.GeneralJournalCancelRequested: "request_id"},
            m.GeneralJournalMessage,
        ),
        TopicContract(
            topics.GL_JOURNAL_EVENTS,
            "What became of a general journal: created, posted, rejected, voided, cancel refused.",
            {
                m.JournalCreated: "batch_number",
                m.JournalPosted: "batch_number",
                m.JournalRejected: "request_id",
                m.JournalVoided: "batch_number",
                m.JournalCancelRefused: "batch_number",
            },
            m.JournalEvent,
        ),
        TopicContract(
            topics.GL_EXCHANGE_RATES,
            "Exchange rates set over ledger-posting's HTTP API; every service books foreign documents at them.",
            {m.ExchangeRateSet: "currency"},
            m.ExchangeRateSet,
        ),
    )
}

# Headers the outbox relay puts on every message it publishes (consumers need none of them: the
# body's message_id is the idempotency key).
MESSAGE_HEADERS: dict[str, str] = {
    "message-type": "The message's type name (e.g. CustomerInvoiceIssued).",
    "message-id": "The body's message_id again, for tools that do not parse the body.",
    "kredit-producer": "The service that published it (e.g. settlement): a service skips what it published itself "
    "on a topic it also reads, where that changes nothing (settlement's own postings on ar.customer-transactions).",
}

# The headers of a dead letter on `<topic>.dlq`, after the original record's own headers (kept in
# their order). Every dead letter has the first four; the others where they apply.
DEAD_LETTER_HEADERS: dict[str, str] = {
    "x-dlq-reason": "Why the record was refused, in a sentence (at most 4,000 characters).",
    "x-dlq-error-type": (
        "invalid (not a contract message), rejected (refused by the service's rules), unexpected (an error "
        "that persisted through its retries), unpublishable (an output too large to publish)."
    ),
    "x-dlq-source-topic": "The contract topic the record came from (without a deployment's topic prefix).",
    "x-dlq-consumer": "The consumer group (or, for an unpublishable output, the service) that refused it.",
    "x-dlq-source-partition": "Partition of the original record (absent when it did not come from Kafka).",
    "x-dlq-source-offset": "Offset of the original record (absent when it did not come from Kafka).",
    "x-dlq-truncated": '"true" when the original was over 256 KiB and the value holds its first 256 KiB.',
    "x-dlq-original-size": "The original's size in bytes (with x-dlq-truncated).",
    "x-dlq-original-sha256": "The original's SHA-256, hex (with x-dlq-truncated).",
}
DEAD_LETTER_REQUIRED_HEADERS = ("x-dlq-reason", "x-dlq-error-type", "x-dlq-source-topic", "x-dlq-consumer")

# Put by `kredit dlq replay` on a record it republishes to its source topic; kept if the record is
# dead-lettered again, so a failed replay can be traced to the entry it came from.
REPLAY_HEADER = "x-replay-of"
REPLAY_HEADER_DESCRIPTION = "The dead letter this record is a replay of: `<dlq topic>:<partition>:<offset>`."


def topic_of(message_type: type[m.ContractMessage]) -> TopicContract:
    return TOPICS[message_type.topic]
