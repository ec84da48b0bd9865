"""Spans are exported by OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT when it is set, and tracing is off
(no exporter, no trace headers) when it is not."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

from aiokafka import ConsumerRecord
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from kredit_shared import telemetry


@contextlib.contextmanager
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A stand-in OpenTelemetry collector on 127.0.0.1: records every POST (path, content type, body)."""
    received: list[tuple[str, str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def record(topic: str) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, 7, 0, 0, b"k", b"{}", None, 1, 2, [])


def test_spans_go_to_the_configured_otlp_endpoint():
    with collector() as (endpoint, received):
        provider = telemetry.configure_tracing("invoicing", endpoint)
        try:
            with telemetry.consuming("invoicing", "erp.customer-invoices", [record("erp.customer-invoices")]):
                assert [name for name, _ in telemetry.trace_headers()] == ["traceparent"]
            assert provider.force_flush(10_000)
        finally:
            telemetry.disable_tracing()
            provider.shutdown()
    (path, content_type, body) = received[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert service == "kredit-invoicing"
    assert [s.name for s in spans] == ["process erp.customer-invoices"]


def test_without_an_endpoint_tracing_is_off():
    assert telemetry.configure_tracing("invoicing", None) is None
    assert telemetry.configure_tracing("invoicing", "") is None
    with telemetry.consuming("invoicing", "erp.customer-invoices", [record("erp.customer-invoices")]):
        assert telemetry.trace_headers() == []
