"""``/v1/quotas``: create, list, get, update (``PUT``), delete, check; and ``/v1/quota-alerts``.

Deletes answer 200 ``{"success": true}``, what the hosted API answers and
the hosted client reads (``DeleteResponse``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.errors import parse
from limitry_local.models import QuotaCheckRequest
from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import json_object, page_args, respond


async def create(request: Request) -> Response:
    return respond(tracker_of(request).quotas.create(await json_object(request)), 201)


async def list_quotas(request: Request) -> Response:
    return respond(tracker_of(request).quotas.list(**page_args(request)))


async def get(request: Request) -> Response:
    return respond(tracker_of(request).quotas.get(request.path_params["quota_id"]))


async def update(request: Request) -> Response:
    """Any subset of the create fields; the rest stay as they are."""
    quota_id = request.path_params["quota_id"]
    return respond(tracker_of(request).quotas.update(quota_id, await json_object(request)))


async def delete(request: Request) -> Response:
    return respond(tracker_of(request).quotas.delete(request.path_params["quota_id"]))


async def check(request: Request) -> Response:
    """``{"dimensions": {...}}``: where each matching quota stands, consuming nothing."""
    body = parse(QuotaCheckRequest, await json_object(request), {})
    return respond(tracker_of(request).quotas.check(body))


async def create_alert(request: Request) -> Response:
    quota_id = request.path_params["quota_id"]
    alert = tracker_of(request).quotas.alerts.create(quota_id, await json_object(request))
    return respond(alert, 201)


async def list_alerts(request: Request) -> Response:
    tracker = tracker_of(request)
    quota_id = request.path_params["quota_id"]
    tracker.quotas.get(quota_id)  # an unknown quota is a 404, not an empty page
    return respond(tracker.quotas.alerts.list(quota_id, **page_args(request)))


async def get_alert(request: Request) -> Response:
    """``GET /v1/quota-alerts/{id}``: one alert, whichever quota it is on."""
    return respond(tracker_of(request).quotas.alerts.get(request.path_params["alert_id"]))


async def update_alert(request: Request) -> Response:
    """``PUT /v1/quota-alerts/{id}``: a new ``threshold``; ``updatedAt`` moves."""
    alert_id = request.path_params["alert_id"]
    return respond(tracker_of(request).quotas.alerts.update(alert_id, await json_object(request)))


async def delete_alert(request: Request) -> Response:
    """``DELETE /v1/quota-alerts/{id}``: the alert stops firing; what it fired stays recorded."""
    return respond(tracker_of(request).quotas.alerts.delete(request.path_params["alert_id"]))


async def alert_history(request: Request) -> Response:
    """``GET /v1/quota-alerts/{id}/history``: the alert's firings, newest first."""
    tracker = tracker_of(request)
    alert_id = request.path_params["alert_id"]
    tracker.quotas.alerts.get(alert_id)  # an unknown alert is a 404, not an empty page
    return respond(tracker.quotas.alerts.history(alert_id=alert_id, **page_args(request)))


ROUTES = [
    Route(V1 + "/quotas", list_quotas, methods=["GET"]),
    Route(V1 + "/quotas", create, methods=["POST"]),
    Route(V1 + "/quotas/check", check, methods=["POST"]),
    Route(V1 + "/quotas/{quota_id}", get, methods=["GET"]),
    Route(V1 + "/quotas/{quota_id}", update, methods=["PUT"]),
    Route(V1 + "/quotas/{quota_id}", delete, methods=["DELETE"]),
    Route(V1 + "/quotas/{quota_id}/alerts", create_alert, methods=["POST"]),
    Route(V1 + "/quotas/{quota_id}/alerts", list_alerts, methods=["GET"]),
    Route(V1 + "/quota-alerts/{alert_id}", get_alert, methods=["GET"]),
    Route(V1 + "/quota-alerts/{alert_id}", update_alert, methods=["PUT"]),
    Route(V1 + "/quota-alerts/{alert_id}", delete_alert, methods=["DELETE"]),
    Route(V1 + "/quota-alerts/{alert_id}/history", alert_history, methods=["GET"]),
]
