"""A circuit breaker: stop calling a server that is known to be down, and probe it now and then.

Without one, every call to a dead or paused server waits out its timeout
before failing; with one, after ``failures`` calls in a row failed to reach
the server, calls fail at once for ``cool_down`` seconds.  Then one call is
let through as a probe (half-open): if it reaches the server the breaker
closes, if not it stays open for another ``cool_down``.  While the probe is
out, other calls still fail at once, so a paused server costs one timeout
per cool-down, not one per call.

Time is a parameter (``now``, seconds on any clock that does not run
backwards): the caller reads its own clock, so a test's ManualClock drives
the cool-down.  Only failures to *reach* the server count; a server that
answers with an error is up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the breaker refused a call: how many failed in a row, and when the next probe goes."""

    failures: int
    retry_in: float


class CircuitBreaker:
    """Closed, open for ``cool_down`` seconds after ``failures`` failures in a row, then half-open.

    ``failures=0`` disables it: every call is let through.  Thread-safe.
    """

    def __init__(self, failures: int, cool_down: float) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
            raise ValueError(
                f"breaker_failures must be an integer >= 0 (0 turns the breaker off), "
                f"got {failures!r}"
            )
        if (
            isinstance(cool_down, bool)
            or not isinstance(cool_down, (int, float))
            or not 0 <= cool_down < float("inf")
        ):
            raise ValueError(
                f"breaker_cool_down must be a finite number of seconds >= 0, got {cool_down!r}"
            )
        self.failures = failures
        self.cool_down = float(cool_down)
        self._lock = threading.Lock()
        self._failed = 0
        self._open_until: float | None = None
        self._probing = False
        self._prober = 0

    @property
    def is_open(self) -> bool:
        """True from the moment calls are refused until a call reaches the server again."""
        return self._open_until is not None

    def admit(self, now: float) -> Refusal | None:
        """None: make the call (and report it with :meth:`succeeded` or :meth:`failed`).

        A :class:`Refusal`: fail at once, the server is known to be down.
        """
        with self._lock:
            if self._open_until is None:
                return None
            if now >= self._open_until and not self._probing:
                # Half-open: this call is the probe; the others keep failing fast.
                self._probing = True
                self._prober = threading.get_ident()
                return None
            # 0 while a probe is out: the answer may come any moment.
            return Refusal(self._failed, max(0.0, self._open_until - now))

    def succeeded(self) -> None:
        """The call reached the server (even if the server refused it): close."""
        with self._lock:
            self._failed = 0
            self._open_until = None
            self._probing = False

    def failed(self, now: float) -> None:
        """The call could not reach the server (connection refused, timed out)."""
        with self._lock:
            self._failed += 1
            if self.failures and (self._probing or self._failed >= self.failures):
                self._open_until = now + self.cool_down
            self._probing = False

    def abandoned(self) -> None:
        """The call ended without saying whether it reached the server (an interrupt).

        If it was the probe, the next call may probe instead.
        """
        with self._lock:
            if self._probing and self._prober == threading.get_ident():
                self._probing = False
