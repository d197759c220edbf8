"""Wire models of the hosted Limitry API: validation and aliases, nothing else.

Every model accepts the camelCase wire names and the snake_case attribute
names, and ``model_dump(by_alias=True, mode="json")`` writes the wire form
back.  Fields that are our additions to the hosted shapes (``per``, a rate
limit's ``metric``) are left out of the dump while they hold their default, so
hosted JSON round-trips unchanged.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from limitry_local.metrics import Metric
from limitry_local.periods import Period

# Size limits.  They keep one event's row and its dimension keys small and
# every counter within a 64-bit SQLite integer: quotas count cents as
# micro-cents, so a 10**12-cent limit is 10**18 units, and a 10**9-cent event
# is 10**15 units (thousands of maximal events before any overflow).
MAX_STRING = 256
MAX_PROPERTIES = 64
MAX_PROPERTY_KEY = 64
MAX_PROPERTIES_JSON = 16_384
MAX_AMOUNT = 10**12
MAX_CENTS = 10**9
MAX_LIMIT = 10**12
MAX_FILTERS = 16
MAX_PER = 16
MAX_FILTER_VALUES = 100
MAX_BATCH = 1000
MIN_YEAR = 1970
MAX_YEAR = 9998

RateLimitMetric = Literal["total_events", "total_tokens"]

_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAMED_WINDOWS = {"second": 1, "minute": 60, "hour": 3600}
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")


def window_seconds(window: str) -> int:
    """Seconds in a rate-limit window: ``"minute"`` -> 60, ``"30s"`` -> 30, ``"1d"`` -> 86400."""
    named = _NAMED_WINDOWS.get(window)
    if named is not None:
        return named
    match = _DURATION.match(window)
    if match is None:
        raise ValueError(
            "window must be second, minute, hour or a duration such as 30s, 5m, 1h, 1d"
        )
    return int(match.group(1)) * _WINDOW_UNITS[match.group(2)]


def _check_window(window: str) -> str:
    window_seconds(window)
    return window


def _utc(value: datetime) -> datetime:
    # A naive timestamp is read as UTC: the hosted API speaks UTC throughout.
    try:
        value = (
            value.replace(tzinfo=timezone.utc)
            if value.tzinfo is None
            else value.astimezone(timezone.utc)
        )
    except OverflowError:
        raise ValueError("is out of range") from None
    # Unix seconds must exist for the value and for the end of its month.
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must fall between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


def _utf8(value: str) -> str:
    # Lone surrogates ("\ud800") are valid Python but cannot be stored as text.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _plain_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _check_properties(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_PROPERTIES:
        raise ValueError(f"at most {MAX_PROPERTIES} properties are allowed")
    for key, item in value.items():
        if not key or len(key) > MAX_PROPERTY_KEY:
            raise ValueError(f"property names must be 1 to {MAX_PROPERTY_KEY} characters")
        if isinstance(item, str) and len(item) > MAX_STRING:
            raise ValueError(f"property {key!r} is longer than {MAX_STRING} characters")
        _utf8(key)
        if isinstance(item, str):
            _utf8(item)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"properties must be JSON values: {exc}") from None
    if len(encoded) > MAX_PROPERTIES_JSON:
        raise ValueError(f"properties must encode to at most {MAX_PROPERTIES_JSON} bytes of JSON")
    return value


def _check_filters(value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
    if len(value) > MAX_FILTERS:
        raise ValueError(f"at most {MAX_FILTERS} dimension filters are allowed")
    for key, item in value.items():
        if not key:
            raise ValueError("dimension names must not be empty")
        if isinstance(item, list) and not 1 <= len(item) <= MAX_FILTER_VALUES:
            raise ValueError(f"{key}: a list of values must hold 1 to {MAX_FILTER_VALUES} strings")
    return value


def _check_per(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("per must not repeat a dimension")
    if any(not name for name in value):
        raise ValueError("per must name dimensions, not empty strings")
    return value


Name = Annotated[str, Field(min_length=1, max_length=MAX_STRING), AfterValidator(_utf8)]
Text = Annotated[str, Field(max_length=MAX_STRING), AfterValidator(_utf8)]
DimensionName = Annotated[str, Field(max_length=MAX_PROPERTY_KEY), AfterValidator(_utf8)]
# Strict: a boolean or a numeric string where an integer goes is a client bug.
Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
PositiveLimit = Annotated[int, Field(strict=True, gt=0, le=MAX_LIMIT)]
# A number, kept as given (25 stays 25, 0.5 stays 0.5); booleans and strings refused.
Cents = Annotated[
    int | float,
    BeforeValidator(_plain_number),
    Field(ge=0, le=MAX_CENTS, allow_inf_nan=False),
    AfterValidator(_finite),
]
Timestamp = Annotated[datetime, AfterValidator(_utc)]
Properties = Annotated[dict[str, Any], AfterValidator(_check_properties)]
DimensionFilters = Annotated[
    dict[DimensionName, Text | list[Text]],
    AfterValidator(_check_filters),
]
Per = Annotated[
    list[DimensionName],
    Field(max_length=MAX_PER),
    AfterValidator(_check_per),
]
Window = Annotated[str, AfterValidator(_check_window)]
Flag = Annotated[bool, Field(strict=True)]


def _is_none(value: object) -> bool:
    return value is None


def _is_empty(value: object) -> bool:
    return value in (None, [], {})


def _is_default_metric(value: object) -> bool:
    return value == "total_events"


class WireModel(BaseModel):
    """Base of every model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


# --- /track -----------------------------------------------------------------


