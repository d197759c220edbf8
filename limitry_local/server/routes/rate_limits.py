"""``/v1/rate-limits``: create, list, get, update (``PUT``), delete, check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.errors import parse
from limitry_local.models import RateLimitCheckRequest
from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import json_object, page_args, respond


async def create(request: Request) -> Response:
    return respond(tracker_of(request).rate_limits.create(await json_object(request)), 201)


async def list_rate_limits(request: Request) -> Response:
    return respond(tracker_of(request).rate_limits.list(**page_args(request)))


async def get(request: Request) -> Response:
    return respond(tracker_of(request).rate_limits.get(request.path_params["rate_limit_id"]))


async def update(request: Request) -> Response:
    """Any subset of the create fields; the rest stay as they are."""
    limit_id = request.path_params["rate_limit_id"]
    return respond(tracker_of(request).rate_limits.update(limit_id, await json_object(request)))


async def delete(request: Request) -> Response:
    """200 ``{"success": true}``, as the hosted API answers a delete."""
    return respond(tracker_of(request).rate_limits.delete(request.path_params["rate_limit_id"]))


async def check(request: Request) -> Response:
    """``{"dimensions": {...}}``: whether a one-request event would pass now, consuming nothing."""
    body = parse(RateLimitCheckRequest, await json_object(request), {})
    return respond(tracker_of(request).rate_limits.check(body))


ROUTES = [
    Route(V1 + "/rate-limits", list_rate_limits, methods=["GET"]),
    Route(V1 + "/rate-limits", create, methods=["POST"]),
    Route(V1 + "/rate-limits/check", check, methods=["POST"]),
    Route(V1 + "/rate-limits/{rate_limit_id}", get, methods=["GET"]),
    Route(V1 + "/rate-limits/{rate_limit_id}", update, methods=["PUT"]),
    Route(V1 + "/rate-limits/{rate_limit_id}", delete, methods=["DELETE"]),
]
