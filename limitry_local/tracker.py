"""Tracker: check rate limits -> check quotas -> record, in process.

The rules of part 3 of the spec live here and in the small pure modules
(:mod:`dimensions`, :mod:`periods`, :mod:`buckets`); the ledger and the
bucket store only hold state.  One lock serialises every call, which is what
makes admission exact under threads: a decision and the write it implies are
never interleaved with another call's.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import math
import os
import threading
import time as time_module
import weakref
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from limitry_local.alerts import AlertCallback, Alerts, Crossing, Firing, log_entry
from limitry_local.analytics import UsageReport
from limitry_local.buckets import BucketAnswer, BucketAsk, BucketStore, BucketTime, RateLimitStore
from limitry_local.decision_log import logged
from limitry_local.denials import DenialCounter, TrackerStats
from limitry_local.dimensions import (
    Dimensions,
    Key,
    KeyFunction,
    describe_key,
    extract,
    key_function,
    limit_key,
)
from limitry_local.errors import (
    InvalidRequestError,
    LimitryError,
    NotFoundError,
    QuotaExceeded,
    RateLimitExceeded,
    key_name,
    parse,
)
from limitry_local.headers import (
    FAILED_OPEN_HEADER,
    quota_denied_headers,
    rate_limit_denied_headers,
    rate_limit_headers,
)
from limitry_local.ids import new_id
from limitry_local.ledger import (
    CounterIncrement,
    Durability,
    EventRow,
    Ledger,
    LedgerBackend,
    LedgerError,
    check_options,
)
from limitry_local.limits_as_code import Change, LimitsConfig, parse_limits
from limitry_local.limits_as_code import apply as apply_limits
from limitry_local.limits_as_code import plan as plan_limits
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.metrics import amount_units, from_units, unit_scale
from limitry_local.models import (
    MAX_BATCH,
    MAX_YEAR,
    MIN_YEAR,
    CustomerUsageResponse,
    Event,
    EventBatchResponse,
    EventIngestResponse,
    FailedOpen,
    Page,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaCheckResponse,
    QuotaCreate,
    QuotaStatus,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitStatus,
    RateLimitUpdate,
    TrackDeniedResponse,
    TrackPostRequest,
    TrackPostResponse,
    trusted,
    window_seconds,
)
from limitry_local.periods import Clock, period_bounds, system_clock
from limitry_local.redis_buckets import RateLimitStoreError
from limitry_local.reservations import (
    AMOUNT_FIELDS,
    ESTIMATE_FIELDS,
    TOKEN_FIELDS,
    Guard,
    Reservation,
)
from limitry_local.resources import Customers, Events, Quotas, RateLimits

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
L = TypeVar("L", Quota, RateLimit)

DEFAULT_MAX_BUCKETS = 1_000_000
DEFAULT_HOLD_TTL = 600.0
"""Seconds an unsettled reservation holds its amounts."""
HOLD_SWEEP_SECONDS = 1.0
# A shared ledger may pick a write to give way in a deadlock ("conflict": nothing
# of it was kept).  usage() and events take their locks in one order, so only a
# rare call (a reservation settled across periods) can meet one; two more tries.
_CONFLICT_RETRIES = 2
"""How often usage() looks for expired holds (one indexed query at most once a second)."""

# How a repr names the ledgers this package has (by class name: no import of psycopg).
_LEDGER_KINDS = {"Ledger": "SQLite", "MemoryLedger": "memory", "PostgresLedger": "PostgreSQL"}

# Trackers alive in this process, weakly, for the fork hook below.
_TRACKERS: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    # Another thread of the parent may have held a Tracker's lock at the fork;
    # in the child that copy would stay locked forever.  A fresh lock lets the
    # child's calls reach the ledger, which says it was opened before the fork.
    for tracker in list(_TRACKERS):
        tracker._lock = threading.RLock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)
_EARLIEST = datetime(MIN_YEAR, 1, 1, tzinfo=timezone.utc).timestamp()
_LATEST = datetime(MAX_YEAR + 1, 1, 1, tzinfo=timezone.utc).timestamp()
_RESHAPING_QUOTA_FIELDS = ("dimension_filters", "per", "metric", "period", "timezone")
_RESHAPING_RATE_FIELDS = (
    "dimension_filters",
    "per",
    "metric",
    "limit_value",
    "window",
    "overrides",
)


class _Wait(Exception):
    """Rate limits alone deny, and their buckets refill within the wait: sleep, then retry."""

    def __init__(self, seconds: int) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class _RateRule:
    """A rate limit with what the hot path needs precomputed."""

    limit: RateLimit
    seconds: int
    generation: str
    """In its buckets' keys: a reshaped limit starts with fresh buckets.

    Stored with the definition in the ledger, not counted per process, so
    every process sharing a bucket store (Redis) names the same buckets."""
    enforced: bool
    shown: bool
    key_of: KeyFunction
    """``limit_key`` of this limit's filters and per, compiled once."""
    counts_tokens: bool


@dataclass(slots=True)
class _QuotaRule:
    """A quota with what the hot path needs precomputed, built on its first use."""

    quota: Quota
    key_of: KeyFunction
    scale: int
    second: int | None = None
    """The last whole second asked about, and its period: bounds depend on nothing else."""
    bounds: tuple[int, int] = (0, 0)


@dataclass(slots=True)
class _RateOutcome:
    rule: _RateRule
    key: Key
    ask: BucketAsk
    answer: BucketAnswer
    enforced: bool
    """False for a soft or shadow limit: its bucket was read, not taken from."""


@dataclass(slots=True)
class _QuotaOutcome:
    quota: Quota
    key: Key
    key_json: str
    start: int
    end: int
    used: int
    amount: int | None
    """The event's amount in whole units; None for a check (does anything more fit?)."""
    limit: int
    """The quota's limitValue, or the override for this event's dimensions."""
    limit_units: int
    exceeded: bool


