"""Property: with Redis going down and coming back, ``usage()`` answers as a plain model does.

A real Tracker (SQLite file ledger, RedisBuckets on a ``redis-server`` of the
test's own) and a naive model of docs/semantics.md ("Fail modes") take the
same random steps: events matching a fail-closed rate limit, events matching
a fail-open one, Redis killed, Redis restarted (without persistence, so its
buckets come back full).  One quota, in the ledger, covers every event.

The model: while Redis is up each limit is a counter of tokens (the clock
stands still, so nothing refills) and the quota a counter of events; while
it is down a fail-closed event is refused with ``RateLimitStoreError`` and a
fail-open one passes its rate limit unchecked, still held to the quota.
Every answer must match the model's: so the quota never admits past its
limit, the closed limit never admits while unchecked, and every
acknowledged event is in the ledger, once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import QuotaExceeded, RateLimitExceeded, RateLimitStoreError, Tracker
from limitry_local.redis_buckets import RedisBuckets
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.fault_servers import OwnRedis
from tests.redis_support import MANUAL_CLOCK_TTL_MARGIN, new_prefix

CLOSED_CAPACITY = 4
OPEN_CAPACITY = 3
QUOTA = 9

Step = str  # "chat" (fail-closed limit), "embed" (fail-open limit), "kill", "start"


@pytest.fixture(scope="module")
def server() -> Iterator[OwnRedis]:
    own = OwnRedis()
    try:
        yield own
    finally:
        own.stop()


@settings(max_examples=12)
@given(
    steps=st.lists(
        st.sampled_from(["chat", "embed", "chat", "embed", "kill", "start"]), max_size=25
    )
)
def test_usage_with_redis_coming_and_going_answers_as_the_model(
    server: OwnRedis, tmp_path_factory: pytest.TempPathFactory, steps: list[Step]
) -> None:
    if server.process is None:
        server.start()
    path: Path = tmp_path_factory.mktemp("fail-open") / "usage.db"
    store = RedisBuckets(
        server.url,
        prefix=new_prefix(),
        clock="client",
        ttl_margin=MANUAL_CLOCK_TTL_MARGIN,
        timeout=0.5,
        breaker_failures=0,  # the breaker has its own tests; here every call tries
    )
    with Tracker(path, clock=ManualClock(START), rate_limits=store) as tracker:
        tracker.rate_limits.create(
            name="chat",
            limit_value=CLOSED_CAPACITY,
            window="hour",
            dimension_filters={"event_type": "chat"},
        )
        opened = tracker.rate_limits.create(
            name="embed",
            limit_value=OPEN_CAPACITY,
            window="hour",
            dimension_filters={"event_type": "embed"},
            fail_mode="open",
        )
        tracker.quotas.create(name="all", metric="total_events", limit_value=QUOTA, period="day")
        up = True
        tokens = {"chat": CLOSED_CAPACITY, "embed": OPEN_CAPACITY}
        used = 0
        acknowledged: list[str] = []
        for step in steps:
            if step == "kill":
                if up:
                    server.kill()
                up = False
                continue
            if step == "start":
                if not up:
                    server.start()
                    # No persistence: every bucket is full again.
                    tokens = {"chat": CLOSED_CAPACITY, "embed": OPEN_CAPACITY}
                up = True
                continue
            if step == "chat" and not up:
                with pytest.raises(RateLimitStoreError):
                    tracker.usage(customer_id="c", event_type="chat")
                continue
            checked = up  # a fail-open limit is passed unchecked while Redis is down
            if checked and tokens[step] == 0:
                with pytest.raises(RateLimitExceeded):
                    tracker.usage(customer_id="c", event_type=step)
                continue
            if used == QUOTA:
                with pytest.raises(QuotaExceeded):
                    tracker.usage(customer_id="c", event_type=step)
                continue
            answer = tracker.usage(customer_id="c", event_type=step)
            if checked:
                tokens[step] -= 1
                assert answer.failed_open == []
                assert answer.rate_limits[0].remaining == tokens[step]
            else:
                assert [f.id for f in answer.failed_open] == [opened.id]
            used += 1
            assert answer.quotas[0].used == used
            acknowledged.append(answer.id)
        assert sorted(e.id for e in tracker.events.list(limit=100).data) == sorted(acknowledged)
        assert tracker.ledger.event_count() == len(acknowledged)
    if not up:
        server.start()
