"""The IETF RateLimit / RateLimit-Policy rendering, item by item."""

from __future__ import annotations

from datetime import datetime, timezone

from limitry_local import QuotaStatus, RateLimitStatus, Tracker
from limitry_local.integrations._ietf import ratelimit_fields
from limitry_local.integrations.asgi import LimitryMiddleware

NOW = datetime(2026, 2, 10, 12, 0, tzinfo=timezone.utc).timestamp()
MARCH = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()


def rate(name: str, id: str = "rl_1", **fields: object) -> RateLimitStatus:
    values: dict[str, object] = {
        "id": id,
        "name": name,
        "limit": 10,
        "remaining": 4,
        "reset": int(NOW) + 5,
        "window": "30s",
        "exceeded": False,
    }
    return RateLimitStatus.model_validate({**values, **fields})


def quota(name: str, id: str = "qta_1", **fields: object) -> QuotaStatus:
    values: dict[str, object] = {
        "id": id,
        "name": name,
        "metric": "total_cost_cents",
        "period": "month",
        "limit": 500,
        "used": 2.5,
        "remaining": 497.5,
        "reset": int(MARCH),
        "exceeded": False,
    }
    return QuotaStatus.model_validate({**values, **fields})


def events_only(status: RateLimitStatus) -> str:
    return "total_events"


def test_nothing_matched_renders_nothing() -> None:
    assert ratelimit_fields([], [], now=NOW, metric_of=events_only) == {}


def test_a_month_window_is_the_current_months_length_and_cents_say_so() -> None:
    fields = ratelimit_fields([rate("burst")], [quota("spend")], now=NOW, metric_of=events_only)
    assert fields["RateLimit-Policy"] == (
        '"burst";q=10;w=30, "spend";q=500;w=2419200;limitry-metric="total_cost_cents"'
    )
    # 497.5 cents left is 497 whole; February ends in 18.5 days.
    assert fields["RateLimit"] == f'"burst";r=4;t=5, "spend";r=497;t={int(MARCH - NOW)}'


def test_a_token_rate_limit_says_its_metric() -> None:
    fields = ratelimit_fields([rate("tpm")], [], now=NOW, metric_of=lambda status: "total_tokens")
    assert fields["RateLimit-Policy"] == '"tpm";q=10;w=30;limitry-metric="total_tokens"'


def test_names_that_cannot_identify_a_policy_fall_back_to_ids() -> None:
    fields = ratelimit_fields(
        [rate("same", "rl_a"), rate("same", "rl_b"), rate("café", "rl_c"), rate('say "hi"\\')],
        [],
        now=NOW,
        metric_of=events_only,
    )
    names = [item.split(";")[0] for item in fields["RateLimit"].split(", ")]
    assert names == ['"rl_a"', '"rl_b"', '"rl_c"', '"say \\"hi\\"\\\\"']


def test_a_quota_without_reset_leaves_t_out() -> None:
    fields = ratelimit_fields([], [quota("q", reset=None)], now=NOW, metric_of=events_only)
    assert fields["RateLimit"] == '"q";r=497'


def test_the_middleware_reads_a_rate_limits_metric_from_the_tracker(tracker: Tracker) -> None:
    limit = tracker.rate_limits.create(
        name="tpm", limit_value=1000, window="minute", metric="total_tokens"
    )

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    middleware = LimitryMiddleware(app, tracker=tracker, event=lambda scope: None)
    status = tracker.rate_limits.check({}).rate_limits[0]
    assert middleware._metric(status) == "total_tokens"
    tracker.rate_limits.delete(limit.id)
    assert middleware._metric(status) is None
