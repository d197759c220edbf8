"""Wire models: golden round trips, both spellings, defaults, and 400s that name the field."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from limitry_local import (
    APIError,
    CustomerUsageResponse,
    ErrorBody,
    EventIngestResponse,
    InvalidRequestError,
    Page,
    Quota,
    QuotaCreate,
    QuotaStatus,
    RateLimit,
    RateLimitCreate,
    RateLimitStatus,
    TrackDeniedResponse,
    Tracker,
    TrackPostRequest,
    TrackPostResponse,
)
from limitry_local.models import FailedOpen, trusted, window_seconds

# Copies of shared/spec/golden (the hosted reference's wire examples), kept with the tests.
GOLDEN = Path(__file__).parent / "golden"

GOLDEN_MODELS: dict[str, type[BaseModel]] = {
    "customer_usage": CustomerUsageResponse,
    "event_ingest_request": TrackPostRequest,
    "event_ingest_response": EventIngestResponse,
    "quota": Quota,
    "quota_create": QuotaCreate,
    "quota_list": Page[Quota],
    "rate_limit": RateLimit,
    "rate_limit_create": RateLimitCreate,
}


def _load(name: str) -> Any:
    path = GOLDEN / f"{name}.json"
    # No skip: a missing golden file is a broken checkout, not an optional test.
    assert path.is_file(), f"golden file {path} is missing"
    return json.loads(path.read_text(encoding="utf-8"))


def _exact(value: Any) -> str:
    """Canonical JSON text: equal only when keys, values *and* number forms (25 vs 25.0) agree."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


# --- golden round trips ---------------------------------------------------------------


def test_golden_directory_holds_exactly_the_known_files() -> None:
    assert GOLDEN.is_dir(), f"golden directory {GOLDEN} is missing"
    found = {path.stem for path in GOLDEN.glob("*.json")}
    assert found == {*GOLDEN_MODELS, "errors"}


@pytest.mark.parametrize("name", sorted(GOLDEN_MODELS))
def test_golden_round_trip_is_unchanged(name: str) -> None:
    raw = _load(name)
    model = GOLDEN_MODELS[name].model_validate(raw)
    dumped = model.model_dump(mode="json", by_alias=True)
    assert dumped == raw
    assert _exact(dumped) == _exact(raw)


def test_golden_errors_round_trip_each_body() -> None:
    raw = _load("errors")
    assert set(raw) == {"bad_request", "unauthorized", "not_found"}
    for body in raw.values():
        model = ErrorBody.model_validate(body)
        assert model.error == body["error"]
        assert _exact(model.model_dump(mode="json", by_alias=True)) == _exact(body)


def test_golden_event_request_reads_into_snake_case_attributes() -> None:
    event = TrackPostRequest.model_validate(_load("event_ingest_request"))
    assert event.customer_id == "cust_123"
    assert event.event_type == "model_call"
    assert (event.input_tokens, event.output_tokens, event.total_tokens) == (150, 50, 200)
    assert event.latency_ms == 1200
    assert event.cost_cents == 25
    assert event.idempotency_key == "req_abc123"
    assert event.timestamp == datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)
    assert event.properties == {"user_id": "user_456", "team_id": "team_eng", "feature": "chat"}


def test_golden_quota_list_page_attributes() -> None:
    page = Page[Quota].model_validate(_load("quota_list"))
    assert page.has_more is True
    assert page.next_cursor == "qta_xyz789"
    assert [q.limit_value for q in page.data] == [100_000]
    assert page.data[0].project_id == "proj_xyz"


def test_golden_rate_limit_keeps_duration_window() -> None:
    limit = RateLimit.model_validate(_load("rate_limit"))
    assert limit.window == "1h"
    assert window_seconds(limit.window) == 3600


# --- both spellings ---------------------------------------------------------------------


def test_camel_and_snake_case_read_the_same_event() -> None:
    camel = TrackPostRequest.model_validate(
        {"customerId": "c", "eventType": "e", "inputTokens": 3, "latencyMs": 9, "costCents": 1.5}
    )
    snake = TrackPostRequest.model_validate(
        {
            "customer_id": "c",
            "event_type": "e",
            "input_tokens": 3,
            "latency_ms": 9,
            "cost_cents": 1.5,
        }
    )
    assert camel == snake
    # totalTokens reads as the sum, but the dump says only what was sent.
    assert snake.total_tokens == 3
    assert snake.model_dump(mode="json", by_alias=True) == {
        "customerId": "c",
        "eventType": "e",
        "inputTokens": 3,
        "latencyMs": 9,
        "costCents": 1.5,
    }


