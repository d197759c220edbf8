"""Several Trackers, and several processes, on one ledger file.

Quota admission stays exact: counters are read under SQLite's write lock.
Limit definitions changed by one Tracker are seen by the others at their
next call.  Rate-limit buckets are per process (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from limitry_local import QuotaExceeded, RateLimitExceeded, Tracker
from limitry_local.ledger import SCHEMA_VERSION
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from tests.conftest import POSTGRES_DSN, postgres_schema
from tests.test_ledger_errors import read_only

EVENT = {"customer_id": "cust_1", "event_type": "model_call"}


def test_a_second_tracker_sees_limits_created_by_the_first(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock) as a, Tracker(ledger_path, clock=clock) as b:
        assert b.quotas.list().data == []
        quota = a.quotas.create(name="q", metric="total_events", limit_value=2, period="day")
        assert [q.id for q in b.quotas.list().data] == [quota.id]
        assert b.quotas.get(quota.id) == quota
        a.usage(EVENT)
        b.usage(EVENT)
        with pytest.raises(QuotaExceeded):
            a.usage(EVENT)
        with pytest.raises(QuotaExceeded):
            b.usage(EVENT)


def test_updates_and_deletes_reach_the_other_tracker_at_once(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock) as a, Tracker(ledger_path, clock=clock) as b:
        quota = a.quotas.create(name="q", metric="total_events", limit_value=1, period="day")
        limit = a.rate_limits.create(name="r", limit_value=1, window="hour")
        b.usage(EVENT)
        with pytest.raises(RateLimitExceeded):
            b.usage(EVENT)
        a.rate_limits.update(limit.id, enabled=False)
        with pytest.raises(QuotaExceeded):
            b.usage(EVENT)
        a.quotas.update(quota.id, limit_value=3)
        b.usage(EVENT)
        a.quotas.delete(quota.id)
        a.rate_limits.delete(limit.id)
        assert b.quotas.list().data == []
        assert b.rate_limits.list().data == []
        b.usage(EVENT)
        assert b.ledger.event_count() == 3


def test_a_definition_change_does_not_reset_the_other_trackers_buckets(
    ledger_path: Path, clock: ManualClock
) -> None:
    with Tracker(ledger_path, clock=clock) as a, Tracker(ledger_path, clock=clock) as b:
        a.rate_limits.create(name="r", limit_value=1, window="hour")
        b.usage(EVENT)
        a.quotas.create(name="q", metric="total_events", limit_value=9, period="day")
        with pytest.raises(RateLimitExceeded):
            b.usage(EVENT)


def test_idempotency_keys_hold_across_trackers(ledger_path: Path, clock: ManualClock) -> None:
    with Tracker(ledger_path, clock=clock) as a, Tracker(ledger_path, clock=clock) as b:
        first = a.usage({**EVENT, "idempotency_key": "k"})
        again = b.usage({**EVENT, "idempotency_key": "k"})
        assert again.id == first.id
        assert a.ledger.event_count() == 1


# --- real processes -----------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from limitry_local import Tracker, QuotaExceeded

    path, calls = sys.argv[1], int(sys.argv[2])
    admitted, denied = [], 0
    with Tracker(path, timeout=30) as tracker:
        print("ready", flush=True)
        sys.stdin.readline()  # every worker starts at once
        for i in range(calls):
            try:
                admitted.append(
                    tracker.usage(customer_id="cust_1", event_type="e", total_tokens=1 + i % 3).id
                )
            except QuotaExceeded:
                denied += 1
    print(denied, *admitted, flush=True)
    """
)


@pytest.mark.parametrize(("processes", "calls", "limit"), [(4, 40, 50), (3, 30, 90)])
def test_processes_sharing_a_file_admit_exactly_the_quota(
    tmp_path: Path, processes: int, calls: int, limit: int
) -> None:
    path = tmp_path / "shared.db"
    with Tracker(path) as setup:
        events = setup.quotas.create(
            name="q", metric="total_events", limit_value=limit, period="day"
        )
        tokens = setup.quotas.create(
            name="tokens", metric="total_tokens", limit_value=10**9, period="day"
        )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    admitted: list[str] = []
    denied = 0
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        words = out.split()
        denied += int(words[0])
        admitted.extend(words[1:])

    expected = min(limit, processes * calls)
    assert len(admitted) == expected
    assert len(set(admitted)) == expected
    assert denied == processes * calls - expected
    with closing(sqlite3.connect(path)) as conn:
        rows = {row[0] for row in conn.execute("SELECT id FROM events")}
        used = dict(conn.execute("SELECT quota_id, sum(used) FROM quota_counters GROUP BY 1"))
        token_sum = conn.execute("SELECT sum(total_tokens) FROM events").fetchone()[0]
    assert rows == set(admitted)
    assert used[events.id] == expected
    assert used[tokens.id] == token_sum


