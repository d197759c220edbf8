"""Quotas, their alerts and rate limits: create, update, the stored shapes and the checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    Field,
    model_validator,
)

from limitry_local.dimensions import is_snapshot_of
from limitry_local.metrics import Metric
from limitry_local.models.track import (
    QuotaStatus,
    RateLimitStatus,
)
from limitry_local.models.wire import (
    DimensionFilters,
    FailMode,
    Flag,
    Mode,
    Name,
    Overrides,
    Per,
    PositiveLimit,
    RateLimitMetric,
    RequestModel,
    Timestamp,
    TimeZone,
    Window,
    WireModel,
    is_closed,
    is_default_metric,
    is_empty,
    is_enforce,
    is_utc,
)
from limitry_local.periods import Period


class QuotaCreate(RequestModel):
    name: Name
    dimension_filters: DimensionFilters = Field(default_factory=dict)
    metric: Metric
    limit_value: PositiveLimit
    period: Period
    per: Per = Field(default_factory=list)
    timezone: TimeZone = "UTC"
    overrides: Overrides = Field(default_factory=dict)
    mode: Mode = "enforce"
    fail_mode: FailMode = "closed"


class QuotaUpdate(RequestModel):
    """Any subset of a quota's fields; a field left out (or null) stays as it is."""

    name: Name | None = None
    dimension_filters: DimensionFilters | None = None
    metric: Metric | None = None
    limit_value: PositiveLimit | None = None
    period: Period | None = None
    per: Per | None = None
    timezone: TimeZone | None = None
    overrides: Overrides | None = None
    mode: Mode | None = None
    fail_mode: FailMode | None = None


class Quota(WireModel):
    id: str
    project_id: str
    name: str
    dimension_filters: dict[str, str | list[str]] = Field(default_factory=dict)
    metric: Metric
    limit_value: int
    period: Period
    per: list[str] = Field(default_factory=list, exclude_if=is_empty)
    # Ours: the calendar periods' time zone; written only when not UTC.
    timezone: str = Field(default="UTC", exclude_if=is_utc)
    overrides: dict[str, dict[str, int]] = Field(default_factory=dict, exclude_if=is_empty)
    mode: Mode = Field(default="enforce", exclude_if=is_enforce)
    fail_mode: FailMode = Field(default="closed", exclude_if=is_closed)
    created_at: Timestamp
    updated_at: Timestamp

    def limit_for(self, dims: Mapping[str, str]) -> int:
        """The limit an event with these dimensions meets (see :func:`effective_limit`)."""
        return effective_limit(self.limit_value, self.overrides, dims)


class QuotaCheckRequest(RequestModel):
    dimensions: dict[str, str]


class QuotaCheckResponse(WireModel):
    allowed: bool
    quotas: list[QuotaStatus]


Threshold = Annotated[int, Field(strict=True, ge=1, le=100)]


class QuotaAlertCreate(RequestModel):
    threshold: Threshold
    """A percentage of the quota's limit, 1 to 100."""


class QuotaAlertUpdate(RequestModel):
    """The hosted ``QuotaAlertsPutRequest``: a new threshold; left out (or null), it stays."""

    threshold: Threshold | None = None


class QuotaAlert(WireModel):
    """An alert on a quota ("qa_..."): fires once per quota key and period at ``threshold`` %.

    ``updatedAt`` is when it was last changed (``quota_alerts.update``);
    input without it (an alert stored before updates existed) reads as
    never changed: ``createdAt``.
    """

    id: str
    quota_id: str
    threshold: int
    last_triggered_at: Timestamp | None = None
    created_at: Timestamp
    updated_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _never_updated(cls, data: Any) -> Any:
        if isinstance(data, dict) and "updatedAt" not in data and "updated_at" not in data:
            created = data.get("createdAt", data.get("created_at"))
            if created is not None:
                data = {**data, "updated_at": created}
        return data


WEBHOOK_NOT_SENT = "not_sent"
"""``webhookStatus`` of every local firing: offline no webhook is sent (the
Tracker's :meth:`~limitry_local.Tracker.on_alert` callbacks are called instead)."""


