"""Traces across HTTP and Kafka hops (OpenTelemetry) and the HTTP request metrics.

A trace follows a message through the services: the context of the span that handles a record or a
request is stored with every outbox row it writes (W3C `traceparent` header), the relay publishes the
row in a span that continues it, and the consumer on the other side starts its span from the record's
headers. Spans are exported by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise tracing is
off and these functions do nothing but bind the log context (no spans, no headers, no exporter).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from kredit_shared import metrics

_tracer: trace.Tracer | None = None  # None: tracing is off
# The record being handled on its own (not in a batch): its message's id and customer are bound to logs.
_single_record: contextvars.ContextVar[bool] = contextvars.ContextVar("kredit_single_record", default=False)

Header = tuple[str, bytes | None]


def enable_tracing(service_name: str, processor: SpanProcessor) -> TracerProvider:
    """Record spans into `processor` (tests pass an in-memory exporter's)."""
    global _tracer
    provider = TracerProvider(resource=Resource.create({"service.name": f"kredit-{service_name}"}))
    provider.add_span_processor(processor)
    _tracer = provider.get_tracer("kredit")
    return provider


def configure_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider | None:
    """Export spans by OTLP/HTTP to `otlp_endpoint` (e.g. http://otel-collector:4318); off when None."""
    if not otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=f"{otlp_endpoint.rstrip('/')}/v1/traces")
    return enable_tracing(service_name, BatchSpanProcessor(exporter))


def disable_tracing() -> None:
    global _tracer
    _tracer = None


def trace_headers() -> list[Header]:
    """The current span's context as Kafka headers, for an outbox row written now ([] when off)."""
    if _tracer is None:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def _context_of(headers: Sequence[Header]) -> Any:
    carrier = {}
    for name, value in headers or ():
        if name in ("traceparent", "tracestate") and value is not None:
            try:
                carrier[name] = value.decode()
            except UnicodeDecodeError:
                pass  # a broken header only costs the link to the upstream trace
    return propagate.extract(carrier)


@contextmanager
def consuming(service: str, topic: str, records: Sequence[ConsumerRecord]) -> Iterator[None]:
    """Around the handling of one record, or of several in one transaction (a batch): a CONSUMER span
    continuing the producer's trace (a batch's span links to each), and the log context."""
    bound: dict[str, str | int] = {"topic": topic}
    if len(records) == 1:
        bound |= {"partition": records[0].partition, "offset": records[0].offset}
    else:
        bound["records"] = len(records)
    single = _single_record.set(len(records) == 1)
    with structlog.contextvars.bound_contextvars(**bound):
        try:
            if _tracer is None:
                yield
                return
            attributes: dict[str, str | int] = {
                "kredit.service": service,
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
            }
            if len(records) == 1:
                parent, links = _context_of(records[0].headers), None
                attributes |= {
                    "messaging.destination.partition.id": str(records[0].partition),
                    "messaging.kafka.offset": records[0].offset,
                }
            else:
                parent = None
                links = [
                    Link(context)
                    for r in records
                    if (context := trace.get_current_span(_context_of(r.headers)).get_span_context()).is_valid
                ]
                attributes["messaging.batch.message_count"] = len(records)
            with _tracer.start_as_current_span(
                f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
            ):
                yield
        finally:
            _single_record.reset(single)
            # note_message bound these for this record only: the next record's logs must not show them.
            structlog.contextvars.unbind_contextvars("message_id", "customer_account")


def note_message(message: Any) -> None:
    """The parsed message of the record being handled alone: its id and customer go into the logs and
    the span (in a batch they would name only one of many, so nothing is bound)."""
    if not _single_record.get():
        return
    found = {
        key: value
        for key in ("message_id", "customer_account")
        if isinstance(value := getattr(message, key, None), str)
    }
    structlog.contextvars.bind_contextvars(**found)
    if _tracer is not None and "message_id" in found:
        trace.get_current_span().set_attribute("messaging.message.id", found["message_id"])


def publishing(service: str, topic: str, headers: list[Header]) -> AbstractContextManager[list[Header]]:
    """A PRODUCER span continuing the trace stored with an outbox row; yields the headers to send, which
    carry this span's context instead of the stored one. Without tracing, the headers as they are (the relay
    asks for every row it sends: no generator to run then)."""
    return nullcontext(headers) if _tracer is None else _publishing(service, topic, headers)


@contextmanager
def _publishing(service: str, topic: str, headers: list[Header]) -> Iterator[list[Header]]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        f"send {topic}",
        context=_context_of(headers),
        kind=SpanKind.PRODUCER,
        attributes={
            "kredit.service": service,
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    ):
        kept = [(k, v) for k, v in headers if k not in ("traceparent", "tracestate")]
        yield kept + trace_headers()


class HttpTelemetry:
    """ASGI middleware: a SERVER span per request (continuing a caller's `traceparent`) and the request
    metrics, labelled by route template (not the raw path, which would be unbounded)."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        if _tracer is None:
            try:
                await self.app(scope, receive, send_status)
            finally:
                self._count(scope, method, status, started)
            return
        headers = [(k.decode("latin-1"), v) for k, v in scope.get("headers", [])]
        with _tracer.start_as_current_span(
            f"{method} {scope['path']}",
            context=_context_of(headers),
            kind=SpanKind.SERVER,
            attributes={"kredit.service": self.service, "http.request.method": method},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = self._count(scope, method, status, started)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    def _count(self, scope: dict[str, Any], method: str, status: int, started: float) -> str:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        metrics.HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
        metrics.HTTP_REQUEST_SECONDS.labels(self.service, method, route).observe(time.perf_counter() - started)
        return route
