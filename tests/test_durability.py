"""Durability modes: what each commits, and when.

Another connection (a plain ``sqlite3`` reader) shows what is committed,
which is what survives a crash.  Real subprocesses show what survives exit
and SIGKILL.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from limitry_local import LedgerError, QuotaExceeded, Tracker
from limitry_local.ledger import Ledger
from limitry_local.limitry import Limitry
from limitry_local.testing import ManualClock
from tests.conftest import START

EVENT = {"customer_id": "cust_1", "event_type": "model_call", "total_tokens": 10}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by a fresh interpreter from the repository's root, output captured."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        check=False,
    )


def committed(path: Path) -> int:
    """Events another connection can see: what a crash now would keep."""
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def sqlite_ledger(tracker: Tracker) -> Ledger:
    ledger = tracker.ledger
    assert isinstance(ledger, Ledger)
    return ledger


def synchronous(tracker: Tracker) -> int:
    return int(sqlite_ledger(tracker).db.execute("PRAGMA synchronous").fetchone()[0])


def eventually(condition: object, seconds: float = 10.0) -> bool:
    """Poll ``condition`` (a callable) until true; a generous bound, not a speed test."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return bool(condition())


@pytest.fixture
def batched(ledger_path: Path, clock: ManualClock) -> Iterator[Tracker]:
    # A flush_ms far beyond the test's length: only counts, flush() and close() commit.
    with Tracker(
        ledger_path, clock=clock, durability="batched", flush_events=5, flush_ms=600_000
    ) as tracker:
        yield tracker


def test_normal_is_the_default_and_commits_every_event(
    file_tracker: Tracker, ledger_path: Path
) -> None:
    assert file_tracker.ledger.durability == "normal"
    assert synchronous(file_tracker) == 1  # NORMAL
    file_tracker.usage(EVENT)
    assert committed(ledger_path) == 1
    mode = sqlite_ledger(file_tracker).db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_full_syncs_every_commit(ledger_path: Path, clock: ManualClock) -> None:
    with Tracker(ledger_path, clock=clock, durability="full") as tracker:
        assert synchronous(tracker) == 2  # FULL
        tracker.usage(EVENT)
        assert committed(ledger_path) == 1


def test_batched_commits_every_flush_events(batched: Tracker, ledger_path: Path) -> None:
    for _ in range(4):
        batched.usage(EVENT)
    assert committed(ledger_path) == 0
    batched.usage(EVENT)
    assert committed(ledger_path) == 5
    batched.usage(EVENT)
    assert committed(ledger_path) == 5


def test_batched_reads_see_the_open_batch(batched: Tracker) -> None:
    batched.quotas.create(name="q", metric="total_tokens", limit_value=25, period="day")
    batched.usage(EVENT)
    batched.usage(EVENT)
    assert batched.customers.get_usage("cust_1").total_tokens == 20
    with pytest.raises(QuotaExceeded):
        batched.usage(EVENT)  # the quota counts uncommitted events too
    assert len(batched.events.list().data) == 2


def test_a_denial_inside_a_batch_undoes_only_itself(batched: Tracker, ledger_path: Path) -> None:
    batched.quotas.create(name="q", metric="total_tokens", limit_value=30, period="day")
    batched.usage(EVENT)
    with pytest.raises(QuotaExceeded):
        batched.usage({**EVENT, "total_tokens": 25})
    batched.usage(EVENT)
    batched.flush()
    assert committed(ledger_path) == 2
    assert list(batched.ledger.counters().values()) == [20]


def test_flush_close_and_the_context_manager_commit(ledger_path: Path, clock: ManualClock) -> None:
    tracker = Tracker(ledger_path, clock=clock, durability="batched", flush_ms=600_000)
    tracker.usage(EVENT)
    tracker.flush()
    assert committed(ledger_path) == 1
    tracker.usage(EVENT)
    tracker.close()
    assert committed(ledger_path) == 2
    with Tracker(ledger_path, clock=clock, durability="batched", flush_ms=600_000) as again:
        again.usage(EVENT)
    assert committed(ledger_path) == 3