OPENER = textwrap.dedent(
    """
    import sys, time
    from limitry_local import LedgerError, Tracker

    path, start = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))  # every opener starts at once
    try:
        with Tracker(path) as tracker:
            tracker.usage(customer_id="c", event_type="e")
        print("ok")
    except LedgerError as exc:
        print(exc.reason, exc)
    """
)


def open_at_once(path: Path, processes: int) -> list[str]:
    start = time.time() + 1.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(processes)
    ]
    return [child.communicate(timeout=120)[0].strip() for child in children]


@pytest.mark.parametrize("trial", range(3))
def test_processes_creating_a_new_ledger_at_once_all_succeed(tmp_path: Path, trial: int) -> None:
    path = tmp_path / f"new{trial}.db"
    assert open_at_once(path, 6) == ["ok"] * 6
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 6


def test_processes_migrating_an_old_ledger_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "ledgers" / "v1.db", path)
    assert open_at_once(path, 6) == ["ok"] * 6
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3 + 6


BUSY_BATCHED_WRITER = textwrap.dedent(
    """
    import sys
    from limitry_local import Tracker

    tracker = Tracker(sys.argv[1], durability="batched")
    print("writing", flush=True)
    while True:  # until the test kills it
        tracker.usage(customer_id="a", event_type="e")
    """
)


