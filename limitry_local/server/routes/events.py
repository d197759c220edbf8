"""``/v1/events``: record one or a batch without enforcement, and list what was recorded."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import json_object, page_args, query_text, respond


async def ingest(request: Request) -> Response:
    return respond(tracker_of(request).events.ingest(await json_object(request)), 201)


async def batch(request: Request) -> Response:
    """``{"events": [...]}``, 1 to 1000; one bad event rejects the batch, naming it."""
    return respond(tracker_of(request).events.batch(await json_object(request)), 201)


async def list_events(request: Request) -> Response:
    """Newest first; ``customerId``, ``eventType``, ``model``, (ours) ``startDate``/``endDate``."""
    page = tracker_of(request).events.list(
        customer_id=query_text(request, "customerId"),
        event_type=query_text(request, "eventType"),
        model=query_text(request, "model"),
        start_date=query_text(request, "startDate"),
        end_date=query_text(request, "endDate"),
        **page_args(request),
    )
    return respond(page)


ROUTES = [
    Route(V1 + "/events", ingest, methods=["POST"]),
    Route(V1 + "/events", list_events, methods=["GET"]),
    Route(V1 + "/events/batch", batch, methods=["POST"]),
]