def test_batched_commits_within_flush_ms_with_no_further_calls(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock, durability="batched", flush_ms=20) as tracker:
        tracker.usage(EVENT)
        # The timer thread commits; nothing else touches the tracker.
        assert eventually(lambda: committed(ledger_path) == 1)


def test_limit_definitions_commit_at_once_in_batched_mode(
    batched: Tracker, ledger_path: Path
) -> None:
    batched.usage(EVENT)
    batched.quotas.create(name="q", metric="total_events", limit_value=9, period="day")
    # The definition and the event before it are both committed.
    assert committed(ledger_path) == 1
    with closing(sqlite3.connect(ledger_path)) as conn:
        assert conn.execute("SELECT count(*) FROM quotas").fetchone()[0] == 1


def test_limitry_limits_commit_at_once_in_batched_mode(batched: Tracker, ledger_path: Path) -> None:
    """Found in review: a Limitry 1.0 limit created while a batch was open joined
    it, and a SIGKILL then lost a limit whose creation had been answered."""
    batched.usage(EVENT)
    Limitry(batched).limits.create(subject={"kind": "user"}, amount=200, window="month")
    assert committed(ledger_path) == 1  # the batch before it, too
    with closing(sqlite3.connect(ledger_path)) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1


def test_batched_reads_the_definitions_version_once_per_batch(
    batched: Tracker, ledger_path: Path, clock: ManualClock
) -> None:
    ledger = sqlite_ledger(batched)
    reads: list[str] = []
    ledger.db.conn.set_trace_callback(reads.append)
    for _ in range(4):
        batched.usage(EVENT)  # one batch: the write lock is held throughout
    batched.usage(EVENT)  # the fifth event commits the batch
    batched.usage(EVENT)  # a new batch, a new read
    ledger.db.conn.set_trace_callback(None)
    version_reads = [sql for sql in reads if "key = 'definitions_version'" in sql]
    assert len(version_reads) == 2


def test_batched_sees_a_limit_another_tracker_made_between_batches(
    batched: Tracker, ledger_path: Path, clock: ManualClock
) -> None:
    batched.usage(EVENT)
    batched.flush()  # lets the other writer in
    with Tracker(ledger_path, clock=clock) as other:
        # It counts the event already recorded: 10 of 25.
        other.quotas.create(name="q", metric="total_tokens", limit_value=25, period="day")
    batched.usage(EVENT)  # 20 of 25
    with pytest.raises(QuotaExceeded):
        batched.usage(EVENT)


