"""The engine: one lock, one clock, the definitions, and every call that reads or writes usage.

:class:`Engine` runs ``POST /track`` (:meth:`Engine.use`), reservations and
their settlement, ingestion without enforcement, checks and the ledger's
reads.  The rules it applies live beside it: the compiled plan
(:mod:`.rules`), the decision (:mod:`.admission`) and the answers
(:mod:`.responses`).  One reentrant lock serialises every call, which is
what makes admission exact under threads: a decision and the write it
implies are never interleaved with another call's.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Generator, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

from limitry_local.alerts import Firing, log_entry
from limitry_local.buckets import BucketAsk, BucketStore, RateLimitStore
from limitry_local.denials import DenialCounter, TrackerStats
from limitry_local.dimensions import Dimensions, Key, extract
from limitry_local.errors import InvalidRequestError, LimitryError
from limitry_local.ids import new_id
from limitry_local.inputs import check_dimensions, date_range, optional_texts, page_size, text
from limitry_local.ledger import CounterIncrement, EventRow, LedgerBackend, LedgerError
from limitry_local.metrics import from_units
from limitry_local.models import (
    CustomerUsageResponse,
    Event,
    FailedOpen,
    Page,
    QuotaAlertLog,
    QuotaCheckResponse,
    RateLimitCheckResponse,
    TrackPostRequest,
    TrackPostResponse,
    trusted,
)
from limitry_local.redis_buckets import RateLimitStoreError
from limitry_local.reservations import Reservation, settled, token_differences

from .admission import (
    Wait,
    crossing,
    crossings,
    decide_rates,
    failed_open,
    falls_on,
    increments,
    quota_outcomes,
    verdict,
)
from .clock import EngineClock
from .definitions import Definitions
from .responses import (
    admitted,
    event_model,
    event_row,
    quota_status,
    rate_status,
    response_from_json,
    response_to_json,
    shown_quotas,
    shown_rates,
)
from .rules import Plan, QuotaOutcome, RateOutcome, exceeds

logger = logging.getLogger("limitry_local.tracker")

R = TypeVar("R", Event, QuotaAlertLog)

HOLD_SWEEP_SECONDS = 1.0
"""How often usage() looks for expired holds (one indexed query at most once a second)."""
# A shared ledger may pick a write to give way in a deadlock ("conflict": nothing
# of it was kept).  usage() and events take their locks in one order, so only a
# rare call (a reservation settled across periods) can meet one; two more tries.
CONFLICT_RETRIES = 2

# Engines alive in this process, weakly, for the fork hook below.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    # Another thread of the parent may have held an engine's lock at the fork;
    # in the child that copy would stay locked forever.  A fresh lock lets the
    # child's calls reach the ledger, which says it was opened before the fork.
    for engine in list(_ENGINES):
        engine.renew_lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


class Engine:
    """The state behind a :class:`~limitry_local.Tracker` and the calls on it."""

    def __init__(
        self,
        ledger: LedgerBackend,
        store: RateLimitStore,
        clock: EngineClock,
        *,
        project_id: str,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self.project_id = project_id
        self.lock = threading.RLock()
        self.closed = False
        self.denials = DenialCounter()
        self.definitions = Definitions(
            ledger, self.lock, project_id=project_id, opened=self.opened, now=self.now
        )
        if isinstance(store, BucketStore):
            # Buckets of a changed or deleted limit are never read again: they
            # must not hold max_buckets' room until they refill (Redis expires them).
            self.definitions.on_retired = store.retire
        self._reservations: dict[str, Reservation] = {}
        self._next_hold_sweep = float("-inf")
        _ENGINES.add(self)

    def renew_lock(self) -> None:
        """A fresh lock, in a child process forked while another thread held this one."""
        self.lock = self.definitions.lock = threading.RLock()

    # --- lifecycle ---------------------------------------------------------------

    def opened(self) -> None:
        if self.closed:
            raise LimitryError("this Tracker is closed; open a new one on its ledger")

    def now(self) -> float:
        """Read the clock for this call (the engine must be open)."""
        if self.closed:
            self.opened()  # raises
        return self.clock.read()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                try:
                    self.store.close()
                finally:
                    self.ledger.close()

    def flush(self) -> None:
        with self.lock:
            self.opened()
            self.ledger.flush()

    def stats(self) -> TrackerStats:
        with self.lock:
            return self.denials.snapshot()

    # --- POST /track -------------------------------------------------------------

    def attempts(
        self, request: TrackPostRequest, patience: float
    ) -> Generator[float, None, TrackPostResponse]:
        """``usage(wait=patience)`` as steps: yields each sleep it needs, returns the 201.

        The sync face sleeps with the clock's ``sleep``, the async face
        (:class:`~limitry_local.client.Client`) awaits; the lock is never held
        while sleeping.
        """
        ticker = self.clock.elapsed()
        started = ticker()
        slept = 0.0
        while True:
            # Both measures of the time spent: the clock (what callers see) and
            # the sum of sleeps, so a clock that does not move still ends the wait.
            left = patience - max(slept, ticker() - started)
            try:
                return self.use(request, max(0.0, left))
            except Wait as pause:
                yield float(pause.seconds)
                slept += pause.seconds

    def use(self, request: TrackPostRequest, patience: float = 0.0) -> TrackPostResponse:
        """One attempt of ``usage()``; raises :class:`Wait` for a rate denial that
        ``patience`` seconds of waiting would cure.  A write a shared ledger
        made give way in a deadlock, or whose guess of the definitions proved
        wrong ("conflict": nothing kept), runs again."""
        # A while loop, not a range(): nothing is set up for the usual first try.
        retries = CONFLICT_RETRIES
        while True:
            try:
                # The last try does not guess: it reads the definitions under
                # their lock, which a writer changing them cannot keep from it,
                # however often other processes change them meanwhile.
                return self._use_once(request, patience, retries > 0)
            except LedgerError as exc:
                if exc.reason != "conflict" or not retries:
                    raise
            retries -= 1

    def _use_once(
        self, request: TrackPostRequest, patience: float, optimistic: bool
    ) -> TrackPostResponse:
        """One try of :meth:`use`: all of it is undone if it raises."""
        firings: list[Firing] = []
        definitions = self.definitions
        with self.lock:
            now = self.now()
            taken = kept = False
            try:
                if now >= self._next_hold_sweep:
                    self._release_expired(now)
                # Counters are read inside the write scope, under the ledger's
                # locks: no other process can add to them between check and record.
                # Optimistic: use() runs this again on "conflict", so a shared
                # ledger may guess the definitions version and that the key is new.
                with self.ledger.write(optimistic=optimistic) as conn:
                    definitions.refresh()
                    plan = definitions.plan
                    key = request.idempotency_key
                    if key is not None:
                        stored = self.ledger.idempotent(key)
                        if stored is not None:
                            return response_from_json(stored[1])
                    when = request.timestamp.timestamp() if request.timestamp is not None else now
                    dims = dimensions_of(request)
                    skipped: list[FailedOpen] = []
                    try:
                        rates = decide_rates(
                            self.store,
                            plan,
                            dims,
                            request.total_tokens or 0,
                            self.clock.bucket_time(),
                            take=True,
                        )
                    except RateLimitStoreError as exc:
                        skipped = failed_open(plan, dims, exc)
                        rates = []
                    taken = bool(rates)
                    quotas = quota_outcomes(plan, self.ledger, dims, request, when, scope=conn)
                    verdict(rates, quotas, self.denials, self.clock.raw, patience)
                    response = admitted(new_id("evt"), rates, quotas, skipped)
                    alerts = definitions.alerts
                    if alerts.by_quota:
                        firings = alerts.log(
                            self.ledger, conn, crossings(quotas, response.id, alerts.by_quota), now
                        )
                    replay = response_to_json(response) if key is not None else None
                    self.ledger.record(
                        conn, [(event_row(response.id, request, when), increments(quotas), replay)]
                    )
                kept = True
            except LedgerError as exc:
                # Its COMMIT went out and no answer came: it may have been kept, so
                # are its tokens (a limit may under-admit by one event, never over).
                kept = exc.in_doubt
                raise
            finally:
                # Tokens are kept only once the event is committed (or joined
                # its batch), or may have been: a denial or a failed write
                # gives them back.
                if taken:
                    self.store.settle(keep=kept)
            if not plan.enforced_only:
                self._charge_unenforced(rates)
        if firings:
            definitions.alerts.announce(firings)
        return response

    def _decide_rates(
        self, dims: Dimensions, tokens: int | None, *, take: bool
    ) -> list[RateOutcome]:
        return decide_rates(
            self.store, self.definitions.plan, dims, tokens, self.clock.bucket_time(), take=take
        )

    def _charge_unenforced(self, rates: list[RateOutcome]) -> None:
        """Soft and shadow buckets were only read (peek): charge the admitted event to them."""
        if self.definitions.plan.enforced_only:
            return
        unenforced = [o.ask for o in rates if not o.enforced]
        if unenforced:
            self._settle_tokens(unenforced)

    # --- reserve, then settle ----------------------------------------------------

    def reserve(
        self, request: TrackPostRequest, estimate: TrackPostRequest, ttl: float
    ) -> Reservation:
        """Hold ``estimate``'s amounts against every limit ``request`` matches."""
        with self.lock:
            now = self.now()
            if request.timestamp is None:
                # Its commit, even after midnight, charges the periods the hold
                # was checked in: the commit's own would let it past a full quota.
                at = {"timestamp": datetime.fromtimestamp(now, timezone.utc)}
                request, estimate = request.model_copy(update=at), estimate.model_copy(update=at)
            taken = kept = False
            try:
                self._release_expired(now)
                with self.ledger.write(durable=True) as conn:
                    self.definitions.refresh()
                    key = request.idempotency_key
                    stored = self.ledger.idempotent(key) if key is not None else None
                    if stored is not None:
                        # Recorded already: hold nothing; commit() replays.
                        first = response_from_json(stored[1])
                        return Reservation(
                            self,
                            new_id("hold"),
                            event=request,
                            estimated=estimate,
                            asks=[],
                            expires_at=now + ttl,
                            rate_limits=first.rate_limits,
                            quotas=first.quotas,
                        )
                    when = estimate.timestamp.timestamp() if estimate.timestamp else now
                    dims = dimensions_of(estimate)
                    rates = self._decide_rates(dims, estimate.total_tokens or 0, take=True)
                    taken = bool(rates)
                    quotas = quota_outcomes(
                        self.definitions.plan, self.ledger, dims, estimate, when, scope=conn
                    )
                    verdict(rates, quotas, self.denials, self.clock.raw)
                    hold_id = new_id("hold")
                    self.ledger.add_hold(conn, hold_id, increments(quotas), now + ttl)
                kept = True
            except LedgerError as exc:
                # Its COMMIT went out and no answer came: it may have been kept, so
                # are its tokens (a limit may under-admit by one event, never over).
                kept = exc.in_doubt
                raise
            finally:
                if taken:
                    self.store.settle(keep=kept)
            self._charge_unenforced(rates)
            reservation = Reservation(
                self,
                hold_id,
                event=request,
                estimated=estimate,
                asks=[(o.ask, o.rule.counts_tokens) for o in rates],
                expires_at=now + ttl,
                rate_limits=[rate_status(o, charged=True) for o in shown_rates(rates)],
                quotas=[quota_status(o, charged=True) for o in shown_quotas(quotas)],
            )
            self._reservations[hold_id] = reservation
            return reservation

    def commit_reservation(
        self, reservation: Reservation, actual: dict[str, Any] | Any
    ) -> TrackPostResponse:
        """Record the reserved event with its real amounts; settle the difference."""
        # Filled once the event is recorded: announced even if building the
        # answer fails afterwards, as nothing else will announce them.
        firings: list[Firing] = []
        try:
            return self._commit_locked(reservation, actual, firings)
        finally:
            if firings:
                self.definitions.alerts.announce(firings)

    def _commit_locked(
        self, reservation: Reservation, actual: Any, firings: list[Firing]
    ) -> TrackPostResponse:
        final = settled(reservation, actual)
        with self.lock:
            # Decided under the lock: two threads settling one reservation
            # must not both record it, nor both give its tokens back.
            held_tokens = reservation.begin_commit()
            now = self.now()
            fired: list[Firing] = []
            with self.ledger.write() as conn:
                self.definitions.refresh()
                # The key before the hold: a shared ledger takes its locks in
                # one order (idempotency key, then counters) in every call.
                if final.properties != reservation.event.properties:
                    _same_limits(self.definitions.plan, reservation.event, final)
                key = final.idempotency_key
                stored = self.ledger.idempotent(key) if key is not None else None
                self.ledger.pop_hold(conn, reservation.id)
                if stored is not None:
                    replay: TrackPostResponse | None = response_from_json(stored[1])
                else:
                    ids, _, fired = self._ingest_in(conn, [final])
                    replay = None
            firings.extend(fired)
            # Recorded: from here nothing may make the reservation look open.
            reservation.committed()
            self._reservations.pop(reservation.id, None)
            # Tokens: this engine took the estimate's cost at reserve() and
            # keeps it until it sees the hold expire; the event costs its own.
            self._settle_tokens(
                token_differences(
                    reservation, final if replay is None else None, charged_before=held_tokens
                )
            )
            if replay is not None:
                return replay
            dims = dimensions_of(final)
            when = final.timestamp.timestamp() if final.timestamp is not None else now
            rates = self._decide_rates(dims, None, take=False)
            quotas = quota_outcomes(self.definitions.plan, self.ledger, dims, None, when)
            for o in quotas:
                # The counters include this event now, so nothing more to add:
                # exceeded as usage() reports it, past the limit (filling it
                # exactly is not).
                o.exceeded = exceeds(o.used, 0, o.limit_units)
            return admitted(ids[0], rates, quotas, [], charged=False)

    def release_reservation(self, reservation: Reservation) -> None:
        """Give a reservation's hold back (a no-op once settled)."""
        with self.lock:
            held_tokens = reservation.begin_release()
            if held_tokens is None:
                return  # settled already
            self.opened()
            with self.ledger.write(durable=True) as conn:
                self.ledger.pop_hold(conn, reservation.id)
            reservation.released()
            self._reservations.pop(reservation.id, None)
            if held_tokens:
                self.now()
                self._settle_tokens(token_differences(reservation, None, charged_before=True))

    def _settle_tokens(self, asks: list[BucketAsk]) -> None:
        """Charge or give back a reservation's tokens; a failure is logged, not raised.

        The ledger side is settled already: raising here would make a
        recorded event look unrecorded (and be recorded again on a retry).
        The cost of a lost adjustment is a bucket off by that much until it
        refills.
        """
        if isinstance(self.store, BucketStore):
            # A limit reshaped or deleted since the hold: its buckets were dropped,
            # and charging one would make it again, never to be swept as retired.
            live = self.definitions.live
            asks = [ask for ask in asks if cast("tuple[str, str, Key]", ask.key)[:2] in live]
        if not asks:
            return
        try:
            self.store.adjust(asks, self.clock.bucket_time())
        except Exception as exc:  # a store that cannot be reached, typically
            logger.warning("rate-limit tokens of a reservation not settled: %s", exc)

    def _release_expired(self, now: float) -> None:
        """Release every expired hold on the ledger, and the tokens of this engine's own.

        Its own write scope, so a denial that rolls back the caller's scope
        cannot undo the release (while the tokens were already given back).
        Reservations of this engine past their ttl give their tokens back
        whoever released their hold in the ledger (another process may have).
        """
        self._next_hold_sweep = now + HOLD_SWEEP_SECONDS
        with self.ledger.write(durable=True) as conn:
            self.ledger.pop_expired_holds(conn, now)
        for hold_id, reservation in list(self._reservations.items()):
            if reservation.expires_at <= now and reservation.expire():
                del self._reservations[hold_id]
                self._settle_tokens(token_differences(reservation, None, charged_before=True))

    # --- events (no enforcement) ---------------------------------------------------

    def ingest(self, requests: Sequence[TrackPostRequest]) -> tuple[list[str], int]:
        """Record events without enforcement.

        Returns each event's id (the first one's for a repeated idempotency
        key) and how many were newly recorded.
        """
        for attempt in range(CONFLICT_RETRIES, -1, -1):
            try:
                with self.lock:
                    self.opened()
                    with self.ledger.write() as conn:
                        ids, recorded, firings = self._ingest_in(conn, requests)
                break
            except LedgerError as exc:
                if exc.reason != "conflict" or not attempt:
                    raise
        if firings:
            self.definitions.alerts.announce(firings)
        return ids, recorded

    def _ingest_in(
        self, conn: Any, requests: Sequence[TrackPostRequest]
    ) -> tuple[list[str], int, list[Firing]]:
        """Record without enforcement, inside the caller's write scope.

        Returns the ids, how many were new, and the alerts they fired (to
        announce once the scope has ended).
        """
        now = self.now()
        self.definitions.refresh()
        plan = self.definitions.plan
        watching = self.definitions.alerts.by_quota
        ids: list[str] = []
        pending: list[tuple[EventRow, list[CounterIncrement], str | None]] = []
        fresh: dict[str, str] = {}
        # The last event on each watched quota key: its usage is read once,
        # after the whole batch is recorded.
        watched: dict[tuple[str, str, int], tuple[QuotaOutcome, str]] = {}
        for request in requests:
            key = request.idempotency_key
            if key is not None:
                first = fresh.get(key)
                if first is None:
                    stored = self.ledger.idempotent(key)
                    first = None if stored is None else stored[0]
                if first is not None:
                    ids.append(first)
                    continue
            when = request.timestamp.timestamp() if request.timestamp is not None else now
            event_id = new_id("evt")
            quotas = quota_outcomes(
                plan, self.ledger, dimensions_of(request), request, when, read_used=False
            )
            if watching:
                for o in quotas:
                    if o.quota.id in watching:
                        watched[o.quota.id, o.key_json, o.start] = (o, event_id)
            replay = None
            if key is not None:
                fresh[key] = event_id
                replay = response_to_json(TrackPostResponse(id=event_id))
            pending.append((event_row(event_id, request, when), increments(quotas), replay))
            ids.append(event_id)
        self.ledger.record(conn, pending)
        firings = (
            self.definitions.alerts.log(
                self.ledger,
                conn,
                (
                    crossing(o, self.ledger.counter(*counter), event_id)
                    for counter, (o, event_id) in watched.items()
                ),
                now,
            )
            if watched
            else []
        )
        return ids, len(pending), firings

    # --- checks and reads ----------------------------------------------------------

    def check_quotas(self, dimensions: Any) -> QuotaCheckResponse:
        dims = check_dimensions(dimensions)
        with self.lock:
            now = self.now()
            self.definitions.refresh()
            outcomes = quota_outcomes(self.definitions.plan, self.ledger, dims, None, now)
        statuses = [quota_status(o, charged=False) for o in shown_quotas(outcomes)]
        allowed = not any(o.exceeded and o.rule.enforced for o in outcomes)
        return trusted(QuotaCheckResponse, {"allowed": allowed, "quotas": statuses})

    def check_rate_limits(self, dimensions: Any) -> RateLimitCheckResponse:
        dims = check_dimensions(dimensions)
        with self.lock:
            self.now()
            self.definitions.refresh()
            outcomes = self._decide_rates(dims, None, take=False)
        statuses = [rate_status(o, charged=False) for o in shown_rates(outcomes)]
        allowed = all(o.answer.allowed for o in outcomes if o.enforced)
        return trusted(RateLimitCheckResponse, {"allowed": allowed, "rate_limits": statuses})

    def list_events(
        self,
        *,
        customer_id: str | None,
        event_type: str | None,
        model: str | None,
        start_date: Any,
        end_date: Any,
        limit: int,
        cursor: str | None,
    ) -> Page[Event]:
        limit = page_size(limit)
        start, end = date_range(start_date, end_date)
        optional_texts(
            ("customerId", customer_id),
            ("eventType", event_type),
            ("model", model),
            ("cursor", cursor),
        )
        with self.lock:
            self.now()
            before = None
            if cursor is not None:
                before = self.ledger.event_seq(cursor)
                if before is None:
                    raise InvalidRequestError(
                        f"cursor: {cursor!r} is not a cursor from this ledger"
                    )
            rows = self.ledger.list_events(
                customer_id=customer_id,
                event_type=event_type,
                model=model,
                start=start,
                end=end,
                before_seq=before,
                limit=limit + 1,
            )
        return newest_first(Page[Event], [event_model(row) for _, row in rows], limit)

    def customer_usage(
        self, customer_id: str, start_date: Any, end_date: Any
    ) -> CustomerUsageResponse:
        if not text(customer_id, "customerId"):
            raise InvalidRequestError("customerId: must be a non-empty string")
        start, end = date_range(start_date, end_date)
        with self.lock:
            self.now()
            totals = self.ledger.totals(customer_id, start, end)
        return CustomerUsageResponse(
            customer_id=customer_id,
            total_events=totals.events,
            total_tokens=totals.total_tokens,
            total_input_tokens=totals.input_tokens,
            total_output_tokens=totals.output_tokens,
            total_cost_cents=from_units("total_cost_cents", totals.cost_micro_cents),
        )

    def alert_history(
        self, quota_id: str | None, alert_id: str | None, limit: int, cursor: str | None
    ) -> Page[QuotaAlertLog]:
        limit = page_size(limit)
        optional_texts(("quotaId", quota_id), ("alertId", alert_id), ("cursor", cursor))
        with self.lock:
            self.opened()
            before = None
            if cursor is not None:
                before = self.ledger.alert_log_seq(cursor)
                if before is None:
                    raise InvalidRequestError(
                        f"cursor: {cursor!r} is not an alert history cursor of this ledger"
                    )
            rows = self.ledger.alert_log(
                quota_id=quota_id, alert_id=alert_id, before_seq=before, limit=limit + 1
            )
        return newest_first(Page[QuotaAlertLog], [log_entry(row) for _, row in rows], limit)


