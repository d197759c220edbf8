"""The PostgreSQL ledger's connection, guarded: no wait on the server outlasts a
deadline, and a server known to be down is not waited on at all.

psycopg 3's sync connection waits on its socket for as long as the server
takes.  A paused server (SIGSTOP, a stalled VM, a partition that drops
packets) never answers while its kernel keeps the TCP connection up, so the
wait lasts until it resumes: ``statement_timeout`` cannot end it (the
server is frozen, not slow), nor can TCP keepalives or ``tcp_user_timeout``
(the kernel still acknowledges them).

So the client bounds each wait itself.  Every round trip of a sync
connection goes through ``Connection.wait`` (execute, pipelines, COMMIT);
:class:`Guard` wraps it: a :class:`Watchdog` thread is armed with the
wait's deadline, and at the deadline shuts the socket down, which wakes the
wait with an end of file; the wait then raises :class:`OperationTimedOut`
and the connection is lost (the ledger's next call reconnects).  Shut down,
not closed: the descriptor stays libpq's, so its number cannot be reused by
another file while libpq still holds it.

The same wrapper tells the circuit breaker (:mod:`limitry_local.breaker`)
whether each wait reached the server: an answer (even an error) did, a
lost connection or a deadline did not.

What a psycopg failure means, in words a user can act on
(:func:`explained`), is here too: the reasons follow from the connection.

psycopg is imported when the first guarded connection class is made, never
by importing this module.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from limitry_local.breaker import CircuitBreaker, Refusal
from limitry_local.errors import LedgerError
from limitry_local.ledger.common import overflow

if TYPE_CHECKING:
    from psycopg import Connection

Unreachable = Literal["connection", "timeout"]


class Watchdog:
    """Shuts a socket down when the wait armed on it outlasts ``seconds``.

    One daemon thread, started at the first :meth:`arm`.  Arming and
    disarming only set a field under a lock: the thread sleeps until the
    armed deadline and, if a later wait was armed meanwhile, sleeps again
    until that one's, so a busy connection wakes it about once per
    ``seconds`` and an idle one not at all.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reset()

    def _reset(self) -> None:
        # arm and disarm (twice a round trip) take the plain lock: a Condition's
        # own enter and exit are Python calls.  notify still holds it, as it must.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._armed: tuple[int, float, int] | None = None  # token, deadline, descriptor
        self._token = 0
        self._fired = 0
        self._parked = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def arm(self, fd: int) -> int:
        """Start the clock on a wait on ``fd``; returns the token :meth:`disarm` takes."""
        with self._lock:
            self._token += 1
            self._armed = (self._token, time.monotonic() + self.seconds, fd)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="limitry-postgres-watchdog", daemon=True
                )
                self._thread.start()
            elif self._parked:
                self._cond.notify()
            return self._token

    def disarm(self, token: int) -> bool:
        """The wait ended; True if the deadline passed first and the socket was shut down."""
        with self._lock:
            self._armed = None
            return self._fired == token

    def stop(self) -> None:
        """End the thread (the ledger is closed or collected)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def after_fork_in_child(self) -> None:
        """The parent's thread is not in the child, and may have held the lock at the fork."""
        self._reset()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                armed = self._armed
                if armed is None:
                    self._parked = True
                    self._cond.wait()
                    self._parked = False
                    continue
                token, deadline, fd = armed
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                # Under the lock, so the wait cannot have ended and its
                # descriptor been closed in between.
                self._fired = token
                self._armed = None
                _shut_down(fd)


