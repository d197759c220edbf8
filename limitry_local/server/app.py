"""The app factory: the v0 and 1.0 routes under ``/v1``, the OpenAPI document, the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from limitry_local.limitry import Limitry
from limitry_local.server import openapi
from limitry_local.server.auth import ApiKeyAuth
from limitry_local.server.body_limit import BodyLimit
from limitry_local.server.envelope import HANDLERS
from limitry_local.server.page import page
from limitry_local.server.routes import (
    account1,
    events,
    limits1,
    project,
    quotas,
    rate_limits,
    track,
    usage,
)
from limitry_local.server.wire import JSON
from limitry_local.tracker import Tracker

API_ROUTES: list[BaseRoute] = [
    *track.ROUTES,
    *events.ROUTES,
    *quotas.ROUTES,
    *rate_limits.ROUTES,
    *usage.ROUTES,
    *project.ROUTES,
    *limits1.ROUTES,
    *account1.ROUTES,
]


def create_app(
    tracker: Tracker, *, api_key: str | None = None, close_tracker: bool = False
) -> Starlette:
    """The hosted v0 REST API and the Limitry 1.0 API over ``tracker``, as an ASGI app.

    ``api_key``: only ``Authorization: Bearer <api_key>`` passes (401
    otherwise); None lets every request through.  ``close_tracker``: close
    the Tracker when the server shuts down, which commits a batched
    ledger's pending events (``limitry-local serve`` sets it).

    >>> from limitry_local import Tracker
    >>> app = create_app(Tracker())
    """
    document = openapi.document_bytes()

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type=JSON)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            if close_tracker:
                tracker.close()

    app = Starlette(
        routes=[
            *API_ROUTES,
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/", page, methods=["GET"]),
        ],
        middleware=[Middleware(ApiKeyAuth, api_key=api_key), Middleware(BodyLimit)],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.tracker = tracker
    # One 1.0 face per app: it shares the Tracker's ledger and lock, so v0
    # and 1.0 requests to this worker see one another's writes at once.
    app.state.limitry = Limitry(tracker)
    return app
