"""The ledger file: what it refuses to open, and the exact sums it keeps."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from limitry_local import LedgerError, QuotaExceeded, Tracker
from limitry_local.ledger import (
    SCHEMA_VERSION,
    Ledger,
    LedgerBackend,
    ReportFilter,
    priced,
)
from limitry_local.metrics import micro_cents
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.test_memory_ledger import _event

LEDGERS = Path(__file__).parent / "ledgers"
# Cents whose micro-cents a rounding rule could get wrong: 2.5e-6 is half a
# micro-cent above 2 (3, away from zero), -2.5e-6 half below -2 (-3), 0.1 and
# 0.3 have no exact binary form.  Negative costs only reach a ledger directly.
AWKWARD_CENTS = [0.0, 0.1, 0.3, 2.5e-7, 5e-7, 1.5e-6, 2.5e-6, -2.5e-6, 123.456, 1e9, None]


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(LedgerError, match=r"notes\.db"):
        Tracker(path)


def test_someone_elses_sqlite_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    with pytest.raises(LedgerError, match="not a limitry_local ledger"):
        Tracker(path)
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"users"}


def test_a_ledger_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    Tracker(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [SCHEMA_VERSION + 1])
    with pytest.raises(LedgerError, match="schema version"):
        Tracker(path)


def test_a_missing_directory_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Tracker(tmp_path / "missing" / "usage.db")


def test_cost_quotas_sum_fractional_cents_exactly(tracker: Tracker) -> None:
    # In floating point 30 x 0.1 is 3.0000000000000004, which would deny the 30th event.
    tracker.quotas.create(name="spend", metric="total_cost_cents", limit_value=3, period="day")
    for _ in range(30):
        response = tracker.usage(customer_id="c", event_type="e", cost_cents=0.1)
    assert response.quotas[0].used == 3
    assert response.quotas[0].remaining == 0
    with pytest.raises(QuotaExceeded):
        tracker.usage(customer_id="c", event_type="e", cost_cents=0.000001)
    assert tracker.usage(customer_id="c", event_type="e", cost_cents=0).quotas[0].used == 3


def test_returned_limits_are_copies(tracker: Tracker) -> None:
    quota = tracker.quotas.create(
        name="q",
        metric="total_events",
        limit_value=2,
        period="day",
        dimension_filters={"model": "m"},
    )
    quota.limit_value = 1
    quota.dimension_filters["model"] = "other"
    tracker.quotas.list().data[0].limit_value = 1
    tracker.usage(customer_id="c", event_type="e", model="m")
    assert tracker.usage(customer_id="c", event_type="e", model="m").quotas[0].used == 2
    assert tracker.quotas.get(quota.id).dimension_filters == {"model": "m"}


# --- events.cost_micro_cents (schema 8): old ledgers report what they did --------------


def _reported_before_version_8(path: Path) -> dict[str | None, tuple[int, int]]:
    """Events and micro-cents per customer, summed as every report did before version 8."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT customer_id, count(*), sum(CAST(round(cost_cents * 1000000) AS INTEGER)) "
            "FROM events GROUP BY customer_id"
        ).fetchall()
    return {customer: (events, cents or 0) for customer, events, cents in rows}


def _reported(ledger: LedgerBackend) -> dict[str | None, tuple[int, int]]:
    groups = ledger.usage_breakdown("customer_id", ReportFilter())
    return {customer: (t.events, t.cost_micro_cents) for customer, t in groups}


def _stored(path: Path) -> list[tuple[str, float | None, int | None]]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT id, cost_cents, cost_micro_cents FROM events ORDER BY seq")
        return list(rows.fetchall())


def test_a_version_1_ledger_reports_the_micro_cents_it_did_and_new_events_store_theirs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    shutil.copy(LEDGERS / "v1.db", path)
    before = _reported_before_version_8(path)
    assert before == {"cust_1": (2, 0), "cust_2": (1, 1_250_000)}
    with Tracker(path, clock=ManualClock(START)) as tracker:
        assert _reported(tracker.ledger) == before
        event = tracker.usage(customer_id="cust_1", event_type="model_call", cost_cents=2.5e-6)
        assert tracker.customers.get_usage("cust_1").total_cost_cents == 3e-6
    stored = _stored(path)
    assert [(cents, micro) for _, cents, micro in stored] == [
        (None, None),
        (1.25, 1_250_000),
        (None, None),
        (2.5e-6, 3),  # counted once, half away from zero, when it was recorded
    ]
    assert stored[-1][0] == event.id


def test_a_version_7_ledger_is_backfilled_with_the_micro_cents_its_reports_summed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.db"
    ledger = Ledger(path)
    rows = [
        priced(_event(f"evt_{i}", f"cust_{i % 3}", START + i)._replace(cost_cents=cents))
        for i, cents in enumerate(AWKWARD_CENTS)
    ]
    with ledger.write() as scope:
        ledger.record(scope, [(row, [], None) for row in rows])
    ledger.close()
    # Back to version 7: no micro-cents column, no records table.
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE events DROP COLUMN cost_micro_cents")
        conn.execute("DROP TABLE records")
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    before = _reported_before_version_8(path)
    ledger = Ledger(path)
    try:
        assert _reported(ledger) == before
        assert sum(
            t.cost_micro_cents for _, t in ledger.usage_timeseries(3600, 0, ReportFilter())
        ) == sum(cents for _, cents in before.values())
        assert ledger.records("limit") == []
    finally:
        ledger.close()
    assert _stored(path) == [(row.id, row.cost_cents, micro_cents(row.cost_cents)) for row in rows]
