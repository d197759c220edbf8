"""Shared fixtures: a manual clock and trackers on it, in memory, on a file and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from limitry_local import Tracker
from limitry_local.postgres_ledger import PostgresLedger
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


# The server .ci/run starts.  A test that cannot reach it fails: a skip would
# let the PostgreSQL ledger go untested without anyone noticing.
POSTGRES_DSN = os.environ.get(
    "LIMITRY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A schema name no other test uses; the schema, if made, is dropped afterwards."""
    name = f"test_{os.urandom(8).hex()}"
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def postgres_ledger() -> Iterator[PostgresLedger]:
    with postgres_schema() as schema:
        ledger = PostgresLedger(POSTGRES_DSN, schema=schema)
        try:
            yield ledger
        finally:
            ledger.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def tracker(
    request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path
) -> Iterator[Tracker]:
    """The core suite's tracker, once per ledger: all three must behave the same."""
    if request.param == "postgres":
        with postgres_schema() as schema:
            ledger = PostgresLedger(POSTGRES_DSN, schema=schema)
            with Tracker(clock=clock, ledger=ledger) as t:
                yield t
        return
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
