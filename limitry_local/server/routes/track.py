"""``POST /v1/track``: rate-limit check, quota check, record; 201 or 429 with the headers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import json_object, respond


async def track(request: Request) -> Response:
    """201 with the rate-limit headers; a denial raises the 429 the envelope answers."""
    response = tracker_of(request).usage(await json_object(request))
    return respond(response, 201, response.headers)


ROUTES = [Route(V1 + "/track", track, methods=["POST"])]
