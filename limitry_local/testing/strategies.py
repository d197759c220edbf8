"""Hypothesis strategies for property-based tests of your own limit logic.

Needs the ``testing`` extra (``pip install 'limitry_local[testing]'``), which
brings hypothesis; ``limitry_local.testing`` itself never imports it.

The defaults draw from *small* pools (three customers, two event types, a few
models and providers) so that generated events keep landing on the same
limit keys, and limits are small enough that a handful of events exceeds
them: that is where limit bugs live.  Every argument that takes a strategy
replaces the matching default.

>>> from hypothesis import given
>>> from limitry_local import Tracker
>>> from limitry_local.testing import strategies as lst
>>> @given(lst.quota_creates(), lst.track_requests())
... def test_a_quota_never_breaks_ingest(quota, event):
...     tracker = Tracker()
...     tracker.quotas.create(quota)
...     tracker.events.ingest(event)
>>> test_a_quota_never_breaks_ingest()
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import SearchStrategy
from pydantic import BaseModel, ValidationError

from limitry_local.dimensions import BUILTIN_DIMENSIONS
from limitry_local.models import (
    MAX_AMOUNT,
    MAX_CENTS,
    MAX_FILTERS,
    MAX_LIMIT,
    MAX_PROPERTIES,
    MAX_PROPERTIES_JSON,
    MAX_PROPERTY_KEY,
    MAX_STRING,
    MAX_YEAR,
    MIN_YEAR,
    QuotaCreate,
    RateLimitCreate,
    TrackPostRequest,
)

__all__ = [
    "CUSTOMER_IDS",
    "EVENT_TYPES",
    "IDEMPOTENCY_KEYS",
    "MODELS",
    "PROPERTY_VALUES",
    "PROVIDERS",
    "InvalidRequest",
    "dimension_filters",
    "invalid_track_requests",
    "quota_creates",
    "rate_limit_creates",
    "track_requests",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: The default pools.  Small on purpose: events collide on the same limit keys.
CUSTOMER_IDS = ("cust_1", "cust_2", "cust_3")
EVENT_TYPES = ("model_call", "embedding")
MODELS = ("gpt-4", "claude-3-opus", "gpt-4o-mini")
PROVIDERS = ("openai", "anthropic")
#: String properties, which are dimensions that filters and limits can name.
PROPERTY_VALUES: Mapping[str, tuple[str, ...]] = {
    "team": ("red", "blue"),
    "feature": ("chat", "search"),
}
#: Drawn from by ``track_requests(idempotency_keys=True)``, so keys repeat.
IDEMPOTENCY_KEYS = ("idem_1", "idem_2", "idem_3", "idem_4", "idem_5")

# The largest limit drawn by default for events (and each metric's "events' worth").
_EVENTS_LIMIT = 20
# Token and cost limits default to at most this many maximal events' worth.
_MAXIMAL_EVENTS = 2
_LATENCIES = st.none() | st.integers(0, 60_000)
_NAMED_WINDOWS = ("second", "minute", "hour")


class InvalidRequest(NamedTuple):
    """A wire-form event the tracker must refuse with a 400, and the wire field it must name.

    >>> InvalidRequest({"eventType": "model_call"}, "customerId").field
    'customerId'
    """

    payload: dict[str, Any]
    field: str


# --- valid events -------------------------------------------------------------------


def track_requests(
    *,
    customer_ids: SearchStrategy[str] | None = None,
    event_types: SearchStrategy[str] | None = None,
    models: SearchStrategy[str | None] | None = None,
    providers: SearchStrategy[str | None] | None = None,
    properties: SearchStrategy[dict[str, Any]] | None = None,
    max_tokens: int = 10_000,
    max_cost_cents: float = 1_000,
    idempotency_keys: bool | SearchStrategy[str | None] = False,
    timestamps: SearchStrategy[datetime | None] | None = None,
) -> SearchStrategy[TrackPostRequest]:
    """Valid events, drawn from small pools so that they share limit keys.

    Token counts stay within ``max_tokens`` (``totalTokens`` is sometimes
    absent, sometimes defaulted from input + output, sometimes explicit);
    ``costCents`` (an int or a float) within ``max_cost_cents``.  Events carry
    no timestamp (the tracker stamps "now") unless ``timestamps`` is given.
    ``idempotency_keys=True`` sometimes draws a key from
    :data:`IDEMPOTENCY_KEYS` (so repeats happen); a strategy replaces that.

    >>> from datetime import datetime, timezone
    >>> from hypothesis import given, strategies as st
    >>> @given(track_requests(
    ...     customer_ids=st.just("cust_1"),
    ...     timestamps=st.datetimes(
    ...         datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(timezone.utc)
    ...     ),
    ... ))
    ... def test_one_customer(event):
    ...     assert event.customer_id == "cust_1" and event.timestamp is not None
    >>> test_one_customer()
    """
    _check_tokens(max_tokens)
    _check_cents(max_cost_cents)
    if isinstance(idempotency_keys, bool):
        keys: SearchStrategy[str | None] | None = (
            st.none() | st.sampled_from(IDEMPOTENCY_KEYS) if idempotency_keys else None
        )
    else:
        keys = idempotency_keys
    return _track_requests(
        customer_ids=_or(customer_ids, st.sampled_from(CUSTOMER_IDS)),
        event_types=_or(event_types, st.sampled_from(EVENT_TYPES)),
        models=_or(models, st.none() | st.sampled_from(MODELS)),
        providers=_or(providers, st.none() | st.sampled_from(PROVIDERS)),
        properties=_or(properties, _default_properties()),
        tokens=_token_fields(max_tokens),
        cents=st.none() | _cents(max_cost_cents),
        keys=keys,
        timestamps=timestamps,
    )


@st.composite
def _track_requests(
    draw: st.DrawFn,
    *,
    customer_ids: SearchStrategy[str],
    event_types: SearchStrategy[str],
    models: SearchStrategy[str | None],
    providers: SearchStrategy[str | None],
    properties: SearchStrategy[dict[str, Any]],
    tokens: SearchStrategy[dict[str, int | None]],
    cents: SearchStrategy[int | float | None],
    keys: SearchStrategy[str | None] | None,
    timestamps: SearchStrategy[datetime | None] | None,
) -> TrackPostRequest:
    fields: dict[str, Any] = {
        "customer_id": draw(customer_ids),
        "event_type": draw(event_types),
        "model": draw(models),
        "provider": draw(providers),
        "properties": draw(properties),
        **draw(tokens),
        "latency_ms": draw(_LATENCIES),
        "cost_cents": draw(cents),
    }
    if keys is not None:
        fields["idempotency_key"] = draw(keys)
    if timestamps is not None:
        fields["timestamp"] = draw(timestamps)
    # Absent rather than null, as a client would send it.
    return _build(TrackPostRequest, {k: v for k, v in fields.items() if v is not None})


def _default_properties() -> SearchStrategy[dict[str, Any]]:
    # String properties are dimensions; the others are stored but never matched.
    optional: dict[str, SearchStrategy[Any]] = {
        name: st.sampled_from(values) for name, values in PROPERTY_VALUES.items()
    }
    optional["retries"] = st.integers(0, 3)
    optional["cached"] = st.booleans()
    return st.fixed_dictionaries({}, optional=optional)


def _token_fields(max_tokens: int) -> SearchStrategy[dict[str, int | None]]:
    """No tokens; input/output with totalTokens defaulted; the same with it explicit; or only it."""
    amount = st.integers(0, max_tokens)
    return _shaped_tokens(max_tokens=max_tokens, amount=amount, maybe=st.none() | amount)


_TOKEN_SHAPES = st.sampled_from(("none", "defaulted", "explicit", "total_only"))


@st.composite
def _shaped_tokens(
    draw: st.DrawFn,
    *,
    max_tokens: int,
    amount: SearchStrategy[int],
    maybe: SearchStrategy[int | None],
) -> dict[str, int | None]:
    shape = draw(_TOKEN_SHAPES)
    if shape == "none":
        return {}
    if shape == "total_only":
        return {"total_tokens": draw(amount)}
    input_tokens, output_tokens = draw(maybe), draw(maybe)
    if output_tokens is not None:
        # Keeps input + output (the defaulted total) within max_tokens.
        output_tokens = min(output_tokens, max_tokens - (input_tokens or 0))
    fields = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if shape == "explicit":
        return {**fields, "total_tokens": (input_tokens or 0) + (output_tokens or 0)}
    return fields


def _cents(max_cost_cents: float) -> SearchStrategy[int | float]:
    whole = st.integers(0, math.floor(max_cost_cents))
    fractional = st.floats(0, max_cost_cents, allow_nan=False, allow_infinity=False)
    return whole | fractional


# --- limit definitions ------------------------------------------------------------------


def dimension_filters(
    *,
    customer_ids: SearchStrategy[str] | None = None,
    event_types: SearchStrategy[str] | None = None,
    models: SearchStrategy[str] | None = None,
    providers: SearchStrategy[str] | None = None,
    property_values: Mapping[str, SearchStrategy[str]] | None = None,
    max_keys: int = 2,
) -> SearchStrategy[dict[str, str | list[str]]]:
    """``dimensionFilters`` over the same pools as :func:`track_requests`.

    Each key maps to one value or to a list of values (any of them); the
    filters are sometimes empty (they then match every event).  Property
    dimensions default to :data:`PROPERTY_VALUES`; ``property_values`` maps
    each property name to a strategy of its values instead.

    >>> from hypothesis import given, strategies as st
    >>> @given(dimension_filters(models=st.sampled_from(["m1", "m2"])))
    ... def test_filters(filters):
    ...     model = filters.get("model", [])
    ...     assert set([model] if isinstance(model, str) else model) <= {"m1", "m2"}
    >>> test_filters()
    """
    if isinstance(max_keys, bool) or not isinstance(max_keys, int):
        raise InvalidArgument(f"max_keys must be an integer, got {max_keys!r}")
    if not 0 <= max_keys <= MAX_FILTERS:
        raise InvalidArgument(f"max_keys must be from 0 to {MAX_FILTERS}, got {max_keys!r}")
    if property_values is None:
        property_values = {name: st.sampled_from(vs) for name, vs in PROPERTY_VALUES.items()}
    for name in property_values:
        if name in BUILTIN_DIMENSIONS or not 1 <= len(name) <= MAX_PROPERTY_KEY:
            raise InvalidArgument(
                f"property_values: {name!r} must be 1 to {MAX_PROPERTY_KEY} characters "
                f"and not one of {', '.join(BUILTIN_DIMENSIONS)}"
            )
    pools: dict[str, SearchStrategy[str]] = {
        "customer_id": _or(customer_ids, st.sampled_from(CUSTOMER_IDS)),
        "event_type": _or(event_types, st.sampled_from(EVENT_TYPES)),
        "model": _or(models, st.sampled_from(MODELS)),
        "provider": _or(providers, st.sampled_from(PROVIDERS)),
        **property_values,
    }
    return _dimension_filters(pools, max_keys)


@st.composite
def _dimension_filters(
    draw: st.DrawFn, pools: dict[str, SearchStrategy[str]], max_keys: int
) -> dict[str, str | list[str]]:
    names = draw(st.lists(st.sampled_from(list(pools)), unique=True, max_size=max_keys))
    filters: dict[str, str | list[str]] = {}
    for name in names:
        values = pools[name]
        filters[name] = draw(values | st.lists(values, min_size=1, max_size=3, unique=True))
    return filters


def quota_creates(
    *,
    names: SearchStrategy[str] | None = None,
    metrics: SearchStrategy[str] | None = None,
    periods: SearchStrategy[str] | None = None,
    filters: SearchStrategy[dict[str, str | list[str]]] | None = None,
    per: SearchStrategy[list[str]] | None = None,
    limit_values: SearchStrategy[int] | None = None,
    max_tokens: int = 10_000,
    max_cost_cents: float = 1_000,
) -> SearchStrategy[QuotaCreate]:
    """Valid quota definitions whose limits a few events can exceed.

    Any metric and period; ``per`` a subset of the built-in dimensions;
    filters from :func:`dimension_filters`.  ``limitValue`` defaults to at most
    20 events, or two maximal events' worth of tokens (``2 * max_tokens``) or
    cents (``2 * max_cost_cents``): pass the same bounds as to
    :func:`track_requests`, or your own ``limit_values``.

    >>> from hypothesis import given, strategies as st
    >>> from limitry_local import Tracker
    >>> @given(quota_creates(metrics=st.just("total_tokens"), limit_values=st.integers(1, 100)))
    ... def test_create(quota):
    ...     assert Tracker().quotas.create(quota).limit_value <= 100
    >>> test_create()
    """
    _check_tokens(max_tokens)
    _check_cents(max_cost_cents)
    return _quota_creates(
        names=_or(names, _names()),
        metrics=_or(metrics, st.sampled_from(("total_events", "total_tokens", "total_cost_cents"))),
        periods=_or(periods, st.sampled_from(("hour", "day", "week", "month"))),
        filters=_or(filters, dimension_filters()),
        per=_or(per, _per()),
        limits=_limits(limit_values, max_tokens, max_cost_cents),
    )


@st.composite
def _quota_creates(
    draw: st.DrawFn,
    *,
    names: SearchStrategy[str],
    metrics: SearchStrategy[str],
    periods: SearchStrategy[str],
    filters: SearchStrategy[dict[str, str | list[str]]],
    per: SearchStrategy[list[str]],
    limits: Callable[[str], SearchStrategy[int]],
) -> QuotaCreate:
    metric = draw(metrics)
    fields = {
        "name": draw(names),
        "metric": metric,
        "period": draw(periods),
        "dimension_filters": draw(filters),
        "per": draw(per),
        "limit_value": draw(limits(metric)),
    }
    return _build(QuotaCreate, fields)


def rate_limit_creates(
    *,
    names: SearchStrategy[str] | None = None,
    windows: SearchStrategy[str] | None = None,
    metrics: SearchStrategy[str] | None = None,
    filters: SearchStrategy[dict[str, str | list[str]]] | None = None,
    per: SearchStrategy[list[str]] | None = None,
    limit_values: SearchStrategy[int] | None = None,
    enabled: SearchStrategy[bool] | None = None,
    max_tokens: int = 10_000,
) -> SearchStrategy[RateLimitCreate]:
    """Valid rate-limit definitions whose buckets a few events can empty.

    Windows are ``second``, ``minute``, ``hour`` or durations such as
    ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``; the metric is ``total_events`` or
    ``total_tokens``; ``per`` a subset of the built-in dimensions; one limit in
    four is disabled.  ``limitValue`` defaults to at most 20 events or
    ``2 * max_tokens`` tokens; ``limit_values`` replaces that.

    >>> from hypothesis import given, strategies as st
    >>> from limitry_local import Tracker
    >>> @given(rate_limit_creates(windows=st.sampled_from(["30s", "5m"])))
    ... def test_create(limit):
    ...     assert Tracker().rate_limits.create(limit).window in ("30s", "5m")
    >>> test_create()
    """
    _check_tokens(max_tokens)
    return _rate_limit_creates(
        names=_or(names, _names()),
        windows=_or(windows, _windows()),
        metrics=_or(metrics, st.sampled_from(("total_events", "total_tokens"))),
        filters=_or(filters, dimension_filters()),
        per=_or(per, _per()),
        limits=_limits(limit_values, max_tokens, 0),
        enabled=_or(enabled, st.sampled_from((True, True, True, False))),
    )


@st.composite
def _rate_limit_creates(
    draw: st.DrawFn,
    *,
    names: SearchStrategy[str],
    windows: SearchStrategy[str],
    metrics: SearchStrategy[str],
    filters: SearchStrategy[dict[str, str | list[str]]],
    per: SearchStrategy[list[str]],
    limits: Callable[[str], SearchStrategy[int]],
    enabled: SearchStrategy[bool],
) -> RateLimitCreate:
    metric = draw(metrics)
    fields = {
        "name": draw(names),
        "window": draw(windows),
        "metric": metric,
        "dimension_filters": draw(filters),
        "per": draw(per),
        "limit_value": draw(limits(metric)),
        "enabled": draw(enabled),
    }
    return _build(RateLimitCreate, fields)


def _names() -> SearchStrategy[str]:
    # Any valid Unicode: names are echoed back and stored, never matched.
    return st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)


def _per() -> SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(BUILTIN_DIMENSIONS), unique=True)


def _windows() -> SearchStrategy[str]:
    durations = st.builds("{}{}".format, st.integers(1, 90), st.sampled_from(("s", "m", "h", "d")))
    return st.sampled_from(_NAMED_WINDOWS) | durations


def _limits(
    given: SearchStrategy[int] | None, max_tokens: int, max_cost_cents: float
) -> Callable[[str], SearchStrategy[int]]:
    """The strategy of limit values for a metric: ``given``, or one small enough to hit."""
    if given is not None:
        return lambda metric: given
    tops = {
        "total_tokens": _MAXIMAL_EVENTS * max_tokens,
        "total_cost_cents": math.ceil(_MAXIMAL_EVENTS * max_cost_cents),
    }
    by_metric = {
        metric: st.integers(1, min(MAX_LIMIT, max(1, top))) for metric, top in tops.items()
    }
    events = st.integers(1, _EVENTS_LIMIT)
    return lambda metric: by_metric.get(metric, events)


# --- invalid events ----------------------------------------------------------------------

_REQUIRED_NAMES = ("customerId", "eventType")
_STRINGS = (*_REQUIRED_NAMES, "model", "provider", "idempotencyKey")
_AMOUNTS = ("inputTokens", "outputTokens", "totalTokens", "latencyMs")
_KNOWN_KEYS = frozenset(
    name
    for field_name, info in TrackPostRequest.model_fields.items()
    for name in (field_name, info.alias)
    if name is not None
)
# Strings that are not ISO 8601 date-times, or name instants outside the ledger's years.
_BAD_TIMESTAMPS = (
    "",
    "not a date",
    "yesterday",
    "25/11/2026",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-25T25:00:00Z",
    "2026-11-25T10:00:00+25:00",
    "2026-11-25 noon",
    "T10:00:00Z",
    "0001-01-01T00:00:00+01:00",
)


def invalid_track_requests() -> SearchStrategy[InvalidRequest]:
    """Wire-form events with exactly one bad field, each with that field's wire name.

    Covers missing or empty ``customerId`` / ``eventType``; strings over
    ``MAX_STRING`` characters, with lone surrogates, or not strings; token
    counts and ``latencyMs`` that are negative, above ``MAX_AMOUNT``,
    fractional, NaN, infinite, booleans or strings; ``inputTokens +
    outputTokens`` above ``MAX_AMOUNT`` (named ``totalTokens``); bad
    ``costCents``; unknown fields; bad timestamps; and properties that are
    not an object, have too many or too long keys, too long values, non-JSON
    numbers or too much JSON.

    >>> from hypothesis import given
    >>> import pytest
    >>> from limitry_local import InvalidRequestError, Tracker
    >>> @given(invalid_track_requests())
    ... def test_refused(bad):
    ...     with pytest.raises(InvalidRequestError) as refused:
    ...         Tracker().usage(bad.payload)
    ...     assert bad.field in refused.value.message
    >>> test_refused()
    """
    return _invalid_track_requests()


@functools.cache
def _invalid_track_requests() -> SearchStrategy[InvalidRequest]:
    # Built once: the strategies are immutable, and building them is not free.
    base = _valid_payloads()
    surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    some_text = st.text(st.characters(codec="utf-8"), max_size=8)
    long_text = st.text(
        st.characters(codec="utf-8"), min_size=MAX_STRING + 1, max_size=MAX_STRING + 32
    )
    not_text: SearchStrategy[Any] = st.one_of(
        st.integers(),
        st.booleans(),
        st.floats(),
        st.lists(st.text(max_size=3), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    bad_amounts: SearchStrategy[Any] = st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=MAX_AMOUNT + 1),
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
        st.sampled_from((math.nan, math.inf, -math.inf)),
        st.booleans(),
        st.integers(0, 10**6).map(str),
        st.text(max_size=5),
    )
    bad_cents: SearchStrategy[Any] = st.one_of(
        st.integers(max_value=-1),
        st.floats(max_value=-1e-9),
        st.integers(min_value=MAX_CENTS + 1),
        st.floats(min_value=MAX_CENTS, exclude_min=True),
        st.just(math.nan),
        st.booleans(),
        st.integers(0, 10**6).map(str),
        st.lists(st.integers(0, 10), min_size=1, max_size=2),
    )
    out_of_range_years = st.builds(
        "{:04d}-{:02d}-{:02d}T12:00:00Z".format,
        st.integers(1, MIN_YEAR - 1) | st.integers(MAX_YEAR + 1, 9999),
        st.integers(1, 12),
        st.integers(1, 28),
    )
    bad_timestamps: SearchStrategy[Any] = st.one_of(
        st.sampled_from(_BAD_TIMESTAMPS),
        out_of_range_years,
        st.sampled_from(([], {}, [2026, 11, 25])),
    )
    # Strings within MAX_STRING, but more JSON than MAX_PROPERTIES_JSON in all.
    too_much_json = {"blob": ["x" * MAX_STRING] * (MAX_PROPERTIES_JSON // MAX_STRING + 1)}
    bad_properties: SearchStrategy[Any] = st.one_of(
        st.sampled_from(([], ["team", "red"], "team=red", 7, 1.5, True)),
        st.just({f"p{i}": i for i in range(MAX_PROPERTIES + 1)}),
        st.sampled_from(({"": "red"}, {"k" * (MAX_PROPERTY_KEY + 1): "red"})),
        st.just({"team": "v" * (MAX_STRING + 1)}),
        st.sampled_from(({"score": math.nan}, {"score": [math.inf]}, {"n": {"x": -math.inf}})),
        st.just(too_much_json),
        surrogate.map(lambda s: {"team": s}),
        surrogate.map(lambda s: {s: "red"}),
    )
    unknown_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).map(
        lambda key: f"x_{key}" if key in _KNOWN_KEYS else key
    )
    return st.one_of(
        _without(base, st.sampled_from(_REQUIRED_NAMES)),
        _spoiled(base, st.sampled_from((*_REQUIRED_NAMES, "idempotencyKey")), st.just("")),
        _spoiled(base, st.sampled_from(_STRINGS), long_text),
        _spoiled(
            base, st.sampled_from(_STRINGS), st.tuples(some_text, surrogate, some_text).map("".join)
        ),
        # null means "absent" for the optional strings: a bad value only where one is required.
        _spoiled(base, st.sampled_from(_REQUIRED_NAMES), st.none()),
        _spoiled(base, st.sampled_from(_STRINGS), not_text),
        _spoiled(base, st.sampled_from(_AMOUNTS), bad_amounts),
        _summed_tokens_too_large(base),
        _spoiled(base, st.just("costCents"), bad_cents),
        _spoiled(base, unknown_keys, st.none() | st.integers() | st.text(max_size=5)),
        _spoiled(base, st.just("timestamp"), bad_timestamps),
        _spoiled(base, st.just("properties"), bad_properties),
    )


def _valid_payloads() -> SearchStrategy[dict[str, Any]]:
    """Valid wire-form payloads, each to spoil one field of."""
    timestamps = st.none() | st.datetimes(
        min_value=datetime(MIN_YEAR + 1, 1, 1),
        max_value=datetime(MAX_YEAR - 1, 12, 31),
    )
    events = track_requests(idempotency_keys=True, timestamps=timestamps)
    return events.map(lambda event: event.model_dump(mode="json", by_alias=True))


@st.composite
def _spoiled(
    draw: st.DrawFn,
    base: SearchStrategy[dict[str, Any]],
    fields: SearchStrategy[str],
    values: SearchStrategy[Any],
) -> InvalidRequest:
    payload, field = draw(base), draw(fields)
    return InvalidRequest({**payload, field: draw(values)}, field)


@st.composite
def _without(
    draw: st.DrawFn, base: SearchStrategy[dict[str, Any]], fields: SearchStrategy[str]
) -> InvalidRequest:
    payload, field = draw(base), draw(fields)
    del payload[field]
    return InvalidRequest(payload, field)


@st.composite
def _summed_tokens_too_large(
    draw: st.DrawFn, base: SearchStrategy[dict[str, Any]]
) -> InvalidRequest:
    # Each count is valid; the totalTokens they default to is not.
    payload = draw(base)
    payload.pop("totalTokens", None)
    input_tokens = draw(st.integers(1, MAX_AMOUNT))
    output_tokens = draw(st.integers(MAX_AMOUNT - input_tokens + 1, MAX_AMOUNT))
    return InvalidRequest(
        {**payload, "inputTokens": input_tokens, "outputTokens": output_tokens}, "totalTokens"
    )


# --- argument checks and building ---------------------------------------------------------


def _check_tokens(max_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidArgument(f"max_tokens must be an integer, got {max_tokens!r}")
    if not 0 <= max_tokens <= MAX_AMOUNT:
        raise InvalidArgument(f"max_tokens must be from 0 to {MAX_AMOUNT}, got {max_tokens!r}")


def _check_cents(max_cost_cents: float) -> None:
    if isinstance(max_cost_cents, bool) or not isinstance(max_cost_cents, (int, float)):
        raise InvalidArgument(f"max_cost_cents must be a number, got {max_cost_cents!r}")
    if not 0 <= max_cost_cents <= MAX_CENTS:
        raise InvalidArgument(
            f"max_cost_cents must be from 0 to {MAX_CENTS}, got {max_cost_cents!r}"
        )


def _or(given: SearchStrategy[T] | None, default: SearchStrategy[T]) -> SearchStrategy[T]:
    return default if given is None else given


def _build(model: type[M], fields: dict[str, Any]) -> M:
    """The model; InvalidArgument when a caller's strategy drew a value the library refuses."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidArgument(
            f"a strategy passed to limitry_local.testing.strategies drew an invalid "
            f"{model.__name__}: {exc}"
        ) from None
