"""The bucket memory benchmark keeps running: once, tiny."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bucket_memory.py"


def test_bucket_memory_benchmark_runs_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "2000"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == (
        "| keys | max_buckets | tracemalloc MiB | bytes/key | RSS delta MiB | fill seconds "
        "| refusals | evictions |"
    )
    cells = [[cell.strip().replace(",", "") for cell in row.split("|")[1:-1]] for row in rows[1:]]
    # One unbounded row per size, then the largest size in a store bounded at a tenth of it.
    assert [(int(c[0]), int(c[1])) for c in cells] == [(2000, 1_000_000), (2000, 200)]
    for keys, _, traced, per_key, rss, seconds, _, evictions in cells:
        assert float(traced) > 0
        assert float(per_key) > 0
        assert float(seconds) > 0
        float(rss)  # evictions free memory the process keeps: only the first row must grow
        assert int(keys) == 2000
        assert int(evictions) == 0  # the clock is stopped: no bucket is full again
    assert float(cells[0][4]) > 0
    assert [int(c[6]) for c in cells] == [0, 2000 - 200]
    # The table is followed by what refusals mean.
    assert "tracker.bucket_refusals" in done.stdout
