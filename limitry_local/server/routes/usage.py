"""``GET /v1/customers/{id}/usage`` and ``GET /v1/usage/summary|breakdown|timeseries``.

The analytics routes serve what ``tracker.usage_report`` answers today.
Each report is one call in the ``_summary`` / ``_breakdown`` / ``_timeseries``
functions below, so serving the hosted-shaped report (``dimension`` for a
group's value, ``timestamp`` for a point's start) is a change of that one
line once the Tracker offers it; docs/server.md lists the names that differ.
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from limitry_local.analytics import GROUP_BYS, INTERVALS
from limitry_local.metrics import MICRO_CENTS, from_units
from limitry_local.models import CentsTotal, UsageGroupBy, UsageInterval, WireModel
from limitry_local.server.routes import V1, tracker_of
from limitry_local.server.wire import query_text, required_text, respond
from limitry_local.tracker import Tracker


class UsageSummary(WireModel):
    """``GET /usage/summary``: the five totals of every matching event."""

    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: CentsTotal


def _filters(request: Request) -> dict[str, Any]:
    """The range and the filters every usage report takes, by their wire names."""
    return {
        "start_date": query_text(request, "startDate"),
        "end_date": query_text(request, "endDate"),
        "customer_id": query_text(request, "customerId"),
        "event_type": query_text(request, "eventType"),
        "model": query_text(request, "model"),
        "provider": query_text(request, "provider"),
    }


def _summary(tracker: Tracker, filters: dict[str, Any]) -> BaseModel:
    # The Tracker has no summary report yet: the totals of one breakdown's
    # groups, every event being in exactly one of them.  Cents are summed as
    # the ledger's whole micro-cents, so the total is exact.
    groups = tracker.usage_report.breakdown("event_type", **filters).data
    return UsageSummary(
        total_events=sum(group.total_events for group in groups),
        total_tokens=sum(group.total_tokens for group in groups),
        total_input_tokens=sum(group.total_input_tokens for group in groups),
        total_output_tokens=sum(group.total_output_tokens for group in groups),
        total_cost_cents=from_units(
            "total_cost_cents",
            sum(round(group.total_cost_cents * MICRO_CENTS) for group in groups),
        ),
    )


def _breakdown(tracker: Tracker, group_by: str, filters: dict[str, Any]) -> BaseModel:
    return tracker.usage_report.breakdown(cast(UsageGroupBy, group_by), **filters)


def _timeseries(tracker: Tracker, interval: str, filters: dict[str, Any]) -> BaseModel:
    return tracker.usage_report.timeseries(cast(UsageInterval, interval), **filters)


async def customer_usage(request: Request) -> Response:
    """``startDate`` and ``endDate`` optional here (the hosted client always sends both)."""
    usage = tracker_of(request).customers.get_usage(
        request.path_params["customer_id"],
        query_text(request, "startDate"),
        query_text(request, "endDate"),
    )
    return respond(usage)


async def summary(request: Request) -> Response:
    return respond(_summary(tracker_of(request), _filters(request)))


async def breakdown(request: Request) -> Response:
    group_by = required_text(request, "groupBy", GROUP_BYS)
    return respond(_breakdown(tracker_of(request), group_by, _filters(request)))


async def timeseries(request: Request) -> Response:
    interval = required_text(request, "interval", INTERVALS)
    return respond(_timeseries(tracker_of(request), interval, _filters(request)))


ROUTES = [
    Route(V1 + "/customers/{customer_id}/usage", customer_usage, methods=["GET"]),
    Route(V1 + "/usage/summary", summary, methods=["GET"]),
    Route(V1 + "/usage/breakdown", breakdown, methods=["GET"]),
    Route(V1 + "/usage/timeseries", timeseries, methods=["GET"]),
]
