"""One log format for the whole process (ours, uvicorn's, FastStream's, aiokafka's, Alembic's): structlog
renders every stdlib log record as JSON (LOG_FORMAT=json, one object per line, no colour codes) or as
readable console lines (LOG_FORMAT=console, colours only on a terminal). Context bound while a message
is handled (topic, partition, offset, message_id, customer_account) and the trace ids appear as keys."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from opentelemetry import trace

LogFormat = Literal["json", "console"]

# Requests that probes and scrapers make every few seconds: their access lines are noise.
_QUIET_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


def _add_trace_ids(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _drop_colour_copies(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("color_message", None)  # uvicorn's extra: the message again, with terminal colour codes
    return event


class _QuietAlembic(logging.Filter):
    """Alembic names its dialect on every start; what it migrates ("Running upgrade ...") stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


class _QuietProbes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 3 and str(args[2]).split("?")[0] in _QUIET_PATHS)


def configure_logging(level: str = "INFO", fmt: LogFormat = "console") -> None:
    """Install the one handler on the root logger and route the libraries' loggers to it."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        _drop_colour_copies,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    if fmt == "json":
        renderer: list[Any] = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # FastStream gives its loggers their own coloured stdout handlers; uvicorn would too (run with
    # log_config=None). Everything goes through the root handler instead.
    for name in ("faststream", "faststream.access", "faststream.access.kafka", "uvicorn", "uvicorn.access"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.access").addFilter(_QuietProbes())
    logging.getLogger("alembic.runtime.migration").addFilter(_QuietAlembic())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
