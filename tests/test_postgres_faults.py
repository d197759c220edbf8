"""PostgresLedger against a server that pauses, dies or stalls: bounded waits, the
circuit breaker, and nothing lost or recorded twice.

Every test runs on a PostgreSQL cluster of its own (tests/fault_servers.py,
a free port and a data directory of its own), paused with SIGSTOP, killed
and restarted by PID; the machine's shared server is never touched.  Bounds
are generous (a shared 2-core machine): they tell "bounded by the
timeout" from "waits until the server resumes", not fast from slow.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from limitry_local import LedgerError, RateLimitExceeded, Tracker
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.fault_servers import OwnPostgres
from tests.test_memory_ledger import _event

LOCK_WAIT = 0.25  # PostgresLedger(timeout=...)
OPERATION = 0.5  # operation_timeout
CONNECT = 2  # connect_timeout: libpq's least
COOL_DOWN = 1.0
# A call that meets the paused server waits one of those timeouts; five times
# it is still far below "until the server resumes".
OPERATION_BOUND = 5 * OPERATION
CONNECT_BOUND = CONNECT + 5 * OPERATION
# A call the breaker refuses makes no round trip at all.
AT_ONCE = 0.25


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def schema() -> str:
    return f"s_{uuid.uuid4().hex[:12]}"


def ledger_on(server: OwnPostgres, schema: str, **options: float) -> PostgresLedger:
    return PostgresLedger(
        server.dsn,
        schema=schema,
        timeout=LOCK_WAIT,
        operation_timeout=options.pop("operation_timeout", OPERATION),
        connect_timeout=CONNECT,
        breaker_failures=int(options.pop("breaker_failures", 2)),
        breaker_cool_down=options.pop("breaker_cool_down", COOL_DOWN),
    )


def timed(call: Callable[[], object]) -> tuple[float, object]:
    """(seconds taken, what the call returned or raised)."""
    began = time.monotonic()
    try:
        outcome = call()
    except LedgerError as exc:  # the outcome under test
        outcome = exc
    return time.monotonic() - began, outcome


def failed(outcome: object, reason: str) -> LedgerError:
    assert isinstance(outcome, LedgerError), outcome
    assert outcome.reason == reason, outcome
    return outcome


def eventually(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def stored_events(server: OwnPostgres, schema: str) -> list[tuple[str, str | None]]:
    """(id, idempotency key) of every event, read on a connection of the test's own."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT id, idempotency_key FROM {schema}.events ORDER BY seq")
        return [(row[0], row[1]) for row in rows]


@contextmanager
def slow_commits(server: OwnPostgres, schema: str) -> Iterator[None]:
    """Every COMMIT that inserted an event takes 2 s while inside: a deferred trigger
    runs at COMMIT, and the server stays up."""
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(
            f"CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$"
        )
        admin.execute(
            f"CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {schema}.events "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.slow()"
        )
        try:
            yield
        finally:
            admin.execute(f"DROP TRIGGER slow_commit ON {schema}.events")


# --- paused ----------------------------------------------------------------------------------


def test_a_paused_server_costs_one_timeout_per_failure_then_the_breaker_fails_calls_at_once(
    own_postgres: OwnPostgres, schema: str
) -> None:
    tracker = Tracker(clock=ManualClock(START), ledger=ledger_on(own_postgres, schema))
    quota = tracker.quotas.create(
        name="daily", metric="total_events", limit_value=100, period="day", fail_mode="open"
    )
    acknowledged = [tracker.usage(customer_id="c", event_type="e").id for _ in range(3)]

    def call() -> object:
        return tracker.usage(customer_id="c", event_type="e", idempotency_key="k")

    pids = own_postgres.pause()
    try:
        # The call in flight: its round trip waits the operation timeout.
        took, outcome = timed(call)
        assert "did not answer within 0.5s" in str(failed(outcome, "timeout"))
        assert took < OPERATION_BOUND
        # The next one reconnects; the kernel accepts, the server never answers.
        took, outcome = timed(call)
        failed(outcome, "timeout")
        assert took < CONNECT_BOUND
        # Two failures in a row: the breaker is open, and nothing waits.
        for _ in range(20):
            took, outcome = timed(call)
            assert "known to be down (2 calls in a row" in str(failed(outcome, "timeout"))
            assert took < AT_ONCE
        # After the cool-down one call probes the still paused server; the rest
        # keep failing at once.
        time.sleep(COOL_DOWN)
        took, outcome = timed(call)
        assert "cannot reconnect" in str(failed(outcome, "timeout"))
        assert took < CONNECT_BOUND
        took, outcome = timed(call)
        assert "known to be down (3 calls" in str(failed(outcome, "timeout"))
        assert took < AT_ONCE
    finally:
        own_postgres.resume(pids)
    time.sleep(COOL_DOWN)
    # The probe reconnects and closes the breaker; the key was never recorded,
    # so this records it, once.
    first = call()
    assert first == call()
    stored = stored_events(own_postgres, schema)
    assert stored == [*((a, None) for a in acknowledged), (first.id, "k")]  # type: ignore[attr-defined]
    check = tracker.quotas.check({"customer_id": "c"}).quotas
    assert (check[0].id, check[0].used) == (quota.id, 4)
    tracker.close()


