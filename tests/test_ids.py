"""Minted ids: the hosted shape (``evt_`` + 24 hex digits), unique, ordered by creation time."""

from __future__ import annotations

import re
import time

from limitry_local import Tracker
from limitry_local.ids import new_id

ID = re.compile(r"^evt_([0-9a-f]{12})([0-9a-f]{12})$")


def _millis(event_id: str) -> int:
    match = ID.match(event_id)
    assert match is not None, event_id
    return int(match.group(1), 16)


def test_an_id_is_the_prefix_then_the_wall_clock_in_milliseconds_then_random_hex() -> None:
    before = time.time_ns() // 1_000_000
    event_id = new_id("evt")
    after = time.time_ns() // 1_000_000
    assert before <= _millis(event_id) <= after


def test_an_id_for_a_given_instant_carries_that_instant() -> None:
    assert _millis(new_id("evt", 1_700_000_000_123)) == 1_700_000_000_123
    assert new_id("evt", 0).startswith("evt_000000000000")


def test_ids_minted_in_one_millisecond_differ_and_later_ids_sort_after() -> None:
    ids = [new_id("evt") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    first = new_id("evt")
    deadline = time.time_ns() // 1_000_000 + 2
    while time.time_ns() // 1_000_000 < deadline:
        pass
    assert new_id("evt") > first


def test_event_ids_follow_the_wall_clock_not_the_trackers_clock() -> None:
    # A manual clock (tests, replays) may stand anywhere in time; ids still
    # come from the host's clock, so events replayed into a ledger sort by
    # when they were recorded and a frozen clock cannot shrink the id space.
    with Tracker(clock=lambda: 86_400.0) as tracker:
        before = time.time_ns() // 1_000_000
        first = tracker.usage(customer_id="c", event_type="call").id
        second = tracker.events.ingest(customer_id="c", event_type="call").id
        after = time.time_ns() // 1_000_000
    assert before <= _millis(first) <= _millis(second) <= after
    assert first != second
