"""What the ledger answers: events, customer usage, pages, usage reports, the hosted
v0 client's shapes and the error body.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    RootModel,
    field_validator,
)

from limitry_local.models.track import (
    TrackPostRequest,
)
from limitry_local.models.wire import (
    MAX_BATCH,
    RequestModel,
    Timestamp,
    WireModel,
    is_none,
    iso,
)


class EventIngestResponse(WireModel):
    id: str


class EventBatchRequest(RequestModel):
    events: Annotated[list[TrackPostRequest], Field(min_length=1, max_length=MAX_BATCH)]


class EventBatchResponse(WireModel):
    count: int


class Event(WireModel):
    """A recorded event.  ``createdAt`` is the event's own time (its ``timestamp``)."""

    id: str
    created_at: Timestamp
    customer_id: str | None = None
    event_type: str | None = None
    model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    latency_ms: int | None = None
    cost_cents: int | float | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    # Ours (see TrackPostRequest): written only when the event carried it.
    cached_input_tokens: int | None = Field(default=None, exclude_if=is_none)


class CustomerUsageResponse(WireModel):
    customer_id: str
    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: float | int

    @field_validator("total_cost_cents")
    @classmethod
    def _whole_cents_as_int(cls, value: float | int) -> float | int:
        # Keeps ``500`` as ``500`` (not ``500.0``) so sums of whole cents dump like the hosted API.
        return int(value) if float(value).is_integer() else value


T = TypeVar("T")


class Page(WireModel, Generic[T]):
    """One page of a list: ``data``, ``nextCursor`` (pass it back as ``cursor``), ``hasMore``."""

    data: list[T]
    next_cursor: str | None = None
    has_more: bool = False


class ErrorBody(WireModel):
    error: str


# --- usage analytics (ours: the hosted /usage names no fields) ----------------

UsageGroupBy = Literal["model", "customer_id", "event_type", "provider"]
UsageInterval = Literal["hour", "day", "week"]


def _in_utc(value: datetime) -> datetime:
    # Not Timestamp: a week that holds 1970-01-01 starts in 1969.
    return (
        value.replace(tzinfo=timezone.utc)
        if value.tzinfo is None
        else value.astimezone(timezone.utc)
    )


def _whole_as_int(value: float | int) -> float | int:
    # 500 cents dump as 500, not 500.0, as CustomerUsageResponse does.
    return int(value) if float(value).is_integer() else value


ReportTime = Annotated[datetime, AfterValidator(_in_utc), PlainSerializer(iso, when_used="json")]
CentsTotal = Annotated[float | int, AfterValidator(_whole_as_int)]


class UsageGroup(WireModel):
    """One group of a breakdown: the grouped dimension's value and the group's totals.

    ``value`` is None for the events that have no value of that dimension
    (no ``model``, say): they form one group of their own.
    """

    value: str | None
    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: CentsTotal


class UsagePoint(WireModel):
    """One period of a time series: when it starts (UTC) and the totals of its events."""

    period_start: ReportTime
    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: CentsTotal


class UsageBreakdownResponse(WireModel):
    """Usage grouped by one dimension over ``[startDate, endDate)``, largest totalTokens first.

    The dates are the range as the report read it (a date ``end_date`` becomes
    the next midnight); None means unbounded.
    """

    group_by: UsageGroupBy
    start_date: ReportTime | None
    end_date: ReportTime | None
    data: list[UsageGroup]


class UsageTimeseriesResponse(WireModel):
    """Usage per UTC period over ``[startDate, endDate)``: one point per period with events."""

    interval: UsageInterval
    start_date: ReportTime | None
    end_date: ReportTime | None
    data: list[UsagePoint]


# --- the hosted v0 client's shapes (``limitry`` 0.3/0.4, ``limitry.client.types``) ----


class UsageSummary(WireModel):
    """``GET /usage``: the totals of the matching events over the range, as the hosted
    ``UsageSummary`` names them."""

    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: CentsTotal


class UsageBreakdownItem(WireModel):
    """One group of the hosted breakdown: ``dimension`` is the grouped value (None: no value).

    The hosted name of :class:`UsageGroup`'s ``value``.
    """

    dimension: str | None = None
    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: CentsTotal


class UsageTimeseriesItem(WireModel):
    """One point of the hosted time series: ``timestamp`` is the bucket's start (UTC).

    The hosted name of :class:`UsagePoint`'s ``periodStart``.
    """

    timestamp: ReportTime
    total_events: int
    total_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: CentsTotal


class UsageBreakdown(WireModel):
    """``GET /usage/breakdown`` as the hosted API answers it: ``{data: [...]}`` only.

    The hosted client calls this type ``UsageBreakdownResponse``; that name
    here is the local report (with ``groupBy`` and the dates), kept as it was.
    """

    data: list[UsageBreakdownItem]


class UsageTimeseries(WireModel):
    """``GET /usage/timeseries`` as the hosted API answers it: ``{data: [...]}`` only.

    The hosted client's ``UsageTimeseriesResponse``; see :class:`UsageBreakdown`.
    """

    data: list[UsageTimeseriesItem]


class Project(WireModel):
    """``GET /project``: the project an API key belongs to.

    Offline there is one project per Tracker: its ``project_id`` (``proj_local``
    unless given), in the organization ``org_local``, named and slugged
    ``local``.
    """

    id: str
    organization_id: str
    name: str
    slug: str
    created_at: Timestamp
    updated_at: Timestamp


class DeleteResponse(WireModel):
    """What a hosted delete answers: ``{"success": true}``."""

    success: bool = True


class _DimensionsBody(RootModel[dict[str, Any]]):
    """A check's body as the hosted client types it: any JSON object.

    ``QuotasCheckRequest({"dimensions": {"customer_id": "c"}})``, or the
    dimensions bare; the check reads either, as it reads a plain dict.
    """


class QuotasCheckRequest(_DimensionsBody):
    """The hosted client's quota-check body (a root model over the JSON object)."""


class RateLimitsCheckRequest(_DimensionsBody):
    """The hosted client's rate-limit-check body (a root model over the JSON object)."""


PaginatedResponse = Page
"""The hosted client's name of a page: ``PaginatedResponse[Quota](data=[...])``,
with ``.data``, ``.next_cursor`` and ``.has_more``."""