def test_without_the_breaker_every_call_waits_only_its_timeout(
    own_postgres: OwnPostgres, schema: str
) -> None:
    tracker = Tracker(
        clock=ManualClock(START), ledger=ledger_on(own_postgres, schema, breaker_failures=0)
    )
    tracker.usage(customer_id="c", event_type="e")
    pids = own_postgres.pause()
    try:
        took, outcome = timed(lambda: tracker.usage(customer_id="c", event_type="e"))
        failed(outcome, "timeout")
        assert took < OPERATION_BOUND
        for _ in range(2):
            took, outcome = timed(lambda: tracker.usage(customer_id="c", event_type="e"))
            assert "cannot reconnect" in str(failed(outcome, "timeout"))
            assert took < CONNECT_BOUND
    finally:
        own_postgres.resume(pids)
    tracker.usage(customer_id="c", event_type="e")
    assert len(stored_events(own_postgres, schema)) == 2
    tracker.close()


# --- killed and restarted --------------------------------------------------------------------


def test_a_killed_server_opens_the_breaker_and_a_restart_is_found_by_the_probe(
    own_postgres: OwnPostgres, schema: str
) -> None:
    ledger = ledger_on(own_postgres, schema)
    tracker = Tracker(clock=ManualClock(START), ledger=ledger)
    limit = tracker.rate_limits.create(name="rpm", limit_value=100, window="minute")
    acknowledged = tracker.usage(customer_id="c", event_type="e").id

    def call() -> object:
        return tracker.usage(customer_id="c", event_type="e", idempotency_key="k")

    own_postgres.kill()
    try:
        # The call in flight finds its connection gone, the next cannot reconnect.
        for expected in ("connection to the server failed", "cannot reconnect"):
            took, outcome = timed(call)
            assert expected in str(failed(outcome, "connection"))
            assert took < CONNECT_BOUND
        for _ in range(20):
            took, outcome = timed(call)
            assert "known to be down" in str(failed(outcome, "connection"))
            assert took < AT_ONCE
    finally:
        own_postgres.start()
    # Back: the breaker's next probe (after its cool-down) finds it.
    time.sleep(COOL_DOWN)
    first = call()
    assert first == call()
    assert stored_events(own_postgres, schema) == [(acknowledged, None), (first.id, "k")]  # type: ignore[attr-defined]
    # The refused calls took no rate-limit tokens.  The call in flight sent its
    # whole transaction, COMMIT included, in one message and heard nothing back:
    # in doubt, it kept its token (docs/reliability.md).  Two events, three tokens.
    assert first.rate_limits[0].id == limit.id  # type: ignore[attr-defined]
    assert first.rate_limits[0].remaining == 97  # type: ignore[attr-defined]
    tracker.close()


# --- a COMMIT whose answer never came ---------------------------------------------------------


