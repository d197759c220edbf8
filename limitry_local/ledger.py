"""The SQLite ledger: schema, events, quota counters, limit definitions, idempotency keys.

The ledger stores; it never decides.  The tracker hands it the rows to
write, and every write that must be atomic (an event with its counter
increments and idempotency key; a quota with its rebuilt counters) happens
in one transaction here.

Quota counters are kept per ``(quota, key, period_start)`` and updated in the
same transaction as the event row, so a quota check is one primary-key
lookup whatever the number of events.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import sqlite_utils

from limitry_local.errors import LimitryError

SCHEMA_VERSION = 1


class EventRow(NamedTuple):
    """One row of the events table; ``ts`` is unix seconds, ``properties`` JSON text."""

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


EVENT_COLUMNS = EventRow._fields

_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_ADD_TO_COUNTER = (
    "INSERT INTO quota_counters (quota_id, key, period_start, used) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (quota_id, key, period_start) DO UPDATE SET used = used + excluded.used"
)
_GET_COUNTER = "SELECT used FROM quota_counters WHERE quota_id = ? AND key = ? AND period_start = ?"
_INSERT_IDEMPOTENCY = "INSERT INTO idempotency_keys (key, event_id, response) VALUES (?, ?, ?)"

CounterIncrement = tuple[str, str, int, int]
"""``(quota_id, key_json, period_start, amount)``."""

P = ParamSpec("P")
R = TypeVar("R")


class LedgerError(LimitryError):
    """The ledger file cannot be opened or used: the message names the file and the cause."""


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Raise :class:`LedgerError` naming the file for any SQLite failure (locked, full)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            ledger = args[0]
            where = getattr(ledger, "where", "the ledger")
            raise LedgerError(f"ledger {where}: {exc}") from exc

    return wrapper


@dataclass(frozen=True, slots=True)
class UsageTotals:
    events: int
    total_tokens: int
    input_tokens: int
    output_tokens: int
    cost_micro_cents: int


class Ledger:
    """One SQLite database, in memory (``path=None``) or in a file that survives restarts."""

    def __init__(self, path: str | Path | None = None, *, timeout: float = 5.0) -> None:
        self.path = None if path is None else Path(path)
        self.where = ":memory:" if self.path is None else str(self.path)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so
            # a counter increment can never be committed apart from its event.
            conn = sqlite3.connect(self.where, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.where}: {exc}") from exc
        try:
            if self.path is not None:
                # How long a write waits for another connection's lock before
                # the call fails with LedgerError.
                conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            self.db = sqlite_utils.Database(conn)
            self._create_schema()
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"cannot open ledger {self.where}: {exc}") from exc
        except LedgerError:
            conn.close()
            raise

    # --- schema -------------------------------------------------------------

    def _create_schema(self) -> None:
        db = self.db
        if db.table("meta").exists():
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = row[0] if row else None
            if version != str(SCHEMA_VERSION):
                raise LedgerError(
                    f"ledger {self.where} has schema version {version}; "
                    f"this limitry_local reads version {SCHEMA_VERSION}"
                )
            return
        if db.table_names():
            # Someone else's database: adding our tables to it would be a surprise.
            raise LedgerError(
                f"{self.where} is a SQLite database but not a limitry_local ledger; "
                "give Tracker a new file"
            )
        with self.transaction():
            db.table("meta").create({"key": str, "value": str}, pk="key")
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            )
            db.table("events").create(
                {
                    "seq": int,
                    "id": str,
                    "ts": float,
                    "customer_id": str,
                    "event_type": str,
                    "model": str,
                    "provider": str,
                    "input_tokens": int,
                    "output_tokens": int,
                    "total_tokens": int,
                    "latency_ms": int,
                    "cost_cents": float,
                    "properties": str,
                    "idempotency_key": str,
                },
                pk="seq",
                not_null={"id", "ts", "properties"},
            )
            db.table("events").create_index(["id"], unique=True)
            db.table("events").create_index(["customer_id", "ts"])
            db.table("events").create_index(["ts"])
            # Amounts are whole units (tokens, events, micro-cents); INTEGER keeps
            # the sums exact where REAL would round above 2**53.
            db.table("quota_counters").create(
                {"quota_id": str, "key": str, "period_start": int, "used": int},
                pk=("quota_id", "key", "period_start"),
                not_null={"used"},
            )
            db.table("idempotency_keys").create(
                {"key": str, "event_id": str, "response": str}, pk="key"
            )
            for table, extra in (
                ("quotas", {"period": str}),
                ("rate_limits", {"window": str, "enabled": int}),
            ):
                db.table(table).create(
                    {
                        "seq": int,
                        "id": str,
                        "name": str,
                        "dimension_filters": str,
                        "metric": str,
                        "limit_value": int,
                        **extra,
                        "per": str,
                        "created_at": str,
                        "updated_at": str,
                    },
                    pk="seq",
                )
                db.table(table).create_index(["id"], unique=True)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back whole if anything inside raises."""
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.where}: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite may have rolled back already (disk full, I/O error).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise LedgerError(f"ledger {self.where}: {exc}") from exc
            raise

    @_translated
    def close(self) -> None:
        self.db.conn.close()

    # --- limit definitions ----------------------------------------------------

    @_translated
    def definitions(self, table: str) -> list[dict[str, Any]]:
        """Every quota or rate limit in creation order, JSON columns decoded."""
        rows = self.db.query(f"SELECT * FROM {table} ORDER BY seq")
        return [_decode_definition(row) for row in rows]

    def save_definition(self, conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
        """Insert or replace a definition (call inside :meth:`transaction`)."""
        encoded = {
            key: json.dumps(value) if isinstance(value, (dict, list)) else value
            for key, value in row.items()
        }
        columns = ", ".join(encoded)
        marks = ", ".join("?" for _ in encoded)
        updates = ", ".join(f"{key} = excluded.{key}" for key in encoded if key != "id")
        conn.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({marks}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            list(encoded.values()),
        )

    def delete_definition(self, conn: sqlite3.Connection, table: str, limit_id: str) -> None:
        conn.execute(f"DELETE FROM {table} WHERE id = ?", [limit_id])
        if table == "quotas":
            conn.execute("DELETE FROM quota_counters WHERE quota_id = ?", [limit_id])

    def replace_counters(
        self, conn: sqlite3.Connection, quota_id: str, totals: Iterable[tuple[str, int, int]]
    ) -> None:
        conn.execute("DELETE FROM quota_counters WHERE quota_id = ?", [quota_id])
        conn.executemany(
            "INSERT INTO quota_counters (quota_id, key, period_start, used) VALUES (?, ?, ?, ?)",
            ((quota_id, key, start, used) for key, start, used in totals),
        )

    # --- the hot path -------------------------------------------------------

    @_translated
    def counter(self, quota_id: str, key: str, period_start: int) -> int:
        row = self.db.conn.execute(_GET_COUNTER, (quota_id, key, period_start)).fetchone()
        return 0 if row is None else row[0]

    @_translated
    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, stored response JSON)`` of the event recorded with this key, if any."""
        row = self.db.conn.execute(
            "SELECT event_id, response FROM idempotency_keys WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    @_translated
    def record(
        self,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None:
        """Write events, their counter increments and idempotency responses in one transaction.

        Each item is ``(event_row, increments, response_json)``; the response
        is stored under the event's idempotency key, if it has one.
        """
        with self.transaction() as conn:
            for row, increments, response in events:
                conn.execute(_INSERT_EVENT, row)
                conn.executemany(_ADD_TO_COUNTER, increments)
                if row.idempotency_key is not None:
                    conn.execute(_INSERT_IDEMPOTENCY, (row.idempotency_key, row.id, response))

    # --- reads ----------------------------------------------------------------

    def scan_events(self) -> Iterator[EventRow]:
        """Every event, oldest first (for rebuilding a quota's counters).

        Read inside :meth:`transaction`, which turns a SQLite failure into
        :class:`LedgerError` (a decorator could not: this is a generator).
        """
        cursor = self.db.conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY seq")
        for row in cursor:
            yield EventRow(*row)

    @_translated
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
        where, params = _event_filters(customer_id, event_type, model, start, end)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        cursor = self.db.conn.execute(
            f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM events {clause} "
            "ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        )
        return [(row[0], EventRow(*row[1:])) for row in cursor]

    @_translated
    def event_seq(self, event_id: str) -> int | None:
        row = self.db.conn.execute("SELECT seq FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else int(row[0])

    @_translated
    def totals(self, customer_id: str, start: float | None, end: float | None) -> UsageTotals:
        where, params = _event_filters(customer_id, None, None, start, end)
        # Cents are summed as whole micro-cents, like the quota counters, so
        # thirty events of 0.1 cents total exactly 3.
        sums = (
            "count(*), {0}(total_tokens), {0}(input_tokens), {0}(output_tokens), "
            "{0}(CAST(round(cost_cents * 1000000) AS INTEGER))"
        )
        query = f"SELECT {{}} FROM events WHERE {' AND '.join(where)}"
        try:
            row = self.db.conn.execute(query.format(sums.format("sum")), params).fetchone()
        except sqlite3.OperationalError:
            # sum() refuses to overflow 64 bits; total() answers in floating point.
            row = self.db.conn.execute(query.format(sums.format("total")), params).fetchone()
        return UsageTotals(*(int(value or 0) for value in row))

    @_translated
    def counters(self) -> dict[tuple[str, str, int], int]:
        """Every quota counter in whole units (micro-cents for cost), for audits and tests."""
        cursor = self.db.conn.execute(
            "SELECT quota_id, key, period_start, used FROM quota_counters"
        )
        return {(q, k, s): used for q, k, s, used in cursor}

    @_translated
    def event_count(self) -> int:
        return int(self.db.conn.execute("SELECT count(*) FROM events").fetchone()[0])


def _event_filters(
    customer_id: str | None,
    event_type: str | None,
    model: str | None,
    start: float | None,
    end: float | None,
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("customer_id", customer_id),
        ("event_type", event_type),
        ("model", model),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if start is not None:
        where.append("ts >= ?")
        params.append(start)
    if end is not None:
        where.append("ts < ?")
        params.append(end)
    return where, params


def _decode_definition(row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    decoded.pop("seq", None)
    for key in ("dimension_filters", "per"):
        decoded[key] = (
            json.loads(decoded[key])
            if decoded.get(key)
            else ({} if key == "dimension_filters" else [])
        )
    if "enabled" in decoded:
        decoded["enabled"] = bool(decoded["enabled"])
    return decoded
