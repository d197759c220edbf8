"""The rules of part 3, through the Tracker, on a manual clock.

The clock starts on Wednesday 2026-11-25 at 10:00:00 UTC (``START``).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from limitry_local import (
    APIError,
    EventBatchRequest,
    InvalidRequestError,
    LedgerError,
    LimitExceeded,
    LimitryError,
    NotFoundError,
    QuotaCreate,
    QuotaExceeded,
    RateLimitCreate,
    RateLimitExceeded,
    Tracker,
    TrackPostRequest,
    TrackPostResponse,
)
from limitry_local.testing import ManualClock
from tests.conftest import START

S = int(START)
MINUTE = 60
HOUR = 3600
DAY = 86_400


def at(text: str) -> int:
    """Unix seconds of a UTC date-time written as ``YYYY-MM-DDTHH:MM:SS``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


MIDNIGHT = at("2026-11-26T00:00:00")  # end of START's day
TODAY = at("2026-11-25T00:00:00")


def use(tracker: Tracker, customer: str = "cust_1", **fields: Any) -> TrackPostResponse:
    fields.setdefault("event_type", "model_call")
    return tracker.usage(customer_id=customer, **fields)


def rate_denied(tracker: Tracker, customer: str = "cust_1", **fields: Any) -> RateLimitExceeded:
    with pytest.raises(RateLimitExceeded) as info:
        use(tracker, customer, **fields)
    return info.value


def quota_denied(tracker: Tracker, customer: str = "cust_1", **fields: Any) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as info:
        use(tracker, customer, **fields)
    return info.value


def remaining(tracker: Tracker, **dims: str) -> list[int]:
    return [s.remaining for s in tracker.rate_limits.check(dims).rate_limits]


def used(tracker: Tracker, **dims: str) -> list[float]:
    return [s.used for s in tracker.quotas.check(dims).quotas]


# --- input forms ----------------------------------------------------------------------------


def test_usage_accepts_a_model_a_wire_dict_a_snake_dict_and_keywords(tracker: Tracker) -> None:
    responses = [
        tracker.usage(TrackPostRequest(customer_id="c", event_type="e", input_tokens=2)),
        tracker.usage({"customerId": "c", "eventType": "e", "inputTokens": 2}),
        tracker.usage({"customer_id": "c", "event_type": "e", "input_tokens": 2}),
        tracker.usage(customer_id="c", event_type="e", input_tokens=2),
    ]
    assert all(r.allowed for r in responses)
    assert all(r.id.startswith("evt_") for r in responses)
    assert len({r.id for r in responses}) == 4
    events = tracker.events.list().data
    assert [(e.customer_id, e.event_type, e.input_tokens, e.total_tokens) for e in events] == [
        ("c", "e", 2, 2)
    ] * 4


