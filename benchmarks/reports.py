"""A ledger file of N events for the usage-report workload (g), built fast and cached.

The events go in with ``executemany`` in the ledger's own schema (the file
is created by limitry_local, the secondary indexes dropped during the load
and rebuilt from their own ``CREATE INDEX`` text), like the quota ledgers of
:mod:`benchmarks.ledgers`: a million ``events.batch`` calls' worth of
validation would take longer than everything the workload measures.

The data: ``events`` events recorded in time order over the 30 days before
:data:`END`, from 1,000 customers, on 10 models of 3 providers (one event in
twenty has no model and no provider: the null group), of 3 event types, with
token counts and fractional cents drawn from a seeded generator, so every
build is the same.  :func:`expected` sums a range with raw SQL, which the
workload checks every report against.

Built ledgers are cached beside workload c's, named by size and by the hash
of the schema limitry_local creates, so a schema change (an index added)
builds anew.  The workload only reads them.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from limitry_local import Tracker
from limitry_local.ledger import EVENT_COLUMNS
from limitry_local.metrics import micro_cents

END = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
DAYS = 30
DAY = 86_400
START = END - DAYS * DAY
CUSTOMERS = 1000
MODELS = {
    "gpt-4o": "openai",
    "gpt-4o-mini": "openai",
    "o3": "openai",
    "text-embedding-3-small": "openai",
    "claude-sonnet-4": "anthropic",
    "claude-haiku-4": "anthropic",
    "claude-opus-4": "anthropic",
    "gemini-2.5-pro": "google",
    "gemini-2.5-flash": "google",
    "gemini-embedding": "google",
}
EVENT_TYPES = ("model_call", "embedding", "tool_call")
BUILD_FORMAT = 1
"""Bump when the generated data changes, so cached ledgers are rebuilt."""


@dataclass(frozen=True)
class ReportLedger:
    path: Path
    events: int
    build_seconds: float
    """0 when the cached file was reused."""


def _rows(events: int) -> Iterator[tuple[object, ...]]:
    rng = random.Random(events)
    models = list(MODELS)
    step = DAYS * DAY / events
    for i in range(events):
        model = None if rng.random() < 0.05 else rng.choice(models)
        inputs = rng.randrange(10, 4000)
        outputs = rng.randrange(0, 1000)
        cents = round((inputs * 0.00025 + outputs * 0.001) * 100, 6)
        yield (
            f"evt_{i:024x}",
            START + i * step,
            f"cust_{rng.randrange(CUSTOMERS)}",
            rng.choice(EVENT_TYPES),
            model,
            None if model is None else MODELS[model],
            inputs,
            outputs,
            inputs + outputs,
            rng.randrange(50, 5000),
            cents,
            "{}",
            None,
            None,
            micro_cents(cents),  # as the tracker stores it, what reports sum
        )


def _build(path: Path, events: int) -> None:
    with Tracker(path):
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'events' AND sql NOT NULL"
        ).fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})",
            _rows(events),
        )
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def _event_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(count)
    finally:
        conn.close()


def report_ledger(events: int, directory: Path, schema: str) -> ReportLedger:
    """A ledger of ``events`` events in ``directory``: the cached one, or built now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"report-ledger-{events}-{schema}-{BUILD_FORMAT}.db"
    if path.exists():
        try:
            if _event_count(path) == events:
                return ReportLedger(path, events, 0.0)
        except sqlite3.Error:
            pass
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    for stale in directory.glob(f"report-ledger-{events}-*.db*"):
        if not stale.name.startswith(path.name):
            stale.unlink(missing_ok=True)
    building = directory / f".building-report-{events}-{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    _build(building, events)
    seconds = time.perf_counter() - started
    os.replace(building, path)
    return ReportLedger(path, events, seconds)


def expected(path: Path, start: float, end: float) -> tuple[int, int]:
    """``(events, totalTokens)`` in ``[start, end)``, summed by raw SQL."""
    conn = sqlite3.connect(path)
    try:
        count, tokens = conn.execute(
            "SELECT count(*), coalesce(sum(total_tokens), 0) FROM events WHERE ts >= ? AND ts < ?",
            (start, end),
        ).fetchone()
        return int(count), int(tokens)
    finally:
        conn.close()
