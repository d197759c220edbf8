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
2. the idempotency key it looks up, so one key is recorded once (and the
   documents it reads, :meth:`get_record`, even one not written yet);
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
(``_begin``, ``_run``, ``_open``, ``_close``, ``write``, ``_commit``, ``_abandon``,
``record`` and how it numbers events and alert firings), so a new write path
replaces it whole.

A write scope sends each step's statements as one message (one round trip);
``usage()``'s scope is optimistic and takes two: see "scopes" below, and docs/scaling.md.

psycopg is imported when a PostgresLedger is made, never by importing
limitry_local: ``pip install 'limitry_local[postgres]'`` brings it.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from limitry_local.breaker import CircuitBreaker, Refusal
from limitry_local.errors import LedgerError
from limitry_local.ledger.common import check_priced, definitions_version_of, merged_increments
from limitry_local.ledger.pg_connection import (
    Guard,
    checked_timeouts,
    close_connection,
    describe,
    explained,
    open_connection,
    psycopg_module,
    stale_session,
)
from limitry_local.ledger.pg_sql import (
    SCHEMA_VERSION,
    LockIds,
    Queries,
    dialect,
    lock_all,
    lock_key,
    migrate,
    schema_version,
)
from limitry_local.ledger.pg_wire import Batches, Statement
from limitry_local.ledger.protocol import CounterIncrement, Durability, EventRow
from limitry_local.ledger.sql import SqlLedger

if TYPE_CHECKING:
    from psycopg import Connection

_SCAN_PAGE = 2000
_RECORDED_KEPT = 1024


