"""Redis give-backs against a strict order: never more tokens than it would hold.

Three RedisBuckets share one bucket and interleave takes (each settled later:
kept or given back), adjusts (a reservation settling, a soft limit:
charged whatever the bucket holds, clamped at 0, or a refund, capped at
capacity) and the clock moving on.  After every step the bucket must hold no
more than a model holds that replays the same steps one at a time, in order,
without the takes that were given back: a give-back may return less than
that (a denial later), never more (an admission past the limit).  An adjust
that clamps at 0, and a refund the capacity cuts in a strict order, while a
take is pending are where give-backs used to return too much
(docs/scaling.md, "Give-backs").
"""

from __future__ import annotations

import json
from typing import Any

import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from limitry_local.buckets import EPSILON, BucketAsk, BucketTime
from tests.conftest import START
from tests.redis_support import RedisStores, raw_client

KEY = ("rl_a", 0, ())
WINDOW = 10.0

# (client, kind, cost, keep): keep says how a settle ends its take.
Step = tuple[int, str, int, bool]


def at(now: float) -> BucketTime:
    return BucketTime(now, now, 0.0, now)


def held(server: redis.Redis, prefix: str, capacity: int, now: float) -> float:
    """What the bucket holds at ``now``, read as the take script reads it."""
    t, u, f = server.hmget(prefix + json.dumps(KEY, separators=(",", ":")), "t", "u", "f")
    if t is None or u is None or f is None or float(f) <= now:
        return float(capacity)
    return min(capacity, float(t) + max(0.0, now - float(u)) * capacity / WINDOW)


def strict(log: list[tuple[Any, ...]], given_back: set[int], capacity: int, now: float) -> float:
    """The bucket in a strict order of ``log`` without the takes given back."""
    tokens, updated = float(capacity), START
    for kind, when, cost, *take in log:
        tokens = min(capacity, tokens + (when - updated) * capacity / WINDOW)
        updated = when
        if kind == "take" and take[0] not in given_back:
            tokens = max(0.0, tokens - cost)
        elif kind == "adjust":
            tokens = min(capacity, max(0.0, tokens - cost))
    return min(capacity, tokens + (now - updated) * capacity / WINDOW)


@settings(max_examples=200)
@given(
    capacity=st.integers(1, 8),
    steps=st.lists(
        st.tuples(
            st.integers(0, 2),  # which client
            st.sampled_from(["take", "take", "adjust", "settle", "settle", "advance"]),
            # A take's cost (its absolute value), an adjust's (below 0: a refund),
            # or tenths of a second to advance.
            st.integers(-10, 10),
            st.booleans(),  # keep, when settling
        ),
        max_size=30,
    ),
)
# The review's case: A takes 4 of 10, B's adjust of 8 clamps, A gives back.
@example(
    capacity=10, steps=[(0, "take", 4, False), (1, "adjust", 8, False), (0, "settle", 0, False)]
)
# Two takes pending across one clamp share its debt.
@example(
    capacity=10,
    steps=[
        (0, "take", 3, False),
        (1, "take", 2, False),
        (0, "adjust", 8, False),
        (1, "settle", 0, False),
        (0, "settle", 0, False),
    ],
)
# A refund while a take is pending fills what a strict order without it had
# filled already: giving the whole take back then said 1 where it holds 0.
@example(
    capacity=1,
    steps=[(0, "take", 1, False), (1, "adjust", -1, False), (2, "take", 1, True)],
)
# A give-back with nothing to give (its room refilled) paid the clamp's debt,
# and the next gave its whole take back.
@example(
    capacity=2,
    steps=[
        (0, "take", 2, False),
        (0, "advance", 100, False),
        (1, "take", 1, False),
        (2, "adjust", 2, False),
    ],
)
def test_give_backs_never_leave_more_than_a_strict_order_without_them(
    redis_stores: RedisStores, capacity: int, steps: list[Step]
) -> None:
    first = redis_stores.new()
    prefix = redis_stores.prefixes[-1]
    clients = [first, *(redis_stores.new(prefix=prefix) for _ in range(2))]
    server = raw_client()
    try:
        pending: list[int | None] = [None] * 3  # the log index of each client's take
        given_back: set[int] = set()
        log: list[tuple[Any, ...]] = []
        now = START
        for who, kind, amount, keep in [*steps, *((i, "settle", 0, False) for i in range(3))]:
            if kind == "advance":
                now += abs(amount) / 10
            elif kind == "adjust":
                clients[who].adjust([BucketAsk(KEY, capacity, WINDOW, amount)], at(now))
                log.append(("adjust", now, amount))
            elif kind == "take" and pending[who] is None:
                ask = BucketAsk(KEY, capacity, WINDOW, abs(amount))
                (answer,) = clients[who].take([ask], at(now))
                if answer.allowed:
                    pending[who] = len(log)
                    log.append(("take", now, abs(amount), len(log)))
            elif kind == "settle":
                taken, pending[who] = pending[who], None
                clients[who].settle(keep=keep)
                if taken is not None and not keep:
                    given_back.add(taken)
            bound = strict(log, given_back, capacity, now)
            assert held(server, prefix, capacity, now) <= bound + EPSILON * capacity
    finally:
        server.close()
