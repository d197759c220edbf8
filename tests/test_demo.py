"""The demo runs as a user runs it: a real ``python -m limitry_local demo`` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from limitry_local import Tracker


def test_demo_prints_outcomes_and_usage_read_back_from_the_file(tmp_path: Path) -> None:
    ledger = tmp_path / "demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "limitry_local", "demo", "--db", str(ledger)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = done.stdout
    assert out.count("  201 rate") == 9
    assert out.count("X-RateLimit-Reset: ") == 12
    assert out.count("X-Quota-Period: day") == 2
    assert out.count("429 Rate limit exceeded") == 1
    assert out.count("429 Quota exceeded") == 2
    assert "9 events recorded, 3 denied" in out
    # The denial counters agree with the 429s printed.
    assert "  quota      'daily tokens'         denied 2\n" in out
    assert "  rate_limit '4 calls per minute'   denied 1\n" in out
    # The usage table agrees with the ledger the demo left behind.
    with Tracker(ledger) as reopened:
        acme = reopened.customers.get_usage("acme")
        assert acme.total_events == 5
        assert f"{acme.total_tokens:>8,}" in out
        assert reopened.ledger.event_count() == 9


def test_demo_runs_twice_on_the_same_file(tmp_path: Path) -> None:
    ledger = tmp_path / "demo.db"
    command = [
        *(sys.executable, "-m", "limitry_local", "demo"),
        *("--db", str(ledger), "--date", "2026-11-25"),
    ]
    first = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    assert first.stdout == second.stdout
    # 09:00 UTC on the day given: the first reset is 15 s after 1795597200.
    assert "X-RateLimit-Reset: 1795597215" in first.stdout


def test_demo_leaves_a_file_it_did_not_make_alone(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a ledger\n")
    command = [sys.executable, "-m", "limitry_local", "demo", "--db", str(notes)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "is not a ledger the demo made" in refused.stderr
    assert notes.read_text() == "not a ledger\n"
    forced = subprocess.run(
        [*command, "--force"], capture_output=True, text=True, timeout=60, check=False
    )
    assert forced.returncode == 0, forced.stderr
    assert "9 events recorded, 3 denied" in forced.stdout


def test_demo_leaves_a_ledger_that_only_shares_its_names_alone(tmp_path: Path) -> None:
    """Found in review: a real ledger whose limits were named as the demo's, with
    events of "acme" only, was taken for the demo's and replaced."""
    path = tmp_path / "real.db"
    with Tracker(path) as tracker:
        tracker.rate_limits.create(
            name="4 calls per minute", limit_value=400, window="hour", per=["customer_id"]
        )
        tracker.quotas.create(
            name="daily tokens", metric="total_tokens", limit_value=50_000_000, period="day"
        )
        for _ in range(20):
            tracker.usage(customer_id="acme", event_type="call")
    done = subprocess.run(
        [sys.executable, "-m", "limitry_local", "demo", "--db", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    with Tracker(path) as tracker:
        assert tracker.ledger.event_count() == 20
