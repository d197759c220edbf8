"""``GET /v1/customers/{id}/usage``, ``GET /v1/usage`` and its breakdown and time series.

The analytics routes answer what the hosted v0 API answers, through the
Tracker's hosted-shaped calls (``tracker.usage_report.get_summary`` /
``get_breakdown`` / ``get_timeseries``): a breakdown group names its value
``dimension``, a time-series point its start ``timestamp``, and both bodies
are ``{"data": [...]}`` alone.  The hosted client asks ``GET /usage`` for the
summary; ``/usage/summary`` (this server's first path for it) answers the same.
``GET /v1/usage`` is also the Limitry 1.0 usage query when asked with
``limitId``: its route is in routes/limits1.py, which hands every other
request to :func:`summary` here.
"""

from __future__ import annotations

from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.analytics import GROUP_BYS, INTERVALS
from limitry_local.models import UsageGroupBy, UsageInterval
from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import query_text, required_text, respond


def _filters(request: Request) -> dict[str, Any]:
    """The range and the filters every usage report takes, by their wire names.

    The dates are optional here (no bound when absent), where the hosted
    client always sends both; what it sends is read the same way.
    """
    return {
        "start_date": query_text(request, "startDate"),
        "end_date": query_text(request, "endDate"),
        "customer_id": query_text(request, "customerId"),
        "event_type": query_text(request, "eventType"),
        "model": query_text(request, "model"),
        "provider": query_text(request, "provider"),
    }


async def customer_usage(request: Request) -> Response:
    """``startDate`` and ``endDate`` optional here (the hosted client always sends both)."""
    usage = tracker_of(request).customers.get_usage(
        request.path_params["customer_id"],
        query_text(request, "startDate"),
        query_text(request, "endDate"),
    )
    return respond(usage)


async def summary(request: Request) -> Response:
    """The five totals of every matching event (``UsageSummary``)."""
    return respond(tracker_of(request).usage_report.get_summary(**_filters(request)))


async def breakdown(request: Request) -> Response:
    group_by = cast(UsageGroupBy, required_text(request, "groupBy", GROUP_BYS))
    report = tracker_of(request).usage_report.get_breakdown(group_by, **_filters(request))
    return respond(report)


async def timeseries(request: Request) -> Response:
    interval = cast(UsageInterval, required_text(request, "interval", INTERVALS))
    report = tracker_of(request).usage_report.get_timeseries(interval, **_filters(request))
    return respond(report)


ROUTES = [
    Route(V1 + "/customers/{customer_id}/usage", customer_usage, methods=["GET"]),
    Route(V1 + "/usage/summary", summary, methods=["GET"]),
    Route(V1 + "/usage/breakdown", breakdown, methods=["GET"]),
    Route(V1 + "/usage/timeseries", timeseries, methods=["GET"]),
]
