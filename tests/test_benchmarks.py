"""Benchmarks are not tests, but they must keep running: each runs once, tiny."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_quota_check_benchmark_runs_and_prints_its_table() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "quota_check.py"),
            "--sizes",
            "10",
            "200",
            "--calls",
            "20",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| events in ledger")
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["10", "200"]
