"""One rate limit's buckets on their own: the rate-only path.

``usage()`` is the whole ``POST /track``: it validates an event, matches
every limit, checks quotas and records.  An application that only wants to
turn away a caller who is going too fast (an HTTP middleware, a retry loop)
pays for all of that on every request.  A :class:`RateGate` is bound to one
rate limit and answers one question, "may this key spend ``cost`` now?",
taking the tokens when it may: the same buckets ``usage()`` charges, with
none of the rest.

What a hit is not: it is not an event.  Nothing is recorded, no quota is
charged or checked, no alert fires.  The limit's ``dimensionFilters`` are not
consulted either (the caller chose the limit); overrides are, as long as
they are keyed on the limit's ``per`` dimensions, which are all a hit knows.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

from limitry_local.buckets import BucketAsk, BucketStore
from limitry_local.dimensions import describe_key
from limitry_local.engine import Engine
from limitry_local.engine.rules import RateRule
from limitry_local.errors import BucketStoreFull, InvalidRequestError
from limitry_local.models import MAX_AMOUNT, effective_limit

logger = logging.getLogger("limitry_local.tracker")

# A gate on a ledger that other processes share looks for their changes to
# its limit at most this often; its own process's changes it sees at once.
REFRESH_SECONDS = 1.0


class _Hit(Protocol):
    def __call__(self, *key: str, cost: int = 1) -> bool: ...


_HIT_DOC = """Take ``cost`` tokens from ``key``'s bucket: True, or False (nothing taken).

