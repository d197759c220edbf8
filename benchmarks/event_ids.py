"""What the layout of event ids costs the file ledger's inserts.

Builds two ledger files with limitry_local's own schema, fills each with N
events through raw ``sqlite3`` (ids random, as before ids began with the
clock, or time-ordered, as ``limitry_local.ids.new_id`` mints them now),
then times one event ``INSERT`` and ``COMMIT`` at a time (WAL,
``synchronous=NORMAL``: the default durability) with ids of the same
layout, the two files taking turns, and prints a table: median and p99 per
insert (p99 over samples of 500 inserts, each sample's mean), and the
ratio to the random layout.

    .venv/bin/python -m benchmarks.event_ids                    # 1M events
    .venv/bin/python -m benchmarks.event_ids --sizes 0 1000000 --inserts 20000
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.floors import LEDGER_INSERT
from limitry_local import Tracker
from limitry_local.ids import new_id

_ROUND = 500
"""Inserts per sample; the two layouts alternate by sample."""


def _random_id(_: float) -> str:
    return f"evt_{os.urandom(12).hex()}"


def _ordered_id(at: float) -> str:
    return new_id("evt", int(at * 1000))


LAYOUTS: dict[str, Callable[[float], str]] = {
    "random (before)": _random_id,
    "time-ordered (new_id)": _ordered_id,
}


def _row(event_id: str, at: float, i: int) -> tuple[object, ...]:
    """Every column of LEDGER_INSERT, as usage() fills them for a model call."""
    customer = f"cust_{i % 1000}"
    return (
        event_id,
        at,
        customer,
        "model_call",
        "gpt-4o",
        None,
        100,
        20,
        120,
        None,
        None,
        "{}",
        None,
        None,
        None,
    )


def _ledger(path: Path, events: int, make_id: Callable[[float], str]) -> sqlite3.Connection:
    Tracker(path).close()  # the schema, as limitry_local creates it
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.time() - 30 * 86_400
    conn.execute("BEGIN")
    for i in range(events):
        at = start + i * 0.002
        conn.execute(LEDGER_INSERT, _row(make_id(at), at, i))
    conn.execute("COMMIT")
    # The fill's WAL folded into the file now, not by the first timed commit.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn


def measure(events: int, inserts: int, workdir: Path) -> dict[str, list[float]]:
    """Per-insert microseconds of each layout, in samples of ``_ROUND`` inserts."""
    conns = {
        name: _ledger(workdir / f"ids-{i}-{events}.db", events, make_id)
        for i, (name, make_id) in enumerate(LAYOUTS.items())
    }
    samples: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for r in range(max(1, inserts // _ROUND)):
        for name, make_id in LAYOUTS.items():
            conn = conns[name]
            started = time.perf_counter_ns()
            for i in range(_ROUND):
                at = time.time()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(LEDGER_INSERT, _row(make_id(at), at, r + i))
                conn.execute("COMMIT")
            samples[name].append((time.perf_counter_ns() - started) / _ROUND / 1000)
    for conn in conns.values():
        conn.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--inserts", type=int, default=20_000, help="per layout and size")
    args = parser.parse_args()
    print("| events in ledger | id layout | median us/insert | p99 us (of means) | vs random |")
    print("|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            samples = measure(size, args.inserts, Path(tmp))
            base = statistics.median(samples["random (before)"])
            for name, values in samples.items():
                median = statistics.median(values)
                p99 = statistics.quantiles(values, n=100)[98] if len(values) > 1 else median
                print(f"| {size:,} | {name} | {median:.1f} | {p99:.1f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
