"""Bad input anywhere in the public API is a clear APIError, never a raw exception."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from limitry_local import (
    APIError,
    InvalidRequestError,
    LimitryError,
    QuotaCheckRequest,
    RateLimitCheckRequest,
    Tracker,
    TrackPostRequest,
)


def test_a_request_mutated_after_construction_is_validated_again(tracker: Tracker) -> None:
    quota = tracker.quotas.create(
        name="tokens", metric="total_tokens", limit_value=100, period="day"
    )
    request = TrackPostRequest(customer_id="c", event_type="e", total_tokens=1)
    request.total_tokens = -1_000_000
    with pytest.raises(InvalidRequestError, match="totalTokens"):
        tracker.usage(request)
    assert tracker.ledger.event_count() == 0
    assert tracker.quotas.check({"customer_id": "c"}).quotas[0].used == 0
    assert tracker.quotas.get(quota.id).limit_value == 100


def test_a_request_with_unserialisable_properties_is_a_400(tracker: Tracker) -> None:
    request = TrackPostRequest(customer_id="c", event_type="e")
    request.properties["when"] = object()
    with pytest.raises(InvalidRequestError, match="properties"):
        tracker.usage(request)
    assert tracker.ledger.event_count() == 0


def test_a_constructed_request_missing_fields_is_a_400(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.usage(TrackPostRequest.model_construct(event_type="e"))  # type: ignore[call-arg]


def test_deeply_nested_properties_are_a_400(tracker: Tracker) -> None:
    nested: dict[str, Any] = {}
    for _ in range(5000):
        nested = {"x": nested}
    with pytest.raises(InvalidRequestError, match="properties"):
        tracker.usage(customer_id="c", event_type="e", properties=nested)


def test_a_defaulted_total_above_the_limit_is_a_400(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError, match="totalTokens"):
        tracker.usage(customer_id="c", event_type="e", input_tokens=10**12, output_tokens=10**12)


@pytest.mark.parametrize("bad_id", [{}, [], 3, None])
def test_ids_of_the_wrong_type_are_a_400(tracker: Tracker, bad_id: Any) -> None:
    for call in (
        tracker.quotas.get,
        tracker.quotas.delete,
        tracker.rate_limits.get,
        tracker.rate_limits.delete,
    ):
        with pytest.raises(InvalidRequestError, match="id"):
            call(bad_id)


@pytest.mark.parametrize(
    ("field", "value"),
    [("customer_id", {"a": 1}), ("event_type", 5), ("model", ["m"]), ("cursor", [1])],
)
def test_event_list_filters_of_the_wrong_type_are_a_400(
    tracker: Tracker, field: str, value: Any
) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.events.list(**{field: value})


def test_date_bounds_at_the_end_of_the_calendar_do_not_overflow(tracker: Tracker) -> None:
    tracker.usage(customer_id="c", event_type="e", input_tokens=5)
    assert tracker.customers.get_usage("c", None, date.max).total_tokens == 5
    assert tracker.customers.get_usage("c", None, "9999-12-31").total_events == 1
    assert len(tracker.events.list(end_date=date.max).data) == 1


def test_checks_accept_their_request_models(tracker: Tracker) -> None:
    tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
    tracker.rate_limits.create(name="r", limit_value=1, window="minute")
    tracker.usage(customer_id="c", event_type="e")
    quotas = tracker.quotas.check(QuotaCheckRequest(dimensions={"customer_id": "c"}))
    rates = tracker.rate_limits.check(RateLimitCheckRequest(dimensions={"customer_id": "c"}))
    assert quotas.allowed is False
    assert rates.allowed is False


def test_batch_accepts_the_wire_body(tracker: Tracker) -> None:
    body = {
        "events": [{"customerId": "c", "eventType": "e"}, {"customerId": "d", "eventType": "e"}]
    }
    assert tracker.events.batch(body).count == 2
    with pytest.raises(InvalidRequestError, match="events"):
        tracker.events.batch({})
    # A key the wire body does not have is named, not ignored.
    with pytest.raises(InvalidRequestError, match=r"^400 Bad Request: items: Extra inputs"):
        tracker.events.batch({"items": [], **body})
    assert tracker.ledger.event_count() == 2


def test_max_buckets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buckets"):
        Tracker(max_buckets=0)


@pytest.mark.parametrize("timeout", [-1, float("nan"), "5", True])
def test_timeout_must_be_seconds(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Tracker(timeout=timeout)


@pytest.mark.parametrize("reading", [-1.0, 253_402_300_800.0, float("nan")])
def test_a_clock_outside_the_event_time_range_is_a_clear_error(reading: float) -> None:
    # A plain callable: ManualClock itself refuses nan.
    with Tracker(clock=lambda: reading) as tracker:
        with pytest.raises(LimitryError, match="clock returned"):
            tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
        with pytest.raises(LimitryError, match="clock returned"):
            tracker.usage(customer_id="c", event_type="e")
        assert tracker.ledger.event_count() == 0


def test_errors_carry_the_hosted_client_attributes(tracker: Tracker) -> None:
    with pytest.raises(APIError) as caught:
        tracker.usage(customer_id="", event_type="e")
    error = caught.value
    assert (error.status, error.status_code, error.status_text) == (400, 400, "Bad Request")
    assert error.response == {"error": error.message}
    assert isinstance(error, ValueError)


LONE_SURROGATE = "\ud800"


@pytest.mark.parametrize(
    "event",
    [
        {"customer_id": LONE_SURROGATE, "event_type": "e"},
        {"customer_id": "c", "event_type": "e", "model": LONE_SURROGATE},
        {"customer_id": "c", "event_type": "e", "idempotency_key": LONE_SURROGATE},
        {"customer_id": "c", "event_type": "e", "properties": {"team": LONE_SURROGATE}},
        {"customer_id": "c", "event_type": "e", "properties": {LONE_SURROGATE: "x"}},
    ],
)
def test_text_that_cannot_be_stored_is_a_400(tracker: Tracker, event: dict[str, Any]) -> None:
    tracker.quotas.create(
        name="q", metric="total_events", limit_value=5, period="day", per=["customer_id"]
    )
    for call in (tracker.usage, tracker.events.ingest):
        with pytest.raises(InvalidRequestError):
            call(event)
    assert tracker.ledger.event_count() == 0


def test_reads_refuse_text_that_cannot_be_stored(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError):
        tracker.events.list(customer_id=LONE_SURROGATE)
    with pytest.raises(InvalidRequestError):
        tracker.customers.get_usage(LONE_SURROGATE)
    with pytest.raises(InvalidRequestError):
        tracker.quotas.check({"team": LONE_SURROGATE})
    with pytest.raises(InvalidRequestError):
        tracker.rate_limits.check({LONE_SURROGATE: "x"})


EVENT = {"customerId": "c", "eventType": "e"}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"provider": "p" * 257}, "provider"),
        ({"eventType": "e" * 257}, "eventType"),
        ({"idempotencyKey": "k" * 257}, "idempotencyKey"),
        ({"latencyMs": -1}, "latencyMs"),
        ({"latencyMs": 10**12 + 1}, "latencyMs"),
        ({"outputTokens": 10**12 + 1}, "outputTokens"),
        ({"totalTokens": -1}, "totalTokens"),
        ({"costCents": 10**9 + 1}, "costCents"),
        ({"costCents": True}, "costCents"),
        ({"properties": {"": "x"}}, "properties"),
        ({"properties": {"k" * 65: "x"}}, "properties"),
        ({"properties": {"k": "v" * 257}}, "properties"),
    ],
)
def test_each_bad_event_field_is_named(tracker: Tracker, bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        tracker.usage({**EVENT, **bad})
    assert tracker.ledger.event_count() == 0


RATE = {"name": "r", "limitValue": 5, "window": "minute"}
QUOTA = {"name": "q", "metric": "total_events", "limitValue": 5, "period": "day"}


@pytest.mark.parametrize(
    ("kind", "bad", "field"),
    [
        ("rate", {"metric": "total_cost_cents"}, "metric"),
        ("rate", {"enabled": "yes"}, "enabled"),
        ("rate", {"limitValue": 10**12 + 1}, "limitValue"),
        ("rate", {"name": "n" * 257}, "name"),
        ("quota", {"per": ["customer_id", "customer_id"]}, "per"),
        ("quota", {"per": [""]}, "per"),
        ("quota", {"dimensionFilters": {f"k{i}": "v" for i in range(17)}}, "dimensionFilters"),
        ("quota", {"dimensionFilters": {"model": []}}, "dimensionFilters"),
        (
            "quota",
            {"dimensionFilters": {"model": [str(i) for i in range(101)]}},
            "dimensionFilters",
        ),
        ("quota", {"dimensionFilters": {"": "v"}}, "dimensionFilters"),
        ("quota", {"metric": "requests"}, "metric"),
    ],
)
def test_each_bad_definition_field_is_named(
    tracker: Tracker, kind: str, bad: dict[str, Any], field: str
) -> None:
    create = tracker.rate_limits.create if kind == "rate" else tracker.quotas.create
    base = RATE if kind == "rate" else QUOTA
    with pytest.raises(InvalidRequestError, match=field):
        create({**base, **bad})
    assert tracker.rate_limits.list().data == []
    assert tracker.quotas.list().data == []


def test_an_update_with_none_leaves_the_field_unchanged(tracker: Tracker) -> None:
    quota = tracker.quotas.create(QUOTA)
    updated = tracker.quotas.update(quota.id, name=None, limit_value=7)
    assert (updated.name, updated.limit_value) == ("q", 7)
    limit = tracker.rate_limits.create(RATE)
    assert tracker.rate_limits.update(limit.id, enabled=None).enabled is True


def test_returned_rate_limits_are_copies(tracker: Tracker) -> None:
    limit = tracker.rate_limits.create(RATE)
    limit.limit_value = 1
    tracker.rate_limits.update(limit.id, name="renamed").limit_value = 1
    tracker.rate_limits.list().data[0].enabled = False
    statuses = [tracker.usage(EVENT).rate_limits[0].remaining for _ in range(2)]
    assert statuses == [4, 3]
