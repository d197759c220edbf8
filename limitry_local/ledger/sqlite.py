"""The SQLite ledger: events, quota counters, limit definitions, idempotency keys in one file.

The ledger stores; it never decides.  The tracker opens a write scope
(:meth:`Ledger.write`), reads what it needs to decide, and writes the rows
the decision implies; everything in one scope commits or rolls back
together.  The tracker reads counters inside that scope, under SQLite's
write lock, which is what keeps quota admission exact when several
processes share one file.

Quota counters are kept per ``(quota, key, period_start)`` and updated in the
same transaction as the event row, so a quota check is one primary-key
lookup whatever the number of events.

Durability (see docs/reliability.md): ``"normal"`` commits every write scope
(WAL, synchronous=NORMAL: survives the process being killed); ``"full"``
also syncs the WAL on every commit (survives power loss); ``"batched"``
keeps one transaction open and commits it every ``flush_events`` scopes or
``flush_ms`` milliseconds, whichever comes first, and on close and at exit.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlite_utils

from limitry_local.errors import LedgerError
from limitry_local.ledger.common import (
    check_priced,
    definitions_version_of,
    overflow,
    schema_version_of,
)
from limitry_local.ledger.protocol import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    CounterIncrement,
    Durability,
    EventRow,
    check_options,
)
from limitry_local.ledger.schema import MIGRATIONS, SCHEMA_VERSION, create_schema
from limitry_local.ledger.sql import Dialect, SqlLedger
from limitry_local.ledger.sqlite_errors import check_wal_files, explained
from limitry_local.ledger.sqlite_turns import Turns

SQLITE = Dialect(
    mark="?",
    prefix="",
    float_mark="?",
    int_mark="?",
    second="CAST(ts AS INTEGER)",
    modulo="%",
    contains="instr({0}, {1}) > 0",
    no_limit=-1,  # a negative LIMIT is no limit
)

# seq is the rowid: SQLite numbers a new row max(seq) + 1 under its write lock.
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({SQLITE.marks(len(EVENT_COLUMNS))})"
)
_ADD_TO_COUNTER = (
    "INSERT INTO quota_counters (quota_id, key, period_start, used) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (quota_id, key, period_start) DO UPDATE SET used = "
    # SQLite turns an integer sum past 2**63 into a REAL: NULL instead, which
    # the column's NOT NULL refuses (and _add reports as an overflow).
    "CASE WHEN typeof(used + excluded.used) = 'integer' THEN used + excluded.used END"
)
_INSERT_IDEMPOTENCY = "INSERT INTO idempotency_keys (key, event_id, response) VALUES (?, ?, ?)"
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "batched": "NORMAL"}
_LOG_ALERT = (
    f"INSERT INTO alert_log ({', '.join(ALERT_COLUMNS)}) "
    f"VALUES ({SQLITE.marks(len(ALERT_COLUMNS))}) "
    "ON CONFLICT (alert_id, key, period_start) DO NOTHING"
)


# Every open ledger, weakly: a child process must not use a connection it
# inherited through fork (SQLite forbids it), nor end its parent's batch.
_OPEN: weakref.WeakSet[Ledger] = weakref.WeakSet()
_HELD_AT_FORK: list[Ledger] = []


def _before_fork() -> None:
    # Commit every open batch, holding each ledger's lock across the fork: the
    # child then inherits no transaction to roll back, and no lock that some
    # other thread of the parent happened to hold.
    for ledger in list(_OPEN):
        ledger.lock.acquire()
        _HELD_AT_FORK.append(ledger)
        if not ledger._closed and not ledger._forked:
            try:
                ledger._commit()
            except LedgerError as exc:
                ledger._lost = exc


def _after_fork_in_parent() -> None:
    while _HELD_AT_FORK:
        _HELD_AT_FORK.pop().lock.release()


def _after_fork_in_child() -> None:
    while _HELD_AT_FORK:
        ledger = _HELD_AT_FORK.pop()
        ledger._forked = True
        ledger._finalizer.detach()
        ledger.lock = threading.RLock()
        ledger._wake = threading.Condition(ledger.lock)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _release(
    conn: sqlite3.Connection,
    wake: threading.Condition,
    released: threading.Event,
    where: str,
    turns: Turns | None,
    *,
    untold: list[LedgerError],
) -> None:
    """Commit what is pending and close: at close(), when a ledger is collected, or at exit.

    A weakref.finalize callback, so it holds the connection, never the Ledger;
    ``untold`` is the ledger's own list of a loss the timer met that no call
    has raised yet.
    """
    with wake:
        if untold:
            # No call came to be told (found in review: exit status 0, stderr empty).
            print(
                f"limitry_local: {untold.pop()} (met by the flush timer; the ledger was "
                "released before any call could raise it)",
                file=sys.stderr,
            )
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # No caller to raise it to (a collected ledger, or exit): said on
            # stderr, as a loss must never be silent; the file keeps its last commit.
            print(
                f"limitry_local: ledger {where}: the open batch was lost when it was "
                f"released without close(): {exc}",
                file=sys.stderr,
            )
        finally:
            conn.close()
            if turns is not None:
                turns.close()
            released.set()
            wake.notify_all()  # the flusher, if any, has nothing left to do


def _at_process_exit(ref: weakref.ref[Ledger]) -> None:
    """multiprocessing's exit hook, in a child about to end with ``os._exit``."""
    ledger = ref()
    if ledger is not None:
        ledger._write_through()


