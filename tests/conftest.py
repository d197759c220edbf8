"""Shared fixtures: a manual clock and trackers on it, for every rate-limit store and ledger.

The core suite runs once per pair (rate-limit store: memory, Redis) x
(ledger: memory, SQLite file, PostgreSQL), against the real servers .ci/run
starts.  A test that cannot reach a server fails: a skip would let a backend
go untested without anyone noticing.
"""

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
from tests.redis_support import RateStores, RedisStores

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


# The core suite runs on every pair (rate-limit store, ledger); ids read "redis-sqlite".
RATE_STORES = ["memory", "redis"]
LEDGERS = ["memory", "sqlite", "postgres"]

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


@pytest.fixture
def redis_stores() -> Iterator[RedisStores]:
    """RedisBuckets on fresh key prefixes, their keys deleted after the test."""
    stores = RedisStores()
    try:
        yield stores
    finally:
        stores.cleanup()


@pytest.fixture(params=RATE_STORES)
def rates(request: pytest.FixtureRequest, redis_stores: RedisStores) -> RateStores:
    """A maker of rate-limit stores, once per kind: tests that build their own
    Trackers (one per hypothesis example) call it for each.  Redis buckets run
    on the tracker's clock (``clock="client"``) so the ManualClock drives them."""
    if request.param == "memory":
        return lambda: None
    return redis_stores.new


@pytest.fixture(params=LEDGERS)
def ledger_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tracker(
    rates: RateStores, ledger_kind: str, clock: ManualClock, tmp_path: Path
) -> Iterator[Tracker]:
    """The core suite's tracker, once per rate-limit store and ledger: all must behave the same."""
    if ledger_kind == "postgres":
        with postgres_schema() as schema:
            ledger = PostgresLedger(POSTGRES_DSN, schema=schema)
            with Tracker(clock=clock, ledger=ledger, rate_limits=rates()) as t:
                yield t
        return
    path = None if ledger_kind == "memory" else tmp_path / "usage.db"
    with Tracker(path, clock=clock, rate_limits=rates()) as t:
        yield t


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture
def file_tracker(clock: ManualClock, ledger_path: Path) -> Iterator[Tracker]:
    with Tracker(ledger_path, clock=clock) as t:
        yield t
