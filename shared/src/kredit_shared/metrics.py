"""Prometheus metrics shared by every service (labelled by service, so services can share a process)."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "kredit_messages_consumed_total", "Messages consumed, by outcome", ["service", "topic", "outcome"]
)
HANDLER_SECONDS = Histogram("kredit_handler_seconds", "Time to process one message", ["service", "topic"])
OUTBOX_PUBLISHED = Counter("kredit_outbox_published_total", "Outbox messages published", ["service", "topic"])
OUTBOX_PENDING = Gauge("kredit_outbox_pending", "Outbox messages not yet published", ["service"])
OUTBOX_UNPUBLISHABLE = Counter(
    "kredit_outbox_unpublishable_total",
    "Outbox messages too large to publish, dead-lettered instead",
    ["service", "topic"],
)
DEAD_LETTERS = Counter(
    "kredit_dead_letters_total", "Records dead-lettered, by error type", ["service", "topic", "error_type"]
)
CONSUMER_RETRYING_SECONDS = Gauge(
    "kredit_consumer_retrying_seconds",
    "How long the consumer has been retrying one message (0 when it is not)",
    ["service"],
)
