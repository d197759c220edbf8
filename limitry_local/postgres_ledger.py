"""The PostgreSQL ledger: the SQLite ledger's rows in a schema of a PostgreSQL database.

For several processes on several hosts sharing one set of quotas:
``Tracker(ledger=PostgresLedger("postgresql://app@db/usage"))``.  The
ledger stores; it never decides (the rules stay in the tracker).

Writers are serialised per schema by a transaction-level advisory lock,
taken as the first statement of every write scope: the tracker reads the
quota counters and the idempotency key inside the scope and writes after
deciding, so nothing another writer does may land between the read and the
commit.  That is SQLite's single write lock, moved to the server, and it is
what keeps quota admission exact across hosts (docs/scaling.md says why not
row locks, and what the lock costs).

Every read answers what :class:`~limitry_local.ledger.Ledger` answers on
the same writes (the differential test in tests/test_postgres_ledger.py),
including event sequence numbers, the order definitions are listed in and
the exact integer sums of totals.

psycopg is imported when a PostgresLedger is made, never by importing
limitry_local: ``pip install 'limitry_local[postgres]'`` brings it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from limitry_local.ledger import (
    ALERT_COLUMNS,
    DEFINITION_TABLES,
    EVENT_COLUMNS,
    AlertRow,
    CounterIncrement,
    Durability,
    EventRow,
    LedgerError,
    ReportFilter,
    UsageTotals,
    _alert_filters,
    _decode_definition,
    _decode_increments,
    _held_in,
    report_column,
)

if TYPE_CHECKING:
    from psycopg import Connection

SCHEMA_VERSION = 2
"""1: the first PostgreSQL schema (the SQLite ledger's version 5, in PostgreSQL types).
2: both definition tables' ``fail_mode`` (the SQLite ledger's version 6)."""

_SCAN_PAGE = 2000

P = ParamSpec("P")
R = TypeVar("R")


def _psycopg() -> Any:
    """The psycopg module, or an ImportError that says how to get it."""
    try:
        return importlib.import_module("psycopg")
    except ImportError as exc:
        raise ImportError(
            "PostgresLedger needs psycopg 3: pip install 'limitry_local[postgres]'"
        ) from exc


# --- NUL characters -----------------------------------------------------------------
#
# PostgreSQL text cannot hold U+0000, which the API (and SQLite) accept in a
# customer id or an idempotency key.  Every string goes in through _enc and
# comes out through _dec: \x01 -> \x01\x01 and \x00 -> \x01\x02.  The mapping
# is one to one, so equality filters still work; strings without either
# character (all JSON, nearly every id) are stored as they are.

_ESCAPED = re.compile("\x01([\x01\x02])")


def _enc(value: Any) -> Any:
    if isinstance(value, str) and ("\x00" in value or "\x01" in value):
        return value.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02")
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, str) and "\x01" in value:
        return _ESCAPED.sub(lambda m: "\x01" if m[1] == "\x01" else "\x00", value)
    return value


def _event_from(row: tuple[Any, ...]) -> EventRow:
    return EventRow(*(_dec(value) for value in row))


# --- errors ---------------------------------------------------------------------------


def _explained(exc: Exception, where: str, timeout: float) -> LedgerError:
    """A :class:`LedgerError` for a psycopg failure, in words a user can act on."""
    state = getattr(exc, "sqlstate", None) or ""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if state in ("55P03", "40P01", "40001") or (state == "57014" and "timeout" in text):
        return LedgerError(
            f"ledger {where}: another writer held the ledger's lock for longer than "
            f"{timeout:g}s ({text}); wait for it, or give PostgresLedger(timeout=...) more time",
            "locked",
        )
    if state in ("25006", "42501"):
        return LedgerError(
            f"ledger {where} cannot be written ({text}); the role needs USAGE and CREATE on "
            "the schema and write access to its tables, on a primary server",
            "read_only",
        )
    if state == "53100":
        return LedgerError(f"ledger {where}: the server's disk is full ({text})", "disk_full")
    if state.startswith("08") or not state:
        return LedgerError(
            f"ledger {where}: the connection to the server failed ({text}); "
            "the next call reconnects",
            "io",
        )
    return LedgerError(f"ledger {where}: {text}", "io")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Run under the ledger's lock; raise :class:`LedgerError` for any psycopg failure."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ledger = args[0]
        assert isinstance(ledger, PostgresLedger)
        with ledger.lock:
            ledger._ensure_usable()
            try:
                return method(*args, **kwargs)
            except ledger._errors as exc:
                raise _explained(exc, ledger.where, ledger.timeout) from exc

    return wrapper


# Every open ledger, weakly: a child of fork gets fresh locks (a thread of the
# parent may have held one), and refuses to use the parent's connection.
_OPEN: weakref.WeakSet[PostgresLedger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in list(_OPEN):
        ledger.lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_connection(conn: Connection[Any], pid: int) -> None:
    """Close at collection or exit, in the process that opened it only: closing
    sends the server a goodbye on the socket that a forked child shares."""
    if os.getpid() == pid and not conn.closed:
        conn.close()


def _describe(dsn: str, schema: str) -> str:
    """The server as messages name it: the DSN without its password."""
    try:
        info = importlib.import_module("psycopg.conninfo").conninfo_to_dict(dsn)
    except Exception:
        # libpq's own words could quote the password: say nothing of the text.
        raise LedgerError(
            "PostgresLedger was given a DSN libpq cannot parse; expected "
            "'postgresql://user@host:port/dbname' or 'host=... dbname=...'",
            "cannot_open",
        ) from None
    user = f"{info['user']}@" if info.get("user") else ""
    host = str(info.get("host") or "localhost")
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname') or ''} (schema {schema})"


class _Scope:
    """What :meth:`PostgresLedger.write` yields; writes check they got the open one."""

    __slots__ = ()


class PostgresLedger:
    """Limits, events, quota counters and idempotency keys in one PostgreSQL schema.

    >>> ledger = PostgresLedger("postgresql://app@db.internal/usage")  # doctest: +SKIP
    >>> tracker = Tracker(ledger=ledger)                                # doctest: +SKIP

    The schema (default ``limitry``) is created on first use; several
    processes and hosts may share it and quota admission stays exact.
    ``timeout`` is how long a write waits for another writer (and how long a
    connection attempt may take, at least 2 s) before failing with a
    ``"locked"`` (or ``"cannot_open"``) :class:`LedgerError`.

    One connection per ledger, guarded by a lock, so a Tracker shared by
    threads works; a process forked after opening must open its own.
    """

    path: Path | None = None
    shared = True
    # Every scope commits when it ends; with the server's default
    # synchronous_commit=on, the commit is on disk before it returns.
    durability: Durability = "full"

    def __init__(self, dsn: str, *, schema: str = "limitry", timeout: float = 5.0) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 <= timeout < math.inf
        ):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        if not isinstance(schema, str) or not 0 < len(schema.encode()) < 64 or "\x00" in schema:
            raise ValueError(f"schema must be a PostgreSQL name of 1 to 63 bytes, got {schema!r}")
        psycopg = _psycopg()
        self.schema = schema
        self.where = _describe(dsn, schema)
        self.timeout = timeout
        self.lock = threading.RLock()
        self._dsn = dsn
        self._errors: type[Exception] = psycopg.Error
        self._sql = importlib.import_module("psycopg.sql")
        self._pid = os.getpid()
        self._closed = False
        self._depth = 0
        self._scope = _Scope()
        # definitions_version as read under the lock: exact until the scope ends.
        self._scope_version: int | None = None
        self._saves: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._lock_key = _lock_key(schema)
        self._lock_timeout_ms = max(1, round(timeout * 1000))
        self._q = _Queries('"' + schema.replace('"', '""') + '"')
        self._conn: Connection[Any] = self._connect()
        _OPEN.add(self)
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise

    # --- the connection -------------------------------------------------------

    def _connect(self) -> Connection[Any]:
        psycopg = _psycopg()
        settings: dict[str, Any] = {"autocommit": True}
        given = importlib.import_module("psycopg.conninfo").conninfo_to_dict(self._dsn)
        if "connect_timeout" not in given:
            # libpq waits forever without one, and reads 0 or 1 as "at least 2".
            settings["connect_timeout"] = max(2, math.ceil(self.timeout))
        if "application_name" not in given:
            settings["application_name"] = "limitry_local"
        try:
            conn: Connection[Any] = psycopg.connect(self._dsn, **settings)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LedgerError(
                f"cannot connect to ledger {self.where} ({first}); is the server running "
                "and reachable, and does the DSN name the right host, port, user and database?",
                "cannot_open",
            ) from exc
        self._finalizer = weakref.finalize(self, _close_connection, conn, os.getpid())
        return conn

    def _ensure_usable(self) -> None:
        if self._pid != os.getpid():
            raise LedgerError(
                f"ledger {self.where} was opened before this process forked; "
                "open a new PostgresLedger (and Tracker) in the child",
                "cannot_open",
            )
        if self._closed:
            raise LedgerError(f"ledger {self.where} is closed", "cannot_open")
        if self._depth == 0 and (self._conn.closed or self._conn.broken):
            # The server restarted or the network dropped: the call that met it
            # failed ("io"); this one starts on a new connection.
            self._finalizer()
            self._conn = self._connect()

    def close(self) -> None:
        """Close the connection (a no-op after the first call)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            _OPEN.discard(self)
            # In a forked child the finalizer leaves the parent's socket alone.
            self._finalizer()

    # --- schema ---------------------------------------------------------------

    def _set_up(self) -> None:
        """Create or migrate the schema, unless it is current (the usual case)."""
        with self.lock:
            self._ensure_usable()
            try:
                if self._schema_version() == SCHEMA_VERSION:
                    return
                # Under the writers' lock, deciding again there: several processes
                # may start on a new schema at once, and only one must create it.
                # One transaction, so a failure leaves nothing half made.
                with self._transaction(read_version=False):
                    version = self._schema_version()
                    if version is None:
                        self._create_schema()
                    elif version == 1:
                        # NULL reads as "closed", every limit's fail mode before version 2.
                        self._conn.execute(
                            f"ALTER TABLE {self._q.schema}.quotas ADD COLUMN fail_mode text; "
                            f"ALTER TABLE {self._q.schema}.rate_limits ADD COLUMN fail_mode text; "
                            f"UPDATE {self._q.schema}.meta SET value = '{SCHEMA_VERSION}' "
                            "WHERE key = 'schema_version'"
                        )
            except self._errors as exc:
                raise _explained(exc, self.where, self.timeout) from exc

    def _schema_version(self) -> int | None:
        """The schema's version; None when there is no ledger yet.  Refuses what is not ours."""
        conn = self._conn
        found, tables = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, "
            "(SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s)",
            [f"{self._q.schema}.meta", self.schema],
        ).fetchone() or (False, 0)
        if not found:
            if tables:
                # Someone else's schema: adding our tables to it would be a surprise.
                raise LedgerError(
                    f"schema {self.schema!r} holds tables but is not a limitry_local ledger "
                    f"({self.where}); give PostgresLedger(schema=...) another name",
                    "not_a_ledger",
                )
            return None
        row = conn.execute(
            f"SELECT value FROM {self._q.schema}.meta WHERE key = 'schema_version'"
        ).fetchone()
        value = row[0] if row else None
        version = int(value) if value is not None and str(value).isdigit() else None
        if version is None or version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.where} has schema version {value}; this limitry_local reads "
                f"versions up to {SCHEMA_VERSION}: upgrade limitry_local to open it",
                "schema_version",
            )
        return version

    def _create_schema(self) -> None:
        exists = self._conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [self.schema]
        ).fetchone()
        if exists is None:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS still asks for the
            # CREATE privilege on the database, which a role given a schema may lack.
            self._conn.execute(f"CREATE SCHEMA {self._q.schema}")
        self._conn.execute(_schema_ddl(self._q.schema))

    # --- scopes ---------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, read_version: bool) -> Iterator[_Scope]:
        """BEGIN, take the writers' lock, yield; COMMIT, or ROLLBACK if anything raised."""
        conn = self._conn
        try:
            # One round trip: the lock, then (a new snapshot under READ COMMITTED,
            # so it sees the last writer's commit) the definitions version.
            cursor = conn.execute(
                "BEGIN ISOLATION LEVEL READ COMMITTED; "
                f"SET LOCAL lock_timeout = {self._lock_timeout_ms}; "
                f"SELECT pg_advisory_xact_lock({self._lock_key})"
                + (f"; {self._q.version}" if read_version else "")
            )
            if read_version:
                while cursor.nextset():
                    pass
                self._scope_version = _version(cursor.fetchone(), self.where)
        except BaseException as exc:
            self._scope_version = None
            self._abandon()
            if isinstance(exc, self._errors):
                raise _explained(exc, self.where, self.timeout) from exc
            raise
        self._depth = 1
        try:
            yield self._scope
        except BaseException as exc:
            self._depth = 0
            self._scope_version = None
            self._abandon()
            if isinstance(exc, self._errors):
                raise _explained(exc, self.where, self.timeout) from exc
            raise
        self._depth = 0
        self._scope_version = None
        self._commit()

    def _commit(self) -> None:
        conn = self._conn
        psycopg = _psycopg()
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            # A statement failed and the caller went on: COMMIT would quietly
            # roll back, and the caller would believe its writes landed.
            self._abandon()
            raise LedgerError(
                f"ledger {self.where}: a statement of this write scope failed, so none of "
                "its writes were kept",
                "io",
            )
        try:
            conn.execute("COMMIT")
        except self._errors as exc:
            self._abandon()
            raise _explained(exc, self.where, self.timeout) from exc

    def _abandon(self) -> None:
        """Roll back; if even that fails, drop the connection (the server rolls back)."""
        conn = self._conn
        try:
            idle = _psycopg().pq.TransactionStatus.IDLE
            if not conn.closed and conn.info.transaction_status != idle:
                conn.execute("ROLLBACK")
        except BaseException:
            self._finalizer()

    @contextmanager
    def write(self, *, durable: bool = False) -> Iterator[_Scope]:
        """A write scope: one transaction holding the writers' lock; all or nothing.

        Reads inside the scope see its own writes, and no other writer can
        change what was read before the scope commits.  ``durable`` changes
        nothing: every scope commits when it ends.  A scope opened inside
        another joins it (the outer one commits or rolls back).
        """
        with self.lock:
            self._ensure_usable()
            if self._depth:
                self._depth += 1
                try:
                    yield self._scope
                finally:
                    self._depth -= 1
                return
            with self._transaction(read_version=True) as scope:
                yield scope

    def _check_scope(self, scope: object) -> None:
        if self._depth == 0 or scope is not self._scope:
            raise RuntimeError("ledger writes must happen inside PostgresLedger.write()")

    def flush(self) -> None:
        """Nothing to commit: every scope committed when it ended."""
        with self.lock:
            if not self._closed:
                self._ensure_usable()

    # --- limit definitions ----------------------------------------------------

    @_translated
    def definitions_version(self) -> int:
        """Bumped by every change of a limit definition, by any process on this schema."""
        if self._scope_version is not None:
            return self._scope_version
        return _version(self._conn.execute(self._q.version).fetchone(), self.where)

    @_translated
    def bump_definitions(self, scope: object) -> int:
        """Record a definition change (inside :meth:`write`); returns the new version."""
        self._check_scope(scope)
        self._scope_version = _version(self._conn.execute(self._q.bump).fetchone(), self.where)
        return self._scope_version

    @_translated
    def definitions(self, table: str) -> list[dict[str, Any]]:
        """Every quota or rate limit in creation order, JSON columns decoded."""
        cursor = self._conn.execute(self._q.definitions[_table(table)])
        names = [column.name for column in cursor.description or ()]
        try:
            return [
                _decode_definition({n: _dec(v) for n, v in zip(names, row, strict=True)})
                for row in cursor
            ]
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise LedgerError(
                f"ledger {self.where} is corrupt: a stored definition in {table} cannot be "
                f"read ({exc}); restore it from a backup",
                "corrupt",
            ) from None

    @_translated
    def save_definition(self, scope: object, table: str, row: dict[str, Any]) -> None:
        """Insert or replace a definition; an update keeps its place in the order."""
        self._check_scope(scope)
        columns = tuple(row)
        query = self._saves.get((table, columns))
        if query is None:
            sql = self._sql
            names = [sql.Identifier(column) for column in columns]
            query = sql.SQL(
                "INSERT INTO {}.{} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}"
            ).format(
                sql.Identifier(self.schema),
                sql.Identifier(_table(table)),
                sql.SQL(", ").join(names),
                sql.SQL(", ").join(sql.Placeholder() for _ in columns),
                sql.SQL(", ").join(
                    sql.SQL("{0} = excluded.{0}").format(name)
                    for name, column in zip(names, columns, strict=True)
                    if column != "id"
                ),
            )
            self._saves[table, columns] = query
        self._conn.execute(
            query,
            [
                json.dumps(value) if isinstance(value, (dict, list)) else _enc(value)
                for value in row.values()
            ],
        )

    @_translated
    def delete_definition(self, scope: object, table: str, limit_id: str) -> None:
        self._check_scope(scope)
        with self._conn.pipeline():
            self._conn.execute(self._q.delete[_table(table)], [_enc(limit_id)])
            if table == "quotas":
                self._conn.execute(self._q.drop_counters, [_enc(limit_id)])
        if table == "quotas":
            self._forget_held(limit_id)

    def _forget_held(self, quota_id: str) -> None:
        # The counters no longer include what holds added to this quota, so
        # releasing a hold must not take it off again.
        for hold_id, text in self._conn.execute(self._q.all_holds).fetchall():
            increments = _decode_increments(text)
            kept = [i for i in increments if i[0] != quota_id]
            if len(kept) != len(increments):
                self._conn.execute(self._q.set_hold, [json.dumps(kept), hold_id])

    @_translated
    def replace_counters(
        self, scope: object, quota_id: str, totals: Iterable[tuple[str, int, int]]
    ) -> None:
        """Counters of a quota rebuilt from the events: open holds on it are forgotten."""
        self._check_scope(scope)
        rows = [(_enc(quota_id), _enc(key), start, used) for key, start, used in totals]
        with self._conn.pipeline(), self._conn.cursor() as cursor:
            cursor.execute(self._q.drop_counters, [_enc(quota_id)])
            if rows:
                cursor.executemany(self._q.insert_counter, rows)
        self._forget_held(quota_id)

    @_translated
    def add_to_counters(self, scope: object, increments: Iterable[CounterIncrement]) -> None:
        """Add (or, negative, take back) amounts on counters (inside :meth:`write`)."""
        self._check_scope(scope)
        added: dict[tuple[str, str, int], int] = {}
        for quota_id, key, start, amount in increments:
            counter = (_enc(quota_id), _enc(key), start)
            added[counter] = added.get(counter, 0) + amount
        if added:
            with self._conn.cursor() as cursor:
                cursor.executemany(
                    self._q.add_to_counter, [(*counter, n) for counter, n in added.items()]
                )

    @_translated
    def add_hold(
        self, scope: object, hold_id: str, increments: list[CounterIncrement], expires_at: float
    ) -> None:
        self.add_to_counters(scope, increments)
        # JSON escapes NUL, so the text needs no _enc.
        self._conn.execute(self._q.insert_hold, [hold_id, json.dumps(increments), expires_at])

    @_translated
    def pop_hold(self, scope: object, hold_id: str) -> list[CounterIncrement] | None:
        self._check_scope(scope)
        row = self._conn.execute(self._q.take_hold, [hold_id]).fetchone()
        if row is None:
            return None
        increments = _decode_increments(row[0])
        self.add_to_counters(scope, [(q, k, s, -amount) for q, k, s, amount in increments])
        return increments

    @_translated
    def pop_expired_holds(self, scope: object, now: float) -> list[str]:
        self._check_scope(scope)
        expired = [str(row[0]) for row in self._conn.execute(self._q.expired_holds, [now])]
        for hold_id in expired:
            self.pop_hold(scope, hold_id)
        return expired

    # --- the hot path -----------------------------------------------------------

    @_translated
    def counter(self, quota_id: str, key: str, period_start: int) -> int:
        row = self._conn.execute(
            self._q.counter, [_enc(quota_id), _enc(key), period_start]
        ).fetchone()
        return 0 if row is None else int(row[0])

    @_translated
    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, stored response JSON)`` of the event recorded with this key, if any."""
        row = self._conn.execute(self._q.idempotent, [_enc(key)]).fetchone()
        return None if row is None else (_dec(row[0]), _dec(row[1]))

    @_translated
    def record(
        self,
        scope: object,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None:
        """Write events, their counter increments and idempotency responses (inside :meth:`write`).

        One round trip for the lot (a pipeline).  Increments of one counter
        are added up first: one upsert may not touch a row twice.
        """
        self._check_scope(scope)
        rows: list[list[Any]] = []
        added: dict[tuple[str, str, int], int] = {}
        keys: list[tuple[Any, Any, Any]] = []
        for row, increments, response in events:
            rows.append([_enc(value) for value in row])
            for quota_id, key, start, amount in increments:
                counter = (_enc(quota_id), _enc(key), start)
                added[counter] = added.get(counter, 0) + amount
            if row.idempotency_key is not None:
                keys.append((_enc(row.idempotency_key), _enc(row.id), _enc(response)))
        if not rows:
            return
        with self._conn.pipeline(), self._conn.cursor() as cursor:
            cursor.executemany(self._q.insert_event, rows)
            if added:
                cursor.executemany(
                    self._q.add_to_counter, [(*counter, n) for counter, n in added.items()]
                )
            if keys:
                cursor.executemany(self._q.insert_key, keys)

    # --- reads ------------------------------------------------------------------

    def scan_events(self) -> Iterator[EventRow]:
        """Every event, oldest first, fetched a page at a time (for rebuilding counters)."""
        after = 0
        while True:
            page = self._scan_page(after)
            for _, row in page:
                yield row
            if len(page) < _SCAN_PAGE:
                return
            after = page[-1][0]

    @_translated
    def _scan_page(self, after: int) -> list[tuple[int, EventRow]]:
        cursor = self._conn.execute(self._q.scan, [after, _SCAN_PAGE])
        return [(row[0], _event_from(row[1:])) for row in cursor]

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
            where.append("seq < %s")
            params.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        # SQLite reads a negative LIMIT as no limit; PostgreSQL's is LIMIT NULL.
        params.append(None if limit < 0 else limit)
        cursor = self._conn.execute(
            f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM {self._q.schema}.events {clause} "
            "ORDER BY seq DESC LIMIT %s",
            params,
        )
        return [(row[0], _event_from(row[1:])) for row in cursor]

    @_translated
    def event_seq(self, event_id: str) -> int | None:
        row = self._conn.execute(self._q.event_seq, [_enc(event_id)]).fetchone()
        return None if row is None else int(row[0])

    @_translated
    def totals(self, customer_id: str, start: float | None, end: float | None) -> UsageTotals:
        where, params = _event_filters(customer_id, None, None, start, end)
        row = self._conn.execute(f"{self._q.totals} WHERE {' AND '.join(where)}", params).fetchone()
        return UsageTotals(*(int(value or 0) for value in row or ()))

    @_translated
    def counters(self) -> dict[tuple[str, str, int], int]:
        """Every quota counter in whole units (micro-cents for cost), for audits and tests."""
        cursor = self._conn.execute(self._q.all_counters)
        return {(_dec(q), _dec(k), int(s)): int(used) for q, k, s, used in cursor}

    @_translated
    def event_count(self) -> int:
        row = self._conn.execute(self._q.event_count).fetchone()
        return int(row[0]) if row else 0

    # --- quota alerts -----------------------------------------------------------

    @_translated
    def held(self, quota_id: str, key: str, period_start: int) -> int:
        # The increments are JSON, which escapes NUL: compared as they are, no _enc.
        cursor = self._conn.execute(self._q.held, [quota_id])
        return _held_in((text for (text,) in cursor), quota_id, key, period_start)

    @_translated
    def log_alert(self, scope: object, row: AlertRow) -> bool:
        """Add a firing (inside :meth:`write`); False if this alert, key and period fired before."""
        self._check_scope(scope)
        cursor = self._conn.execute(self._q.log_alert, [_enc(value) for value in row])
        return cursor.rowcount == 1

    @_translated
    def alert_log(
        self,
        *,
        quota_id: str | None,
        alert_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[tuple[int, AlertRow]]:
        where, params = _alert_filters(
            None if quota_id is None else _enc(quota_id),
            None if alert_id is None else _enc(alert_id),
            before_seq,
            "%s",
        )
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        cursor = self._conn.execute(
            f"SELECT seq, {', '.join(ALERT_COLUMNS)} FROM {self._q.schema}.alert_log {clause} "
            "ORDER BY seq DESC LIMIT %s",
            [*params, limit],
        )
        return [(row[0], _alert_from(row[1:])) for row in cursor]

    @_translated
    def alert_log_seq(self, entry_id: str) -> int | None:
        row = self._conn.execute(self._q.alert_log_seq, [_enc(entry_id)]).fetchone()
        return None if row is None else int(row[0])

    @_translated
    def last_triggered(self, alert_ids: Iterable[str]) -> dict[str, float]:
        cursor = self._conn.execute(self._q.last_triggered, [[_enc(a) for a in alert_ids]])
        return {_dec(alert_id): float(when) for alert_id, when in cursor if when is not None}

    # --- usage reports ---

    @_translated
    def usage_breakdown(
        self, column: str, where: ReportFilter
    ) -> list[tuple[str | None, UsageTotals]]:
        rows = self._report(report_column(column), [], where)
        return [(_dec(value), totals) for value, totals in rows]

    @_translated
    def usage_timeseries(
        self, seconds: int, origin: int, where: ReportFilter
    ) -> list[tuple[int, UsageTotals]]:
        # floor(), not a cast: ::bigint rounds.  ts >= 0, so % is never negative.
        second = "floor(ts)::bigint"
        start = f"{second} - ({second} - %s::bigint) %% %s::bigint"
        rows = self._report(start, [origin, seconds], where)
        return [(int(start), totals) for start, totals in rows]

    def _report(
        self, key: str, key_params: list[Any], where: ReportFilter
    ) -> list[tuple[Any, UsageTotals]]:
        """``SELECT key, totals ... GROUP BY 1`` over the events ``where`` picks."""
        conditions, params = _event_filters(
            where.customer_id, where.event_type, where.model, where.start, where.end
        )
        if where.provider is not None:
            conditions.append("provider = %s")
            params.append(_enc(where.provider))
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        cursor = self._conn.execute(
            f"SELECT {key}, {_REPORT_TOTALS} FROM {self._q.schema}.events {clause} GROUP BY 1",
            [*key_params, *params],
        )
        return [(row[0], UsageTotals(*(int(v or 0) for v in row[1:]))) for row in cursor]


class _Queries:
    """Every fixed statement, with the schema's quoted name written in once."""

    def __init__(self, schema: str) -> None:
        s = self.schema = schema
        self.version = f"SELECT value FROM {s}.meta WHERE key = 'definitions_version'"
        self.bump = (
            f"UPDATE {s}.meta SET value = (value::bigint + 1)::text "
            "WHERE key = 'definitions_version' RETURNING value"
        )
        self.definitions = {t: f"SELECT * FROM {s}.{t} ORDER BY seq" for t in DEFINITION_TABLES}
        self.delete = {t: f"DELETE FROM {s}.{t} WHERE id = %s" for t in DEFINITION_TABLES}
        self.drop_counters = f"DELETE FROM {s}.quota_counters WHERE quota_id = %s"
        self.insert_counter = (
            f"INSERT INTO {s}.quota_counters (quota_id, key, period_start, used) "
            "VALUES (%s, %s, %s, %s)"
        )
        self.add_to_counter = (
            f"{self.insert_counter} ON CONFLICT (quota_id, key, period_start) "
            f"DO UPDATE SET used = {s}.quota_counters.used + excluded.used"
        )
        self.counter = (
            f"SELECT used FROM {s}.quota_counters "
            "WHERE quota_id = %s AND key = %s AND period_start = %s"
        )
        self.idempotent = f"SELECT event_id, response FROM {s}.idempotency_keys WHERE key = %s"
        # seq is max + 1, as SQLite numbers rowids: no gaps after a rollback, so
        # both ledgers number events alike.  Safe because writers hold the lock.
        self.insert_event = (
            f"INSERT INTO {s}.events (seq, {', '.join(EVENT_COLUMNS)}) VALUES "
            f"((SELECT coalesce(max(seq), 0) + 1 FROM {s}.events), "
            f"{', '.join('%s' for _ in EVENT_COLUMNS)})"
        )
        self.insert_key = (
            f"INSERT INTO {s}.idempotency_keys (key, event_id, response) VALUES (%s, %s, %s)"
        )
        self.scan = (
            f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM {s}.events "
            "WHERE seq > %s ORDER BY seq LIMIT %s"
        )
        self.event_seq = f"SELECT seq FROM {s}.events WHERE id = %s"
        # Cents are summed as whole micro-cents, rounded per event exactly as
        # SQLite's round() does it (add 0.5 in double precision, truncate; away
        # from zero), then summed as NUMERIC so no sum overflows.
        micro_cents = (
            "CASE WHEN cost_cents >= 0 THEN trunc(cost_cents * 1e6::float8 + 0.5::float8) "
            "ELSE -trunc(-cost_cents * 1e6::float8 + 0.5::float8) END::bigint"
        )
        self.totals = (
            "SELECT count(*), sum(total_tokens), sum(input_tokens), sum(output_tokens), "
            f"sum({micro_cents}) FROM {s}.events"
        )
        self.all_counters = f"SELECT quota_id, key, period_start, used FROM {s}.quota_counters"
        self.insert_hold = f"INSERT INTO {s}.holds (id, increments, expires_at) VALUES (%s, %s, %s)"
        self.take_hold = f"DELETE FROM {s}.holds WHERE id = %s RETURNING increments"
        self.expired_holds = f"SELECT id FROM {s}.holds WHERE expires_at <= %s ORDER BY id"
        self.all_holds = f"SELECT id, increments FROM {s}.holds"
        self.set_hold = f"UPDATE {s}.holds SET increments = %s WHERE id = %s"
        self.event_count = f"SELECT count(*) FROM {s}.events"
        # seq as for events: max + 1 under the writers' lock, numbered as SQLite numbers them.
        self.log_alert = (
            f"INSERT INTO {s}.alert_log (seq, {', '.join(ALERT_COLUMNS)}) VALUES "
            f"((SELECT coalesce(max(seq), 0) + 1 FROM {s}.alert_log), "
            f"{', '.join('%s' for _ in ALERT_COLUMNS)}) "
            "ON CONFLICT (alert_id, key, period_start) DO NOTHING"
        )
        self.alert_log_seq = f"SELECT seq FROM {s}.alert_log WHERE id = %s"
        self.held = f"SELECT increments FROM {s}.holds WHERE strpos(increments, %s) > 0"
        # One indexed max() per alert: a history of millions of firings is not scanned.
        self.last_triggered = (
            f"SELECT a, (SELECT max(triggered_at) FROM {s}.alert_log WHERE alert_id = a) "
            "FROM unnest(%s::text[]) AS a"
        )


