"""Ledger files already holding N events, built fast and cached, for the quota-check workload.

Recording 10M events through the API takes the better part of an hour, so a
ledger is built with raw ``sqlite3`` in the ledger's own schema: limitry_local
creates the file and the quota, then the events go in with ``executemany``
(secondary indexes dropped and rebuilt from their own ``CREATE INDEX``
text) and the quota's counters are summed from them in SQL.  Each ledger
is checked against limitry_local itself before use: for small ledgers it
rebuilds the same quota's counters through the API and they must be equal;
for every ledger one customer's quota, read through ``quotas.check``, must
equal the events' sum.

The events (``cust_0`` .. ``cust_999`` in turn, 120 tokens each) are spread
evenly over the 30 days before :data:`END` (2026-01-01 12:00 UTC); the quota
is per customer per UTC day, and the benchmark runs on a clock started at
:data:`END`, so every check reads a counter that the events filled.

Built ledgers are cached under the system temp directory, named by size and
by a hash of the schema limitry_local creates (a schema change builds anew).
The benchmark adds events; :func:`restore` deletes them again and puts the
counters back, so a cached ledger holds exactly N events between runs.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from limitry_local import Tracker

CUSTOMERS = 1000
END = datetime(2026, 1, 1, 12, tzinfo=timezone.utc).timestamp()
SPAN = 30 * 86_400
DAY = 86_400
TOKENS = 120
BUILD_FORMAT = 1
"""Bump when the generated data changes, so cached ledgers are rebuilt."""
VERIFY_UP_TO = 200_000
"""Ledgers up to this size are cross-checked against the API's own counter rebuild."""

QUOTA = {
    "name": "daily tokens",
    "metric": "total_tokens",
    "limit_value": 10**12,
    "period": "day",
    "per": ["customer_id"],
}


@dataclass(frozen=True)
class BigLedger:
    path: Path
    events: int
    quota_id: str
    build_seconds: float
    """0 when the cached file was reused."""

    def clock(self) -> Callable[[], float]:
        """A clock running at real speed from :data:`END`, within the data's last day."""
        shift = END - time.time()
        return lambda: time.time() + shift


def schema_hash(workdir: Path) -> str:
    """A hash of the schema limitry_local creates today."""
    probe = workdir / f"schema-probe-{os.getpid()}.db"
    with Tracker(probe):
        pass
    conn = sqlite3.connect(probe)
    try:
        rows = sorted(
            str(sql) for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL")
        )
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{probe}{suffix}").unlink(missing_ok=True)
    digest = hashlib.sha256("\n".join([*rows, f"format {BUILD_FORMAT}"]).encode())
    return digest.hexdigest()[:12]


def _rows(events: int) -> Iterator[tuple[object, ...]]:
    start = END - SPAN
    step = SPAN / events
    for i in range(events):
        yield (
            f"evt_{i:024x}",
            start + i * step,
            f"cust_{i % CUSTOMERS}",
            "model_call",
            "gpt-4o",
            None,
            100,
            20,
            TOKENS,
            None,
            None,
            "{}",
            None,
        )


def _build(path: Path, events: int) -> str:
    with Tracker(path) as tracker:
        quota_id = tracker.quotas.create(**QUOTA).id
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB
        indexes = [
            (name, sql)
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = 'events' AND sql NOT NULL"
            )
        ]
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            "INSERT INTO events (id, ts, customer_id, event_type, model, provider, "
            "input_tokens, output_tokens, total_tokens, latency_ms, cost_cents, properties, "
            "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(events),
        )
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute(
            "INSERT INTO quota_counters (quota_id, key, period_start, used) "
            "SELECT ?, json_array(customer_id), CAST(ts AS INTEGER) / ? * ?, sum(total_tokens) "
            "FROM events GROUP BY customer_id, CAST(ts AS INTEGER) / ?",
            (quota_id, DAY, DAY, DAY),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return quota_id


def _verify(ledger: BigLedger) -> None:
    """The fast build must agree with limitry_local's own bookkeeping."""
    if ledger.events <= VERIFY_UP_TO:
        with Tracker(ledger.path) as tracker:
            twin = tracker.quotas.create(**QUOTA).id  # rebuilt by the API from every event
            counters = tracker.ledger.counters()
            tracker.quotas.delete(twin)
        ours = {(k, s): u for (q, k, s), u in counters.items() if q == ledger.quota_id}
        theirs = {(k, s): u for (q, k, s), u in counters.items() if q == twin}
        if ours != theirs:
            raise AssertionError(f"{ledger.path}: built counters differ from the API's rebuild")
    conn = sqlite3.connect(ledger.path)
    try:
        (expected,) = conn.execute(
            "SELECT coalesce(sum(total_tokens), 0) FROM events WHERE customer_id = 'cust_0' "
            "AND ts >= ?",
            (END // DAY * DAY,),
        ).fetchone()
    finally:
        conn.close()
    with Tracker(ledger.path, clock=ledger.clock()) as tracker:
        (status,) = tracker.quotas.check({"customer_id": "cust_0"}).quotas
    if status.used != expected:
        raise AssertionError(f"{ledger.path}: cust_0 used {status.used}, events say {expected}")


def _event_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (top,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(top)
    finally:
        conn.close()


def _quota_id(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        (quota_id,) = conn.execute("SELECT id FROM quotas").fetchone()
        return str(quota_id)
    finally:
        conn.close()


def big_ledger(events: int, directory: Path, schema: str) -> BigLedger:
    """A ledger of ``events`` events in ``directory``: the cached one, or built now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"quota-ledger-{events}-{schema}.db"
    if path.exists():
        try:
            if _event_count(path) == events:
                return BigLedger(path, events, _quota_id(path), 0.0)
        except sqlite3.Error:
            pass
        # Left with extra events by an interrupted run, or damaged: build it again.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    # Ledgers of this size in an older schema will not be read again: free their space.
    for stale in directory.glob(f"quota-ledger-{events}-*.db*"):
        if not stale.name.startswith(path.name):
            stale.unlink(missing_ok=True)
    building = directory / f".building-{events}-{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    quota_id = _build(building, events)
    ledger = BigLedger(building, events, quota_id, time.perf_counter() - started)
    _verify(ledger)
    os.replace(building, path)
    return BigLedger(path, events, quota_id, ledger.build_seconds)


class Snapshot:
    """The counters of the benchmark's day, taken before it runs, for :func:`restore`."""

    def __init__(self, ledger: BigLedger) -> None:
        self.ledger = ledger
        self.day = int(END) // DAY * DAY
        conn = sqlite3.connect(ledger.path)
        try:
            self.rows = conn.execute(
                "SELECT quota_id, key, period_start, used FROM quota_counters "
                "WHERE period_start >= ?",
                (self.day,),
            ).fetchall()
        finally:
            conn.close()

    def restore(self) -> None:
        """Delete the events the benchmark added and put the day's counters back."""
        conn = sqlite3.connect(self.ledger.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM events WHERE seq > ?", (self.ledger.events,))
            conn.execute("DELETE FROM quota_counters WHERE period_start >= ?", (self.day,))
            conn.executemany(
                "INSERT INTO quota_counters (quota_id, key, period_start, used) "
                "VALUES (?, ?, ?, ?)",
                self.rows,
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
