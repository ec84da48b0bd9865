"""Prometheus metrics shared by every service (labelled by service, so services can share a process)."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "kredit_messages_consumed_total", "Messages consumed, by outcome", ["service", "topic", "outcome"]
)
HANDLER_SECONDS = Histogram(
    "kredit_handler_seconds", "Time to process one message, or one fetch on a batch subscription", ["service", "topic"]
)
OUTBOX_PUBLISHED = Counter("kredit_outbox_published_total", "Outbox messages published", ["service", "topic"])
OUTBOX_PENDING = Gauge(
    "kredit_outbox_pending", "Outbox messages not yet published (an upper bound, read without counting)", ["service"]
)
OUTBOX_UNPUBLISHABLE = Counter(
    "kredit_outbox_unpublishable_total",
    "Outbox messages too large to publish, dead-lettered instead",
    ["service", "topic"],
)
DEAD_LETTERS = Counter(
    "kredit_dead_letters_total",
    "Dead letters published to <topic>.dlq (by the runtime, a handler or the relay), by source topic and error type",
    ["service", "topic", "error_type"],
)
CONSUMER_RETRYING_SECONDS = Gauge(
    "kredit_consumer_retrying_seconds",
    "How long the consumer has been retrying one message (0 when it is not)",
    ["service"],
)
HTTP_REQUESTS = Counter(
    "kredit_http_requests_total",
    "HTTP requests answered, by route template and status",
    ["service", "method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "kredit_http_request_seconds", "Time to answer an HTTP request", ["service", "method", "route"]
)
CONSUMER_LAG = Gauge(
    "kredit_consumer_lag",
    "Records on the broker not yet handed to this consumer (high watermark - position), per assigned partition",
    ["service", "topic", "partition"],
)
RETENTION_DELETED = Counter(
    "kredit_retention_deleted_total",
    "Rows deleted by the retention job: published outbox rows, old inbox entries, documents kept for a rate",
    ["service", "table"],
)
