"""``python -m benchmarks --quick`` keeps running and prints every row (speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The peers come with the bench extra, which the dev extra (make test) includes.
from benchmarks.suite import WORKLOADS, config_from, parse_args

ROOT = Path(__file__).parents[1]


def _expected() -> list[tuple[str, str]]:
    """(workload, implementation) of every row ``--quick`` prints, in order."""
    config = config_from(parse_args(["--quick"]))
    return [(w.id, case.implementation) for w in WORKLOADS for case in w.cases(config)]


def test_quick_suite_prints_every_workload_and_implementation(tmp_path: Path) -> None:
    raw = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    # The run's own words when it fails: CI keeps only what the assertion prints.
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"
    out = done.stdout
    assert out.startswith("Machine: ")
    assert "SQLite " in out
    assert "limits 5.8.0" in out
    assert "pyrate-limiter 4.5.1" in out

    # Every row says what it does, below the table.
    assert ": None" not in out

    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0] == (
        "| workload | implementation | median us/op | p99 us/op | ops/s | vs ref | samples x ops |"
    )
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[1:]]
    expected = _expected()
    assert [(c[0].split()[0], c[1]) for c in cells] == expected
    # Every workload in the spec, every implementation side by side.
    assert {w for w, _ in expected} == {
        "a1",
        "a2",
        "b1",
        "b2",
        "b3",
        "c",
        "d1",
        "d2",
        "e1",
        "e2",
        "f1",
        "f2",
        "g",
        "h1",
        "h2",
        "h3",
        "i",
        "j",
    }
    implementations = {i for _, i in expected}
    for name in (
        "floor: dict token bucket",
        "floor: raw sqlite3, 1 commit per event",
        "floor: the contract's 201 models around a dict bucket and counter",
        "floor: the same, the request validated by its pydantic model",
        "floor: the contract's models around the ledger-schema floor",
        "floor: the contract's models, the ledger schema, 1 commit per 1000",
        "floor: the same without the counter read",
        "limits FixedWindow, MemoryStorage",
        "limits MovingWindow, MemoryStorage",
        "pyrate InMemoryBucket per key",
        "pyrate SQLiteBucket per key (rate only)",
        "limitry usage(), rate limit only, memory ledger",
        "limitry rate_limits.check() (peek)",
        "limitry usage(), durability=normal",
        "limitry usage(), durability=batched",
        "limitry usage(), memory ledger",
        "limitry usage(), 5 rate limits + 5 quotas",
        "limitry usage(), 2 threads, one Tracker",
        "limits FixedWindow, RedisStorage",
        "pyrate RedisBucket per key",
        "limitry usage(), RedisBuckets, memory ledger",
        "limitry usage(), PostgresLedger, RedisBuckets",
        "floor: raw psycopg, 1 process",
        "limitry usage(), PostgresLedger, 2 processes",
        "floor: raw sqlite3 on the ledger schema, 2 processes",
        "limitry usage(), SQLite file, 1 process",
        "floor: bare Starlette endpoint, the same 201 JSON",
        "floor: b1's contract floor over HTTP, 1 commit per event",
        "limitry POST /v1/track (serve, 1 worker)",
        "Limitry 1.0 checks.create in process, file ledger",
        "limitry SDK 1.0 checks.create over HTTP (serve, 1 worker)",
    ):
        assert name in implementations
    assert sum(1 for w, _ in expected if w == "c") == 3
    # h: each engine's floor beside usage() at each P (1 and 2 when --quick), interleaved.
    for workload, floor, usage in (
        ("h1", "floor: raw psycopg", "limitry usage(), PostgresLedger"),
        ("h2", "floor: raw psycopg", "limitry usage(), PostgresLedger"),
        ("h3", "floor: raw sqlite3 on the ledger schema", "limitry usage(), SQLite file"),
    ):
        assert [i for w, i in expected if w == workload] == [
            f"{name}, {count}" for count in ("1 process", "2 processes") for name in (floor, usage)
        ]
    # g: each grouping and each interval, over the whole month and over one day.
    assert [i for w, i in expected if w == "g"] == [
        f"{report}, {span}"
        for report in (
            "breakdown(model)",
            "breakdown(customer_id)",
            "breakdown(event_type)",
            "breakdown(provider)",
            "timeseries(hour)",
            "timeseries(day)",
            "timeseries(week)",
        )
        for span in ("30 days", "1 day")
    ]

    for workload, implementation, median, p99, ops, ratio, samples in cells:
        assert float(median) > 0, (workload, implementation)
        assert float(p99) >= float(median), (workload, implementation)
        assert float(ops.replace(",", "")) > 0, (workload, implementation)
        assert ratio.endswith(("x", "x (ref)"))
        assert float(ratio.split("x")[0]) > 0
        count, _, batch = samples.partition(" x ")
        assert int(count.replace(",", "")) > 0
        assert int(batch.split()[0].replace(",", "")) > 0
        if workload.startswith("h"):
            assert samples.endswith(implementation.rpartition(", ")[2])  # "x 2 processes"
    # One reference per workload, and it is 1.00x.
    references = [c for c in cells if c[5].endswith("(ref)")]
    assert [c[0].split()[0] for c in references] == sorted({w for w, _ in expected})
    assert all(c[5] == "1.00x (ref)" for c in references)
    # Each group's reference is named under the table, with the c size ratio.
    for workload in {w for w, _ in expected}:
        assert f"\n- {workload}: " in out
    assert "What each row does:" in out
    # h: events/s at each P, the scaling, and usage() over the floor at the same P.
    for workload in ("h1", "h2", "h3"):
        assert f"\n- {workload}: events/s at P = 1, 2: floor " in out
        assert "usage() / floor at the same P: " in out

    data = json.loads(raw.read_text())
    assert data["config"]["quick"] is True
    assert [(r["workload"], r["implementation"]) for r in data["rows"]] == expected
    for row in data["rows"]:
        if row["workload"].startswith("h"):
            processes = int(row["implementation"].rpartition(", ")[2].split()[0])
            assert row["processes"] == processes
            # Every call the workers made, warm-up included, is in the ledger (the run checks).
            assert row["events"] > row["warmup_ops"] == processes * 10
        else:
            assert row["processes"] == 0
        assert row["per_op_ns"]
        assert all(x > 0 for x in row["per_op_ns"])
        assert row["median_us"] > 0
        assert row["ops_per_s"] > 0


def test_only_runs_the_chosen_workloads() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "a1", "--only", "b3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert {line.split("|")[1].split()[0] for line in lines} == {"a1", "b3"}