# Every open ledger, weakly: a child of fork gets fresh locks (a thread of the
# parent may have held one), and refuses to use the parent's connection.
_OPEN: weakref.WeakSet[PostgresLedger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for ledger in list(_OPEN):
        ledger.lock = threading.RLock()
        ledger._guard.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Scope:
    """What :meth:`PostgresLedger.write` yields; writes check they got the open one."""

    __slots__ = ()


class _WriteScope:
    """What :meth:`PostgresLedger.write` returns: holding the ledger's lock, it opens
    a scope (``_open``) or joins the open one, and ends it (``_close``).  Not a
    generator: two nested ``@contextmanager`` cost a usage() 24,000 instructions."""

    __slots__ = ("_exclusive", "_joined", "_ledger", "_optimistic", "_read_version")

    def __init__(self, ledger: PostgresLedger, *, exclusive: bool, **how: bool) -> None:
        self._ledger = ledger
        self._exclusive = exclusive
        self._optimistic = how.get("optimistic", False)
        self._read_version = how.get("read_version", True)

    def __enter__(self) -> _Scope:
        ledger = self._ledger
        ledger.lock.acquire()
        try:
            ledger._ensure_usable()
            self._joined = bool(ledger._depth)
            if self._joined:
                if self._exclusive and not ledger._exclusive:
                    raise RuntimeError("an exclusive write scope cannot join a shared one")
                ledger._depth += 1
            else:
                ledger._open(
                    read_version=self._read_version,
                    exclusive=self._exclusive,
                    optimistic=self._optimistic,
                )
        except BaseException:
            ledger.lock.release()
            raise
        return ledger._scope

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        ledger = self._ledger
        try:
            if self._joined:
                ledger._depth -= 1
            else:
                ledger._close(exc)
        finally:
            ledger.lock.release()


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
        operation_timeout = checked_timeouts(timeout, connect_timeout, operation_timeout)
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
        psycopg = psycopg_module()
        self.schema = schema
        self.where = describe(dsn, schema)
        self.timeout = timeout
        self.lock = threading.RLock()
        self._dsn = dsn
        self._errors: type[Exception] = psycopg.Error
        self.driver_errors = (psycopg.Error,)
        self._pid = os.getpid()
        self._closed = False
        self._depth = 0
        self._exclusive = False
        # Advisory locks this scope's transaction holds, and the writes queued (as
        # text, values written in) to go with the next statement or with COMMIT.
        self._held = LockIds(schema)
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
        self._batches = Batches(psycopg)
        self._prepared_on: Any = None
        self._stale_session = False
        self.lock_key = lock_key(schema)
        self._lock_timeout_ms = max(1, round(timeout * 1000))
        quoted = '"' + schema.replace('"', '""') + '"'
        self._q = Queries(quoted, self.lock_key)
        # The statements of every usage(), their values written in as stored.
        self._execute = {name: Statement(text) for name, text in self._q.run.items()}
        self._in_error = psycopg.pq.TransactionStatus.INERROR
        self._idle = psycopg.pq.TransactionStatus.IDLE
        self.dialect = dialect(quoted)
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
        """A new connection whose every wait answers to the guard (deadline, breaker)."""
        conn = open_connection(
            self._dsn, self._connect_seconds, self._guard, where=self.where, opening=opening
        )
        self._finalizer = weakref.finalize(self, close_connection, conn, os.getpid())
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
        # After a restart, a dropped connection or a stale session (the call that
        # met it failed), and for the breaker's probe: a new connection.
        stale, self._stale_session = self._stale_session, False
        if stale or self._guard.breaker.is_open or self._conn.closed or self._conn.broken:
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
                if schema_version(self._conn, self._q.schema, self.schema, self.where) == (
                    SCHEMA_VERSION
                ):
                    return
                # Under the writers' lock, deciding again there: several processes
                # may start on a new schema at once, and only one must create it.
                # One transaction, so a failure leaves nothing half made.
                with _WriteScope(self, exclusive=True, read_version=False):
                    migrate(self._conn, self._q.schema, self.schema, self.where)
            except self._errors as exc:
                raise self.explained(exc) from exc

    # --- scopes ---------------------------------------------------------------
    #
    # Every statement of a scope goes to the server as text with its values
    # written in as literals (pg_wire), several statements to one message:
    # PostgreSQL's simple query protocol runs them in order and answers them
    # together, one round trip for the lot.
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

    def _run(self, statements: Sequence[str]) -> list[list[Any]]:
        """Send ``statements`` in one message: one round trip.  The rows each answered."""
        return self._batches.run(self._conn, statements)

    def _begin(self, then: Sequence[str] = (), locks: Sequence[int] = ()) -> list[list[Any]]:
        """BEGIN, the definitions lock, the version, the checks of what this scope
        guessed, the counter ``locks``, then ``then``: one round trip.  The answers
        to ``then``.

        Raises the ``"conflict"`` LedgerError if a guess was wrong."""
        if self._read_version:  # not setting up: the tables exist
            self._ensure_prepared()
        statements = ["BEGIN ISOLATION LEVEL READ COMMITTED"]
        # The lock, then (a new snapshot under READ COMMITTED, so it sees the
        # last change's commit) the definitions version.
        if self._prepared_on is self._conn:
            statements.append(
                "EXECUTE limitry_exclusive" if self._exclusive else "EXECUTE limitry_shared"
            )
        else:  # setting up: nothing PREPAREd, and the session has no timeout yet
            take = "pg_advisory_xact_lock" if self._exclusive else "pg_advisory_xact_lock_shared"
            statements.append(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}")
            statements.append(f"SELECT {take}({self.lock_key})")
        version_at = len(statements)
        if self._read_version:
            if len(locks) == 1 and not self._guessed_keys and self._prepared_on is self._conn:
                # One statement fewer for the server: the counter's lock is the
                # next in the order, and the read after this one sees it held.
                statements.append(f"EXECUTE limitry_version_lock({int(locks[0])})")
                locks = ()
            else:
                statements.append(self._q.run["limitry_version"])
        # Each guessed key: its lock, then its row (the lookups' places noted).
        lookups: list[int] = []
        for key, key_locks in self._guessed_keys:
            if key_locks:
                statements.append(self._locks(key_locks))
            lookups.append(len(statements))
            statements.append(self._execute["limitry_idempotent"]([key]))
        if locks:
            statements.append(self._locks(locks))
        self._begun = True
        answers = self._run([*statements, *then])
        if self._read_version:
            rows = answers[version_at]
            row = rows[0][:1] if rows and rows[0][0] is not None else None
            self._scope_version = definitions_version_of(row, self.where)
            self._known_version = self._scope_version
        recorded = False
        for (key, _), at in zip(self._guessed_keys, lookups, strict=True):
            if answers[at]:
                recorded = True
                self._remember(key, self._stored_response(key, answers[at][0]))
        self._check_guesses(recorded)
        return answers[len(statements) :]

    def _ensure_prepared(self) -> None:
        """PREPARE every usage()'s statements on this connection, and set its lock
        timeout, once (:meth:`Batches.prepare <limitry_local.ledger.pg_wire.Batches.prepare>`)."""
        if self._prepared_on is not self._conn:
            self._batches.prepare(
                self._conn, self._q.prepared, f"SET lock_timeout = {self._lock_timeout_ms}"
            )
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

    def _open(self, *, read_version: bool, exclusive: bool, optimistic: bool) -> None:
        """Start a scope: BEGIN and the definitions lock, unless ``optimistic``
        (then they go out with its first statement, see above)."""
        self._exclusive = exclusive
        self._read_version = read_version
        self._begun = False
        self._optimistic = optimistic
        self._guessed_version = None
        self._guessed_keys = []
        try:
            if not optimistic:
                try:
                    self._begin()
                except self._errors as exc:
                    if not stale_session(exc):
                        raise
                    # Nothing of the caller's went out yet: a session that lost its
                    # PREPAREd statements (a pooler's reset) is replaced at once.
                    self._abandon()
                    self._stale_session = True
                    self._ensure_usable()
                    self._begin()
        except BaseException as exc:
            self._end_scope()
            self._abandon()
            if isinstance(exc, self._errors):
                raise self.explained(exc) from exc
            raise
        self._depth = 1

    def _close(self, exc: BaseException | None) -> None:
        """End a scope: COMMIT, or ROLLBACK if ``exc`` ended it (raising what it
        means for the caller: a stale guess, a driver error explained)."""
        self._depth = 0
        if exc is None:
            try:
                self._commit()
            finally:
                self._end_scope()
            return
        stale = self._stale_decision(exc)
        self._end_scope()
        self._abandon()
        if stale is not None:
            raise stale from exc
        if isinstance(exc, self._errors):
            raise self.explained(exc) from exc

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
        pending, self._pending = self._pending, []
        self._held.clear()
        if conn.pgconn.transaction_status == self._in_error:
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
                error = self.explained(exc)
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
            if not conn.closed and conn.pgconn.transaction_status != self._idle:
                conn.execute("ROLLBACK")
        except BaseException:
            self._finalizer()

    def write(
        self, *, durable: bool = False, exclusive: bool = False, optimistic: bool = False
    ) -> _WriteScope:
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
        return _WriteScope(self, exclusive=exclusive, optimistic=optimistic)

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
            conn.execute(f"SELECT pg_advisory_xact_lock({self.lock_key})")
            self._exclusive = True
        return conn

    def _locks(self, locks: Sequence[int]) -> str:
        """The statement taking ``locks`` (:func:`lock_all`), PREPAREd once set up."""
        return lock_all(locks, prepared=self._prepared_on is self._conn)

    def _send_pending(self) -> None:
        """Writes queued by :meth:`record`, sent before the scope's next statement."""
        pending, self._pending = self._pending, []
        self._run(pending)

    def _in_scope(self, statements: list[str], locks: Sequence[int] = ()) -> list[list[Any]]:
        """Take counter ``locks``, then run ``statements`` in the open scope (behind
        BEGIN if it has not gone out yet, after the writes queued): the rows each
        of ``statements`` answered."""
        if not self._begun and not self._pending:
            return self._begin(statements, locks)
        self._writer(self._scope)
        if not locks:
            return self._run(statements)
        return self._run([self._locks(locks), *statements])[1:]

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
        execute = self._execute
        insert_event, insert_key = execute["limitry_event"], execute["limitry_key"]
        events_sent: list[str] = []
        keys_sent: list[str] = []
        increments: list[CounterIncrement] = []
        for row, added_by_event, response in events:
            check_priced(row)
            events_sent.append(insert_event(row))
            increments.extend(added_by_event)
            if row.idempotency_key is not None:
                keys_sent.append(insert_key((row.idempotency_key, row.id, response)))
        if not events_sent:
            return
        added = merged_increments(increments)
        locks = self._held.counters(added)
        pending = self._pending
        if locks:
            pending.append(self._locks(locks))
        pending.extend(events_sent)
        add = execute["limitry_add"]
        pending.extend([add((q, k, s, n)) for (q, k, s), n in added.items()])
        pending.extend(keys_sent)

    def lock_counters(self, scope: object, counters: Sequence[tuple[str, str, int]]) -> list[int]:
        """Lock these counters (advisory locks, sorted) and read them: one round trip."""
        self._check_scope(scope)
        if not counters:
            return []
        read = self._execute["limitry_counter"]
        reads = [read(counter) for counter in counters]
        answers = self._in_scope(reads, self._held.counters(counters))
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
        locks = self._held.new([self._held.id(b"i", key)])
        if self._guessing():
            self._guessed_keys.append((key, locks))
            return None
        statements = [self._locks(locks)] if locks else []
        statements.append(self._execute["limitry_idempotent"]([key]))
        rows = self._in_scope(statements)[-1]
        return self._stored_response(key, rows[0] if rows else None)

    def get_record(self, scope: object | None, kind: str, record_id: str) -> str | None:
        locks = [] if scope is None else self._held.new([self._held.id(b"r", kind, record_id)])
        if locks:
            self._in_scope([self._locks(locks)])
        return super().get_record(scope, kind, record_id)

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
        added = merged_increments(increments)
        locks = self._held.counters(added)
        if added:
            statements = [self._locks(locks)] if locks else []
            add = self._execute["limitry_add"]
            statements.extend([add((q, k, s, n)) for (q, k, s), n in added.items()])
            self._run(statements)

    def explained(self, exc: BaseException) -> LedgerError:
        self._stale_session |= stale_session(exc)  # the next call starts a new one
        return explained(exc, self.where, self.timeout)


PostgresLedger.__module__ = "limitry_local.postgres_ledger"  # where users import it from
