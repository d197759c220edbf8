"""The SQLite ledger's schema: the tables of a new file, and the steps that migrate an old one.

sqlite-utils writes the DDL; :data:`MIGRATIONS` takes a file from each
version to the next, all in the one transaction that opens it.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

SCHEMA_VERSION = 8
"""1: the first release.  2: ``meta.definitions_version``, so processes sharing
a file see each other's limit changes.  3: ``holds``, the quota amounts that
open reservations hold, so any process can release an expired one.
4: ``quotas.timezone``, the IANA zone of a quota's calendar periods,
``events.cached_input_tokens``, ``rate_limits.generation`` and both
definition tables' ``overrides`` and ``mode``.  5: ``quota_alerts`` and
``alert_log``, quota alerts and the history of their firings.  6: both
definition tables' ``fail_mode``.  7: ``quota_alerts.updated_at``, since an
alert can be changed.  8: ``records``, the documents of the Limitry 1.0 face
(limits, subjects, credits, reservations, idempotent answers), and
``events.cost_micro_cents``, each event's cost counted once when it is
recorded, what reports sum."""


def create_schema(db: sqlite_utils.Database) -> None:
    """The current schema, for a new ledger (an old one is migrated instead)."""
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('definitions_version', '0')",
        [str(SCHEMA_VERSION)],
    )
    db.table("events").create(
        {
            "seq": int,
            "id": str,
            "ts": float,
            "customer_id": str,
            "event_type": str,
            "model": str,
            "provider": str,
            "input_tokens": int,
            "output_tokens": int,
            "total_tokens": int,
            "latency_ms": int,
            "cost_cents": float,
            "properties": str,
            "idempotency_key": str,
            "cached_input_tokens": int,
            "cost_micro_cents": int,
        },
        pk="seq",
        not_null={"id", "ts", "properties"},
    )
    db.table("events").create_index(["id"], unique=True)
    db.table("events").create_index(["customer_id", "ts"])
    db.table("events").create_index(["ts"])
    # Amounts are whole units (tokens, events, micro-cents); INTEGER keeps
    # the sums exact where REAL would round above 2**53.
    db.table("quota_counters").create(
        {"quota_id": str, "key": str, "period_start": int, "used": int},
        pk=("quota_id", "key", "period_start"),
        not_null={"used"},
    )
    db.table("idempotency_keys").create({"key": str, "event_id": str, "response": str}, pk="key")
    _create_holds(db)
    _create_alert_tables(db)
    _add_alert_updated_at(db)
    _create_records(db)
    for table, extra in (
        (
            "quotas",
            {"period": str, "timezone": str, "overrides": str, "mode": str, "fail_mode": str},
        ),
        (
            "rate_limits",
            {
                "window": str,
                "enabled": int,
                "generation": str,
                "overrides": str,
                "mode": str,
                "fail_mode": str,
            },
        ),
    ):
        db.table(table).create(
            {
                "seq": int,
                "id": str,
                "name": str,
                "dimension_filters": str,
                "metric": str,
                "limit_value": int,
                **extra,
                "per": str,
                "created_at": str,
                "updated_at": str,
            },
            pk="seq",
        )
        db.table(table).create_index(["id"], unique=True)


def _v1_to_v2(db: sqlite_utils.Database) -> None:
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('definitions_version', '0')")


def _create_holds(db: sqlite_utils.Database) -> None:
    # increments: JSON [[quota_id, key, period_start, amount], ...], already on the counters.
    db.table("holds").create({"id": str, "increments": str, "expires_at": float}, pk="id")
    db.table("holds").create_index(["expires_at"])


def _v2_to_v3(db: sqlite_utils.Database) -> None:
    _create_holds(db)


def _v3_to_v4(db: sqlite_utils.Database) -> None:
    # NULL reads as UTC, every quota's zone before version 4.
    db.execute("ALTER TABLE quotas ADD COLUMN timezone TEXT")
    db.execute("ALTER TABLE events ADD COLUMN cached_input_tokens INTEGER")
    # NULL: the limit's shape names its buckets until it is next reshaped.
    db.execute("ALTER TABLE rate_limits ADD COLUMN generation TEXT")
    for table in ("quotas", "rate_limits"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN overrides TEXT")  # NULL: none
        db.execute(f"ALTER TABLE {table} ADD COLUMN mode TEXT")  # NULL: enforce


def _create_alert_tables(db: sqlite_utils.Database) -> None:
    db.table("quota_alerts").create(
        {"seq": int, "id": str, "quota_id": str, "threshold": int, "created_at": str},
        pk="seq",
    )
    db.table("quota_alerts").create_index(["id"], unique=True)
    db.table("alert_log").create(
        {
            "seq": int,
            "id": str,
            "alert_id": str,
            "quota_id": str,
            "key": str,
            "period_start": int,
            "period_end": int,
            "threshold": int,
            "used": int,
            "limit_units": int,
            "quota_name": str,
            "metric": str,
            "period": str,
            "dimensions": str,
            "event_id": str,
            "triggered_at": float,
        },
        pk="seq",
        not_null={"id", "alert_id", "quota_id", "key", "period_start", "triggered_at"},
    )
    db.table("alert_log").create_index(["id"], unique=True)
    # Once per alert, key and period: the database, not the tracker, keeps it so.
    db.table("alert_log").create_index(["alert_id", "key", "period_start"], unique=True)
    # The history's pages, by quota and by alert; an alert's last firing.
    db.table("alert_log").create_index(["quota_id", "seq"])
    db.table("alert_log").create_index(["alert_id", "seq"])
    db.table("alert_log").create_index(["alert_id", "triggered_at"])


def _v4_to_v5(db: sqlite_utils.Database) -> None:
    _create_alert_tables(db)


def _v5_to_v6(db: sqlite_utils.Database) -> None:
    for table in ("quotas", "rate_limits"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN fail_mode TEXT")  # NULL: closed


def _add_alert_updated_at(db: sqlite_utils.Database) -> None:
    # NULL: never changed, so it reads as created_at (alerts from before version 7).
    db.execute("ALTER TABLE quota_alerts ADD COLUMN updated_at TEXT")


def _v6_to_v7(db: sqlite_utils.Database) -> None:
    _add_alert_updated_at(db)


def _create_records(db: sqlite_utils.Database) -> None:
    # One table for every kind of document, so a new kind needs no migration;
    # seq keeps creation order, what a listing shows; expires_at (NULL: kept
    # for good) lets a purge drop what is past its time.
    db.execute(
        "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
        "id TEXT NOT NULL, body TEXT NOT NULL, expires_at REAL)"
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS records_kind_id ON records (kind, id)")
    db.execute("CREATE INDEX IF NOT EXISTS records_kind_expires ON records (kind, expires_at)")


def _v7_to_v8(db: sqlite_utils.Database) -> None:
    _create_records(db)
    # Only when missing, as records' IF NOT EXISTS: a step run on a file that
    # has the column (a current file set back a version) must not fail.
    if "cost_micro_cents" not in db.table("events").columns_dict:
        db.execute("ALTER TABLE events ADD COLUMN cost_micro_cents INTEGER")
    # The expression reports summed before version 8 (round() adds 0.5 in
    # double precision and truncates, away from zero: metrics.micro_cents'
    # rule), so an old ledger reports to the micro-cent what it did.
    db.execute(
        "UPDATE events SET cost_micro_cents = CAST(round(cost_cents * 1000000) AS INTEGER) "
        "WHERE cost_cents IS NOT NULL"
    )


# MIGRATIONS[n] takes a ledger from schema version n to n + 1.
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
    7: _v7_to_v8,
}
