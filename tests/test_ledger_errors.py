"""A ledger file that cannot be used fails with a LedgerError that says why, never a traceback
from inside the library; a ledger an older limitry_local wrote is migrated in place."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from limitry_local import LedgerError, LimitryError, Tracker
from limitry_local.ledger import SCHEMA_VERSION
from limitry_local.testing import ManualClock

LEDGERS = Path(__file__).parent / "ledgers"
EVENT = {"customer_id": "cust_1", "event_type": "model_call", "total_tokens": 10}


def open_fails(path: Path, reason: str) -> LedgerError:
    with pytest.raises(LedgerError) as caught:
        Tracker(path)
    assert caught.value.reason == reason, caught.value
    assert str(path) in str(caught.value)
    assert caught.value.__cause__ is None or isinstance(caught.value.__cause__, sqlite3.Error)
    return caught.value


def test_a_text_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a ledger\n" * 200)
    error = open_fails(path, "not_a_database")
    assert "not a SQLite database" in str(error)
    assert path.read_text().startswith("these are my notes")  # left as it was


def test_random_bytes_are_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "noise.db"
    path.write_bytes(os.urandom(8192))
    open_fails(path, "not_a_database")


def test_a_ledger_with_damaged_pages_is_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path) as tracker:
        for _ in range(50):
            tracker.usage(EVENT)
    # Keep the header page, scribble over every other page.
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    error = open_fails(path, "corrupt")
    assert "backup" in str(error)


def test_someone_elses_database_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    open_fails(path, "not_a_ledger")
    with closing(sqlite3.connect(path)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["users"]


def test_a_directory_cannot_be_a_ledger(tmp_path: Path) -> None:
    open_fails(tmp_path, "cannot_open")


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    error = open_fails(tmp_path / "nowhere" / "usage.db", "cannot_open")
    assert "directory" in str(error)


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    Tracker(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.commit()
    error = open_fails(path, "schema_version")
    assert "upgrade limitry_local" in str(error)


def test_a_garbled_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    Tracker(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE meta SET value = 'two' WHERE key = 'schema_version'")
        conn.commit()
    open_fails(path, "schema_version")


def test_a_write_locked_past_the_timeout_fails_naming_the_timeout(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock, timeout=0.05) as tracker:
        tracker.usage(EVENT)
        with closing(sqlite3.connect(ledger_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(LedgerError) as caught:
                tracker.usage(EVENT)
            assert caught.value.reason == "locked"
            assert "0.05s" in str(caught.value)
            with pytest.raises(LedgerError, match="locked"):
                tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
            other.execute("ROLLBACK")
        # The lock gone, the same tracker goes on; the failed calls left nothing.
        tracker.usage(EVENT)
        assert tracker.ledger.event_count() == 2
        assert tracker.quotas.list().data == []


# --- read-only files and directories -------------------------------------------------
# Root ignores permission bits; as root (CI here) the file or directory is made
# immutable with chattr, which binds root too.


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)


def test_a_read_only_ledger_file_is_reported(ledger_path: Path) -> None:
    with Tracker(ledger_path) as tracker:
        tracker.usage(EVENT)
    with read_only(ledger_path):
        error = open_fails(ledger_path, "read_only")
    assert "writable" in str(error)


def test_a_ledger_in_a_read_only_directory_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder):
        error = open_fails(folder / "usage.db", "cannot_open")
    assert "writable" in str(error)


# --- -wal and -shm files SQLite cannot write --------------------------------------------
# Opened in a child process: a -shm SQLite cannot write was seen to kill the
# interpreter with SIGBUS inside PRAGMA journal_mode = WAL (issue 20).  0.2
# opened such a ledger and failed at the first write, or died.

OPEN_CHILD = """
import sys
from limitry_local import LedgerError, Tracker
try:
    tracker = Tracker(sys.argv[1])
except LedgerError as exc:
    print("LedgerError", exc.reason, exc)
else:
    print("opened")
