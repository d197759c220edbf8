"""A clock that moves only when told to."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta


class ManualClock:
    """A zero-argument callable returning unix seconds, for ``Tracker(clock=...)``.

    >>> clock = ManualClock(1_700_000_000)
    >>> clock.advance(30); clock()
    1700000030.0
    """

    def __init__(self, start: datetime | float = 0.0) -> None:
        self._lock = threading.Lock()
        self._now = _seconds(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move forward (or, with a negative number, back) by ``seconds`` (or a timedelta)."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        with self._lock:
            self._now = _finite(self._now + _finite(step, "advance(seconds)"), "advance(seconds)")

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once: the sleep a Tracker on this clock uses.

        ``Tracker(clock=manual)`` takes it as its ``sleep``, so
        ``usage(wait=...)`` waits in simulated time and a test never sleeps.
        """
        self.advance(seconds)

    def set(self, when: datetime | float) -> None:
        """Jump to ``when`` (an aware datetime or unix seconds)."""
        with self._lock:
            self._now = _seconds(when)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


def _seconds(when: datetime | float) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(
                "ManualClock needs an aware datetime (for example tzinfo=timezone.utc)"
            )
        return when.timestamp()
    return _finite(when, "ManualClock")


def _finite(value: object, where: str) -> float:
    """A finite number of seconds; anything else is refused here, not at a later call
    (found in review: nan and "30" were taken, and failed far from the cause)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"{where}: expected a finite number of seconds (or an aware datetime to "
            f"start or set, a timedelta to advance), got {value!r}"
        )
    return float(value)
