"""The pytest plugin: registered through the pytest11 entry point, with its two fixtures."""

from __future__ import annotations

from importlib.metadata import entry_points

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
