"""Shared fixtures: a manual clock and trackers on it, in memory and on a file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from limitry_local import Tracker
from limitry_local.testing import ManualClock

# SQLite calls make run times uneven; a deadline would only add flakiness.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# CI (hypothesis reads CI=true) runs derandomized so a red build reproduces.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if settings.get_current_profile_name() == "ci" else "default")

# Wednesday 2026-11-25 10:00:00 UTC: mid-week, mid-month, mid-day.
START = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(params=["memory", "sqlite"])
def tracker(
    request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path
) -> Iterator[Tracker]:
    """The core suite's tracker, once per ledger: both must behave the same."""
    path = None if request.param == "memory" else tmp_path / "usage.db"
    with Tracker(path, clock=clock) as t:
        yield t


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture
def file_tracker(clock: ManualClock, ledger_path: Path) -> Iterator[Tracker]:
    with Tracker(ledger_path, clock=clock) as t:
        yield t
