"""How much memory does rate-limit state take for N distinct keys?

One rate limit ``per=["customer_id"]`` (10 per hour) and N customers that
each send one event at the same instant: every key leaves a bucket below
capacity, so the store must keep all of them (past ``max_buckets`` it
refuses new keys with ``BucketStoreFull`` rather than drop one).  The
buckets are filled through the tracker's own rate-limit path, the half
of ``usage()`` that decides and stores buckets, without the ledger
write: an event row in SQLite would be counted too.

Each row runs in a fresh process.  It fills once untraced (fill time, RSS
delta from VmRSS) and once under tracemalloc (bytes allocated through
Python and still held, after ``gc.collect()``).  The last row sends the
largest N keys to a store bounded below N: it holds the first
``max_buckets`` and refuses the rest, without scanning itself each time.

    .venv/bin/python benchmarks/bucket_memory.py                  # 10k, 100k, 1M keys
    .venv/bin/python benchmarks/bucket_memory.py --sizes 2000 --bounded-max 500
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

from limitry_local import BucketStoreFull, Tracker
from limitry_local.buckets import BucketStore
from limitry_local.engine.admission import decide_rates
from limitry_local.testing import ManualClock
from limitry_local.tracker import DEFAULT_MAX_BUCKETS

LIMIT = 10
START = 1_800_000_000.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    keys: int
    max_buckets: int
    held: int
    traced_bytes: int
    rss_bytes: int
    fill_seconds: float
    refusals: int
    evictions: int

    @property
    def bytes_per_key(self) -> float:
        return self.traced_bytes / self.held


def new_tracker(max_buckets: int) -> Tracker:
    tracker = Tracker(clock=ManualClock(START), max_buckets=max_buckets)
    tracker.rate_limits.create(
        name="per-customer", limit_value=LIMIT, window="hour", per=["customer_id"]
    )
    return tracker


def fill(tracker: Tracker, keys: int) -> None:
    """One event per key, through what ``usage()`` runs for rate limits, minus the ledger."""
    engine = tracker.engine
    with engine.lock:
        engine.now()
        engine.definitions.refresh()
        for i in range(keys):
            dims = {"customer_id": f"c{i}", "event_type": "e"}
            try:
                outcomes = decide_rates(
                    engine.store,
                    engine.definitions.plan,
                    dims,
                    0,
                    engine.clock.bucket_time(),
                    take=True,
                )
            except BucketStoreFull:
                continue  # past max_buckets, every bucket below capacity: counted
            for o in outcomes:
                if not o.answer.allowed:
                    raise AssertionError(f"c{i} denied: the fill is not one event per key")
            engine.store.settle(keep=True)


def check_filled(tracker: Tracker, keys: int, max_buckets: int) -> int:
    """The buckets held are the ones ``usage()`` reads: the last key held has 1 token taken."""
    store = tracker.engine.store
    assert isinstance(store, BucketStore)
    held = len(store)
    if held != min(keys, max_buckets):
        raise AssertionError(f"{held} buckets held for {keys} keys, max_buckets={max_buckets}")
    last = min(keys, max_buckets) - 1
    status = tracker.usage(customer_id=f"c{last}", event_type="e").rate_limits[0]
    if status.remaining != LIMIT - 2:
        raise AssertionError(f"the last key's bucket was not stored: {status}")
    return held


def rss() -> int:
    """Resident set size in bytes (VmRSS); the peak from getrusage where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure(keys: int, max_buckets: int) -> Row:
    # Untraced: fill time and RSS.
    tracker = new_tracker(max_buckets)
    gc.collect()
    rss_before = rss()
    started = time.perf_counter()
    fill(tracker, keys)
    fill_seconds = time.perf_counter() - started
    gc.collect()
    rss_bytes = rss() - rss_before
    refusals, evictions = tracker.bucket_refusals, tracker.bucket_evictions
    if refusals != max(0, keys - max_buckets) or tracker.premature_bucket_evictions:
        raise AssertionError(f"{refusals} refusals for {keys} keys, max_buckets={max_buckets}")
    held = check_filled(tracker, keys, max_buckets)
    tracker.close()
    del tracker
    gc.collect()

    # Traced: what stays allocated once the fill is over.
    tracemalloc.start()
    tracker = new_tracker(max_buckets)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    fill(tracker, keys)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if (tracker.bucket_refusals, tracker.bucket_evictions) != (refusals, evictions):
        raise AssertionError("the traced fill refused differently from the untraced one")
    tracker.close()
    return Row(keys, max_buckets, held, traced, rss_bytes, fill_seconds, refusals, evictions)


def run_child(keys: int, max_buckets: int) -> Row:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(keys), str(max_buckets)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Row(**json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--bounded-max",
        type=int,
        default=None,
        help="max_buckets for the last row, which inserts max(--sizes) keys (default: a tenth)",
    )
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asdict(measure(*args.child))))
        return

    largest = max(args.sizes)
    bounded = args.bounded_max if args.bounded_max is not None else max(1, largest // 10)
    plan = [(size, DEFAULT_MAX_BUCKETS) for size in args.sizes] + [(largest, bounded)]
    rows = [run_child(keys, max_buckets) for keys, max_buckets in plan]

    print(
        f"Rate-limit buckets held in memory: 1 limit per customer_id ({LIMIT}/hour), "
        "one event per key, clock stopped\n"
    )
    print(
        "| keys | max_buckets | tracemalloc MiB | bytes/key | RSS delta MiB | fill seconds "
        "| refusals | evictions |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.keys:,} | {row.max_buckets:,} | {row.traced_bytes / MiB:.2f} "
            f"| {row.bytes_per_key:.0f} | {row.rss_bytes / MiB:.2f} | {row.fill_seconds:.2f} "
            f"| {row.refusals:,} | {row.evictions:,} |"
        )
    print(
        "\nbytes/key: tracemalloc bytes divided by the buckets held, min(keys, max_buckets);"
        "\nit includes the key tuple and its customer_id string, which the bucket keeps alive."
        "\nRSS delta: VmRSS after minus before the untraced fill; it adds allocator overhead"
        "\nand, for the bounded row, the refused calls' garbage not returned to the OS."
        "\nrefusals (tracker.bucket_refusals): new keys refused with BucketStoreFull (503)"
        "\nbecause all max_buckets buckets were below capacity; nothing was charged.  The"
        "\nclock is stopped, so no bucket refills and none can be dropped: evictions"
        "\n(tracker.bucket_evictions, full buckets dropped for a new key) stay 0.  Keep"
        "\nmax_buckets above the number of keys active within one window and both stay 0."
    )


if __name__ == "__main__":
    main()