def test_camel_and_snake_case_read_the_same_quota_create() -> None:
    camel = QuotaCreate.model_validate(
        {
            "name": "q",
            "dimensionFilters": {"model": "m"},
            "metric": "total_events",
            "limitValue": 5,
            "period": "week",
        }
    )
    snake = QuotaCreate.model_validate(
        {
            "name": "q",
            "dimension_filters": {"model": "m"},
            "metric": "total_events",
            "limit_value": 5,
            "period": "week",
        }
    )
    assert camel == snake
    assert snake.limit_value == 5


def test_rate_limit_create_additions_are_dumped_only_when_set() -> None:
    # A request dumps what it was given: no filled-in dimensionFilters, enabled, per or metric.
    plain = RateLimitCreate.model_validate({"name": "r", "limitValue": 1, "window": "second"})
    assert plain.enabled is True
    assert (plain.dimension_filters, plain.per, plain.metric) == ({}, [], "total_events")
    assert plain.model_dump(mode="json", by_alias=True) == {
        "name": "r",
        "limitValue": 1,
        "window": "second",
    }
    extended = RateLimitCreate.model_validate(
        {
            "name": "r",
            "limitValue": 1,
            "window": "5m",
            "per": ["customer_id"],
            "metric": "total_tokens",
        }
    )
    assert extended.model_dump(mode="json", by_alias=True) == {
        "name": "r",
        "limitValue": 1,
        "window": "5m",
        "per": ["customer_id"],
        "metric": "total_tokens",
    }
    # Our additions sent with their default values are dumped too: they were given.
    defaults = RateLimitCreate(
        name="r", limit_value=1, window="second", enabled=True, per=[], metric="total_events"
    )
    assert defaults.model_dump(mode="json", by_alias=True) == {
        "name": "r",
        "limitValue": 1,
        "window": "second",
        "enabled": True,
        "per": [],
        "metric": "total_events",
    }


def test_track_responses_dump_camel_case() -> None:
    ok = TrackPostResponse(id="evt_1")
    assert ok.model_dump(mode="json", by_alias=True) == {
        "id": "evt_1",
        "allowed": True,
        "rateLimits": [],
        "quotas": [],
    }
    assert ok.headers == {}
    denied = TrackDeniedResponse(error="Quota exceeded", retry_after=7)
    assert denied.model_dump(mode="json", by_alias=True) == {
        "error": "Quota exceeded",
        "allowed": False,
        "rateLimits": [],
        "quotas": [],
        "retryAfter": 7,
    }


def test_customer_usage_keeps_whole_cents_as_integers_and_fractions_as_is() -> None:
    base = {
        "customerId": "c",
        "totalEvents": 1,
        "totalTokens": 2,
        "totalInputTokens": 1,
        "totalOutputTokens": 1,
    }
    whole = CustomerUsageResponse.model_validate({**base, "totalCostCents": 500.0})
    assert _exact(whole.model_dump(mode="json")["totalCostCents"]) == "500"
    part = CustomerUsageResponse.model_validate({**base, "totalCostCents": 12.5})
    assert part.model_dump(mode="json")["totalCostCents"] == 12.5


# --- defaults and value rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "total"),
    [
        ({"inputTokens": 120, "outputTokens": 30}, 150),
        ({"inputTokens": 5}, 5),
        ({"outputTokens": 7}, 7),
        ({"inputTokens": 1, "outputTokens": 2, "totalTokens": 10}, 10),
        ({"totalTokens": 0}, 0),
        ({}, None),
    ],
)
def test_total_tokens_defaults_to_input_plus_output(
    fields: dict[str, Any], total: int | None
) -> None:
    event = TrackPostRequest.model_validate({"customerId": "c", "eventType": "e", **fields})
    assert event.total_tokens == total


