"""The hosted v0 client's type names, as ``limitry.client.types`` spells them.

Code written against ``limitry`` 0.3/0.4 imports its request and response
models from ``limitry.client.types``; ``from limitry_local.types import ...``
gives the same names, each the model this library reads and writes for
that shape (most are another name of a model in :mod:`limitry_local.models`).

Two names mean the hosted shape here and the local one at the package root:
``UsageBreakdownResponse`` and ``UsageTimeseriesResponse`` are the hosted
``{data: [...]}`` answers (``dimension``, ``timestamp``), while
``limitry_local.UsageBreakdownResponse`` is the local report (with
``groupBy`` and the dates) as release 0.2 made it.  ``Project`` here is the
model that ``client.project.get()`` answers; ``limitry_local.Project`` is the
resource class, as ``limitry.client.Project`` is.

The hosted enums (``GroupBy``, ``Interval``, ``Metric``, ``Period``,
``Window``) are string enums here: a member is its value (``Period.day ==
"day"``), so every field and argument takes either, and answers hold the
plain strings.
"""

from __future__ import annotations

from enum import StrEnum

from limitry_local.models import (
    CustomerUsageResponse,
    DeleteResponse,
    ErrorBody,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    Page,
    Project,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaAlertUpdate,
    QuotaCheckResponse,
    QuotaCreate,
    QuotasCheckRequest,
    QuotaStatus,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitsCheckRequest,
    RateLimitStatus,
    RateLimitUpdate,
    TrackDeniedResponse,
    TrackPostRequest,
    TrackPostResponse,
    UsageBreakdown,
    UsageBreakdownItem,
    UsageSummary,
    UsageTimeseries,
    UsageTimeseriesItem,
)


class GroupBy(StrEnum):
    """``usage.get_breakdown``'s ``group_by``."""

    model = "model"
    customer_id = "customer_id"
    event_type = "event_type"
    provider = "provider"


class Interval(StrEnum):
    """``usage.get_timeseries``'s ``interval``: UTC buckets."""

    hour = "hour"
    day = "day"
    week = "week"


class Metric(StrEnum):
    """What a quota counts."""

    total_tokens = "total_tokens"
    total_events = "total_events"
    total_cost_cents = "total_cost_cents"


class Period(StrEnum):
    """A quota's calendar period."""

    hour = "hour"
    day = "day"
    week = "week"
    month = "month"


class Window(StrEnum):
    """A rate limit's window by name (durations such as ``"5m"`` are taken as strings)."""

    second = "second"
    minute = "minute"
    hour = "hour"


ErrorResponse = ErrorBody
EventsPostRequest = TrackPostRequest
EventsPostResponse = EventIngestResponse
EventsBatchPostRequest = EventBatchRequest
EventsBatchPostResponse = EventBatchResponse
EventsGetResponse = Page[Event]
QuotasPostRequest = QuotaCreate
QuotasPutRequest = QuotaUpdate
QuotasGetResponse = Page[Quota]
QuotasDeleteResponse = DeleteResponse
QuotasCheckResponse = QuotaCheckResponse
QuotaCheckResult = QuotaStatus
QuotaAlertsPostRequest = QuotaAlertCreate
QuotaAlertsPutRequest = QuotaAlertUpdate
QuotaAlertsDeleteResponse = DeleteResponse
QuotasQuotaIdAlertsGetResponse = Page[QuotaAlert]
QuotaAlertsAlertIdHistoryGetResponse = Page[QuotaAlertLog]
RateLimitsPostRequest = RateLimitCreate
RateLimitsPutRequest = RateLimitUpdate
RateLimitsGetResponse = Page[RateLimit]
RateLimitsDeleteResponse = DeleteResponse
RateLimitsCheckResponse = RateLimitCheckResponse
RateLimitCheckResult = RateLimitStatus
TrackPostErrorResponse = TrackDeniedResponse
UsageBreakdownResponse = UsageBreakdown
UsageTimeseriesResponse = UsageTimeseries

__all__ = [
    "CustomerUsageResponse",
    "ErrorResponse",
    "Event",
    "EventsBatchPostRequest",
    "EventsBatchPostResponse",
    "EventsGetResponse",
    "EventsPostRequest",
    "EventsPostResponse",
    "GroupBy",
    "Interval",
    "Metric",
    "Period",
    "Project",
    "Quota",
    "QuotaAlert",
    "QuotaAlertLog",
    "QuotaAlertsAlertIdHistoryGetResponse",
    "QuotaAlertsDeleteResponse",
    "QuotaAlertsPostRequest",
    "QuotaAlertsPutRequest",
    "QuotaCheckResult",
    "QuotaStatus",
    "QuotasCheckRequest",
    "QuotasCheckResponse",
    "QuotasDeleteResponse",
    "QuotasGetResponse",
    "QuotasPostRequest",
    "QuotasPutRequest",
    "QuotasQuotaIdAlertsGetResponse",
    "RateLimit",
    "RateLimitCheckResult",
    "RateLimitStatus",
    "RateLimitsCheckRequest",
    "RateLimitsCheckResponse",
    "RateLimitsDeleteResponse",
    "RateLimitsGetResponse",
    "RateLimitsPostRequest",
    "RateLimitsPutRequest",
    "TrackPostErrorResponse",
    "TrackPostRequest",
    "TrackPostResponse",
    "UsageBreakdownItem",
    "UsageBreakdownResponse",
    "UsageSummary",
    "UsageTimeseriesItem",
    "UsageTimeseriesResponse",
    "Window",
]
