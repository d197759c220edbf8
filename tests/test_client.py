"""The async Client: the hosted client's names and shapes over one in-process Tracker."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import limitry_local
from limitry_local import (
    APIError,
    AuthenticationError,
    Client,
    LimitryError,
    NetworkError,
    QuotaCreate,
    QuotaExceeded,
    RateLimitExceeded,
    Tracker,
    TrackPostRequest,
)
from limitry_local.analytics import UsageReport
from limitry_local.client import (
    AsyncCustomers,
    AsyncEvents,
    AsyncQuotaAlerts,
    AsyncQuotas,
    AsyncRateLimits,
    AsyncUsageReport,
)
from limitry_local.resources import Customers, Events, QuotaAlerts, Quotas, RateLimits
from limitry_local.testing import ManualClock

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


CALL = {"customerId": "cust_1", "eventType": "model_call", "model": "gpt-4"}


def test_track_usage_answers_the_201_model_with_headers(tracker: Tracker) -> None:
    client = Client(tracker)
    run(client.rate_limits.create(name="rpm", limit_value=2, window="minute"))

    async def go() -> limitry_local.TrackPostResponse:
        return await client.track.usage(TrackPostRequest.model_validate(CALL))

    response = run(go())
    assert response.allowed is True
    assert response.id.startswith("evt_")
    assert response.headers["X-RateLimit-Remaining"] == "1"


def test_track_usage_takes_a_wire_dict_and_keywords(tracker: Tracker) -> None:
    client = Client(tracker)
    run(client.track.usage(CALL))
    run(client.track.usage(customer_id="cust_1", event_type="model_call", total_tokens=5))
    assert tracker.customers.get_usage("cust_1").total_events == 2


def test_a_gate_from_the_client_shares_the_trackers_buckets(tracker: Tracker) -> None:
    client = Client(tracker)
    limit = run(client.rate_limits.create(name="rpm", limit_value=2, window="minute"))
    gate = run(client.rate_limits.gate(limit.id))
    assert gate.hit() is True
    run(client.track.usage(CALL))
    assert gate.hit() is False


def test_a_denied_event_raises_api_error_429(tracker: Tracker) -> None:
    client = Client(tracker)
    run(client.rate_limits.create(name="rpm", limit_value=1, window="minute"))
    run(client.track.usage(CALL))
    with pytest.raises(APIError) as caught:
        run(client.track.usage(CALL))
    assert caught.value.status_code == 429
    assert isinstance(caught.value, RateLimitExceeded)
    assert caught.value.headers["Retry-After"] == "60"
    assert caught.value.response["error"] == "Rate limit exceeded"


def test_a_quota_denial_is_a_quota_exceeded(tracker: Tracker) -> None:
    client = Client(tracker)
    run(client.quotas.create(name="q", metric="total_events", limit_value=1, period="day"))
    run(client.track.usage(CALL))
    with pytest.raises(QuotaExceeded) as caught:
        run(client.track.usage(CALL))
    assert caught.value.status == 429
    assert caught.value.headers["X-Quota-Period"] == "day"


def test_a_bad_event_raises_api_error_400_naming_the_field(tracker: Tracker) -> None:
    client = Client(tracker)
    with pytest.raises(APIError) as caught:
        run(client.track.usage({**CALL, "inputTokens": -1}))
    assert caught.value.status_code == 400
    assert "inputTokens" in caught.value.message
    assert tracker.ledger.event_count() == 0


def test_hosted_only_exceptions_are_importable_and_catchable_as_limitry_errors() -> None:
    assert issubclass(AuthenticationError, APIError)
    assert AuthenticationError().status_code == 401
    assert issubclass(NetworkError, LimitryError)
    assert "AuthenticationError" in limitry_local.__all__
    assert "NetworkError" in limitry_local.__all__


def test_quota_lifecycle_through_the_client(tracker: Tracker) -> None:
    client = Client(tracker)

    async def go() -> None:
        quota = await client.quotas.create(
            QuotaCreate(name="daily", metric="total_tokens", limit_value=100, period="day")
        )
        assert (await client.quotas.get(quota.id)) == quota
        assert [q.id for q in (await client.quotas.list()).data] == [quota.id]
        updated = await client.quotas.update(quota.id, limit_value=200)
        assert updated.limit_value == 200
        await client.track.usage({**CALL, "totalTokens": 150})
        check = await client.quotas.check({"customer_id": "cust_1"})
        assert check.allowed is True
        assert check.quotas[0].used == 150
        await client.quotas.delete(quota.id)
        assert (await client.quotas.list()).data == []

    run(go())


def test_rate_limit_lifecycle_through_the_client(tracker: Tracker) -> None:
    client = Client(tracker)

    async def go() -> None:
        limit = await client.rate_limits.create(
            {"name": "rpm", "limitValue": 1, "window": "1h", "dimensionFilters": {}}
        )
        assert limit.window == "1h"
        assert (await client.rate_limits.get(limit.id)) == limit
        assert (await client.rate_limits.list(limit=1)).data == [limit]
        await client.track.usage(CALL)
        check = await client.rate_limits.check({"customer_id": "cust_1"})
        assert check.allowed is False
        disabled = await client.rate_limits.update(limit.id, enabled=False)
        assert disabled.enabled is False
        assert (await client.rate_limits.check({"customer_id": "cust_1"})).allowed is True
        await client.rate_limits.delete(limit.id)
        with pytest.raises(APIError) as caught:
            await client.rate_limits.get(limit.id)
        assert caught.value.status_code == 404

    run(go())


def test_events_and_customer_usage_through_the_client(tracker: Tracker) -> None:
    client = Client(tracker)

    async def go() -> None:
        one = await client.events.ingest({**CALL, "inputTokens": 3, "outputTokens": 4})
        batch = await client.events.batch(
            {"events": [{**CALL, "costCents": 2.5}, {**CALL, "customerId": "cust_2"}]}
        )
        assert batch.count == 2
        page = await client.events.list(customer_id="cust_1")
        assert one.id in [event.id for event in page.data]
        assert len(page.data) == 2
        usage = await client.customers.get_usage("cust_1", "2026-11-01", "2026-11-30")
        assert (usage.total_events, usage.total_tokens, usage.total_cost_cents) == (2, 7, 2.5)

    run(go())


def test_sync_and_async_code_share_one_trackers_limits(tracker: Tracker) -> None:
    client = Client(tracker)
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    tracker.usage(CALL)
    run(client.track.usage(CALL))
    with pytest.raises(RateLimitExceeded):
        tracker.usage(CALL)
    assert client.tracker is tracker


def test_every_call_runs_in_the_event_loops_thread() -> None:
    seen: set[int] = set()
    clock = ManualClock(1_790_000_000)

    def recording_clock() -> float:
        seen.add(threading.get_ident())
        return clock()

    async def go() -> int:
        async with Client(clock=recording_clock) as client:
            await client.quotas.create(
                name="q", metric="total_events", limit_value=10, period="day"
            )
            await asyncio.gather(*(client.track.usage(CALL) for _ in range(5)))
            await client.events.ingest(CALL)
        return threading.get_ident()

    loop_thread = run(go())
    assert seen == {loop_thread}


def test_hosted_constructor_options_are_accepted_and_ignored() -> None:
    async def go() -> None:
        async with Client(
            api_key="sk_live_ignored",
            base_url="https://api.limitry.example",
            max_retries=3,
            default_headers={"X-Team": "a"},
        ) as client:
            assert (await client.track.usage(CALL)).allowed is True

    run(go())


def test_a_client_closes_the_tracker_it_opened_but_not_a_shared_one(tmp_path: Path) -> None:
    async def own() -> Tracker:
        async with Client(path=tmp_path / "own.db") as client:
            await client.track.usage(CALL)
            return client.tracker

    owned = run(own())
    with pytest.raises(LimitryError, match="closed"):
        owned.usage(CALL)

    with Tracker(tmp_path / "shared.db") as shared:

        async def share() -> None:
            async with Client(shared) as client:
                await client.track.usage(CALL)

        run(share())
        assert shared.usage(CALL).allowed is True
        assert shared.ledger.event_count() == 2


def test_a_tracker_and_tracker_options_together_are_refused(tracker: Tracker) -> None:
    with pytest.raises(ValueError, match="not both"):
        Client(tracker, path="x.db")


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"),
    [
        (Quotas, AsyncQuotas),
        (QuotaAlerts, AsyncQuotaAlerts),
        (RateLimits, AsyncRateLimits),
        (Events, AsyncEvents),
        (Customers, AsyncCustomers),
        (UsageReport, AsyncUsageReport),
    ],
)
def test_the_async_face_has_every_sync_method_with_the_same_parameters(
    sync_cls: type, async_cls: type
) -> None:
    def public(cls: type) -> dict[str, Callable[..., Any]]:
        return {
            name: fn for name, fn in vars(cls).items() if callable(fn) and not name.startswith("_")
        }

    sync_methods, async_methods = public(sync_cls), public(async_cls)
    assert sync_methods.keys() == async_methods.keys()
    for name, fn in sync_methods.items():
        assert inspect.iscoroutinefunction(async_methods[name]), name
        assert list(inspect.signature(fn).parameters) == list(
            inspect.signature(async_methods[name]).parameters
        ), name
