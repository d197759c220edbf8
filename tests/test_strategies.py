"""The public hypothesis strategies: valid values are accepted, invalid ones refused by name.

The strategies are only useful if the library agrees with them, so each is
checked against the real Tracker: every valid event round-trips and is
recorded, every definition is created, every invalid payload is a 400 that
names its field and records nothing.  The last tests show that the default
pools collide and that the default limits can actually be exceeded.
"""

from __future__ import annotations

import doctest
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import limitry_local.testing
import limitry_local.testing.clock
import limitry_local.testing.pytest_plugin
import limitry_local.testing.strategies
from limitry_local import (
    APIError,
    Event,
    QuotaCreate,
    QuotaExceeded,
    RateLimitCreate,
    RateLimitExceeded,
    Tracker,
    TrackPostRequest,
)
from limitry_local.dimensions import BUILTIN_DIMENSIONS
from limitry_local.models import (
    MAX_FILTER_VALUES,
    MAX_FILTERS,
    MAX_PROPERTIES,
    MAX_STRING,
    MAX_YEAR,
    MIN_YEAR,
    window_seconds,
)
from limitry_local.testing import ManualClock
from limitry_local.testing import strategies as lst
from tests.conftest import START

# find() only has to show an example exists; shrinking it would just cost time.
REACHABLE = settings(database=None, max_examples=2_000, phases=[Phase.generate])
WIRE_FIELDS = {
    "customerId",
    "eventType",
    "model",
    "provider",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "latencyMs",
    "costCents",
    "properties",
    "idempotencyKey",
    "timestamp",
}
# Aware datetimes in any whole-minute offset, within the ledger's years.
AWARE = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(9997, 12, 31),
    timezones=st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


def _recorded_as_sent(event: Event, request: TrackPostRequest) -> None:
    # Attributes, not dumps: a dump leaves out a totalTokens that was defaulted.
    stored = event.model_dump(by_alias=False, exclude={"id", "created_at"})
    assert stored == {name: getattr(request, name) for name in stored}
    when = START if request.timestamp is None else request.timestamp.timestamp()
    assert event.created_at.timestamp() == pytest.approx(when, abs=1e-6)


# --- (a) valid events --------------------------------------------------------------------


@given(lst.track_requests())
def test_track_requests_round_trip_and_are_ingested(
    tracker: Tracker, request: TrackPostRequest
) -> None:
    assert TrackPostRequest.model_validate(request.model_dump(by_alias=True)) == request
    wire = request.model_dump(mode="json", by_alias=True)
    assert set(wire) <= WIRE_FIELDS
    assert TrackPostRequest.model_validate(wire) == request
    event_id = tracker.events.ingest(request).id
    [event] = tracker.events.list(limit=1).data
    assert event.id == event_id
    _recorded_as_sent(event, request)


@given(
    lst.track_requests(
        idempotency_keys=True, timestamps=st.none() | AWARE, max_tokens=50, max_cost_cents=2.5
    )
)
def test_track_requests_with_options_are_admitted_by_usage(request: TrackPostRequest) -> None:
    assert TrackPostRequest.model_validate(request.model_dump(by_alias=True)) == request
    with Tracker(clock=ManualClock(START)) as tracker:
        assert tracker.usage(request).allowed
        [event] = tracker.events.list().data
        _recorded_as_sent(event, request)


@given(lst.track_requests(max_tokens=50, max_cost_cents=2.5))
def test_track_requests_stay_within_their_bounds(request: TrackPostRequest) -> None:
    for amount in (request.input_tokens, request.output_tokens, request.total_tokens):
        assert amount is None or 0 <= amount <= 50
    assert request.cost_cents is None or 0 <= request.cost_cents <= 2.5
    assert request.timestamp is None
    assert request.idempotency_key is None
    assert request.customer_id in lst.CUSTOMER_IDS
    assert request.event_type in lst.EVENT_TYPES
    assert request.model in (None, *lst.MODELS)
    assert request.provider in (None, *lst.PROVIDERS)


@given(
    lst.track_requests(
        customer_ids=st.just("acme"),
        models=st.just("m"),
        providers=st.none(),
        properties=st.just({"plan": "pro"}),
        idempotency_keys=st.just("only"),
    )
)
def test_track_requests_overrides_replace_the_defaults(request: TrackPostRequest) -> None:
    assert (request.customer_id, request.model, request.provider) == ("acme", "m", None)
    assert request.properties == {"plan": "pro"}
    assert request.idempotency_key == "only"