class QuotaAlertLog(WireModel):
    """One firing of an alert ("qal_..."): an entry of the alert history, and what callbacks get.

    The hosted entry's fields come first, under its names: ``quotaAlertId``,
    ``currentUsage`` and ``limitValue`` (in the metric's units; ``limitValue``
    is the override the key met, if any), ``percentage`` (``currentUsage`` as
    a percentage of ``limitValue``, to two decimals), and ``webhookStatus`` /
    ``webhookResponseCode``, which offline always hold ``"not_sent"`` and
    ``0``: no webhook exists, the ``on_alert`` callbacks run instead.  The
    names of release 0.2 still read (``entry.alert_id``, ``entry.used``,
    ``entry.limit``) and are accepted on input.

    Ours after them: ``dimensions`` are the quota's ``per`` values the firing
    is for ({} for a quota without ``per``); ``eventId`` is the recorded event
    that took usage over the threshold (for a batch, the last event of the
    batch on that key); the quota's name, metric, period and the period's
    bounds as they were when it fired.
    """

    id: str
    quota_alert_id: str = Field(
        validation_alias=AliasChoices("quotaAlertId", "quota_alert_id", "alertId", "alert_id")
    )
    quota_id: str
    threshold: int
    current_usage: float | int = Field(
        validation_alias=AliasChoices("currentUsage", "current_usage", "used")
    )
    limit_value: int = Field(validation_alias=AliasChoices("limitValue", "limit_value", "limit"))
    percentage: float | int = -1
    webhook_status: str = WEBHOOK_NOT_SENT
    webhook_response_code: int = 0
    triggered_at: Timestamp
    quota_name: str
    metric: Metric
    period: Period
    dimensions: dict[str, str]
    period_start: Timestamp
    period_end: Timestamp
    event_id: str

    @model_validator(mode="after")
    def _percentage(self) -> QuotaAlertLog:
        # Computed when not given (a stored firing keeps usage and limit only).
        if self.percentage == -1:
            share = round(self.current_usage * 100 / self.limit_value, 2)
            self.percentage = int(share) if share.is_integer() else share
        return self

    @property
    def alert_id(self) -> str:
        """Release 0.2's name of :attr:`quota_alert_id`."""
        return self.quota_alert_id

    @alert_id.setter
    def alert_id(self, value: str) -> None:
        self.quota_alert_id = value

    @property
    def used(self) -> float | int:
        """Release 0.2's name of :attr:`current_usage`."""
        return self.current_usage

    @used.setter
    def used(self, value: float | int) -> None:
        self.current_usage = value

    @property
    def limit(self) -> int:
        """Release 0.2's name of :attr:`limit_value`."""
        return self.limit_value

    @limit.setter
    def limit(self, value: int) -> None:
        self.limit_value = value


# --- rate limits ------------------------------------------------------------


class RateLimitCreate(RequestModel):
    name: Name
    dimension_filters: DimensionFilters = Field(default_factory=dict)
    limit_value: PositiveLimit
    window: Window
    enabled: Flag = True
    per: Per = Field(default_factory=list)
    metric: RateLimitMetric = "total_events"
    overrides: Overrides = Field(default_factory=dict)
    mode: Mode = "enforce"
    fail_mode: FailMode = "closed"


class RateLimitUpdate(RequestModel):
    """Any subset of a rate limit's fields; a field left out (or null) stays as it is."""

    name: Name | None = None
    dimension_filters: DimensionFilters | None = None
    limit_value: PositiveLimit | None = None
    window: Window | None = None
    enabled: Flag | None = None
    per: Per | None = None
    metric: RateLimitMetric | None = None
    overrides: Overrides | None = None
    mode: Mode | None = None
    fail_mode: FailMode | None = None


class RateLimit(WireModel):
    id: str
    project_id: str
    name: str
    dimension_filters: dict[str, str | list[str]] = Field(default_factory=dict)
    limit_value: int
    window: str
    enabled: bool = True
    per: list[str] = Field(default_factory=list, exclude_if=is_empty)
    metric: RateLimitMetric = Field(default="total_events", exclude_if=is_default_metric)
    overrides: dict[str, dict[str, int]] = Field(default_factory=dict, exclude_if=is_empty)
    mode: Mode = Field(default="enforce", exclude_if=is_enforce)
    fail_mode: FailMode = Field(default="closed", exclude_if=is_closed)
    created_at: Timestamp
    updated_at: Timestamp

    def limit_for(self, dims: Mapping[str, str]) -> int:
        """The capacity an event with these dimensions meets (see :func:`effective_limit`)."""
        return effective_limit(self.limit_value, self.overrides, dims)


def effective_limit(
    limit_value: int, overrides: Mapping[str, Mapping[str, int]], dims: Mapping[str, str]
) -> int:
    """``limit_value``, or the override for the first overridden dimension the event has.

    Overrides are looked up in the order they were given; the first
    dimension whose value has one decides.
    """
    for name, values in overrides.items():
        value = dims.get(name)
        if value is not None:
            override = values.get(value)
            if override is not None:
                return override
            if name == "model":
                # A model override also covers its dated snapshots, as a model
                # filter does (see dimensions.value_matches).
                for wanted, snapshot_override in values.items():
                    if is_snapshot_of(value, wanted):
                        return snapshot_override
    return limit_value


def same_setting(name: str, before: Any, after: Any) -> bool:
    """Whether a limit's field ``name`` holds the same setting in ``before`` and ``after``.

    Overrides apply in the order given (:func:`effective_limit`), at both
    levels (a model and its dated snapshot may both have a value), so two
    that differ only in order are different limits; dicts alone compare
    equal whatever their order.  The other way round, a filter's list of
    values in another order is the same limit (found in review: it planned
    an update, and a rate limit's update starts its buckets afresh).  A
    window is compared as written, so a file's spelling is stored; whether
    its buckets stay is :func:`~limitry_local.engine.rules.reshaped`'s to say.
    """
    if name == "overrides":
        return [(k, list(v.items())) for k, v in before.items()] == [
            (k, list(v.items())) for k, v in after.items()
        ]
    if name == "dimension_filters":
        # A list of values is any of them: its order means nothing.
        return _any_of(before) == _any_of(after)
    return bool(before == after)


def _any_of(filters: Mapping[str, str | list[str]]) -> dict[str, frozenset[str]]:
    # "gpt-4o" and ["gpt-4o"] mean one thing too.
    return {k: frozenset([v] if isinstance(v, str) else v) for k, v in filters.items()}


class RateLimitCheckRequest(RequestModel):
    dimensions: dict[str, str]


class RateLimitCheckResponse(WireModel):
    allowed: bool
    rate_limits: list[RateLimitStatus]


# --- events and usage -------------------------------------------------------
