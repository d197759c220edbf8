"""The engine's time: wall time for events and periods, bucket time for rate limits.

Read once per call (:meth:`EngineClock.read`), under the engine's lock; every
rule of that call uses the readings it left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from limitry_local.buckets import BucketTime
from limitry_local.errors import LimitryError
from limitry_local.models import MAX_YEAR, MIN_YEAR
from limitry_local.periods import Clock, system_clock

EARLIEST = datetime(MIN_YEAR, 1, 1, tzinfo=timezone.utc).timestamp()
LATEST = datetime(MAX_YEAR + 1, 1, 1, tzinfo=timezone.utc).timestamp()

_new_tuple = tuple.__new__


class EngineClock:
    """``clock`` (unix seconds; default the system's) read as the rules need it.

    Wall time never goes back: the latest reading stamps events, so a clock
    stepping back cannot move an event into an earlier period.  Bucket time
    runs on :func:`time.monotonic` with the system clock, which NTP steps and
    VM resumes cannot move; an injected clock (tests, simulations) drives
    both.  Bucket time too stands still while a stepped-back clock catches
    up, so no stretch of time is credited twice.
    """

    __slots__ = ("latest", "offset", "raw", "sleep", "source", "tick", "ticker", "wall")

    def __init__(self, clock: Clock | None, sleep: Callable[[float], None] | None) -> None:
        self.source: Clock = clock if clock is not None else system_clock
        self.ticker: Clock | None = time.monotonic if clock is None else None
        # What usage(wait=...) sleeps with: a clock that can sleep (ManualClock
        # advances itself) keeps a simulated wait simulated.
        self.sleep: Callable[[float], None] = (
            sleep if sleep is not None else getattr(clock, "sleep", None) or time.sleep
        )
        self.raw = 0.0
        """The last reading, as the clock gave it."""
        self.wall = float("-inf")
        """The latest reading: what events are stamped with."""
        self.latest = float("-inf")
        """Bucket time: the latest instant of the ticker (or the injected clock)."""
        self.tick = 0.0
        self.offset = 0.0
        """Wall time minus bucket time, to state resets as unix seconds."""

    def read(self) -> float:
        """Read the clock once for a call; returns the wall time to stamp."""
        now = self.source()
        # Every time the engine stamps must be a representable event time.
        # (A float is checked first: isinstance() against a tuple of types
        # costs more, and every clock but a test's returns one.)
        if not (now.__class__ is float or isinstance(now, (int, float))) or not (
            EARLIEST <= now < LATEST
        ):
            raise LimitryError(
                f"the clock returned {now!r}: expected unix seconds between "
                f"{MIN_YEAR}-01-01 and {MAX_YEAR}-12-31"
            )
        self.raw = now
        if now > self.wall:  # noqa: PLR1730 (max() is a call, on every call)
            self.wall = now
        ticker = self.ticker
        if ticker is None:
            if now > self.latest:  # noqa: PLR1730
                self.latest = now
            self.tick = now
            self.offset = 0.0
        else:
            tick = ticker()
            if tick > self.latest:  # noqa: PLR1730
                self.latest = tick
            self.tick = tick
            self.offset = now - self.latest
        return self.wall

    def bucket_time(self) -> BucketTime:
        """The readings a rate-limit store decides with."""
        # Through tuple.__new__: the named tuple's constructor is a Python call.
        return _new_tuple(BucketTime, (self.latest, self.tick, self.offset, self.wall))

    def elapsed(self) -> Clock:
        """What measures a wait: the ticker, or the injected clock."""
        return self.ticker or self.source