def test_every_shape_of_event_is_drawn() -> None:
    shapes: dict[str, Callable[[TrackPostRequest], bool]] = {
        "defaulted": lambda r: r.input_tokens is not None and r.total_tokens is not None,
        "total only": lambda r: (
            r.input_tokens is None and r.output_tokens is None and r.total_tokens is not None
        ),
        "no tokens": lambda r: r.total_tokens is None,
        "float cents": lambda r: isinstance(r.cost_cents, float),
        "int cents": lambda r: isinstance(r.cost_cents, int),
        "string property": lambda r: any(isinstance(v, str) for v in r.properties.values()),
        "other property": lambda r: any(not isinstance(v, str) for v in r.properties.values()),
    }
    for condition in shapes.values():
        find(lst.track_requests(), condition, settings=REACHABLE)


# --- (b) valid definitions -----------------------------------------------------------------


@given(lst.quota_creates())
def test_quota_creates_are_accepted(tracker: Tracker, quota: QuotaCreate) -> None:
    created = tracker.quotas.create(quota)
    assert QuotaCreate.model_validate(created.model_dump(include=set(QuotaCreate.model_fields)))
    assert (created.name, created.metric, created.period) == (
        quota.name,
        quota.metric,
        quota.period,
    )
    assert (created.limit_value, created.per) == (quota.limit_value, quota.per)
    assert created.dimension_filters == quota.dimension_filters
    assert tracker.quotas.get(created.id) == created
    assert QuotaCreate.model_validate(quota.model_dump(by_alias=True)) == quota


@given(lst.rate_limit_creates())
def test_rate_limit_creates_are_accepted(tracker: Tracker, limit: RateLimitCreate) -> None:
    created = tracker.rate_limits.create(limit)
    assert (created.name, created.window, created.metric) == (
        limit.name,
        limit.window,
        limit.metric,
    )
    assert (created.limit_value, created.per, created.enabled) == (
        limit.limit_value,
        limit.per,
        limit.enabled,
    )
    assert created.dimension_filters == limit.dimension_filters
    assert tracker.rate_limits.get(created.id) == created
    assert RateLimitCreate.model_validate(limit.model_dump(by_alias=True)) == limit


@given(lst.quota_creates(max_tokens=50, max_cost_cents=2.5))
def test_default_quota_limits_are_small(quota: QuotaCreate) -> None:
    top = {"total_events": 20, "total_tokens": 100, "total_cost_cents": 5}[quota.metric]
    assert 1 <= quota.limit_value <= top
    assert set(quota.per) <= set(BUILTIN_DIMENSIONS)


@given(lst.rate_limit_creates(max_tokens=50))
def test_default_rate_limits_are_small(limit: RateLimitCreate) -> None:
    assert 1 <= limit.limit_value <= (20 if limit.metric == "total_events" else 100)
    assert window_seconds(limit.window) <= 90 * 86_400
    assert set(limit.per) <= set(BUILTIN_DIMENSIONS)


@given(
    lst.quota_creates(limit_values=st.just(7)),
    lst.rate_limit_creates(limit_values=st.just(3), windows=st.just("30s")),
)
def test_limit_values_and_windows_can_be_given(quota: QuotaCreate, limit: RateLimitCreate) -> None:
    assert quota.limit_value == 7
    assert (limit.limit_value, limit.window) == (3, "30s")


@pytest.mark.parametrize(
    "form", ["second", "minute", "hour", "[0-9]+s", "[0-9]+m", "[0-9]+h", "[0-9]+d"]
)
def test_every_window_form_is_drawn(form: str) -> None:
    find(
        lst.rate_limit_creates(),
        lambda limit: re.fullmatch(form, limit.window) is not None,
        settings=REACHABLE,
    )


def test_disabled_rate_limits_are_drawn() -> None:
    find(lst.rate_limit_creates(), lambda limit: not limit.enabled, settings=REACHABLE)


@given(lst.dimension_filters())
def test_dimension_filters_use_the_pools(filters: dict[str, str | list[str]]) -> None:
    pools: dict[str, tuple[str, ...]] = {
        "customer_id": lst.CUSTOMER_IDS,
        "event_type": lst.EVENT_TYPES,
        "model": lst.MODELS,
        "provider": lst.PROVIDERS,
        **lst.PROPERTY_VALUES,
    }
    assert len(filters) <= MAX_FILTERS
    for name, wanted in filters.items():
        values = [wanted] if isinstance(wanted, str) else wanted
        assert 1 <= len(values) <= MAX_FILTER_VALUES
        assert set(values) <= set(pools[name])
    QuotaCreate(
        name="q", metric="total_events", limit_value=1, period="day", dimension_filters=filters
    )