def _schema_ddl(s: str) -> str:
    """The current schema, for a new ledger (an old one would be migrated instead)."""
    definition = (
        "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE, "
        "name text, dimension_filters text, metric text, limit_value bigint"
    )
    return f"""
        CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
        INSERT INTO {s}.meta (key, value)
            VALUES ('schema_version', '{SCHEMA_VERSION}'), ('definitions_version', '0');
        CREATE TABLE {s}.events (
            seq bigint PRIMARY KEY,
            id text NOT NULL UNIQUE,
            ts double precision NOT NULL,
            customer_id text,
            event_type text,
            model text,
            provider text,
            input_tokens bigint,
            output_tokens bigint,
            total_tokens bigint,
            latency_ms bigint,
            cost_cents double precision,
            properties text NOT NULL,
            idempotency_key text,
            cached_input_tokens bigint
        );
        CREATE INDEX ON {s}.events (customer_id, ts);
        CREATE INDEX ON {s}.events (ts);
        CREATE TABLE {s}.quota_counters (
            quota_id text,
            key text,
            period_start bigint,
            used numeric NOT NULL,
            PRIMARY KEY (quota_id, key, period_start)
        );
        CREATE TABLE {s}.idempotency_keys (
            key text PRIMARY KEY, event_id text NOT NULL, response text
        );
        -- increments: JSON [[quota_id, key, period_start, amount], ...], already on
        -- the counters (open reservations, docs/semantics.md).
        CREATE TABLE {s}.holds (
            id text PRIMARY KEY, increments text NOT NULL, expires_at double precision NOT NULL
        );
        CREATE INDEX ON {s}.holds (expires_at);
        CREATE TABLE {s}.quotas (
            {definition}, period text, per text, timezone text, overrides text, mode text,
            created_at text, updated_at text, fail_mode text
        );
        CREATE TABLE {s}.rate_limits (
            {definition}, "window" text, enabled boolean, per text, generation text,
            overrides text, mode text, created_at text, updated_at text, fail_mode text
        );
        CREATE TABLE {s}.quota_alerts (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE,
            quota_id text, threshold bigint, created_at text
        );
        -- One row per firing; the unique key is "once per alert, key and period".
        CREATE TABLE {s}.alert_log (
            seq bigint PRIMARY KEY,
            id text NOT NULL UNIQUE,
            alert_id text NOT NULL,
            quota_id text NOT NULL,
            key text NOT NULL,
            period_start bigint NOT NULL,
            period_end bigint,
            threshold bigint,
            used numeric,
            limit_units numeric,
            quota_name text,
            metric text,
            period text,
            dimensions text,
            event_id text,
            triggered_at double precision NOT NULL,
            UNIQUE (alert_id, key, period_start)
        );
        CREATE INDEX ON {s}.alert_log (quota_id, seq);
        CREATE INDEX ON {s}.alert_log (alert_id, seq);
        CREATE INDEX ON {s}.alert_log (alert_id, triggered_at);
    """


