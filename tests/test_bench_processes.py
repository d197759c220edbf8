"""Workload h's machinery: the raw psycopg floor and the pool of worker processes.

What the numbers of ``python -m benchmarks --only h`` rest on, checked with
real processes and the real PostgreSQL server (no speed is asserted): the
floor writes what it says, the pool reports every call its workers made
and each slice's events, and a worker that fails names its error without
spoiling the next row.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from benchmarks.floors import PostgresFloor
from benchmarks.processes import Job, Pool, slice_count
from tests.conftest import POSTGRES_DSN, postgres_schema


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    pool = Pool(2)
    try:
        yield pool
    finally:
        pool.close()


def test_the_postgres_floor_records_each_event_and_counts_its_tokens(schema: str) -> None:
    PostgresFloor.create(POSTGRES_DSN, schema)
    floor = PostgresFloor(POSTGRES_DSN, schema)
    try:
        for customer in ["a", "b", "a"]:
            floor.record(customer, input_tokens=10, output_tokens=2)
    finally:
        floor.close()
    assert PostgresFloor.events(POSTGRES_DSN, schema) == 3
    with psycopg.connect(POSTGRES_DSN) as conn:
        events = conn.execute(
            f'SELECT customer_id, total_tokens, id FROM "{schema}".events ORDER BY seq'
        ).fetchall()
        counters = conn.execute(
            f'SELECT key, used FROM "{schema}".counters ORDER BY key'
        ).fetchall()
    assert [(c, t) for c, t, _ in events] == [("a", 12), ("b", 12), ("a", 12)]
    assert all(event_id.startswith("evt_") for _, _, event_id in events)
    assert counters == [('["a"]', 24), ('["b"]', 12)]


def test_the_pool_reports_every_call_its_workers_made(pool: Pool, schema: str) -> None:
    PostgresFloor.create(POSTGRES_DSN, schema)
    jobs = [
        Job("postgres-floor", (f"p{i}_a", f"p{i}_b"), 4, dsn=POSTGRES_DSN, schema=schema)
        for i in range(2)
    ]
    timing, events = pool.run(jobs, seconds=0.3)
    assert events == PostgresFloor.events(POSTGRES_DSN, schema)
    assert timing.processes == 2
    assert timing.warmup_ops == 8
    # Every call after the warm-ups is timed; each slice counts all processes' events.
    timed = events - timing.warmup_ops
    # Each worker's last call ends after the run: the slices count the rest.
    assert len(timing.per_op_ns) == slice_count(timed - timing.processes)
    slice_ns = 0.3e9 / len(timing.per_op_ns)
    in_slices = sum(round(slice_ns / ns) for ns in timing.per_op_ns)
    # Each worker's last call ends after the run and is in no slice; a slice with
    # no event reads as one.
    assert timed - 2 <= in_slices <= timed - 2 + len(timing.per_op_ns)


def test_a_failing_worker_fails_the_row_and_the_next_row_runs(pool: Pool, schema: str) -> None:
    PostgresFloor.create(POSTGRES_DSN, schema)
    good = Job("postgres-floor", ("a",), 1, dsn=POSTGRES_DSN, schema=schema)
    missing = Job("postgres-floor", ("a",), 1, dsn=POSTGRES_DSN, schema=f"{schema}_missing")
    with pytest.raises(RuntimeError, match="a benchmark worker failed") as failed:
        pool.run([good, missing], seconds=0.1)
    assert "UndefinedTable" in str(failed.value)
    _, events = pool.run([good, good], seconds=0.1)
    assert events == PostgresFloor.events(POSTGRES_DSN, schema) - 1  # the good worker's warm-up


def test_slices_hold_about_fifty_events_each() -> None:
    assert [slice_count(n) for n in (0, 100, 300, 1000, 2000, 10**6)] == [5, 5, 6, 20, 40, 40]
