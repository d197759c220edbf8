"""Several processes sharing Redis buckets and a PostgreSQL ledger, as several hosts would.

Each spawned process opens its own Tracker on the same Redis prefix (server
clock) and the same PostgreSQL schema.  Together they must never admit more
than a rate limit or a quota allows, and every admitted event must be in the
ledger.  The real servers of .ci/run; nothing skips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from limitry_local import LimitExceeded, RedisBuckets, Tracker
from limitry_local.postgres_ledger import PostgresLedger
from tests.conftest import POSTGRES_DSN, postgres_schema
from tests.redis_support import REDIS_URL, new_prefix, raw_client
from tests.test_postgres_ledger import PROCESSES, _run_together

EVENT = {"customer_id": "cust_1", "event_type": "model_call", "total_tokens": 1}


def _shared_tracker(schema: str, prefix: str) -> Tracker:
    return Tracker(
        rate_limits=RedisBuckets(REDIS_URL, prefix=prefix, clock="server"),
        ledger=PostgresLedger(POSTGRES_DSN, schema=schema),
    )


def _hammer(schema: str, prefix: str, calls: int, barrier: Any, results: Any) -> None:
    admitted: list[str] = []
    with _shared_tracker(schema, prefix) as tracker:
        barrier.wait()
        for _ in range(calls):
            with contextlib.suppress(LimitExceeded):
                admitted.append(tracker.usage(EVENT).id)
    results.put(admitted)


@pytest.fixture
def shared() -> Iterator[tuple[str, str]]:
    prefix = new_prefix()
    with postgres_schema() as schema:
        try:
            yield schema, prefix
        finally:
            client = raw_client()
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
            client.close()


def _admitted_and_recorded(schema: str, answers: list[list[str]]) -> list[str]:
    admitted = [event_id for ids in answers for event_id in ids]
    assert len(set(admitted)) == len(admitted)
    ledger = PostgresLedger(POSTGRES_DSN, schema=schema)
    try:
        # Nothing admitted is lost, nothing denied is recorded.
        assert ledger.event_count() == len(admitted)
        assert all(ledger.event_seq(event_id) is not None for event_id in admitted)
    finally:
        ledger.close()
    return admitted


@pytest.mark.parametrize(
    ("rate", "quota", "admits"),
    [
        # The quota binds: the rate limit has room, and the tokens of events
        # the quota refused go back, so exactly the quota is admitted.
        (1000, 25, 25),
        # The rate limit binds (per day: refill during the run is well under
        # one token), the quota has room.
        (25, 1000, 25),
    ],
)
def test_hosts_sharing_redis_and_postgres_never_jointly_over_admit(
    shared: tuple[str, str], rate: int, quota: int, admits: int
) -> None:
    schema, prefix = shared
    with _shared_tracker(schema, prefix) as setup:
        setup.rate_limits.create(name="r", limit_value=rate, window="1d", per=["customer_id"])
        setup.quotas.create(
            name="q", metric="total_events", limit_value=quota, period="day", per=["customer_id"]
        )
    calls = 12  # 6 processes x 12 = 72 tries
    assert PROCESSES * calls > admits
    admitted = _admitted_and_recorded(schema, _run_together(_hammer, schema, prefix, calls))
    assert len(admitted) == admits