def newest_first(page: type[Page[R]], items: list[R], limit: int) -> Page[R]:
    """A page of ``items`` read with ``limit + 1`` rows: the extra one says there are more,
    and the last item's id is the cursor to the next page."""
    data = items[:limit]
    more = len(items) > limit
    return page(data=data, next_cursor=data[-1].id if more else None, has_more=more)


def _same_limits(plan: Plan, reserved: TrackPostRequest, final: TrackPostRequest) -> None:
    """Refuse a commit whose properties move the event onto other limits or keys.

    It would be recorded against limits that never checked it (nothing is
    checked at commit), while the hold it leaves was taken elsewhere."""
    if falls_on(plan, dimensions_of(reserved)) != falls_on(plan, dimensions_of(final)):
        before, after = reserved.properties, final.properties
        changed = sorted(name for name in after if before.get(name, None) != after[name])
        raise InvalidRequestError(
            f"properties: {', '.join(changed)} would count this event against other limits "
            "(or other keys of them, or another override's limit) than it was reserved "
            "against; give such properties to reserve(), not to commit()"
        )


def dimensions_of(request: TrackPostRequest) -> Dimensions:
    """The dimensions limits match an event on."""
    return extract(
        request.customer_id, request.event_type, request.model, request.provider, request.properties
    )
