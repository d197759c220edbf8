"""The pytest plugin, registered through the ``pytest11`` entry point.

Installing ``limitry_local`` gives every test suite two fixtures:

``limitry_clock``
    A :class:`ManualClock` at a fixed instant (Wednesday 2026-11-25 10:00 UTC,
    mid-week, mid-month, mid-day), so period boundaries never surprise a test.
``limitry_tracker``
    A :class:`Tracker` with its ledger in memory, driven by ``limitry_clock``,
    closed when the test ends.

>>> def test_second_call_is_denied(limitry_tracker):
...     limitry_tracker.rate_limits.create(name="rpm", limit_value=1, window="minute")
...     limitry_tracker.usage(customer_id="c", event_type="call")
...     with pytest.raises(RateLimitExceeded):
...         limitry_tracker.usage(customer_id="c", event_type="call")

Only pytest and limitry_local are imported here, never hypothesis: the
plugin loads in every pytest session of a project that installs the
library.  That costs the import of limitry_local itself (pydantic,
sqlite-utils), which an application that installs it pays anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from limitry_local.testing.clock import ManualClock
from limitry_local.tracker import Tracker

#: Where ``limitry_clock`` starts: Wednesday 2026-11-25 10:00:00 UTC.
FIXED_START = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def limitry_clock() -> ManualClock:
    """A manual clock at :data:`FIXED_START`; ``advance()`` it instead of sleeping."""
    return ManualClock(FIXED_START)


@pytest.fixture
def limitry_tracker(limitry_clock: ManualClock) -> Iterator[Tracker]:
    """A Tracker with an in-memory ledger on ``limitry_clock``, closed after the test."""
    with Tracker(clock=limitry_clock) as tracker:
        yield tracker
