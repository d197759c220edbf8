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

psycopg is imported when the first guarded connection class is made, never
by importing this module.
"""

from __future__ import annotations

import functools
import importlib
import socket
import threading
import time
from typing import Any, Literal

from limitry_local.breaker import CircuitBreaker, Refusal

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
        self._cond = threading.Condition(threading.Lock())
        self._armed: tuple[int, float, int] | None = None  # token, deadline, descriptor
        self._token = 0
        self._fired = 0
        self._parked = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def arm(self, fd: int) -> int:
        """Start the clock on a wait on ``fd``; returns the token :meth:`disarm` takes."""
        with self._cond:
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
        with self._cond:
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