def test_a_limit_change_gets_its_turn_beside_a_busy_batched_writer(tmp_path: Path) -> None:
    """Found in review: a batched writer under load begins its next batch within
    microseconds of committing one, and SQLite's busy handler looks again only
    every 100 ms, so another process's limit change waited seconds, or failed
    with "locked" (6 of 8 with a 1 s timeout), where docs/reliability.md
    promises at most flush_ms.  Writers that wait now say so, and a batched
    writer lets them in before its next batch."""
    path = tmp_path / "usage.db"
    with Tracker(path) as setup:
        limit = setup.rate_limits.create(name="r", limit_value=10**6, window="minute")
    writer = subprocess.Popen(
        [sys.executable, "-c", BUSY_BATCHED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(0.5)  # let it reach full speed: the case that starved others
        for n in range(8):
            # A 1 s timeout: 20 times flush_ms, and what failed 6 times in 8.
            with Tracker(path, timeout=1.0) as changer:
                changer.rate_limits.update(limit.id, limit_value=10**6 + n)
        with Tracker(path, timeout=1.0) as reader:
            assert reader.rate_limits.get(limit.id).limit_value == 10**6 + 7
    finally:
        writer.kill()
        writer.wait()


STARTING_WORKER = textwrap.dedent(
    """
    import sys, time
    from limitry_local import Tracker
    from limitry_local.postgres_ledger import PostgresLedger

    where, start_at = sys.argv[1], float(sys.argv[2])
    if where.startswith("postgresql://"):
        dsn, schema = where.rsplit("#", 1)
        tracker = Tracker(ledger=PostgresLedger(dsn, schema=schema))
    else:
        tracker = Tracker(where)
    while time.time() < start_at:  # the workers start together
        pass
    tracker.rate_limits.ensure(name="rpm", limit_value=60, window="minute", per=["customer_id"])
    tracker.quotas.ensure(
        name="daily tokens", metric="total_tokens", limit_value=100_000, period="day"
    )
    tracker.apply({"rate_limits": [{"name": "rph", "limit_value": 600, "window": "hour"}]})
    tracker.close()
    """
)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_workers_starting_at_once_ensure_each_limit_once(kind: str, tmp_path: Path) -> None:
    """Found in review: the README's quick start, ensure() at every start, run by four
    workers starting together made four "rpm" limits, and every later start died
    with a 409.  The look and the create now share one exclusive write scope."""
    with contextlib.ExitStack() as stack:
        if kind == "postgres":
            schema = stack.enter_context(postgres_schema())
            where = f"{POSTGRES_DSN}#{schema}"
            PostgresLedger(POSTGRES_DSN, schema=schema).close()  # the schema exists already

            def opened() -> Tracker:
                return Tracker(ledger=PostgresLedger(POSTGRES_DSN, schema=schema))
        else:
            where = str(tmp_path / "usage.db")
            Tracker(where).close()

            def opened() -> Tracker:
                return Tracker(where)

        start_at = str(time.time() + 2.0)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", STARTING_WORKER, where, start_at],
                cwd=Path(__file__).parent.parent,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for worker in workers:
            _, errors = worker.communicate(timeout=60)
            assert worker.returncode == 0, errors
        with opened() as tracker:
            assert [limit.name for limit in tracker.rate_limits.list().data] == ["rpm", "rph"]
            assert [quota.name for quota in tracker.quotas.list().data] == ["daily tokens"]


def test_a_wait_file_this_user_cannot_write_still_takes_turns(tmp_path: Path) -> None:
    """Found in review: <ledger>-wait was made 0644 beside a ledger shared by several
    users (0666), the others could not open it, and their writers silently took no
    turns.  It is made with the ledger's mode, and opened to read when it cannot be
    written (flock needs no more)."""
    ledger = tmp_path / "usage.db"
    Tracker(ledger).close()
    ledger.chmod(0o666)
    wait = Path(f"{ledger}-wait")
    wait.unlink()
    umask = os.umask(0o022)
    try:
        Tracker(ledger).close()
    finally:
        os.umask(umask)
    assert stat.S_IMODE(wait.stat().st_mode) == 0o666  # the ledger's, past the umask

    with read_only(wait), closing(sqlite3.connect(ledger, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        with Tracker(ledger, timeout=30) as tracker:
            change = threading.Thread(
                target=tracker.quotas.create,
                kwargs={"name": "q", "metric": "total_events", "limit_value": 1, "period": "day"},
            )
            change.start()
            said = False
            fd = os.open(wait, os.O_RDONLY)
            try:
                deadline = time.monotonic() + 10
                while not said and time.monotonic() < deadline:
                    try:  # the waiting writer holds it shared: no exclusive lock now
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        time.sleep(0.01)
                    except BlockingIOError:
                        said = True
            finally:
                os.close(fd)
                holder.execute("COMMIT")
                change.join()
            assert said, "the waiting writer did not say so on its -wait file"
            assert [quota.name for quota in tracker.quotas.list().data] == ["q"]


CLI = "import sys; from limitry_local.cli.main import run; sys.exit(run(sys.argv[1:]))"


def test_hosts_running_limits_apply_at_once_make_each_limit_once(tmp_path: Path) -> None:
    """Found in review: `limits apply` planned, then made each change in its own
    transaction, so two deploys at once could both plan "create", and every later
    apply refused the file's now ambiguous name.  It now goes through Tracker.apply,
    which plans inside its exclusive write scope.

    The test holds the file's write lock while four deploys start: each one that
    planned before taking the lock would create both limits once it is released."""
    ledger = tmp_path / "usage.db"
    Tracker(ledger).close()
    config = tmp_path / "limits.toml"
    config.write_text(
        '[[rate_limits]]\nname = "rpm"\nlimit_value = 60\nwindow = "minute"\n\n'
        '[[quotas]]\nname = "daily tokens"\nmetric = "total_tokens"\n'
        'limit_value = 100000\nperiod = "day"\n'
    )
    apply = ["limits", "apply", str(config), "--db", str(ledger), "--timeout", "60"]
    with closing(sqlite3.connect(ledger, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        deploys = [
            subprocess.Popen(
                [sys.executable, "-c", CLI, *apply],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        time.sleep(3)  # long enough for all four to have planned, were they to plan first
        holder.execute("COMMIT")
    outcomes = [deploy.communicate(timeout=60) for deploy in deploys]
    assert [deploy.returncode for deploy in deploys] == [0] * 4, outcomes
    created = [line for out, _ in outcomes for line in out.splitlines() if line.startswith("+")]
    assert len(created) == 2, outcomes  # the first deploy's two; the rest found them made
    with Tracker(ledger) as tracker:
        assert [limit.name for limit in tracker.rate_limits.list().data] == ["rpm"]
        assert [quota.name for quota in tracker.quotas.list().data] == ["daily tokens"]