class TrackPostRequest(WireModel):
    """One usage event, as sent to ``POST /track`` (and ``POST /events``)."""

    customer_id: Name
    event_type: Name
    model: Text | None = Field(default=None, exclude_if=_is_empty)
    provider: Text | None = Field(default=None, exclude_if=_is_empty)
    input_tokens: Amount | None = Field(default=None, exclude_if=_is_empty)
    output_tokens: Amount | None = Field(default=None, exclude_if=_is_empty)
    total_tokens: Amount | None = Field(default=None, exclude_if=_is_empty)
    latency_ms: Amount | None = Field(default=None, exclude_if=_is_empty)
    cost_cents: Cents | None = Field(default=None, exclude_if=_is_empty)
    properties: Properties = Field(default_factory=dict, exclude_if=_is_empty)
    idempotency_key: Name | None = Field(default=None, exclude_if=_is_empty)
    timestamp: Timestamp | None = Field(default=None, exclude_if=_is_empty)

    @model_validator(mode="after")
    def _default_total(self) -> TrackPostRequest:
        if self.total_tokens is None and (
            self.input_tokens is not None or self.output_tokens is not None
        ):
            total = (self.input_tokens or 0) + (self.output_tokens or 0)
            if total > MAX_AMOUNT:
                raise ValueError(f"totalTokens (inputTokens + outputTokens) exceeds {MAX_AMOUNT}")
            self.total_tokens = total
        return self


class RateLimitStatus(WireModel):
    id: str
    name: str
    limit: int
    remaining: int
    reset: int
    window: str
    exceeded: bool


class QuotaStatus(WireModel):
    id: str
    name: str
    metric: Metric
    period: Period
    limit: int
    used: float | int
    remaining: float | int
    reset: int
    exceeded: bool


class TrackPostResponse(WireModel):
    """The 201 body.  ``.headers`` holds the rate-limit headers (not part of the body)."""

    id: str
    allowed: Literal[True] = True
    rate_limits: list[RateLimitStatus] = Field(default_factory=list)
    quotas: list[QuotaStatus] = Field(default_factory=list)
    _headers: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """The response headers the hosted API would send with this 201."""
        return self._headers


class TrackDeniedResponse(WireModel):
    """The 429 body."""

    error: Literal["Rate limit exceeded", "Quota exceeded"]
    allowed: Literal[False] = False
    rate_limits: list[RateLimitStatus] = Field(default_factory=list)
    quotas: list[QuotaStatus] = Field(default_factory=list)
    retry_after: int


# --- quotas -----------------------------------------------------------------


class QuotaCreate(WireModel):
    name: Name
    dimension_filters: DimensionFilters = Field(default_factory=dict)
    metric: Metric
    limit_value: PositiveLimit
    period: Period
    per: Per = Field(default_factory=list, exclude_if=_is_empty)


class QuotaUpdate(WireModel):
    name: Name | None = Field(default=None, exclude_if=_is_none)
    dimension_filters: DimensionFilters | None = Field(default=None, exclude_if=_is_none)
    metric: Metric | None = Field(default=None, exclude_if=_is_none)
    limit_value: PositiveLimit | None = Field(default=None, exclude_if=_is_none)
    period: Period | None = Field(default=None, exclude_if=_is_none)
    per: Per | None = Field(default=None, exclude_if=_is_none)


class Quota(WireModel):
    id: str
    project_id: str
    name: str
    dimension_filters: dict[str, str | list[str]] = Field(default_factory=dict)
    metric: Metric
    limit_value: int
    period: Period
    per: list[str] = Field(default_factory=list, exclude_if=_is_empty)
    created_at: Timestamp
    updated_at: Timestamp


class QuotaCheckRequest(WireModel):
    dimensions: dict[str, str]


class QuotaCheckResponse(WireModel):
    allowed: bool
    quotas: list[QuotaStatus]


# --- rate limits ------------------------------------------------------------


class RateLimitCreate(WireModel):
    name: Name
    dimension_filters: DimensionFilters = Field(default_factory=dict)
    limit_value: PositiveLimit
    window: Window
    enabled: Flag = True
    per: Per = Field(default_factory=list, exclude_if=_is_empty)
    metric: RateLimitMetric = Field(default="total_events", exclude_if=_is_default_metric)


class RateLimitUpdate(WireModel):
    name: Name | None = Field(default=None, exclude_if=_is_none)
    dimension_filters: DimensionFilters | None = Field(default=None, exclude_if=_is_none)
    limit_value: PositiveLimit | None = Field(default=None, exclude_if=_is_none)
    window: Window | None = Field(default=None, exclude_if=_is_none)
    enabled: Flag | None = Field(default=None, exclude_if=_is_none)
    per: Per | None = Field(default=None, exclude_if=_is_none)
    metric: RateLimitMetric | None = Field(default=None, exclude_if=_is_none)


class RateLimit(WireModel):
    id: str
    project_id: str
    name: str
    dimension_filters: dict[str, str | list[str]] = Field(default_factory=dict)
    limit_value: int
    window: str
    enabled: bool = True
    per: list[str] = Field(default_factory=list, exclude_if=_is_empty)
    metric: RateLimitMetric = Field(default="total_events", exclude_if=_is_default_metric)
    created_at: Timestamp
    updated_at: Timestamp


class RateLimitCheckRequest(WireModel):
    dimensions: dict[str, str]


class RateLimitCheckResponse(WireModel):
    allowed: bool
    rate_limits: list[RateLimitStatus]


# --- events and usage -------------------------------------------------------


class EventIngestResponse(WireModel):
    id: str


class EventBatchRequest(WireModel):
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