def test_an_idempotent_replay_does_not_hold_a_batch_open(
    batched: Tracker, ledger_path: Path
) -> None:
    batched.usage({**EVENT, "idempotency_key": "k"})
    batched.flush()
    batched.usage({**EVENT, "idempotency_key": "k"})
    # No open transaction: another connection can write.
    with closing(sqlite3.connect(ledger_path, timeout=0)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")


def test_an_in_memory_ledger_ignores_durability(clock: ManualClock) -> None:
    with Tracker(clock=clock, durability="batched") as tracker:
        assert tracker.ledger.durability == "normal"
        tracker.usage(EVENT)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"durability": "fast"}, "durability must be one of"),
        ({"flush_events": 0}, "flush_events"),
        ({"flush_events": True}, "flush_events"),
        ({"flush_ms": 0}, "flush_ms"),
        ({"flush_ms": "10"}, "flush_ms"),
    ],
)
def test_bad_durability_options_are_refused(
    ledger_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Tracker(ledger_path, **options)  # type: ignore[arg-type]
    assert not ledger_path.exists()


# --- real processes -----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from limitry_local import Tracker

    path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tracker = Tracker(path, durability=mode, flush_events=50, flush_ms=100)
    print("ready", flush=True)
    i = 0
    while count < 0 or i < count:
        answer = tracker.usage(customer_id=f"c{i % 7}", event_type="e", total_tokens=i)
        print(answer.id, time.monotonic(), flush=True)
        i += 1
    # No close(): exit must flush a batched ledger by itself.
    """
)


def run_child(path: Path, mode: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def rest_of_output(child: subprocess.Popen[str]) -> str:
    # Read through the text wrapper: readline() may have buffered lines that
    # communicate(), which reads the raw pipe, would never see.
    assert child.stdout is not None
    out = child.stdout.read()
    child.wait(timeout=60)
    return out


def acknowledged_lines(out: str) -> list[list[str]]:
    """Whole lines only: a line the kill cut short was never acknowledged."""
    return [line.split() for line in out.split("\n")[:-1]]


def event_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


def test_a_batched_ledger_is_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    child = run_child(path, "batched", 30)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    acknowledged = {line.split()[0] for line in out.splitlines()[1:]}
    assert len(acknowledged) == 30
    assert event_ids(path) == acknowledged


def test_batched_loses_at_most_its_bound_when_killed(tmp_path: Path) -> None:
    """SIGKILL loses only the open batch: at most flush_events events, all recent."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for cycle in range(5):
        path = tmp_path / f"kill{cycle}.db"
        child = run_child(path, "batched", -1)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        out = rest_of_output(child)
        acked = [(words[0], float(words[1])) for words in acknowledged_lines(out)]
        kept = event_ids(path)
        lost = [(event_id, at) for event_id, at in acked if event_id not in kept]
        where = f"seed {seed}, cycle {cycle}"
        # At most the one event in flight was kept without being acknowledged.
        assert len(kept - {event_id for event_id, _ in acked}) <= 1, where
        assert len(lost) <= 50, f"{where}: lost {len(lost)} > flush_events"
        # Every lost event was acknowledged within the last flush_ms (100 ms)
        # plus scheduling slack before the kill.
        assert all(killed_at - at < 1.0 for _, at in lost), where
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", where


def test_normal_mode_loses_nothing_acknowledged_when_killed(tmp_path: Path) -> None:
    path = tmp_path / "normal.db"
    child = run_child(path, "normal", -1)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    out = rest_of_output(child)
    acked = {words[0] for words in acknowledged_lines(out)}
    assert acked, "the child acknowledged nothing before the kill"
    assert acked <= event_ids(path)


def test_events_sent_before_a_clock_step_back_keep_their_period(
    tmp_path: Path,
) -> None:
    # Not durability, but what a reopened ledger shows: stamps never go back.
    clock = ManualClock(START)
    with Tracker(tmp_path / "t.db", clock=clock) as tracker:
        first = tracker.usage(EVENT)
        clock.advance(-3600)
        second = tracker.usage(EVENT)
        times = {e.id: e.created_at.timestamp() for e in tracker.events.list().data}
    assert times[first.id] == times[second.id] == START


def test_flush_events_counts_events_not_calls(ledger_path: Path, clock: ManualClock) -> None:
    with Tracker(
        ledger_path, clock=clock, durability="batched", flush_events=10, flush_ms=600_000
    ) as tracker:
        tracker.events.batch([EVENT] * 9)
        assert committed(ledger_path) == 0
        tracker.events.batch([EVENT] * 30)  # one call, 30 events: past the bound, committed
        assert committed(ledger_path) == 39


def test_a_dropped_batched_tracker_commits_its_batch(ledger_path: Path, clock: ManualClock) -> None:
    tracker = Tracker(ledger_path, clock=clock, durability="batched", flush_ms=600_000)
    for _ in range(5):
        tracker.usage(EVENT)
    assert committed(ledger_path) == 0
    del tracker
    gc.collect()
    assert eventually(lambda: committed(ledger_path) == 5)


FULL_DISK = textwrap.dedent(
    """
    import os, resource, signal, sqlite3, sys
    from limitry_local import LedgerError, Tracker

    # The file may not grow past its size now: a real EFBIG from the kernel.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path, mode = sys.argv[1], sys.argv[2]
    tracker = Tracker(path, durability="batched", flush_ms=600_000)
    other = Tracker(path)
    tracker.usage(customer_id="warm", event_type="e")
    tracker.flush()
    size = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
    for i in range(200):
        tracker.usage(customer_id=f"c{i}", event_type="e", properties={"pad": "x" * 200})
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    if mode == "flush":
        try:
            tracker.flush()
        except LedgerError as exc:
            print("flush:", exc.reason, exc)
    else:
        try:
            tracker.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
        except LedgerError as exc:
            print("create:", exc.reason, exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    try:
        tracker.usage(customer_id="after", event_type="e")
        print("next: ok")
    except LedgerError as exc:
        print("next:", exc.reason, exc)
    tracker.flush()  # a write commits again: calls are accepted again
    tracker.usage(customer_id="after", event_type="e")
    print("after flush: ok")
    tracker.flush()  # the open batch holds the write lock; let the other Tracker write
    # Another Tracker adds a rate limit of 1 per hour: the first must enforce it.
    other.rate_limits.create(name="r", limit_value=1, window="hour")
    outcomes = []
    for _ in range(2):
        try:
            tracker.usage(customer_id="x", event_type="e")
            outcomes.append("admitted")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    print("then:", *outcomes)
    """
)


@pytest.mark.parametrize("mode", ["flush", "definition"])
def test_a_batch_lost_to_a_full_disk_is_reported_not_hidden(tmp_path: Path, mode: str) -> None:
    done = run_script(FULL_DISK, str(tmp_path / "full.db"), mode)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    first = lines[0]
    assert first.split()[1] in {"disk_full", "io"}, first
    assert "the open batch of 200 events was lost" in first
    assert "refused with this error until tracker.flush() commits again" in first
    # The next call is refused with the same error, though the disk has room
    # again: nothing more is acknowledged until a flush commits (issue 20).
    assert lines[1] == "next: " + first.split(": ", 1)[1]
    assert lines[2] == "after flush: ok"
    # A failed definition change must not leave the tracker blind to later ones.
    assert lines[3] == "then: admitted RateLimitExceeded"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs), mounted for the test and unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip(
            "mounting a 2 MiB tmpfs needs root (CI runs as root); the RLIMIT_FSIZE "
            "tests above make the disk full without it"
        )
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        gc.collect()  # a Tracker a failed test left open holds files on it
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_full_disk_in_batched_mode_loses_one_batch_then_refuses(tiny_disk: Path) -> None:
    """Issue 20: on a 2 MiB file system 0.2 acknowledged 5,958 calls and stored 1,800.

    Each lost batch was told to the one call whose flush met it, and the
    next calls started new batches that were lost in turn.  Now the first
    loss makes every call raise the same LedgerError until a flush()
    commits, so exactly one batch (at most ``flush_events`` events) is lost.
    """
    path = tiny_disk / "usage.db"
    spare = tiny_disk / "spare"
    spare.write_bytes(b"\0" * 256 * 1024)  # freed later, to show how writing resumes
    tracker = Tracker(path, durability="batched", flush_events=100, flush_ms=600_000)
    pad = {f"p{n}": "x" * 250 for n in range(4)}  # about 1 KB an event
    acknowledged = 0
    errors: list[tuple[str, str]] = []
    for i in range(3000):
        try:
            tracker.usage(customer_id=f"c{i}", event_type="e", properties=pad)
            acknowledged += 1
        except LedgerError as exc:
            errors.append((exc.reason, str(exc)))
    assert errors, "the disk never filled: the test proves nothing"
    assert sqlite_ledger(tracker).lost_batches == 1
    assert len(set(errors)) == 1, set(errors)  # the same error, every call after the loss
    reason, message = errors[0]
    assert reason in {"disk_full", "io"}
    assert len(errors) == 3000 - acknowledged
    stored = committed(path)
    lost = acknowledged - stored
    assert 0 < lost < 100
    # The batch counted the event of the call whose commit met the full disk,
    # which raised instead of acknowledging it.
    assert f"the open batch of {lost + 1} events was lost" in message
    # Room again: a flush commits, and calls are recorded again.
    spare.unlink()
    with pytest.raises(LedgerError, match="was lost"):
        tracker.usage(customer_id="before the flush", event_type="e")
    tracker.flush()
    tracker.usage(customer_id="after", event_type="e")
    tracker.close()
    assert committed(path) == stored + 1
    assert sqlite_ledger(tracker).lost_batches == 1


