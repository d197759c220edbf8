"""Does a quota check cost the same at any ledger size?

Fills a file ledger with N events (through ``events.batch``, so the quota
counters are kept as in production), then times ``tracker.usage()`` with one
rate limit and one per-customer quota, and prints a table: median and p99
per call, and the ratio to the smallest ledger.

    .venv/bin/python benchmarks/quota_check.py                 # 1k, 100k, 1M events
    .venv/bin/python benchmarks/quota_check.py --sizes 1000 10000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from limitry_local import Tracker

CUSTOMERS = 1000


def fill(tracker: Tracker, events: int) -> None:
    batch = []
    for i in range(events):
        batch.append(
            {
                "customerId": f"cust_{i % CUSTOMERS}",
                "eventType": "model_call",
                "model": "gpt-4o",
                "inputTokens": 100,
                "outputTokens": 20,
            }
        )
        if len(batch) == 1000:
            tracker.events.batch(batch)
            batch = []
    if batch:
        tracker.events.batch(batch)


def measure(size: int, calls: int, workdir: Path) -> tuple[float, float, float, float]:
    path = workdir / f"ledger-{size}.db"
    with Tracker(path) as tracker:
        tracker.rate_limits.create(
            name="rpm", limit_value=10**12, window="minute", per=["customer_id"]
        )
        tracker.quotas.create(
            name="daily tokens",
            metric="total_tokens",
            limit_value=10**12,
            period="day",
            per=["customer_id"],
        )
        started = time.perf_counter()
        fill(tracker, size)
        fill_seconds = time.perf_counter() - started
        # A new quota counts the events already recorded: one pass over the ledger.
        started = time.perf_counter()
        tracker.quotas.create(
            name="monthly gpt-4o events",
            metric="total_events",
            limit_value=10**12,
            period="month",
            dimension_filters={"model": "gpt-4o"},
            per=["customer_id"],
        )
        create_seconds = time.perf_counter() - started
        timings = []
        for i in range(calls):
            customer = f"cust_{i % CUSTOMERS}"
            t0 = time.perf_counter_ns()
            tracker.usage(customer_id=customer, event_type="model_call", input_tokens=10)
            timings.append((time.perf_counter_ns() - t0) / 1000)
    timings.sort()
    p99 = timings[int(len(timings) * 0.99)]
    return statistics.median(timings), p99, fill_seconds, create_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(size, *measure(size, args.calls, Path(tmp))) for size in args.sizes]
    base = rows[0][1]
    print(f"usage() with 1 rate limit + 2 quotas, file ledger, {args.calls} calls per size\n")
    print(
        f"| events in ledger | median us | p99 us | median vs {rows[0][0]:,} "
        "| fill s | create a quota s |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size, median, p99, fill_s, create_s in rows:
        print(
            f"| {size:,} | {median:.1f} | {p99:.1f} | {median / base:.2f}x "
            f"| {fill_s:.1f} | {create_s:.2f} |"
        )


if __name__ == "__main__":
    main()
