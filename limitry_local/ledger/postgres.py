"""The PostgreSQL ledger: the SQLite ledger's rows in a schema of a PostgreSQL database.

For several processes on several hosts sharing one set of quotas:
``Tracker(ledger=PostgresLedger("postgresql://app@db/usage"))``.  The
ledger stores; it never decides (the rules stay in the tracker).

Writers run in parallel; what one decides on, no other can change before
it commits.  Every write scope takes transaction-level advisory locks, always
in one order, so two writers never deadlock on them:

1. the schema's definitions lock: shared by every writer, exclusive for a
   scope that changes limit definitions (``write(exclusive=True)``), so a
   writer decides on the definitions current when its scope began and a
   change waits for the writers before it;
2. the idempotency key it looks up, so one key is recorded once;
3. the quota counters it reads or changes, all of one call at once, sorted
   by lock id (:meth:`PostgresLedger.lock_counters`).

Events and alert firings are numbered by identity columns: in the order
their numbers were drawn, which across hosts is not always the order of
commit (docs/scaling.md, "Event numbers", says what ``events.list``
promises).

Every read answers what :class:`~limitry_local.ledger.Ledger` answers on
the same writes (tests/properties/test_ledger_differential.py), including
the order of events, the order definitions are listed in and the exact
integer sums of totals.

Every statement it shares with the SQLite ledger is the SQL core's
(:mod:`limitry_local.ledger.sql`); this module keeps what is the server's:
the connection, and the transaction and locking code in one place
(``_begin``, ``_run``, ``_transaction``, ``write``, ``_commit``, ``_abandon``,
``record`` and how it numbers events and alert firings), so a new write path
replaces it whole.

A write scope sends each step's statements as one message (one round trip);
``usage()``'s scope is optimistic and takes two: see "scopes" below, and
docs/scaling.md, "Two round trips per usage()".

psycopg is imported when a PostgresLedger is made, never by importing
limitry_local: ``pip install 'limitry_local[postgres]'`` brings it.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from limitry_local.breaker import CircuitBreaker, Refusal
from limitry_local.errors import LedgerError
from limitry_local.ledger.common import (
    definitions_version_of,
    merged_increments,
    overflow,
    schema_version_of,
)
from limitry_local.ledger.pg_connection import (
    Guard,
    connection_class,
    first_line,
    timed_out,
)
from limitry_local.ledger.protocol import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    CounterIncrement,
    Durability,
    EventRow,
)
from limitry_local.ledger.sql import Dialect, SqlLedger

if TYPE_CHECKING:
    from psycopg import Connection

SCHEMA_VERSION = 3
"""1: the first PostgreSQL schema (the SQLite ledger's version 5, in PostgreSQL types).
2: events and alert firings numbered by identity columns, not ``max(seq) + 1``;
both definition tables' ``fail_mode`` (the SQLite ledger's version 6).
3: ``quota_alerts.updated_at`` (the SQLite ledger's version 7)."""

_SCAN_PAGE = 2000
_RECORDED_KEPT = 1024


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


# --- errors ---------------------------------------------------------------------------

# A COMMIT whose answer never came may have been kept: nothing in the client can tell.
_IN_DOUBT = (
    "If this call was committing, its writes may have been kept: send it again with "
    "the same idempotency key and it is recorded once"
)


def _explained(exc: BaseException, where: str, timeout: float) -> LedgerError:
    """A :class:`LedgerError` for a psycopg failure, in words a user can act on."""
    state = getattr(exc, "sqlstate", None) or ""
    text = first_line(exc)
    seconds = timed_out(exc)
    if seconds is not None:
        return LedgerError(
            f"ledger {where}: the server did not answer within {seconds:g}s "
            "(PostgresLedger(operation_timeout=...)); the connection was dropped and the "
            f"next call reconnects. {_IN_DOUBT}",
            "timeout",
        )
    if state in ("40P01", "40001"):
        return LedgerError(
            f"ledger {where}: this write gave way to another in a deadlock ({text}); "
            "nothing of it was kept, and running it again is safe",
            "conflict",
        )
    if state == "55P03" or (state == "57014" and "timeout" in text):
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
    if state == "22003":  # numeric_value_out_of_range: a counter cast to bigint
        return overflow(where)
    if state == "53100":
        return LedgerError(f"ledger {where}: the server's disk is full ({text})", "disk_full")
    # 08: connection exceptions; 57P01-57P03: the server shut down or is starting.
    if (
        state.startswith("08")
        or state in ("57P01", "57P02", "57P03")
        or (not state and isinstance(exc, _psycopg().OperationalError))
    ):
        return LedgerError(
            f"ledger {where}: the connection to the server failed ({text}); "
            f"the next call reconnects. {_IN_DOUBT}",
            "connection",
        )
    return LedgerError(f"ledger {where}: {text}", "io")


# Every open ledger, weakly: a child of fork gets fresh locks (a thread of the
# parent may have held one), and refuses to use the parent's connection.
_OPEN: weakref.WeakSet[PostgresLedger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in list(_OPEN):
        ledger.lock = threading.RLock()
        ledger._guard.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_connection(conn: Connection[Any], pid: int) -> None:
    """Close at collection or exit, in the process that opened it only: closing
    sends the server a goodbye on the socket that a forked child shares."""
    if os.getpid() == pid and not conn.closed:
        conn.close()


def _seconds(value: object) -> bool:
    """A number of seconds >= 0 (infinity included; NaN and booleans not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


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


class PostgresLedger(SqlLedger):
    """Limits, events, quota counters and idempotency keys in one PostgreSQL schema.

    >>> ledger = PostgresLedger("postgresql://app@db.internal/usage")  # doctest: +SKIP
    >>> tracker = Tracker(ledger=ledger)                                # doctest: +SKIP

    The schema (default ``limitry``) is created on first use; several
    processes and hosts may share it and quota admission stays exact.

    - ``timeout`` (5 s): how long a write waits for another writer's lock
      before failing with a ``"locked"`` :class:`LedgerError`.
    - ``connect_timeout`` (2 s): how long a connection attempt may take, in
      whole seconds and at least 2 (libpq's rule; a DSN's own
      ``connect_timeout`` wins).  Failing it when opening is
      ``"cannot_open"``; later (a reconnect) ``"timeout"``.
    - ``operation_timeout`` (default ``timeout + 1``): how long one round
      trip may wait for the server's answer, even when the server is
      paused and the socket stays up; then the connection is dropped and the
      call fails with ``"timeout"``.  Longer than ``timeout``, so a write
      waiting its turn is not cut off; ``math.inf`` turns it off.
    - A circuit breaker (:mod:`limitry_local.breaker`): after
      ``breaker_failures`` (3) calls in a row could not reach the server
      (connection refused or lost, or a timeout), calls fail at once with
      a ``"connection"`` or ``"timeout"`` :class:`LedgerError` for
      ``breaker_cool_down`` (5) seconds; then one call tries to reconnect,
      and closes the breaker if it can.  ``breaker_failures=0`` turns it off.

    One connection per ledger, guarded by a lock, so a Tracker shared by
    threads works; a process forked after opening must open its own.
    """

    path: Path | None = None
    shared = True
    # Every scope commits when it ends; with the server's default
    # synchronous_commit=on, the commit is on disk before it returns.
    durability: Durability = "full"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "limitry",
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        operation_timeout: float | None = None,
        breaker_failures: int = 3,
        breaker_cool_down: float = 5.0,
    ) -> None:
        if not _seconds(timeout) or not timeout < math.inf:
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        if not _seconds(connect_timeout) or not 0 < connect_timeout < math.inf:
            raise ValueError(
                f"connect_timeout must be a finite number of seconds > 0, got {connect_timeout!r}"
            )
        if operation_timeout is None:
            operation_timeout = timeout + 1.0
        elif not _seconds(operation_timeout) or not operation_timeout > timeout:
            raise ValueError(
                "operation_timeout must be a number of seconds longer than timeout "
                f"({timeout!r}), so a write waiting for a lock is not cut off; "
                f"got {operation_timeout!r}"
            )
        # Before psycopg is imported: a bad setting is the caller's error either way.
        self._guard = Guard(
            None if operation_timeout == math.inf else float(operation_timeout),
            CircuitBreaker(breaker_failures, breaker_cool_down),
        )
        self.operation_timeout = float(operation_timeout)
        # libpq (and psycopg) count whole seconds, and read 0 or 1 as 2.
        self._connect_seconds = max(2, math.ceil(connect_timeout))
        if not isinstance(schema, str) or not 0 < len(schema.encode()) < 64 or "\x00" in schema:
            raise ValueError(f"schema must be a PostgreSQL name of 1 to 63 bytes, got {schema!r}")
        psycopg = _psycopg()
        self.schema = schema
        self.where = _describe(dsn, schema)
        self.timeout = timeout
        self.lock = threading.RLock()
        self._dsn = dsn
        self._errors: type[Exception] = psycopg.Error
        self.driver_errors = (psycopg.Error,)
        self._pid = os.getpid()
        self._closed = False
        self._depth = 0
        self._exclusive = False
        # Advisory locks this scope's transaction holds, and the writes queued
        # to go out with the next statement (or with COMMIT, in one round trip),
        # as text with their values written in.
        self._held: set[int] = set()
        self._pending: list[str] = []
        self._scope = _Scope()
        # definitions_version as read under the lock: exact until the scope ends.
        self._scope_version: int | None = None
        # The scope's state between BEGIN and COMMIT (see "scopes"): whether
        # BEGIN went out, and what an optimistic scope guessed before it did.
        self._read_version = True
        self._begun = False
        self._optimistic = False
        self._known_version: int | None = None
        # Idempotency keys a guess found recorded, and their rows, newest last.
        self._recorded: dict[str, tuple[str, str]] = {}
        self._guessed_version: int | None = None
        self._guessed_keys: list[tuple[str, list[int]]] = []
        self._client: Any = None
        self._prepared_on: Any = None
        self._lock_key = _lock_key(schema)
        self._schema_salt = f"limitry_local:{schema}:".encode()
        self._lock_timeout_ms = max(1, round(timeout * 1000))
        quoted = '"' + schema.replace('"', '""') + '"'
        self._q = _Queries(quoted)
        self.dialect = Dialect(
            mark="%s",
            prefix=f"{quoted}.",
            float_mark="%s::float8",
            int_mark="%s::bigint",
            # floor(), not a cast: ::bigint rounds.
            second="floor(ts)::bigint",
            modulo="%%",
            contains="strpos({0}, {1}) > 0",
            no_limit=None,  # LIMIT NULL; a negative LIMIT is an error here
            # SQLite's round(), and so metrics.micro_cents: add 0.5 in double
            # precision, truncate, away from zero.
            micro_cents=(
                "CASE WHEN cost_cents >= 0 THEN trunc(cost_cents * 1e6::float8 + 0.5::float8) "
                "ELSE -trunc(-cost_cents * 1e6::float8 + 0.5::float8) END::bigint"
            ),
            enc=_enc,
            dec=_dec,
        )
        self._insert_alert = self._q.log_alert
        self._conn: Connection[Any] = self._connect(opening=True)
        # The watchdog thread holds no reference to the ledger: stop it when
        # the ledger is collected unclosed.
        weakref.finalize(self, self._guard.stop)
        _OPEN.add(self)
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise

    # --- the connection -------------------------------------------------------

    def _connect(self, *, opening: bool = False) -> Connection[Any]:
        """A new connection whose every wait answers to the guard (deadline, breaker).

        Failing it is ``"cannot_open"`` when the ledger is being opened, and a
        ``"connection"`` or ``"timeout"`` failure the breaker counts after."""
        psycopg = _psycopg()
        settings: dict[str, Any] = {"autocommit": True}
        given = importlib.import_module("psycopg.conninfo").conninfo_to_dict(self._dsn)
        if "connect_timeout" not in given:
            settings["connect_timeout"] = self._connect_seconds
        if "application_name" not in given:
            settings["application_name"] = "limitry_local"
        # The scopes' statements are PREPAREd by name (_ensure_prepared); psycopg's
        # own automatic preparing would send DEALLOCATE ALL, ours included, at
        # the first ROLLBACK it saw after preparing one of its own.
        settings["prepare_threshold"] = None
        try:
            conn: Connection[Any] = connection_class().connect(self._dsn, **settings)
        except psycopg.Error as exc:
            first = first_line(exc)
            if opening:
                raise LedgerError(
                    f"cannot connect to ledger {self.where} ({first}); is the server running "
                    "and reachable, and does the DSN name the right host, port, user and "
                    "database?",
                    "cannot_open",
                ) from exc
            reason: Literal["connection", "timeout"] = (
                "timeout" if isinstance(exc, psycopg.errors.ConnectionTimeout) else "connection"
            )
            self._guard.failed(reason, first)
            raise LedgerError(
                f"cannot reconnect to ledger {self.where} ({first}); the call was not made",
                reason,
            ) from exc
        conn.guard = self._guard  # type: ignore[attr-defined]
        self._guard.reached()
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
        if self._depth:
            return  # inside a scope: its own waits answer to the deadline
        refusal = self._guard.admit()
        if refusal is not None:
            raise self._refused(refusal)
        # After a server restart or a dropped connection (the call that met it
        # failed), and for the breaker's probe: a new connection.
        if self._guard.breaker.is_open or self._conn.closed or self._conn.broken:
            self._finalizer()
            try:
                self._conn = self._connect()
            except LedgerError:
                raise
            except BaseException:
                self._guard.breaker.abandoned()
                raise

    def _refused(self, refusal: Refusal) -> LedgerError:
        return LedgerError(
            f"ledger {self.where}: the server is known to be down ({refusal.failures} calls "
            f"in a row could not reach it; the last: {self._guard.last_failure}), so this "
            f"call fails at once; one call tries again in {refusal.retry_in:.1f}s "
            "(PostgresLedger breaker_failures and breaker_cool_down)",
            self._guard.reason,
        )

    def close(self) -> None:
        """Close the connection (a no-op after the first call)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            _OPEN.discard(self)
            # In a forked child the finalizer leaves the parent's socket alone.
            self._finalizer()
            self._guard.stop()

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
                with self._transaction(read_version=False, exclusive=True):
                    version = self._schema_version()
                    if version is None:
                        self._create_schema()
                    if version == 1:
                        _v1_to_v2(self._conn, self._q.schema, self.schema)
                    if version in (1, 2):
                        _v2_to_v3(self._conn, self._q.schema)
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
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'meta' AND column_name IN ('key', 'value')",
            [self.schema],
        ).fetchone()
        row = (
            conn.execute(
                f"SELECT value FROM {self._q.schema}.meta WHERE key = 'schema_version'"
            ).fetchone()
            if columns and columns[0] == 2
            else None
        )
        if row is None:
            # A table named meta is not enough: ours has key/value rows and a version.
            raise LedgerError(
                f"schema {self.schema!r} has a meta table but is not a limitry_local ledger "
                f"({self.where}); give PostgresLedger(schema=...) another name",
                "not_a_ledger",
            )
        return schema_version_of(row[0], SCHEMA_VERSION, self.where)

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
    #
    # Every statement of a scope goes to the server as text with its values
    # written in (client-side binding, psycopg's ClientCursor.mogrify), several
    # statements to one message: PostgreSQL's simple query protocol runs them
    # in order and answers them together, one round trip for the lot.
    #
    # An optimistic scope (write(optimistic=True)) sends nothing when it
    # opens.  definitions_version() answers the version this connection last
    # read and idempotent() answers "not recorded"; the scope's first
    # statement goes out behind BEGIN, the definitions lock, the version and
    # each key's lock and lookup, so usage() with a quota is two round trips:
    # that batch (with the counters' locks and reads), then the writes and
    # COMMIT.  A guess the batch shows wrong ends the scope with "conflict"
    # before anything is decided on what came back; the caller runs it again,
    # and guesses right this time: the version is the one just read, and a
    # key found recorded is answered from its row, kept (_recorded).

    def _sql(self, query: str, params: Sequence[Any]) -> str:
        """``query`` with ``params`` written in as literals, to send in a batch."""
        client = self._client
        if client is None or client.connection is not self._conn:
            client = self._client = _psycopg().ClientCursor(self._conn)
        text: str = client.mogrify(query, params)
        return text

    def _run(self, statements: Sequence[str]) -> list[list[Any]]:
        """Send ``statements`` in one message: one round trip.  The rows each answered."""
        # No parameters, so psycopg sends a simple query (several statements
        # allowed); an error stops the rest of the message, and the
        # transaction is then failed until ROLLBACK.
        cursor = self._conn.execute("; ".join(statements), prepare=False)
        answers: list[list[Any]] = []
        while True:
            answers.append(cursor.fetchall() if cursor.description is not None else [])
            if not cursor.nextset():
                return answers

    def _begin(self, then: Sequence[str] = ()) -> list[list[Any]]:
        """BEGIN, the definitions lock, the version, the checks of what this scope
        guessed, then ``then``: one round trip.  The answers to ``then``.

        Raises the ``"conflict"`` LedgerError if a guess was wrong."""
        if self._read_version:  # not setting up: the tables exist
            self._ensure_prepared()
        take = "pg_advisory_xact_lock" if self._exclusive else "pg_advisory_xact_lock_shared"
        statements = [
            "BEGIN ISOLATION LEVEL READ COMMITTED",
            f"SET LOCAL lock_timeout = {self._lock_timeout_ms}",
            # The lock, then (a new snapshot under READ COMMITTED, so it sees
            # the last change's commit) the definitions version.
            f"SELECT {take}({self._lock_key})",
        ]
        if self._read_version:
            statements.append(self._q.run["limitry_version"])
        # Each guessed key: its lock, then its row (the lookups' places noted).
        lookups: list[int] = []
        for key, locks in self._guessed_keys:
            if locks:
                statements.append(_lock_all(locks))
            lookups.append(len(statements))
            statements.append(self._sql(self._q.run["limitry_idempotent"], [_enc(key)]))
        self._begun = True
        answers = self._run([*statements, *then])
        if self._read_version:
            rows = answers[3]
            self._scope_version = definitions_version_of(rows[0] if rows else None, self.where)
            self._known_version = self._scope_version
        recorded = False
        for (key, _), at in zip(self._guessed_keys, lookups, strict=True):
            if answers[at]:
                recorded = True
                self._remember(key, self._stored_response(key, answers[at][0]))
        self._check_guesses(recorded)
        return answers[len(statements) :]

    def _ensure_prepared(self) -> None:
        """PREPARE the statements of every usage() on this connection, once.

        A scope runs them by ``EXECUTE name(literals)``: planned once per
        connection, not once per message.  Prepared statements outlive
        transactions (a ROLLBACK keeps them) and go with the connection."""
        if self._prepared_on is self._conn:
            return
        wanted = self._q.prepared
        have = {
            name
            for (name,) in self._conn.execute(
                "SELECT name FROM pg_catalog.pg_prepared_statements WHERE name = ANY(%s)",
                [list(wanted)],
            )
        }
        missing = [f"PREPARE {name} AS {text}" for name, text in wanted.items() if name not in have]
        if missing:
            self._run(missing)
        self._prepared_on = self._conn

    def _remember(self, key: str, stored: tuple[str, str] | None) -> None:
        """Keep a recorded key's row for the next guess: it never changes once committed."""
        if stored is not None:
            self._recorded[key] = stored
            if len(self._recorded) > _RECORDED_KEPT:
                del self._recorded[next(iter(self._recorded))]

    def _check_guesses(self, recorded: bool) -> None:
        guessed, self._guessed_version = self._guessed_version, None
        self._guessed_keys = []
        if recorded or (guessed is not None and guessed != self._scope_version):
            raise LedgerError(
                f"ledger {self.where}: the limit definitions changed, or the idempotency key "
                "was recorded, since this process last looked; nothing of this write was "
                "kept, and running it again is safe",
                "conflict",
            )

    def _guessing(self) -> bool:
        """Whether this scope may still guess: optimistic, and nothing sent yet."""
        return self._optimistic and not self._begun

    @contextmanager
    def _transaction(
        self, *, read_version: bool, exclusive: bool, optimistic: bool = False
    ) -> Iterator[_Scope]:
        """BEGIN, take the definitions lock, yield; COMMIT, or ROLLBACK if anything raised.

        An ``optimistic`` scope begins with its first statement instead (see above)."""
        self._exclusive = exclusive
        self._read_version = read_version
        self._begun = False
        self._optimistic = optimistic
        self._guessed_version = None
        self._guessed_keys = []
        try:
            if not self._optimistic:
                self._begin()
        except BaseException as exc:
            self._end_scope()
            self._abandon()
            if isinstance(exc, self._errors):
                raise _explained(exc, self.where, self.timeout) from exc
            raise
        self._depth = 1
        try:
            yield self._scope
        except BaseException as exc:
            self._depth = 0
            stale = self._stale_decision(exc)
            self._end_scope()
            self._abandon()
            if stale is not None:
                raise stale from exc
            if isinstance(exc, self._errors):
                raise _explained(exc, self.where, self.timeout) from exc
            raise
        self._depth = 0
        try:
            self._commit()
        finally:
            self._end_scope()

    def _stale_decision(self, exc: BaseException) -> LedgerError | None:
        """The "conflict" to raise instead of ``exc`` if it was decided on a wrong guess.

        A denial of a call that sent nothing yet was decided on the guesses
        alone: they are checked (and the transaction rolled back) in one round
        trip before the denial stands."""
        if not (
            isinstance(exc, Exception)
            and not self._begun
            and (self._guessed_version is not None or self._guessed_keys)
        ):
            return None
        try:
            self._begin(["ROLLBACK"])
        except LedgerError as conflict:
            return conflict
        except self._errors:
            pass  # the check could not run: the scope's own failure stands
        return None

    def _end_scope(self) -> None:
        self._depth = 0
        self._scope_version = None
        self._optimistic = False
        self._begun = False
        self._guessed_version = None
        self._guessed_keys = []

    def _commit(self) -> None:
        conn = self._conn
        psycopg = _psycopg()
        pending, self._pending = self._pending, []
        self._held.clear()
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
            if not self._begun:
                guessed = self._guessed_version is not None or bool(self._guessed_keys)
                if not (guessed and pending):
                    # Nothing guessed, or nothing to write: BEGIN, the checks, the
                    # writes and COMMIT in one round trip (or none at all).
                    if guessed or pending:
                        self._begin([*pending, "COMMIT"])
                    return
                # The guesses are checked before the writes go out: a key
                # another host recorded would otherwise fail its INSERT.
                self._begin()
            # The scope's last writes and COMMIT: one round trip.
            self._run([*pending, "COMMIT"])
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, self._errors):
                error = _explained(exc, self.where, self.timeout)
                # The COMMIT went out and its answer never came: it may have landed.
                error.in_doubt = error.reason in ("timeout", "connection")
                raise error from exc
            raise
        if self._scope_version is not None:
            self._known_version = self._scope_version

    def _abandon(self) -> None:
        """Roll back; if even that fails, drop the connection (the server rolls back)."""
        self._pending.clear()
        self._held.clear()
        conn = self._conn
        try:
            idle = _psycopg().pq.TransactionStatus.IDLE
            if not conn.closed and conn.info.transaction_status != idle:
                conn.execute("ROLLBACK")
        except BaseException:
            self._finalizer()

    @contextmanager
    def write(
        self, *, durable: bool = False, exclusive: bool = False, optimistic: bool = False
    ) -> Iterator[_Scope]:
        """A write scope: one transaction; all or nothing.

        Reads inside the scope see its own writes; the counters it locks
        (:meth:`lock_counters`) and the idempotency keys it looks up stay
        as read until it commits.  Other writers run beside it, unless it is
        ``exclusive`` (for changes of limit definitions).  ``durable``
        changes nothing: every scope commits when it ends.  A scope opened
        inside another joins it (the outer one commits or rolls back).

        ``optimistic`` is for a caller that runs the scope again when it ends
        in a ``"conflict"`` :class:`LedgerError`: the scope then guesses the
        definitions version and that idempotency keys are new, and checks
        the guesses with its first statement (see the note above).
        """
        with self.lock:
            self._ensure_usable()
            if self._depth:
                if exclusive and not self._exclusive:
                    raise RuntimeError("an exclusive write scope cannot join a shared one")
                self._depth += 1
                try:
                    yield self._scope
                finally:
                    self._depth -= 1
                return
            with self._transaction(
                read_version=True, exclusive=exclusive, optimistic=optimistic
            ) as scope:
                yield scope

    def _check_scope(self, scope: object) -> None:
        if self._depth == 0 or scope is not self._scope:
            raise RuntimeError("ledger writes must happen inside PostgresLedger.write()")

    # --- locks in one order -------------------------------------------------------

    def _changing_definitions(self, scope: object) -> Connection[Any]:
        """No other writer beside a scope that changes definitions or rebuilds counters.

        A scope opened ``exclusive`` holds the lock already; a shared one waits
        here for the writers before it (two such upgrades are a deadlock the
        server breaks: "conflict")."""
        conn = self._writer(scope)
        if not self._exclusive:
            conn.execute(f"SELECT pg_advisory_xact_lock({self._lock_key})")
            self._exclusive = True
        return conn

    def _lock_id(self, kind: bytes, *parts: str | int) -> int:
        text = "\x00".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(self._schema_salt + kind + text, digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _to_lock(self, ids: Iterable[int]) -> list[int]:
        """The ids not held yet, sorted: every call takes its locks in one global order."""
        new = sorted(set(ids) - self._held)
        self._held.update(new)
        return new

    def _counter_locks(self, counters: Iterable[tuple[str, str, int]]) -> list[int]:
        return self._to_lock(self._lock_id(b"c", q, k, s) for q, k, s in counters)

    def _queue(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        self._pending.extend(self._sql(query, row) for row in rows)

    def _send_pending(self) -> None:
        """Writes queued by :meth:`record`, sent before the scope's next statement."""
        pending, self._pending = self._pending, []
        self._run(pending)

    def _in_scope(self, statements: list[str]) -> list[list[Any]]:
        """Run ``statements`` in the open scope (behind BEGIN if it has not gone out yet,
        after the writes queued): the rows each answered."""
        if not self._begun and not self._pending:
            return self._begin(statements)
        self._writer(self._scope)
        return self._run(statements)

    def flush(self) -> None:
        """Nothing to commit: every scope committed when it ended."""
        with self.lock:
            if not self._closed:
                self._ensure_usable()

    # --- limit definitions ----------------------------------------------------

    def definitions_version(self) -> int:
        """Bumped by every change of a limit definition, by any process on this schema."""
        if self._scope_version is not None:
            return self._scope_version
        if self._depth and not self._begun:
            if self._guessing() and self._known_version is not None:
                if self._guessed_version is None:
                    self._guessed_version = self._known_version
                return self._guessed_version
            self._begin()
            if self._scope_version is not None:
                return self._scope_version
        self._known_version = definitions_version_of(
            self._conn.execute(self._q.version).fetchone(), self.where
        )
        return self._known_version

    def bump_definitions(self, scope: object) -> int:
        """Record a definition change (inside :meth:`write`); returns the new version."""
        conn = self._changing_definitions(scope)
        self._scope_version = definitions_version_of(
            conn.execute(self._q.bump).fetchone(), self.where
        )
        return self._scope_version

    def record(
        self,
        scope: object,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None:
        """Write events, their counter increments and idempotency responses (inside :meth:`write`).

        Queued, to go to the server with the scope's next statement or its
        COMMIT (one round trip for the lot).  Increments of one counter are
        added up first: one upsert may not touch a row twice.
        """
        self._check_scope(scope)
        rows: list[list[Any]] = []
        increments: list[CounterIncrement] = []
        keys: list[tuple[Any, Any, Any]] = []
        for row, added_by_event, response in events:
            rows.append([_enc(value) for value in row])
            increments.extend(added_by_event)
            if row.idempotency_key is not None:
                keys.append((_enc(row.idempotency_key), _enc(row.id), _enc(response)))
        if not rows:
            return
        added = merged_increments(increments)
        locks = self._counter_locks(added)
        if locks:
            self._pending.append(_lock_all(locks))
        run = self._q.run
        self._queue(run["limitry_event"], rows)
        self._queue(
            run["limitry_add"], [(_enc(q), _enc(k), s, n) for (q, k, s), n in added.items()]
        )
        self._queue(run["limitry_key"], keys)

    def lock_counters(self, scope: object, counters: Sequence[tuple[str, str, int]]) -> list[int]:
        """Lock these counters (advisory locks, sorted) and read them: one round trip."""
        self._check_scope(scope)
        if not counters:
            return []
        locks = self._counter_locks(counters)
        encoded = [(_enc(q), _enc(k), s) for q, k, s in counters]
        statements = [_lock_all(locks)] if locks else []
        statements.extend(self._sql(self._q.run["limitry_counter"], c) for c in encoded)
        answers = self._in_scope(statements)[-len(encoded) :]
        return [self._units(rows[0][0], "a quota counter") if rows else 0 for rows in answers]

    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, stored response JSON)`` of the event recorded with this key, if any.

        Inside a write scope the key is locked first, so a writer on another
        host with the same key waits, then sees this scope's event.  An
        optimistic scope answers None, and checks under the lock with its
        first statement."""
        if not self._depth:
            return super().idempotent(key)
        if self._guessing() and key in self._recorded:
            return self._recorded[key]
        locks = self._to_lock([self._lock_id(b"i", key)])
        if self._guessing():
            self._guessed_keys.append((key, locks))
            return None
        statements = [_lock_all(locks)] if locks else []
        statements.append(self._sql(self._q.run["limitry_idempotent"], [_enc(key)]))
        rows = self._in_scope(statements)[-1]
        return self._stored_response(key, rows[0] if rows else None)

    def pop_expired_holds(self, scope: object, now: float) -> list[str]:
        # One group of counter locks for every hold, and holds another writer
        # is releasing right now are its to release (SKIP LOCKED).
        conn = self._writer(scope)
        taken = conn.execute(self._q.take_expired_holds, [now]).fetchall()
        increments = [i for _, text in taken for i in self._increments(text)]
        self._add(conn, [(q, k, s, -amount) for q, k, s, amount in increments])
        return sorted(str(hold_id) for hold_id, _ in taken)

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

    def _scan_page(self, after: int) -> list[tuple[int, EventRow]]:
        with self.lock:
            self._ensure_usable()
            try:
                cursor = self._conn.execute(self._q.scan, [after, _SCAN_PAGE])
                return [(row[0], self._event(row[1:])) for row in cursor]
            except self._errors as exc:
                raise self.explained(exc) from exc

    # --- what the SQL core asks of an engine ---------------------------------------

    def _reader(self) -> Connection[Any]:
        if self._depth and not self._begun:
            self._begin()
        if self._pending:
            self._send_pending()
        return self._conn

    def _writer(self, scope: object) -> Connection[Any]:
        self._check_scope(scope)
        return self._reader()

    def _many(self, conn: Connection[Any], sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(sql, rows)

    def _add(self, conn: Connection[Any], increments: Iterable[CounterIncrement]) -> None:
        # One round trip for the lot, one upsert per counter (an upsert may not
        # touch a row twice).  The column is NUMERIC; the statement's ::bigint
        # casts refuse a sum past 2**63 - 1 (22003: "overflow").
        d = self.dialect
        added = merged_increments(increments)
        locks = self._counter_locks(added)
        rows = [(d.enc(q), d.enc(k), s, n) for (q, k, s), n in added.items()]
        if rows:
            statements = [_lock_all(locks)] if locks else []
            statements.extend(self._sql(self._q.run["limitry_add"], row) for row in rows)
            self._run(statements)

    def explained(self, exc: BaseException) -> LedgerError:
        return _explained(exc, self.where, self.timeout)


class _Queries:
    """The statements only this engine runs (the writers' lock, the numbering), with
    the schema's quoted name written in once; the rest are the SQL core's."""

    def __init__(self, schema: str) -> None:
        s = self.schema = schema
        self.version = f"SELECT value FROM {s}.meta WHERE key = 'definitions_version'"
        self.bump = (
            f"UPDATE {s}.meta SET value = (value::bigint + 1)::text "
            "WHERE key = 'definitions_version' RETURNING value"
        )
        # used is NUMERIC; the cast refuses a sum past 2**63 - 1 (22003), as
        # SQLite's INTEGER would, so no ledger holds a counter the others cannot.
        self.add_to_counter = (
            f"INSERT INTO {s}.quota_counters (quota_id, key, period_start, used) "
            "VALUES (%s, %s, %s, %s::bigint) ON CONFLICT (quota_id, key, period_start) "
            f"DO UPDATE SET used = ({s}.quota_counters.used + excluded.used)::bigint"
        )
        self.counter = (
            f"SELECT used FROM {s}.quota_counters "
            "WHERE quota_id = %s AND key = %s AND period_start = %s"
        )
        self.idempotent = f"SELECT event_id, response FROM {s}.idempotency_keys WHERE key = %s"
        self.take_expired_holds = (
            f"DELETE FROM {s}.holds WHERE id IN (SELECT id FROM {s}.holds "
            "WHERE expires_at <= %s FOR UPDATE SKIP LOCKED) RETURNING id, increments"
        )
        # seq from the identity column: no lock on the whole table to number one.
        self.insert_event = (
            f"INSERT INTO {s}.events ({', '.join(EVENT_COLUMNS)}) VALUES "
            f"({', '.join('%s' for _ in EVENT_COLUMNS)})"
        )
        self.insert_key = (
            f"INSERT INTO {s}.idempotency_keys (key, event_id, response) VALUES (%s, %s, %s)"
        )
        self.scan = (
            f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM {s}.events "
            "WHERE seq > %s ORDER BY seq LIMIT %s"
        )
        # seq from the identity column, as for events.  Two writers logging one
        # alert, key and period hold that counter's lock, so they take turns.
        self.log_alert = (
            f"INSERT INTO {s}.alert_log ({', '.join(ALERT_COLUMNS)}) VALUES "
            f"({', '.join('%s' for _ in ALERT_COLUMNS)}) "
            "ON CONFLICT (alert_id, key, period_start) DO NOTHING"
        )
        # The statements of every usage(): PREPAREd once per connection under
        # these names ($1, $2, ... for %s), run as "EXECUTE name(literals)".
        hot = {
            "limitry_version": self.version,
            "limitry_idempotent": self.idempotent,
            "limitry_counter": self.counter,
            "limitry_event": self.insert_event,
            "limitry_add": self.add_to_counter,
            "limitry_key": self.insert_key,
        }
        self.prepared = {name: _numbered(text) for name, text in hot.items()}
        self.run = {
            name: f"EXECUTE {name}({', '.join(['%s'] * text.count('%s'))})"
            if "%s" in text
            else f"EXECUTE {name}"
            for name, text in hot.items()
        }


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
            seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
            quota_id text, threshold bigint, created_at text, updated_at text
        );
        -- One row per firing; the unique key is "once per alert, key and period".
        CREATE TABLE {s}.alert_log (
            seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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


def _v1_to_v2(conn: Connection[Any], s: str, schema: str) -> None:
    """Version 1 numbered events and firings as ``max(seq) + 1`` under one lock,
    and had no fail modes (NULL reads as "closed")."""
    for table in ("events", "alert_log"):
        identity = conn.execute(
            "SELECT is_identity FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s AND column_name = 'seq'",
            [schema, table],
        ).fetchone()
        if identity is None or identity[0] != "YES":
            conn.execute(
                f"ALTER TABLE {s}.{table} ALTER COLUMN seq ADD GENERATED BY DEFAULT AS IDENTITY"
            )
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'seq'), "
                f"coalesce((SELECT max(seq) FROM {s}.{table}), 0) + 1, false)",
                [f"{s}.{table}"],
            )
    for table in ("quotas", "rate_limits"):
        conn.execute(f"ALTER TABLE {s}.{table} ADD COLUMN IF NOT EXISTS fail_mode text")
    conn.execute(f"UPDATE {s}.meta SET value = '2' WHERE key = 'schema_version'")


def _v2_to_v3(conn: Connection[Any], s: str) -> None:
    """Version 2 could not change an alert: NULL ``updated_at`` reads as its ``created_at``."""
    conn.execute(f"ALTER TABLE {s}.quota_alerts ADD COLUMN IF NOT EXISTS updated_at text")
    conn.execute(f"UPDATE {s}.meta SET value = '3' WHERE key = 'schema_version'")


def _numbered(query: str) -> str:
    """A statement with psycopg's ``%s`` placeholders as PREPARE's ``$1``, ``$2``, ..."""
    numbers = iter(range(1, query.count("%s") + 1))
    return re.sub("%s", lambda _: f"${next(numbers)}", query)


def _lock_all(locks: Sequence[int]) -> str:
    """Take these advisory locks, in the order given (the caller sorted them)."""
    # A function scan yields unnest's rows in the array's order, and nothing
    # here sorts them again.  The ids are ints: written in as they are.
    ids = ",".join(str(int(lock)) for lock in locks)
    return f"SELECT count(pg_advisory_xact_lock(x)) FROM unnest(ARRAY[{ids}]::bigint[]) AS x"


def _lock_key(schema: str) -> int:
    """The writers' advisory lock for one schema, the same in every process and host."""
    digest = hashlib.blake2b(f"limitry_local:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


PostgresLedger.__module__ = "limitry_local.postgres_ledger"  # where users import it from
