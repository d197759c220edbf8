"""Wire models of the hosted Limitry API: validation and aliases, nothing else.

Every model accepts the camelCase wire names and the snake_case attribute
names, and ``model_dump(by_alias=True, mode="json")`` writes the wire form
back, so hosted JSON round-trips unchanged:

- A request model (what a caller sends) dumps exactly the fields it was
  given, explicit nulls and empties included; defaults it filled in, and a
  ``totalTokens`` it computed, stay out.
- A response model dumps every field, except our additions to the hosted
  shapes (``per``, a rate limit's ``metric``, a check's ``reset``) while they
  hold their default.
- Times are written in UTC with ``Z``, with milliseconds when they have
  whole milliseconds (``2024-01-15T10:30:00.123Z``, as the hosted API's
  JavaScript writes them) and microseconds otherwise; ``.000Z`` reads back
  as the same instant and is written without the fraction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    RootModel,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic._internal._model_construction import ModelMetaclass
from pydantic.alias_generators import to_camel

from limitry_local.dimensions import is_snapshot_of
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
MAX_PROPERTY_DEPTH = 32
MAX_AMOUNT = 10**12
MAX_CENTS = 10**9
MAX_LIMIT = 10**12
MAX_FILTERS = 16
MAX_PER = 16
MAX_FILTER_VALUES = 100
MAX_OVERRIDES = 1000
MAX_BATCH = 1000
MIN_YEAR = 1970
MAX_YEAR = 9998

RateLimitMetric = Literal["total_events", "total_tokens"]
Mode = Literal["enforce", "soft", "shadow"]
"""Ours: ``enforce`` denies; ``soft`` never denies but reports ``exceeded``;
``shadow`` never denies and is left out of answers (logged instead)."""


def _is_enforce(value: object) -> bool:
    return value == "enforce"


FailMode = Literal["closed", "open"]
"""What a limit does when its store cannot be reached (wire ``failMode``, the hosted
SDK's name): ``closed`` refuses the event with the store's error (503-style),
``open`` lets it pass that limit unchecked and says so in the answer's
``failedOpen`` (docs/semantics.md)."""


def _is_closed(value: object) -> bool:
    return value == "closed"


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
    # The ledger keeps float seconds: the last microseconds of 9998 round up to 9999.
    if datetime.fromtimestamp(value.timestamp(), timezone.utc).year > MAX_YEAR:
        raise ValueError(f"must fall before the end of the year {MAX_YEAR}")
    return value


def _plain_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _depth(value: object) -> int:
    """Nesting depth of lists and objects, without recursion (a hostile value may be deep)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > MAX_PROPERTY_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in children)
    return deepest


def _check_properties(value: dict[str, Any]) -> dict[str, Any]:
    if not value:
        return value
    if len(value) > MAX_PROPERTIES:
        raise ValueError(f"at most {MAX_PROPERTIES} properties are allowed")
    for key, item in value.items():
        if not key or len(key) > MAX_PROPERTY_KEY:
            raise ValueError(f"property names must be 1 to {MAX_PROPERTY_KEY} characters")
        if isinstance(item, str) and len(item) > MAX_STRING:
            # Top-level strings are dimensions; nested values only count toward the JSON cap.
            raise ValueError(f"property {key!r} is longer than {MAX_STRING} characters")
    if _depth(value) > MAX_PROPERTY_DEPTH:
        raise ValueError(f"properties must nest at most {MAX_PROPERTY_DEPTH} levels deep")
    try:
        # ensure_ascii=False so a lone surrogate anywhere, however deep, fails to encode.
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("properties must be valid Unicode text (no lone surrogates)") from None
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


# pydantic-core refuses a str holding a lone surrogate ("\ud800": valid Python,
# not storable as text) on its own, so strings need no Python validator.
Name = Annotated[str, Field(min_length=1, max_length=MAX_STRING)]
Text = Annotated[str, Field(max_length=MAX_STRING)]
DimensionName = Annotated[str, Field(max_length=MAX_PROPERTY_KEY)]
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


