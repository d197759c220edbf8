"""Token-bucket arithmetic and the bounded in-memory bucket store.

A bucket holds ``capacity`` tokens and refills continuously at ``capacity``
per ``window`` seconds.  :func:`take` is pure: it answers whether ``cost``
tokens fit at ``now`` and what the bucket holds afterwards; the store only
keeps states.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from limitry_local.errors import BucketStoreFull
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


class BucketAsk(NamedTuple):
    """One bucket an event charges: which, its shape, and what the event costs."""

    key: Hashable
    capacity: int
    window: float
    cost: int
    largest: int = 0
    """The largest capacity any event may meet on this bucket, when events meet
    different ones (a rate limit's override outside ``per``); 0 when it is
    ``capacity``.  A store keeps the bucket until it would be full at this
    one: forgotten when full for a smaller capacity, it would read as full to
    an event meeting the larger, which refills to it later."""


class BucketAnswer(NamedTuple):
    """What a store answers for one bucket.

    ``remaining`` and ``reset`` (unix seconds) are the bucket after the
    event: charged if it was allowed, else drained to 0, which is what
    charging an event that does not fit does to a soft or shadow limit's
    bucket (docs/semantics.md); ``current_*`` are the bucket as it stood
    before the event (what a denial's body and a check show).
    """

    allowed: bool
    remaining: int
    reset: int
    current_remaining: int
    current_reset: int
    retry_after: int


class BucketTime(NamedTuple):
    """One reading of the tracker's clocks, for a store to pick the one it trusts."""

    now: float
    """Bucket time in this process: monotonic, never earlier than a previous reading."""
    asked_at: float
    """The caller's reading of the same clock (earlier than ``now`` after a step back)."""
    offset: float
    """Unix seconds minus bucket time, to state resets as unix seconds."""
    wall: float
    """The latest wall time read (unix seconds): what hosts sharing buckets can agree on."""


class RateLimitStore(Protocol):
    """Where token buckets live.  The rules (refill, cost, retry) are :func:`take`'s.

    :meth:`take` decides every bucket of one event at once, all or nothing:
    nothing is taken unless every bucket allows.  What it took stays
    pending until :meth:`settle`: ``keep=True`` once the event is recorded,
    ``keep=False`` when a quota denied it or the ledger failed, which gives
    the tokens back.  The tracker calls both under its lock.
    """

    def take(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]: ...
    def settle(self, *, keep: bool) -> None: ...
    def peek(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]: ...
    def adjust(self, asks: Sequence[BucketAsk], at: BucketTime) -> None:
        """Charge each ask's cost whatever it leaves (never below 0), or give back a
        negative cost (never above capacity): a reservation settling its estimate."""
        ...

    def close(self) -> None: ...


def _decide(
    capacity: int,
    window: float,
    state: tuple[float, float] | None,
    now: float,
    cost: int,
    *,
    asked_at: float | None,
) -> tuple[bool, float, float, float, int]:
    """The rule itself: ``(allowed, tokens, tokens_after, at, retry_after)``.

    The bucket ``(tokens, updated)`` refilled to ``now`` holds ``tokens`` at
    the instant ``at``; ``tokens_after`` is what it holds once ``cost`` is
    taken (``tokens`` again when it does not fit).  Plain floats and tuples:
    the store runs this for every bucket of every event, and building
    :class:`BucketState` and :class:`BucketDecision` objects there cost more
    than the arithmetic.
    """
    if state is None:
        tokens, at = float(capacity), now
    else:
        tokens, at = state
        # A clock that stepped back keeps the later instant, so the same
        # stretch of time is never credited twice when it catches up.
        if now > at:
            tokens = min(float(capacity), tokens + (now - at) * capacity / window)
            at = now
        elif tokens > capacity:
            # One bucket, two capacities (an override outside ``per``): the event
            # meets its own.  Unclamped, the bucket would hold more than this
            # capacity, its full-again time would fall in the past, and the store
            # would forget it as full while it was nearly empty for the larger one.
            tokens = float(capacity)
    if cost <= tokens + EPSILON:
        return True, tokens, max(0.0, tokens - cost), at, 0
    # Counted from the caller's clock, not the bucket's instant: after the
    # clock stepped back, the bucket refills only once time passes ``at`` again.
    since = now if asked_at is None else min(asked_at, now)
    return False, tokens, tokens, at, retry_after(capacity, window, tokens, at, since, cost)


def retry_after(  # noqa: PLR0917 - the bucket's numbers, as the stores hold them
    capacity: int, window: float, tokens: float, at: float, since: float, cost: int
) -> int:
    """Whole seconds (>= 1) from ``since`` until ``cost`` fits in a bucket that holds
    ``tokens`` at the instant ``at``; a cost above capacity waits for a full bucket."""
    wanted = min(cost, capacity)
    retry = max(1, math.ceil(at + (wanted - tokens) / (capacity / window) - since - EPSILON))
    # From a stepped-back clock, ``at - since`` carries the rounding of two
    # instants near 1.8e9 (some 2e-7 s), past EPSILON: the bucket could fall a
    # hair short at ``since + retry``, and a caller who waited it out be told
    # to wait again (found by a deep property run).  One second more, then.
    # At ``at`` itself (a deficit below the instants' precision) nothing refills.
    later = since + retry
    held = min(float(capacity), tokens + (later - at) * capacity / window) if later > at else tokens
    if wanted > held + EPSILON:
        retry += 1
    return retry


def refill(capacity: int, window: float, state: BucketState | None, now: float) -> BucketState:
    """The bucket at ``now``: a missing bucket is full; time running backwards mints nothing."""
    if state is None:
        return BucketState(float(capacity), now)
    if now <= state.updated:
        # Clamped, as _decide clamps: one bucket may meet two capacities.
        return state if state.tokens <= capacity else BucketState(float(capacity), state.updated)
    _, tokens, _, at, _ = _decide(
        capacity, window, (state.tokens, state.updated), now, 0, asked_at=None
    )
    return BucketState(tokens, at)


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
    pair = None if state is None else (state.tokens, state.updated)
    allowed, _, after, at, retry = _decide(capacity, window, pair, now, cost, asked_at=asked_at)
    final = BucketState(after, at)
    return BucketDecision(
        allowed, final, whole(after), _full_at(capacity, capacity / window, final), retry
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
    """Bucket states in memory, at most ``maxsize`` of them, never forgetting one early.

    Why forgetting cannot over-admit: a missing bucket is treated as full,
    so dropping a bucket is only safe once it *is* full.  Each entry keeps
    the instant its bucket is full again; from then on it reads as missing
    and a sweep may drop it.  At the size bound a new key first makes room
    by dropping full buckets (``evictions`` counts them); when every bucket
    held is below capacity, the new key is refused with
    :class:`~limitry_local.BucketStoreFull` (a 503, counted in
    ``refusals``) and nothing is taken.  Dropping a bucket that is not full
    would let its key admit up to one capacity more than its limit, again
    each time a caller minting new keys pushed it out; refusing the new key
    keeps every limit, at the price of turning new keys away until a bucket
    refills.  Keep ``maxsize`` above the number of keys active within one
    window and neither happens.

    A plain dict, not a cachetools TLRU cache: the cache's get and set cost
    about 3 us per bucket per event, seven times a whole token-bucket check
    (docs/benchmarks.md).  Nor an OrderedDict kept in write order: nothing
    is dropped by age (only full buckets go, found by a sweep over every
    entry), so an order would cost each write a ``move_to_end`` and buy
    nothing.  Full buckets are swept in bulk instead, every time the store
    has seen as many writes as it holds entries, and at the bound once a
    bucket may have become full since the last sweep (``_next_full``, the
    earliest full-again instant written) and enough new keys paid for it
    (:meth:`_make_room`), so a store whose every bucket is active refuses
    without scanning.
    """

    def __init__(self, maxsize: int, clock: Clock) -> None:
        self.evictions = 0
        """Full buckets dropped to make room for a new key at the bound."""
        self.refusals = 0
        """New keys refused (:class:`BucketStoreFull`): every bucket held was below capacity."""
        self.premature_evictions = 0
        """Buckets dropped before they were full: always 0 since the store refuses instead."""
        self._maxsize = maxsize
        self._clock = clock
        # key -> ((tokens, updated), full_at).  Plain tuples, not BucketState:
        # one fewer object per write.
        self._entries: dict[Hashable, tuple[tuple[float, float], float]] = {}
        # Writes left before the next sweep: one load and one store per write.
        self._writes_to_sweep = _MIN_SWEEP
        # No bucket held is full before this instant: the earliest full_at
        # written since the last sweep (or found by it).  Rewriting a key can
        # leave it too early, never too late, which costs a sweep, not a limit.
        self._next_full = math.inf
        # New keys the bound must still turn away before it scans for full
        # buckets again.  A scan of a million entries costs about a second:
        # each must be paid for by maxsize/8 new keys, stored (the room it
        # freed) or refused, so the work per call stays constant, amortised.
        self._asks_before_scan = 0
        self._pending: list[tuple[Hashable, tuple[float, float], float]] | None = None
        # (limit id, generation) pairs whose buckets the next sweep drops, full or not.
        self._retired: set[tuple[str, str]] = set()
        # What adjust() charges lost by clamping at 0, per bucket: a refund pays
        # it before adding tokens back (RedisBuckets keeps it as field o).
        self._debts: dict[Hashable, float] = {}

    def get(self, key: Hashable) -> BucketState | None:
        """The bucket's state, or None when it is unknown or already full again."""
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock():
            return None
        return BucketState(*entry[0])

    def put(self, key: Hashable, state: BucketState, full_at: float) -> None:
        """Store a bucket; :class:`BucketStoreFull` if it is new and no full bucket makes room."""
        self._put(key, (state.tokens, state.updated), full_at)

    def _put(self, key: Hashable, state: tuple[float, float], full_at: float) -> None:
        entries = self._entries
        if key not in entries and len(entries) >= self._maxsize:
            self._make_room(key, 1)
        entries[key] = (state, full_at)
        if full_at < self._next_full:  # noqa: PLR1730 (min() is a call, on every write)
            self._next_full = full_at
        # _count_write(), inline: this runs for every bucket of every event.
        left = self._writes_to_sweep - 1
        self._writes_to_sweep = left
        if left <= 0:
            self._sweep()

    def _count_write(self) -> None:
        """One write toward the next sweep (see the class docstring)."""
        left = self._writes_to_sweep - 1
        self._writes_to_sweep = left
        if left <= 0:
            self._sweep()

    def taker(
        self, limit_id: str, generation: str, capacity: float, window: float
    ) -> Callable[[tuple[str, ...], int, float], bool | None]:
        """One enforced limit's take, compiled for :class:`~limitry_local.gate.RateGate`.

        ``take(key, cost, now)`` answers True (taken), False (denied, nothing
        taken) or None (a new key whose values are not all str: the caller
        goes the checked way, which raises).  ``now`` is bucket time, never
        earlier than the last.  The same arithmetic as :func:`_decide` and
        the same bookkeeping as :meth:`_put` (including the refusal at the
        bound), inline and on closure variables: the gate is measured against
        a dict token bucket (docs/benchmarks.md, a1), and every attribute
        load and call counts.
        """
        rate = capacity / window
        entries = self._entries
        # Bound once: a closure variable is one load, a method lookup three.
        lookup = entries.get
        store = self

        def take(key: tuple[str, ...], cost: int, now: float) -> bool | None:
            bucket = (limit_id, generation, key)
            entry = lookup(bucket)
            if entry is None:
                for value in key:
                    if value.__class__ is not str:
                        return None  # buckets are named by text: the caller raises
                tokens = capacity
            elif entry[1] <= now:
                tokens = capacity
            else:
                tokens, at = entry[0]
                if now > at:
                    tokens += (now - at) * capacity / window
                    if tokens > capacity:  # noqa: PLR1730 (min() is a call: slower)
                        tokens = capacity
                else:
                    now = at  # the clock stepped back: keep the later instant
            if cost > tokens + EPSILON:
                return False
            if cost or tokens != capacity:  # else nothing taken from a full bucket: kept as missing
                tokens -= cost
                if tokens < 0.0:  # noqa: PLR1730
                    tokens = 0.0
                # math.ceil() in float arithmetic: the same whole second, without
                # the call, which was a sixth of this function.
                full = -((-now - (capacity - tokens) / rate) // 1.0)
                if entry is None:
                    if len(entries) >= store._maxsize:
                        store._make_room(bucket, 1)
                    # Only a new bucket can lower _next_full: a take never brings a
                    # held bucket's full instant closer (it drains it).
                    if full < store._next_full:  # noqa: PLR1730
                        store._next_full = full
                entries[bucket] = ((tokens, now), full)
            # Every take counts toward the next sweep, rewrites and takes of
            # nothing too: at the bound, the repeat traffic's sweep is what
            # frees full buckets for new keys (see _make_room).
            left = store._writes_to_sweep - 1
            store._writes_to_sweep = left
            if left <= 0:
                store._sweep()
            return True

        return take

    # --- RateLimitStore ---------------------------------------------------------

    def take(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]:
        """Decide every bucket; the states are written only by ``settle(keep=True)``.

        Room for the event's new keys is made (or refused) here, before
        anything is recorded, so ``settle`` never meets a full store.
        """
        answers = self._decide(asks, at)
        entries = self._entries
        pending = self._pending
        if pending and len(entries) + len(pending) > self._maxsize:
            new = [key for key, _, _ in pending if key not in entries]
            if new and len(entries) + len(new) > self._maxsize:
                # The sweep that makes room also drops this event's own keys
                # that are full: they need room again.
                now = at.now
                full = sum(1 for key, _, _ in pending if key in entries and entries[key][1] <= now)
                try:
                    self._make_room(new[0], len(new) + full)
                except BucketStoreFull:
                    self._pending = None
                    raise
        return answers

    def _decide(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]:
        answers = []
        pending: list[tuple[Hashable, tuple[float, float], float]] = []
        allowed = True
        lookup = self._entries.get
        # Read once, not per bucket: usage() asks one bucket per matching rate limit.
        now, asked_at, offset, _ = at
        since = asked_at if asked_at < now else now
        ceil = math.ceil
        floor = math.floor
        new = _new_tuple
        for key, capacity, window, cost, largest in asks:
            # The module's _decide(), inline: its keyword call cost more per
            # bucket than the arithmetic (tests/test_buckets.py holds the
            # store to take() and peek()).
            rate = capacity / window
            entry = lookup(key)
            if entry is None or entry[1] <= now:
                tokens, instant = float(capacity), now
            else:
                tokens, instant = entry[0]
                if now > instant:
                    tokens += (now - instant) * capacity / window
                    if tokens > capacity:  # min() is a call, per bucket
                        tokens = float(capacity)
                    instant = now
                elif tokens > capacity:
                    # One bucket, two capacities (an override outside ``per``).
                    tokens = float(capacity)
            # full_at() of the bucket before and after, without building either;
            # floor(x + EPSILON) is whole(), inline.
            current_reset = ceil(instant + (capacity - tokens) / rate + offset)
            if cost <= tokens + EPSILON:
                after = tokens - cost
                if after < 0.0:  # noqa: PLR1730
                    after = 0.0
                full = instant + (capacity - after) / rate
                # Positional, through tuple.__new__: the named tuple's own
                # constructor is a Python call, once per bucket.
                answers.append(
                    new(
                        BucketAnswer,
                        (
                            True,
                            floor(after + EPSILON),
                            ceil(full + offset),
                            floor(tokens + EPSILON),
                            current_reset,
                            0,
                        ),
                    )
                )
                if largest > capacity:
                    # Kept until full at the largest capacity it may meet (BucketAsk).
                    full = instant + (largest - after) / (largest / window)
                elif after >= capacity:
                    # Nothing taken from a full bucket: keeping it would only hold
                    # a slot (a missing bucket reads as full) until its rounded
                    # full-again second, and at max_buckets turn a key away.  It
                    # still counts toward the next sweep, as a write would.
                    self._count_write()
                    continue
                # The stored instant: math.ceil() as float arithmetic, no call.
                pending.append((key, (after, instant), -((-full) // 1.0)))
            else:
                allowed = False
                retry = retry_after(capacity, window, tokens, instant, since, cost)
                answers.append(
                    new(
                        BucketAnswer,
                        (
                            False,
                            0,
                            ceil(instant + capacity / rate + offset),
                            floor(tokens + EPSILON),
                            current_reset,
                            retry,
                        ),
                    )
                )
        self._pending = pending if allowed else None
        return answers

    def settle(self, *, keep: bool) -> None:
        pending, self._pending = self._pending, None
        if keep and pending is not None:
            for key, state, full_at in pending:
                self._put(key, state, full_at)

    def peek(self, asks: Sequence[BucketAsk], at: BucketTime) -> list[BucketAnswer]:
        """What ``take`` would answer, taking nothing; a new key needs no room to be read."""
        answers = self._decide(asks, at)
        self._pending = None
        return answers

    def adjust(self, asks: Sequence[BucketAsk], at: BucketTime) -> None:
        """Apply every ask that has room; then :class:`BucketStoreFull` if one had none.

        Its callers have recorded the event already and log the error: an
        unenforced (soft, shadow) limit's bucket that found no room only
        misses a log line of what it would have denied.
        """
        now = at.now
        refused: BucketStoreFull | None = None
        debts = self._debts
        for key, capacity, window, cost, largest in asks:
            entry = self._entries.get(key)
            state = None if entry is None or entry[1] <= now else BucketState(*entry[0])
            current = refill(capacity, window, state, now)
            # A charge past the tokens (an overrun) is lost at 0; a refund after
            # it (another reservation released) would hand those tokens out
            # again: a strict order without that hold had them there to charge.
            owed = debts.pop(key, 0.0)
            if current.tokens >= capacity:
                owed = 0.0  # found full: a strict order is full here too
            paid = min(-cost, owed) if cost < 0 else 0.0
            tokens = current.tokens - cost - paid
            after = BucketState(min(float(capacity), max(0.0, tokens)), now)
            debt = owed - paid + max(0.0, -tokens)
            kept = largest if largest > capacity else capacity
            if after.tokens >= kept:
                # Left full (nothing taken, or all given back): a missing bucket
                # reads as full, and holds no slot (as in _decide).
                self._entries.pop(key, None)
                self._count_write()
                continue
            try:
                self.put(key, after, math.ceil(full_at(kept, window, after)))
            except BucketStoreFull as exc:
                refused = exc
                continue
            # Only beside a stored bucket, so a sweep that drops it drops this
            # too: a debt without its bucket would be kept for good.
            if after.tokens < capacity and debt > 0:
                debts[key] = debt
        if refused is not None:
            raise refused

    def close(self) -> None:
        self._entries.clear()
        self._debts.clear()

    def retire(self, pairs: set[tuple[str, str]]) -> None:
        """Forget the buckets of these ``(limit id, generation)`` pairs at the next sweep.

        A changed limit's old generation, or a deleted limit, is never read
        again: left to refill, its buckets held max_buckets' room for up to a
        window, and at the bound every key was refused meanwhile (found in
        review).  The next ask at the bound sweeps at once."""
        self._retired |= pairs
        self._next_full = -math.inf
        self._asks_before_scan = 0

    def _sweep(self) -> int:
        """Drop every full bucket, and every bucket of a retired limit; how many went."""
        now = self._clock()
        entries = self._entries
        retired, self._retired = self._retired, set()
        if retired:
            full = [
                key
                for key, (_, full_at) in entries.items()
                if full_at <= now or (isinstance(key, tuple) and key[:2] in retired)
            ]
        else:
            full = [key for key, (_, full_at) in entries.items() if full_at <= now]
        for key in full:
            del entries[key]
        if self._debts:
            # A bucket gone is full: it owes nothing.
            for key in full:
                self._debts.pop(key, None)
        # A small store is cheap to scan: it may look at every ask.
        scan_every = self._maxsize // 8 if self._maxsize > _MIN_SWEEP else 0
        self._asks_before_scan = max(0, scan_every - len(full))
        self._next_full = min((full_at for _, full_at in entries.values()), default=math.inf)
        self._writes_to_sweep = max(_MIN_SWEEP, len(entries))
        return len(full)

    def _make_room(self, key: Hashable, needed: int) -> None:
        """Drop full buckets until ``needed`` new keys fit; refuse ``key`` when they cannot.

        Only full buckets go, as they change no answer.  The sweep runs only
        once some bucket may have become full since the last one, and (in a
        store of more than ``_MIN_SWEEP`` buckets) only once ``maxsize // 8``
        new keys have been stored or refused since the last, so a store at
        its bound costs constant work per call, amortised, whatever a caller
        minting keys does.  The price: after a sweep that found few full
        buckets, a new key may be refused for up to that many asks while a
        bucket is full again; never is a key admitted past its limit.
        """
        now = self._clock()
        self._asks_before_scan -= 1
        if self._next_full <= now and self._asks_before_scan < 0:
            self.evictions += self._sweep()
        if len(self._entries) + needed <= self._maxsize:
            return
        self.refusals += 1
        wait = max(1, math.ceil(self._next_full - now)) if self._next_full < math.inf else 1
        raise BucketStoreFull(
            f"rate-limit bucket store full: all {self._maxsize} buckets (max_buckets) are "
            f"below capacity, and forgetting one would let its key past its limit, so the "
            f"new bucket {_bucket_name(key)} is refused and nothing was charged; the first "
            f"bucket is full again in {wait} s.  Raise Tracker(max_buckets=...) above the "
            "number of keys active within one window, or share buckets in Redis "
            "(RedisBuckets)",
            wait,
        )

    def __len__(self) -> int:
        return len(self._entries)


def _bucket_name(key: Hashable) -> str:
    """A bucket as an error names it: the tracker's keys are (limit id, generation, values)."""
    if isinstance(key, tuple) and len(key) == 3 and isinstance(key[2], tuple):
        values = ", ".join(map(repr, key[2]))
        return f"of rate limit {key[0]} for ({values})"
    return repr(key)


_new_tuple = tuple.__new__

# Sweeping a small store often is cheap; below this many writes it is not worth it.
_MIN_SWEEP = 1024
