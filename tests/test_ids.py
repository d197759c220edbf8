"""Minted ids: the prefix and 32 hex digits, unique, ordered by when they were minted."""

from __future__ import annotations

import os
import random
import re
import time

import pytest

from limitry_local import Tracker
from limitry_local.ids import new_id

ID = re.compile(r"^evt_([0-9a-f]{12})([0-9a-f]{20})$")


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
    assert _millis(new_id("evt", 16**12 - 1)) == 16**12 - 1
    for bad in (-1, 16**12):
        with pytest.raises(ValueError, match="millis"):
            new_id("evt", bad)


def test_ids_of_one_millisecond_differ_and_a_later_millisecond_sorts_after() -> None:
    ids = {new_id("evt", 1_700_000_000_000) for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(new_id("evt", 1_700_000_000_001) > other for other in ids)


def test_event_ids_follow_the_wall_clock_not_the_trackers_clock() -> None:
    # A frozen or replayed clock would put every id in one millisecond; the
    # host's clock keeps ids spread and in the order they were minted.
    with Tracker(clock=lambda: 86_400.0) as tracker:
        before = time.time_ns() // 1_000_000
        first = tracker.usage(customer_id="c", event_type="call").id
        second = tracker.events.ingest(customer_id="c", event_type="call").id
        after = time.time_ns() // 1_000_000
    assert before <= _millis(first) <= _millis(second) <= after
    assert first != second


def test_ids_do_not_follow_the_applications_random_seed() -> None:
    random.seed(7)
    first = new_id("evt", 1_700_000_000_000)
    random.seed(7)
    assert new_id("evt", 1_700_000_000_000) != first


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_mints_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running pytest's exit
        os.close(read)
        os.write(write, " ".join(new_id("evt", 0) for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id("evt", 0) for _ in range(100)}
    assert len(child) == 100
    assert not child & parent
