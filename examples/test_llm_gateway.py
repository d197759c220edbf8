"""Tests of the gateway's limit logic: the worked example of docs/testing.md.

The first test uses the ``limitry_tracker`` fixture that the limitry_local
pytest plugin provides.  The property test builds a Tracker per example (a
fixture would be shared by every example hypothesis runs) and states what
must hold for any traffic and any plan.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import datetime, timezone

from hypothesis import example, given, settings
from hypothesis import strategies as st
from llm_gateway import Gateway, Reply

from limitry_local import LimitExceeded, QuotaCreate, Tracker, TrackPostRequest
from limitry_local.testing import ManualClock
from limitry_local.testing import strategies as lst

START = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def test_the_sixth_request_in_a_minute_is_told_to_slow_down(
    limitry_tracker: Tracker, limitry_clock: ManualClock
) -> None:
    gateway = Gateway(limitry_tracker, requests_per_minute=5)
    replies = [gateway.ask("cust_1", "hello there") for _ in range(6)]
    assert [r.served for r in replies] == [True] * 5 + [False]
    assert replies[-1].retry_after == 12  # one request's worth of a 5-per-minute bucket
    limitry_clock.advance(12)
    assert gateway.ask("cust_1", "hello again").served


# One step of traffic: who asks, how long the prompt is, and how long since the last step.
steps = st.lists(
    st.tuples(
        st.sampled_from(lst.CUSTOMER_IDS),
        st.integers(min_value=1, max_value=400),
        st.sampled_from([0, 0, 0, 1, 5, 30, 3600]),
    ),
    max_size=40,
)


@settings(max_examples=75)
# Found by review: served tokens were once summed across days, so traffic that
# crossed midnight failed a property that should hold.
@example(traffic=[("cust_1", 400, 0), *[("cust_2", 1, 3600)] * 14, ("cust_1", 1, 0)], plan=(10, 1))
@given(
    traffic=steps,
    plan=st.tuples(st.integers(1, 10), st.integers(1, 3000)),
)
def test_any_traffic_stays_within_the_plan_and_every_served_call_is_counted(
    traffic: list[tuple[str, int, int]], plan: tuple[int, int]
) -> None:
    rpm, daily_tokens = plan
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        gateway = Gateway(tracker, requests_per_minute=rpm, daily_tokens=daily_tokens)
        # Served tokens per (customer, UTC day): the budget is a daily one.
        served: dict[tuple[str, int], int] = defaultdict(int)
        for customer, words, wait in traffic:
            clock.advance(wait)
            today = (customer, int(clock() // 86_400))
            used_before = served[today]
            reply: Reply = gateway.ask(customer, " ".join(["word"] * words))
            if reply.served:
                # Never serve a customer whose budget for today was already spent...
                assert used_before < daily_tokens
                served[today] += reply.tokens
            else:
                # ...and always say when to come back.
                assert (reply.retry_after or 0) >= 1 or reply.resets_at is not None
            # The one call that crosses the budget may overrun it, by at most its own size.
            assert served[today] < daily_tokens + 3 * 400

        # Nothing served went unrecorded: the ledger's totals are the served totals.
        for customer in lst.CUSTOMER_IDS:
            expected = sum(tokens for (who, _), tokens in served.items() if who == customer)
            assert tracker.customers.get_usage(customer).total_tokens == expected


@settings(max_examples=50)
@given(
    quota=lst.quota_creates(metrics=st.just("total_tokens")),
    events=st.lists(lst.track_requests(), max_size=15),
)
def test_usage_never_takes_a_quota_past_its_limit(
    quota: QuotaCreate, events: list[TrackPostRequest]
) -> None:
    """The library's own promise, checked with its strategies: any quota, any events."""
    with Tracker(clock=ManualClock(START)) as tracker:
        tracker.quotas.create(quota)
        for event in events:
            with contextlib.suppress(LimitExceeded):
                tracker.usage(event)
        assert all(used <= quota.limit_value for used in tracker.ledger.counters().values())