class _WriteScope:
    """What :meth:`Ledger.write` returns: a plain context manager.

    The generator-based one, with the :meth:`Ledger.transaction` it nested,
    cost some 20,000 instructions a call, a sixth of a file ledger's share
    of ``usage()`` (docs/benchmarks.md).  Normal and full durability: one
    transaction.  Batched: a savepoint in the open batch.
    """

    __slots__ = ("_batched", "_changes_before", "_conn", "_durable", "_ledger")

    def __init__(self, ledger: Ledger, durable: bool) -> None:
        self._ledger = ledger
        self._durable = durable
        self._batched = ledger.durability == "batched"

    def __enter__(self) -> sqlite3.Connection:
        ledger = self._ledger
        ledger.lock.acquire()
        try:
            ledger._ensure_usable()
            if self._batched:
                ledger._refuse_after_loss()
            conn = ledger.db.conn
            try:
                if not self._batched:
                    if self._durable and ledger._turns is not None:
                        ledger._begin_in_turn(conn)
                    else:
                        conn.execute("BEGIN IMMEDIATE")
                    ledger._transactions += 1
                else:
                    if not conn.in_transaction:
                        ledger._begin_in_turn(conn)
                        ledger._transactions += 1
                        ledger._first_pending = time.monotonic()
                        ledger._pending = 0
                    conn.execute("SAVEPOINT scope")
                    self._changes_before = conn.total_changes
            except sqlite3.Error as exc:
                raise explained(exc, ledger.where, ledger.timeout) from exc
            if self._batched:
                ledger._scope_events = 0
        except BaseException:
            ledger.lock.release()
            raise
        self._conn = conn
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            conn = self._conn
            if exc is None:
                try:
                    conn.execute("RELEASE scope" if self._batched else "COMMIT")
                except BaseException as error:
                    self._undo(error)
                    raise
                if self._batched:
                    self._ledger._end_scope(conn, self._changes_before, self._durable)
            else:
                self._undo(exc)  # returns when ``exc`` itself is to go on
        finally:
            self._ledger.lock.release()

    def _undo(self, exc: BaseException) -> None:
        """Undo the scope after ``exc``; raises what replaces it (a LedgerError), if anything."""
        ledger = self._ledger
        conn = self._conn
        if not self._batched:
            # SQLite may have rolled back already (disk full, I/O error).
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise explained(exc, ledger.where, ledger.timeout) from exc
            return
        if conn.in_transaction:
            conn.execute("ROLLBACK TO scope")
            conn.execute("RELEASE scope")
            ledger._version_seen = None  # the scope may have bumped it
            if ledger._pending == 0:
                ledger._commit()  # a denial alone must not hold the write lock
            if isinstance(exc, sqlite3.Error):
                raise explained(exc, ledger.where, ledger.timeout) from exc
            return
        # SQLite rolled the whole batch back (an I/O error): say so.
        raise ledger._batch_lost(exc) from exc


