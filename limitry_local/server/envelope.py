"""The hosted error envelope: every failure answers ``{"error": "..."}`` with its status.

One handler per kind of failure for the whole app; on a Limitry 1.0 path
each answers the 1.0 envelope instead (server/envelope1.py decides which
paths, and builds it).  The library's own errors already carry the
hosted status and body (:class:`~limitry_local.errors.APIError`): 400 for
bad input naming the field, 404 for an unknown id, 429 with the denial's
body and headers.  What Starlette raises (an unknown path, a wrong method)
is put in the same envelope, and so is anything unexpected: a 500 whose
body says nothing of the inside, with the traceback in the server's log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from limitry_local.errors import NOT_FOUND_BODY, APIError, LimitryError
from limitry_local.ledger import LedgerError
from limitry_local.limitry import ApiError
from limitry_local.server.envelope1 import error_response, is_limitry1
from limitry_local.server.wire import respond_json

log = logging.getLogger("limitry_local.server")

# What a busy ledger answers: another process held the file's write lock for
# the Tracker's whole timeout.  Nothing was recorded, so a retry is safe.
LEDGER_BUSY_RETRY_AFTER = "1"


def _answer(
    request: Request,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    body: object = None,
) -> Response:
    """The 1.0 envelope on a 1.0 path; else v0's, ``body`` or ``{"error": message}``."""
    if is_limitry1(request.url.path, request.url.query):
        return error_response(status, message, headers=headers)
    return respond_json({"error": message} if body is None else body, status, headers)


async def limitry1_error(request: Request, exc: Exception) -> Response:
    """The 1.0 face's ``ApiError``: its status, code, message and details."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, code=exc.code, details=exc.details)


async def api_error(request: Request, exc: Exception) -> Response:
    """``APIError`` (400, 401, 404, 429): its own status and body; a 429 keeps its headers."""
    assert isinstance(exc, APIError)
    # A 429's headers, and a full bucket store's Retry-After.
    headers = getattr(exc, "headers", None)
    return _answer(request, exc.status, exc.message, headers, exc.response)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own: no such route (404), a method the route lacks (405)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    v0 = NOT_FOUND_BODY if status == HTTPStatus.NOT_FOUND else HTTPStatus(status).phrase
    # The 1.0 message says which: the hosted 404 body of v0 says nothing more.
    where = f"{request.method} {request.url.path}"
    headers = exc.headers
    if status == HTTPStatus.NOT_FOUND:
        detail = f"{where}: no such route"
    elif status == HTTPStatus.METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": _allowed(request)}
        detail = f"{where}: this path takes {headers['Allow']}"
    elif status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        detail = v0 = exc.detail  # what the limit is, and what to do
    else:
        detail = f"{where}: {v0}"
    return _answer(request, status, detail, headers, {"error": v0})


def _allowed(request: Request) -> str:
    """Every method the path serves, for a 405's ``Allow``.

    Each method of a path is its own route, and Starlette names only the
    first route whose path matched (found in review: ``DELETE /v1/limits/x``
    said the path took GET, though it takes PATCH too).
    """
    partial = [
        route.methods or set()
        for route in request.app.router.routes
        if isinstance(route, Route) and route.matches(request.scope)[0] is Match.PARTIAL
    ]
    return ", ".join(sorted(set().union(*partial)))


async def ledger_error(request: Request, exc: Exception) -> Response:
    """503: the ledger could not be written (locked past the timeout, read-only, full).

    Nothing was acknowledged, so nothing is lost: the client sees the
    failure and may retry.  The message names the file and the cause.
    """
    log.warning("ledger error on %s %s: %s", request.method, request.url.path, exc)
    status = HTTPStatus.SERVICE_UNAVAILABLE
    return _answer(request, status, str(exc), {"Retry-After": LEDGER_BUSY_RETRY_AFTER})


async def library_error(request: Request, exc: Exception) -> Response:
    """Any other error of the library: a 500 that names it (it is a bug or a closed tracker)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _answer(request, HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}")


async def unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback; the client learns only that it happened."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    message = "internal error (a bug in limitry-local; the server's log has the traceback)"
    return _answer(request, HTTPStatus.INTERNAL_SERVER_ERROR, message)


HANDLERS = {
    ApiError: limitry1_error,
    APIError: api_error,
    HTTPException: http_error,
    LedgerError: ledger_error,
    LimitryError: library_error,
    Exception: unexpected,
}