def test_timestamp_without_zone_is_utc_and_offsets_are_converted() -> None:
    naive = TrackPostRequest.model_validate(
        {"customerId": "c", "eventType": "e", "timestamp": "2026-11-25T10:00:00"}
    )
    offset = TrackPostRequest.model_validate(
        {"customerId": "c", "eventType": "e", "timestamp": "2026-11-25T12:00:00+02:00"}
    )
    expected = datetime(2026, 11, 25, 10, tzinfo=timezone.utc)
    assert naive.timestamp == expected
    assert offset.timestamp == expected
    assert offset.model_dump(mode="json")["timestamp"] == "2026-11-25T10:00:00Z"


@pytest.mark.parametrize(
    ("window", "seconds"),
    [
        ("second", 1),
        ("minute", 60),
        ("hour", 3600),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86_400),
    ],
)
def test_windows_named_and_durations(window: str, seconds: int) -> None:
    assert window_seconds(window) == seconds
    assert RateLimitCreate(name="r", limit_value=1, window=window).window == window


@pytest.mark.parametrize("window", ["day", "0s", "1w", "10", "m5", "", "1.5h"])
def test_bad_windows_are_refused(window: str) -> None:
    with pytest.raises(ValidationError) as info:
        RateLimitCreate.model_validate({"name": "r", "limitValue": 1, "window": window})
    assert info.value.errors()[0]["loc"] == ("window",)


@pytest.mark.parametrize(
    "fields",
    [
        {"limitValue": 0},
        {"limitValue": True},
        {"limitValue": "5"},
        {"name": ""},
        {"metric": "total_requests"},
        {"period": "year"},
        {"dimensionFilters": {"model": []}},
        {"per": ["customer_id", "customer_id"]},
        {"unknown": 1},
    ],
)
def test_bad_quota_definitions_are_refused(fields: dict[str, Any]) -> None:
    good = {"name": "q", "metric": "total_events", "limitValue": 1, "period": "day"}
    QuotaCreate.model_validate(good)
    with pytest.raises(ValidationError):
        QuotaCreate.model_validate({**good, **fields})


# --- 400s through tracker.usage -------------------------------------------------------------

VALID = {"customerId": "cust_1", "eventType": "model_call"}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != key}


BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("customerId empty", {**VALID, "customerId": ""}, "customerId"),
    ("customerId missing", _without("customerId"), "customerId"),
    ("customerId too long", {**VALID, "customerId": "c" * 257}, "customerId"),
    ("eventType missing", _without("eventType"), "eventType"),
    ("eventType empty", {**VALID, "eventType": ""}, "eventType"),
    ("model too long", {**VALID, "model": "m" * 257}, "model"),
    ("negative inputTokens", {**VALID, "inputTokens": -1}, "inputTokens"),
    ("boolean outputTokens", {**VALID, "outputTokens": True}, "outputTokens"),
    ("string totalTokens", {**VALID, "totalTokens": "5"}, "totalTokens"),
    ("float latencyMs", {**VALID, "latencyMs": 1.5}, "latencyMs"),
    ("huge inputTokens", {**VALID, "inputTokens": 10**12 + 1}, "inputTokens"),
    ("NaN costCents", {**VALID, "costCents": math.nan}, "costCents"),
    ("inf costCents", {**VALID, "costCents": math.inf}, "costCents"),
    ("negative costCents", {**VALID, "costCents": -0.5}, "costCents"),
    ("bad timestamp", {**VALID, "timestamp": "yesterday"}, "timestamp"),
    ("timestamp before 1970", {**VALID, "timestamp": "1969-12-31T23:59:59Z"}, "timestamp"),
    ("timestamp after 9998", {**VALID, "timestamp": "9999-06-01T00:00:00Z"}, "timestamp"),
    ("string properties", {**VALID, "properties": "team=eng"}, "properties"),
    ("list properties", {**VALID, "properties": ["team"]}, "properties"),
    (
        "too many properties",
        {**VALID, "properties": {f"k{i}": "v" for i in range(65)}},
        "properties",
    ),
    (
        "properties too large",
        {**VALID, "properties": {f"k{i}": "v" * 256 for i in range(64)}},
        "properties",
    ),
    ("empty idempotencyKey", {**VALID, "idempotencyKey": ""}, "idempotencyKey"),
    ("unknown field", {**VALID, "userId": "u"}, "userId"),
]


