"""What every ledger is to the tracker: the :class:`LedgerBackend` protocol and its rows.

The tracker decides; a ledger stores.  This module holds only the contract
between them: the protocol, the row types that cross it (events, alert
firings, counter increments, totals, report filters) and the durability
modes.  The engines live beside it: :mod:`limitry_local.ledger.sqlite`,
:mod:`limitry_local.ledger.postgres` and :mod:`limitry_local.ledger.memory`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, get_args

from limitry_local.metrics import micro_cents

Durability = Literal["normal", "full", "batched"]
DURABILITIES: tuple[str, ...] = get_args(Durability)


class EventRow(NamedTuple):
    """One row of the events table; ``ts`` is unix seconds, ``properties`` JSON text.

    ``cost_micro_cents`` is ``metrics.micro_cents(cost_cents)``, computed once
    by whoever builds the row (:func:`priced`); ledgers store it as given and
    reports sum it, so they never round ``cost_cents`` again.
    """

    id: str
    ts: float
    customer_id: str | None
    event_type: str | None
    model: str | None
    provider: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    latency_ms: int | None
    cost_cents: float | None
    properties: str
    idempotency_key: str | None
    cached_input_tokens: int | None = None
    cost_micro_cents: int | None = None


EVENT_COLUMNS = EventRow._fields


def priced(row: EventRow) -> EventRow:
    """``row`` with its ``cost_micro_cents`` counted from ``cost_cents`` by the one rule."""
    return row._replace(cost_micro_cents=micro_cents(row.cost_cents))


class AlertRow(NamedTuple):
    """One firing of a quota alert, as the alert history keeps it.

    It describes the quota as it was when the alert fired (name, metric,
    period), so the history reads the same after the quota changes or goes.
    ``used`` and ``limit_units`` are whole units (micro-cents for cost);
    ``dimensions`` is the JSON object of the quota's ``per`` values.
    """

    id: str
    alert_id: str
    quota_id: str
    key: str
    period_start: int
    period_end: int
    threshold: int
    used: int
    limit_units: int
    quota_name: str
    metric: str
    period: str
    dimensions: str
    event_id: str
    triggered_at: float


ALERT_COLUMNS = AlertRow._fields
DEFINITION_TABLES = ("quotas", "rate_limits", "quota_alerts")

CounterIncrement = tuple[str, str, int, int]
"""``(quota_id, key_json, period_start, amount)``."""


@dataclass(frozen=True, slots=True)
class UsageTotals:
    events: int
    total_tokens: int
    input_tokens: int
    output_tokens: int
    cost_micro_cents: int


class LedgerBackend(Protocol):
    """What the tracker asks of a ledger: it stores, it never decides.

    Writes happen inside :meth:`write` and take the scope it yields; reads
    inside a write scope see the scope's own writes and, for a shared
    store, hold off other writers until the scope ends, which is what keeps
    quota admission exact.  :class:`~limitry_local.ledger.Ledger` (SQLite),
    :class:`~limitry_local.memory_ledger.MemoryLedger` and
    :class:`~limitry_local.postgres_ledger.PostgresLedger` implement it.
    """

    @property
    def path(self) -> Path | None:
        """The SQLite file, if the ledger is one."""
        ...

    @property
    def where(self) -> str:
        """Where the ledger lives, as error messages name it."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other connections (processes, hosts) may change it between two calls."""
        ...

    @property
    def durability(self) -> Durability: ...

    def write(
        self, *, durable: bool = False, exclusive: bool = False, optimistic: bool = False
    ) -> AbstractContextManager[Any]:
        """A write scope.  ``exclusive=True`` for a scope that changes limit
        definitions: no other writer of a shared ledger runs beside it.

        ``optimistic=True`` from a caller that runs the scope again when it
        ends in a ``"conflict"`` :class:`LedgerError` (nothing of it kept): a
        shared ledger may then answer :meth:`definitions_version` and
        :meth:`idempotent` from what it last saw, and check them with the
        scope's first statement.  A ledger with one writer ignores it."""
        ...

    def flush(self) -> None: ...
    def close(self) -> None: ...
    def definitions_version(self) -> int: ...
    def bump_definitions(self, scope: Any) -> int: ...
    def definitions(self, table: str) -> list[dict[str, Any]]: ...
    def save_definition(self, scope: Any, table: str, row: dict[str, Any]) -> None: ...
    def delete_definition(self, scope: Any, table: str, limit_id: str) -> None: ...
    def replace_counters(
        self, scope: Any, quota_id: str, totals: Iterable[tuple[str, int, int]]
    ) -> None: ...
    def counter(self, quota_id: str, key: str, period_start: int) -> int: ...
    def lock_counters(self, scope: Any, counters: Sequence[tuple[str, str, int]]) -> list[int]:
        """The values of these counters (``(quota_id, key, period_start)``), in the
        order given, held against every other writer until the scope ends: what
        the scope decides on them stays true when it commits."""
        ...

    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, response JSON)`` of the event recorded under ``key``.  Inside a
        write scope, no other writer can record under ``key`` until the scope ends."""
        ...

    def add_to_counters(self, scope: Any, increments: Iterable[CounterIncrement]) -> None: ...
    def add_hold(
        self, scope: Any, hold_id: str, increments: list[CounterIncrement], expires_at: float
    ) -> None:
        """Add ``increments`` to the counters and remember them under ``hold_id``."""
        ...

    def pop_hold(self, scope: Any, hold_id: str) -> list[CounterIncrement] | None:
        """Forget a hold and take its increments back off the counters; None if it is gone."""
        ...

    def pop_expired_holds(self, scope: Any, now: float) -> list[str]:
        """Release every hold that expired at ``now``; returns their ids."""
        ...

    def record(
        self,
        scope: Any,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None: ...
    def scan_events(self) -> Iterator[EventRow]: ...
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
    ) -> list[tuple[int, EventRow]]: ...
    def event_seq(self, event_id: str) -> int | None: ...
    def totals(self, customer_id: str, start: float | None, end: float | None) -> UsageTotals: ...
    def counters(self) -> dict[tuple[str, str, int], int]: ...
    def event_count(self) -> int: ...
    def held(self, quota_id: str, key: str, period_start: int) -> int:
        """What open holds add to one counter (so ``counter - held`` is recorded usage)."""
        ...

    def log_alert(self, scope: Any, row: AlertRow) -> bool:
        """Add a firing to the alert history; False (and nothing written) if that
        alert already fired for this key and period."""
        ...

    def alert_log(
        self,
        *,
        quota_id: str | None,
        alert_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[tuple[int, AlertRow]]:
        """Firings, newest first, as ``(seq, row)``."""
        ...

    def alert_log_seq(self, entry_id: str) -> int | None: ...
    def last_triggered(self, alert_ids: Iterable[str]) -> dict[str, float]:
        """When each of these alerts last fired, by alert id; one that never fired is left out."""
        ...

    # --- documents (the Limitry 1.0 face's limits, subjects, reservations, ...) ---

    def get_record(self, scope: Any | None, kind: str, record_id: str) -> str | None:
        """A document's JSON text, or None.  Given a write scope, read inside it and
        held against every other writer until the scope ends (a shared ledger
        locks the id, even one not written yet)."""
        ...

    def put_record(
        self, scope: Any, kind: str, record_id: str, body: str, expires_at: float | None = None
    ) -> None:
        """Insert or replace a document; a replaced one keeps its place in the order.
        ``expires_at`` (unix seconds): :meth:`purge_records` may drop it from then on."""
        ...

    def purge_records(self, scope: Any, kind: str, now: float) -> int:
        """Drop the documents of ``kind`` whose time ran out at ``now``; how many."""
        ...

    def records(self, kind: str) -> list[tuple[str, str]]:
        """Every document of ``kind`` as ``(id, JSON text)``, in the order first written."""
        ...

    # --- usage reports ---

    def usage_breakdown(
        self, column: str, where: ReportFilter
    ) -> list[tuple[str | None, UsageTotals]]:
        """Totals of the matching events per value of ``column`` (one of
        :data:`REPORT_COLUMNS`); None is the group of events without a value.
        In no particular order."""
        ...

    def usage_timeseries(
        self, seconds: int, origin: int, where: ReportFilter
    ) -> list[tuple[int, UsageTotals]]:
        """Totals of the matching events per period of the grid ``(seconds, origin)``
        (see :func:`~limitry_local.periods.utc_grid`), keyed by the period's start in
        unix seconds; periods without events are absent.  In no particular order."""
        ...


def check_options(*, timeout: float, durability: str, flush_events: int, flush_ms: float) -> None:
    """Refuse options no ledger can honour, whichever ledger is chosen."""
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
    if isinstance(flush_events, bool) or not isinstance(flush_events, int) or flush_events < 1:
        raise ValueError(f"flush_events must be a positive integer, got {flush_events!r}")
    if (
        isinstance(flush_ms, bool)
        or not isinstance(flush_ms, (int, float))
        or not 0 < flush_ms < math.inf
    ):
        raise ValueError(f"flush_ms must be a number of milliseconds > 0, got {flush_ms!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    if not 0 <= timeout < math.inf:
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")


# --- usage reports ---

REPORT_COLUMNS = ("customer_id", "event_type", "model", "provider")
"""The event columns a usage breakdown may group by."""


class ReportFilter(NamedTuple):
    """The events a usage report sums: equal to each value given, ``start <= ts < end``."""

    customer_id: str | None = None
    event_type: str | None = None
    model: str | None = None
    provider: str | None = None
    start: float | None = None
    end: float | None = None


def report_column(column: str) -> str:
    """``column`` if a report may group by it (it is written into SQL); else ValueError."""
    if column not in REPORT_COLUMNS:
        raise ValueError(f"no report column {column!r}; expected one of {REPORT_COLUMNS}")
    return column
