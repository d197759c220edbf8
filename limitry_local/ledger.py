"""The SQLite ledger: schema, events, quota counters, limit definitions, idempotency keys.

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

import functools
import json
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, ParamSpec, Protocol, TypeVar, get_args

import sqlite_utils

from limitry_local.errors import LimitryError

SCHEMA_VERSION = 5
"""1: the first release.  2: ``meta.definitions_version``, so processes sharing
a file see each other's limit changes.  3: ``holds``, the quota amounts that
open reservations hold, so any process can release an expired one.
4: ``quotas.timezone``, the IANA zone of a quota's calendar periods,
``events.cached_input_tokens``, ``rate_limits.generation`` and both
definition tables' ``overrides`` and ``mode``.  5: ``quota_alerts`` and
``alert_log``, quota alerts and the history of their firings."""

Durability = Literal["normal", "full", "batched"]
DURABILITIES: tuple[str, ...] = get_args(Durability)


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
    cached_input_tokens: int | None = None


EVENT_COLUMNS = EventRow._fields


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
_LOG_ALERT = (
    f"INSERT INTO alert_log ({', '.join(ALERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in ALERT_COLUMNS)}) "
    "ON CONFLICT (alert_id, key, period_start) DO NOTHING"
)

CounterIncrement = tuple[str, str, int, int]
"""``(quota_id, key_json, period_start, amount)``."""

P = ParamSpec("P")
R = TypeVar("R")


LedgerErrorReason = Literal[
    "locked",
    "read_only",
    "not_a_database",
    "corrupt",
    "cannot_open",
    "disk_full",
    "not_a_ledger",
    "schema_version",
    "io",
]


class LedgerError(LimitryError):
    """The ledger file cannot be opened or used: the message names the file, the cause
    and what to do.  ``.reason`` names the cause for code that reacts to it:
    ``"locked"``, ``"read_only"``, ``"not_a_database"``, ``"corrupt"``,
    ``"cannot_open"``, ``"disk_full"``, ``"not_a_ledger"``, ``"schema_version"``
    or ``"io"``.
    """

    def __init__(self, message: str, reason: LedgerErrorReason = "io") -> None:
        super().__init__(message)
        self.reason: LedgerErrorReason = reason


def _explained(exc: sqlite3.Error, where: str, timeout: float) -> LedgerError:
    """A :class:`LedgerError` that says what went wrong in words a user can act on."""
    # sqlite_errorname exists from Python 3.11; the message text is the fallback.
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return LedgerError(
            f"ledger {where} is locked by another connection and stayed locked for "
            f"{timeout:g}s; wait for the other writer, or give Tracker(timeout=...) more time",
            "locked",
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return LedgerError(
            f"ledger {where} is read-only ({text}); the file and its directory must be "
            "writable, since SQLite keeps -wal and -shm files beside it",
            "read_only",
        )
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return LedgerError(
            f"{where} is not a SQLite database (or its header is damaged); "
            "give Tracker a new file, or restore this one from a backup",
            "not_a_database",
        )
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return LedgerError(
            f"ledger {where} is corrupt ({text}); restore it from a backup", "corrupt"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return LedgerError(
            f"cannot open ledger {where} ({text}); its directory must exist and be writable",
            "cannot_open",
        )
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return LedgerError(f"ledger {where}: the disk is full ({text})", "disk_full")
    return LedgerError(f"ledger {where}: {text}", "io")


def _check_wal_files(path: Path) -> None:
    """Refuse a ledger whose ``-wal`` or ``-shm`` file SQLite could not write.

    WAL mode maps ``-shm`` into memory, and a ``-shm`` that could not be
    written was seen to end the interpreter with SIGBUS inside ``PRAGMA
    journal_mode = WAL`` (issue 20); at best the Tracker opened and failed
    at its first write.
    ``os.access`` is asked, not a trial open: it sees an immutable file
    (``chattr +i``) and a read-only mount even for root, and opening and
    closing the file here would drop the locks SQLite holds on it for
    another connection of this process.  A file that appears or changes
    after this look is SQLite's to report.
    """
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if not os.path.lexists(side):
            continue
        if not side.is_file():
            raise LedgerError(
                f"cannot open ledger {path}: {side} is not a regular file; remove it "
                "(SQLite keeps its -wal and -shm files beside the ledger)",
                "cannot_open",
            )
        if not os.access(side, os.W_OK):
            raise LedgerError(
                f"ledger {path} is read-only: {side} cannot be written; the ledger, its "
                "-wal and -shm files and its directory must be writable (permissions, "
                "chattr +i, a read-only mount)",
                "read_only",
            )


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Run under the ledger's lock; raise :class:`LedgerError` for any SQLite failure."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ledger = args[0]
        assert isinstance(ledger, Ledger)
        with ledger.lock:
            ledger._ensure_usable()
            try:
                return method(*args, **kwargs)
            except sqlite3.Error as exc:
                raise _explained(exc, ledger.where, ledger.timeout) from exc

    return wrapper


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
    conn: sqlite3.Connection, wake: threading.Condition, released: threading.Event
) -> None:
    """Commit what is pending and close: at close(), when a ledger is collected, or at exit.

    A weakref.finalize callback, so it holds the connection, never the Ledger.
    """
    with wake:
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error:
            pass  # nowhere to report it; the next open sees the last good commit
        finally:
            conn.close()
            released.set()
            wake.notify_all()  # the flusher, if any, has nothing left to do


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
    quota admission exact.  :class:`Ledger` (SQLite) and
    :class:`~limitry_local.memory_ledger.MemoryLedger` implement it.
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

    def write(self, *, durable: bool = False) -> AbstractContextManager[Any]: ...
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
    def idempotent(self, key: str) -> tuple[str, str] | None: ...
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
                    conn.execute("BEGIN IMMEDIATE")
                    ledger._transactions += 1
                else:
                    if not conn.in_transaction:
                        conn.execute("BEGIN IMMEDIATE")
                        ledger._transactions += 1
                        ledger._first_pending = time.monotonic()
                        ledger._pending = 0
                    conn.execute("SAVEPOINT scope")
                    self._changes_before = conn.total_changes
            except sqlite3.Error as exc:
                raise _explained(exc, ledger.where, ledger.timeout) from exc
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
                raise _explained(exc, ledger.where, ledger.timeout) from exc
            return
        if conn.in_transaction:
            conn.execute("ROLLBACK TO scope")
            conn.execute("RELEASE scope")
            ledger._version_seen = None  # the scope may have bumped it
            if ledger._pending == 0:
                ledger._commit()  # a denial alone must not hold the write lock
            if isinstance(exc, sqlite3.Error):
                raise _explained(exc, ledger.where, ledger.timeout) from exc
            return
        # SQLite rolled the whole batch back (an I/O error): say so.
        raise ledger._batch_lost(exc) from exc


class Ledger:
    """One SQLite database, in memory (``path=None``) or in a file that survives restarts.

    ``durability`` applies to a file (an in-memory ledger has nothing to
    lose to a crash and always commits at once).  ``timeout`` is how long a
    write waits for another connection's lock before failing with a
    ``"locked"`` :class:`LedgerError`.
    """

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
        self._lost: LedgerError | None = None
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
            _check_wal_files(self.path)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so
            # a counter increment can never be committed apart from its event.
            conn = sqlite3.connect(self.where, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _explained(exc, self.where, timeout) from exc
        try:
            self.db = sqlite_utils.Database(conn)
            self._set_up(conn, durability, timeout)
        except sqlite3.Error as exc:
            conn.close()
            raise _explained(exc, self.where, timeout) from exc
        except LedgerError:
            conn.close()
            raise
        # Commits an open batch if the ledger is dropped unclosed, or at exit.
        self._finalizer = weakref.finalize(self, _release, conn, self._wake, self._released)
        _OPEN.add(self)
        if self.durability == "batched":
            threading.Thread(
                target=_flusher, args=(weakref.ref(self),), name="limitry-flush", daemon=True
            ).start()

    def _set_up(self, conn: sqlite3.Connection, durability: Durability, timeout: float) -> None:
        """Pragmas and schema, retried while another process is setting up the same file.

        Processes opening a new file at once can meet SQLITE_BUSY without the
        busy handler being called (switching to WAL needs an exclusive lock;
        SQLite returns at once where waiting could deadlock), so the open
        retries until ``timeout`` runs out.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.path is not None:
                    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                    conn.execute("PRAGMA journal_mode = WAL")
                    sync = "FULL" if durability == "full" else "NORMAL"
                    conn.execute(f"PRAGMA synchronous = {sync}")
                self._open_schema()
                return
            except (sqlite3.OperationalError, LedgerError) as exc:
                locked = (
                    exc.reason == "locked"
                    if isinstance(exc, LedgerError)
                    else _explained(exc, self.where, timeout).reason == "locked"
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
                _create_schema(self.db)
            elif version < SCHEMA_VERSION:
                for step in range(version, SCHEMA_VERSION):
                    _MIGRATIONS[step](self.db)
                self.db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    [str(SCHEMA_VERSION)],
                )

    def _schema_version(self) -> int | None:
        """The file's schema version; None for an empty file.  Refuses what is not ours."""
        db = self.db
        if not db.table("meta").exists():
            if db.table_names():
                # Someone else's database: adding our tables to it would be a surprise.
                raise LedgerError(
                    f"{self.where} is a SQLite database but not a limitry_local ledger; "
                    "give Tracker a new file",
                    "not_a_ledger",
                )
            return None
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = row[0] if row else None
        version = int(found) if found is not None and str(found).isdigit() else None
        if version is None or version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.where} has schema version {found}; this limitry_local "
                f"reads versions up to {SCHEMA_VERSION}: upgrade limitry_local to open it",
                "schema_version",
            )
        return version

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
                raise _explained(exc, self.where, self.timeout) from exc
            self._transactions += 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (disk full, I/O error).
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _explained(exc, self.where, self.timeout) from exc
                raise

    def write(self, *, durable: bool = False) -> _WriteScope:
        """A write scope: what it writes commits (or, batched, joins the batch) or not at all.

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
                    self._lost = None  # the caller is asking about the loss: told
                    self._try_write()
                    self._failed = None
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
            raise _explained(exc, self.where, self.timeout) from exc

    def _commit(self) -> None:
        conn = self.db.conn
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    raise _explained(exc, self.where, self.timeout) from exc
                raise self._batch_lost(exc) from exc
        self._pending = 0

    def _batch_lost(self, exc: BaseException) -> LedgerError:
        """SQLite rolled the open batch back: an error that says so and how much was lost."""
        cause = (
            _explained(exc, self.where, self.timeout)
            if isinstance(exc, sqlite3.Error)
            else LedgerError(f"ledger {self.where}: {exc}")
        )
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
            try:
                if not self._forked:
                    self._commit()
            finally:
                self._closed = True
                self._wake.notify_all()
                _OPEN.discard(self)
                if self._forked:
                    self._finalizer.detach()
                else:
                    self._finalizer()
            # A batch the timer thread lost, and nobody was told of yet.
            self._raise_lost()

    @_translated
    def definitions_version(self) -> int:
        """Bumped by every change of a limit definition, by any process on this file."""
        conn = self.db.conn
        # A batch holds the write lock from one call to the next: read once per batch.
        seen = self._version_seen
        if seen is not None and seen[0] == self._transactions and conn.in_transaction:
            return seen[1]
        row = conn.execute("SELECT value FROM meta WHERE key = 'definitions_version'").fetchone()
        if row is None or not str(row[0]).isdigit():
            raise LedgerError(
                f"ledger {self.where} is corrupt (meta.definitions_version is {row!r}); "
                "restore it from a backup",
                "corrupt",
            )
        version = int(row[0])
        if conn.in_transaction:
            self._version_seen = (self._transactions, version)
        return version

    def bump_definitions(self, conn: sqlite3.Connection) -> int:
        """Record a definition change (call inside :meth:`write`); returns the new version."""
        self._version_seen = None
        conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'definitions_version'"
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'definitions_version'").fetchone()
        return int(row[0])

    # --- limit definitions ----------------------------------------------------

    @_translated
    def definitions(self, table: str) -> list[dict[str, Any]]:
        """Every quota or rate limit in creation order, JSON columns decoded."""
        rows = self.db.query(f"SELECT * FROM {table} ORDER BY seq")
        try:
            return [_decode_definition(row) for row in rows]
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise LedgerError(
                f"ledger {self.where} is corrupt: a stored definition in {table} cannot be "
                f"read ({exc}); restore it from a backup",
                "corrupt",
            ) from None

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
            self._forget_held(conn, limit_id)

    def replace_counters(
        self, conn: sqlite3.Connection, quota_id: str, totals: Iterable[tuple[str, int, int]]
    ) -> None:
        """Counters of a quota rebuilt from the events: open holds on it are forgotten."""
        conn.execute("DELETE FROM quota_counters WHERE quota_id = ?", [quota_id])
        self._forget_held(conn, quota_id)
        conn.executemany(
            "INSERT INTO quota_counters (quota_id, key, period_start, used) VALUES (?, ?, ?, ?)",
            ((quota_id, key, start, used) for key, start, used in totals),
        )

    # --- the hot path -------------------------------------------------------

    @_translated
    def counter(self, quota_id: str, key: str, period_start: int) -> int:
        row = self.db.conn.execute(_GET_COUNTER, (quota_id, key, period_start)).fetchone()
        return 0 if row is None else row[0]

    def _forget_held(self, conn: sqlite3.Connection, quota_id: str) -> None:
        # The counters no longer include what holds added to this quota, so
        # releasing a hold must not take it off again.
        for hold_id, text in conn.execute("SELECT id, increments FROM holds").fetchall():
            increments = _decode_increments(text)
            kept = [i for i in increments if i[0] != quota_id]
            if len(kept) != len(increments):
                conn.execute(
                    "UPDATE holds SET increments = ? WHERE id = ?", (json.dumps(kept), hold_id)
                )

    def add_to_counters(
        self, conn: sqlite3.Connection, increments: Iterable[CounterIncrement]
    ) -> None:
        """Add (or, negative, take back) amounts on counters (inside :meth:`write`)."""
        conn.executemany(_ADD_TO_COUNTER, increments)

    def add_hold(
        self,
        conn: sqlite3.Connection,
        hold_id: str,
        increments: list[CounterIncrement],
        expires_at: float,
    ) -> None:
        conn.executemany(_ADD_TO_COUNTER, increments)
        conn.execute(
            "INSERT INTO holds (id, increments, expires_at) VALUES (?, ?, ?)",
            (hold_id, json.dumps(increments), expires_at),
        )

    def pop_hold(self, conn: sqlite3.Connection, hold_id: str) -> list[CounterIncrement] | None:
        row = conn.execute("SELECT increments FROM holds WHERE id = ?", (hold_id,)).fetchone()
        if row is None:
            return None
        increments = _decode_increments(row[0])
        conn.execute("DELETE FROM holds WHERE id = ?", (hold_id,))
        conn.executemany(_ADD_TO_COUNTER, [(q, k, s, -amount) for q, k, s, amount in increments])
        return increments

    def pop_expired_holds(self, conn: sqlite3.Connection, now: float) -> list[str]:
        rows = conn.execute("SELECT id FROM holds WHERE expires_at <= ?", (now,)).fetchall()
        for (hold_id,) in rows:
            self.pop_hold(conn, hold_id)
        return [hold_id for (hold_id,) in rows]

    @_translated
    def idempotent(self, key: str) -> tuple[str, str] | None:
        """``(event_id, stored response JSON)`` of the event recorded with this key, if any."""
        row = self.db.conn.execute(
            "SELECT event_id, response FROM idempotency_keys WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def record(
        self,
        conn: sqlite3.Connection,
        events: Iterable[tuple[EventRow, Iterable[CounterIncrement], str | None]],
    ) -> None:
        """Write events, their counter increments and idempotency responses (inside :meth:`write`).

        Each item is ``(event_row, increments, response_json)``; the response
        is stored under the event's idempotency key, if it has one.
        """
        for row, increments, response in events:
            self._scope_events += 1
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
        self._ensure_usable()
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
        rows = self._newest_first("events", EVENT_COLUMNS, where, params, limit)
        return [(row[0], EventRow(*row[1:])) for row in rows]

    @_translated
    def event_seq(self, event_id: str) -> int | None:
        return self._seq_of("events", event_id)

    def _newest_first(
        self, table: str, columns: Sequence[str], where: list[str], params: list[Any], limit: int
    ) -> list[Any]:
        """``(seq, *columns)`` of a paged table's matching rows, most recent first."""
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self.db.conn.execute(
            f"SELECT seq, {', '.join(columns)} FROM {table} {clause} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        ).fetchall()

    def _seq_of(self, table: str, row_id: str) -> int | None:
        """The seq of a paged table's row (a page cursor), None if it is gone."""
        row = self.db.conn.execute(f"SELECT seq FROM {table} WHERE id = ?", (row_id,)).fetchone()
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

    # --- quota alerts -----------------------------------------------------------

    @_translated
    def held(self, quota_id: str, key: str, period_start: int) -> int:
        # Open reservations only, and the quota id narrows them down before decoding.
        cursor = self.db.conn.execute(
            "SELECT increments FROM holds WHERE instr(increments, ?) > 0", (quota_id,)
        )
        return _held_in((text for (text,) in cursor), quota_id, key, period_start)

    def log_alert(self, conn: sqlite3.Connection, row: AlertRow) -> bool:
        """Add a firing (inside :meth:`write`); False if this alert, key and period fired before.

        The unique index decides, under the write lock: two processes that
        both see usage cross a threshold log it once.
        """
        return conn.execute(_LOG_ALERT, row).rowcount == 1

    @_translated
    def alert_log(
        self,
        *,
        quota_id: str | None,
        alert_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[tuple[int, AlertRow]]:
        where, params = _alert_filters(quota_id, alert_id, before_seq, "?")
        rows = self._newest_first("alert_log", ALERT_COLUMNS, where, params, limit)
        return [(row[0], AlertRow(*row[1:])) for row in rows]

    @_translated
    def alert_log_seq(self, entry_id: str) -> int | None:
        return self._seq_of("alert_log", entry_id)

    @_translated
    def last_triggered(self, alert_ids: Iterable[str]) -> dict[str, float]:
        # One indexed max() per alert: a history of millions of firings is not scanned.
        last: dict[str, float] = {}
        for alert_id in alert_ids:
            (when,) = self.db.conn.execute(
                "SELECT max(triggered_at) FROM alert_log WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            if when is not None:
                last[alert_id] = float(when)
        return last

    # --- usage reports ---

    @_translated
    def usage_breakdown(
        self, column: str, where: ReportFilter
    ) -> list[tuple[str | None, UsageTotals]]:
        return self._report(report_column(column), [], where)

    @_translated
    def usage_timeseries(
        self, seconds: int, origin: int, where: ReportFilter
    ) -> list[tuple[int, UsageTotals]]:
        # ts >= 0 (events are 1970 or later), so CAST truncates to the floor and % is
        # never negative: the period start, as periods.period_bounds computes it.
        start = "CAST(ts AS INTEGER) - (CAST(ts AS INTEGER) - ?) % ?"
        return self._report(start, [origin, seconds], where)

    def _report(
        self, key: str, key_params: list[Any], where: ReportFilter
    ) -> list[tuple[Any, UsageTotals]]:
        """``SELECT key, totals ... GROUP BY key`` over the events ``where`` picks."""
        conditions, params = _event_filters(
            where.customer_id, where.event_type, where.model, where.start, where.end
        )
        if where.provider is not None:
            conditions.append("provider = ?")
            params.append(where.provider)
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        conn = self.db.conn
        try:
            rows = conn.execute(
                f"SELECT {key}, count(*), {_SUMS} FROM events {clause} GROUP BY 1",
                [*key_params, *params],
            ).fetchall()
            return [(row[0], UsageTotals(*(int(v or 0) for v in row[1:]))) for row in rows]
        except sqlite3.OperationalError as exc:
            if "integer overflow" not in str(exc):
                raise
        # sum() refuses to pass 2**63 (thousands of maximal costs in micro-cents).
        # Summing the high and low 32 bits apart stays exact up to 2**31 events.
        rows = conn.execute(
            f"SELECT {key}, count(*), {_SPLIT_SUMS} FROM events {clause} GROUP BY 1",
            [*key_params, *params],
        ).fetchall()
        return [(row[0], _joined(row[1:])) for row in rows]


def _create_schema(db: sqlite_utils.Database) -> None:
    """The current schema, for a new ledger (an old one is migrated instead)."""
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('definitions_version', '0')",
        [str(SCHEMA_VERSION)],
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
            "cached_input_tokens": int,
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
    db.table("idempotency_keys").create({"key": str, "event_id": str, "response": str}, pk="key")
    _create_holds(db)
    _create_alert_tables(db)
    for table, extra in (
        ("quotas", {"period": str, "timezone": str, "overrides": str, "mode": str}),
        (
            "rate_limits",
            {"window": str, "enabled": int, "generation": str, "overrides": str, "mode": str},
        ),
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


def _v1_to_v2(db: sqlite_utils.Database) -> None:
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('definitions_version', '0')")


def _create_holds(db: sqlite_utils.Database) -> None:
    # increments: JSON [[quota_id, key, period_start, amount], ...], already on the counters.
    db.table("holds").create({"id": str, "increments": str, "expires_at": float}, pk="id")
    db.table("holds").create_index(["expires_at"])


def _v2_to_v3(db: sqlite_utils.Database) -> None:
    _create_holds(db)


def _v3_to_v4(db: sqlite_utils.Database) -> None:
    # NULL reads as UTC, every quota's zone before version 4.
    db.execute("ALTER TABLE quotas ADD COLUMN timezone TEXT")
    db.execute("ALTER TABLE events ADD COLUMN cached_input_tokens INTEGER")
    # NULL: the limit's shape names its buckets until it is next reshaped.
    db.execute("ALTER TABLE rate_limits ADD COLUMN generation TEXT")
    for table in ("quotas", "rate_limits"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN overrides TEXT")  # NULL: none
        db.execute(f"ALTER TABLE {table} ADD COLUMN mode TEXT")  # NULL: enforce


def _create_alert_tables(db: sqlite_utils.Database) -> None:
    db.table("quota_alerts").create(
        {"seq": int, "id": str, "quota_id": str, "threshold": int, "created_at": str},
        pk="seq",
    )
    db.table("quota_alerts").create_index(["id"], unique=True)
    db.table("alert_log").create(
        {
            "seq": int,
            "id": str,
            "alert_id": str,
            "quota_id": str,
            "key": str,
            "period_start": int,
            "period_end": int,
            "threshold": int,
            "used": int,
            "limit_units": int,
            "quota_name": str,
            "metric": str,
            "period": str,
            "dimensions": str,
            "event_id": str,
            "triggered_at": float,
        },
        pk="seq",
        not_null={"id", "alert_id", "quota_id", "key", "period_start", "triggered_at"},
    )
    db.table("alert_log").create_index(["id"], unique=True)
    # Once per alert, key and period: the database, not the tracker, keeps it so.
    db.table("alert_log").create_index(["alert_id", "key", "period_start"], unique=True)
    # The history's pages, by quota and by alert; an alert's last firing.
    db.table("alert_log").create_index(["quota_id", "seq"])
    db.table("alert_log").create_index(["alert_id", "seq"])
    db.table("alert_log").create_index(["alert_id", "triggered_at"])


def _v4_to_v5(db: sqlite_utils.Database) -> None:
    _create_alert_tables(db)


# _MIGRATIONS[n] takes a ledger from schema version n to n + 1.
_MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
}


def _decode_increments(text: str) -> list[CounterIncrement]:
    return [(str(q), str(k), int(s), int(a)) for q, k, s, a in json.loads(text)]


def _held_in(holds: Iterable[str], quota_id: str, key: str, period_start: int) -> int:
    """The sum the holds' increments (JSON, as stored) add to one counter."""
    return sum(
        amount
        for text in holds
        for q, k, s, amount in _decode_increments(text)
        if q == quota_id and k == key and s == period_start
    )


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


def _alert_filters(
    quota_id: str | None, alert_id: str | None, before_seq: int | None, mark: str
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for condition, value in (
        (f"quota_id = {mark}", quota_id),
        (f"alert_id = {mark}", alert_id),
        (f"seq < {mark}", before_seq),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    return where, params


def _decode_definition(row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    decoded.pop("seq", None)
    for key in ("dimension_filters", "per"):
        if key in decoded:
            decoded[key] = (
                json.loads(decoded[key])
                if decoded[key]
                else ({} if key == "dimension_filters" else [])
            )
    if "enabled" in decoded:
        decoded["enabled"] = bool(decoded["enabled"])
    # Columns a migration added read as absent when empty: a quota from before
    # zones is UTC, a rate limit from before stored generations has none.
    for added in ("timezone", "generation", "overrides", "mode"):
        if added in decoded and decoded[added] is None:
            del decoded[added]
    if "overrides" in decoded:
        decoded["overrides"] = json.loads(decoded["overrides"])
    return decoded


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


# The amounts of a report, each summed per event in whole units.  Cents are
# micro-cents rounded per event by round(), half away from zero, as totals() and
# the other ledgers round them, so every ledger gives the same integers.
_AMOUNTS = (
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "CAST(round(cost_cents * 1000000) AS INTEGER)",
)
_SUMS = ", ".join(f"sum({amount})" for amount in _AMOUNTS)
_SPLIT_SUMS = ", ".join(
    f"sum(({amount}) >> 32), sum(({amount}) & 4294967295)" for amount in _AMOUNTS
)


def _joined(row: Iterable[Any]) -> UsageTotals:
    """Totals from ``count, high1, low1, high2, low2, ...`` of :data:`_SPLIT_SUMS`."""
    count, *halves = (int(value or 0) for value in row)
    pairs = zip(halves[::2], halves[1::2], strict=True)
    return UsageTotals(count, *((high << 32) + low for high, low in pairs))