def test_a_commit_answered_too_late_was_kept_and_a_retry_with_its_key_is_not_recorded_again(
    own_postgres: OwnPostgres, schema: str
) -> None:
    """In doubt, on a slow server: the COMMIT outlasts the operation timeout and
    commits anyway.  The caller was told ``"timeout"``; the same idempotency key
    answers the kept event."""
    tracker = Tracker(clock=ManualClock(START), ledger=ledger_on(own_postgres, schema))
    tracker.usage(customer_id="c", event_type="e")
    with slow_commits(own_postgres, schema):
        took, outcome = timed(
            lambda: tracker.usage(customer_id="c", event_type="e", idempotency_key="k")
        )
        message = str(failed(outcome, "timeout"))
        assert "same idempotency key" in message
        assert took < OPERATION_BOUND
        eventually(lambda: len(stored_events(own_postgres, schema)) == 2)
    kept = stored_events(own_postgres, schema)[-1]
    again = tracker.usage(customer_id="c", event_type="e", idempotency_key="k")
    assert (again.id, "k") == kept
    assert len(stored_events(own_postgres, schema)) == 2
    tracker.close()


def test_a_commit_in_doubt_keeps_its_rate_limit_tokens(
    own_postgres: OwnPostgres, schema: str
) -> None:
    """The timed-out COMMIT above was kept: had its tokens gone back, a limit of 2
    would admit a third event.  In doubt, the engine keeps them."""
    tracker = Tracker(clock=ManualClock(START), ledger=ledger_on(own_postgres, schema))
    tracker.rate_limits.create(name="two", limit_value=2, window="hour")
    tracker.usage(customer_id="c", event_type="e")
    with slow_commits(own_postgres, schema):
        _, outcome = timed(lambda: tracker.usage(customer_id="c", event_type="e"))
        failed(outcome, "timeout")
        eventually(lambda: len(stored_events(own_postgres, schema)) == 2)
    check = tracker.rate_limits.check({"customer_id": "c", "event_type": "e"})
    assert (check.allowed, check.rate_limits[0].remaining) == (False, 0)
    with pytest.raises(RateLimitExceeded):
        tracker.usage(customer_id="c", event_type="e")
    assert len(stored_events(own_postgres, schema)) == 2
    tracker.close()


def test_a_commit_sent_to_a_paused_server_lands_when_it_resumes(
    own_postgres: OwnPostgres, schema: str
) -> None:
    """In doubt, on a frozen server: the COMMIT sits in the server's socket buffer
    when the deadline drops the connection; the server, resumed, reads it before
    the end of the connection, and commits."""
    ledger = ledger_on(own_postgres, schema, breaker_failures=0)
    pids: list[int] = []
    try:
        with pytest.raises(LedgerError) as info, ledger.write() as scope:
            ledger.record(scope, [(_event("evt_1", "acme", START, key="k"), [], "{}")])
            pids = own_postgres.pause()
        assert info.value.reason == "timeout"
    finally:
        own_postgres.resume(pids)
    eventually(lambda: stored_events(own_postgres, schema) == [("evt_1", "k")])
    assert ledger.idempotent("k") == ("evt_1", "{}")
    ledger.close()


# --- settings and lifetime -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"connect_timeout": "2"}, "connect_timeout"),
        ({"operation_timeout": 1.0}, "operation_timeout"),  # not longer than timeout=5
        ({"operation_timeout": float("nan")}, "operation_timeout"),
        ({"operation_timeout": True}, "operation_timeout"),
        ({"breaker_failures": -1}, "breaker_failures"),
        ({"breaker_cool_down": -1.0}, "breaker_cool_down"),
    ],
)
def test_bad_settings_name_the_argument(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PostgresLedger("postgresql://nobody@127.0.0.1:1/none", **options)  # type: ignore[arg-type]


def test_operation_timeout_infinite_turns_the_deadline_off_and_close_ends_the_watchdog(
    own_postgres: OwnPostgres, schema: str
) -> None:
    # Counted as new threads: an earlier test's ledger may still be ending its own.
    before = set(threading.enumerate())

    def watchdogs() -> int:
        return sum(
            t.name == "limitry-postgres-watchdog" and t not in before for t in threading.enumerate()
        )

    unbounded = ledger_on(own_postgres, schema, operation_timeout=float("inf"))
    unbounded.event_count()
    assert watchdogs() == 0
    bounded = ledger_on(own_postgres, schema)
    bounded.event_count()
    assert watchdogs() == 1
    bounded.close()
    unbounded.close()
    eventually(lambda: watchdogs() == 0, seconds=5.0)