def test_dimension_filters_are_sometimes_empty_sometimes_lists() -> None:
    find(lst.dimension_filters(), lambda f: f == {}, settings=REACHABLE)
    find(
        lst.dimension_filters(),
        lambda f: any(isinstance(v, list) for v in f.values()),
        settings=REACHABLE,
    )
    find(
        lst.dimension_filters(),
        lambda f: any(k in lst.PROPERTY_VALUES for k in f),
        settings=REACHABLE,
    )


# --- (c) invalid events --------------------------------------------------------------------


def _assert_names(error: APIError, field: str, prefix: str = "") -> None:
    assert error.status_code == 400
    assert field in error.message
    # One bad field, one error, located at that field; the sum of input and
    # output tokens is a whole-event check, located at the body.
    located = error.message.startswith((f"{prefix}{field}:", f"{prefix}{field}."))
    assert located or (field == "totalTokens" and error.message.startswith(f"{prefix}body:"))


@given(lst.invalid_track_requests())
def test_invalid_requests_are_refused_by_usage_naming_the_field(
    tracker: Tracker, bad: lst.InvalidRequest
) -> None:
    before = tracker.ledger.event_count()
    with pytest.raises(APIError) as refused:
        tracker.usage(bad.payload)
    _assert_names(refused.value, bad.field)
    assert tracker.ledger.event_count() == before
    assert tracker.events.list().data == []


@given(lst.invalid_track_requests(), lst.track_requests())
def test_invalid_requests_are_refused_by_ingest_and_batch(
    tracker: Tracker, bad: lst.InvalidRequest, good: TrackPostRequest
) -> None:
    with pytest.raises(APIError) as refused:
        tracker.events.ingest(bad.payload)
    _assert_names(refused.value, bad.field)
    with pytest.raises(APIError) as refused:
        tracker.events.batch([good, bad.payload])
    _assert_names(refused.value, bad.field, prefix="events[1].")
    assert tracker.events.list().data == []


@pytest.mark.parametrize("field", sorted(WIRE_FIELDS))
def test_every_wire_field_gets_an_invalid_value(field: str) -> None:
    find(lst.invalid_track_requests(), lambda bad: bad.field == field, settings=REACHABLE)


def test_unknown_fields_are_drawn() -> None:
    find(lst.invalid_track_requests(), lambda bad: bad.field not in WIRE_FIELDS, settings=REACHABLE)


def _amounts(bad: lst.InvalidRequest) -> list[Any]:
    return [bad.payload.get(f) for f in ("inputTokens", "outputTokens", "totalTokens", "latencyMs")]


def _text(bad: lst.InvalidRequest) -> str:
    value = bad.payload.get(bad.field)
    return value if isinstance(value, str) else ""


def _year(value: object) -> int | None:
    match = re.match(r"([0-9]{4})-", value) if isinstance(value, str) else None
    """The year of an ISO date-time string, if it is outside the ledger's years."""
    year = int(match.group(1)) if match else None
    return year if year is not None and not MIN_YEAR <= year <= MAX_YEAR else None


