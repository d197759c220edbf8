"""The ledger file: what it refuses to open, and the exact sums it keeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from limitry_local import LedgerError, QuotaExceeded, Tracker
from limitry_local.ledger import SCHEMA_VERSION


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