"""


def open_in_child(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", OPEN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)  # -7 would be SIGBUS
    return done.stdout.strip()


@pytest.fixture
def used_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    with Tracker(path) as tracker:
        tracker.usage(EVENT)
    return path


@pytest.mark.parametrize("suffix", ["-shm", "-wal"])
def test_a_wal_file_that_cannot_be_written_is_a_ledger_error_at_open(
    used_ledger: Path, suffix: str
) -> None:
    side = Path(f"{used_ledger}{suffix}")
    side.write_bytes(b"\0" * 32768 if suffix == "-shm" else b"")
    with read_only(side):
        out = open_in_child(used_ledger)
    assert out.startswith(f"LedgerError read_only ledger {used_ledger} is read-only: {side}")
    assert "must be writable" in out
    # Once it can be written again the ledger opens with its event.
    side.unlink()
    with Tracker(used_ledger) as tracker:
        assert tracker.ledger.event_count() == 1


def test_a_shm_that_is_a_directory_is_a_ledger_error_at_open(used_ledger: Path) -> None:
    side = Path(f"{used_ledger}-shm")
    side.mkdir()
    out = open_in_child(used_ledger)
    assert out == (
        f"LedgerError cannot_open cannot open ledger {used_ledger}: {side} is not a regular "
        "file; remove it (SQLite keeps its -wal and -shm files beside the ledger)"
    )


def test_two_trackers_on_one_file_in_one_process_still_share_it(used_ledger: Path) -> None:
    """The look at -wal and -shm opens nothing, so it drops no lock of a connection open here."""
    with Tracker(used_ledger) as first, Tracker(used_ledger) as second:
        first.usage(EVENT)
        second.usage(EVENT)
        assert first.ledger.event_count() == second.ledger.event_count() == 3


# --- migration ---------------------------------------------------------------------------


def test_a_version_1_ledger_is_migrated_in_place(tmp_path: Path) -> None:
    """tests/ledgers/v1.db was written by limitry_local 0.1.0 (schema 1)."""
    path = tmp_path / "old.db"
    shutil.copy(LEDGERS / "v1.db", path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            "1",
        )
        before_events = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
        before_counters = conn.execute("SELECT * FROM quota_counters ORDER BY 1, 2").fetchall()

    clock = ManualClock(1_795_600_800)  # 2026-11-25 10:00 UTC, the day v1.db was written
    with Tracker(path, clock=clock) as tracker:
        [quota] = tracker.quotas.list().data
        [limit] = tracker.rate_limits.list().data
        assert (quota.name, quota.limit_value, quota.per) == ("daily tokens", 1000, ["customer_id"])
        assert (limit.name, limit.window) == ("rpm", "minute")
        # Version 6's fail_mode reads as the default, and can be set.
        assert (quota.fail_mode, limit.fail_mode) == ("closed", "closed")
        assert tracker.rate_limits.update(limit.id, fail_mode="open").fail_mode == "open"
        assert tracker.customers.get_usage("cust_1").total_tokens == 150
        # The idempotency key recorded by 0.1.0 still answers its first response.
        replay = tracker.usage(customer_id="cust_1", event_type="model_call", idempotency_key="k1")
        assert replay.id == before_events[0][1]
        check = tracker.quotas.check({"customer_id": "cust_1"})
        assert check.quotas[0].used == 150
        # Tables later versions added work on the migrated file (alerts: version 5).
        tracker.quotas.alerts.create(quota.id, threshold=15)
        tracker.usage(EVENT)
        assert [e.used for e in tracker.quotas.alerts.history().data] == [160]

    with closing(sqlite3.connect(path)) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert version == (str(SCHEMA_VERSION),)
        after_events = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
        # Every old column kept as it was; columns a migration added come after.
        width = len(before_events[0])
        assert [row[:width] for row in after_events[: len(before_events)]] == before_events
        # cached_input_tokens (version 4) is NULL; cost_micro_cents (version 8) is
        # the cost counted by the one rule, what reports summed before it was stored.
        assert [row[width:] for row in after_events[: len(before_events)]] == [
            (None, None),
            (None, 1_250_000),
            (None, None),
        ]
        after_counters = {
            (q, k, s): used for q, k, s, used in conn.execute("SELECT * FROM quota_counters")
        }
        for q, k, s, used in before_counters:
            expected = used + (10 if k == '["cust_1"]' else 0)
            assert after_counters[q, k, s] == expected
    # And it opens again as a current ledger.
    Tracker(path).close()


def test_a_ledger_whose_directory_became_read_only_is_reported(tmp_path: Path) -> None:
    # WAL keeps -wal and -shm files beside the ledger: the directory must be writable too.
    folder = tmp_path / "ledgers"
    folder.mkdir()
    path = folder / "usage.db"
    with Tracker(path) as tracker:
        tracker.usage(EVENT)
    with read_only(folder), pytest.raises(LedgerError) as caught, Tracker(path) as tracker:
        tracker.usage(EVENT)
    assert caught.value.reason in {"read_only", "cannot_open"}
    assert "writable" in str(caught.value)


@pytest.mark.parametrize(
    ("statement", "what"),
    [
        ("DELETE FROM meta WHERE key = 'definitions_version'", "definitions_version"),
        ("UPDATE meta SET value = 'x' WHERE key = 'definitions_version'", "definitions_version"),
        ("UPDATE quotas SET per = '{not json'", "quotas"),
        ("UPDATE quotas SET metric = 'furlongs'", "Quota"),
    ],
)
def test_a_damaged_ledger_is_reported_corrupt(ledger_path: Path, statement: str, what: str) -> None:
    with Tracker(ledger_path) as tracker:
        tracker.quotas.create(name="q", metric="total_events", limit_value=5, period="day")
    with closing(sqlite3.connect(ledger_path)) as conn:
        conn.execute(statement)
        conn.commit()
    error = open_fails(ledger_path, "corrupt")
    assert what in str(error)


@pytest.mark.parametrize(
    "options",
    [{"timeout": float("inf")}, {"durability": "batched", "flush_ms": float("inf")}],
)
def test_infinite_waits_are_refused(ledger_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"timeout|flush_ms"):
        Tracker(ledger_path, **options)


@pytest.mark.parametrize("durability", ["normal", "batched"])
def test_every_call_on_a_closed_tracker_says_it_is_closed(
    ledger_path: Path, durability: str
) -> None:
    tracker = Tracker(ledger_path, durability=durability)  # type: ignore[arg-type]
    quota = tracker.quotas.create(name="q", metric="total_events", limit_value=5, period="day")
    tracker.close()
    calls: list[Callable[[], object]] = [
        lambda: tracker.usage(EVENT),
        lambda: tracker.events.ingest(EVENT),
        lambda: tracker.events.batch([EVENT]),
        tracker.events.list,
        lambda: tracker.quotas.create(name="r", metric="total_events", limit_value=1, period="day"),
        lambda: tracker.quotas.delete(quota.id),
        tracker.quotas.list,
        lambda: tracker.rate_limits.check({}),
        lambda: tracker.customers.get_usage("c"),
    ]
    for call in calls:
        with pytest.raises(LimitryError, match="this Tracker is closed"):
            call()
