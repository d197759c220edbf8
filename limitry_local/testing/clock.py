"""A clock that moves only when told to."""

from __future__ import annotations

import contextlib
import math
import threading
from datetime import datetime, timedelta
from typing import SupportsFloat


class ManualClock:
    """A zero-argument callable returning unix seconds, for ``Tracker(clock=...)``.

    >>> clock = ManualClock(1_700_000_000)
    >>> clock.advance(30); clock()
    1700000030.0
    """

    def __init__(self, start: datetime | SupportsFloat = 0.0) -> None:
        self._lock = threading.Lock()
        self._now = _seconds(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: SupportsFloat | timedelta) -> None:
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

    def set(self, when: datetime | SupportsFloat) -> None:
        """Jump to ``when`` (an aware datetime or unix seconds)."""
        with self._lock:
            self._now = _seconds(when)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


def _seconds(when: datetime | SupportsFloat) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(
                "ManualClock needs an aware datetime (for example tzinfo=timezone.utc)"
            )
        return when.timestamp()
    return _finite(when, "ManualClock")


def _finite(value: object, where: str) -> float:
    """A finite number of seconds (a Decimal or a Fraction too); anything else is
    refused here, not at a later call (found in review: nan and "30" were taken,
    and failed far from the cause)."""
    seconds = math.nan
    if not isinstance(value, (bool, str, bytes, bytearray, memoryview)):
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            seconds = float(value)  # type: ignore[arg-type]
    if not math.isfinite(seconds):
        raise ValueError(
            f"{where}: expected a finite number of seconds (or an aware datetime to "
            f"start or set, a timedelta to advance), got {value!r}"
        )
    return seconds
