"""Tracker: check rate limits -> check quotas -> record, in process.

The Tracker is the face: it validates what callers give it, owns the
ledger and the rate-limit store, and hands every call to its
:class:`~limitry_local.engine.Engine`, where the rules run (see
:mod:`limitry_local.engine` for the map).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from limitry_local.alerts import AlertCallback
from limitry_local.analytics import UsageReport
from limitry_local.buckets import BucketStore, RateLimitStore
from limitry_local.decision_log import logged
from limitry_local.denials import TrackerStats
from limitry_local.engine import Engine
from limitry_local.engine.clock import EngineClock
from limitry_local.errors import InvalidRequestError, parse
from limitry_local.inputs import wait_seconds
from limitry_local.ledger import Durability, Ledger, LedgerBackend, check_options
from limitry_local.limits_as_code import Change, LimitsConfig, parse_limits
from limitry_local.limits_as_code import apply as apply_limits
from limitry_local.limits_as_code import plan as plan_limits
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.models import TrackPostRequest, TrackPostResponse
from limitry_local.periods import Clock
from limitry_local.reservations import Guard, Reservation, estimated
from limitry_local.resources import Customers, Events, Quotas, RateLimits

DEFAULT_MAX_BUCKETS = 1_000_000
DEFAULT_HOLD_TTL = 600.0
"""Seconds an unsettled reservation holds its amounts."""
MAX_TTL = 365 * 86_400
"""The longest hold: its expiry must be a date (a ttl of 1e12 s is a typo, not a plan)."""

# How a repr names the ledgers this package has (by class name: no import of psycopg).
_LEDGER_KINDS = {"Ledger": "SQLite", "MemoryLedger": "memory", "PostgresLedger": "PostgreSQL"}


class Tracker:
    """Usage tracking with enforcement: the hosted ``POST /track`` in process.

    >>> tracker = Tracker()                       # ledger in memory
    >>> _ = tracker.rate_limits.create(name="rpm", limit_value=60, window="minute")
    >>> tracker.usage(customer_id="cust_1", event_type="model_call").allowed
    True

    ``Tracker("usage.db")`` keeps the ledger (limits, events, quota counters)
    in a SQLite file that a later Tracker reopens.  Token buckets live in
    memory and start full in a new process (unless ``rate_limits`` shares
    them).  ``clock`` is any zero-argument callable returning unix seconds;
    it is read once per call.  ``timeout``
    is how long a write waits for another connection's lock on the file
    before failing with :class:`LedgerError`.

    ``durability`` (a file ledger): ``"normal"`` commits every event and
    survives the process being killed; ``"full"`` also survives power loss;
    ``"batched"`` commits once ``flush_events`` events are pending or
    ``flush_ms`` milliseconds have passed, and a crash may lose what was not
    yet committed (see docs/reliability.md).  Several processes may share one file: quota
    admission stays exact; rate-limit buckets are per process.

    ``ledger`` takes any :class:`~limitry_local.ledger.LedgerBackend` instead
    of a path (a shared engine, see docs/scaling.md), and ``rate_limits`` any
    :class:`~limitry_local.buckets.RateLimitStore` instead of the in-memory
    buckets (``RedisBuckets``); the Tracker owns both from then on and closes
    them on :meth:`close`.

    ``sleep`` is what ``usage(wait=...)`` sleeps with (default: the clock's
    own ``sleep`` if it has one, as :class:`~limitry_local.testing.ManualClock`
    does, else :func:`time.sleep`).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        clock: Clock | None = None,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        project_id: str = "proj_local",
        timeout: float = 5.0,
        durability: Durability = "normal",
        flush_events: int = 1000,
        flush_ms: float = 50.0,
        ledger: LedgerBackend | None = None,
        rate_limits: RateLimitStore | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if isinstance(max_buckets, bool) or not isinstance(max_buckets, int) or max_buckets < 1:
            raise ValueError(f"max_buckets must be a positive integer, got {max_buckets!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        check_options(
            timeout=timeout, durability=durability, flush_events=flush_events, flush_ms=flush_ms
        )
        if ledger is not None and path is not None:
            raise ValueError("give a path or a ledger, not both")
        times = EngineClock(clock, sleep)
        # No path: Python objects, not SQLite on ":memory:", whose SQL round
        # trips cost most of a call for rows that die with the process anyway.
        backend: LedgerBackend = (
            ledger
            if ledger is not None
            else MemoryLedger()
            if path is None
            else Ledger(
                path,
                timeout=timeout,
                durability=durability,
                flush_events=flush_events,
                flush_ms=flush_ms,
            )
        )
        # Buckets run on bucket time (see EngineClock): a bucket the store
        # forgot (once full) is still full when asked again.
        store = (
            rate_limits
            if rate_limits is not None
            else BucketStore(max_buckets, lambda: times.latest)
        )
        self._engine = engine = Engine(backend, store, times, project_id=project_id)
        try:
            engine.definitions.refresh()
        except BaseException:
            backend.close()
            raise
        self.quotas = Quotas(engine)
        self.rate_limits = RateLimits(engine)
        self.events = Events(engine)
        self.customers = Customers(engine)
        self.usage_report = UsageReport(engine)

    # --- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending and release the ledger.

        A file ledger reopened later continues where this one stopped.
        """
        self._engine.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        """``<Tracker ledger=SQLite 'usage.db', buckets in memory, 1 rate limit, 2 quotas>``.

        The counts are of the definitions this Tracker has loaded; reading
        the repr does no I/O.
        """
        engine = self._engine
        kind = _LEDGER_KINDS.get(type(engine.ledger).__name__, type(engine.ledger).__name__)
        ledger = "in memory" if kind == "memory" else f"{kind} {engine.ledger.where!r}"
        store = (
            "in memory"
            if isinstance(engine.store, BucketStore)
            else f"{type(engine.store).__name__} {getattr(engine.store, 'where', '')!r}"
        )
        rates, quotas = engine.definitions.counts()
        return (
            f"<Tracker ledger {ledger}, buckets {store}, "
            f"{rates} rate limit{'' if rates == 1 else 's'}, "
            f"{quotas} quota{'' if quotas == 1 else 's'}{', closed' if engine.closed else ''}>"
        )

    @property
    def ledger(self) -> LedgerBackend:
        """The ledger, for audits and tests (``tracker.ledger.counters()``)."""
        return self._engine.ledger

    @property
    def engine(self) -> Engine:
        """The engine behind this Tracker, for the faces built on it (client, server, gate).

        Not a stable API: its modules may change in any release.
        """
        return self._engine

    def stats(self) -> TrackerStats:
        """How many calls each limit denied (and soft/shadow ones would have), in this process.

        Counted in memory since this Tracker was made, not stored in the
        ledger; see :mod:`limitry_local.denials`.
        """
        return self._engine.stats()

    @property
    def bucket_evictions(self) -> int:
        """Full buckets the in-memory store dropped at ``max_buckets`` to make room for new keys.

        Harmless (a full bucket reads as missing); 0 for another rate-limit store.
        """
        return getattr(self._engine.store, "evictions", 0)

    @property
    def bucket_refusals(self) -> int:
        """Calls refused with :class:`~limitry_local.BucketStoreFull` at ``max_buckets``.

        Each is a new key turned away because every bucket held was below
        capacity; keep ``max_buckets`` above the keys active within one
        window and it stays 0.  Always 0 for another rate-limit store.
        """
        return getattr(self._engine.store, "refusals", 0)

    @property
    def premature_bucket_evictions(self) -> int:
        """Buckets dropped before they were full: always 0, the store refuses a new key instead.

        Kept so code that reads it goes on working; see :attr:`bucket_refusals`.
        """
        return getattr(self._engine.store, "premature_evictions", 0)

    def flush(self) -> None:
        """Commit the pending batch now (``durability="batched"``); a no-op otherwise.

        After a batch was lost (disk full), every call that writes raises the
        same :class:`LedgerError` until a ``flush()`` commits again: free the
        space, then call this (docs/reliability.md).
        """
        self._engine.flush()

    # --- limits as code ---------------------------------------------------------

    def apply(
        self,
        config: LimitsConfig | Mapping[str, Any],
        *,
        prune: bool = False,
        dry_run: bool = False,
    ) -> list[Change]:
        """Bring the ledger's limits to ``config``, by name; safe to run at every start.

        ``config`` is a :class:`~limitry_local.limits_as_code.LimitsConfig`
        or its plain form, what ``limitry-local limits apply`` reads from a
        file::

            tracker.apply({
                "rate_limits": [{"name": "rpm", "limit_value": 60, "window": "minute"}],
                "quotas": [{"name": "daily tokens", "metric": "total_tokens",
                            "limit_value": 100_000, "period": "day"}],
            })

        A declared limit is created, updated or left as it is; one the
        config does not name is kept, or deleted with ``prune=True``.
        Returns the changes (``dry_run=True``: planned, none made).  A bad
        config is a 400 naming the entry and field; two limits of one kind
        sharing a declared name, a :class:`ConflictError` (409).
        """
        wanted = config if isinstance(config, LimitsConfig) else parse_limits(config)
        if dry_run:
            with self._engine.lock:
                return plan_limits(self, wanted, prune=prune)
        # Planned and made in one exclusive scope: all or none, and two processes
        # applying one file at once make each limit once.
        with self._engine.lock, self._engine.definitions.deciding():
            return apply_limits(self, plan_limits(self, wanted, prune=prune))

    # --- POST /track ------------------------------------------------------------

    @logged
    def usage(
        self,
        event: TrackPostRequest | Mapping[str, Any] | None = None,
        /,
        *,
        # Any, not float | None: callers spread a dict of event fields
        # (``usage(**fields)``), which a typed ``wait`` would make them cast.
        wait: Any = None,
        **fields: Any,
    ) -> TrackPostResponse:
        """Check rate limits, check quotas, record the event: all or nothing.

        Takes a :class:`TrackPostRequest`, a dict in wire or snake_case form,
        or keyword arguments.  Returns the 201 body (``.headers`` holds the
        rate-limit headers); raises :class:`RateLimitExceeded` or
        :class:`QuotaExceeded` (429) when denied, and
        :class:`InvalidRequestError` (400) for a bad event.

        ``wait`` (seconds): when only rate limits deny, sleep until their
        buckets hold the event's cost and try again, for up to ``wait``
        seconds in all, instead of raising at once.  Nothing is taken while
        waiting, and the event is admitted all or nothing as without it.  A
        quota never waits (its period ends hours away): a quota denial, or a
        rate denial whose retry lies beyond what is left of ``wait``, raises
        at once.  The sleep is the Tracker's ``sleep`` (a
        :class:`~limitry_local.testing.ManualClock` advances itself).
        """
        request = parse(TrackPostRequest, event, fields)
        if wait is None or wait == 0:
            return self._engine.use(request)
        attempts = self._engine.attempts(request, wait_seconds(wait))
        sleep = self._engine.clock.sleep
        try:
            while True:
                sleep(next(attempts))
        except StopIteration as admitted:
            response: TrackPostResponse = admitted.value
            return response

    # --- reserve, then settle ------------------------------------------------------

    @logged
    def reserve(
        self,
        event: TrackPostRequest | Mapping[str, Any] | None = None,
        /,
        *,
        estimate: int | Mapping[str, Any] | None = None,
        ttl: float = DEFAULT_HOLD_TTL,
        **fields: Any,
    ) -> Reservation:
        """Hold ``estimate`` against every limit the event matches: a 429 now if it does not fit.

        ``estimate`` is the expected totalTokens, or a dict of amounts
        (``total_tokens``, ``input_tokens``, ``output_tokens``,
        ``cost_cents``); without it the event's own amounts are the
        estimate.  Returns a :class:`Reservation`: ``commit(...)`` with the
        real amounts records the event, ``release()`` gives the hold back,
        and after ``ttl`` seconds an unsettled hold expires.  See
        :mod:`limitry_local.reservations`.
        """
        request = parse(TrackPostRequest, event, fields)
        estimate_request = estimated(request, estimate)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
            raise InvalidRequestError(
                f"ttl: must be a number of seconds above 0, at most {MAX_TTL:,} (a year), "
                f"got {ttl!r}"
            )
        return self._engine.reserve(request, estimate_request, ttl)

    def guard(
        self,
        event: TrackPostRequest | Mapping[str, Any] | None = None,
        /,
        *,
        estimate: int | Mapping[str, Any] | None = None,
        ttl: float = DEFAULT_HOLD_TTL,
        **fields: Any,
    ) -> Guard:
        """A reservation around a block or each call of a function (see :class:`Guard`)."""
        # Validated now, so a bad event fails where the guard is written.
        request = parse(TrackPostRequest, event, fields)
        estimated(request, estimate)
        return Guard(lambda: self.reserve(request, estimate=estimate, ttl=ttl))

    # --- quota alerts -------------------------------------------------------------

    def on_alert(self, callback: AlertCallback) -> AlertCallback:
        """Call ``callback(entry)`` with each :class:`QuotaAlertLog` an alert of this Tracker fires.

        Usable as a decorator.  Callbacks run in the thread whose event fired
        the alert, after the event is recorded and outside the Tracker's
        lock; one that raises is logged (logger ``limitry_local.tracker``)
        and tracking goes on.  Only the process that recorded the event
        calls its callbacks.
        """
        if not callable(callback):
            raise TypeError(f"on_alert takes a callable, got {callback!r}")
        if inspect.iscoroutinefunction(callback):
            # Called from sync code with no loop to run it: it would never run.
            raise TypeError(
                f"on_alert takes a plain function, got the coroutine function {callback!r}; "
                "wrap it, e.g. in loop.call_soon_threadsafe or asyncio.run_coroutine_threadsafe"
            )
        with self._engine.lock:
            self._engine.definitions.alerts.callbacks.append(callback)
        return callback
