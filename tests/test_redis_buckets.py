"""RedisBuckets: the same answers as the in-memory store, shared safely between processes.

Against the real server of tests/redis_support.py; each test uses fresh key
prefixes and deletes its keys.  The core behaviour suite also runs on Redis
buckets (conftest's ``tracker`` fixture); this file holds what only Redis has:
the script against the reference store, several processes on one bucket,
expiry, clocks, give-backs under interleaving, and failures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import (
    QuotaExceeded,
    RateLimitExceeded,
    RateLimitStoreError,
    RedisBuckets,
    Tracker,
)
from limitry_local.buckets import BucketAnswer, BucketAsk, BucketStore, BucketTime
from limitry_local.testing import ManualClock
from tests import redis_hammer
from tests.conftest import START
from tests.redis_support import REDIS_URL, RedisStores, new_prefix, raw_client

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def stores(redis_stores: RedisStores) -> RedisStores:
    """Stores on fresh prefixes (conftest), closed and their keys deleted after the test."""
    return redis_stores


@pytest.fixture
def server() -> Iterator[redis.Redis]:
    client = raw_client()
    try:
        yield client
    finally:
        client.close()


def at(now: float) -> BucketTime:
    """One clock reading, as the tracker passes it with an injected clock."""
    return BucketTime(now, now, 0.0, now)


# --- the reference model: RedisBuckets answers exactly as BucketStore ----------------

# Keys as the tracker builds them; two differ only where a naive separator would
# make them collide.
KEYS = [
    ("rl_a", 0, ()),
    ("rl_b", 0, ("cust_1",)),
    ("rl_c", 3, ("a:b",)),
    ("rl_c", 3, ("a", "b")),
]
WINDOWS = [1.0, 7.0, 15.0, 60.0, 3600.0, 86400.0]
ADVANCES = [0.0, 0.001, 0.25, 1.0, 3.75, 15.0, 59.999, 60.0, 3600.0]

Op = tuple[Any, ...]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[int, float]], list[Op]]:
    """Bucket shapes, then a run of takes (kept or given back), peeks and clock steps."""
    shapes = draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(1, 8), st.sampled_from([60, 10**6, 10**12])),
                st.sampled_from(WINDOWS),
            ),
            min_size=len(KEYS),
            max_size=len(KEYS),
        )
    )
    which = st.lists(st.integers(0, len(KEYS) - 1), min_size=1, max_size=3, unique=True)
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["take", "take", "take", "peek", "advance", "advance"]))
        if kind == "advance":
            step = draw(
                st.one_of(
                    st.sampled_from(ADVANCES),
                    st.floats(0, 200, allow_nan=False, allow_infinity=False),
                )
            )
            ops.append(("advance", step))
        elif kind == "peek":
            ops.append(("peek", draw(which)))
        else:
            buckets = draw(which)
            costs = [
                draw(st.one_of(st.integers(0, 2), st.integers(0, shapes[b][0] + 1)))
                for b in buckets
            ]
            ops.append(("take", buckets, costs, draw(st.booleans())))
    return shapes, ops


@settings(max_examples=300)
@given(scenario=scenarios())
def test_redis_answers_exactly_as_the_in_memory_store(
    stores: RedisStores, scenario: tuple[list[tuple[int, float]], list[Op]]
) -> None:
    shapes, ops = scenario
    now = START
    memory = BucketStore(1000, lambda: now)
    store = stores.new()
    for op in ops:
        if op[0] == "advance":
            now += op[1]
            continue
        buckets = op[1]
        costs = op[2] if op[0] == "take" else [1] * len(buckets)
        asks = [
            BucketAsk(KEYS[b], shapes[b][0], shapes[b][1], cost)
            for b, cost in zip(buckets, costs, strict=True)
        ]
        if op[0] == "peek":
            assert store.peek(asks, at(now)) == memory.peek(asks, at(now)), op
            continue
        got, want = store.take(asks, at(now)), memory.take(asks, at(now))
        # Equal answers after every step also check all-or-nothing: the
        # reference store takes from no bucket when one denies.
        assert got == want, op
        store.settle(keep=op[3])
        memory.settle(keep=op[3])
    # Whatever happened, the buckets read the same at the end.
    asks = [BucketAsk(key, shape[0], shape[1], 1) for key, shape in zip(KEYS, shapes, strict=True)]
    assert store.peek(asks, at(now)) == memory.peek(asks, at(now))


def test_keys_are_the_prefix_and_json_so_separators_cannot_collide(
    stores: RedisStores, server: redis.Redis
) -> None:
    store = stores.new()
    asks = [
        BucketAsk(("rl_c", 3, ("a:b",)), 5, 60.0, 1),
        BucketAsk(("rl_c", 3, ("a", "b")), 5, 60.0, 2),
    ]
    store.take(asks, at(START))
    store.settle(keep=True)
    prefix = stores.prefixes[-1]
    assert server.hget(prefix + '["rl_c",3,["a:b"]]', "t") == b"4"
    assert server.hget(prefix + '["rl_c",3,["a","b"]]', "t") == b"3"


def test_all_or_nothing_across_buckets(stores: RedisStores, server: redis.Redis) -> None:
    store = stores.new()
    roomy = BucketAsk(("rl_a", 0, ()), 10, 60.0, 1)
    tight = BucketAsk(("rl_b", 0, ()), 1, 60.0, 1)
    assert all(a.allowed for a in store.take([roomy, tight], at(START)))
    store.settle(keep=True)
    roomy_after, tight_after = store.take([roomy, tight], at(START))
    store.settle(keep=False)
    assert (roomy_after.allowed, tight_after.allowed) == (True, False)
    # The roomy bucket would have allowed, but the denial elsewhere took nothing from it.
    assert server.hget(stores.prefixes[-1] + '["rl_a",0,[]]', "t") == b"9"
    assert store.peek([roomy], at(START))[0].current_remaining == 9


def test_peek_writes_nothing(stores: RedisStores, server: redis.Redis) -> None:
    store = stores.new()
    ask = BucketAsk(("rl_a", 0, ()), 3, 60.0, 1)
    (answer,) = store.peek([ask], at(START))
    assert answer.allowed and answer.current_remaining == 3
    store.settle(keep=False)  # a peek leaves nothing to give back
    assert list(server.scan_iter(match=stores.prefixes[-1] + "*")) == []


# --- give-backs -----------------------------------------------------------------------


def tokens(server: redis.Redis, prefix: str, key: tuple[Any, ...]) -> float:
    raw = server.hget(prefix + json.dumps(key, separators=(",", ":")), "t")
    assert raw is not None
    return float(raw)


def test_a_give_back_with_nothing_in_between_restores_the_bucket_exactly(
    stores: RedisStores, server: redis.Redis
) -> None:
    store = stores.new()
    key = ("rl_a", 0, ())
    ask = BucketAsk(key, 10, 60.0, 4)
    store.take([ask], at(START))
    store.settle(keep=True)
    stored = server.hgetall(stores.prefixes[-1] + '["rl_a",0,[]]')
    store.take([ask], at(START + 1.5))
    store.settle(keep=False)
    after = server.hgetall(stores.prefixes[-1] + '["rl_a",0,[]]')
    assert {k: after[k] for k in (b"t", b"u", b"f")} == {k: stored[k] for k in (b"t", b"u", b"f")}
    # A bucket that did not exist before the take does not exist after it.
    fresh = BucketAsk(("rl_b", 0, ()), 10, 60.0, 4)
    store.take([fresh], at(START))
    store.settle(keep=False)
    assert server.exists(stores.prefixes[-1] + '["rl_b",0,[]]') == 0


def test_a_give_back_after_another_take_adds_the_cost_back(
    stores: RedisStores, server: redis.Redis
) -> None:
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    # 10 tokens, refilled at 1 per second.
    first.take([BucketAsk(key, 10, 10.0, 5)], at(START))  # 10 -> 5
    other.take([BucketAsk(key, 10, 10.0, 3)], at(START + 1))  # 5 + 1 -> 3
    other.settle(keep=True)
    first.settle(keep=False)
    # A strict order without the first event: 10 at START, full at START + 1, minus 3.
    assert tokens(server, stores.prefixes[-1], key) == 7


def test_a_give_back_never_takes_away_what_a_larger_capacity_left(
    stores: RedisStores, server: redis.Redis
) -> None:
    # One bucket, two capacities (an override outside per): 10 a second, 2 for some.
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 2, 1.0, 1, 10)], at(START))  # 2 -> 1
    other.take([BucketAsk(key, 10, 1.0, 1, 10)], at(START + 0.4))  # 1 + 4 -> 4
    other.settle(keep=True)
    first.settle(keep=False)  # the first event was denied by a quota: give back
    # Giving back must not clamp to 2 what the larger capacity left: 4, or more.
    # Before this was found (in review) the give-back left 2.
    assert tokens(server, stores.prefixes[-1], key) >= 4


@pytest.mark.parametrize("cost", [50, 95])
def test_a_give_back_never_adds_back_what_a_smaller_capacity_cut(
    stores: RedisStores, server: redis.Redis, cost: int
) -> None:
    # One bucket, two capacities (an override outside per): 100, and 10 for some.
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 100, 10.0, cost, 100)], at(START))  # 100 -> 100 - cost
    other.take([BucketAsk(key, 10, 10.0, 1, 100)], at(START))  # at most 10, minus 1
    other.settle(keep=True)
    first.settle(keep=False)
    # A strict order without the first event: 100, cut to 10 by the second, 9.
    # Found in review: the give-back added its cost to what the cut left, 59
    # (or 99), and admitted 50 (or 90) events past the limit.
    assert tokens(server, stores.prefixes[-1], key) <= 9


def test_a_give_back_never_credits_refill_the_cap_would_have_cut(
    stores: RedisStores, server: redis.Redis
) -> None:
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 10, 10.0, 5)], at(START))  # 10 -> 5
    # Five seconds refill the missing five exactly to capacity: 10 - 3 = 7.
    other.take([BucketAsk(key, 10, 10.0, 3)], at(START + 5))
    other.settle(keep=True)
    first.settle(keep=False)
    # Without the first event the bucket sat at capacity, where refill stops:
    # still 7.  Adding the 5 back (capped) would say 10 and admit 3 extra.
    assert tokens(server, stores.prefixes[-1], key) == 7


def test_a_give_back_pays_what_an_adjust_clamped_at_zero_lost_first(
    stores: RedisStores, server: redis.Redis
) -> None:
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 10, 10.0, 4)], at(START))  # 10 -> 6
    # Another host settles a reservation of 8: 6 - 8 clamps at 0, 2 are lost.
    other.adjust([BucketAsk(key, 10, 10.0, 8)], at(START))
    first.settle(keep=False)  # the first event was denied by a quota: give back
    # A strict order without the first event: 10 - 8 = 2.  Adding the 4 back
    # said 4, and admitted 2 events past the limit (found in review).
    assert tokens(server, stores.prefixes[-1], key) == 2


def test_a_give_back_pays_the_clamps_debt_after_the_caps_cut(
    stores: RedisStores, server: redis.Redis
) -> None:
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 2, 10.0, 2)], at(START))  # 2 -> 0
    # 0.1 s refills 0.02; then 0.02 - 1 clamps at 0, 0.98 lost.
    other.adjust([BucketAsk(key, 2, 10.0, 1)], at(START + 0.1))
    first.settle(keep=False)
    # A strict order without the first event: full (the refill cut at 2), then
    # 2 - 1 = 1.  Paying the 0.98 before the cap's cut said 1.02 (a property
    # test found it).
    assert tokens(server, stores.prefixes[-1], key) <= 1 + 1e-9


def test_a_give_back_never_adds_back_room_a_refund_filled_meanwhile(
    stores: RedisStores, server: redis.Redis
) -> None:
    first = stores.new()
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    other.take([BucketAsk(key, 10, 10.0, 2)], at(START))  # 10 -> 8
    other.settle(keep=True)
    first.take([BucketAsk(key, 10, 10.0, 4)], at(START))  # 8 -> 4
    # Another host releases a reservation of 5: 9.  Without the first event
    # 8 + 5 is cut at 10, and 3 of the 4 are not there to give back any more.
    other.adjust([BucketAsk(key, 10, 10.0, -5)], at(START))
    other.take([BucketAsk(key, 10, 10.0, 5)], at(START))  # 9 -> 4
    other.settle(keep=True)
    first.settle(keep=False)
    # A strict order without the first event: 8, 10, 5.  Adding the 4 back
    # said 8, and admitted 3 events past the limit.
    assert tokens(server, stores.prefixes[-1], key) == 5


def test_a_give_back_with_nothing_to_give_leaves_the_clamps_debt_to_the_next(
    stores: RedisStores, server: redis.Redis
) -> None:
    first = stores.new()
    second = stores.new(prefix=stores.prefixes[-1])
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 2, 10.0, 2)], at(START))  # 2 -> 0
    # Ten seconds refill it: a strict order without the first event sat full.
    second.take([BucketAsk(key, 2, 10.0, 1)], at(START + 10))  # 2 -> 1
    other.adjust([BucketAsk(key, 2, 10.0, 2)], at(START + 10))  # 1 - 2: 0, 1 lost
    first.settle(keep=False)  # nothing to give back: the refill took its room
    second.settle(keep=False)
    # A strict order without either event: 2, then 2 - 2 = 0.  The first
    # give-back paid the debt out of nothing, and the second gave its 1 back.
    assert tokens(server, stores.prefixes[-1], key) == 0


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_two_takes_given_back_after_one_clamp_share_its_debt(
    stores: RedisStores, server: redis.Redis, order: str
) -> None:
    first = stores.new()
    second = stores.new(prefix=stores.prefixes[-1])
    other = stores.new(prefix=stores.prefixes[-1])
    key = ("rl_a", 0, ())
    first.take([BucketAsk(key, 10, 10.0, 3)], at(START))  # 10 -> 7
    second.take([BucketAsk(key, 10, 10.0, 2)], at(START))  # 7 -> 5
    other.adjust([BucketAsk(key, 10, 10.0, 8)], at(START))  # 5 - 8: 0, 3 lost
    settling = [first, second] if order == "oldest first" else [second, first]
    for store in settling:
        store.settle(keep=False)
    # A strict order without either event: 10 - 8 = 2, whichever goes back first.
    assert tokens(server, stores.prefixes[-1], key) == 2


@settings(max_examples=150)
@given(
    capacity=st.integers(1, 6),
    window=st.sampled_from([1.0, 10.0, 60.0]),
    ops=st.lists(
        st.tuples(
            st.integers(0, 2),  # which client
            st.sampled_from(["take", "take", "settle", "advance"]),
            st.integers(0, 4),  # cost, or tenths of a second to advance
            st.booleans(),  # keep, when settling
        ),
        max_size=40,
    ),
)
def test_interleaved_takes_and_give_backs_never_beat_the_bucket(
    stores: RedisStores,
    capacity: int,
    window: float,
    ops: list[tuple[int, str, int, bool]],
) -> None:
    """Three clients on one bucket, each take settled later, in any interleaving:
    what they keep never exceeds capacity plus the refill since the start."""
    first = stores.new()
    clients = [first] + [stores.new(prefix=stores.prefixes[-1]) for _ in range(2)]
    pending: list[int | None] = [None, None, None]
    now, kept = START, 0
    ask = ("rl_a", 0, ())
    for who, kind, amount, keep in ops:
        if kind == "advance":
            now += amount / 10
        elif kind == "take" and pending[who] is None:
            (answer,) = clients[who].take([BucketAsk(ask, capacity, window, amount)], at(now))
            pending[who] = amount if answer.allowed else None
        elif kind == "settle":
            taken, pending[who] = pending[who], None
            clients[who].settle(keep=keep)
            if keep and taken is not None:
                kept += taken
        assert kept <= capacity + (now - START) * capacity / window + 1e-9
    held = sum(p or 0 for p in pending)
    assert kept + held <= capacity + (now - START) * capacity / window + 1e-9


# --- clocks ---------------------------------------------------------------------------


def test_server_clock_ignores_the_hosts_clocks(stores: RedisStores) -> None:
    store = stores.new(clock="server", ttl_margin=1.0)
    ask = BucketAsk(("rl_a", 0, ()), 2, 3600.0, 1)
    before = time.time()
    # Two hosts a day apart read the same bucket on the server's timeline.
    (a,) = store.take([ask], at(START))
    store.settle(keep=True)
    (b,) = store.take([ask], at(START + 86400))
    store.settle(keep=True)
    (c,) = store.take([ask], at(START - 86400))
    store.settle(keep=False)
    assert (a.allowed, b.allowed, c.allowed) == (True, True, False)
    assert b.remaining == 0
    # Resets are unix seconds of the server's clock (this machine's, here).
    assert before + 3600 <= b.reset <= time.time() + 3600 + 2
    assert 1800 - 2 <= c.retry_after <= 1800 + 2


def test_a_lagging_client_clock_sees_time_stand_still_not_tokens_appear(
    stores: RedisStores,
) -> None:
    ahead = stores.new()
    behind = stores.new(prefix=stores.prefixes[-1])
    ask = BucketAsk(("rl_a", 0, ()), 1, 10.0, 1)
    assert ahead.take([ask], at(START + 100))[0].allowed
    ahead.settle(keep=True)
    # 100 s behind: the bucket's time stands at START + 100, empty.
    (answer,) = behind.take([ask], at(START))
    behind.settle(keep=False)
    assert not answer.allowed
    assert answer.current_reset == START + 110
    # Counted on the lagging host's own clock, so waiting it out suffices there.
    assert answer.retry_after == 110
    (later,) = behind.take([ask], at(START + 110))
    assert later.allowed


def test_retry_after_counts_from_the_callers_clock_after_a_step_back(
    stores: RedisStores,
) -> None:
    store = stores.new()
    ask = BucketAsk(("rl_a", 0, ()), 1, 10.0, 1)
    store.take([ask], at(START + 50))
    store.settle(keep=True)
    # The tracker's clock stepped back 50 s: its latest reading stays START + 50,
    # the caller's reading is START.
    stepped = BucketTime(START + 50, START, 0.0, START + 50)
    (answer,) = store.take([ask], stepped)
    assert not answer.allowed
    assert answer.retry_after == 60
    assert store.peek([ask], stepped) == [answer]


def test_waiting_out_retry_after_suffices_when_the_system_clock_steps_back(
    stores: RedisStores,
) -> None:
    """Found in review: with the system clock (bucket time monotonic) a client-clock
    store was sent the latest wall reading as the caller's, so after a 30 s step back
    it answered Retry-After 1 to every wait while its buckets stood still."""
    wall, tick = [START], [1000.0]
    with Tracker(rate_limits=stores.new(clock="client")) as tracker:
        clock = tracker.engine.clock
        clock.source, clock.ticker = (lambda: wall[0]), (lambda: tick[0])  # the system's, faked
        tracker.rate_limits.create(
            name="tps", limit_value=5, window="second", metric="total_tokens"
        )
        tracker.usage(customer_id="c", event_type="e", total_tokens=5)
        wall[0] -= 30.0  # NTP steps the wall clock back; the monotonic one goes on
        tick[0] += 0.1
        with pytest.raises(RateLimitExceeded) as denied:
            tracker.usage(customer_id="c", event_type="e", total_tokens=5)
        assert denied.value.retry_after == 31  # the buckets refill once the wall catches up
        wall[0] += 31.0
        tick[0] += 31.0
        tracker.usage(customer_id="c", event_type="e", total_tokens=5)


# --- expiry -----------------------------------------------------------------------------


def test_an_idle_key_expires_once_its_bucket_is_full_again(
    stores: RedisStores, server: redis.Redis
) -> None:
    store = stores.new(clock="server", ttl_margin=0.2)
    key = stores.prefixes[-1] + '["rl_a",0,[]]'
    ask = BucketAsk(("rl_a", 0, ()), 2, 1.0, 1)
    store.take([ask], at(START))
    store.settle(keep=True)
    # Full again within 0.5 s, rounded up to the next whole second, plus 0.2 s.
    ttl = server.pttl(key)
    assert 0 < ttl <= 1700
    # Real expiry on the server's clock: poll (bounded) rather than drive a clock.
    deadline = time.monotonic() + 5
    while server.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.exists(key) == 0
    # A missing key reads as a full bucket.
    assert store.peek([ask], at(START))[0].current_remaining == 2


def test_a_drained_bucket_outlives_its_refill_time(
    stores: RedisStores, server: redis.Redis
) -> None:
    store = stores.new(clock="server", ttl_margin=1.0)
    ask = BucketAsk(("rl_a", 0, ()), 10, 3600.0, 10)
    store.take([ask], at(START))
    store.settle(keep=True)
    # Empty: full again in an hour, plus the margin; never sooner.
    ttl = server.pttl(stores.prefixes[-1] + '["rl_a",0,[]]')
    assert 3600_000 < ttl <= 3602_000


# --- several processes on one bucket ---------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "skews"),
    [
        ("server", [0.0, 0.0, 0.0, 0.0]),
        # Hosts whose clocks disagree by up to a minute, sharing buckets on their own clocks.
        ("client", [-30.0, 0.0, 0.0, 30.0]),
    ],
)
def test_processes_sharing_a_bucket_never_admit_more_than_it_holds(
    stores: RedisStores, clock: str, skews: list[float]
) -> None:
    stores.new()  # claims a prefix that cleanup deletes
    prefix = stores.prefixes[-1]
    tries = 120
    children = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.redis_hammer", REDIS_URL, prefix, clock),
                *(str(skew), str(len(skews)), str(tries), str(seed)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, skew in enumerate(skews)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    kept = sum(r["kept"] for r in results)
    # Refill the run could mint: its length on the clocks used, widened by the
    # spread of the hosts' clocks (a leading host's time counts as passed).
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    span += max(skews) - min(skews) + 1.0  # the server clock's reads lie within a second
    refill = span * redis_hammer.CAPACITY / redis_hammer.WINDOW
    assert kept <= math.floor(redis_hammer.CAPACITY + refill + 1e-9)
    # Far more was asked than fits; the bucket was really contended and used up
    # (give-backs under interleaving return a little less than they took, never more).
    assert sum(r["denied"] for r in results) > 0
    assert kept >= redis_hammer.CAPACITY - 2


# --- failures -----------------------------------------------------------------------------


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    store = RedisBuckets("redis://user:s3cret@127.0.0.1:1/0", prefix=new_prefix())
    with pytest.raises(RateLimitStoreError) as caught:
        store.take([BucketAsk(("rl_a", 0, ()), 1, 1.0, 1)], at(START))
    assert caught.value.reason == "connection"
    assert "redis://user:***@127.0.0.1:1/0" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    store.close()


def test_usage_with_an_unreachable_store_records_nothing() -> None:
    store = RedisBuckets("redis://127.0.0.1:1/0", prefix=new_prefix())
    with Tracker(clock=ManualClock(START), rate_limits=store) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
        with pytest.raises(RateLimitStoreError, match="cannot reach Redis"):
            tracker.usage(customer_id="cust_1", event_type="call")
        assert tracker.ledger.event_count() == 0


def test_the_script_is_reloaded_after_the_server_forgets_it(stores: RedisStores) -> None:
    store = stores.new()
    ask = BucketAsk(("rl_a", 0, ()), 2, 60.0, 1)
    store.take([ask], at(START))
    store.settle(keep=True)
    client = raw_client()
    client.script_flush()
    client.close()
    (answer,) = store.take([ask], at(START))
    assert answer.allowed and answer.remaining == 0


def test_a_tracker_on_redis_denies_and_gives_back_through_the_ledger(
    stores: RedisStores,
) -> None:
    """The whole path: a quota denial after the take gives the tokens back."""
    with Tracker(clock=ManualClock(START), rate_limits=stores.new()) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
        tracker.quotas.create(name="one", metric="total_events", limit_value=1, period="day")
        tracker.usage(customer_id="cust_1", event_type="call")
        with pytest.raises(QuotaExceeded):
            tracker.usage(customer_id="cust_1", event_type="call")
        # The denied event's token came back: one left, then the bucket denies.
        assert tracker.rate_limits.check({"customer_id": "cust_1"}).rate_limits[0].remaining == 1
        tracker.quotas.delete(tracker.quotas.list().data[0].id)
        tracker.usage(customer_id="cust_1", event_type="call")
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="cust_1", event_type="call")


def test_redis_is_optional() -> None:
    """``import limitry_local`` never imports redis; RedisBuckets says how to get it."""
    code = (
        "import sys\n"
        "import limitry_local\n"
        "assert 'redis' not in sys.modules, 'import limitry_local imported redis'\n"
        "sys.modules['redis'] = None\n"
        "try:\n"
        "    limitry_local.RedisBuckets()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "pip install 'limitry_local[redis]'" in done.stdout


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="clock must be"):
        RedisBuckets(clock="local")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_margin"):
        RedisBuckets(ttl_margin=-1)


def test_answers_are_bucket_answers(stores: RedisStores) -> None:
    (answer,) = stores.new().take([BucketAsk(("rl_a", 0, ()), 3, 60.0, 1)], at(START))
    assert answer == BucketAnswer(True, 2, math.ceil(START + 20), 3, math.ceil(START), 0)


def test_trackers_sharing_redis_share_a_reshaped_limits_buckets(
    stores: RedisStores, ledger_path: Path, clock: ManualClock
) -> None:
    """Bucket names come from the limit's shape, not from each Tracker's history:
    one started after a reshape enforces the same buckets as one that saw it."""
    first_store = stores.new()
    with Tracker(ledger_path, clock=clock, rate_limits=first_store) as first:
        limit = first.rate_limits.create(name="r", limit_value=5, window="hour")
        first.rate_limits.update(limit.id, limit_value=3)  # reshaped: fresh buckets
        first.usage(customer_id="c", event_type="e")
        shared = stores.new(prefix=first_store._prefix)
        with Tracker(ledger_path, clock=clock, rate_limits=shared) as later:
            answer = later.usage(customer_id="c", event_type="e")
            assert answer.rate_limits[0].remaining == 1  # the first Tracker's event counted
        assert first.usage(customer_id="c", event_type="e").rate_limits[0].remaining == 0
        first.rate_limits.update(limit.id, name="renamed")  # not a reshape: same buckets
        with pytest.raises(RateLimitExceeded):
            first.usage(customer_id="c", event_type="e")
