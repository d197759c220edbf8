"""Token-bucket arithmetic and the bounded in-memory bucket store.

A bucket holds ``capacity`` tokens and refills continuously at ``capacity``
per ``window`` seconds.  :func:`take` is pure: it answers whether ``cost``
tokens fit at ``now`` and what the bucket holds afterwards; the store only
keeps states.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from cachetools import TLRUCache

from limitry_local.periods import Clock

# Refill is float arithmetic: 4 tokens per 60 s refilled over 15 s can come
# to 0.9999999999999999.  Amounts within EPSILON of a whole token count as
# that token, so waiting out Retry-After always succeeds; the most this can
# over-admit is EPSILON of a token per decision.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class BucketState:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class BucketDecision:
    allowed: bool
    state: BucketState
    """The state after the event if allowed, else the refilled state at ``now``."""
    remaining: int
    reset: int
    """Unix second at which the bucket would be full again."""
    retry_after: int
    """Whole seconds (>= 1) until the cost would fit; 0 when allowed."""


def refill(capacity: int, window: float, state: BucketState | None, now: float) -> BucketState:
    """The bucket at ``now``: a missing bucket is full; time running backwards mints nothing."""
    if state is None:
        return BucketState(float(capacity), now)
    if now <= state.updated:
        # A clock that stepped back keeps the later instant, so the same
        # stretch of time is never credited twice when it catches up.
        return state
    tokens = state.tokens + (now - state.updated) * capacity / window
    return BucketState(min(float(capacity), tokens), now)


def take(
    capacity: int,
    window: float,
    state: BucketState | None,
    now: float,
    cost: int,
    *,
    asked_at: float | None = None,
) -> BucketDecision:
    """Try to take ``cost`` tokens at ``now``.

    ``asked_at`` is the caller's clock when it reads earlier than ``now``
    (the tracker passes its monotonic time as ``now``); ``Retry-After`` is
    counted from it, so waiting that long on the caller's clock suffices.
    """
    current = refill(capacity, window, state, now)
    rate = capacity / window
    at = current.updated
    if cost <= current.tokens + EPSILON:
        after = BucketState(max(0.0, current.tokens - cost), at)
        return BucketDecision(True, after, whole(after.tokens), _full_at(capacity, rate, after), 0)
    # A cost above capacity can never fit; its retry is the time to a full bucket.
    missing = min(cost, capacity) - current.tokens
    # Counted from the caller's clock, not the bucket's instant: after the
    # clock stepped back, the bucket refills only once time passes ``at`` again.
    since = now if asked_at is None else min(asked_at, now)
    retry = max(1, math.ceil(at + missing / rate - since - EPSILON))
    return BucketDecision(
        False, current, whole(current.tokens), _full_at(capacity, rate, current), retry
    )


def peek(
    capacity: int,
    window: float,
    state: BucketState | None,
    now: float,
    *,
    asked_at: float | None = None,
) -> BucketDecision:
    """What a one-token event would see, without taking anything (the rate-limit check)."""
    decision = take(capacity, window, state, now, 1, asked_at=asked_at)
    if not decision.allowed:
        return decision
    current = refill(capacity, window, state, now)
    rate = capacity / window
    return BucketDecision(
        True, current, whole(current.tokens), _full_at(capacity, rate, current), 0
    )


def full_at(capacity: int, window: float, state: BucketState) -> float:
    """The instant (in the bucket's time) at which ``state`` would be full again."""
    return state.updated + (capacity - state.tokens) / (capacity / window)


def whole(tokens: float) -> int:
    """Whole tokens, counting an amount within EPSILON of a whole token as that token."""
    return math.floor(tokens + EPSILON)


def _full_at(capacity: int, rate: float, state: BucketState) -> int:
    return math.ceil(state.updated + (capacity - state.tokens) / rate)


class BucketStore:
    """Bucket states in memory, at most ``maxsize`` of them.

    Why eviction cannot over-admit: a missing bucket is treated as full, so
    forgetting a bucket is only safe once it *is* full.  Each entry therefore
    expires (cachetools' time-to-use) exactly when its bucket would be full
    again, after which dropping it changes no answer.  The one unsafe case is
    the size bound: when more than ``maxsize`` buckets are below capacity at
    once, the least recently used one is dropped early, and that key may then
    admit at most its missing tokens (up to one capacity) once more.
    ``premature_evictions`` counts those; keep ``maxsize`` above the number of
    keys active within one window and it stays zero.
    """

    def __init__(self, maxsize: int, clock: Clock) -> None:
        self.premature_evictions = 0
        self._cache = _BucketCache(self, maxsize, clock)

    def get(self, key: Hashable) -> BucketState | None:
        entry = self._cache.get(key)
        return None if entry is None else entry[0]

    def put(self, key: Hashable, state: BucketState, full_at: float) -> None:
        self._cache[key] = (state, full_at)

    def __len__(self) -> int:
        return len(self._cache)


def _full_expiry(key: Hashable, entry: tuple[BucketState, float], now: float) -> float:
    return entry[1]


class _BucketCache(TLRUCache[Hashable, tuple[BucketState, float]]):
    def __init__(self, owner: BucketStore, maxsize: int, timer: Clock) -> None:
        super().__init__(maxsize, _full_expiry, timer)
        self._owner = owner

    def popitem(self) -> tuple[Hashable, tuple[BucketState, float]]:
        # cachetools calls popitem only for the size bound, after expired
        # entries are gone: every call here drops a bucket that was not full.
        item = super().popitem()
        self._owner.premature_evictions += 1
        return item
