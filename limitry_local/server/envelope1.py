"""The Limitry 1.0 error envelope, and which requests are answered in it.

The ``limitry`` 1.0 SDK reads a failure from ``{"error": {"code", "message",
"requestId"}}`` (plus ``details`` when there are some) and misreads any other
4xx/5xx body, so every error on a 1.0 path answers this shape: the face's
``ApiError``, and also what the app itself raises there (bad JSON, no such
route, a wrong method, the API key refused, a busy ledger, a bug).  The v0
paths keep their ``{"error": "message"}``.

A request is the 1.0 API's by its path, except ``GET /v1/usage``, which both
APIs have: with a ``limitId`` query parameter it is the 1.0 usage query,
without one v0's usage summary (docs/server.md).  :func:`is_limitry1` is the
one place that decides it, for the router and the error answers alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response

from limitry_local.ids import new_id
from limitry_local.server.wire import respond_json

PREFIXES = (
    "/v1/checks",
    "/v1/limits",
    "/v1/reservations",
    "/v1/subjects",
    "/v1/usage/standing",
    "/v1/usage/subjects",
    "/v1/workspace",
    "/v1/user",
)
SHARED_USAGE = "/v1/usage"
"""v0's summary without ``limitId``, the 1.0 usage query with it."""

# The code a failure without one of its own gets, by status.  ``busy`` is
# what the hosted API answers when it was reached and charged nothing, which
# is what a ledger locked past the timeout means: the SDK asks again with
# the same Idempotency-Key.
CODES: dict[int, str] = {
    HTTPStatus.BAD_REQUEST: "invalid_request",
    HTTPStatus.UNAUTHORIZED: "unauthorized",
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTPStatus.CONFLICT: "conflict",
    HTTPStatus.TOO_MANY_REQUESTS: "rate_limited",
    HTTPStatus.INTERNAL_SERVER_ERROR: "internal_error",
    HTTPStatus.NOT_IMPLEMENTED: "not_available_offline",
    HTTPStatus.SERVICE_UNAVAILABLE: "busy",
}


def is_limitry1(path: str, query: str | bytes) -> bool:
    """Whether the request at ``path`` with query string ``query`` is the 1.0 API's."""
    if path == SHARED_USAGE:
        return wants_usage_query(query)
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)


def wants_usage_query(query: str | bytes) -> bool:
    """``GET /v1/usage`` asked with ``limitId`` (even empty): the 1.0 usage query."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    return any(name == "limitId" for name, _ in parse_qsl(text, keep_blank_values=True))


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The 1.0 envelope; ``code`` defaults to the status's (:data:`CODES`)."""
    error: dict[str, Any] = {
        "code": code or CODES.get(status, "http_error"),
        "message": message,
        # Fresh per answer, as hosted: offline it ties nothing together, but
        # the SDK reads it onto ApiError.request_id.
        "requestId": new_id("req"),
    }
    if details:
        error["details"] = details
    return respond_json({"error": error}, status, headers)