``key`` is the values of the limit's ``per`` dimensions, in order, as str;
``cost`` is in the limit's metric (1 for a request).  See :class:`RateGate`.
"""


class RateGate:
    """``tracker.rate_limits.gate(rate_limit_id)``: hit one rate limit's bucket directly.

    >>> from limitry_local import Tracker
    >>> tracker = Tracker()
    >>> rpm = tracker.rate_limits.create(
    ...     name="rpm", limit_value=2, window="minute", per=["customer_id"]
    ... )
    >>> gate = tracker.rate_limits.gate(rpm.id)
    >>> [gate.hit("cust_1"), gate.hit("cust_1"), gate.hit("cust_1"), gate.hit("cust_2")]
    [True, True, False, True]

    ``gate.hit(*key, cost=1)`` takes ``cost`` tokens from ``key``'s bucket
    and answers True, or False (nothing taken) when they do not fit.
    ``key`` is the event's value of each of the limit's ``per`` dimensions,
    in order: ``gate.hit("cust_1")`` for ``per=["customer_id"]``,
    ``gate.hit()`` for a limit without ``per``.  ``cost`` is in the limit's
    metric: 1 for a request, or the tokens for a ``total_tokens`` limit.

    A disabled limit always answers True.  A soft or shadow limit also
    answers True and charges the bucket, as ``usage()`` does.  A gate
    follows its limit's changes (a reshape starts fresh buckets, as for
    ``usage()``) and raises :class:`~limitry_local.NotFoundError` once the
    limit is deleted.
    """

    __slots__ = ("_definitions", "_engine", "_id", "_refresh_at", "_rule", "hit")

    hit: _Hit

    def __init__(self, engine: Engine, rate_limit_id: str) -> None:
        self._engine = engine
        self._definitions = engine.definitions
        self._id = rate_limit_id
        # Bucket time at which to look for other processes' changes again:
        # at the first hit on a shared ledger, never on one no other can change.
        self._refresh_at = -math.inf if engine.ledger.shared else math.inf
        with engine.lock:
            self._bind(self._definitions.rate_rule(rate_limit_id))  # NotFound, or a 400

    @property
    def rate_limit_id(self) -> str:
        """The id of the rate limit whose buckets this gate hits."""
        return self._id

    def __repr__(self) -> str:
        return f"<RateGate {self._id}>"

    def _bind(self, rule: RateRule) -> None:
        """Compile ``hit`` for the limit as it stands (called again whenever it changes)."""
        limit = rule.limit
        outside = [name for name in limit.overrides if name not in limit.per]
        if outside:
            raise InvalidRequestError(
                f"rate limit {self._id!r} has overrides on {outside!r}, which are not among "
                f"its per dimensions {limit.per!r}: a gate hit knows only those; "
                "use usage() for this limit"
            )
        self._rule = rule
        store = self._engine.store
        if (
            isinstance(store, BucketStore)
            and limit.enabled
            and rule.enforced
            and not limit.overrides
        ):
            self.hit = self._compiled(rule, store)
        else:
            self.hit = self._hit_slowly

    def _compiled(self, rule: RateRule, store: BucketStore) -> _Hit:
        """The plainest case: an enforced, enabled limit without overrides, on the
        in-memory store, decided by the store's compiled take (:meth:`BucketStore.taker`).

        On a shared ledger, a hit past ``_refresh_at`` first goes the slow
        way, which looks for other processes' changes.  Every check here is
        a closure variable or one attribute load: this path is measured
        against a dict token bucket (docs/benchmarks.md, a1).
        """
        engine = self._engine
        clock = engine.clock
        loaded = self._definitions.loaded_rules.get  # a builtin call, not a method's
        limit_id = self._id
        arity = len(rule.limit.per)
        take = store.taker(
            limit_id, rule.generation, float(rule.limit.limit_value), float(rule.seconds)
        )
        slowly = self._hit_slowly
        gate = self
        ticker = clock.ticker
        if ticker is None:
            # An injected clock: read and validated by the engine.
            def ticker() -> float:
                engine.now()
                return clock.latest

        def hit(*key: str, cost: int = 1) -> bool:
            # acquire/release, not `with`: the special-method lookups of a
            # with block cost a fifth of this function.
            lock = engine.lock
            lock.acquire()
            try:
                if (
                    loaded(limit_id) is not rule
                    or engine.closed
                    or len(key) != arity
                    or cost.__class__ is not int  # not a bool, nor a float
                    or cost < 0
                    or cost > MAX_AMOUNT
                ):
                    return slowly(*key, cost=cost)
                now = ticker()
                latest = clock.latest
                if now > latest:
                    clock.latest = now
                else:
                    now = latest
                if now >= gate._refresh_at:
                    return slowly(*key, cost=cost)  # time to look for other processes' changes
                taken = take(key, cost, now)
                return slowly(*key, cost=cost) if taken is None else taken
            finally:
                lock.release()

        hit.__name__ = "hit"
        hit.__qualname__ = "RateGate.hit"
        hit.__doc__ = _HIT_DOC
        return hit

    def _hit_slowly(self, *key: str, cost: int = 1) -> bool:
        # Every other case, through the store's take and settle as usage() uses
        # them; also where each argument is checked and the limit re-read.
        with self._engine.lock:
            if self._refreshed() and self.hit != self._hit_slowly:
                return self.hit(*key, cost=cost)
            capacity = self._checked(key, cost)
            return True if capacity is None else self._hit_store(key, capacity, cost)

    def retry_after(self, *key: str, cost: int = 1) -> int:
        """Whole seconds until ``cost`` tokens fit in ``key``'s bucket; 0 if they fit now.

        Takes nothing: for the ``Retry-After`` of a 429 after ``hit``
        answered False.  The same count as ``usage()``'s denial (a cost
        above the limit's capacity waits for a full bucket).  0 for a
        disabled, soft or shadow limit, which never deny.
        """
        engine = self._engine
        with engine.lock:
            self._refreshed()
            capacity = self._checked(key, cost)
            rule = self._rule
            if capacity is None or not rule.enforced:
                return 0
            ask = BucketAsk((self._id, rule.generation, key), capacity, rule.seconds, cost)
            (answer,) = engine.store.peek([ask], engine.clock.bucket_time())
            return 0 if answer.allowed else answer.retry_after

    def _checked(self, key: tuple[str, ...], cost: int) -> int | None:
        """The capacity ``key`` meets (None: the limit is disabled), once the arguments pass."""
        limit = self._rule.limit
        if len(key) != len(limit.per):
            raise TypeError(
                f"rate limit {self._id!r} is per {limit.per!r}: "
                f"give {len(limit.per)} key value(s), got {len(key)}"
            )
        for value in key:
            if not isinstance(value, str):
                # usage() names buckets by the event's text values: 1 is not "1".
                raise TypeError(f"key values must be str, got {value!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= MAX_AMOUNT:
            raise InvalidRequestError(
                f"cost: must be an integer from 0 to {MAX_AMOUNT}, got {cost!r}"
            )
        if not limit.enabled:
            return None
        if not limit.overrides:
            return limit.limit_value
        return effective_limit(
            limit.limit_value, limit.overrides, dict(zip(limit.per, key, strict=True))
        )

    def _refreshed(self) -> bool:
        """Read the clock, then the limit again if it changed or a look is due; True if rebound.

        The clock first: a closed Tracker refuses, and the look is on time.
        """
        engine = self._engine
        engine.now()
        due = engine.ledger.shared and engine.clock.latest >= self._refresh_at
        if not due and self._definitions.loaded_rules.get(self._id) is self._rule:
            return False
        if due:
            self._definitions.refresh()
            self._refresh_at = engine.clock.latest + REFRESH_SECONDS
        self._bind(self._definitions.rate_rule(self._id))  # NotFoundError once deleted
        return True

    def _hit_store(self, key: tuple[str, ...], capacity: int, cost: int) -> bool:
        rule = self._rule
        limit = rule.limit
        engine = self._engine
        ask = BucketAsk((self._id, rule.generation, key), capacity, rule.seconds, cost)
        at = engine.clock.bucket_time()
        store = engine.store
        if not rule.enforced:
            (answer,) = store.peek([ask], at)
            if not answer.allowed:
                logger.info(
                    "%s rate limit %r would have denied %s (a gate hit)",
                    limit.mode,
                    limit.name,
                    describe_key(limit.per, key),
                )
            try:
                store.adjust([ask], at)
            except BucketStoreFull as exc:
                # As usage() does: a limit that never denies is not charged, and says so.
                logger.warning("%s rate limit %r not charged: %s", limit.mode, limit.name, exc)
            return True
        (answer,) = store.take([ask], at)
        store.settle(keep=answer.allowed)
        return answer.allowed


# What help(gate.hit) shows on either path.
RateGate._hit_slowly.__doc__ = _HIT_DOC