@pytest.fixture
def limited(tracker: Tracker) -> Tracker:
    """A tracker with a quota and a rate limit that every valid event would charge."""
    tracker.quotas.create(name="q", metric="total_events", limit_value=100, period="day")
    tracker.rate_limits.create(name="r", limit_value=5, window="minute")
    return tracker


def _assert_nothing_recorded(tracker: Tracker) -> None:
    assert tracker.ledger.event_count() == 0
    assert tracker.events.list().data == []
    assert tracker.ledger.counters() == {}
    assert tracker.quotas.check({"customer_id": "cust_1"}).quotas[0].used == 0
    assert tracker.rate_limits.check({"customer_id": "cust_1"}).rate_limits[0].remaining == 5


@pytest.mark.parametrize(
    ("event", "field"), [(e, f) for _, e, f in BAD_EVENTS], ids=[c for c, _, _ in BAD_EVENTS]
)
def test_bad_event_is_a_400_naming_the_wire_field(
    limited: Tracker, event: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        limited.usage(event)
    error = info.value
    assert isinstance(error, APIError)
    assert isinstance(error, ValueError)
    assert error.status_code == 400
    assert error.status == 400
    assert error.status_text == "Bad Request"
    assert f"{field}:" in error.message
    assert error.response == {"error": error.message}
    _assert_nothing_recorded(limited)


def test_bad_snake_case_keyword_is_named_by_its_wire_name(limited: Tracker) -> None:
    with pytest.raises(InvalidRequestError) as info:
        limited.usage(customer_id="cust_1", event_type="e", input_tokens=-3)
    assert info.value.message.startswith("inputTokens:")
    _assert_nothing_recorded(limited)


def test_every_bad_field_is_named(limited: Tracker) -> None:
    with pytest.raises(InvalidRequestError) as info:
        limited.usage({"customerId": "", "eventType": "e", "inputTokens": -1, "costCents": "x"})
    message = info.value.message
    for field in ("customerId:", "inputTokens:", "costCents:"):
        assert field in message
    assert "eventType" not in message
    _assert_nothing_recorded(limited)


def test_unknown_snake_case_field_is_named_as_sent(limited: Tracker) -> None:
    # The message must name the bad field; ``user_id`` was sent, ``userId`` was not.
    with pytest.raises(InvalidRequestError) as info:
        limited.usage({**VALID, "user_id": "u"})
    assert "user_id:" in info.value.message
    _assert_nothing_recorded(limited)


def test_bad_event_through_events_ingest_is_a_400_too(limited: Tracker) -> None:
    with pytest.raises(InvalidRequestError) as info:
        limited.events.ingest({**VALID, "outputTokens": -1})
    assert "outputTokens:" in info.value.message
    _assert_nothing_recorded(limited)


def test_an_explicit_null_total_reads_and_writes_back_as_the_sum() -> None:
    # A deliberate normalisation (docs/semantics.md): null and absent mean the sum.
    wire = {"customerId": "c", "eventType": "e", "inputTokens": 3, "outputTokens": 4}
    request = TrackPostRequest.model_validate({**wire, "totalTokens": None})
    assert request.total_tokens == 7
    assert request.model_dump(mode="json", by_alias=True) == {**wire, "totalTokens": 7}
    assert TrackPostRequest.model_validate(wire).model_dump(mode="json", by_alias=True) == wire


def test_checks_take_the_wire_body_too(tracker: Tracker) -> None:
    tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    tracker.rate_limits.create(name="r", limit_value=1, window="hour", per=["customer_id"])
    tracker.usage(customer_id="c", event_type="e")
    body = {"dimensions": {"customer_id": "c"}}
    assert tracker.quotas.check(body) == tracker.quotas.check({"customer_id": "c"})
    assert tracker.rate_limits.check(body).allowed is False
    assert tracker.rate_limits.check({"customer_id": "d"}).allowed is True


@pytest.mark.parametrize(
    "field", ["customerId", "eventType", "model", "provider", "idempotencyKey"]
)
def test_a_lone_surrogate_in_any_string_is_refused_naming_the_field(field: str) -> None:
    wire = {"customerId": "c", "eventType": "e", field: "a\ud800b"}
    with pytest.raises(ValidationError) as caught:
        TrackPostRequest.model_validate(wire)
    assert caught.value.errors()[0]["loc"] == (field,)


# --- trusted(): the hot path's models, built without validation ------------------------

_rate_status_fields = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "name": st.text(min_size=1, max_size=8),
        "limit": st.integers(1, 10**12),
        "remaining": st.integers(0, 10**12),
        "reset": st.integers(0, 2**40),
        "window": st.sampled_from(["second", "minute", "hour", "day", "90s"]),
        "exceeded": st.booleans(),
    }
)
_quota_status_fields = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "name": st.text(min_size=1, max_size=8),
        "metric": st.sampled_from(["total_tokens", "total_events", "total_cost_cents"]),
        "period": st.sampled_from(["hour", "day", "week", "month"]),
        "limit": st.integers(1, 10**12),
        # from_units answers an int when whole, a float for a fraction of a cent
        "used": st.integers(0, 10**12)
        | st.floats(0, 1e9, allow_nan=False).filter(lambda x: not x.is_integer()),
        "remaining": st.integers(0, 10**12),
        "reset": st.integers(0, 2**40),
        "exceeded": st.booleans(),
    }
)