def test_a_loss_the_timer_met_is_raised_by_the_next_flush(tiny_disk: Path) -> None:
    """Found in review: after the timer thread lost a batch, a flush() cleared the
    loss, resumed writing and returned, so a caller that took its return for
    "on disk" never heard of 300 lost events."""
    path = tiny_disk / "usage.db"
    tracker = Tracker(path, durability="batched", flush_events=10_000, flush_ms=200)
    tracker.flush()
    pad = {"p": "x" * 250}
    for _ in range(300):
        tracker.usage(customer_id="c", event_type="e", properties=pad)
    filler = tiny_disk / "filler"
    with filler.open("wb") as out:  # another writer fills the disk before the timer commits
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    assert eventually(lambda: sqlite_ledger(tracker).lost_batches == 1)
    filler.unlink()
    with pytest.raises(LedgerError, match="the open batch of 300 events was lost") as lost:
        tracker.flush()
    assert "writes are accepted again" in str(lost.value)
    tracker.usage(customer_id="after", event_type="e")
    tracker.close()
    assert committed(path) == 1


# A child's start: its batch of 300 events is lost to a full file (a real EFBIG
# from the kernel) by the flush timer, with no call there to be told.
TIMER_LOSES_A_BATCH = textwrap.dedent(
    """
    import gc, os, resource, signal, sqlite3, sys, time
    from limitry_local import LedgerError, Tracker

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path = sys.argv[1]
    tracker = Tracker(path, durability="batched", flush_ms=200, flush_events=100_000, timeout=0.3)
    tracker.usage(customer_id="warm", event_type="e")
    tracker.flush()
    size = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    for i in range(300):
        tracker.usage(customer_id=f"c{i}", event_type="e", properties={"pad": "x" * 200})
    print("acknowledged 300", flush=True)
    ledger = tracker.ledger
    deadline = time.monotonic() + 30
    while ledger.lost_batches == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the timer thread meets the loss
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    del ledger
    """
)