def _alert_from(row: tuple[Any, ...]) -> AlertRow:
    decoded = [_dec(value) for value in row]
    for at in (ALERT_COLUMNS.index("used"), ALERT_COLUMNS.index("limit_units")):
        decoded[at] = int(decoded[at])
    return AlertRow(*decoded)


def _lock_key(schema: str) -> int:
    """The writers' advisory lock for one schema, the same in every process and host."""
    digest = hashlib.blake2b(f"limitry_local:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _table(table: str) -> str:
    if table not in DEFINITION_TABLES:
        raise ValueError(f"no definition table {table!r}")
    return table


def _version(row: tuple[Any, ...] | None, where: str) -> int:
    if row is None or not str(row[0]).isdigit():
        raise LedgerError(
            f"ledger {where} is corrupt (meta.definitions_version is {row!r}); "
            "restore it from a backup",
            "corrupt",
        )
    return int(row[0])


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
            where.append(f"{column} = %s")
            params.append(_enc(value))
    # As float8, so an int bound compares as SQLite compares it with a REAL.
    if start is not None:
        where.append("ts >= %s::float8")
        params.append(float(start))
    if end is not None:
        where.append("ts < %s::float8")
        params.append(float(end))
    return where, params


# --- usage reports ---

# Cents as whole micro-cents, rounded per event as SQLite's round() rounds them
# (add 0.5 in double precision, truncate; away from zero), so every ledger sums
# the same integers.  sum() of bigint is NUMERIC: exact, it cannot overflow.
_REPORT_MICRO_CENTS = (
    "CASE WHEN cost_cents >= 0 THEN trunc(cost_cents * 1e6::float8 + 0.5::float8) "
    "ELSE -trunc(-cost_cents * 1e6::float8 + 0.5::float8) END::bigint"
)
_REPORT_TOTALS = (
    "count(*), sum(total_tokens), sum(input_tokens), sum(output_tokens), "
    f"sum({_REPORT_MICRO_CENTS})"
)
