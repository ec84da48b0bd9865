"""HTTP hardening every service shares: a request size limit, one error shape (RFC 9457
problem+json) for every 4xx and 5xx, and those answers documented in the OpenAPI.

Routes report a refusal with `HTTPException(status, "what is wrong")`, or let the domain's refusals
through `refusals_as_problems` (the domain's message as the detail); everything else (validation,
unknown paths, oversized bodies, crashes) is answered here in the same shape:

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "body.marks.0.amount_to_settle: amount '1e26' is not ...", "errors": [...]}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem(status: int, detail: str, **extra: Any) -> ProblemResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail} | extra
    return ProblemResponse(body, status_code=status)


# --- the request size limit -------------------------------------------------------------------


class BodySizeLimit:
    """Answer 413 to a body over `max_bytes`, by its Content-Length or, when it streams without one,
    as soon as that much has arrived: a huge body is never read into memory nor parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes FastAPI's body reading unchanged (any other error becomes a 400).
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, self._detail())(scope, receive, send)


# --- one error shape --------------------------------------------------------------------------


@contextmanager
def refusals_as_problems(
    refused: type[Exception] | tuple[type[Exception], ...],
    statuses: Mapping[type[Exception], int] | None = None,
    default: int = 422,
) -> Iterator[None]:
    """A domain refusal (`refused`) raised inside the block answers with its message as the problem's
    detail: the status of the first class of `statuses` it is an instance of, else `default`."""
    try:
        yield
    except refused as e:
        status = next((s for kind, s in (statuses or {}).items() if isinstance(e, kind)), default)
        raise HTTPException(status, str(e)) from None


async def http_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, StarletteHTTPException)
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    response = problem(error.status_code, detail)
    if error.status_code == 403:  # the audit trail records the refusal with its reason
        request.scope.setdefault("kredit", {})["refusal"] = detail  # kredit_shared.auth.context
    if error.headers:
        response.headers.update(error.headers)
    if error.status_code == 405:
        # Starlette names only the first route of the path; a path may have a route per method.
        response.headers["Allow"] = ", ".join(_documented_methods(request.app, request.url.path))
    return response


def _documented_methods(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


async def _validation_error(_request: Request, error: Exception) -> ProblemResponse:
    """422 naming each bad field. The input is not echoed: it may be huge, or a NaN that JSON cannot carry."""
    assert isinstance(error, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in e["loc"]], "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
        for e in error.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:20])
    return problem(422, detail or "invalid request", errors=errors)


async def _internal_error(request: Request, error: Exception) -> ProblemResponse:
    # The exception stays in the log; its text may name internals (SQL, paths), so the body does not.
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return problem(500, "internal error; the service log has the details")


# --- documentation ----------------------------------------------------------------------------

_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Validation errors only: where (`loc`) and what (`msg`, `type`).",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_DEFAULT_DESCRIPTIONS = {
    400: "The body could not be read",
    404: "Unknown resource",
    401: "No bearer token, or an invalid or expired one",
    403: "The token's roles do not include the role this needs, or a rule refuses this caller",
    413: "The request body is too large",
    429: "Too many requests from this client: wait for the seconds in Retry-After",
    422: "Invalid input: the errors name each bad field",
    500: "Internal error",
    503: "The database or the broker is unreachable (probes), or the token issuer's keys cannot be fetched",
}


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    """Add the error answers an operation can give (unless it documents them itself), all problem+json."""
    codes = {500}
    if "requestBody" in operation:
        codes |= {400, 413, 422}
    where = {parameter["in"] for parameter in operation.get("parameters", [])}
    if "path" in where:
        codes |= {404, 422}
    if "query" in where:
        codes.add(422)
    if path in ("/healthz", "/readyz"):
        codes.add(503)
    if operation.get("security"):  # kredit_shared.auth: a token, its role, the rate limit, the issuer's keys
        codes |= {401, 403, 429, 503}
    responses = operation.setdefault("responses", {})
    for code in codes:
        responses.setdefault(str(code), {"description": _DEFAULT_DESCRIPTIONS[code]})
    for code, response in responses.items():
        if code.isdigit() and int(code) >= 400:
            if response.get("description") == "Validation Error":  # FastAPI's default
                response["description"] = _DEFAULT_DESCRIPTIONS[422]
            response["content"] = _PROBLEM_CONTENT


def _install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    _document_errors(path, operation)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = _PROBLEM_SCHEMA
            # FastAPI's own validation-error schemas are unused now that every 422 is a Problem.
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            metrics = schema["paths"].get("/metrics", {}).get("get")
            if metrics is not None:
                metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_http_hardening(app: FastAPI, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Call once on a new app, before or after its routes are added."""
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    _install_openapi(app)