def _iso(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    micro = value.microsecond
    if micro:
        text += f".{micro // 1000:03d}" if micro % 1000 == 0 else f".{micro:06d}"
    return text + "Z"


Timestamp = Annotated[datetime, AfterValidator(_utc), PlainSerializer(_iso, when_used="json")]
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


def _check_overrides(value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    if sum(len(values) for values in value.values()) > MAX_OVERRIDES:
        raise ValueError(f"at most {MAX_OVERRIDES} overrides are allowed")
    for name, values in value.items():
        if not name:
            raise ValueError("dimension names must not be empty")
        if not values:
            raise ValueError(f"{name}: give at least one value and its limit")
    return value


Overrides = Annotated[
    dict[DimensionName, dict[Text, PositiveLimit]],
    AfterValidator(_check_overrides),
]
"""Ours: ``{dimension: {value: limitValue}}``, a limit of its own for some values."""


def _check_timezone(name: str) -> str:
    if name == "UTC":
        return name
    try:
        ZoneInfo(name)
    # OSError: ZoneInfo opens the name as a file under its search path, so a
    # name too long for a file name, or a folder ("Europe"), fails there.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{name!r} is not an IANA time zone name (such as 'UTC' or 'America/New_York')"
        ) from None
    return name


TimeZone = Annotated[str, AfterValidator(_check_timezone)]
"""An IANA time zone name: a quota's calendar periods are counted in it."""


def _is_utc(value: object) -> bool:
    return value == "UTC"


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


W = TypeVar("W", bound=WireModel)
# BaseModel's four slots, set through their descriptors: object.__setattr__
# looks each name up on the class first, and the hot path builds three models
# per call this way.
_new_instance = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted(model: type[W], fields: dict[str, Any], private: dict[str, Any] | None = None) -> W:
    """An instance built from values this library computed, without validating them again.

    For the answers of the hot path, where validation would only check
    what the tracker just computed (3 us of a 201 body).  ``fields`` must
    hold every field, in the order the model declares them (JSON follows
    it), each with the type validation would give it; the result then
    equals ``model.model_validate(fields)``, as
    tests/test_models.py checks for every model built this way.
    ``private`` holds the private attributes, if the model has any.
    """
    instance: W = _new_instance(model)
    _set_dict(instance, fields)
    _set_fields_set(instance, set(fields))
    _set_extra(instance, None)
    _set_private(instance, private)
    return instance


class _RequestModelType(ModelMetaclass):
    """Makes ``RequestModel(...)`` with a bad field raise the library's 400.

    A caller builds ``TrackPostRequest(customerId=key, ...)`` inside the
    ``try`` whose ``except APIError`` answers the client, so a bad field
    must be an :class:`~limitry_local.errors.InvalidRequestError` there too,
    not pydantic's ValidationError (both are ValueErrors).  Only the call of
    the class is wrapped: ``model_validate`` stays pydantic's, and the
    library's own parsing (which calls the validator) costs nothing more.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            # Here, not at the top: errors.py imports this module.
            from limitry_local.errors import InvalidRequestError  # noqa: PLC0415

            raise InvalidRequestError.from_validation(exc, cls) from None  # type: ignore[arg-type]


class RequestModel(WireModel, metaclass=_RequestModelType):
    """Base of what a caller sends: dumps the fields it was given, and only those.

    So a request read from hosted JSON writes back the same JSON, and a
    request built in Python sends no defaults the caller did not choose.  A
    field changed after construction (``event.properties["team"] = "a"``)
    counts as given.  Built with a bad field (``TrackPostRequest(customerId="")``)
    it raises :class:`~limitry_local.errors.InvalidRequestError` (400) naming
    the field by its wire name; ``model_validate`` raises pydantic's
    ValidationError, as pydantic's API does.
    """

    def _derived(self) -> set[str]:
        """Fields the model may fill in itself: dumped only when the caller set them."""
        return set()

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        given = set()
        derived = self._derived()
        for name, field in type(self).model_fields.items():
            if name not in self.model_fields_set and (
                name in derived
                or getattr(self, name) == field.get_default(call_default_factory=True)
            ):
                continue
            given.add(name)
            if field.alias is not None:
                given.add(field.alias)
        return {key: value for key, value in data.items() if key in given}


# --- /track -----------------------------------------------------------------


class TrackPostRequest(RequestModel):
    """One usage event, as sent to ``POST /track`` (and ``POST /events``).

    ``total_tokens`` reads as ``input_tokens + output_tokens`` when it was not
    sent (spec); the dump leaves it out, as the caller did.
    """

    customer_id: Name
    event_type: Name
    model: Text | None = None
    provider: Text | None = None
    input_tokens: Amount | None = None
    output_tokens: Amount | None = None
    total_tokens: Amount | None = Field(default=None, validate_default=True)
    latency_ms: Amount | None = None
    cost_cents: Cents | None = None
    properties: Properties = Field(default_factory=dict)
    idempotency_key: Name | None = None
    timestamp: Timestamp | None = None
    cached_input_tokens: Amount | None = None
    """Ours: input tokens the provider served from its prompt cache, a part of
    ``input_tokens`` (recorded on the event; no limit counts it yet)."""

    def _derived(self) -> set[str]:
        # A total the caller did not send was computed by _default_total.  One
        # sent as an explicit null is written back as that computed total: the
        # hosted API reads both the same way, and telling them apart would cost
        # every request a slower validator.
        return {"total_tokens"}

    @field_validator("total_tokens", mode="after")
    @classmethod
    def _default_total(cls, value: int | None, info: ValidationInfo) -> int | None:
        # Runs for an absent totalTokens too (validate_default), so an
        # overflowing sum is reported as totalTokens, the field it would fill.
        if value is not None:
            return value
        data = info.data
        inputs, outputs = data.get("input_tokens"), data.get("output_tokens")
        if inputs is None and outputs is None:
            return None
        total = (inputs or 0) + (outputs or 0)
        if total > MAX_AMOUNT:
            raise ValueError(f"inputTokens + outputTokens exceeds {MAX_AMOUNT}")
        return total

    @field_validator("cached_input_tokens", mode="after")
    @classmethod
    def _cached_within_input(cls, value: int | None, info: ValidationInfo) -> int | None:
        inputs = info.data.get("input_tokens")
        if value is not None and inputs is not None and value > inputs:
            raise ValueError(f"cachedInputTokens ({value}) is more than inputTokens ({inputs})")
        return value


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
    # Ours: the hosted quota check answers without it; we always fill it in.
    reset: int | None = Field(default=None, exclude_if=_is_none)
    exceeded: bool


class FailedOpen(WireModel):
    """Ours: a limit the event passed unchecked, its store being unreachable (``failMode: open``).

    ``reason`` is the store error's: ``connection`` or ``timeout``.
    """

    id: str
    name: str
    kind: Literal["rate_limit", "quota"]
    reason: str


class TrackPostResponse(WireModel):
    """The 201 body.  ``.headers`` holds the rate-limit headers (not part of the body).

    ``failedOpen`` (ours, written only when not empty) lists the limits the
    event passed unchecked because their store could not be reached.
    """

    id: str
    allowed: Literal[True] = True
    rate_limits: list[RateLimitStatus] = Field(default_factory=list)
    quotas: list[QuotaStatus] = Field(default_factory=list)
    failed_open: list[FailedOpen] = Field(default_factory=list, exclude_if=_is_empty)
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
    per: list[str] = Field(default_factory=list, exclude_if=_is_empty)
    # Ours: the calendar periods' time zone; written only when not UTC.
    timezone: str = Field(default="UTC", exclude_if=_is_utc)
    overrides: dict[str, dict[str, int]] = Field(default_factory=dict, exclude_if=_is_empty)
    mode: Mode = Field(default="enforce", exclude_if=_is_enforce)
    fail_mode: FailMode = Field(default="closed", exclude_if=_is_closed)
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
    per: list[str] = Field(default_factory=list, exclude_if=_is_empty)
    metric: RateLimitMetric = Field(default="total_events", exclude_if=_is_default_metric)
    overrides: dict[str, dict[str, int]] = Field(default_factory=dict, exclude_if=_is_empty)
    mode: Mode = Field(default="enforce", exclude_if=_is_enforce)
    fail_mode: FailMode = Field(default="closed", exclude_if=_is_closed)
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


class RateLimitCheckRequest(RequestModel):
    dimensions: dict[str, str]


class RateLimitCheckResponse(WireModel):
    allowed: bool
    rate_limits: list[RateLimitStatus]


# --- events and usage -------------------------------------------------------


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
    cached_input_tokens: int | None = Field(default=None, exclude_if=_is_none)


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


ReportTime = Annotated[datetime, AfterValidator(_in_utc), PlainSerializer(_iso, when_used="json")]
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