UNTOLD_THEN_LOCKED = TIMER_LOSES_A_BATCH + textwrap.dedent(
    """
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock at the first flush
    for n in (1, 2):
        try:
            tracker.flush()
            print(n, "returned")
        except LedgerError as exc:
            print(n, exc.reason, "lost" in str(exc))
        if n == 1:
            other.execute("ROLLBACK")
    tracker.close()
    """
)


def test_a_loss_stays_to_be_told_when_the_flush_that_found_it_fails(tmp_path: Path) -> None:
    """Found in review of the fix above: the first flush() cleared the untold loss,
    then failed on another writer's lock with an error that did not mention it, and
    the next flush() returned: the lost batch was never told."""
    done = run_script(UNTOLD_THEN_LOCKED, str(tmp_path / "usage.db"))
    assert done.returncode == 0, done.stderr
    acknowledged, first, second = done.stdout.splitlines()
    assert acknowledged == "acknowledged 300"
    assert first == "1 locked False"  # the lock's own error: the loss is not told yet
    assert second.startswith("2 ") and second.endswith(" True"), second  # now it is


LOST_AT_EXIT = textwrap.dedent(
    """
    import sys
    from limitry_local import Tracker

    tracker = Tracker(sys.argv[1], durability="batched", flush_events=100_000, flush_ms=600_000)
    for i in range(2000):
        tracker.usage(customer_id=f"c{i}", event_type="e", properties={"p": "x" * 250})
    with open(sys.argv[2], "wb") as out:  # the disk fills before exit commits the batch
        try:
            while True:
                out.write(bytes(65536))
                out.flush()
        except OSError:
            pass
    print("acknowledged 2000", flush=True)
    """
)


