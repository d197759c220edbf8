"""The SQL both database ledgers run, each statement written once over a :class:`Dialect`.

SQLite and PostgreSQL hold the same tables and answer every read alike
(tests/properties/test_ledger_differential.py holds them to it).  What
differs between them is small and lives in the dialect: the placeholder
(``?`` or ``%s``), the schema the tables are qualified with, a few
functions (``instr`` or ``strpos``, a cast or ``floor``), how "no limit" is
written, and the escaping of NUL characters PostgreSQL text cannot hold.

:class:`SqlLedger` is the part of :class:`~limitry_local.ledger.Ledger` and
``PostgresLedger`` that is the same: definitions, counters, holds, events
(paging, filters, totals, reports) and the alert log.  The engines keep
what is theirs: connections, transactions, locking, the durability modes,
and how events and alert firings are numbered.

Every protocol method an engine or this class defines runs under the
ledger's lock and turns a driver error into :class:`LedgerError` (see
:class:`Translated`), so no method translates errors by hand.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from limitry_local.errors import LedgerError
from limitry_local.ledger.common import (
    checked_units,
    decode_definition,
    decode_increments,
    held_in,
    without_quota,
)
from limitry_local.ledger.protocol import (
    ALERT_COLUMNS,
    DEFINITION_TABLES,
    EVENT_COLUMNS,
    AlertRow,
    CounterIncrement,
    EventRow,
    LedgerBackend,
    ReportFilter,
    UsageTotals,
    report_column,
)

# Every method of the protocol but the scope and lifetime ones (they handle
# errors their own way) and scan_events (a generator: an engine translates
# around it).
TRANSLATED = frozenset(
    name
    for name, value in vars(LedgerBackend).items()
    if callable(value) and not name.startswith("_")
) - {"write", "flush", "close", "scan_events"}
"""The protocol methods :class:`Translated` wraps."""


class Translated:
    """A base class that runs every method named in :data:`TRANSLATED` under the
    ledger's lock and turns the driver's errors into :class:`LedgerError`.

    Written once, applied when a subclass is defined (as the ``limits``
    package wraps its storages' methods in ``__init_subclass__``): an engine
    says which exceptions are its driver's (``driver_errors``) and how to
    explain one (:meth:`explained`), and writes no ``try`` of its own.
    """

    driver_errors: tuple[type[BaseException], ...] = ()
    lock: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in TRANSLATED:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_translated", False):
                setattr(cls, name, _translated(method))

    def _ensure_usable(self) -> None:
        raise NotImplementedError

    def explained(self, exc: BaseException) -> LedgerError:
        """A :class:`LedgerError` for a driver error, in words a user can act on."""
        raise NotImplementedError


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Translated, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self._ensure_usable()
            try:
                return method(self, *args, **kwargs)
            except self.driver_errors as exc:
                raise self.explained(exc) from exc

    wrapper._translated = True  # type: ignore[attr-defined]
    return wrapper


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one SQL engine spells its own way; every statement is written over it."""

    mark: str
    """The placeholder: ``?`` or ``%s``."""
    prefix: str
    """What qualifies a table name: ``""``, or a quoted schema and a dot."""
    float_mark: str
    """The placeholder of a timestamp bound, compared as a double."""
    int_mark: str
    """The placeholder of a 64-bit integer in an expression."""
    second: str
    """The event's whole unix second (``ts >= 0``, so truncation is the floor)."""
    modulo: str
    """The remainder operator as the driver wants it written."""
    contains: str
    """``{0}`` holds the text ``{1}``, a condition."""
    no_limit: int | None
    """What LIMIT takes for "every row"."""
    enc: Callable[[Any], Any] = lambda value: value
    """A string as stored (PostgreSQL escapes NUL); anything else as it is."""
    dec: Callable[[Any], Any] = lambda value: value
    """The inverse of :attr:`enc`."""

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def marks(self, count: int) -> str:
        return ", ".join(self.mark for _ in range(count))


def event_filters(
    dialect: Dialect,
    *,
    customer_id: str | None,
    event_type: str | None,
    model: str | None,
    start: float | None,
    end: float | None,
    provider: str | None = None,
) -> tuple[list[str], list[Any]]:
    """The WHERE conditions (and their parameters) of an event query."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("customer_id", customer_id),
        ("event_type", event_type),
        ("model", model),
        ("provider", provider),
    ):
        if value is not None:
            where.append(f"{column} = {dialect.mark}")
            params.append(dialect.enc(value))
    # As doubles, so an int bound compares as a REAL column compares with it.
    if start is not None:
        where.append(f"ts >= {dialect.float_mark}")
        params.append(float(start))
    if end is not None:
        where.append(f"ts < {dialect.float_mark}")
        params.append(float(end))
    return where, params


def _clause(where: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


class SqlLedger(Translated):
    """Definitions, counters, holds, events, reports and alerts over a :class:`Dialect`.

    An engine supplies the dialect, the connection a read uses
    (:meth:`_reader`), the one a write inside a scope uses (:meth:`_writer`),
    ``executemany`` (:meth:`_many`), and the statement that logs an alert
    firing (:attr:`_insert_alert`: how it is numbered is the engine's).
    """

    dialect: Dialect
    where: str
    _insert_alert: str

    @functools.cached_property
    def _hot(self) -> _HotStatements:
        """The statements of every ``usage()`` call, formatted once per ledger."""
        d = self.dialect
        counters = d.table("quota_counters")
        return _HotStatements(
            counter=f"SELECT used FROM {counters} "
            f"WHERE quota_id = {d.mark} AND key = {d.mark} AND period_start = {d.mark}",
            idempotent=f"SELECT event_id, response FROM {d.table('idempotency_keys')} "
            f"WHERE key = {d.mark}",
        )

    # --- what the engine supplies ------------------------------------------------

    def _reader(self) -> Any:
        raise NotImplementedError

    def _writer(self, scope: object) -> Any:
        raise NotImplementedError

    def _many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row a read query answers, or None."""
        return self._reader().execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row a read query answers."""
        rows: list[Any] = self._reader().execute(sql, params).fetchall()
        return rows

    def _sum_overflowed(self, exc: BaseException) -> bool:
        """Whether a query failed because ``sum()`` passed 2**63 (SQLite's sums do)."""
        return False

    def _corrupt(self, what: str) -> LedgerError:
        return LedgerError(
            f"ledger {self.where} is corrupt ({what}); restore it from a backup", "corrupt"
        )

    # --- limit definitions -----------------------------------------------------------

    def definitions(self, table: str) -> list[dict[str, Any]]:
        """Every quota, rate limit or alert in creation order, JSON columns decoded."""
        d = self.dialect
        cursor = self._reader().execute(f"SELECT * FROM {d.table(_table(table))} ORDER BY seq")
        names = [column[0] for column in cursor.description or ()]
        rows = cursor.fetchall()
        try:
            return [
                decode_definition({n: d.dec(v) for n, v in zip(names, row, strict=True)})
                for row in rows
            ]
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise LedgerError(
                f"ledger {self.where} is corrupt: a stored definition in {table} cannot be "
                f"read ({exc}); restore it from a backup",
                "corrupt",
            ) from None

    def _changing_definitions(self, scope: object) -> Any:
        """The connection of a scope that changes definitions or rebuilds counters.

        An engine whose writers run in parallel makes the scope exclusive here."""
        return self._writer(scope)

    def save_definition(self, scope: object, table: str, row: dict[str, Any]) -> None:
        """Insert or replace a definition; an update keeps its place in the order."""
        conn = self._changing_definitions(scope)
        names = [f'"{column}"' for column in row]
        updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != '"id"')
        conn.execute(
            f"INSERT INTO {self.dialect.table(_table(table))} ({', '.join(names)}) "
            f"VALUES ({self.dialect.marks(len(names))}) ON CONFLICT (id) DO UPDATE SET {updates}",
            [
                json.dumps(value) if isinstance(value, (dict, list)) else self.dialect.enc(value)
                for value in row.values()
            ],
        )

    def delete_definition(self, scope: object, table: str, limit_id: str) -> None:
        conn = self._changing_definitions(scope)
        d = self.dialect
        conn.execute(f"DELETE FROM {d.table(_table(table))} WHERE id = {d.mark}", [d.enc(limit_id)])
        if table == "quotas":
            conn.execute(
                f"DELETE FROM {d.table('quota_counters')} WHERE quota_id = {d.mark}",
                [d.enc(limit_id)],
            )
            self._forget_held(conn, limit_id)

    def replace_counters(
        self, scope: object, quota_id: str, totals: Iterable[tuple[str, int, int]]
    ) -> None:
        """Counters of a quota rebuilt from the events: open holds on it are forgotten."""
        conn = self._changing_definitions(scope)
        d = self.dialect
        rows = [
            (d.enc(quota_id), d.enc(key), start, checked_units(used, self.where))
            for key, start, used in totals
        ]
        conn.execute(
            f"DELETE FROM {d.table('quota_counters')} WHERE quota_id = {d.mark}", [d.enc(quota_id)]
        )
        if rows:
            self._many(
                conn,
                f"INSERT INTO {d.table('quota_counters')} (quota_id, key, period_start, used) "
                f"VALUES ({d.marks(4)})",
                rows,
            )
        self._forget_held(conn, quota_id)

    def _forget_held(self, conn: Any, quota_id: str) -> None:
        # The counters no longer include what holds added to this quota, so
        # releasing a hold must not take it off again.
        d = self.dialect
        for hold_id, text in conn.execute(
            f"SELECT id, increments FROM {d.table('holds')}"
        ).fetchall():
            increments = self._increments(text)
            kept = without_quota(increments, quota_id)
            if len(kept) != len(increments):
                conn.execute(
                    f"UPDATE {d.table('holds')} SET increments = {d.mark} WHERE id = {d.mark}",
                    [json.dumps(kept), hold_id],
                )

    # --- counters and holds ----------------------------------------------------------

    def counter(self, quota_id: str, key: str, period_start: int) -> int:
        enc = self.dialect.enc
        row = (
            self._reader()
            .execute(self._hot.counter, [enc(quota_id), enc(key), period_start])
            .fetchone()
        )
        return 0 if row is None else self._units(row[0], "a quota counter")

    def lock_counters(self, scope: object, counters: Sequence[tuple[str, str, int]]) -> list[int]:
        """Read inside the scope; an engine with one writer at a time holds them already."""
        self._writer(scope)
        return [self.counter(*counter) for counter in counters]

    def counters(self) -> dict[tuple[str, str, int], int]:
        """Every quota counter in whole units (micro-cents for cost), for audits and tests."""
        d = self.dialect
        rows = self._all(
            f"SELECT quota_id, key, period_start, used FROM {d.table('quota_counters')}"
        )
        return {
            (d.dec(q), d.dec(k), int(s)): self._units(used, "a quota counter")
            for q, k, s, used in rows
        }

    def add_to_counters(self, scope: object, increments: Iterable[CounterIncrement]) -> None:
        """Add (or, negative, take back) amounts on counters (inside a write scope).

        A counter that would pass 2**63 - 1 is refused with an ``"overflow"``
        :class:`LedgerError`, and the scope keeps nothing.
        """
        self._add(self._writer(scope), increments)

    def _add(self, conn: Any, increments: Iterable[CounterIncrement]) -> None:
        """Add each amount to its counter; a sum past 2**63 - 1 is the ``overflow`` error."""
        raise NotImplementedError

    def add_hold(
        self, scope: object, hold_id: str, increments: list[CounterIncrement], expires_at: float
    ) -> None:
        self.add_to_counters(scope, increments)
        d = self.dialect
        # JSON escapes NUL, so the text needs no encoding.
        self._writer(scope).execute(
            f"INSERT INTO {d.table('holds')} (id, increments, expires_at) VALUES ({d.marks(3)})",
            [hold_id, json.dumps(increments), expires_at],
        )

    def pop_hold(self, scope: object, hold_id: str) -> list[CounterIncrement] | None:
        d = self.dialect
        row = (
            self._writer(scope)
            .execute(
                f"DELETE FROM {d.table('holds')} WHERE id = {d.mark} RETURNING increments",
                [hold_id],
            )
            .fetchone()
        )
        if row is None:
            return None
        increments = self._increments(row[0])
        self.add_to_counters(scope, [(q, k, s, -amount) for q, k, s, amount in increments])
        return increments

    def pop_expired_holds(self, scope: object, now: float) -> list[str]:
        d = self.dialect
        expired = [
            str(hold_id)
            for (hold_id,) in self._writer(scope)
            .execute(
                f"SELECT id FROM {d.table('holds')} WHERE expires_at <= {d.mark} ORDER BY id",
                [now],
            )
            .fetchall()
        ]
        for hold_id in expired:
            self.pop_hold(scope, hold_id)
        return expired

    def held(self, quota_id: str, key: str, period_start: int) -> int:
        # Open reservations only, and the quota id narrows them down before decoding.
        # The increments are JSON, which escapes NUL: compared as they are.
        d = self.dialect
        rows = self._all(
            f"SELECT increments FROM {d.table('holds')} "
            f"WHERE {d.contains.format('increments', d.mark)}",
            [quota_id],
        )
        try:
            return held_in((text for (text,) in rows), quota_id, key, period_start)
        except (ValueError, TypeError) as exc:
            raise self._corrupt(f"a hold cannot be read: {exc}") from None

    def _increments(self, text: Any) -> list[CounterIncrement]:
        try:
            return decode_increments(text)
        except (ValueError, TypeError) as exc:
            raise self._corrupt(f"a hold cannot be read: {exc}") from None

    def _units(self, value: Any, what: str) -> int:
        """A stored whole number of units, or "corrupt" if it is not one."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            units = int(value)
        except (TypeError, ValueError):
            units = None
        if units is None or units != value or isinstance(value, (float, str, bytes)):
            raise self._corrupt(f"{what} holds {value!r}, not a whole number")
        return units

    # --- idempotency keys ------------------------------------------------------------

    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, stored response JSON)`` of the event recorded with this key, if any."""
        return self._stored_response(key, self._one(self._hot.idempotent, [self.dialect.enc(key)]))

    def _stored_response(self, key: str, row: Any) -> tuple[str, str] | None:
        """An idempotency key's row as :meth:`idempotent` answers it, checked."""
        if row is None:
            return None
        d = self.dialect
        event_id, response = d.dec(row[0]), d.dec(row[1])
        if not isinstance(event_id, str) or not isinstance(response, str):
            raise self._corrupt(f"idempotency key {key!r} holds {row!r}")
        if response.startswith("{"):
            # The tracker stores a JSON object: one cut short or scribbled over
            # must not reach it as a JSONDecodeError.  (Other text is stored
            # by callers of the ledger itself, and given back as it is.)
            try:
                json.loads(response)
            except ValueError as exc:
                raise self._corrupt(
                    f"the stored response of idempotency key {key!r} is damaged: {exc}"
                ) from None
        return event_id, response

    # --- documents -----------------------------------------------------------------------

    def get_record(self, scope: object | None, kind: str, record_id: str) -> str | None:
        d = self.dialect
        conn = self._reader() if scope is None else self._writer(scope)
        row = conn.execute(
            f"SELECT body FROM {d.table('records')} WHERE kind = {d.mark} AND id = {d.mark}",
            [d.enc(kind), d.enc(record_id)],
        ).fetchone()
        if row is None:
            return None
        body = d.dec(row[0])
        if not isinstance(body, str):
            raise self._corrupt(f"the {kind} {record_id!r} holds {row[0]!r}")
        return body

    def put_record(
        self, scope: object, kind: str, record_id: str, body: str, expires_at: float | None = None
    ) -> None:
        d = self.dialect
        self._writer(scope).execute(
            f"INSERT INTO {d.table('records')} (kind, id, body, expires_at) "
            f"VALUES ({d.marks(4)}) ON CONFLICT (kind, id) "
            "DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at",
            [d.enc(kind), d.enc(record_id), d.enc(body), expires_at],
        )

    def purge_records(self, scope: object, kind: str, now: float) -> int:
        d = self.dialect
        cursor = self._writer(scope).execute(
            f"DELETE FROM {d.table('records')} WHERE kind = {d.mark} AND expires_at <= {d.mark}",
            [d.enc(kind), now],
        )
        return int(cursor.rowcount)

    def records(self, kind: str) -> list[tuple[str, str]]:
        d = self.dialect
        rows = self._all(
            f"SELECT id, body FROM {d.table('records')} WHERE kind = {d.mark} ORDER BY seq",
            [d.enc(kind)],
        )
        return [(d.dec(record_id), d.dec(body)) for record_id, body in rows]

    # --- events --------------------------------------------------------------------------

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
        where, params = event_filters(
            self.dialect,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            start=start,
            end=end,
        )
        rows = self._newest_first(
            "events", EVENT_COLUMNS, where, params, before_seq=before_seq, limit=limit
        )
        return [(row[0], self._event(row[1:])) for row in rows]

    def _event(self, row: Sequence[Any]) -> EventRow:
        dec = self.dialect.dec
        return EventRow(*(dec(value) for value in row))

    def _newest_first(
        self,
        table: str,
        columns: Sequence[str],
        where: list[str],
        params: list[Any],
        *,
        before_seq: int | None,
        limit: int,
    ) -> list[Any]:
        """``(seq, *columns)`` of a paged table's matching rows, most recent first."""
        d = self.dialect
        if before_seq is not None:
            where = [*where, f"seq < {d.mark}"]
            params = [*params, before_seq]
        return self._all(
            f"SELECT seq, {', '.join(columns)} FROM {d.table(table)} {_clause(where)} "
            f"ORDER BY seq DESC LIMIT {d.mark}",
            [*params, d.no_limit if limit < 0 else limit],
        )

    def _seq_of(self, table: str, row_id: str) -> int | None:
        """The seq of a paged table's row (a page cursor), None if it is gone."""
        d = self.dialect
        row = self._one(f"SELECT seq FROM {d.table(table)} WHERE id = {d.mark}", [d.enc(row_id)])
        return None if row is None else int(row[0])

    def event_seq(self, event_id: str) -> int | None:
        return self._seq_of("events", event_id)

    def event_count(self) -> int:
        return int(self._one(f"SELECT count(*) FROM {self.dialect.table('events')}")[0])

    def totals(self, customer_id: str, start: float | None, end: float | None) -> UsageTotals:
        where, params = event_filters(
            self.dialect, customer_id=customer_id, event_type=None, model=None, start=start, end=end
        )
        rows = self._sums("", [], where, params)
        return rows[0][1] if rows else UsageTotals(0, 0, 0, 0, 0)

    # --- usage reports -------------------------------------------------------------------

    def usage_breakdown(
        self, column: str, where: ReportFilter
    ) -> list[tuple[str | None, UsageTotals]]:
        rows = self._report(report_column(column), [], where)
        return [(self.dialect.dec(value), totals) for value, totals in rows]

    def usage_timeseries(
        self, seconds: int, origin: int, where: ReportFilter
    ) -> list[tuple[int, UsageTotals]]:
        # ts >= 0 (events are 1970 or later), so % is never negative: the
        # period start, as periods.period_bounds computes it.
        d = self.dialect
        start = f"{d.second} - ({d.second} - {d.int_mark}) {d.modulo} {d.int_mark}"
        rows = self._report(start, [origin, seconds], where)
        return [(int(start), totals) for start, totals in rows]

    def _report(
        self, key: str, key_params: list[Any], where: ReportFilter
    ) -> list[tuple[Any, UsageTotals]]:
        conditions, params = event_filters(
            self.dialect,
            customer_id=where.customer_id,
            event_type=where.event_type,
            model=where.model,
            start=where.start,
            end=where.end,
            provider=where.provider,
        )
        return self._sums(f"{key}, ", key_params, conditions, params)

    def _sums(
        self, key: str, key_params: list[Any], where: list[str], params: list[Any]
    ) -> list[tuple[Any, UsageTotals]]:
        """``SELECT key, count, sums ... GROUP BY key`` (no key: one row) over ``where``."""
        conn = self._reader()
        events = self.dialect.table("events")
        group = " GROUP BY 1" if key else ""
        # Each amount in whole units: cost as the micro-cents stored with each
        # event, what the counters added.
        amounts = ("total_tokens", "input_tokens", "output_tokens", "cost_micro_cents")
        sums = ", ".join(f"sum({amount})" for amount in amounts)
        try:
            rows = conn.execute(
                f"SELECT {key}count(*), {sums} FROM {events} {_clause(where)}{group}",
                [*key_params, *params],
            ).fetchall()
            return [(row[0] if key else None, _totals(row[1:] if key else row)) for row in rows]
        except self.driver_errors as exc:
            if not self._sum_overflowed(exc):
                raise
        # sum() refused to pass 2**63 (thousands of maximal costs in micro-cents).
        # Summing the high and low 32 bits apart stays exact up to 2**31 events.
        split = ", ".join(f"sum(({a}) >> 32), sum(({a}) & 4294967295)" for a in amounts)
        rows = conn.execute(
            f"SELECT {key}count(*), {split} FROM {events} {_clause(where)}{group}",
            [*key_params, *params],
        ).fetchall()
        return [(row[0] if key else None, _joined(row[1:] if key else row)) for row in rows]

    # --- the alert log ---------------------------------------------------------------------

    def log_alert(self, scope: object, row: AlertRow) -> bool:
        """Add a firing (inside a write scope); False if this alert, key and period fired before.

        The unique index decides, under the write lock: two processes that
        both see usage cross a threshold log it once.
        """
        enc = self.dialect.enc
        cursor = self._writer(scope).execute(self._insert_alert, [enc(value) for value in row])
        return int(cursor.rowcount) == 1

    def alert_log(
        self,
        *,
        quota_id: str | None,
        alert_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[tuple[int, AlertRow]]:
        """Firings, newest first, as ``(seq, row)``."""
        d = self.dialect
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("quota_id", quota_id), ("alert_id", alert_id)):
            if value is not None:
                where.append(f"{column} = {d.mark}")
                params.append(d.enc(value))
        rows = self._newest_first(
            "alert_log", ALERT_COLUMNS, where, params, before_seq=before_seq, limit=limit
        )
        return [(int(row[0]), self._alert(row[1:])) for row in rows]

    def _alert(self, row: Sequence[Any]) -> AlertRow:
        decoded = [self.dialect.dec(value) for value in row]
        for at in _WHOLE_ALERT_COLUMNS:
            decoded[at] = self._units(decoded[at], "an alert firing")
        return AlertRow(*decoded)

    def alert_log_seq(self, entry_id: str) -> int | None:
        return self._seq_of("alert_log", entry_id)

    def last_triggered(self, alert_ids: Iterable[str]) -> dict[str, float]:
        # One indexed max() per alert: a history of millions of firings is not scanned.
        d = self.dialect
        last: dict[str, float] = {}
        for alert_id in alert_ids:
            (when,) = self._one(
                f"SELECT max(triggered_at) FROM {d.table('alert_log')} WHERE alert_id = {d.mark}",
                [d.enc(alert_id)],
            )
            if when is not None:
                last[alert_id] = float(when)
        return last


@dataclass(frozen=True, slots=True)
class _HotStatements:
    counter: str
    idempotent: str


_WHOLE_ALERT_COLUMNS = (ALERT_COLUMNS.index("used"), ALERT_COLUMNS.index("limit_units"))


def _table(table: str) -> str:
    """A definition table's name (it is written into SQL), or ValueError."""
    if table not in DEFINITION_TABLES:
        raise ValueError(f"no definition table {table!r}; expected one of {DEFINITION_TABLES}")
    return table


def _totals(row: Sequence[Any]) -> UsageTotals:
    return UsageTotals(*(int(value or 0) for value in row))


def _joined(row: Iterable[Any]) -> UsageTotals:
    """Totals from ``count, high1, low1, high2, low2, ...`` of the split sums."""
    count, *halves = (int(value or 0) for value in row)
    pairs = zip(halves[::2], halves[1::2], strict=True)
    return UsageTotals(count, *((high << 32) + low for high, low in pairs))
