"""The in-memory ledger: the same rows as the SQLite ledger, kept in Python objects.

``Tracker()`` with no path used to run SQLite on ``:memory:``; that spent
most of a call in SQL round trips for data that dies with the process
anyway.  Here an event is appended to a list and a quota counter is a dict
entry, so the hot path costs what the rules cost.  Every read answers
exactly what :class:`~limitry_local.ledger.Ledger` answers on the same
writes (the whole test suite runs on both), including the order of lists
and the exact integer sums of totals; the rules that make it so (filters,
paging, holds, counter bounds) are the ones the SQL ledgers use
(:mod:`limitry_local.ledger.common`); costs are summed as the micro-cents
stored with each event, as the SQL ledgers sum their column.

Writes happen inside :meth:`MemoryLedger.write`, under the tracker's lock;
a scope that raises is undone from a small journal of what it changed, so
"all or nothing" holds here as it does in a SQLite transaction.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from limitry_local.errors import LedgerError
from limitry_local.ledger.common import (
    check_priced,
    checked_units,
    event_matches,
    held_by,
    page,
    without_quota,
)
from limitry_local.ledger.protocol import (
    EVENT_COLUMNS,
    AlertRow,
    CounterIncrement,
    Durability,
    EventRow,
    ReportFilter,
    UsageTotals,
    report_column,
)

K = TypeVar("K")


class MemoryLedger:
    """Limits, events, quota counters and idempotency keys in this process's memory.

    Nothing survives the process; a file ledger (``Tracker("usage.db")``) does.
    Every event is kept (about 400 bytes each with short strings): for a
    long-running process recording millions of events, use a file.
    """

    path: Path | None = None
    where = ":memory:"
    shared = False
    durability: Durability = "normal"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._closed = False
        self._version = 0
        # id -> (seq, row): listed by seq, creation order, as SQLite lists them
        # by rowid; an undone delete puts the row back in its place.
        self._definitions: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {
            "quotas": {},
            "rate_limits": {},
            "quota_alerts": {},
        }
        self._definition_seq = 0
        self._events: list[EventRow] = []
        self._seq_by_id: dict[str, int] = {}
        self._by_customer: dict[str | None, list[int]] = {}
        self._counters: dict[tuple[str, str, int], int] = {}
        self._idempotency: dict[str, tuple[str, str]] = {}
        # hold id -> (increments already on the counters, expires_at)
        self._holds: dict[str, tuple[list[CounterIncrement], float]] = {}
        self._alert_log: list[AlertRow] = []
        # (alert_id, key, period_start) -> seq: what SQLite's unique index keeps.
        self._alert_fired: dict[tuple[str, str, int], int] = {}
        self._alert_seq_by_id: dict[str, int] = {}
        # kind -> id -> (seq, JSON text): the Limitry 1.0 face's documents.
        self._records: dict[str, dict[str, tuple[int, str, float | None]]] = {}
        self._record_seq = 0
        # Undo steps of the open write scope, newest last; None outside a scope.
        self._journal: list[Callable[[], None]] | None = None
        self._scope = _Scope(self)

    # --- scopes ---------------------------------------------------------------

    def write(
        self, *, durable: bool = False, exclusive: bool = False, optimistic: bool = False
    ) -> _Scope:
        """A write scope: everything written inside is undone if the scope raises.

        The Tracker's lock makes every scope exclusive (one process, one ledger):
        ``exclusive`` and ``optimistic`` change nothing."""
        return self._scope

    def _undo(self, step: Callable[[], None]) -> None:
        self._open_journal().append(step)

    def _open_journal(self) -> list[Callable[[], None]]:
        """The open scope's journal; checked before a write changes anything."""
        if self._journal is None:
            raise RuntimeError("ledger writes must happen inside MemoryLedger.write()")
        return self._journal

    def flush(self) -> None:
        """Nothing to commit: every write is visible at once."""

    def close(self) -> None:
        with self.lock:
            self._closed = True

    def _ensure_usable(self) -> None:
        if self._closed:
            raise LedgerError(f"ledger {self.where} is closed", "cannot_open")

    # --- limit definitions ----------------------------------------------------

    def definitions_version(self) -> int:
        self._ensure_usable()
        return self._version

    def bump_definitions(self, scope: object) -> int:
        previous = self._version
        self._undo(lambda: setattr(self, "_version", previous))
        self._version = previous + 1
        return self._version

    def definitions(self, table: str) -> list[dict[str, Any]]:
        """Every quota or rate limit in creation order (an update keeps its place)."""
        self._ensure_usable()
        return [_copy(row) for _, row in sorted(self._definitions[table].values())]

    def save_definition(self, scope: object, table: str, row: dict[str, Any]) -> None:
        rows = self._definitions[table]
        limit_id = row["id"]
        before = rows.get(limit_id)
        if before is None:
            self._undo(lambda: rows.__delitem__(limit_id))
            self._definition_seq += 1
            rows[limit_id] = (self._definition_seq, _copy(row))
        else:
            self._undo(lambda: rows.__setitem__(limit_id, before))
            seq, stored = before
            rows[limit_id] = (seq, {**stored, **_copy(row)})

    def delete_definition(self, scope: object, table: str, limit_id: str) -> None:
        self._open_journal()
        rows = self._definitions[table]
        before = rows.pop(limit_id, None)
        if before is not None:
            self._undo(lambda: rows.__setitem__(limit_id, before))
        if table == "quotas":
            self.replace_counters(scope, limit_id, ())

    def replace_counters(
        self, scope: object, quota_id: str, totals: Iterable[tuple[str, int, int]]
    ) -> None:
        """Counters of a quota rebuilt from the events: open holds on it are forgotten."""
        self._open_journal()
        holds = self._holds
        before_holds = dict(holds)

        def restore_holds() -> None:
            holds.clear()
            holds.update(before_holds)

        self._undo(restore_holds)
        for hold_id, (increments, expires_at) in before_holds.items():
            kept = without_quota(increments, quota_id)
            if len(kept) != len(increments):
                holds[hold_id] = (kept, expires_at)
        counters = self._counters
        old = {k: v for k, v in counters.items() if k[0] == quota_id}
        new = {
            (quota_id, key, start): checked_units(used, self.where) for key, start, used in totals
        }

        def undo() -> None:
            for k in new:
                counters.pop(k, None)
            counters.update(old)

        self._undo(undo)
        for k in old:
            del counters[k]
        counters.update(new)

    # --- the hot path -----------------------------------------------------------

    def counter(self, quota_id: str, key: str, period_start: int) -> int:
        if self._closed:
            self._ensure_usable()
        return self._counters.get((quota_id, key, period_start), 0)

    def lock_counters(self, scope: object, counters: Sequence[tuple[str, str, int]]) -> list[int]:
        self._open_journal()
        if self._closed:
            self._ensure_usable()
        # Each counter is its own dict key: one lookup each, no call of counter().
        get = self._counters.get
        return [get(counter, 0) for counter in counters]

    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, stored response JSON)`` of the event recorded with this key, if any."""
        if self._closed:
            self._ensure_usable()
        return self._idempotency.get(key)

    def add_to_counters(self, scope: object, increments: Iterable[CounterIncrement]) -> None:
        self._open_journal()
        counters = self._counters
        changed: list[tuple[tuple[str, str, int], int | None]] = []

        def undo() -> None:
            for counter, before in reversed(changed):
                if before is None:
                    counters.pop(counter, None)
                else:
                    counters[counter] = before

        self._undo(undo)
        for quota_id, key, start, amount in increments:
            counter = (quota_id, key, start)
            before = counters.get(counter)
            used = checked_units(amount if before is None else before + amount, self.where)
            changed.append((counter, before))
            counters[counter] = used

    def add_hold(
        self, scope: object, hold_id: str, increments: list[CounterIncrement], expires_at: float
    ) -> None:
        self.add_to_counters(scope, increments)
        holds = self._holds
        self._undo(lambda: holds.__delitem__(hold_id))
        holds[hold_id] = (list(increments), expires_at)

    def pop_hold(self, scope: object, hold_id: str) -> list[CounterIncrement] | None:
        self._open_journal()
        holds = self._holds
        held = holds.pop(hold_id, None)
        if held is None:
            return None
        self._undo(lambda: holds.__setitem__(hold_id, held))
        increments = held[0]
        self.add_to_counters(scope, [(q, k, s, -amount) for q, k, s, amount in increments])
        return increments

    def pop_expired_holds(self, scope: object, now: float) -> list[str]:
        expired = [hold_id for hold_id, (_, at) in self._holds.items() if at <= now]
        for hold_id in expired:
            self.pop_hold(scope, hold_id)
        return expired

    def get_record(self, scope: object | None, kind: str, record_id: str) -> str | None:
        self._ensure_usable()
        found = self._records.get(kind, {}).get(record_id)
        return None if found is None else found[1]

    def put_record(
        self, scope: object, kind: str, record_id: str, body: str, expires_at: float | None = None
    ) -> None:
        self._open_journal()
        documents = self._records.setdefault(kind, {})
        before = documents.get(record_id)
        if before is None:
            self._record_seq += 1
            documents[record_id] = (self._record_seq, body, expires_at)
            self._undo(lambda: documents.__delitem__(record_id))
        else:
            documents[record_id] = (before[0], body, expires_at)
            self._undo(lambda: documents.__setitem__(record_id, before))

    def purge_records(self, scope: object, kind: str, now: float) -> int:
        self._open_journal()
        documents = self._records.get(kind, {})
        gone = {
            record_id: found
            for record_id, found in documents.items()
            if found[2] is not None and found[2] <= now
        }
        for record_id in gone:
            del documents[record_id]
        self._undo(lambda: documents.update(gone))
        return len(gone)

    def records(self, kind: str) -> list[tuple[str, str]]:
        self._ensure_usable()
        found = sorted(self._records.get(kind, {}).items(), key=lambda item: item[1][0])
        return [(record_id, body) for record_id, (_, body, _) in found]

    def record(
        self,
        scope: object,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None:
        """Append events, add their counter increments, keep idempotency responses."""
        journal = self._open_journal()
        rows = self._events
        counters = self._counters
        first = len(rows)
        added: list[tuple[tuple[str, str, int], int | None]] = []
        keys: list[str] = []
        # One undo step per call, registered before the first change, so a
        # failure halfway (MemoryError) is undone too.
        journal.append(lambda: self._unrecord(first, added, keys))
        for row, increments, response in events:
            check_priced(row)
            rows.append(row)
            seq = len(rows)
            self._seq_by_id[row.id] = seq
            by_customer = self._by_customer.get(row.customer_id)
            if by_customer is None:
                self._by_customer[row.customer_id] = [seq]
            else:
                by_customer.append(seq)
            for quota_id, key, start, amount in increments:
                counter = (quota_id, key, start)
                before = counters.get(counter)
                used = checked_units(amount if before is None else before + amount, self.where)
                added.append((counter, before))
                counters[counter] = used
            if row.idempotency_key is not None:
                self._idempotency[row.idempotency_key] = (row.id, response or "")
                keys.append(row.idempotency_key)

    def _unrecord(
        self, first: int, added: list[tuple[tuple[str, str, int], int | None]], keys: list[str]
    ) -> None:
        for row in self._events[first:]:
            self._seq_by_id.pop(row.id, None)
            seqs = self._by_customer.get(row.customer_id)
            while seqs and seqs[-1] > first:
                seqs.pop()
        del self._events[first:]
        # Newest first, so a counter two events touched ends at its first value.
        for counter, before in reversed(added):
            if before is None:
                self._counters.pop(counter, None)
            else:
                self._counters[counter] = before
        for key in keys:
            self._idempotency.pop(key, None)

    # --- reads ------------------------------------------------------------------

    def scan_events(self) -> Iterator[EventRow]:
        """Every event, oldest first."""
        self._ensure_usable()
        return iter(list(self._events))

    def list_events(
        self,
        *,
        customer_id: str | None,
        event_type: str | None,
        model: str | None,
        start: float | None,
        end: float | None,
        before_seq: int | None,
        limit: int,
    ) -> list[tuple[int, EventRow]]:
        """Matching events, most recently recorded first, as ``(seq, row)``."""
        self._ensure_usable()
        events = self._events
        return page(
            (
                (seq, events[seq - 1])
                for seq in self._seqs_newest_first(customer_id, before_seq)
                if event_matches(events[seq - 1], event_type, model, start, end)
            ),
            limit,
        )

    def _seqs_newest_first(self, customer_id: str | None, before_seq: int | None) -> Iterator[int]:
        if customer_id is None:
            top = (
                len(self._events) if before_seq is None else min(before_seq - 1, len(self._events))
            )
            return iter(range(top, 0, -1))
        seqs = self._by_customer.get(customer_id, [])
        return (seq for seq in reversed(seqs) if before_seq is None or seq < before_seq)

    def event_seq(self, event_id: str) -> int | None:
        self._ensure_usable()
        return self._seq_by_id.get(event_id)

    def totals(self, customer_id: str, start: float | None, end: float | None) -> UsageTotals:
        self._ensure_usable()
        events = total = inputs = outputs = cents = 0
        for seq in self._by_customer.get(customer_id, ()):
            row = self._events[seq - 1]
            if not event_matches(row, None, None, start, end):
                continue
            events += 1
            total += row.total_tokens or 0
            inputs += row.input_tokens or 0
            outputs += row.output_tokens or 0
            cents += row.cost_micro_cents or 0
        return UsageTotals(events, total, inputs, outputs, cents)

    def counters(self) -> dict[tuple[str, str, int], int]:
        """Every quota counter in whole units (micro-cents for cost), for audits and tests."""
        self._ensure_usable()
        return dict(self._counters)

    def event_count(self) -> int:
        self._ensure_usable()
        return len(self._events)

    # --- quota alerts -----------------------------------------------------------

    def held(self, quota_id: str, key: str, period_start: int) -> int:
        self._ensure_usable()
        holds = (increments for increments, _ in self._holds.values())
        return held_by(holds, quota_id, key, period_start)

    def log_alert(self, scope: object, row: AlertRow) -> bool:
        self._open_journal()
        fired = (row.alert_id, row.key, row.period_start)
        if fired in self._alert_fired:
            return False
        self._alert_log.append(row)
        seq = len(self._alert_log)
        self._alert_fired[fired] = seq
        self._alert_seq_by_id[row.id] = seq

        def undo() -> None:
            del self._alert_log[seq - 1 :]
            del self._alert_fired[fired]
            del self._alert_seq_by_id[row.id]

        self._undo(undo)
        return True

    def alert_log(
        self,
        *,
        quota_id: str | None,
        alert_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[tuple[int, AlertRow]]:
        self._ensure_usable()
        top = len(self._alert_log)
        if before_seq is not None:
            top = min(before_seq - 1, top)
        log = self._alert_log
        return page(
            (
                (seq, log[seq - 1])
                for seq in range(top, 0, -1)
                if (quota_id is None or log[seq - 1].quota_id == quota_id)
                and (alert_id is None or log[seq - 1].alert_id == alert_id)
            ),
            limit,
        )

    def alert_log_seq(self, entry_id: str) -> int | None:
        self._ensure_usable()
        return self._alert_seq_by_id.get(entry_id)

    def last_triggered(self, alert_ids: Iterable[str]) -> dict[str, float]:
        self._ensure_usable()
        wanted = set(alert_ids)
        last: dict[str, float] = {}
        # History is rare (once per alert, key and period): a scan is cheap here.
        for row in self._alert_log:
            if row.alert_id in wanted:
                last[row.alert_id] = max(last.get(row.alert_id, row.triggered_at), row.triggered_at)
        return last

    # --- usage reports ---

    def usage_breakdown(
        self, column: str, where: ReportFilter
    ) -> list[tuple[str | None, UsageTotals]]:
        return self._report(itemgetter(EVENT_COLUMNS.index(report_column(column))), where)

    def usage_timeseries(
        self, seconds: int, origin: int, where: ReportFilter
    ) -> list[tuple[int, UsageTotals]]:
        def period_start(row: EventRow) -> int:
            second = math.floor(row.ts)
            return second - (second - origin) % seconds

        return self._report(period_start, where)

    def _report(
        self, key: Callable[[EventRow], K], where: ReportFilter
    ) -> list[tuple[K, UsageTotals]]:
        self._ensure_usable()
        # [events, total, input, output, micro-cents] per group: Python ints, exact.
        groups: dict[K, list[int]] = {}
        rows: Iterable[EventRow] = (
            self._events
            if where.customer_id is None
            else (self._events[seq - 1] for seq in self._by_customer.get(where.customer_id, ()))
        )
        for row in rows:
            if not event_matches(
                row, where.event_type, where.model, where.start, where.end, provider=where.provider
            ):
                continue
            group = key(row)
            sums = groups.get(group)
            if sums is None:
                sums = groups[group] = [0, 0, 0, 0, 0]
            sums[0] += 1
            sums[1] += row.total_tokens or 0
            sums[2] += row.input_tokens or 0
            sums[3] += row.output_tokens or 0
            sums[4] += row.cost_micro_cents or 0
        return [(group, UsageTotals(*sums)) for group, sums in groups.items()]


class _Scope:
    """The write scope as a plain context manager: a generator-based one costs
    a visible share of an in-memory call.  Re-entrant: an inner scope joins
    the outer one, which owns the journal and the undo."""

    __slots__ = ("_depth", "_ledger")

    def __init__(self, ledger: MemoryLedger) -> None:
        self._ledger = ledger
        self._depth = 0

    def __enter__(self) -> None:
        ledger = self._ledger
        ledger.lock.acquire()
        if ledger._closed:
            ledger.lock.release()
            ledger._ensure_usable()
        if self._depth == 0:
            ledger._journal = []
        self._depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ledger = self._ledger
        self._depth -= 1
        try:
            if self._depth == 0:
                journal, ledger._journal = ledger._journal, None
                if exc_type is not None and journal:
                    for undo in reversed(journal):
                        undo()
        finally:
            ledger.lock.release()


def _copy(row: dict[str, Any]) -> dict[str, Any]:
    # Definitions hold lists and dicts (filters, per): the caller's later
    # changes to its own objects must not reach the ledger, nor ours the caller.
    return copy.deepcopy(row)


MemoryLedger.__module__ = "limitry_local.memory_ledger"  # where users import it from