_failed_open_fields = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "name": st.text(min_size=1, max_size=8),
        "kind": st.just("rate_limit"),
        "reason": st.sampled_from(["connection", "timeout"]),
    }
)


@given(
    rates=st.lists(_rate_status_fields, max_size=3),
    quotas=st.lists(_quota_status_fields),
    failed_open=st.lists(_failed_open_fields, max_size=2),
)
def test_trusted_builds_what_validation_would(
    rates: list[dict[str, Any]], quotas: list[dict[str, Any]], failed_open: list[dict[str, Any]]
) -> None:
    headers = {"X-RateLimit-Limit": "1"}
    built = trusted(
        TrackPostResponse,
        {
            "id": "evt_1",
            "allowed": True,
            "rate_limits": [trusted(RateLimitStatus, declared(RateLimitStatus, r)) for r in rates],
            "quotas": [trusted(QuotaStatus, declared(QuotaStatus, q)) for q in quotas],
            "failed_open": [FailedOpen.model_validate(f) for f in failed_open],
        },
        {"_headers": headers},
    )
    validated = TrackPostResponse.model_validate(
        {
            "id": "evt_1",
            "allowed": True,
            "rate_limits": rates,
            "quotas": quotas,
            "failed_open": failed_open,
        }
    )
    validated._headers = headers
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == validated.model_fields_set
    for mine, theirs in zip(built.quotas, validated.quotas, strict=True):
        assert mine.model_fields_set == theirs.model_fields_set
        assert type(mine.used) is type(theirs.used)
    assert built.headers == headers
    # Still an ordinary model: copies and revalidation work.
    assert TrackPostResponse.model_validate(built.model_dump()).model_dump() == built.model_dump()
    assert built.model_copy(update={"id": "evt_2"}).id == "evt_2"


def declared(model: type[BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    """The fields in the model's declared order, as trusted() requires."""
    return {name: fields[name] for name in model.model_fields}


def test_trusted_answers_of_the_tracker_are_in_declared_order() -> None:
    # trusted() keeps the caller's order, and the JSON follows it: the
    # tracker's own builders must list fields as the models declare them.
    with Tracker() as tracker:
        tracker.rate_limits.create(name="r", limit_value=5, window="minute")
        tracker.quotas.create(name="c", metric="total_cost_cents", limit_value=5, period="day")
        answer = tracker.usage(customer_id="c", event_type="e", cost_cents=0.25)
        checks = (
            tracker.rate_limits.check({"customer_id": "c"}),
            tracker.quotas.check({"customer_id": "c"}),
        )
    again = TrackPostResponse.model_validate_json(answer.model_dump_json())
    assert answer.model_dump_json() == again.model_dump_json()
    assert list(answer.rate_limits[0].__dict__) == list(RateLimitStatus.model_fields)
    assert list(answer.quotas[0].__dict__) == list(QuotaStatus.model_fields)
    assert list(answer.__dict__) == list(TrackPostResponse.model_fields)
    for check in checks:
        assert list(check.__dict__) == list(type(check).model_fields)
        again_check = type(check).model_validate_json(check.model_dump_json())
        assert again_check.model_dump_json() == check.model_dump_json()
