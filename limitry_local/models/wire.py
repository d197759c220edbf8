"""The base of every wire model: aliases, size limits, shared field types and validators.

What the hosted API's JSON looks like is decided here once; the models of
each resource (:mod:`.track`, :mod:`.limits`, :mod:`.records`) build on it.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)
from pydantic._internal._model_construction import ModelMetaclass
from pydantic.alias_generators import to_camel

from limitry_local.errors import InvalidRequestError

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


def is_enforce(value: object) -> bool:
    return value == "enforce"


FailMode = Literal["closed", "open"]
"""What a limit does when its store cannot be reached (wire ``failMode``, the hosted
SDK's name): ``closed`` refuses the event with the store's error (503-style),
``open`` lets it pass that limit unchecked and says so in the answer's
``failedOpen`` (docs/semantics.md)."""


def is_closed(value: object) -> bool:
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


def iso(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    micro = value.microsecond
    if micro:
        text += f".{micro // 1000:03d}" if micro % 1000 == 0 else f".{micro:06d}"
    return text + "Z"


Timestamp = Annotated[datetime, AfterValidator(_utc), PlainSerializer(iso, when_used="json")]
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


def is_utc(value: object) -> bool:
    return value == "UTC"


Flag = Annotated[bool, Field(strict=True)]


def is_none(value: object) -> bool:
    return value is None


def is_empty(value: object) -> bool:
    return value in (None, [], {})


def is_default_metric(value: object) -> bool:
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