def test_a_batch_lost_at_exit_is_said_on_stderr(tiny_disk: Path) -> None:
    """Found in review: the batch a Tracker left open at exit failed to commit on a
    full disk and nothing said so (exit status 0, an empty stderr)."""
    done = run_script(LOST_AT_EXIT, str(tiny_disk / "usage.db"), str(tiny_disk / "f"))
    assert done.stdout.strip() == "acknowledged 2000", done.stderr
    assert committed(tiny_disk / "usage.db") == 0
    assert "the open batch was lost when it was released without close()" in done.stderr
    assert str(tiny_disk / "usage.db") in done.stderr


UNTOLD_AT_EXIT = TIMER_LOSES_A_BATCH + textwrap.dedent(
    """
    if sys.argv[2] == "drop":
        del tracker
        gc.collect()
        print("dropped", flush=True)
    # else the program just ends: no close(), no further call
    """
)


@pytest.mark.parametrize("how", ["exit", "drop"])
def test_a_loss_the_timer_met_is_said_when_no_call_comes_to_hear_it(
    tmp_path: Path, how: str
) -> None:
    """Found in review: the timer thread lost a batch, the program ended (or dropped
    its Tracker) with no further call, and nothing said so: exit 0, stderr empty."""
    path = tmp_path / "usage.db"
    done = run_script(UNTOLD_AT_EXIT, str(path), how)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "acknowledged 300"
    assert committed(path) == 1  # the warm-up alone
    assert "the open batch of 300 events was lost" in done.stderr, done.stderr
    assert "met by the flush timer" in done.stderr
    if how == "drop":  # said when the Tracker went, before the program went on
        assert done.stdout.splitlines()[1] == "dropped"


MULTIPROCESSING_CHILD = textwrap.dedent(
    """
    import multiprocessing, sqlite3, sys, threading, time
    from limitry_local import Tracker

    def work(path, durability):
        tracker = Tracker(path, durability=durability, flush_ms=600_000, flush_events=100_000)
        for i in range(50):
            tracker.usage(customer_id=f"c{i}", event_type="e")

        def later():  # a thread the child has not joined when its target returns
            time.sleep(0.2)
            for i in range(50):
                tracker.usage(customer_id=f"t{i}", event_type="e")

        threading.Thread(target=later).start()
        # returns without close(): the child waits for the thread, then os._exit

    if __name__ == "__main__":
        path, method, durability = sys.argv[1], sys.argv[2], sys.argv[3]
        context = multiprocessing.get_context(method)
        child = context.Process(target=work, args=(path, durability))
        child.start()
        child.join()
        count = sqlite3.connect(path).execute("SELECT count(*) FROM events").fetchone()[0]
        print(child.exitcode, count)
    """
)


@pytest.mark.parametrize("durability", ["batched", "normal"])
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_multiprocessing_child_commits_its_batch_as_it_ends(
    tmp_path: Path, method: str, durability: str
) -> None:
    """Found in review: a multiprocessing child ends with os._exit, which skips atexit
    and so the ledger's finalizer: a child's whole open batch was lost, exit code 0.
    And in review of that fix: the hook runs before the child waits for its threads,
    so it must leave the ledger open to them (closing it lost their 50 events)."""
    script = tmp_path / "child.py"  # spawn and forkserver import the main module by path
    script.write_text(MULTIPROCESSING_CHILD)
    path = tmp_path / "usage.db"
    Tracker(path).close()
    done = subprocess.run(
        [sys.executable, str(script), str(path), method, durability],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "100"], done.stderr


