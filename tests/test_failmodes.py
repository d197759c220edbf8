"""Fail modes, timeouts and the circuit breaker, against servers of the test's own.

Each test kills, pauses (SIGSTOP) or restarts its own ``redis-server`` or
PostgreSQL cluster (tests/fault_servers.py), never the machine's shared ones.
What must hold: a fail-closed limit denies with the store's error, a
fail-open one lets the event pass and the answer says so; nothing
acknowledged is lost; limits still reachable never over-admit; no call waits
out a timeout while the breaker knows the server is down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from limitry_local import (
    LedgerError,
    QuotaExceeded,
    RateLimitExceeded,
    RateLimitStoreError,
    Tracker,
)
from limitry_local.postgres_ledger import SCHEMA_VERSION, PostgresLedger
from limitry_local.redis_buckets import RedisBuckets
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.fault_servers import OwnPostgres, OwnRedis
from tests.redis_support import MANUAL_CLOCK_TTL_MARGIN, new_prefix

TIMEOUT = 0.25
COOL_DOWN = 5.0
# A call while a server is down waits at most its timeout, plus slack for a
# machine shared with other test runs.  (Without the timeout it would wait 5 s,
# redis-py's socket timeout before this change, or forever.)
BOUND = TIMEOUT + 2.25


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        yield server
    finally:
        server.stop()


def redis_tracker(server: OwnRedis, clock: ManualClock, path: Path, **options: float) -> Tracker:
    store = RedisBuckets(
        server.url,
        prefix=new_prefix(),
        clock="client",
        ttl_margin=MANUAL_CLOCK_TTL_MARGIN,
        timeout=options.pop("timeout", TIMEOUT),
        breaker_failures=int(options.pop("breaker_failures", 2)),
        breaker_cool_down=options.pop("breaker_cool_down", COOL_DOWN),
    )
    return Tracker(path, clock=clock, rate_limits=store)


def timed(call: object) -> tuple[float, object]:
    """(seconds taken, what the call returned or raised)."""
    assert callable(call)
    began = time.monotonic()
    try:
        outcome = call()
    except Exception as exc:  # the outcome under test
        outcome = exc
    return time.monotonic() - began, outcome


# --- the field ----------------------------------------------------------------------------


def test_fail_mode_is_stored_with_the_definition_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path) as tracker:
        limit = tracker.rate_limits.create(
            name="rpm", limit_value=5, window="minute", fail_mode="open"
        )
        quota = tracker.quotas.create(
            name="daily", metric="total_events", limit_value=5, period="day"
        )
        assert limit.model_dump(by_alias=True)["failMode"] == "open"
        # The default is left out of the wire form, as the other additions are.
        assert "failMode" not in quota.model_dump(by_alias=True)
        tracker.quotas.update(quota.id, {"failMode": "open"})
    with Tracker(path) as tracker:
        assert tracker.rate_limits.get(limit.id).fail_mode == "open"
        assert tracker.quotas.get(quota.id).fail_mode == "open"
        assert tracker.rate_limits.update(limit.id, fail_mode="closed").fail_mode == "closed"
    with Tracker(path) as tracker:
        assert tracker.rate_limits.get(limit.id).fail_mode == "closed"


def test_a_bad_fail_mode_is_a_400_naming_the_field() -> None:
    with Tracker() as tracker, pytest.raises(ValueError, match="failMode") as caught:
        tracker.rate_limits.create(name="rpm", limit_value=5, window="minute", fail_mode="maybe")
    assert getattr(caught.value, "status_code", None) == 400


def test_a_postgres_ledger_of_schema_1_gains_the_column(own_postgres: OwnPostgres) -> None:
    ledger = PostgresLedger(own_postgres.dsn, schema="migrated")
    with Tracker(ledger=ledger) as tracker:
        limit = tracker.rate_limits.create(name="rpm", limit_value=5, window="minute")
        conn = ledger._conn
        # Back to what version 1 wrote: no fail_mode columns.
        conn.execute("ALTER TABLE migrated.rate_limits DROP COLUMN fail_mode")
        conn.execute("ALTER TABLE migrated.quotas DROP COLUMN fail_mode")
        conn.execute("UPDATE migrated.meta SET value = '1' WHERE key = 'schema_version'")
    with Tracker(ledger=PostgresLedger(own_postgres.dsn, schema="migrated")) as tracker:
        assert tracker.rate_limits.get(limit.id).fail_mode == "closed"
        tracker.rate_limits.update(limit.id, fail_mode="open")
    with Tracker(ledger=PostgresLedger(own_postgres.dsn, schema="migrated")) as tracker:
        assert tracker.rate_limits.get(limit.id).fail_mode == "open"
        version = tracker.ledger._conn.execute(  # type: ignore[attr-defined]
            "SELECT value FROM migrated.meta WHERE key = 'schema_version'"
        ).fetchone()
        assert version == (str(SCHEMA_VERSION),)  # migrated to the current one


# --- Redis killed ---------------------------------------------------------------------------


def test_a_killed_redis_denies_for_closed_limits_and_admits_for_open_ones(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    clock = ManualClock(START)
    with redis_tracker(own_redis, clock, tmp_path / "usage.db") as tracker:
        closed = tracker.rate_limits.create(
            name="chat rpm",
            limit_value=100,
            window="minute",
            dimension_filters={"event_type": "chat"},
        )
        opened = tracker.rate_limits.create(
            name="embed rpm",
            limit_value=3,
            window="minute",
            dimension_filters={"event_type": "embed"},
            fail_mode="open",
        )
        # The quota lives in the ledger, which stays up: it must keep its word.
        tracker.quotas.create(
            name="embeds a day",
            metric="total_events",
            limit_value=6,
            period="day",
            dimension_filters={"event_type": "embed"},
        )
        ok = tracker.usage(customer_id="c", event_type="embed")
        assert ok.failed_open == [] and "failedOpen" not in ok.model_dump(by_alias=True)
        own_redis.kill()

        with pytest.raises(RateLimitStoreError) as caught:
            tracker.usage(customer_id="c", event_type="chat")
        assert caught.value.reason == "connection"
        assert "cannot reach Redis" in str(caught.value)

        # 1 before the kill + 5 while down = the quota's 6, then denials.
        admitted = [tracker.usage(customer_id="c", event_type="embed") for _ in range(5)]
        for _ in range(3):
            with pytest.raises(QuotaExceeded):
                tracker.usage(customer_id="c", event_type="embed")
        for answer in admitted:
            assert [(f.id, f.kind, f.reason) for f in answer.failed_open] == [
                (opened.id, "rate_limit", "connection")
            ]
            assert answer.headers["X-Limitry-Failed-Open"] == opened.id
            assert answer.rate_limits == []
            assert answer.model_dump(by_alias=True)["failedOpen"][0]["name"] == "embed rpm"
        # Every acknowledged event is in the ledger, and the denied ones are not.
        assert tracker.ledger.event_count() == 6
        ids = {e.id for e in tracker.events.list(limit=100).data}
        assert {a.id for a in admitted} | {ok.id} == ids

        # Back up, empty (no persistence): after the cool-down the limit enforces again.
        own_redis.start()
        with pytest.raises(RateLimitStoreError, match="taken to be down"):
            tracker.usage(customer_id="c", event_type="chat")
        clock.advance(COOL_DOWN)
        assert tracker.usage(customer_id="c", event_type="chat").rate_limits[0].id == closed.id
        clock.advance(86400)  # a new day for the quota
        for _ in range(3):
            assert tracker.usage(customer_id="c", event_type="embed").failed_open == []
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="c", event_type="embed")


def test_an_event_matching_open_and_closed_limits_is_denied_when_redis_is_down(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    with redis_tracker(own_redis, ManualClock(START), tmp_path / "usage.db") as tracker:
        tracker.rate_limits.create(name="open", limit_value=5, window="minute", fail_mode="open")
        tracker.rate_limits.create(name="closed", limit_value=5, window="minute")
        own_redis.kill()
        with pytest.raises(RateLimitStoreError):
            tracker.usage(customer_id="c", event_type="e")
        assert tracker.ledger.event_count() == 0


def test_a_refusing_redis_is_not_an_outage_to_fail_open_on(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    # A wrong password is a fault to fix: failing open on it would turn the limit off.
    with redis_tracker(own_redis, ManualClock(START), tmp_path / "usage.db") as tracker:
        tracker.rate_limits.create(name="open", limit_value=5, window="minute", fail_mode="open")
        admin = redis.Redis.from_url(own_redis.url)
        admin.config_set("requirepass", "s3cret")
        admin.close()
        with pytest.raises(RateLimitStoreError) as caught:
            tracker.usage(customer_id="c", event_type="e")
        assert caught.value.reason in ("auth", "server")
        assert tracker.ledger.event_count() == 0


# --- Redis paused ---------------------------------------------------------------------------


def test_a_paused_redis_costs_one_timeout_then_the_breaker_fails_fast(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    clock = ManualClock(START)
    with redis_tracker(own_redis, clock, tmp_path / "usage.db") as tracker:
        tracker.rate_limits.create(name="closed", limit_value=50, window="minute")
        tracker.rate_limits.create(
            name="open",
            limit_value=50,
            window="minute",
            fail_mode="open",
            dimension_filters={"event_type": "embed"},
        )
        tracker.usage(customer_id="c", event_type="chat")  # connected and warm
        own_redis.pause()
        try:
            waits = []
            for _ in range(2):  # breaker_failures=2: both reach the socket timeout
                took, outcome = timed(lambda: tracker.usage(customer_id="c", event_type="chat"))
                assert isinstance(outcome, RateLimitStoreError) and outcome.reason == "timeout"
                assert "did not answer in time" in str(outcome)
                waits.append(took)
            for _ in range(20):
                took, outcome = timed(lambda: tracker.usage(customer_id="c", event_type="chat"))
                assert isinstance(outcome, RateLimitStoreError)
                assert "taken to be down" in str(outcome) and outcome.reason == "timeout"
                waits.append(took)
            assert max(waits) < BOUND, waits
            assert tracker.ledger.event_count() == 1

            # The half-open probe after the cool-down meets the paused server once.
            clock.advance(COOL_DOWN)
            took, outcome = timed(lambda: tracker.usage(customer_id="c", event_type="chat"))
            assert isinstance(outcome, RateLimitStoreError) and "in time" in str(outcome)
            assert took < BOUND
        finally:
            own_redis.resume()
        clock.advance(COOL_DOWN)
        answer = tracker.usage(customer_id="c", event_type="chat")
        assert answer.failed_open == []
        assert tracker.ledger.event_count() == 2


def test_a_paused_redis_fails_open_within_the_timeout(own_redis: OwnRedis, tmp_path: Path) -> None:
    clock = ManualClock(START)
    with redis_tracker(own_redis, clock, tmp_path / "usage.db") as tracker:
        limit = tracker.rate_limits.create(
            name="open", limit_value=2, window="minute", fail_mode="open"
        )
        tracker.usage(customer_id="c", event_type="e")
        own_redis.pause()
        try:
            answers = []
            for _ in range(5):
                took, answer = timed(lambda: tracker.usage(customer_id="c", event_type="e"))
                assert took < BOUND
                answers.append(answer)
        finally:
            own_redis.resume()
        assert all(a.failed_open[0].id == limit.id for a in answers)  # type: ignore[attr-defined]
        assert {a.failed_open[0].reason for a in answers} == {"timeout"}  # type: ignore[attr-defined]
        assert tracker.ledger.event_count() == 6


# --- PostgreSQL killed and paused ------------------------------------------------------------


def test_a_killed_postgres_loses_nothing_acknowledged_and_records_a_retry_once(
    own_postgres: OwnPostgres,
) -> None:
    clock = ManualClock(START)
    schema = f"s_{new_prefix()[13:21]}"
    # Without the breaker, so the retry right after the restart is not refused
    # for its cool-down (tests/test_postgres_faults.py has the breaker).
    ledger = PostgresLedger(own_postgres.dsn, schema=schema, timeout=1.0, breaker_failures=0)
    with Tracker(clock=clock, ledger=ledger) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=10, window="minute", fail_mode="open")
        tracker.quotas.create(
            name="daily", metric="total_events", limit_value=100, period="day", fail_mode="open"
        )
        acknowledged = [tracker.usage(customer_id="c", event_type="e").id for _ in range(3)]
        own_postgres.kill()
        try:
            # Every limit fails open, but the event cannot be recorded: it is
            # refused, not acknowledged and lost (docs/semantics.md).
            for _ in range(3):
                took, outcome = timed(
                    lambda: tracker.usage(customer_id="c", event_type="e", idempotency_key="k1")
                )
                assert isinstance(outcome, LedgerError), outcome
                assert took < BOUND + 2.0  # libpq's connect_timeout is at least 2 s
        finally:
            own_postgres.start()
        # The refused calls gave their rate-limit tokens back.
        first = tracker.usage(customer_id="c", event_type="e", idempotency_key="k1")
        assert first.rate_limits[0].remaining == 10 - 4
        again = tracker.usage(customer_id="c", event_type="e", idempotency_key="k1")
        assert again.id == first.id
        events = {e.id for e in tracker.events.list(limit=100).data}
        assert events == {*acknowledged, first.id}
        assert tracker.quotas.check({"customer_id": "c"}).quotas[0].used == 4


def test_a_paused_postgres_is_refused_within_the_connect_timeout(
    own_postgres: OwnPostgres,
) -> None:
    # A new connection to a paused server: libpq's connect_timeout bounds the wait.
    pids = own_postgres.pause()
    try:
        took, outcome = timed(lambda: PostgresLedger(own_postgres.dsn, schema="paused", timeout=1))
        assert isinstance(outcome, LedgerError) and outcome.reason == "cannot_open"
        assert took < 2.0 + 2.25  # libpq connect_timeout, and slack for a loaded machine
    finally:
        own_postgres.resume(pids)