def _shut_down(fd: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()  # the descriptor is libpq's to close


class Guard:
    """One ledger's deadline (``operation_timeout``, or None for none) and circuit breaker."""

    def __init__(self, seconds: float | None, breaker: CircuitBreaker) -> None:
        self.seconds = seconds
        self.watchdog = Watchdog(seconds) if seconds is not None else None
        self.breaker = breaker
        self.reason: Unreachable = "connection"
        self.last_failure = ""

    def reached(self) -> None:
        self.breaker.succeeded()

    def failed(self, reason: Unreachable, text: str) -> None:
        self.reason = reason
        self.last_failure = text
        self.breaker.failed(time.monotonic())

    def admit(self) -> Refusal | None:
        if not self.breaker.is_open:
            return None  # the usual case, without the breaker's lock and the clock
        return self.breaker.admit(time.monotonic())

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()

    def after_fork_in_child(self) -> None:
        if self.watchdog is not None:
            self.watchdog.after_fork_in_child()


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@functools.cache
def timed_out_class() -> type[Exception]:
    """:class:`OperationTimedOut`: a psycopg ``OperationalError``, so every
    ``except psycopg.Error`` of the ledger catches it."""
    psycopg: Any = importlib.import_module("psycopg")

    class OperationTimedOut(psycopg.OperationalError):  # type: ignore[misc]
        """The server did not answer one round trip within the deadline."""

        def __init__(self, seconds: float) -> None:
            super().__init__(f"the server did not answer within {seconds:g}s")
            self.seconds = seconds

    return OperationTimedOut


def timed_out(exc: BaseException) -> float | None:
    """The deadline that ``exc`` (or an error it was raised from) reports passing, if any.

    psycopg may raise its own error while cleaning up after the one the
    wait raised (a pipeline that cannot sync), so the whole chain is read.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, timed_out_class()):
            seconds: float = seen.seconds  # type: ignore[attr-defined]
            return seconds
        seen = seen.__cause__ or seen.__context__
    return None


@functools.cache
def connection_class() -> type[Any]:
    """``psycopg.Connection`` whose every wait answers to its :class:`Guard`."""
    psycopg: Any = importlib.import_module("psycopg")
    bad = psycopg.pq.ConnStatus.BAD
    timed_out_error = timed_out_class()

    class GuardedConnection(psycopg.Connection):  # type: ignore[misc]
        guard: Guard | None = None

        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            guard = self.guard
            watchdog = guard.watchdog if guard is not None else None
            try:
                fd = self.pgconn.socket
            except psycopg.Error:
                fd = -1  # lost already: psycopg raises that without waiting
            if guard is None or fd < 0:
                return super().wait(gen, *args, **kwargs)
            token = watchdog.arm(fd) if watchdog is not None else 0
            try:
                answer = super().wait(gen, *args, **kwargs)
            except psycopg.Error as exc:
                if watchdog is not None and watchdog.disarm(token):
                    guard.failed("timeout", f"no answer within {watchdog.seconds:g}s")
                    raise timed_out_error(watchdog.seconds) from exc
                if self.pgconn.status == bad:
                    guard.failed("connection", first_line(exc))
                else:
                    guard.reached()  # the server answered, with an error
                raise
            except BaseException:
                if watchdog is not None:
                    watchdog.disarm(token)
                raise
            if watchdog is not None:
                # If the deadline passed just as the answer came, the answer
                # stands; the socket is shut down, and the next call reconnects.
                watchdog.disarm(token)
            guard.reached()
            return answer

    return GuardedConnection


# --- what a failure means ---------------------------------------------------------


def psycopg_module() -> Any:
    """The psycopg module, or an ImportError that says how to get it."""
    try:
        return importlib.import_module("psycopg")
    except ImportError as exc:
        raise ImportError(
            "PostgresLedger needs psycopg 3: pip install 'limitry_local[postgres]'"
        ) from exc


# A COMMIT whose answer never came may have been kept: nothing in the client can tell.
_IN_DOUBT = (
    "If this call was committing, its writes may have been kept: send it again with "
    "the same idempotency key and it is recorded once"
)


def stale_session(exc: BaseException) -> bool:
    """Whether ``exc`` says the session's PREPAREd statements are gone or outdated.

    Gone: a pooler's reset (``DISCARD ALL``) or a ``DEALLOCATE``.  Outdated:
    another process changed a column's type under a prepared plan.  Either way
    a new session prepares them again."""
    state = getattr(exc, "sqlstate", None) or ""
    return state == "26000" or (state == "0A000" and "cached plan" in first_line(exc))


def explained(exc: BaseException, where: str, timeout: float) -> LedgerError:
    """A :class:`LedgerError` for a psycopg failure, in words a user can act on."""
    state = getattr(exc, "sqlstate", None) or ""
    text = first_line(exc)
    if stale_session(exc):
        return LedgerError(
            f"ledger {where}: this session's prepared statements were dropped or outdated "
            f"({text}); nothing of this write was kept, the next call starts a new "
            "session, and running it again is safe",
            "conflict",
        )
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
        or (not state and isinstance(exc, psycopg_module().OperationalError))
    ):
        return LedgerError(
            f"ledger {where}: the connection to the server failed ({text}); "
            f"the next call reconnects. {_IN_DOUBT}",
            "connection",
        )
    return LedgerError(f"ledger {where}: {text}", "io")


# --- the connection's settings ------------------------------------------------------


def close_connection(conn: Connection[Any], pid: int) -> None:
    """Close at collection or exit, in the process that opened it only: closing
    sends the server a goodbye on the socket that a forked child shares."""
    if os.getpid() == pid and not conn.closed:
        conn.close()


def seconds_given(value: object) -> bool:
    """A number of seconds >= 0 (infinity included; NaN and booleans not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def checked_timeouts(timeout: float, connect_timeout: float, operation: float | None) -> float:
    """Check PostgresLedger's three timeouts; the operation timeout, its default filled in."""
    if not seconds_given(timeout) or not timeout < math.inf:
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
    if not seconds_given(connect_timeout) or not 0 < connect_timeout < math.inf:
        raise ValueError(
            f"connect_timeout must be a finite number of seconds > 0, got {connect_timeout!r}"
        )
    if operation is None:
        return timeout + 1.0
    if not seconds_given(operation) or not operation > timeout:
        raise ValueError(
            "operation_timeout must be a number of seconds longer than timeout "
            f"({timeout!r}), so a write waiting for a lock is not cut off; got {operation!r}"
        )
    return float(operation)


def describe(dsn: str, schema: str) -> str:
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


def open_connection(
    dsn: str, connect_seconds: int, guard: Guard, *, where: str, opening: bool
) -> Connection[Any]:
    """A new connection whose every wait answers to ``guard`` (deadline, breaker).

    Failing it is ``"cannot_open"`` when the ledger is being opened, and a
    ``"connection"`` or ``"timeout"`` failure the breaker counts after."""
    psycopg = psycopg_module()
    settings: dict[str, Any] = {"autocommit": True}
    given = importlib.import_module("psycopg.conninfo").conninfo_to_dict(dsn)
    if "connect_timeout" not in given:
        settings["connect_timeout"] = connect_seconds
    if "application_name" not in given:
        settings["application_name"] = "limitry_local"
    # The scopes' statements are PREPAREd by name (the ledger's _ensure_prepared);
    # psycopg's own automatic preparing would send DEALLOCATE ALL, ours included,
    # at the first ROLLBACK it saw after preparing one of its own.
    settings["prepare_threshold"] = None
    try:
        conn: Connection[Any] = connection_class().connect(dsn, **settings)
    except psycopg.Error as exc:
        first = first_line(exc)
        if opening:
            raise LedgerError(
                f"cannot connect to ledger {where} ({first}); is the server running "
                "and reachable, and does the DSN name the right host, port, user and "
                "database?",
                "cannot_open",
            ) from exc
        reason: Unreachable = (
            "timeout" if isinstance(exc, psycopg.errors.ConnectionTimeout) else "connection"
        )
        guard.failed(reason, first)
        raise LedgerError(
            f"cannot reconnect to ledger {where} ({first}); the call was not made", reason
        ) from exc
    conn.guard = guard  # type: ignore[attr-defined]
    guard.reached()
    return conn
