"""The pytest plugin: registered through the pytest11 entry point, with its two fixtures."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from importlib.metadata import entry_points

import pytest

from limitry_local import Tracker
from limitry_local.testing import ManualClock
from limitry_local.testing.pytest_plugin import FIXED_START


def test_the_plugin_is_registered_for_pytest_to_load() -> None:
    [plugin] = [e for e in entry_points(group="pytest11") if e.name == "limitry_local"]
    assert plugin.value == "limitry_local.testing.pytest_plugin"


def test_limitry_tracker_is_in_memory_on_the_manual_clock(
    limitry_tracker: Tracker, limitry_clock: ManualClock
) -> None:
    assert limitry_tracker.ledger.path is None
    assert limitry_clock() == FIXED_START.timestamp()
    first = limitry_tracker.usage(customer_id="c", event_type="e")
    limitry_clock.advance(3600)
    limitry_tracker.usage(customer_id="c", event_type="e")
    times = [e.created_at for e in limitry_tracker.events.list().data]
    assert [t.timestamp() for t in times] == [
        FIXED_START.timestamp() + 3600,
        FIXED_START.timestamp(),
    ]
    assert first.id.startswith("evt_")


def test_each_test_gets_a_fresh_tracker(limitry_tracker: Tracker) -> None:
    # The previous test recorded two events on its tracker; this one starts empty.
    assert limitry_tracker.ledger.event_count() == 0


def test_manual_clock_takes_finite_seconds_and_timedeltas_and_names_itself_otherwise() -> None:
    """Found in review: nan, inf, True and "30" were taken (a clock stuck at nan failed
    only at a later Tracker call), and a timedelta failed with float()'s own words."""
    clock = ManualClock(1_700_000_000)
    clock.advance(timedelta(minutes=1))
    assert clock() == 1_700_000_060.0
    for bad in (math.nan, math.inf, True, "30", bytearray(b"30"), memoryview(b"30")):
        with pytest.raises(ValueError, match=r"advance\(seconds\): expected a finite number"):
            clock.advance(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ManualClock: expected a finite number"):
            ManualClock(bad)  # type: ignore[arg-type]
    assert clock() == 1_700_000_060.0  # nothing moved
    for huge in (10**400, -(10**400)):
        with pytest.raises(ValueError, match="finite number"):
            clock.advance(huge)
    clock.advance(Decimal("0.5"))  # any real number float() takes
    clock.advance(Fraction(1, 2))
    assert clock() == 1_700_000_061.0
    with pytest.raises(ValueError, match="aware datetime"):
        ManualClock(datetime(2026, 11, 25))
