"""The hosted error envelope: every failure answers ``{"error": "..."}`` with its status.

One handler for the whole app.  The library's own errors already carry the
hosted status and body (:class:`~limitry_local.errors.APIError`): 400 for
bad input naming the field, 404 for an unknown id, 429 with the denial's
body and headers.  What Starlette raises (an unknown path, a wrong method)
is put in the same envelope, and so is anything unexpected: a 500 whose
body says nothing of the inside, with the traceback in the server's log.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from limitry_local.errors import NOT_FOUND_BODY, APIError, LimitExceeded, LimitryError
from limitry_local.ledger import LedgerError
from limitry_local.server.wire import respond_json

log = logging.getLogger("limitry_local.server")

# What a busy ledger answers: another process held the file's write lock for
# the Tracker's whole timeout.  Nothing was recorded, so a retry is safe.
LEDGER_BUSY_RETRY_AFTER = "1"


async def api_error(request: Request, exc: Exception) -> Response:
    """``APIError`` (400, 401, 404, 429): its own status and body; a 429 keeps its headers."""
    assert isinstance(exc, APIError)
    headers = exc.headers if isinstance(exc, LimitExceeded) else None
    return respond_json(exc.response, exc.status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own: no such route (404), a method the route lacks (405)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = NOT_FOUND_BODY if status == HTTPStatus.NOT_FOUND else HTTPStatus(status).phrase
    return respond_json({"error": message}, exc.status_code, exc.headers)


async def ledger_error(request: Request, exc: Exception) -> Response:
    """503: the ledger could not be written (locked past the timeout, read-only, full).

    Nothing was acknowledged, so nothing is lost: the client sees the
    failure and may retry.  The message names the file and the cause.
    """
    log.warning("ledger error on %s %s: %s", request.method, request.url.path, exc)
    status = HTTPStatus.SERVICE_UNAVAILABLE
    return respond_json({"error": str(exc)}, status, {"Retry-After": LEDGER_BUSY_RETRY_AFTER})


async def library_error(request: Request, exc: Exception) -> Response:
    """Any other error of the library: a 500 that names it (it is a bug or a closed tracker)."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return respond_json({"error": f"internal error: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)


async def unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback; the client learns only that it happened."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return respond_json(
        {"error": "internal error (a bug in limitry-local; the server's log has the traceback)"},
        HTTPStatus.INTERNAL_SERVER_ERROR,
    )


HANDLERS = {
    APIError: api_error,
    HTTPException: http_error,
    LedgerError: ledger_error,
    LimitryError: library_error,
    Exception: unexpected,
}