class Ledger(SqlLedger):
    """One SQLite database, in memory (``path=None``) or in a file that survives restarts.

    ``durability`` applies to a file (an in-memory ledger has nothing to
    lose to a crash and always commits at once).  ``timeout`` is how long a
    write waits for another connection's lock before failing with a
    ``"locked"`` :class:`LedgerError`.
    """

    dialect = SQLITE
    driver_errors = (sqlite3.Error,)
    _insert_alert = _LOG_ALERT

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        timeout: float = 5.0,
        durability: Durability = "normal",
        flush_events: int = 1000,
        flush_ms: float = 50.0,
    ) -> None:
        check_options(
            timeout=timeout, durability=durability, flush_events=flush_events, flush_ms=flush_ms
        )
        self.path = None if path is None else Path(path)
        self.where = ":memory:" if self.path is None else str(self.path)
        self.shared = self.path is not None
        self.timeout = timeout
        self.durability: Durability = durability if self.path is not None else "normal"
        self.flush_events = flush_events
        self.flush_seconds = flush_ms / 1000
        # Guards the connection: the batched flusher thread commits on it too.
        self.lock = threading.RLock()
        self._pending = 0
        self._first_pending = 0.0
        self._scope_events = 0
        # Write transactions begun on this connection, and the definitions
        # version read inside the one of that number: no other connection
        # can change it while ours holds the write lock.
        self._transactions = 0
        self._version_seen: tuple[int, int] | None = None
        # A loss the timer met that no call has raised yet (see _lost).
        self._untold: list[LedgerError] = []
        # Set by a lost batch, cleared by a flush() that commits: until then
        # every write is refused with it, so no more is acknowledged and lost.
        self._failed: LedgerError | None = None
        self.lost_batches = 0
        """How many open batches SQLite rolled back: what they wrote, alert firings
        included, is gone (the Tracker forgets which alerts it saw fire)."""
        self._closed = False
        self._forked = False
        # Set when the connection is gone, whoever closed it (close(), exit, collection).
        self._released = threading.Event()
        self._wake = threading.Condition(self.lock)
        if self.path is not None and self.path.is_dir():
            raise LedgerError(f"cannot open ledger {self.where}: it is a directory", "cannot_open")
        if self.path is not None and self.path.exists() and not os.access(self.path, os.W_OK):
            # SQLite would open it read-only and fail only at the first write;
            # a Tracker that cannot record should not start.
            raise LedgerError(
                f"ledger {self.where} is read-only; the file and its directory must be writable",
                "read_only",
            )
        if self.path is not None:
            check_wal_files(self.path)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so
            # a counter increment can never be committed apart from its event.
            conn = sqlite3.connect(self.where, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise explained(exc, self.where, timeout) from exc
        try:
            self.db = sqlite_utils.Database(conn)
            self._set_up(conn, durability, timeout)
        except sqlite3.Error as exc:
            conn.close()
            raise explained(exc, self.where, timeout) from exc
        except LedgerError:
            conn.close()
            raise
        self._turns = Turns(self.path) if self.path is not None else None
        # Commits an open batch if the ledger is dropped unclosed, or at exit.
        self._finalizer = weakref.finalize(
            self,
            _release,
            conn,
            self._wake,
            self._released,
            self.where,
            self._turns,
            untold=self._untold,
        )
        # A multiprocessing child ends with os._exit, past atexit and so past the
        # finalizer; multiprocessing runs its own exit hooks first (found in review:
        # a child's whole open batch was lost, exit code 0).
        processes = sys.modules.get("multiprocessing.util")
        if processes is not None and self.durability == "batched":
            processes.Finalize(self, _at_process_exit, args=(weakref.ref(self),), exitpriority=0)
        _OPEN.add(self)
        if self.durability == "batched":
            threading.Thread(
                target=_flusher, args=(weakref.ref(self),), name="limitry-flush", daemon=True
            ).start()

    def _set_up(self, conn: sqlite3.Connection, durability: Durability, timeout: float) -> None:
        """Pragmas and schema, retried while another process is setting up the same file.

        Processes opening a new file at once can meet SQLITE_BUSY without the busy
        handler being called (switching to WAL needs an exclusive lock; SQLite
        returns at once where waiting could deadlock): retried until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.path is not None:
                    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                    # A foreign, damaged or newer file is refused before WAL rewrites its header.
                    self._schema_version()
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[durability]}")
                self._open_schema()
                return
            except (sqlite3.OperationalError, LedgerError) as exc:
                locked = (
                    exc.reason == "locked"
                    if isinstance(exc, LedgerError)
                    else explained(exc, self.where, timeout).reason == "locked"
                )
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    # --- schema -------------------------------------------------------------

    def _open_schema(self) -> None:
        if self._schema_version() == SCHEMA_VERSION:
            return  # the usual case: no write lock needed
        # Create or migrate under the write lock, deciding again there: several
        # processes may open a new or old file at once, and only one must act.
        # One transaction for every step, so a crash leaves the old version whole.
        with self.transaction():
            version = self._schema_version()
            if version is None:
                create_schema(self.db)
            elif version < SCHEMA_VERSION:
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step](self.db)
                self.db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    [str(SCHEMA_VERSION)],
                )

    def _schema_version(self) -> int | None:
        """The file's schema version; None for an empty file.  Refuses what is not ours."""
        db = self.db
        tables = set(db.table_names())  # one read: a commit between two looked foreign
        if "meta" not in tables:
            if tables:
                # Someone else's database: adding our tables to it would be a surprise.
                raise LedgerError(
                    f"{self.where} is a SQLite database but not a limitry_local ledger; "
                    "point the ledger at a new file",
                    "not_a_ledger",
                )
            return None
        if {"key", "value"} - set(db.table("meta").columns_dict) or {
            "events",
            "quota_counters",
            "idempotency_keys",
        } - tables:
            raise self._foreign()
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise self._foreign()
        return schema_version_of(row[0], SCHEMA_VERSION, self.where)

    def _foreign(self) -> LedgerError:
        # A table named meta is not enough: ours has key/value rows and a version.
        return LedgerError(
            f"{self.where} is a SQLite database but not a limitry_local ledger (its meta "
            "table holds no schema_version, or its tables are not a ledger's); "
            "point the ledger at a new file",
            "not_a_ledger",
        )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction of its own; rolled back whole if anything inside raises.

        For schema work at open.  Tracker writes go through :meth:`write`,
        which also serves the batched mode.
        """
        with self.lock:
            self._ensure_usable()
            conn = self.db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise explained(exc, self.where, self.timeout) from exc
            self._transactions += 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (disk full, I/O error).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise explained(exc, self.where, self.timeout) from exc
                raise

    def write(
        self, *, durable: bool = False, exclusive: bool = False, optimistic: bool = False
    ) -> _WriteScope:
        """A write scope: what it writes commits (or, batched, joins the batch) or not at all.

        Every scope is exclusive (SQLite has one writer at a time), so
        ``exclusive`` and ``optimistic`` change nothing here.

        Reads inside the scope run under SQLite's write lock, so no other
        process can change what was read before this scope's writes land.
        An exception inside (a denial, a failure) undoes the scope's writes
        only.  ``durable=True`` commits the batch at the end of the scope
        even in batched mode (limit definitions are not worth losing).
        """
        return _WriteScope(self, durable)

    def _end_scope(self, conn: sqlite3.Connection, changes_before: int, durable: bool) -> None:
        """A batched scope's writes have joined the batch: commit it if it is due."""
        if conn.total_changes == changes_before:
            # Nothing written (a replay): nothing to lose, and no reason
            # to hold the write lock for an empty batch.
            if self._pending == 0:
                self._commit()
            return
        # Counted in events, so the bound on a crash's loss is in events.
        starts_batch = self._pending == 0
        self._pending += self._scope_events
        # The writer checks the deadline too: under load the flusher
        # thread may wait for the GIL longer than flush_ms.  A write that
        # recorded no event has nothing to batch with: it commits at once.
        if (
            durable
            or self._pending == 0
            or self._pending >= self.flush_events
            or time.monotonic() - self._first_pending >= self.flush_seconds
        ):
            self._commit()
        elif starts_batch:
            self._wake.notify()  # the flusher times this batch from now

    def flush(self) -> None:
        """Commit the open batch now (batched mode); a no-op otherwise.

        After a lost batch it is also how writing resumes: it commits a
        small write of the ledger's own and, once that lands, accepts
        calls again; else it raises what SQLite said and writes stay refused.
        """
        with self.lock:
            if not self._closed:
                self._ensure_usable()
                if self._failed is not None:
                    self._try_write()  # if it fails, the loss stays to be told
                    self._failed = None
                    untold, self._lost = self._lost, None
                    if untold is not None:
                        # The timer thread met the loss and no call has raised it:
                        # a flush() that returned would pass it for on disk.
                        raise LedgerError(
                            f"{untold} (this flush() committed: writes are accepted again)",
                            untold.reason,
                        )
                    return
                self._raise_lost()
                self._commit()

    def _refuse_after_loss(self) -> None:
        """Raise the lost batch's error again, until a flush() commits."""
        failed = self._failed
        if failed is not None:
            self._lost = None  # told now
            raise LedgerError(str(failed), failed.reason)

    def _try_write(self) -> None:
        """Commit a write that changes nothing, to learn whether the file takes writes again."""
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._transactions += 1
            conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise explained(exc, self.where, self.timeout) from exc

    def _begin_in_turn(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, saying this writer waits (see :mod:`.sqlite_turns`)."""
        said = self._turns is not None and self._turns.waiting()
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            if said:
                self._turns.done()  # type: ignore[union-attr]

    def _commit(self) -> None:
        conn = self.db.conn
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    raise explained(exc, self.where, self.timeout) from exc
                raise self._batch_lost(exc) from exc
            if self._turns is not None and self.durability == "batched":
                self._turns.let_in()  # before this writer can begin its next batch
        self._pending = 0

    def _batch_lost(self, exc: BaseException) -> LedgerError:
        """SQLite rolled the open batch back: an error that says so and how much was lost."""
        if isinstance(exc, LedgerError):
            cause = exc  # a write's own error, already explained
        elif isinstance(exc, sqlite3.Error):
            cause = explained(exc, self.where, self.timeout)
        else:
            cause = LedgerError(f"ledger {self.where}: {exc}")
        lost = LedgerError(
            f"{cause}; the open batch of {self._pending} events was lost, and every "
            "write is refused with this error until tracker.flush() commits again "
            "(free space or fix the file, then call flush())",
            cause.reason,
        )
        self._pending = 0
        self.lost_batches += 1
        self._failed = lost
        return lost

    @property
    def _lost(self) -> LedgerError | None:
        """The untold loss; shared with the finalizer, which says it if no call did."""
        return self._untold[0] if self._untold else None

    @_lost.setter
    def _lost(self, lost: LedgerError | None) -> None:
        self._untold[:] = [] if lost is None else [lost]

    def _write_through(self) -> None:
        """Commit the open batch, and every write after it, as the process ends.

        multiprocessing runs its exit hooks before it waits for the child's
        threads, so the ledger stays open for them (found in review: closing
        it there refused every later write); they write through, since no
        timer or exit is left to commit a batch.  A loss with no call left
        to raise it is said on stderr.
        """
        with self.lock:
            if self._closed or self._forked or self._released.is_set():
                return
            # Each scope commits at its end from here: a scope another thread
            # has begun stays batched, so durability itself is left alone (found
            # in review: switching it under such a scope left a batch open that
            # every later write then failed to begin inside).
            self.flush_events = 1
            untold, self._lost = self._lost, None
            try:
                if untold is not None:
                    raise untold
                self._commit()
            except LedgerError as exc:
                print(f"limitry_local: {exc} (as the process ended)", file=sys.stderr)

    def _raise_lost(self) -> None:
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise lost

    def _flush_due(self) -> float | None:
        """Commit a batch that has waited ``flush_ms``; else seconds until one is due."""
        if self._closed or self._forked or self._released.is_set():
            return None
        if self._pending == 0:
            return self.flush_seconds
        wait = self._first_pending + self.flush_seconds - time.monotonic()
        if wait > 0:
            return wait
        self._commit()
        return self.flush_seconds

    def _ensure_usable(self) -> None:
        if self._forked:
            raise LedgerError(
                f"ledger {self.where} was opened before this process forked; "
                "open a new Tracker in the child",
                "cannot_open",
            )
        # The finalizer runs at interpreter exit too, closing the connection.
        if self._closed or self._released.is_set():
            raise LedgerError(f"ledger {self.where} is closed", "cannot_open")

    def close(self) -> None:
        """Commit any open batch and release the file."""
        with self.lock:
            if self._closed:
                return
            untold = None
            try:
                if not self._forked:
                    self._commit()
                # Raised below, so not said again by the finalizer (which does
                # say it if the commit fails: then that error is raised instead).
                untold, self._lost = self._lost, None
            finally:
                self._closed = True
                self._wake.notify_all()
                _OPEN.discard(self)
                if self._forked:
                    self._finalizer.detach()
                else:
                    self._finalizer()
            if untold is not None:  # a batch the timer thread lost, and nobody was told of yet
                raise untold

    def definitions_version(self) -> int:
        """Bumped by every change of a limit definition, by any process on this file."""
        conn = self.db.conn
        # A batch holds the write lock from one call to the next: read once per batch.
        seen = self._version_seen
        if seen is not None and seen[0] == self._transactions and conn.in_transaction:
            return seen[1]
        row = conn.execute("SELECT value FROM meta WHERE key = 'definitions_version'").fetchone()
        version = definitions_version_of(row, self.where)
        if conn.in_transaction:
            self._version_seen = (self._transactions, version)
        return version

    # --- limit definitions ----------------------------------------------------

    def bump_definitions(self, conn: sqlite3.Connection) -> int:
        """Record a definition change (call inside :meth:`write`); returns the new version."""
        self._version_seen = None
        conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'definitions_version'"
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'definitions_version'").fetchone()
        return definitions_version_of(row, self.where)

    def record(
        self,
        conn: sqlite3.Connection,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None:
        """Write ``(event_row, increments, response_json)`` items (inside :meth:`write`); the
        response is stored under the event's idempotency key, if it has one."""
        for row, increments, response in events:
            check_priced(row)
            self._scope_events += 1
            conn.execute(_INSERT_EVENT, row)
            self._add(conn, increments)
            if row.idempotency_key is not None:
                conn.execute(_INSERT_IDEMPOTENCY, (row.idempotency_key, row.id, response))

    def scan_events(self) -> Iterator[EventRow]:
        """Every event, oldest first (for rebuilding a quota's counters).

        Read inside :meth:`transaction`, which turns a SQLite failure into
        :class:`LedgerError` (a decorator could not: this is a generator).
        """
        self._ensure_usable()
        cursor = self.db.conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY seq")
        for row in cursor:
            yield EventRow(*row)

    # --- what the SQL core asks of an engine ---------------------------------------

    def _reader(self) -> sqlite3.Connection:
        return self.db.conn

    def _writer(self, scope: object) -> sqlite3.Connection:
        assert isinstance(scope, sqlite3.Connection), "ledger writes take the write scope"
        return scope

    def _many(self, conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(sql, rows)

    def _add(self, conn: sqlite3.Connection, increments: Iterable[CounterIncrement]) -> None:
        try:
            conn.executemany(_ADD_TO_COUNTER, increments)
        except OverflowError:  # an amount beyond 64 bits, refused by the driver
            raise overflow(self.where) from None
        except sqlite3.IntegrityError as exc:
            if "NOT NULL" not in str(exc):
                raise
            raise overflow(self.where) from None

    def _sum_overflowed(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "integer overflow" in str(exc)

    def explained(self, exc: BaseException) -> LedgerError:
        assert isinstance(exc, sqlite3.Error)
        return explained(exc, self.where, self.timeout)


def _flusher(ref: weakref.ref[Ledger]) -> None:
    """The batched mode's timer: commits a batch ``flush_ms`` after its first write."""
    while True:
        ledger = ref()
        if ledger is None:
            return
        wake = ledger._wake
        with wake:
            try:
                wait = ledger._flush_due()
            except sqlite3.Error:
                wait = None  # the connection was closed under us (exit): nothing left to do
            except LedgerError as exc:
                if not ledger.db.conn.in_transaction:
                    # The batch is gone and no caller was there to hear it:
                    # the next call is told.
                    ledger._lost = exc
                wait = ledger.flush_seconds
            # No reference while waiting, so a dropped ledger can be collected
            # (its finalizer commits the batch and wakes us).
            del ledger
            if wait is None:
                return
            wake.wait(wait)


Ledger.__module__ = "limitry_local.ledger"  # where users import it from