def test_a_scope_begun_before_the_exit_hook_commits_after_it(
    ledger_path: Path, clock: ManualClock
) -> None:
    """Found in review of the hook: it switched durability to "normal", and a scope
    another thread had already made batched then opened a batch nobody committed;
    every later write failed to begin inside it ("cannot start a transaction within
    a transaction").  The interleaving: a thread's usage() has made its scope and
    waits for the ledger's lock while the hook runs, as multiprocessing runs it at
    the child's end."""
    tracker = Tracker(ledger_path, clock=clock, durability="batched", flush_ms=600_000)
    tracker.usage(EVENT)
    ledger = sqlite_ledger(tracker)
    with ledger.lock:
        waiting = threading.Thread(target=tracker.usage, args=(EVENT,))
        waiting.start()
        time.sleep(0.3)  # long enough for it to be waiting on the lock
        ledger._write_through()  # multiprocessing's exit hook
    waiting.join()
    tracker.usage(EVENT)  # no batch is left open under it
    assert committed(ledger_path) == 3  # each written through
    tracker.close()


FORKED = textwrap.dedent(
    """
    import os, sqlite3, sys
    from limitry_local import LedgerError, Tracker

    path = sys.argv[1]
    tracker = Tracker(path, durability="batched", flush_ms=600_000)
    tracker.usage(customer_id="parent", event_type="e")
    pid = os.fork()
    if pid == 0:
        try:
            tracker.usage(customer_id="child", event_type="e")
            print("child used the parent's ledger", flush=True)
        except LedgerError as exc:
            print("child:", exc.reason, flush=True)
        os._exit(0) if len(sys.argv) > 2 else sys.exit(0)
    os.waitpid(pid, 0)
    seen = sqlite3.connect(path).execute("select count(*) from events").fetchone()[0]
    print("after the child exited:", seen, flush=True)
    tracker.usage(customer_id="parent-after", event_type="e")
    tracker.close()
    count = sqlite3.connect(path).execute("select count(*) from events").fetchone()[0]
    print("after close:", count)
    """
)


@pytest.mark.parametrize("exit_how", ["normal", "os._exit"])
def test_a_forked_child_cannot_use_or_disturb_its_parents_ledger(
    tmp_path: Path, exit_how: str
) -> None:
    """Forking commits the open batch; the child is refused; the parent goes on."""
    done = run_script(
        FORKED, str(tmp_path / "fork.db"), *(["fast"] if exit_how == "os._exit" else [])
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "child: cannot_open",
        "after the child exited: 1",  # committed by the fork, not ended by the child
        "after close: 2",
    ]


def test_a_batch_call_alone_is_committed_by_the_timer(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock, durability="batched", flush_ms=20) as tracker:
        tracker.events.batch([EVENT] * 5)
        assert eventually(lambda: committed(ledger_path) == 5)


FORK_WHILE_BUSY = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from limitry_local import LedgerError, Tracker

    tracker = Tracker(sys.argv[1], durability="batched", flush_ms=600_000)
    tracker.usage(customer_id="c", event_type="e")
    lock = tracker.engine.lock if sys.argv[2] == "tracker" else tracker.ledger.lock
    held = threading.Event()

    def busy():  # another thread in the middle of a call at the moment of the fork
        with lock:
            held.set()
            time.sleep(1.0)

    threading.Thread(target=busy, daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)  # a hang fails the test instead of stalling it
        try:
            tracker.usage(customer_id="c", event_type="e")
        except LedgerError as exc:
            print("child:", exc.reason, flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child exit:", os.WEXITSTATUS(status) if os.WIFEXITED(status) else "killed")
    """
)


@pytest.mark.parametrize("lock", ["tracker", "ledger"])
def test_a_child_forked_while_another_thread_holds_a_lock_is_refused_not_hung(
    tmp_path: Path, lock: str
) -> None:
    done = run_script(FORK_WHILE_BUSY, str(tmp_path / "busy.db"), lock)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child: cannot_open", "child exit: 0"]