def test_usage_refuses_a_dict_and_keywords_together(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.usage({"customerId": "c", "eventType": "e"}, model="gpt-4")
    assert tracker.ledger.event_count() == 0


def test_usage_refuses_a_non_mapping(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tracker.usage(["cust_1", "model_call"])  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert tracker.ledger.event_count() == 0


def test_201_body_shape(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="rpm", limit_value=10, window="minute")
    q = tracker.quotas.create(name="tok", metric="total_tokens", limit_value=1000, period="day")
    response = use(tracker, input_tokens=100, output_tokens=50)
    body = response.model_dump(mode="json", by_alias=True)
    assert body == {
        "id": response.id,
        "allowed": True,
        "rateLimits": [
            {
                "id": rl.id,
                "name": "rpm",
                "limit": 10,
                "remaining": 9,
                "reset": S + 6,
                "window": "minute",
                "exceeded": False,
            }
        ],
        "quotas": [
            {
                "id": q.id,
                "name": "tok",
                "metric": "total_tokens",
                "period": "day",
                "limit": 1000,
                "used": 150,
                "remaining": 850,
                "reset": MIDNIGHT,
                "exceeded": False,
            }
        ],
    }


# --- filters ------------------------------------------------------------------------------------


def test_exact_filter_matches_only_equal_values(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(
        name="gpt4", limit_value=5, window="minute", dimension_filters={"model": "gpt-4"}
    )
    q = tracker.quotas.create(
        name="openai",
        metric="total_events",
        limit_value=5,
        period="day",
        dimension_filters={"provider": "openai"},
    )
    hit = use(tracker, model="gpt-4", provider="openai")
    assert [s.id for s in hit.rate_limits] == [rl.id]
    assert [s.id for s in hit.quotas] == [q.id]
    other = use(tracker, model="gpt-3.5", provider="azure")
    assert other.rate_limits == []
    assert other.quotas == []
    bare = use(tracker)
    assert bare.rate_limits == []
    assert bare.quotas == []
    assert remaining(tracker, model="gpt-4") == [4]
    assert used(tracker, provider="openai") == [1]


def test_any_of_filter_matches_each_listed_value(tracker: Tracker) -> None:
    tracker.rate_limits.create(
        name="premium",
        limit_value=2,
        window="minute",
        dimension_filters={"model": ["gpt-4", "claude-3-opus"]},
    )
    assert len(use(tracker, model="gpt-4").rate_limits) == 1
    assert len(use(tracker, model="claude-3-opus").rate_limits) == 1
    # One shared bucket for every listed value.
    rate_denied(tracker, model="gpt-4")
    assert use(tracker, model="gpt-3.5").rate_limits == []


def test_every_filter_key_must_match(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=1,
        period="day",
        dimension_filters={"model": "gpt-4", "provider": "openai"},
    )
    assert use(tracker, model="gpt-4", provider="azure").quotas == []
    assert use(tracker, model="gpt-4").quotas == []
    assert len(use(tracker, model="gpt-4", provider="openai").quotas) == 1
    quota_denied(tracker, model="gpt-4", provider="openai")


def test_string_properties_are_dimensions_and_others_are_not(tracker: Tracker) -> None:
    tracker.rate_limits.create(
        name="eng", limit_value=5, window="minute", dimension_filters={"team": "eng"}
    )
    tracker.rate_limits.create(
        name="tier", limit_value=5, window="minute", dimension_filters={"tier": "3"}
    )
    assert [s.name for s in use(tracker, properties={"team": "eng"}).rate_limits] == ["eng"]
    assert use(tracker, properties={"tier": 3}).rate_limits == []
    assert [s.name for s in use(tracker, properties={"tier": "3"}).rate_limits] == ["tier"]
    # Non-string properties are still kept on the event.
    kept = [e.properties for e in tracker.events.list().data]
    assert {"tier": 3} in kept


def test_property_cannot_override_the_events_own_field(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="cheap",
        metric="total_events",
        limit_value=1,
        period="day",
        dimension_filters={"model": "cheap"},
    )
    response = use(tracker, model="gpt-4", properties={"model": "cheap"})
    assert response.quotas == []
    assert used(tracker, model="cheap") == [0]


def test_empty_filters_match_every_event(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="all", metric="total_events", limit_value=3, period="day")
    use(tracker, "a", event_type="embedding")
    use(tracker, "b", model="gpt-4", provider="openai", properties={"x": "y"})
    use(tracker, "c", event_type="tool_call")
    assert quota_denied(tracker, "d").body.quotas[0].id == q.id


# --- per ----------------------------------------------------------------------------------------


def test_per_customer_rate_limit_has_a_bucket_per_customer(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=1, window="minute", per=["customer_id"])
    assert use(tracker, "a").rate_limits[0].remaining == 0
    rate_denied(tracker, "a")
    assert use(tracker, "b").rate_limits[0].remaining == 0
    assert remaining(tracker, customer_id="c") == [1]


def test_per_customer_quota_has_a_counter_per_customer(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="tok", metric="total_tokens", limit_value=100, period="day", per=["customer_id"]
    )
    use(tracker, "a", total_tokens=100)
    quota_denied(tracker, "a", total_tokens=1)
    assert use(tracker, "b", total_tokens=100).quotas[0].used == 100
    assert used(tracker, customer_id="a") == [100]
    assert used(tracker, customer_id="c") == [0]


def test_per_several_dimensions_keys_on_the_tuple(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="r", limit_value=1, window="hour", per=["customer_id", "model"])
    use(tracker, "a", model="m1")
    use(tracker, "a", model="m2")
    use(tracker, "b", model="m1")
    rate_denied(tracker, "a", model="m1")


def test_event_lacking_a_per_dimension_does_not_match(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="team", limit_value=1, window="minute", per=["team"])
    tracker.quotas.create(
        name="team", metric="total_events", limit_value=1, period="day", per=["team"]
    )
    for _ in range(3):
        response = use(tracker)
        assert response.rate_limits == []
        assert response.quotas == []
    use(tracker, properties={"team": "eng"})
    rate_denied(tracker, properties={"team": "eng"})
    use(tracker, properties={"team": "ops"})
    # A non-string value is no dimension either.
    assert use(tracker, properties={"team": 7}).quotas == []
    assert tracker.quotas.check({"customer_id": "cust_1"}).quotas == []


def test_without_per_one_counter_serves_every_matching_event(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="shared", limit_value=2, window="minute")
    use(tracker, "a")
    use(tracker, "b")
    rate_denied(tracker, "c")


# --- token buckets over time --------------------------------------------------------------------


def test_bucket_refills_continuously(tracker: Tracker, clock: ManualClock) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    use(tracker)
    use(tracker)
    assert rate_denied(tracker).retry_after == 30
    clock.advance(10)
    assert rate_denied(tracker).retry_after == 20
    clock.advance(19)
    assert rate_denied(tracker).retry_after == 1
    clock.advance(1)
    assert use(tracker).rate_limits[0].remaining == 0
    clock.advance(90)
    # Refilled to capacity (2), never beyond.
    assert use(tracker).rate_limits[0].remaining == 1
    assert use(tracker).rate_limits[0].remaining == 0
    rate_denied(tracker)


@pytest.mark.parametrize(
    ("window", "limit", "retry"),
    [("second", 1, 1), ("30s", 3, 10), ("5m", 5, 60), ("hour", 4, 900), ("1d", 24, 3600)],
)
def test_windows_set_the_refill_rate(tracker: Tracker, window: str, limit: int, retry: int) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=limit, window=window)
    for _ in range(limit):
        assert use(tracker).rate_limits[0].window == window
    error = rate_denied(tracker)
    assert error.retry_after == retry
    assert error.body.rate_limits[0].id == rl.id


def test_token_metric_rate_limit_charges_total_tokens(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="tpm", limit_value=100, window="minute", metric="total_tokens")
    assert use(tracker, input_tokens=40, output_tokens=20).rate_limits[0].remaining == 40
    # 20 tokens missing at 100 per 60 s: 12 s.
    assert rate_denied(tracker, total_tokens=60).retry_after == 12
    assert use(tracker, total_tokens=40).rate_limits[0].remaining == 0
    # No tokens: costs nothing.
    assert use(tracker).rate_limits[0].remaining == 0
    # More than capacity never fits; the wait shown is for a full bucket.
    assert rate_denied(tracker, total_tokens=150).retry_after == 60


# --- quota periods ------------------------------------------------------------------------------


def test_hour_quota_resets_on_the_hour(tracker: Tracker, clock: ManualClock) -> None:
    tracker.quotas.create(name="h", metric="total_events", limit_value=1, period="hour")
    assert use(tracker).quotas[0].reset == at("2026-11-25T11:00:00")
    assert quota_denied(tracker).retry_after == HOUR
    clock.set(at("2026-11-25T10:59:59"))
    error = quota_denied(tracker)
    assert error.retry_after == 1
    assert error.headers["X-Quota-Reset"] == str(at("2026-11-25T11:00:00"))
    clock.set(at("2026-11-25T11:00:00"))
    assert use(tracker).quotas[0].reset == at("2026-11-25T12:00:00")
    quota_denied(tracker)


def test_day_quota_resets_at_midnight_utc(tracker: Tracker, clock: ManualClock) -> None:
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    assert quota_denied(tracker).retry_after == MIDNIGHT - S
    clock.set(at("2026-11-25T23:59:59"))
    assert quota_denied(tracker).retry_after == 1
    clock.set(MIDNIGHT)
    assert use(tracker).quotas[0].reset == at("2026-11-27T00:00:00")


def test_week_quota_resets_on_monday(tracker: Tracker, clock: ManualClock) -> None:
    tracker.quotas.create(name="w", metric="total_events", limit_value=1, period="week")
    assert use(tracker).quotas[0].reset == at("2026-11-30T00:00:00")
    clock.set(at("2026-11-29T23:59:59"))  # Sunday
    error = quota_denied(tracker)
    assert error.retry_after == 1
    assert error.headers["X-Quota-Period"] == "week"
    clock.set(at("2026-11-30T00:00:00"))  # Monday
    assert use(tracker).quotas[0].reset == at("2026-12-07T00:00:00")
    quota_denied(tracker)


def test_month_quota_resets_on_the_first(tracker: Tracker, clock: ManualClock) -> None:
    tracker.quotas.create(name="m", metric="total_events", limit_value=1, period="month")
    assert use(tracker).quotas[0].reset == at("2026-12-01T00:00:00")
    clock.set(at("2026-11-30T23:59:59"))
    quota_denied(tracker)
    clock.set(at("2026-12-01T00:00:00"))
    assert use(tracker).quotas[0].reset == at("2027-01-01T00:00:00")
    clock.set(at("2026-12-31T23:59:59"))
    assert quota_denied(tracker).headers["X-Quota-Reset"] == str(at("2027-01-01T00:00:00"))
    clock.set(at("2027-01-01T00:00:00"))
    assert use(tracker).quotas[0].reset == at("2027-02-01T00:00:00")


def test_events_own_timestamp_picks_the_period(tracker: Tracker) -> None:
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    quota_denied(tracker)
    yesterday = use(tracker, timestamp="2026-11-24T12:00:00Z")
    assert yesterday.quotas[0].reset == TODAY
    assert yesterday.quotas[0].used == 1
    error = quota_denied(tracker, timestamp="2026-11-24T23:00:00Z")
    assert error.headers["X-Quota-Reset"] == str(TODAY)
    # That period is over: the shortest wait is one second.
    assert error.retry_after == 1
    tomorrow = use(tracker, timestamp="2026-11-26T08:00:00Z")
    assert tomorrow.quotas[0].reset == at("2026-11-27T00:00:00")
    # Today's count is untouched by the other days.
    assert used(tracker) == [1]


def test_timestamped_event_is_listed_at_its_own_time(tracker: Tracker) -> None:
    use(tracker, timestamp="2026-11-24T12:00:00Z")
    use(tracker)
    created = [e.created_at for e in tracker.events.list().data]
    assert created == [utc(START), datetime(2026, 11, 24, 12, tzinfo=timezone.utc)]


# --- quota metrics -----------------------------------------------------------------------------


def test_token_quota_denies_when_used_plus_amount_exceeds_limit(tracker: Tracker) -> None:
    tracker.quotas.create(name="tok", metric="total_tokens", limit_value=100, period="day")
    assert use(tracker, input_tokens=50, output_tokens=10).quotas[0].used == 60
    error = quota_denied(tracker, total_tokens=41)
    assert error.body.quotas[0].used == 60
    assert error.body.quotas[0].remaining == 40
    # Exactly reaching the limit is allowed.
    assert use(tracker, total_tokens=40).quotas[0].remaining == 0
    quota_denied(tracker, total_tokens=1)
    # An event without tokens adds nothing and still fits.
    assert use(tracker).quotas[0].used == 100


def test_cost_quota_sums_cents(tracker: Tracker) -> None:
    tracker.quotas.create(name="c", metric="total_cost_cents", limit_value=100, period="month")
    use(tracker, cost_cents=60.5)
    assert use(tracker, cost_cents=39.5).quotas[0].used == 100
    error = quota_denied(tracker, cost_cents=0.25)
    assert error.headers["X-Quota-Metric"] == "total_cost_cents"
    assert use(tracker).quotas[0].remaining == 0


# --- all or nothing -----------------------------------------------------------------------------


def test_quota_denial_leaves_rate_limit_tokens_untouched(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    for _ in range(3):
        error = quota_denied(tracker)
        assert error.body.rate_limits[0].remaining == 4
    assert remaining(tracker) == [4]
    assert tracker.ledger.event_count() == 1


def test_rate_denial_leaves_quotas_untouched(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=1, window="minute")
    q = tracker.quotas.create(name="t", metric="total_tokens", limit_value=1000, period="day")
    use(tracker, total_tokens=100)
    error = rate_denied(tracker, total_tokens=100)
    assert error.body.quotas[0].used == 100
    assert used(tracker) == [100]
    assert tracker.ledger.counters() == {(q.id, "[]", TODAY): 100}
    assert tracker.ledger.event_count() == 1


def test_one_denying_rate_limit_charges_none_of_the_others(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="wide", limit_value=5, window="minute")
    tracker.rate_limits.create(
        name="narrow", limit_value=1, window="minute", dimension_filters={"model": "x"}
    )
    use(tracker, model="x")
    rate_denied(tracker, model="x")
    rate_denied(tracker, model="x")
    assert remaining(tracker, model="x") == [4, 0]


# --- idempotency --------------------------------------------------------------------------------


def test_repeat_returns_the_first_response_and_changes_nothing(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=3, window="minute")
    tracker.quotas.create(name="d", metric="total_tokens", limit_value=1000, period="day")
    first = use(tracker, total_tokens=10, idempotency_key="req_1")
    second = use(tracker, total_tokens=500, idempotency_key="req_1")
    assert second.id == first.id
    assert second.model_dump() == first.model_dump()
    assert second.headers == first.headers
    assert tracker.ledger.event_count() == 1
    assert remaining(tracker) == [2]
    assert used(tracker) == [10]


def test_repeat_is_answered_even_when_limits_would_now_deny(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    first = use(tracker, idempotency_key="k")
    assert use(tracker, idempotency_key="k").id == first.id
    rate_denied(tracker, idempotency_key="other")


def test_key_whose_first_try_was_denied_is_judged_afresh(
    tracker: Tracker, clock: ManualClock
) -> None:
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    quota_denied(tracker, idempotency_key="k")
    clock.set(MIDNIGHT)
    admitted = use(tracker, idempotency_key="k")
    assert use(tracker, idempotency_key="k").id == admitted.id
    assert tracker.ledger.event_count() == 2


def test_ingest_then_usage_with_the_same_key(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    ingested = tracker.events.ingest(customer_id="c", event_type="e", idempotency_key="k")
    tracked = tracker.usage(customer_id="c", event_type="e", idempotency_key="k")
    assert tracked.id == ingested.id
    assert tracker.ledger.event_count() == 1
    assert remaining(tracker) == [1]


def test_usage_then_ingest_with_the_same_key(tracker: Tracker) -> None:
    tracked = use(tracker, idempotency_key="k")
    assert tracker.events.ingest(customer_id="x", event_type="y", idempotency_key="k").id == (
        tracked.id
    )
    assert tracker.ledger.event_count() == 1


# --- disabled, deleted, updated limits ----------------------------------------------------------


def test_disabled_rate_limit_is_neither_enforced_nor_charged(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=2, window="minute", enabled=False)
    for _ in range(5):
        assert use(tracker).rate_limits == []
    assert tracker.rate_limits.check({"customer_id": "cust_1"}).rate_limits == []
    assert tracker.rate_limits.update(rl.id, enabled=True).enabled is True
    assert use(tracker).rate_limits[0].remaining == 1
    use(tracker)
    rate_denied(tracker)


def test_disabling_keeps_the_bucket(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=2, window="minute")
    use(tracker)
    tracker.rate_limits.update(rl.id, enabled=False)
    for _ in range(3):
        use(tracker)
    tracker.rate_limits.update(rl.id, enabled=True)
    assert use(tracker).rate_limits[0].remaining == 0
    rate_denied(tracker)


def test_deleted_rate_limit_stops_at_once(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=1, window="hour")
    use(tracker)
    rate_denied(tracker)
    tracker.rate_limits.delete(rl.id)
    assert use(tracker).rate_limits == []
    assert tracker.rate_limits.list().data == []


def test_deleted_quota_stops_at_once(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    use(tracker)
    quota_denied(tracker)
    tracker.quotas.delete(q.id)
    assert use(tracker).quotas == []
    assert tracker.ledger.counters() == {}


def test_a_reshaped_quota_matches_by_its_new_shape_at_once(tracker: Tracker) -> None:
    q = tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=100,
        period="hour",
        dimension_filters={"model": "a"},
        per=["customer_id"],
    )
    assert len(use(tracker, model="a").quotas) == 1
    assert use(tracker, model="b").quotas == []
    hourly = use(tracker, model="a").quotas[0].reset
    tracker.quotas.update(q.id, dimension_filters={"model": "b"}, per=[], period="day")
    assert use(tracker, model="a").quotas == []
    (status,) = use(tracker, "cust_2", model="b").quotas
    # Rebuilt from the events: both model-b events, whichever customer sent them.
    assert status.used == 2
    assert status.reset is not None and hourly is not None
    assert status.reset > hourly
    tracker.quotas.delete(q.id)
    assert use(tracker, model="b").quotas == []


def test_raising_a_rate_limit_starts_its_buckets_full(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    use(tracker)
    rate_denied(tracker)
    updated = tracker.rate_limits.update(rl.id, limit_value=3)
    assert updated.limit_value == 3
    assert [use(tracker).rate_limits[0].remaining for _ in range(3)] == [2, 1, 0]
    rate_denied(tracker)


def test_changing_a_window_starts_buckets_afresh(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    use(tracker)
    tracker.rate_limits.update(rl.id, window="1h")
    assert use(tracker).rate_limits[0].window == "1h"
    assert rate_denied(tracker).retry_after == HOUR


def test_renaming_a_rate_limit_keeps_its_buckets(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    use(tracker)
    tracker.rate_limits.update(rl.id, name="renamed")
    assert rate_denied(tracker).body.rate_limits[0].name == "renamed"


def test_raising_a_quota_limit_keeps_its_counters(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    use(tracker)
    quota_denied(tracker)
    tracker.quotas.update(q.id, limit_value=2)
    assert use(tracker).quotas[0].used == 2
    quota_denied(tracker)
    tracker.quotas.update(q.id, name="renamed")
    assert quota_denied(tracker).body.quotas[0].name == "renamed"


def test_lowering_a_quota_below_its_usage_denies(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=5, period="day")
    for _ in range(4):
        use(tracker)
    tracker.quotas.update(q.id, limit_value=3)
    status = tracker.quotas.check({}).quotas[0]
    assert (status.used, status.remaining, status.exceeded) == (4, 0, True)
    assert quota_denied(tracker).body.quotas[0].remaining == 0


def test_changing_quota_filters_recounts_from_the_ledger(tracker: Tracker) -> None:
    q = tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=2,
        period="day",
        dimension_filters={"model": "gpt-4"},
    )
    use(tracker, model="gpt-4")
    use(tracker, model="claude")
    use(tracker, model="claude")
    assert used(tracker, model="gpt-4") == [1]
    tracker.quotas.update(q.id, dimension_filters={"model": "claude"})
    assert used(tracker, model="claude") == [2]
    quota_denied(tracker, model="claude")
    assert use(tracker, model="gpt-4").quotas == []


def test_changing_quota_period_recounts_from_the_ledger(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=5, period="week")
    use(tracker, timestamp="2026-11-24T12:00:00Z")
    use(tracker)
    assert used(tracker) == [2]
    tracker.quotas.update(q.id, period="day")
    assert used(tracker) == [1]


def test_clearing_quota_filters_makes_it_match_every_event(tracker: Tracker) -> None:
    q = tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=1,
        period="day",
        dimension_filters={"model": "gpt-4"},
    )
    use(tracker, model="claude")
    updated = tracker.quotas.update(q.id, dimension_filters={})
    assert updated.dimension_filters == {}
    assert tracker.quotas.get(q.id).dimension_filters == {}
    quota_denied(tracker, model="claude")


def test_clearing_quota_per_makes_one_shared_counter(tracker: Tracker) -> None:
    q = tracker.quotas.create(
        name="q", metric="total_events", limit_value=1, period="day", per=["customer_id"]
    )
    use(tracker, "a")
    assert tracker.quotas.update(q.id, per=[]).per == []
    quota_denied(tracker, "b")


def test_clearing_rate_limit_filters_makes_it_match_every_event(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(
        name="r", limit_value=1, window="minute", dimension_filters={"model": "gpt-4"}
    )
    assert tracker.rate_limits.update(rl.id, dimension_filters={}).dimension_filters == {}
    use(tracker, model="claude")
    rate_denied(tracker, model="claude")


def test_update_stamps_updated_at_only(tracker: Tracker, clock: ManualClock) -> None:
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    rl = tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    clock.advance(90)
    q2 = tracker.quotas.update(q.id, name="q2")
    rl2 = tracker.rate_limits.update(rl.id, name="r2")
    for before, after in ((q, q2), (rl, rl2)):
        assert after.created_at == before.created_at == utc(START)
        assert after.updated_at == utc(START + 90)
    assert tracker.quotas.get(q.id).name == "q2"
    assert tracker.rate_limits.get(rl.id).name == "r2"


# --- headers and Retry-After ------------------------------------------------------------------


def test_headers_on_201(tracker: Tracker) -> None:
    assert use(tracker).headers == {}
    tracker.rate_limits.create(name="rpm", limit_value=10, window="minute")
    assert use(tracker).headers == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "9",
        "X-RateLimit-Reset": str(S + 6),
    }


def test_headers_on_201_describe_the_limit_with_least_remaining(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="wide", limit_value=10, window="minute")
    tracker.rate_limits.create(name="narrow", limit_value=3, window="minute")
    assert use(tracker).headers == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": str(S + 20),
    }


def test_rate_limit_429(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    use(tracker)
    use(tracker)
    error = rate_denied(tracker)
    assert isinstance(error, LimitExceeded)
    assert isinstance(error, APIError)
    assert error.status == error.status_code == 429
    assert error.status_text == "Too Many Requests"
    assert error.retry_after == 30
    assert error.headers == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(S + 60),
        "Retry-After": "30",
    }
    assert error.body.model_dump(mode="json", by_alias=True) == {
        "error": "Rate limit exceeded",
        "allowed": False,
        "rateLimits": [
            {
                "id": rl.id,
                "name": "rpm",
                "limit": 2,
                "remaining": 0,
                "reset": S + 60,
                "window": "minute",
                "exceeded": True,
            }
        ],
        "quotas": [],
        "retryAfter": 30,
    }
    assert error.response == error.body.model_dump(mode="json", by_alias=True)
    assert tracker.ledger.event_count() == 2


def test_rate_limit_429_describes_the_longest_wait(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="per-second", limit_value=1, window="second")
    tracker.rate_limits.create(name="per-hour", limit_value=1, window="hour")
    use(tracker)
    error = rate_denied(tracker)
    assert error.retry_after == HOUR
    assert error.headers == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(S + HOUR),
        "Retry-After": str(HOUR),
    }
    assert [s.exceeded for s in error.body.rate_limits] == [True, True]


def test_quota_429(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
    q = tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    error = quota_denied(tracker)
    assert isinstance(error, LimitExceeded)
    assert error.status_code == 429
    assert error.retry_after == MIDNIGHT - S == 14 * HOUR
    assert error.headers == {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": str(S + 12),
        "Retry-After": str(14 * HOUR),
        "X-Quota-Reset": str(MIDNIGHT),
        "X-Quota-Period": "day",
        "X-Quota-Metric": "total_events",
    }
    body = error.body.model_dump(mode="json", by_alias=True)
    assert body["error"] == "Quota exceeded"
    assert body["allowed"] is False
    assert body["retryAfter"] == 14 * HOUR
    assert body["quotas"] == [
        {
            "id": q.id,
            "name": "d",
            "metric": "total_events",
            "period": "day",
            "limit": 1,
            "used": 1,
            "remaining": 0,
            "reset": MIDNIGHT,
            "exceeded": True,
        }
    ]
    assert body["rateLimits"][0]["exceeded"] is False


def test_quota_429_without_rate_limits_has_only_quota_headers(tracker: Tracker) -> None:
    tracker.quotas.create(name="t", metric="total_tokens", limit_value=10, period="hour")
    error = quota_denied(tracker, total_tokens=11)
    assert error.headers == {
        "Retry-After": str(HOUR),
        "X-Quota-Reset": str(S + HOUR),
        "X-Quota-Period": "hour",
        "X-Quota-Metric": "total_tokens",
    }


def test_quota_429_describes_the_quota_whose_period_ends_last(tracker: Tracker) -> None:
    tracker.quotas.create(name="h", metric="total_events", limit_value=1, period="hour")
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    error = quota_denied(tracker)
    assert error.headers["X-Quota-Period"] == "day"
    assert error.headers["X-Quota-Reset"] == str(MIDNIGHT)
    assert error.retry_after == MIDNIGHT - S


def test_rate_limit_is_reported_when_both_deny(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    use(tracker)
    error = rate_denied(tracker)
    assert error.body.error == "Rate limit exceeded"
    assert error.body.quotas[0].exceeded is True
    assert "X-Quota-Period" not in error.headers


def test_retry_after_after_a_backwards_clock_counts_from_now(
    tracker: Tracker, clock: ManualClock
) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    use(tracker)
    use(tracker)
    clock.advance(-30)
    # Nothing refills before START again; one token is back at START + 30, 60 s from now.
    error = rate_denied(tracker)
    assert error.retry_after == 60
    assert error.headers["Retry-After"] == "60"


def test_waiting_out_retry_after_from_a_stepped_back_clock_suffices(
    tracker: Tracker, clock: ManualClock
) -> None:
    """Found by a deep property run: from a clock stepped back a fraction of a second,
    Retry-After fell a second short by float noise (the rounding of two instants near
    1.8e9), and a caller who waited it out was denied again."""
    tracker.rate_limits.create(name="tps", limit_value=5, window="second", metric="total_tokens")
    use(tracker, total_tokens=0)
    clock.advance(-0.015)
    use(tracker, total_tokens=3)
    clock.advance(-0.385)
    error = rate_denied(tracker, total_tokens=5)
    assert error.retry_after == 2  # exactly 1.0 s away, give or take 2.4e-7 s
    clock.advance(error.retry_after)
    use(tracker, total_tokens=5)


def test_waiting_out_retry_after_suffices_when_the_deficit_is_below_float_precision(
    tracker: Tracker, clock: ManualClock
) -> None:
    """Found in review of the fix above: a deficit smaller than the instants' precision
    put the retry instant exactly on the bucket's own, where nothing refills, and the
    second added for noise was skipped."""
    tracker.rate_limits.create(name="tps", limit_value=1000, window="second", metric="total_tokens")
    clock.set(1_800_000_003.001)
    use(tracker, total_tokens=1000)  # drained
    clock.advance(0.001)  # about a token back (0.99993 in floats)
    use(tracker, total_tokens=0)  # the bucket's instant is now
    clock.advance(-5)
    error = rate_denied(tracker, total_tokens=1)
    clock.advance(error.retry_after)
    use(tracker, total_tokens=1)


def test_backwards_clock_mints_no_tokens(tracker: Tracker, clock: ManualClock) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    use(tracker)
    use(tracker)
    clock.advance(-600)
    rate_denied(tracker)
    clock.set(START + 29)
    rate_denied(tracker)
    clock.set(START + 30)
    use(tracker)


# --- quotas count every recorded event ----------------------------------------------------------


def test_quota_counts_events_recorded_before_it_was_created(tracker: Tracker) -> None:
    tracker.events.ingest(customer_id="cust_1", event_type="e")
    tracker.events.ingest(customer_id="cust_1", event_type="e", timestamp="2026-11-24T12:00:00Z")
    tracker.events.ingest(customer_id="cust_2", event_type="e")
    use(tracker)
    tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=3,
        period="day",
        dimension_filters={"customer_id": "cust_1"},
    )
    assert used(tracker, customer_id="cust_1") == [2]
    assert use(tracker).quotas[0].used == 3
    quota_denied(tracker)


def test_new_quota_counts_earlier_events_in_every_period(tracker: Tracker) -> None:
    tracker.events.ingest(customer_id="c", event_type="e", timestamp="2026-11-24T12:00:00Z")
    tracker.events.ingest(customer_id="c", event_type="e", timestamp="2026-10-02T12:00:00Z")
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    assert used(tracker) == [0]
    quota_denied(tracker, timestamp="2026-11-24T18:00:00Z")
    quota_denied(tracker, timestamp="2026-10-02T00:00:00Z")
    use(tracker, timestamp="2026-10-03T00:00:00Z")
    use(tracker)


def test_ingested_events_are_never_denied_but_count(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    tracker.quotas.create(name="q", metric="total_events", limit_value=2, period="day")
    ids = [tracker.events.ingest(customer_id="c", event_type="e").id for _ in range(3)]
    assert all(i.startswith("evt_") for i in ids)
    assert len(set(ids)) == 3
    assert used(tracker) == [3]
    assert tracker.quotas.check({}).allowed is False
    # Ingestion charges no rate limit.
    assert remaining(tracker) == [1]
    quota_denied(tracker)


# --- events.ingest / batch ----------------------------------------------------------------------


def test_batch_records_all_and_answers_count(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="q", metric="total_tokens", limit_value=10, period="day")
    tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    result = tracker.events.batch(
        [
            {"customerId": "a", "eventType": "e", "totalTokens": 8},
            {"customer_id": "b", "event_type": "e", "total_tokens": 8},
            TrackPostRequest(customer_id="c", event_type="e"),
        ]
    )
    assert result.count == 3
    assert tracker.ledger.event_count() == 3
    assert tracker.ledger.counters() == {(q.id, "[]", TODAY): 16}
    assert remaining(tracker) == [1]


def test_batch_accepts_a_batch_request_model(tracker: Tracker) -> None:
    request = EventBatchRequest.model_validate(
        {"events": [{"customerId": "a", "eventType": "e"}, {"customerId": "b", "eventType": "e"}]}
    )
    assert tracker.events.batch(request).count == 2


def test_batch_holds_up_to_1000_events(tracker: Tracker) -> None:
    events = [{"customerId": f"c{i}", "eventType": "e"} for i in range(1000)]
    assert tracker.events.batch(events).count == 1000
    assert tracker.ledger.event_count() == 1000


@pytest.mark.parametrize("size", [0, 1001])
def test_batch_size_outside_1_to_1000_is_a_400(tracker: Tracker, size: int) -> None:
    events = [{"customerId": "c", "eventType": "e"}] * size
    with pytest.raises(InvalidRequestError) as info:
        tracker.events.batch(events)
    assert info.value.status_code == 400
    assert "events" in info.value.message
    assert tracker.ledger.event_count() == 0


@pytest.mark.parametrize(
    ("bad", "index", "where"),
    [
        ({"customerId": "", "eventType": "e"}, 3, "events[3].customerId"),
        ({"customerId": "c", "eventType": "e", "inputTokens": -1}, 0, "events[0].inputTokens"),
        ({"customerId": "c"}, 4, "events[4].eventType"),
        ({"customerId": "c", "eventType": "e", "bogus": 1}, 1, "events[1].bogus"),
    ],
)
def test_one_invalid_event_rejects_the_whole_batch(
    tracker: Tracker, bad: dict[str, Any], index: int, where: str
) -> None:
    tracker.quotas.create(name="q", metric="total_events", limit_value=100, period="day")
    events: list[dict[str, Any]] = [{"customerId": "c", "eventType": "e"}] * 5
    events[index] = bad
    with pytest.raises(InvalidRequestError) as info:
        tracker.events.batch(events)
    assert where in info.value.message
    assert tracker.ledger.event_count() == 0
    assert tracker.ledger.counters() == {}


def test_batch_with_a_non_event_item_names_it(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tracker.events.batch([{"customerId": "c", "eventType": "e"}, "oops"])  # type: ignore[list-item]
    assert "events[1]" in info.value.message
    assert tracker.ledger.event_count() == 0


def test_batch_does_not_count_repeated_idempotency_keys(tracker: Tracker) -> None:
    first = tracker.events.ingest(customer_id="c", event_type="e", idempotency_key="k1")
    result = tracker.events.batch(
        [
            {"customerId": "c", "eventType": "e", "idempotencyKey": "k1"},
            {"customerId": "c", "eventType": "e", "idempotencyKey": "k2"},
            {"customerId": "c", "eventType": "e", "idempotencyKey": "k2"},
            {"customerId": "c", "eventType": "e"},
        ]
    )
    assert result.count == 2
    assert tracker.ledger.event_count() == 3
    assert tracker.events.ingest(customer_id="c", event_type="e", idempotency_key="k1").id == (
        first.id
    )


# --- events.list ----------------------------------------------------------------------------


@pytest.fixture
def recorded(tracker: Tracker) -> list[str]:
    """Five events, oldest first: their ids."""
    specs: list[dict[str, Any]] = [
        {
            "customer_id": "a",
            "event_type": "model_call",
            "model": "gpt-4",
            "timestamp": "2026-11-24T08:00:00Z",
        },
        {
            "customer_id": "b",
            "event_type": "model_call",
            "model": "claude",
            "timestamp": "2026-11-25T08:00:00Z",
        },
        {
            "customer_id": "a",
            "event_type": "embedding",
            "model": "gpt-4",
            "timestamp": "2026-11-25T09:00:00Z",
        },
        {"customer_id": "a", "event_type": "model_call", "model": "claude"},
        {
            "customer_id": "b",
            "event_type": "tool_call",
            "input_tokens": 3,
            "latency_ms": 40,
            "cost_cents": 0.5,
            "provider": "openai",
            "properties": {"n": 1, "team": "eng"},
        },
    ]
    return [tracker.events.ingest(spec).id for spec in specs]


def test_list_answers_most_recently_recorded_first(tracker: Tracker, recorded: list[str]) -> None:
    page = tracker.events.list()
    assert [e.id for e in page.data] == recorded[::-1]
    assert page.has_more is False
    assert page.next_cursor is None
    last = page.data[0]
    assert last.model_dump(mode="json", by_alias=True) == {
        "id": recorded[4],
        "createdAt": "2026-11-25T10:00:00Z",
        "customerId": "b",
        "eventType": "tool_call",
        "model": None,
        "provider": "openai",
        "inputTokens": 3,
        "outputTokens": None,
        "totalTokens": 3,
        "latencyMs": 40,
        "costCents": 0.5,
        "properties": {"n": 1, "team": "eng"},
    }


@pytest.mark.parametrize(
    ("filters", "indexes"),
    [
        ({"customer_id": "a"}, [3, 2, 0]),
        ({"customer_id": "b"}, [4, 1]),
        ({"event_type": "model_call"}, [3, 1, 0]),
        ({"model": "gpt-4"}, [2, 0]),
        ({"customer_id": "a", "model": "claude"}, [3]),
        ({"customer_id": "zzz"}, []),
        ({"start_date": "2026-11-25"}, [4, 3, 2, 1]),
        ({"end_date": datetime(2026, 11, 25, 9, tzinfo=timezone.utc)}, [1, 0]),
        ({"start_date": "2026-11-25T08:00:00Z", "end_date": "2026-11-25T10:00:00Z"}, [2, 1]),
        ({"end_date": date(2026, 11, 24)}, [0]),
    ],
)
def test_list_filters(
    tracker: Tracker, recorded: list[str], filters: dict[str, Any], indexes: list[int]
) -> None:
    assert [e.id for e in tracker.events.list(**filters).data] == [recorded[i] for i in indexes]


def test_list_pages_with_a_cursor(tracker: Tracker, recorded: list[str]) -> None:
    newest_first = recorded[::-1]
    first = tracker.events.list(limit=2)
    assert [e.id for e in first.data] == newest_first[:2]
    assert first.has_more is True
    assert first.next_cursor == newest_first[1]
    second = tracker.events.list(limit=2, cursor=first.next_cursor)
    assert [e.id for e in second.data] == newest_first[2:4]
    assert second.has_more is True
    third = tracker.events.list(limit=2, cursor=second.next_cursor)
    assert [e.id for e in third.data] == newest_first[4:]
    assert third.has_more is False
    assert third.next_cursor is None


def test_list_pages_within_a_filter(tracker: Tracker, recorded: list[str]) -> None:
    first = tracker.events.list(customer_id="a", limit=2)
    assert [e.id for e in first.data] == [recorded[3], recorded[2]]
    rest = tracker.events.list(customer_id="a", limit=2, cursor=first.next_cursor)
    assert [e.id for e in rest.data] == [recorded[0]]
    assert rest.has_more is False


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_list_limit_outside_1_to_100_is_a_400(tracker: Tracker, limit: int) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.events.list(limit=limit)


def test_list_unknown_cursor_is_a_400(tracker: Tracker, recorded: list[str]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tracker.events.list(cursor="evt_nope")
    assert info.value.status_code == 400


# --- customers.get_usage --------------------------------------------------------------------


@pytest.fixture
def usage_history(tracker: Tracker) -> Tracker:
    for spec in (
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_cents": 1.5,
            "timestamp": "2026-11-24T12:00:00Z",
        },
        {"input_tokens": 100, "output_tokens": 50, "cost_cents": 2.5},
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cost_cents": 1,
            "timestamp": "2026-11-26T09:00:00Z",
        },
    ):
        tracker.events.ingest(customer_id="cust_1", event_type="model_call", **spec)
    tracker.events.ingest(customer_id="cust_2", event_type="model_call", input_tokens=999)
    return tracker


def test_customer_usage_totals(usage_history: Tracker) -> None:
    usage = usage_history.customers.get_usage("cust_1")
    assert usage.model_dump(mode="json", by_alias=True) == {
        "customerId": "cust_1",
        "totalEvents": 3,
        "totalTokens": 167,
        "totalInputTokens": 111,
        "totalOutputTokens": 56,
        "totalCostCents": 5,
    }


@pytest.mark.parametrize(
    ("start", "end", "events", "tokens"),
    [
        (date(2026, 11, 25), None, 2, 152),
        (None, date(2026, 11, 25), 2, 165),
        (date(2026, 11, 25), date(2026, 11, 25), 1, 150),
        (None, datetime(2026, 11, 25, 10, tzinfo=timezone.utc), 1, 15),
        (datetime(2026, 11, 25, 10, tzinfo=timezone.utc), None, 2, 152),
        ("2026-11-24", "2026-11-24", 1, 15),
        ("2026-11-25T10:00:00Z", "2026-11-26T09:00:00Z", 1, 150),
        ("2026-11-25T10:00:00", "2026-11-26T09:00:01", 2, 152),
        (date(2026, 11, 27), None, 0, 0),
    ],
)
def test_customer_usage_date_ranges(
    usage_history: Tracker,
    start: date | datetime | str | None,
    end: date | datetime | str | None,
    events: int,
    tokens: int,
) -> None:
    usage = usage_history.customers.get_usage("cust_1", start, end)
    assert (usage.total_events, usage.total_tokens) == (events, tokens)


def test_unknown_customer_has_zero_usage(usage_history: Tracker) -> None:
    usage = usage_history.customers.get_usage("nobody")
    assert usage.customer_id == "nobody"
    assert (usage.total_events, usage.total_tokens, usage.total_cost_cents) == (0, 0, 0)


def test_customer_usage_bad_input_is_a_400(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.customers.get_usage("")
    with pytest.raises(InvalidRequestError) as info:
        tracker.customers.get_usage("c", "last tuesday")
    assert "startDate" in info.value.message


# --- quotas and rate limits CRUD ----------------------------------------------------------------


def test_quota_create_forms_and_fields(tracker: Tracker) -> None:
    by_kwargs = tracker.quotas.create(
        name="a", metric="total_tokens", limit_value=10, period="day", per=["customer_id"]
    )
    by_model = tracker.quotas.create(
        QuotaCreate(name="b", metric="total_events", limit_value=5, period="week")
    )
    by_dict = tracker.quotas.create(
        {
            "name": "c",
            "metric": "total_cost_cents",
            "limitValue": 7,
            "period": "month",
            "dimensionFilters": {"model": ["x", "y"]},
        }
    )
    for quota in (by_kwargs, by_model, by_dict):
        assert quota.id.startswith("qta_")
        assert quota.project_id == "proj_local"
        assert quota.created_at == quota.updated_at == utc(START)
        assert tracker.quotas.get(quota.id) == quota
    assert by_kwargs.per == ["customer_id"]
    assert by_dict.dimension_filters == {"model": ["x", "y"]}
    assert by_dict.limit_value == 7
    assert len({by_kwargs.id, by_model.id, by_dict.id}) == 3


def test_rate_limit_create_forms_and_fields(tracker: Tracker) -> None:
    by_kwargs = tracker.rate_limits.create(name="a", limit_value=60, window="minute")
    by_model = tracker.rate_limits.create(RateLimitCreate(name="b", limit_value=100, window="1h"))
    by_dict = tracker.rate_limits.create(
        {"name": "c", "limitValue": 3, "window": "30s", "enabled": False}
    )
    for limit in (by_kwargs, by_model, by_dict):
        assert limit.id.startswith("rl_")
        assert limit.project_id == "proj_local"
        assert limit.created_at == utc(START)
        assert tracker.rate_limits.get(limit.id) == limit
    assert [by_kwargs.window, by_model.window, by_dict.window] == ["minute", "1h", "30s"]
    assert [by_kwargs.enabled, by_dict.enabled] == [True, False]
    dumped = by_model.model_dump(mode="json", by_alias=True)
    assert "per" not in dumped
    assert "metric" not in dumped


def test_bad_definitions_are_400s_and_create_nothing(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tracker.quotas.create(name="q", metric="total_events", limit_value=0, period="day")
    assert "limitValue" in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        tracker.rate_limits.create(name="r", limit_value=1, window="fortnight")
    assert "window" in info.value.message
    assert tracker.quotas.list().data == []
    assert tracker.rate_limits.list().data == []
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    with pytest.raises(InvalidRequestError):
        tracker.quotas.update(q.id, period="year")
    assert tracker.quotas.get(q.id).period == "day"


def test_quota_list_pages(tracker: Tracker) -> None:
    ids = [
        tracker.quotas.create(name=f"q{i}", metric="total_events", limit_value=1, period="day").id
        for i in range(5)
    ]
    assert [q.id for q in tracker.quotas.list().data] == ids
    first = tracker.quotas.list(limit=2)
    assert [q.id for q in first.data] == ids[:2]
    assert (first.has_more, first.next_cursor) == (True, ids[1])
    second = tracker.quotas.list(limit=2, cursor=first.next_cursor)
    assert [q.id for q in second.data] == ids[2:4]
    third = tracker.quotas.list(limit=2, cursor=second.next_cursor)
    assert [q.id for q in third.data] == ids[4:]
    assert (third.has_more, third.next_cursor) == (False, None)
    with pytest.raises(InvalidRequestError):
        tracker.quotas.list(cursor="qta_nope")
    with pytest.raises(InvalidRequestError):
        tracker.quotas.list(limit=101)


def test_rate_limit_list_pages(tracker: Tracker) -> None:
    ids = [
        tracker.rate_limits.create(name=f"r{i}", limit_value=1, window="minute").id
        for i in range(3)
    ]
    first = tracker.rate_limits.list(limit=2)
    assert [r.id for r in first.data] == ids[:2]
    assert first.has_more is True
    rest = tracker.rate_limits.list(limit=2, cursor=first.next_cursor)
    assert [r.id for r in rest.data] == ids[2:]
    assert rest.has_more is False
    with pytest.raises(InvalidRequestError):
        tracker.rate_limits.list(limit=0)


def test_delete_removes_from_get_and_list(tracker: Tracker) -> None:
    q = tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    rl = tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    tracker.quotas.delete(q.id)
    tracker.rate_limits.delete(rl.id)
    assert tracker.quotas.list().data == []
    assert tracker.rate_limits.list().data == []
    with pytest.raises(NotFoundError):
        tracker.quotas.get(q.id)
    with pytest.raises(NotFoundError):
        tracker.rate_limits.delete(rl.id)


@pytest.mark.parametrize("kind", ["quotas", "rate_limits"])
@pytest.mark.parametrize("action", ["get", "update", "delete"])
def test_unknown_id_is_a_404(tracker: Tracker, kind: str, action: str) -> None:
    resource = getattr(tracker, kind)
    args: tuple[Any, ...] = ("nope_123",)
    with pytest.raises(NotFoundError) as info:
        if action == "update":
            resource.update(*args, name="x")
        else:
            getattr(resource, action)(*args)
    error = info.value
    assert isinstance(error, APIError)
    assert error.status_code == error.status == 404
    assert error.status_text == "Not Found"
    # The body is the hosted one; the detail stays in the message.
    assert error.response == {"error": "Resource not found"}
    assert "nope_123" in error.message and "nope_123" in str(error)


# --- checks (non-consuming) -------------------------------------------------------------------


def test_rate_limit_check_consumes_nothing(tracker: Tracker) -> None:
    rl = tracker.rate_limits.create(name="r", limit_value=2, window="minute", per=["customer_id"])
    for _ in range(5):
        answer = tracker.rate_limits.check({"customer_id": "a"})
        assert answer.allowed is True
        assert answer.model_dump(mode="json", by_alias=True)["rateLimits"] == [
            {
                "id": rl.id,
                "name": "r",
                "limit": 2,
                "remaining": 2,
                "reset": S,
                "window": "minute",
                "exceeded": False,
            }
        ]
    use(tracker, "a")
    use(tracker, "a")
    denied = tracker.rate_limits.check({"customer_id": "a"})
    assert denied.allowed is False
    assert (denied.rate_limits[0].remaining, denied.rate_limits[0].exceeded) == (0, True)
    assert denied.rate_limits[0].reset == S + 60
    assert tracker.rate_limits.check({"customer_id": "b"}).allowed is True
    # Lists only the limits that match.
    assert tracker.rate_limits.check({"model": "gpt-4"}).rate_limits == []


def test_quota_check_consumes_nothing(tracker: Tracker) -> None:
    tracker.quotas.create(name="t", metric="total_tokens", limit_value=100, period="day")
    for _ in range(3):
        answer = tracker.quotas.check({"customer_id": "cust_1"})
        assert answer.allowed is True
        status = answer.quotas[0]
        assert (status.used, status.remaining, status.reset, status.exceeded) == (
            0,
            100,
            MIDNIGHT,
            False,
        )
    use(tracker, total_tokens=99)
    assert tracker.quotas.check({}).quotas[0].exceeded is False
    use(tracker, total_tokens=1)
    full = tracker.quotas.check({})
    assert full.allowed is False
    assert (full.quotas[0].used, full.quotas[0].remaining, full.quotas[0].exceeded) == (
        100,
        0,
        True,
    )


def test_quota_check_uses_the_current_period(tracker: Tracker, clock: ManualClock) -> None:
    tracker.quotas.create(name="d", metric="total_events", limit_value=1, period="day")
    use(tracker)
    assert tracker.quotas.check({}).allowed is False
    clock.set(MIDNIGHT)
    assert tracker.quotas.check({}).allowed is True


@pytest.mark.parametrize("dims", [{"customer_id": 1}, {"model": None}, "customer_id"])
def test_checks_refuse_non_string_dimensions(tracker: Tracker, dims: Any) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.rate_limits.check(dims)
    with pytest.raises(InvalidRequestError):
        tracker.quotas.check(dims)


# --- lifecycle ----------------------------------------------------------------------------------


def test_reopened_file_ledger_continues(
    file_tracker: Tracker, clock: ManualClock, ledger_path: Path
) -> None:
    rl = file_tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    off = file_tracker.rate_limits.create(
        name="off",
        limit_value=1,
        window="30s",
        enabled=False,
        metric="total_tokens",
        dimension_filters={"model": ["a", "b"]},
    )
    q = file_tracker.quotas.create(
        name="q", metric="total_events", limit_value=2, period="day", per=["customer_id"]
    )
    first = use(file_tracker, idempotency_key="k")
    file_tracker.close()
    with Tracker(ledger_path, clock=clock) as reopened:
        assert [r.id for r in reopened.rate_limits.list().data] == [rl.id, off.id]
        assert reopened.rate_limits.get(off.id) == off
        assert reopened.quotas.get(q.id) == q
        assert used(reopened, customer_id="cust_1") == [1]
        assert [e.id for e in reopened.events.list().data] == [first.id]
        assert use(reopened, idempotency_key="k").id == first.id
        # Buckets live in memory: a new Tracker starts them full.
        use(reopened)
        rate_denied(reopened)
        clock.advance(60)
        quota_denied(reopened)


def test_closed_tracker_refuses_calls(tracker: Tracker) -> None:
    tracker.close()
    with pytest.raises(LimitryError):
        use(tracker)


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-ledger.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    with pytest.raises(LedgerError):
        Tracker(path)