def _exceeds(used: int, amount: int | None, limit_units: int) -> bool:
    """Over the quota: the event's ``amount`` does not fit, or (a check, no amount)
    nothing more fits."""
    return used >= limit_units if amount is None else used + amount > limit_units


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
        self._clock: Clock = clock if clock is not None else system_clock
        # What usage(wait=...) sleeps with: a clock that can sleep (ManualClock
        # advances itself) keeps a simulated wait simulated.
        self._sleep: Callable[[float], None] = (
            sleep if sleep is not None else getattr(clock, "sleep", None) or time_module.sleep
        )
        self._denials = DenialCounter()
        # Buckets measure durations.  With the system clock they use
        # time.monotonic, which NTP steps and VM resumes cannot move; an
        # injected clock (tests, simulations) drives both.
        self._ticker: Clock | None = time_module.monotonic if clock is None else None
        self._tick = 0.0
        self._offset = 0.0
        # The latest wall time read: events are stamped no earlier, so a
        # clock stepping back cannot move an event into an earlier period.
        self._wall = float("-inf")
        self._raw_now = 0.0
        self._project_id = project_id
        self._lock = threading.RLock()
        self._closed = False
        check_options(
            timeout=timeout, durability=durability, flush_events=flush_events, flush_ms=flush_ms
        )
        if ledger is not None and path is not None:
            raise ValueError("give a path or a ledger, not both")
        # No path: Python objects, not SQLite on ":memory:", whose SQL round
        # trips cost most of a call for rows that die with the process anyway.
        self._ledger: LedgerBackend = (
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
        # Rate limits run on a monotonic reading of the clock: the latest
        # instant seen.  A clock that steps back makes bucket time stand still
        # until it catches up, so no stretch of time is credited twice, and a
        # bucket the store forgot (once full) is still full when asked again.
        self._latest = float("-inf")
        self._rates: RateLimitStore = (
            rate_limits
            if rate_limits is not None
            else BucketStore(max_buckets, lambda: self._latest)
        )
        self._quotas: dict[str, Quota] = {}
        self._quota_rules: dict[str, _QuotaRule] = {}
        self._rate_rules: dict[str, _RateRule] = {}
        self._definitions_version = -1
        self._reservations: dict[str, Reservation] = {}
        self._next_hold_sweep = float("-inf")
        self._alerts = Alerts()
        try:
            self._refresh()
        except BaseException:
            self._ledger.close()
            raise
        _TRACKERS.add(self)
        self.quotas = Quotas(self)
        self.rate_limits = RateLimits(self)
        self.events = Events(self)
        self.customers = Customers(self)
        self.usage_report = UsageReport(self)

    # --- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending and release the ledger.

        A file ledger reopened later continues where this one stopped.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._rates.close()
                finally:
                    self._ledger.close()

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
        kind = _LEDGER_KINDS.get(type(self._ledger).__name__, type(self._ledger).__name__)
        ledger = "in memory" if kind == "memory" else f"{kind} {self._ledger.where!r}"
        store = (
            "in memory"
            if isinstance(self._rates, BucketStore)
            else f"{type(self._rates).__name__} {getattr(self._rates, 'where', '')!r}"
        )
        rates, quotas = len(self._rate_rules), len(self._quotas)
        return (
            f"<Tracker ledger {ledger}, buckets {store}, "
            f"{rates} rate limit{'' if rates == 1 else 's'}, "
            f"{quotas} quota{'' if quotas == 1 else 's'}{', closed' if self._closed else ''}>"
        )

    @property
    def ledger(self) -> LedgerBackend:
        """The ledger, for audits and tests (``tracker.ledger.counters()``)."""
        return self._ledger

    def stats(self) -> TrackerStats:
        """How many calls each limit denied (and soft/shadow ones would have), in this process.

        Counted in memory since this Tracker was made, not stored in the
        ledger; see :mod:`limitry_local.denials`.
        """
        with self._lock:
            return self._denials.snapshot()

    @property
    def bucket_evictions(self) -> int:
        """Full buckets the in-memory store dropped at ``max_buckets`` to make room for new keys.

        Harmless (a full bucket reads as missing); 0 for another rate-limit store.
        """
        return getattr(self._rates, "evictions", 0)

    @property
    def bucket_refusals(self) -> int:
        """Calls refused with :class:`~limitry_local.BucketStoreFull` at ``max_buckets``.

        Each is a new key turned away because every bucket held was below
        capacity; keep ``max_buckets`` above the keys active within one
        window and it stays 0.  Always 0 for another rate-limit store.
        """
        return getattr(self._rates, "refusals", 0)

    @property
    def premature_bucket_evictions(self) -> int:
        """Buckets dropped before they were full: always 0, the store refuses a new key instead.

        Kept so code that reads it goes on working; see :attr:`bucket_refusals`.
        """
        return getattr(self._rates, "premature_evictions", 0)

    def flush(self) -> None:
        """Commit the pending batch now (``durability="batched"``); a no-op otherwise.

        After a batch was lost (disk full), every call that writes raises the
        same :class:`LedgerError` until a ``flush()`` commits again: free the
        space, then call this (docs/reliability.md).
        """
        with self._lock:
            self._ensure_open()
            self._ledger.flush()

    def _stored(self, kind: type[M], row: dict[str, Any]) -> M:
        if "project_id" in kind.model_fields:
            row = {**row, "project_id": self._project_id}
        try:
            return kind.model_validate(row)
        except ValidationError as exc:
            raise LedgerError(
                f"ledger {self._ledger.where} is corrupt: a stored {kind.__name__} "
                f"({row.get('id')!r}) cannot be read ({exc.error_count()} errors); "
                "restore it from a backup",
                "corrupt",
            ) from None

    def _ensure_open(self) -> None:
        if self._closed:
            raise LimitryError("this Tracker is closed; open a new one on the ledger file")

    def _refresh(self) -> None:
        """Load the limit definitions again if any process changed them since we last looked."""
        if not self._ledger.shared and self._definitions_version >= 0:
            return  # no other connection can change this ledger
        version = self._ledger.definitions_version()
        if version == self._definitions_version:
            return
        quotas = [self._stored(Quota, row) for row in self._ledger.definitions("quotas")]
        limits = []
        for row in self._ledger.definitions("rate_limits"):
            generation = row.pop("generation", None)
            limit = self._stored(RateLimit, row)
            # A ledger from before generations were stored: the shape stands in.
            limits.append((limit, generation or _shape(limit)))
        alerts = [self._stored(QuotaAlert, row) for row in self._ledger.definitions("quota_alerts")]
        self._quotas = {quota.id: quota for quota in quotas}
        self._alerts.load(alerts)
        for gone in self._rate_rules.keys() - {limit.id for limit, _ in limits}:
            del self._rate_rules[gone]
        for limit, generation in limits:
            self._install_rate_limit(limit, generation)
        self._definitions_version = version

    def _now(self) -> float:
        self._ensure_open()
        now = self._clock()
        # Every time the tracker stamps must be a representable event time.
        if not isinstance(now, (int, float)) or not _EARLIEST <= now < _LATEST:
            raise LimitryError(
                f"the clock returned {now!r}: expected unix seconds between "
                f"{MIN_YEAR}-01-01 and {MAX_YEAR}-12-31"
            )
        self._raw_now = now
        self._wall = max(self._wall, now)
        tick = now if self._ticker is None else self._ticker()
        self._latest = max(self._latest, tick)
        self._tick = tick
        # Wall time minus bucket time, to state resets as unix seconds.
        self._offset = 0.0 if self._ticker is None else now - self._latest
        return self._wall

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
        with self._lock:
            changes = plan_limits(self, wanted, prune=prune)
            return changes if dry_run else apply_limits(self, changes)

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
            return self._use(request, 0.0)
        attempts = self._attempts(request, _wait_seconds(wait))
        try:
            while True:
                self._sleep(next(attempts))
        except StopIteration as admitted:
            response: TrackPostResponse = admitted.value
            return response

    def _attempts(
        self, request: TrackPostRequest, patience: float
    ) -> Generator[float, None, TrackPostResponse]:
        """``usage(wait=patience)`` as steps: yields each sleep it needs, returns the 201.

        The sync face sleeps with the Tracker's ``sleep``, the async face
        (:class:`~limitry_local.client.Client`) awaits; the lock is never held
        while sleeping.
        """
        ticker = self._ticker or self._clock
        started = ticker()
        slept = 0.0
        while True:
            # Both measures of the time spent: the clock (what callers see) and
            # the sum of sleeps, so a clock that does not move still ends the wait.
            left = patience - max(slept, ticker() - started)
            try:
                return self._use(request, max(0.0, left))
            except _Wait as pause:
                yield float(pause.seconds)
                slept += pause.seconds

    def _use(self, request: TrackPostRequest, patience: float) -> TrackPostResponse:
        """One attempt of :meth:`usage`; raises :class:`_Wait` for a rate denial
        that ``patience`` seconds of waiting would cure.  A write a shared ledger
        made give way in a deadlock ("conflict": nothing kept) runs again."""
        for attempt in range(_CONFLICT_RETRIES, -1, -1):
            try:
                return self._use_once(request, patience)
            except LedgerError as exc:
                if exc.reason != "conflict" or not attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _use_once(self, request: TrackPostRequest, patience: float) -> TrackPostResponse:
        """One try of :meth:`_use`: all of it is undone if it raises."""
        firings: list[Firing] = []
        with self._lock:
            now = self._now()
            taken = kept = False
            try:
                # Counters are read inside the write scope, under the ledger's
                # write lock: no other process can add to them between check
                # and record.
                if now >= self._next_hold_sweep:
                    self._release_expired(now)
                # optimistic: _use runs this again on "conflict", so a shared
                # ledger may guess the definitions version and that the key is new.
                with self._ledger.write(optimistic=True) as conn:
                    self._refresh()
                    key = request.idempotency_key
                    if key is not None:
                        stored = self._ledger.idempotent(key)
                        if stored is not None:
                            return _response_from_json(stored[1])
                    when = request.timestamp.timestamp() if request.timestamp is not None else now
                    dims = _dimensions(request)
                    failed_open: list[FailedOpen] = []
                    try:
                        rates = self._take_rates(dims, request.total_tokens or 0)
                    except RateLimitStoreError as exc:
                        failed_open = self._failed_open(dims, exc)
                        rates = []
                    taken = bool(rates)
                    quotas = self._quota_outcomes(dims, request, when, scope=conn)
                    self._deny_if_over(rates, quotas, patience)
                    response = self._admitted(new_id("evt"), rates, quotas, failed_open)
                    if self._alerts.by_quota:
                        firings = self._alerts.log(
                            self._ledger,
                            conn,
                            _crossings(quotas, response.id, self._alerts.by_quota),
                            now,
                        )
                    stored_response = _response_to_json(response) if key is not None else None
                    self._ledger.record(
                        conn,
                        [
                            (
                                _event_row(response.id, request, when),
                                _increments(quotas),
                                stored_response,
                            )
                        ],
                    )
                kept = True
            finally:
                # Tokens are kept only once the event is committed (or joined
                # its batch): a denial or a failed write gives them back.
                if taken:
                    self._rates.settle(keep=kept)
            self._charge_unenforced(rates)
        if firings:
            self._alerts.announce(firings)
        return response

    def _failed_open(self, dims: Dimensions, exc: RateLimitStoreError) -> list[FailedOpen]:
        """The limits an event passes unchecked when the rate store cannot be reached.

        Re-raises ``exc`` unless every rate limit the event matches fails
        open, and the store is unreachable (not refusing us: a wrong password
        or script is a fault to fix, not an outage to ride out).
        """
        matched, _ = self._rate_asks(dims, None)
        if exc.reason not in ("connection", "timeout") or any(
            rule.limit.fail_mode != "open" for rule, _ in matched
        ):
            raise exc
        logger.warning(
            "rate limits %s failed open for %s: %s",
            ", ".join(repr(rule.limit.name) for rule, _ in matched),
            dims.get("customer_id"),
            exc,
        )
        return [
            FailedOpen(id=rule.limit.id, name=rule.limit.name, kind="rate_limit", reason=exc.reason)
            for rule, _ in matched
            if rule.shown
        ]

    def _deny_if_over(
        self, rates: list[_RateOutcome], quotas: list[_QuotaOutcome], patience: float = 0.0
    ) -> None:
        """Raise the 429 an enforced limit calls for; log what soft and shadow ones saw.

        With ``patience`` (seconds ``usage(wait=...)`` may still wait), a
        denial by rate limits alone whose retry comes within it raises
        :class:`_Wait` instead, and counts as no denial.
        """
        over_rates = [o for o in rates if o.enforced and not o.answer.allowed]
        over_quotas = [q for q in quotas if q.exceeded and q.quota.mode == "enforce"]
        if over_rates and patience > 0 and not over_quotas:
            retry = max(o.answer.retry_after for o in over_rates)
            # A cost above a bucket's capacity never fits, however long the wait.
            if retry <= patience and all(o.ask.cost <= o.ask.capacity for o in over_rates):
                raise _Wait(retry)
        if over_rates or over_quotas:
            for o in over_rates:
                rate = o.rule.limit
                self._denials.count("rate_limit", rate.id, rate.name, rate.mode, enforced=True)
            for q in over_quotas:
                self._denials.count("quota", q.quota.id, q.quota.name, "enforce", enforced=True)
            # Waiting on a quota is pointless: its denial goes first when waiting.
            if over_rates and not (patience > 0 and over_quotas):
                raise self._rate_denial(rates, quotas)
            raise self._quota_denial(rates, quotas, self._raw_now)
        unenforced_over: list[tuple[str, Quota | RateLimit, Key]] = []
        for o in rates:
            if not o.answer.allowed:
                unenforced_over.append(("rate limit", o.rule.limit, o.key))
        for q in quotas:
            if q.exceeded:
                unenforced_over.append(("quota", q.quota, q.key))
        for kind, limit, key in unenforced_over:
            self._denials.count(
                "rate_limit" if kind == "rate limit" else "quota",
                limit.id,
                limit.name,
                limit.mode,
                enforced=False,
            )
            logger.info(
                "%s %s %r would have denied %s",
                limit.mode,
                kind,
                limit.name,
                describe_key(limit.per, key),
            )

    def _charge_unenforced(self, rates: list[_RateOutcome]) -> None:
        """Soft and shadow buckets were only read (peek): charge the admitted event to them."""
        unenforced = [o.ask for o in rates if not o.enforced]
        if unenforced:
            self._settle_tokens(unenforced)

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
        estimated = _estimated(request, estimate)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
            raise InvalidRequestError(f"ttl: must be a number of seconds > 0, got {ttl!r}")
        with self._lock:
            now = self._now()
            taken = kept = False
            try:
                self._release_expired(now)
                with self._ledger.write(durable=True) as conn:
                    self._refresh()
                    key = request.idempotency_key
                    stored = self._ledger.idempotent(key) if key is not None else None
                    if stored is not None:
                        # Recorded already: hold nothing; commit() replays.
                        first = _response_from_json(stored[1])
                        return Reservation(
                            self,
                            new_id("hold"),
                            event=request,
                            estimated=estimated,
                            asks=[],
                            expires_at=now + ttl,
                            rate_limits=first.rate_limits,
                            quotas=first.quotas,
                        )
                    when = estimated.timestamp.timestamp() if estimated.timestamp else now
                    dims = _dimensions(estimated)
                    rates = self._take_rates(dims, estimated.total_tokens or 0)
                    taken = bool(rates)
                    quotas = self._quota_outcomes(dims, estimated, when, scope=conn)
                    self._deny_if_over(rates, quotas)
                    hold_id = new_id("hold")
                    self._ledger.add_hold(conn, hold_id, _increments(quotas), now + ttl)
                kept = True
            finally:
                if taken:
                    self._rates.settle(keep=kept)
            self._charge_unenforced(rates)
            reservation = Reservation(
                self,
                hold_id,
                event=request,
                estimated=estimated,
                asks=[(o.ask, o.rule.limit.metric == "total_tokens") for o in rates],
                expires_at=now + ttl,
                rate_limits=[_rate_status(o, charged=True) for o in _shown(rates)],
                quotas=[_quota_status(o, charged=True) for o in _shown_quotas(quotas)],
            )
            self._reservations[hold_id] = reservation
            return reservation

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
        _estimated(request, estimate)
        return Guard(self, lambda: self.reserve(request, estimate=estimate, ttl=ttl))

    def _commit_reservation(
        self, reservation: Reservation, actual: Mapping[str, Any]
    ) -> TrackPostResponse:
        # Filled once the event is recorded: announced even if building the
        # answer fails afterwards, as nothing else will announce them.
        firings: list[Firing] = []
        try:
            return self._commit_locked(reservation, actual, firings)
        finally:
            if firings:
                self._alerts.announce(firings)

    def _commit_locked(
        self, reservation: Reservation, actual: Mapping[str, Any], firings: list[Firing]
    ) -> TrackPostResponse:
        final = _settled(reservation, actual)
        with self._lock:
            # Decided under the lock: two threads settling one reservation
            # must not both record it, nor both give its tokens back.
            held_tokens = reservation._begin_commit()
            now = self._now()
            try:
                fired: list[Firing] = []
                with self._ledger.write() as conn:
                    self._refresh()
                    # The key before the hold: a shared ledger takes its locks in
                    # one order (idempotency key, then counters) in every call.
                    key = final.idempotency_key
                    stored = self._ledger.idempotent(key) if key is not None else None
                    self._ledger.pop_hold(conn, reservation.id)
                    if stored is not None:
                        replay: TrackPostResponse | None = _response_from_json(stored[1])
                    else:
                        ids, _, fired = self._ingest_in(conn, [final])
                        replay = None
            except BaseException:
                reservation._abort_commit()
                raise
            firings.extend(fired)
            # Recorded: from here nothing may make the reservation look open.
            reservation._committed()
            self._reservations.pop(reservation.id, None)
            # Tokens: this Tracker took the estimate's cost at reserve() and
            # keeps it until it sees the hold expire; the event costs its own.
            self._settle_tokens(
                _rate_differences(
                    reservation,
                    final if replay is None else None,
                    charged_before=held_tokens,
                )
            )
            if replay is not None:
                return replay
            dims = _dimensions(final)
            when = final.timestamp.timestamp() if final.timestamp is not None else now
            rates = self._peek_rates(dims)
            quotas = self._quota_outcomes(dims, None, when)
            for o in quotas:
                # The counters include this event now: exceeded as usage()
                # reports it, past the limit (filling it exactly is not).
                o.exceeded = o.used > o.limit_units
            statuses = [_rate_status(o, charged=False) for o in _shown(rates)]
            return trusted(
                TrackPostResponse,
                {
                    "id": ids[0],
                    "allowed": True,
                    "rate_limits": statuses,
                    "quotas": [_quota_status(o, charged=False) for o in _shown_quotas(quotas)],
                    "failed_open": [],
                },
                {"_headers": rate_limit_headers(statuses)},
            )

    def _release_reservation(self, reservation: Reservation) -> None:
        with self._lock:
            held_tokens = reservation._begin_release()
            if held_tokens is None:
                return  # settled already
            self._ensure_open()
            with self._ledger.write(durable=True) as conn:
                self._ledger.pop_hold(conn, reservation.id)
            reservation._released()
            self._reservations.pop(reservation.id, None)
            if held_tokens:
                self._now()
                self._settle_tokens(_rate_differences(reservation, None, charged_before=True))

    def _settle_tokens(self, asks: list[BucketAsk]) -> None:
        """Charge or give back a reservation's tokens; a failure is logged, not raised.

        The ledger side is settled already: raising here would make a
        recorded event look unrecorded (and be recorded again on a retry).
        The cost of a lost adjustment is a bucket off by that much until it
        refills.
        """
        if not asks:
            return
        try:
            self._rates.adjust(asks, self._bucket_time())
        except Exception as exc:  # a store that cannot be reached, typically
            logger.warning("rate-limit tokens of a reservation not settled: %s", exc)

    def _release_expired(self, now: float) -> None:
        """Release every expired hold on the ledger, and the tokens of this Tracker's own.

        Its own write scope, so a denial that rolls back the caller's scope
        cannot undo the release (while the tokens were already given back).
        Reservations of this Tracker past their ttl give their tokens back
        whoever released their hold in the ledger (another process may have).
        """
        self._next_hold_sweep = now + HOLD_SWEEP_SECONDS
        with self._ledger.write(durable=True) as conn:
            self._ledger.pop_expired_holds(conn, now)
        for hold_id, reservation in list(self._reservations.items()):
            if reservation.expires_at <= now and reservation._expire():
                del self._reservations[hold_id]
                self._settle_tokens(_rate_differences(reservation, None, charged_before=True))

    def _admitted(
        self,
        event_id: str,
        rates: list[_RateOutcome],
        quotas: list[_QuotaOutcome],
        failed_open: list[FailedOpen],
    ) -> TrackPostResponse:
        """The 201 body, built from values just computed (see models.trusted)."""
        rate_statuses = [
            trusted(RateLimitStatus, _rate_fields(o, charged=True)) for o in _shown(rates)
        ]
        headers = rate_limit_headers(rate_statuses)
        if failed_open:
            headers[FAILED_OPEN_HEADER] = ",".join(f.id for f in failed_open)
        return trusted(
            TrackPostResponse,
            {
                "id": event_id,
                "allowed": True,
                "rate_limits": rate_statuses,
                "quotas": [
                    trusted(QuotaStatus, _quota_fields(o, charged=True))
                    for o in _shown_quotas(quotas)
                ],
                "failed_open": failed_open,
            },
            {"_headers": headers},
        )

    def _bucket_time(self) -> BucketTime:
        return BucketTime(self._latest, self._tick, self._offset, self._wall)

    def _rate_asks(
        self, dims: Dimensions, tokens: int | None
    ) -> tuple[list[tuple[_RateRule, Key]], list[BucketAsk]]:
        """Every enabled rate limit the event matches, and what it asks of each bucket.

        ``tokens`` is the event's totalTokens; None for a check, which asks
        whether a one-request event would pass.
        """
        matched = []
        asks = []
        for rule in self._rate_rules.values():
            limit = rule.limit
            if not limit.enabled:
                continue
            key = rule.key_of(dims)
            if key is None:
                continue
            cost = tokens if tokens is not None and rule.counts_tokens else 1
            matched.append((rule, key))
            asks.append(
                BucketAsk(
                    (limit.id, rule.generation, key),
                    limit.limit_for(dims) if limit.overrides else limit.limit_value,
                    rule.seconds,
                    cost,
                )
            )
        return matched, asks

    def _take_rates(self, dims: Dimensions, tokens: int) -> list[_RateOutcome]:
        """Take from every matching bucket (all or nothing); settle() keeps or gives back."""
        return self._decide_rates(dims, tokens, take=True)

    def _peek_rates(self, dims: Dimensions) -> list[_RateOutcome]:
        """What a one-request event would see, taking nothing."""
        return self._decide_rates(dims, None, take=False)

    def _decide_rates(
        self, dims: Dimensions, tokens: int | None, *, take: bool
    ) -> list[_RateOutcome]:
        matched, asks = self._rate_asks(dims, tokens)
        if not asks:
            return []
        at = self._bucket_time()
        enforced = [rule.enforced for rule, _ in matched]
        if not take:
            answers = self._rates.peek(asks, at)
        elif all(enforced):
            answers = self._rates.take(asks, at)
        else:
            # Soft and shadow limits never deny: their buckets are only read
            # here, and charged once the event is recorded.  Peek first: a
            # store keeps one pending take, which a peek must not replace.
            pairs = list(zip(asks, enforced, strict=True))
            others = iter(self._rates.peek([a for a, e in pairs if not e], at))
            to_take = [a for a, e in pairs if e]
            held = iter(self._rates.take(to_take, at) if to_take else [])
            answers = [next(held) if e else next(others) for e in enforced]
        return [
            _RateOutcome(rule, key, ask, answer, is_enforced)
            for (rule, key), ask, answer, is_enforced in zip(
                matched, asks, answers, enforced, strict=True
            )
        ]

    def _quota_outcomes(
        self,
        dims: Dimensions,
        request: TrackPostRequest | None,
        when: float,
        *,
        read_used: bool = True,
        scope: Any = None,
    ) -> list[_QuotaOutcome]:
        """Every quota the event matches, with its key, period and (if read) current usage.

        Inside a write ``scope`` the counters are read in one batch that holds
        them against other writers until the scope ends (a shared ledger
        locks them in one global order, so two writers cannot deadlock).
        """
        outcomes = []
        rules = self._quota_rules
        second = math.floor(when)
        unlocked = read_used and scope is None
        for quota in self._quotas.values():
            rule = rules.get(quota.id)
            if rule is None or rule.quota is not quota:
                rule = self._quota_rule(quota)
            key = rule.key_of(dims)
            if key is None:
                continue
            key_json = _key_json(key)
            if rule.second != second:
                rule.second = second
                rule.bounds = period_bounds(quota.period, when, quota.timezone)
            start, end = rule.bounds
            used = self._ledger.counter(quota.id, key_json, start) if unlocked else 0
            amount = (
                None
                if request is None
                else amount_units(
                    quota.metric,
                    request.total_tokens,
                    request.cost_cents,
                    request.input_tokens,
                    request.output_tokens,
                )
            )
            limit = quota.limit_for(dims) if quota.overrides else quota.limit_value
            limit_units = limit * rule.scale
            exceeded = _exceeds(used, amount, limit_units)
            outcomes.append(
                _QuotaOutcome(
                    quota, key, key_json, start, end, used, amount, limit, limit_units, exceeded
                )
            )
        if read_used and scope is not None and outcomes:
            counters = [(o.quota.id, o.key_json, o.start) for o in outcomes]
            for o, used in zip(outcomes, self._ledger.lock_counters(scope, counters), strict=True):
                o.used = used
                o.exceeded = _exceeds(used, o.amount, o.limit_units)
        return outcomes

    def _quota_rule(self, quota: Quota) -> _QuotaRule:
        """The hot path's view of a quota just loaded, created or changed.

        Kept beside ``self._quotas`` (which stays the one list of quotas) and
        rebuilt whenever the quota object there is a new one.
        """
        if len(self._quota_rules) > len(self._quotas):
            # Deleted quotas: forget them, at most once per quota deleted.
            self._quota_rules = {
                quota_id: rule
                for quota_id, rule in self._quota_rules.items()
                if quota_id in self._quotas
            }
        rule = _QuotaRule(
            quota, key_function(quota.dimension_filters, quota.per), unit_scale(quota.metric)
        )
        self._quota_rules[quota.id] = rule
        return rule

    def _rate_denial(
        self, rates: list[_RateOutcome], quotas: list[_QuotaOutcome]
    ) -> RateLimitExceeded:
        shown = _shown(rates)
        statuses = [_rate_status(o, charged=False) for o in shown]
        at, worst = max(
            ((i, o) for i, o in enumerate(shown) if o.enforced and not o.answer.allowed),
            key=lambda item: item[1].answer.retry_after,
        )
        retry = worst.answer.retry_after
        body = TrackDeniedResponse(
            error="Rate limit exceeded",
            rate_limits=statuses,
            quotas=[_quota_status(o, charged=False) for o in _shown_quotas(quotas)],
            retry_after=retry,
        )
        limit = worst.rule.limit
        detail = (
            f"rate limit {limit.name!r} ({worst.ask.capacity} per {limit.window}) exceeded for "
            f"{describe_key(limit.per, worst.key)}: retry in {retry}s"
        )
        headers = rate_limit_denied_headers(statuses[at], retry)
        return RateLimitExceeded(body, headers, detail)

    def _quota_denial(
        self, rates: list[_RateOutcome], quotas: list[_QuotaOutcome], now: float
    ) -> QuotaExceeded:
        statuses = [_rate_status(o, charged=False) for o in _shown(rates)]
        shown = _shown_quotas(quotas)
        quota_statuses = [_quota_status(o, charged=False) for o in shown]
        at, worst = max(
            ((i, o) for i, o in enumerate(shown) if o.exceeded and o.quota.mode == "enforce"),
            key=lambda item: item[1].end,
        )
        retry = max(1, math.ceil(worst.end - now))
        body = TrackDeniedResponse(
            error="Quota exceeded", rate_limits=statuses, quotas=quota_statuses, retry_after=retry
        )
        quota = worst.quota
        resets = datetime.fromtimestamp(worst.end, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        detail = (
            f"quota {quota.name!r} ({quota.metric} per {quota.period}) exceeded for "
            f"{describe_key(quota.per, worst.key)}: {_display(quota, worst.used)} used of "
            f"{worst.limit}, this event needs {_display(quota, worst.amount or 0)}, "
            f"resets {resets}"
        )
        headers = quota_denied_headers(statuses, quota_statuses[at], retry)
        return QuotaExceeded(body, headers, detail)

    # --- events (no enforcement) ------------------------------------------------

    def _ingest(self, requests: Sequence[TrackPostRequest]) -> tuple[list[str], int]:
        """Record events without enforcement.

        Returns each event's id (the first one's for a repeated idempotency
        key) and how many were newly recorded.
        """
        for attempt in range(_CONFLICT_RETRIES, -1, -1):
            try:
                with self._lock:
                    self._ensure_open()
                    with self._ledger.write() as conn:
                        ids, recorded, firings = self._ingest_in(conn, requests)
                break
            except LedgerError as exc:
                if exc.reason != "conflict" or not attempt:
                    raise
        if firings:
            self._alerts.announce(firings)
        return ids, recorded

    def _ingest_in(
        self, conn: Any, requests: Sequence[TrackPostRequest]
    ) -> tuple[list[str], int, list[Firing]]:
        """Record without enforcement, inside the caller's write scope.

        Returns the ids, how many were new, and the alerts they fired (to
        announce once the scope has ended).
        """
        now = self._now()
        self._refresh()
        ids: list[str] = []
        pending: list[tuple[EventRow, list[CounterIncrement], str | None]] = []
        fresh: dict[str, str] = {}
        # The last event on each watched quota key: its usage is read once,
        # after the whole batch is recorded.
        watched: dict[tuple[str, str, int], tuple[_QuotaOutcome, str]] = {}
        for request in requests:
            key = request.idempotency_key
            if key is not None:
                first = fresh.get(key)
                if first is None:
                    stored = self._ledger.idempotent(key)
                    first = None if stored is None else stored[0]
                if first is not None:
                    ids.append(first)
                    continue
            when = request.timestamp.timestamp() if request.timestamp is not None else now
            event_id = new_id("evt")
            quotas = self._quota_outcomes(_dimensions(request), request, when, read_used=False)
            if self._alerts.by_quota:
                for o in quotas:
                    if o.quota.id in self._alerts.by_quota:
                        watched[o.quota.id, o.key_json, o.start] = (o, event_id)
            stored_response = None
            if key is not None:
                fresh[key] = event_id
                stored_response = _response_to_json(TrackPostResponse(id=event_id))
            pending.append(
                (_event_row(event_id, request, when), _increments(quotas), stored_response)
            )
            ids.append(event_id)
        self._ledger.record(conn, pending)
        firings = (
            self._alerts.log(
                self._ledger,
                conn,
                (
                    _crossing(o, self._ledger.counter(*counter), event_id)
                    for counter, (o, event_id) in watched.items()
                ),
                now,
            )
            if watched
            else []
        )
        return ids, len(pending), firings

    def _ingest_one(
        self, event: TrackPostRequest | Mapping[str, Any] | None, fields: dict[str, Any]
    ) -> EventIngestResponse:
        request = parse(TrackPostRequest, event, fields)
        ids, _ = self._ingest([request])
        return EventIngestResponse(id=ids[0])

    def _ingest_batch(
        self, events: Sequence[TrackPostRequest | Mapping[str, Any]]
    ) -> EventBatchResponse:
        if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
            raise InvalidRequestError("events: must be a list of events")
        if not 1 <= len(events) <= MAX_BATCH:
            raise InvalidRequestError(
                f"events: a batch holds 1 to {MAX_BATCH} events, got {len(events)}"
            )
        requests = [
            parse(TrackPostRequest, e, {}, prefix=f"events[{i}].") for i, e in enumerate(events)
        ]
        _, recorded = self._ingest(requests)
        return EventBatchResponse(count=recorded)

    def _list_events(
        self,
        *,
        customer_id: str | None,
        event_type: str | None,
        model: str | None,
        start_date: date | datetime | str | None,
        end_date: date | datetime | str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Event]:
        limit = _page_size(limit)
        start, end = _range(start_date, end_date)
        for name, value in (
            ("customerId", customer_id),
            ("eventType", event_type),
            ("model", model),
            ("cursor", cursor),
        ):
            if value is not None:
                _text(value, name)
        with self._lock:
            self._now()
            before = None
            if cursor is not None:
                before = self._ledger.event_seq(cursor)
                if before is None:
                    raise InvalidRequestError(
                        f"cursor: {cursor!r} is not a cursor from this ledger"
                    )
            rows = self._ledger.list_events(
                customer_id=customer_id,
                event_type=event_type,
                model=model,
                start=start,
                end=end,
                before_seq=before,
                limit=limit + 1,
            )
        page = [_event_model(row) for _, row in rows[:limit]]
        more = len(rows) > limit
        return Page[Event](data=page, next_cursor=page[-1].id if more else None, has_more=more)

    def _customer_usage(
        self,
        customer_id: str,
        start_date: date | datetime | str | None,
        end_date: date | datetime | str | None,
    ) -> CustomerUsageResponse:
        if not _text(customer_id, "customerId"):
            raise InvalidRequestError("customerId: must be a non-empty string")
        start, end = _range(start_date, end_date)
        with self._lock:
            self._now()
            totals = self._ledger.totals(customer_id, start, end)
        return CustomerUsageResponse(
            customer_id=customer_id,
            total_events=totals.events,
            total_tokens=totals.total_tokens,
            total_input_tokens=totals.input_tokens,
            total_output_tokens=totals.output_tokens,
            total_cost_cents=from_units("total_cost_cents", totals.cost_micro_cents),
        )

    # --- quotas -----------------------------------------------------------------

    def _new_definition(self, kind: type[L], prefix: str, data: BaseModel) -> L:
        stamp = _datetime(self._now())
        fields = data.model_dump(by_alias=False)
        return kind(
            id=new_id(prefix),
            project_id=self._project_id,
            created_at=stamp,
            updated_at=stamp,
            **fields,
        )

    def _changed_definition(self, current: L, data: BaseModel) -> L:
        # Fields left out, or given as None, stay as they are.
        changes = data.model_dump(by_alias=False, exclude_unset=True, exclude_none=True)
        return current.model_copy(update={**changes, "updated_at": _datetime(self._now())})

    @contextmanager
    def _changing_definitions(self) -> Iterator[Any]:
        """A durable write scope that sees, and then announces, the latest definitions."""
        with self._lock:
            self._ensure_open()
            try:
                with self._ledger.write(durable=True, exclusive=True) as conn:
                    self._refresh()
                    yield conn
                    version = self._ledger.bump_definitions(conn)
            except BaseException:
                # The change may not have committed: read the definitions afresh
                # next time rather than trust a version the file may not have.
                self._definitions_version = -1
                raise
            self._definitions_version = version

    def _create_quota(self, data: QuotaCreate) -> Quota:
        with self._changing_definitions() as conn:
            quota = self._new_definition(Quota, "qta", data)
            self._save_quota(conn, quota, rebuild=True)
        self._quotas[quota.id] = quota
        return quota

    def _update_quota(self, quota_id: str, data: QuotaUpdate) -> Quota:
        with self._changing_definitions() as conn:
            current = self._get_quota(quota_id)
            quota = self._changed_definition(current, data)
            rebuild = _reshaped(current, quota, _RESHAPING_QUOTA_FIELDS)
            self._save_quota(conn, quota, rebuild=rebuild)
        self._quotas[quota.id] = quota
        return quota

    def _save_quota(self, conn: Any, quota: Quota, *, rebuild: bool) -> None:
        self._ledger.save_definition(conn, "quotas", _definition_row(quota))
        if rebuild:
            self._ledger.replace_counters(conn, quota.id, self._count_existing(quota))

    def _count_existing(self, quota: Quota) -> list[tuple[str, int, int]]:
        """Counters of ``quota`` over every event already recorded (spec: earlier events count)."""
        totals: dict[tuple[str, int], int] = defaultdict(int)
        for row in self._ledger.scan_events():
            dims = extract(
                row.customer_id, row.event_type, row.model, row.provider, json.loads(row.properties)
            )
            key = limit_key(quota.dimension_filters, quota.per, dims)
            if key is None:
                continue
            start, _ = period_bounds(quota.period, row.ts, quota.timezone)
            totals[_key_json(key), start] += amount_units(
                quota.metric, row.total_tokens, row.cost_cents, row.input_tokens, row.output_tokens
            )
        return [(key, start, used) for (key, start), used in totals.items()]

    def _get_quota(self, quota_id: str) -> Quota:
        self._ensure_open()
        self._refresh()
        quota = self._quotas.get(_limit_id(quota_id, "quota"))
        if quota is None:
            raise NotFoundError(f"quota {quota_id!r} not found")
        return quota

    def _delete_quota(self, quota_id: str) -> None:
        # The lock spans the view's update: a reload by another thread in
        # between would already have dropped the quota.
        with self._lock:
            with self._changing_definitions() as conn:
                self._now()
                self._get_quota(quota_id)
                self._ledger.delete_definition(conn, "quotas", quota_id)
                # Its alerts go with it; their history stays.
                alerts = [alert.id for alert in self._alerts.by_quota.get(quota_id, ())]
                for alert_id in alerts:
                    self._ledger.delete_definition(conn, "quota_alerts", alert_id)
            self._quotas.pop(quota_id, None)
            self._alerts.remove(alerts)

    def _check_quotas(self, dimensions: Mapping[str, str]) -> QuotaCheckResponse:
        dims = _check_dimensions(dimensions)
        with self._lock:
            now = self._now()
            self._refresh()
            outcomes = self._quota_outcomes(dims, None, now)
        statuses = [_quota_status(o, charged=False) for o in _shown_quotas(outcomes)]
        allowed = not any(o.exceeded and o.quota.mode == "enforce" for o in outcomes)
        return trusted(QuotaCheckResponse, {"allowed": allowed, "quotas": statuses})

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
        with self._lock:
            self._alerts.callbacks.append(callback)
        return callback

    def _create_alert(self, quota_id: str, data: QuotaAlertCreate) -> QuotaAlert:
        # The lock spans the view's update too: a reload by another thread in
        # between would already hold the alert, and add() would list it twice.
        with self._lock:
            with self._changing_definitions() as conn:
                quota = self._get_quota(quota_id)
                stamp = _datetime(self._now())
                alert = QuotaAlert(
                    id=new_id("qa"),
                    quota_id=quota.id,
                    threshold=data.threshold,
                    created_at=stamp,
                    updated_at=stamp,
                )
                row = alert.model_dump(
                    mode="json", by_alias=False, exclude={"last_triggered_at", "updated_at"}
                )
                self._ledger.save_definition(conn, "quota_alerts", row)
            self._alerts.add(alert)
        return alert.model_copy()

    def _list_alerts(
        self, quota_id: str | None, limit: int, cursor: str | None
    ) -> Page[QuotaAlert]:
        """One page of alerts in creation order (of one quota, or all)."""
        with self._lock:
            self._ensure_open()
            self._refresh()
            if quota_id is not None:
                self._get_quota(quota_id)
            alerts = [a for a in self._alerts.all if quota_id is None or a.quota_id == quota_id]
            page = self._page(Page[QuotaAlert], alerts, limit, cursor, "quota alert")
            page.data = self._fired_last(page.data)
            return page

    def _get_alert(self, alert_id: str) -> QuotaAlert:
        _limit_id(alert_id, "quota alert")
        with self._lock:
            self._ensure_open()
            self._refresh()
            for alert in self._alerts.all:
                if alert.id == alert_id:
                    return self._fired_last([alert])[0]
        raise NotFoundError(f"quota alert {alert_id!r} not found")

    def _fired_last(self, alerts: list[QuotaAlert]) -> list[QuotaAlert]:
        """Copies of the alerts with ``lastTriggeredAt`` read from the history."""
        last = self._ledger.last_triggered(a.id for a in alerts) if alerts else {}
        return [
            alert.model_copy(update={"last_triggered_at": _datetime(last[alert.id])})
            if alert.id in last
            else alert.model_copy()
            for alert in alerts
        ]

    def _delete_alert(self, alert_id: str) -> None:
        with self._lock:
            with self._changing_definitions() as conn:
                alert = next((a for a in self._alerts.all if a.id == alert_id), None)
                if alert is None:
                    raise NotFoundError(
                        f"quota alert {_limit_id(alert_id, 'quota alert')!r} not found"
                    )
                self._ledger.delete_definition(conn, "quota_alerts", alert_id)
            self._alerts.remove([alert_id])

    def _alert_history(
        self, quota_id: str | None, alert_id: str | None, limit: int, cursor: str | None
    ) -> Page[QuotaAlertLog]:
        limit = _page_size(limit)
        for name, value in (("quotaId", quota_id), ("alertId", alert_id), ("cursor", cursor)):
            if value is not None:
                _text(value, name)
        with self._lock:
            self._ensure_open()
            before = None
            if cursor is not None:
                before = self._ledger.alert_log_seq(cursor)
                if before is None:
                    raise InvalidRequestError(
                        f"cursor: {cursor!r} is not an alert history cursor of this ledger"
                    )
            rows = self._ledger.alert_log(
                quota_id=quota_id, alert_id=alert_id, before_seq=before, limit=limit + 1
            )
        page = [log_entry(row) for _, row in rows[:limit]]
        more = len(rows) > limit
        return Page[QuotaAlertLog](
            data=page, next_cursor=page[-1].id if more else None, has_more=more
        )

    # --- rate limits ------------------------------------------------------------

    def _install_rate_limit(self, limit: RateLimit, generation: str) -> None:
        self._rate_rules[limit.id] = _RateRule(
            limit,
            window_seconds(limit.window),
            generation,
            enforced=limit.mode == "enforce",
            shown=limit.mode != "shadow",
            key_of=key_function(limit.dimension_filters, limit.per),
            counts_tokens=limit.metric == "total_tokens",
        )

    def _create_rate_limit(self, data: RateLimitCreate) -> RateLimit:
        with self._changing_definitions() as conn:
            limit = self._new_definition(RateLimit, "rl", data)
            generation = new_id("gen")
            row = {**_definition_row(limit), "generation": generation}
            self._ledger.save_definition(conn, "rate_limits", row)
        self._install_rate_limit(limit, generation)
        return limit

    def _update_rate_limit(self, limit_id: str, data: RateLimitUpdate) -> RateLimit:
        with self._changing_definitions() as conn:
            current = self._get_rate_limit(limit_id)
            limit = self._changed_definition(current, data)
            # Stored with the definition, so every process names the same
            # buckets, and a reshape (even back to an earlier shape) starts
            # fresh ones.
            generation = self._rate_rules[limit_id].generation
            if _reshaped(current, limit, _RESHAPING_RATE_FIELDS):
                generation = new_id("gen")
            row = {**_definition_row(limit), "generation": generation}
            self._ledger.save_definition(conn, "rate_limits", row)
        self._install_rate_limit(limit, generation)
        return limit

    def _get_rate_limit(self, limit_id: str) -> RateLimit:
        self._ensure_open()
        self._refresh()
        rule = self._rate_rules.get(_limit_id(limit_id, "rate limit"))
        if rule is None:
            raise NotFoundError(f"rate limit {limit_id!r} not found")
        return rule.limit

    def _delete_rate_limit(self, limit_id: str) -> None:
        with self._changing_definitions() as conn:
            self._now()
            self._get_rate_limit(limit_id)
            self._ledger.delete_definition(conn, "rate_limits", limit_id)
        del self._rate_rules[limit_id]

    def _check_rate_limits(self, dimensions: Mapping[str, str]) -> RateLimitCheckResponse:
        dims = _check_dimensions(dimensions)
        with self._lock:
            self._now()
            self._refresh()
            outcomes = self._peek_rates(dims)
        statuses = [_rate_status(o, charged=False) for o in _shown(outcomes)]
        allowed = all(o.answer.allowed for o in outcomes if o.enforced)
        return trusted(RateLimitCheckResponse, {"allowed": allowed, "rate_limits": statuses})

    # --- lists ------------------------------------------------------------------

    def _page(
        self, page: type[Page[M]], items: Sequence[M], limit: int, cursor: str | None, kind: str
    ) -> Page[M]:
        """One page of ``items``; the cursor is the id of the last item of the previous page."""
        self._ensure_open()
        limit = _page_size(limit)
        start = 0
        if cursor is not None:
            ids = [getattr(item, "id", None) for item in items]
            if cursor not in ids:
                raise InvalidRequestError(f"cursor: {cursor!r} is not a {kind} cursor")
            start = ids.index(cursor) + 1
        data = list(items[start : start + limit])
        more = start + limit < len(items)
        return page(
            data=data, next_cursor=getattr(data[-1], "id", None) if more else None, has_more=more
        )


# --- pure helpers of the rules ----------------------------------------------------


def _wait_seconds(value: object) -> float:
    """``usage(wait=...)``: a finite number of seconds >= 0, or a 400 naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise InvalidRequestError(
            f"wait: must be a number of seconds >= 0 (how long to wait for rate limits), "
            f"got {value!r}"
        )
    return float(value)


def _check_dimensions(dimensions: Mapping[str, str]) -> Dimensions:
    if not isinstance(dimensions, Mapping):
        raise InvalidRequestError("dimensions: must be an object of string values")
    for name, value in dimensions.items():
        _text(name, "dimensions")
        _text(value, f"dimensions.{name}")
    return dict(dimensions)


def _text(value: object, name: str) -> str:
    """A string that SQLite can store, or a 400 naming ``name``."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name}: must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{name}: must be valid Unicode text") from None
    return value


def _dimensions(request: TrackPostRequest) -> Dimensions:
    return extract(
        request.customer_id, request.event_type, request.model, request.provider, request.properties
    )


def _estimated(
    request: TrackPostRequest, estimate: int | Mapping[str, Any] | None
) -> TrackPostRequest:
    """The event with the estimate's amounts, validated like any event."""
    if estimate is None:
        return request
    if isinstance(estimate, bool) or not isinstance(estimate, (int, Mapping)):
        raise InvalidRequestError(
            "estimate: must be a number of tokens or a dict of amounts, "
            f"got {type(estimate).__name__}"
        )
    if isinstance(estimate, int):
        amounts: dict[str, Any] = {"total_tokens": estimate}
    else:
        names = _field_names(ESTIMATE_FIELDS)
        unknown = [key_name(key) for key in estimate if key not in names]
        if unknown:
            raise InvalidRequestError(
                f"estimate.{unknown[0]}: an estimate holds amounts only "
                f"({', '.join(ESTIMATE_FIELDS)})"
            )
        amounts = {names[key]: value for key, value in estimate.items()}
    base = request.model_dump(by_alias=False, exclude_unset=True)
    for name in AMOUNT_FIELDS:
        base.pop(name, None)
    return parse(TrackPostRequest, {**base, **amounts}, {}, prefix="estimate.")


def _field_names(fields: Sequence[str]) -> dict[str, str]:
    """Each field's snake_case and wire names, mapped to its snake_case name."""
    model_fields = TrackPostRequest.model_fields
    return {given: name for name in fields for given in (name, model_fields[name].alias or name)}


def _settled(reservation: Reservation, actual: Mapping[str, Any]) -> TrackPostRequest:
    """The event to record: the reserved event with the real amounts.

    Tokens given (any of input, output, total) replace the estimate's tokens
    as a group, so ``commit(input_tokens=, output_tokens=)`` records their
    sum; ``cost_cents`` and ``latency_ms`` not given are the estimate's.
    """
    names = _field_names((*AMOUNT_FIELDS, "properties"))
    unknown = [key_name(key) for key in actual if key not in names]
    if unknown:
        raise InvalidRequestError(
            f"{unknown[0]}: a commit sets amounts and properties only "
            f"({', '.join(AMOUNT_FIELDS)}, properties)"
        )
    given = {names[key]: value for key, value in actual.items()}
    estimated = reservation.estimated
    from_estimate = [
        name
        for name in AMOUNT_FIELDS
        if name not in given
        and name in estimated.model_fields_set
        and not (name in TOKEN_FIELDS and any(t in given for t in TOKEN_FIELDS))
    ]
    amounts = {name: value for name, value in given.items() if name in AMOUNT_FIELDS}
    amounts.update({name: getattr(estimated, name) for name in from_estimate})
    base = reservation.event.model_dump(by_alias=False, exclude_unset=True)
    for name in AMOUNT_FIELDS:
        base.pop(name, None)
    if "properties" in given:
        extra = given["properties"]
        if not isinstance(extra, Mapping):
            raise InvalidRequestError("properties: must be an object")
        base["properties"] = {**base.get("properties", {}), **extra}
    return parse(TrackPostRequest, {**base, **amounts}, {})


def _rate_differences(
    reservation: Reservation, final: TrackPostRequest | None, *, charged_before: bool
) -> list[BucketAsk]:
    """What each bucket must still be charged (negative: given back) to settle a hold."""
    asks = []
    for ask, counts_tokens in reservation._asks:
        held = ask.cost if charged_before else 0
        # Owed: nothing when the hold is given back, else what the event costs.
        owed = 0 if final is None else (final.total_tokens or 0) if counts_tokens else 1
        if owed != held:
            asks.append(ask._replace(cost=owed - held))
    return asks


def _crossing(o: _QuotaOutcome, used: int, event_id: str) -> Crossing:
    return Crossing(o.quota, o.key, o.key_json, o.start, o.end, used, o.limit_units, event_id)


def _crossings(
    quotas: list[_QuotaOutcome], event_id: str, watched: Mapping[str, object]
) -> list[Crossing]:
    """Usage after an admitted event, on the quotas that have alerts."""
    return [
        _crossing(o, o.used + (o.amount or 0), event_id) for o in quotas if o.quota.id in watched
    ]


def _increments(quotas: list[_QuotaOutcome]) -> list[CounterIncrement]:
    return [(o.quota.id, o.key_json, o.start, o.amount or 0) for o in quotas]


def _shape(limit: RateLimit) -> str:
    """A short digest of what decides a rate limit's buckets (not its name or enabled)."""
    shape = json.dumps(
        [getattr(limit, name) for name in _RESHAPING_RATE_FIELDS],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(shape.encode("utf-8")).hexdigest()[:16]


def _reshaped(before: BaseModel, after: BaseModel, fields: Sequence[str]) -> bool:
    """Whether an update changed any of ``fields`` (which events match, or how they count)."""
    return any(getattr(before, f) != getattr(after, f) for f in fields)


@functools.lru_cache(maxsize=65_536)
def _key_json(key: Key) -> str:
    # Cached: the same few keys come back on every call, and JSON encoding is
    # a visible share of the hot path.
    return json.dumps(key, separators=(",", ":"), ensure_ascii=False)


def _number(value: float) -> float | int:
    """Whole amounts as ints (tokens and events), fractions kept (cents)."""
    return int(value) if float(value).is_integer() else value


def _shown(rates: list[_RateOutcome]) -> list[_RateOutcome]:
    """What the caller sees: every limit but the shadow ones."""
    return [o for o in rates if o.rule.shown]


def _shown_quotas(quotas: list[_QuotaOutcome]) -> list[_QuotaOutcome]:
    return [o for o in quotas if o.quota.mode != "shadow"]


def _rate_fields(o: _RateOutcome, *, charged: bool) -> dict[str, Any]:
    """The limit's status after this event (charged) or as it stands (denied, or a check)."""
    limit = o.rule.limit
    answer = o.answer
    return {
        "id": limit.id,
        "name": limit.name,
        "limit": o.ask.capacity,
        "remaining": answer.remaining if charged else answer.current_remaining,
        "reset": answer.reset if charged else answer.current_reset,
        "window": limit.window,
        "exceeded": not answer.allowed,
    }


def _rate_status(o: _RateOutcome, *, charged: bool) -> RateLimitStatus:
    return trusted(RateLimitStatus, _rate_fields(o, charged=charged))


def _quota_fields(o: _QuotaOutcome, *, charged: bool) -> dict[str, Any]:
    used = o.used + (o.amount or 0) if charged else o.used
    return {
        "id": o.quota.id,
        "name": o.quota.name,
        "metric": o.quota.metric,
        "period": o.quota.period,
        "limit": o.limit,
        "used": from_units(o.quota.metric, used),
        "remaining": from_units(o.quota.metric, max(0, o.limit_units - used)),
        "reset": o.end,
        "exceeded": o.exceeded,
    }


def _quota_status(o: _QuotaOutcome, *, charged: bool) -> QuotaStatus:
    return trusted(QuotaStatus, _quota_fields(o, charged=charged))


def _event_row(event_id: str, request: TrackPostRequest, when: float) -> EventRow:
    return EventRow(
        id=event_id,
        ts=when,
        customer_id=request.customer_id,
        event_type=request.event_type,
        model=request.model,
        provider=request.provider,
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        total_tokens=request.total_tokens,
        latency_ms=request.latency_ms,
        cost_cents=request.cost_cents,
        properties=(
            json.dumps(request.properties, separators=(",", ":")) if request.properties else "{}"
        ),
        idempotency_key=request.idempotency_key,
        cached_input_tokens=request.cached_input_tokens,
    )


def _event_model(row: EventRow) -> Event:
    return Event(
        id=row.id,
        created_at=_datetime(row.ts),
        customer_id=row.customer_id,
        event_type=row.event_type,
        model=row.model,
        provider=row.provider,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        total_tokens=row.total_tokens,
        latency_ms=row.latency_ms,
        cost_cents=None if row.cost_cents is None else _number(row.cost_cents),
        properties=json.loads(row.properties),
        cached_input_tokens=row.cached_input_tokens,
    )


def _definition_row(model: Quota | RateLimit) -> dict[str, Any]:
    row = model.model_dump(mode="json", by_alias=False, exclude={"project_id"})
    row.setdefault("per", [])
    row.setdefault("overrides", {})  # written when empty too, to replace stored ones
    row.setdefault("mode", model.mode)
    row.setdefault("fail_mode", model.fail_mode)
    if isinstance(model, Quota):
        # Written even when UTC (the dump leaves the default out), so a
        # change back to UTC replaces the stored zone.
        row.setdefault("timezone", model.timezone)
    if isinstance(model, RateLimit):
        row.setdefault("metric", model.metric)
    return row


def _response_to_json(response: TrackPostResponse) -> str:
    return json.dumps({"body": response.model_dump(mode="json"), "headers": response.headers})


def _response_from_json(text: str) -> TrackPostResponse:
    stored = json.loads(text)
    response = TrackPostResponse.model_validate(stored["body"])
    response._headers = stored["headers"]
    return response


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _page_size(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise InvalidRequestError(f"limit: must be an integer from 1 to 100, got {limit!r}")
    return limit


def _range(
    start: date | datetime | str | None, end: date | datetime | str | None
) -> tuple[float | None, float | None]:
    """A ``[start, end)`` range in unix seconds; a plain date as ``end`` includes that whole day."""
    return _instant(start, "startDate", end_of_day=False), _instant(end, "endDate", end_of_day=True)


def _instant(value: date | datetime | str | None, name: str, *, end_of_day: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = (
                date.fromisoformat(value)
                if len(value) == 10
                else datetime.fromisoformat(value.replace("Z", "+00:00"))
            )
        except ValueError:
            raise InvalidRequestError(
                f"{name}: {value!r} is not an ISO 8601 date or date-time"
            ) from None
    try:
        if isinstance(value, datetime):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
            return aware.timestamp()
        if isinstance(value, date):
            day = value + timedelta(days=1) if end_of_day else value
            return datetime.combine(day, time(), timezone.utc).timestamp()
    except (OverflowError, ValueError):
        # date.max + 1 day, or an offset that leaves the datetime range: beyond
        # every event the ledger can hold, so an end is no bound, a start excludes all.
        return None if end_of_day else math.inf
    raise InvalidRequestError(f"{name}: expected a date, a datetime or an ISO 8601 string")


def _limit_id(value: object, kind: str) -> str:
    return _text(value, f"id (a {kind} id)")


def _display(quota: Quota, units: int) -> str:
    return f"{from_units(quota.metric, units):,}"