KINDS: dict[str, Callable[[lst.InvalidRequest], bool]] = {
    "missing": lambda bad: (
        bad.field in ("customerId", "eventType") and bad.field not in bad.payload
    ),
    "empty": lambda bad: bad.payload.get(bad.field) == "",
    "null customerId": lambda bad: (
        "customerId" in bad.payload and bad.payload["customerId"] is None
    ),
    "too long": lambda bad: len(_text(bad)) > MAX_STRING,
    "lone surrogate": lambda bad: any(0xD800 <= ord(c) <= 0xDFFF for c in _text(bad)),
    "bool amount": lambda bad: any(isinstance(v, bool) for v in _amounts(bad)),
    "non-finite amount": lambda bad: any(
        isinstance(v, float) and not math.isfinite(v) for v in _amounts(bad)
    ),
    "string cents": lambda bad: isinstance(bad.payload.get("costCents"), str),
    "tokens sum too large": lambda bad: (
        bad.field == "totalTokens" and "totalTokens" not in bad.payload
    ),
    "non-dict properties": lambda bad: not isinstance(bad.payload.get("properties", {}), dict),
    "too many properties": lambda bad: (
        isinstance(bad.payload.get("properties"), dict)
        and len(bad.payload["properties"]) > MAX_PROPERTIES
    ),
    "year out of range": lambda bad: _year(bad.payload.get("timestamp")) is not None,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_invalid_value_is_drawn(kind: str) -> None:
    find(lst.invalid_track_requests(), KINDS[kind], settings=REACHABLE)


# --- (d) the defaults collide and their limits can be hit ------------------------------------


# Three customers, twenty requests: pigeonholes, so a few examples make the point.
@settings(max_examples=20)
@given(st.lists(lst.track_requests(), min_size=20, max_size=20))
def test_twenty_requests_share_a_customer(requests: list[TrackPostRequest]) -> None:
    customers = Counter(r.customer_id for r in requests)
    assert max(customers.values()) >= 2


def test_requests_collide_on_all_four_builtin_dimensions() -> None:
    def collide(requests: list[TrackPostRequest]) -> bool:
        keys = [
            (r.customer_id, r.event_type, r.model, r.provider)
            for r in requests
            if r.model is not None and r.provider is not None
        ]
        return len(set(keys)) < len(keys)

    find(st.lists(lst.track_requests(), min_size=20, max_size=20), collide, settings=REACHABLE)


def _denied(
    definition: QuotaCreate | RateLimitCreate, requests: list[TrackPostRequest]
) -> type[Exception] | None:
    with Tracker(clock=ManualClock(START)) as tracker:
        if isinstance(definition, QuotaCreate):
            tracker.quotas.create(definition)
        else:
            tracker.rate_limits.create(definition)
        for request in requests:
            try:
                tracker.usage(request)
            except (QuotaExceeded, RateLimitExceeded) as exc:
                return type(exc)
    return None


@pytest.mark.parametrize("metric", ["total_events", "total_tokens", "total_cost_cents"])
def test_default_quotas_can_be_exceeded(metric: str) -> None:
    scenario = st.tuples(
        lst.quota_creates(metrics=st.just(metric)),
        st.lists(lst.track_requests(), min_size=20, max_size=20),
    )
    find(scenario, lambda s: _denied(*s) is QuotaExceeded, settings=REACHABLE)


@pytest.mark.parametrize("metric", ["total_events", "total_tokens"])
def test_default_rate_limits_can_be_exceeded(metric: str) -> None:
    scenario = st.tuples(
        lst.rate_limit_creates(metrics=st.just(metric)),
        st.lists(lst.track_requests(), min_size=20, max_size=20),
    )
    find(scenario, lambda s: _denied(*s) is RateLimitExceeded, settings=REACHABLE)


# --- arguments and packaging ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: lst.track_requests(max_tokens=-1),
        lambda: lst.track_requests(max_tokens=True),
        lambda: lst.track_requests(max_cost_cents=10**10),
        lambda: lst.quota_creates(max_cost_cents=-1),
        lambda: lst.rate_limit_creates(max_tokens=2.5),  # type: ignore[arg-type]
        lambda: lst.dimension_filters(max_keys=MAX_FILTERS + 1),
        lambda: lst.dimension_filters(property_values={"model": st.just("x")}),
    ],
)
def test_bad_arguments_are_refused_at_once(make: Any) -> None:
    with pytest.raises(InvalidArgument):
        make()


def test_a_strategy_drawing_a_refused_value_says_so() -> None:
    @given(lst.track_requests(customer_ids=st.just("")))
    def draw(request: TrackPostRequest) -> None:
        raise AssertionError("unreachable")

    with pytest.raises(InvalidArgument, match="customer_id"):
        draw()


def test_the_testing_package_does_not_import_hypothesis() -> None:
    code = (
        "import sys, limitry_local.testing, limitry_local.testing.pytest_plugin;"
        "assert 'hypothesis' not in sys.modules, 'hypothesis was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "module",
    [
        limitry_local.testing,
        limitry_local.testing.clock,
        limitry_local.testing.pytest_plugin,
        limitry_local.testing.strategies,
    ],
    ids=lambda module: module.__name__,
)
def test_the_docstring_examples_run(module: ModuleType) -> None:
    """The toolkit's examples are what users copy; track_requests' drew year 9999 and failed."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, result
