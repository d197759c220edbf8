"""Quota alerts: once per quota key and period, recorded in the ledger, announced to callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import (
    Client,
    InvalidRequestError,
    NotFoundError,
    QuotaAlertLog,
    QuotaExceeded,
    Tracker,
)
from limitry_local.alerts import Alerts
from limitry_local.ledger import SCHEMA_VERSION
from limitry_local.models import QuotaAlert
from limitry_local.postgres_ledger import SCHEMA_VERSION as PG_SCHEMA_VERSION
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.redis_buckets import RateLimitStoreError
from limitry_local.testing import ManualClock
from tests.conftest import POSTGRES_DSN, START, postgres_schema
from tests.test_postgres_ledger import PROCESSES, _run_together

CALL = {"customer_id": "c1", "event_type": "call"}
DAY = 86_400


def daily_tokens(tracker: Tracker, limit: int = 100, **extra: object) -> str:
    quota = tracker.quotas.create(
        name="daily tokens",
        metric="total_tokens",
        limit_value=limit,
        period="day",
        per=["customer_id"],
        **extra,
    )
    return quota.id


def collect(tracker: Tracker) -> list[QuotaAlertLog]:
    seen: list[QuotaAlertLog] = []
    tracker.on_alert(seen.append)
    return seen


def test_an_alert_fires_once_when_usage_crosses_its_threshold(
    tracker: Tracker, clock: ManualClock
) -> None:
    quota_id = daily_tokens(tracker)
    alert = tracker.quotas.alerts.create(quota_id, threshold=80)
    seen = collect(tracker)
    for _ in range(7):
        tracker.usage({**CALL, "total_tokens": 10})
    assert seen == []  # 70 of 100
    crossing = tracker.usage({**CALL, "total_tokens": 15})  # 85: crosses 80 %
    tracker.usage({**CALL, "total_tokens": 5})  # 90: still over, fires no more
    (entry,) = seen
    assert (entry.alert_id, entry.quota_id, entry.threshold) == (alert.id, quota_id, 80)
    assert (entry.used, entry.limit, entry.dimensions) == (85, 100, {"customer_id": "c1"})
    assert (entry.quota_name, entry.metric, entry.period) == ("daily tokens", "total_tokens", "day")
    assert entry.event_id == crossing.id
    assert entry.id.startswith("qal_")
    assert entry.triggered_at.timestamp() == clock()
    assert entry.period_start.isoformat() == "2026-11-25T00:00:00+00:00"
    assert entry.period_end.isoformat() == "2026-11-26T00:00:00+00:00"
    history = tracker.quotas.alerts.history(quota_id)
    assert history.data == [entry]
    assert tracker.quotas.alerts.get(alert.id).last_triggered_at == entry.triggered_at


def test_an_alert_fires_once_per_key_and_once_per_period(
    tracker: Tracker, clock: ManualClock
) -> None:
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=50)
    seen = collect(tracker)
    for customer in ("c1", "c2", "c1", "c2"):
        tracker.usage({**CALL, "customer_id": customer, "total_tokens": 30})
    assert [e.dimensions["customer_id"] for e in seen] == ["c1", "c2"]
    clock.advance(DAY)  # a new period: each key may fire again
    for customer in ("c2", "c2"):
        tracker.usage({**CALL, "customer_id": customer, "total_tokens": 30})
    assert [e.dimensions["customer_id"] for e in seen] == ["c1", "c2", "c2"]
    assert seen[2].period_start.timestamp() == seen[1].period_end.timestamp()
    newest_first = tracker.quotas.alerts.history().data
    assert newest_first == seen[::-1]


def test_thresholds_compare_exactly_in_whole_units(tracker: Tracker) -> None:
    quota = tracker.quotas.create(name="q", metric="total_events", limit_value=3, period="day")
    tracker.quotas.alerts.create(quota.id, threshold=80)  # 2.4 events: reached at the 3rd
    tracker.quotas.alerts.create(quota.id, threshold=66)  # 1.98 events: reached at the 2nd
    seen = collect(tracker)
    tracker.usage(CALL)
    tracker.usage(CALL)
    assert [(e.threshold, e.used) for e in seen] == [(66, 2)]
    tracker.usage(CALL)
    assert [(e.threshold, e.used) for e in seen] == [(66, 2), (80, 3)]


def test_cost_alerts_count_micro_cents(tracker: Tracker) -> None:
    quota = tracker.quotas.create(
        name="spend", metric="total_cost_cents", limit_value=3, period="month"
    )
    tracker.quotas.alerts.create(quota.id, threshold=100)
    seen = collect(tracker)
    for _ in range(29):
        tracker.usage({**CALL, "cost_cents": 0.1})
    assert seen == []  # 2.9 cents: floats would already be at 2.9000000000000004
    tracker.usage({**CALL, "cost_cents": 0.1})
    (entry,) = seen
    assert (entry.used, entry.limit) == (3, 3)


def test_a_denied_event_fires_nothing_and_a_filling_one_fires_100(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker, limit=10)
    tracker.quotas.alerts.create(quota_id, threshold=100)
    seen = collect(tracker)
    with pytest.raises(QuotaExceeded):
        tracker.usage({**CALL, "total_tokens": 11})
    assert seen == []
    assert tracker.quotas.alerts.history().data == []
    tracker.usage({**CALL, "total_tokens": 10})
    assert [e.used for e in seen] == [10]


def test_soft_and_shadow_quotas_fire_alerts_past_their_limit(tracker: Tracker) -> None:
    soft = daily_tokens(tracker, limit=10, mode="soft")
    shadow = tracker.quotas.create(
        name="new", metric="total_events", limit_value=1, period="day", mode="shadow"
    )
    tracker.quotas.alerts.create(soft, threshold=100)
    tracker.quotas.alerts.create(shadow.id, threshold=100)
    seen = collect(tracker)
    answer = tracker.usage({**CALL, "total_tokens": 25})  # never denied
    assert [q.exceeded for q in answer.quotas] == [True]  # the shadow quota is not shown
    assert sorted((e.quota_id, e.used) for e in seen) == sorted([(soft, 25), (shadow.id, 1)])


def test_ingested_and_batched_events_fire_alerts(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=50)
    seen = collect(tracker)
    tracker.events.ingest({**CALL, "total_tokens": 60})
    batch = [{**CALL, "customer_id": "c2", "total_tokens": 20} for _ in range(4)]
    tracker.events.batch(batch)
    assert [(e.dimensions["customer_id"], e.used) for e in seen] == [("c1", 60), ("c2", 80)]
    last_of_batch = tracker.events.list(customer_id="c2", limit=1).data[0]
    assert seen[1].event_id == last_of_batch.id


def test_a_reservation_fires_when_committed_not_when_held(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=50)
    seen = collect(tracker)
    reservation = tracker.reserve(CALL, estimate={"total_tokens": 90})
    assert seen == []  # a hold is not usage yet
    committed = reservation.commit({"total_tokens": 70})
    assert [(e.used, e.event_id) for e in seen] == [(70, committed.id)]


def test_amounts_other_reservations_hold_do_not_fire_alerts(tracker: Tracker) -> None:
    """Holds sit on the quota counters, but a hold is not usage: an alert compares
    what was recorded, so a reservation that is later released fires nothing."""
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=50)
    seen = collect(tracker)
    open_hold = tracker.reserve(CALL, estimate={"total_tokens": 45})
    tracker.usage({**CALL, "total_tokens": 10})  # 10 recorded, 55 with the hold
    tracker.events.ingest({**CALL, "total_tokens": 10})  # 20 recorded
    tracker.reserve(CALL, estimate={"total_tokens": 5}).commit({"total_tokens": 5})  # 25
    assert seen == []
    assert tracker.quotas.alerts.history().data == []
    open_hold.release()
    crossing = tracker.usage({**CALL, "total_tokens": 25})  # 50 recorded: crosses now
    assert [(e.used, e.event_id) for e in seen] == [(50, crossing.id)]


def test_a_commit_that_fails_after_recording_still_announces_its_firings(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """commit() records the event and logs the firing, then builds its answer (rate-limit
    statuses: a round trip to Redis).  If that fails, the firing is in the history and
    no other event will fire it again: its callbacks must still be called."""
    with Tracker(clock=clock) as tracker:
        quota_id = daily_tokens(tracker)
        tracker.quotas.alerts.create(quota_id, threshold=50)
        tracker.rate_limits.create(name="rpm", limit_value=100, window="minute")
        seen = collect(tracker)
        reservation = tracker.reserve(CALL, estimate={"total_tokens": 10})

        def unreachable(*args: object) -> None:
            raise RateLimitStoreError("redis://localhost: connection refused", "connection")

        monkeypatch.setattr(tracker.engine.store, "peek", unreachable)
        with pytest.raises(RateLimitStoreError):
            reservation.commit({"total_tokens": 60})
        (entry,) = tracker.quotas.alerts.history().data
        assert seen == [entry]


def test_an_idempotent_replay_fires_nothing_again(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=50)
    seen = collect(tracker)
    first = tracker.usage({**CALL, "total_tokens": 60, "idempotency_key": "k"})
    again = tracker.usage({**CALL, "total_tokens": 60, "idempotency_key": "k"})
    assert again.id == first.id
    assert len(seen) == 1


def test_an_alert_made_over_its_threshold_fires_on_the_next_event(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker)
    tracker.usage({**CALL, "total_tokens": 90})
    tracker.quotas.alerts.create(quota_id, threshold=80)
    seen = collect(tracker)
    tracker.usage({**CALL, "customer_id": "other", "total_tokens": 1})  # another key: no
    assert seen == []
    tracker.usage({**CALL, "total_tokens": 1})
    assert [e.used for e in seen] == [91]


def test_the_threshold_is_a_share_of_the_override_the_key_meets(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker, overrides={"customer_id": {"big": 1000}})
    tracker.quotas.alerts.create(quota_id, threshold=50)
    seen = collect(tracker)
    tracker.usage({**CALL, "customer_id": "big", "total_tokens": 400})
    assert seen == []  # 40 % of 1000, though 400 % of the default 100
    tracker.usage({**CALL, "customer_id": "big", "total_tokens": 100})
    assert [(e.used, e.limit) for e in seen] == [(500, 1000)]


def test_a_raising_callback_is_logged_and_tracking_goes_on(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=10)

    @tracker.on_alert
    def broken(entry: QuotaAlertLog) -> None:
        raise RuntimeError("pager is down")

    seen = collect(tracker)  # registered after the broken one: still called
    with caplog.at_level(logging.ERROR, logger="limitry_local.tracker"):
        answer = tracker.usage({**CALL, "total_tokens": 50})
    assert answer.allowed is True
    assert len(seen) == 1
    assert tracker.ledger.event_count() == 1
    (record,) = [r for r in caplog.records if "alert callback" in r.getMessage()]
    assert record.exc_info is not None and "pager is down" in str(record.exc_info[1])
    assert seen[0].id in record.getMessage()


def test_on_alert_refuses_what_it_cannot_call(tracker: Tracker) -> None:
    with pytest.raises(TypeError, match="callable"):
        tracker.on_alert("not a function")  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [0, 101, -5, True, "80", 80.0, None])
def test_a_threshold_outside_1_to_100_is_a_400(tracker: Tracker, threshold: object) -> None:
    quota_id = daily_tokens(tracker)
    with pytest.raises(InvalidRequestError, match="threshold") as caught:
        tracker.quotas.alerts.create(quota_id, threshold=threshold)
    assert caught.value.status_code == 400
    assert tracker.quotas.alerts.list().data == []


def test_unknown_quotas_and_alerts_are_404(tracker: Tracker) -> None:
    with pytest.raises(NotFoundError):
        tracker.quotas.alerts.create("qta_missing", threshold=50)
    with pytest.raises(NotFoundError):
        tracker.quotas.alerts.get("qa_missing")
    with pytest.raises(NotFoundError):
        tracker.quotas.alerts.delete("qa_missing")
    with pytest.raises(NotFoundError):
        tracker.quotas.alerts.list("qta_missing")


def test_an_update_changes_the_threshold_in_place_and_moves_updated_at(
    tracker: Tracker, clock: ManualClock
) -> None:
    quota_id = daily_tokens(tracker)
    made = [tracker.quotas.alerts.create(quota_id, threshold=t) for t in (50, 80)]
    clock.advance(120)
    updated = tracker.quotas.alerts.update(made[0].id, threshold=95)
    assert (updated.threshold, updated.created_at) == (95, made[0].created_at)
    assert (updated.updated_at - made[0].updated_at).total_seconds() == 120
    assert tracker.quotas.alerts.get(made[0].id) == updated
    # Still first: lists keep creation order.
    listed = tracker.quotas.alerts.list(quota_id).data
    assert [(a.id, a.threshold) for a in listed] == [(made[0].id, 95), (made[1].id, 80)]
    seen = collect(tracker)
    tracker.usage({**CALL, "total_tokens": 90})  # 90 %: past 80, short of the new 95
    assert [e.alert_id for e in seen] == [made[1].id]
    # A key it fired for in this period is not told again at a lowered threshold.
    tracker.quotas.alerts.update(made[1].id, threshold=10)
    tracker.usage({**CALL, "total_tokens": 1})
    assert [e.alert_id for e in seen] == [made[1].id]
    with pytest.raises(NotFoundError, match="qa_missing"):
        tracker.quotas.alerts.update("qa_missing", threshold=50)
    with pytest.raises(InvalidRequestError, match="threshold") as caught:
        tracker.quotas.alerts.update(made[0].id, threshold=0)
    assert caught.value.status_code == 400
    assert tracker.quotas.alerts.get(made[0].id).threshold == 95


def test_an_update_survives_a_reopened_file_and_reaches_another_tracker(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as one, Tracker(path, clock=clock) as two:
        quota_id = daily_tokens(one)
        alert = one.quotas.alerts.create(quota_id, threshold=90)
        assert two.quotas.alerts.get(alert.id).threshold == 90
        clock.advance(60)
        updated = one.quotas.alerts.update(alert.id, threshold=40)
        seen_two = collect(two)
        two.usage({**CALL, "total_tokens": 45})  # two fires at the threshold one set
        assert [(e.alert_id, e.threshold) for e in seen_two] == [(alert.id, 40)]
    with Tracker(path, clock=clock) as again:
        stored = again.quotas.alerts.get(alert.id)
        assert (stored.threshold, stored.updated_at) == (40, updated.updated_at)
        assert stored.updated_at != stored.created_at


def test_alerts_of_a_version_6_file_read_as_never_changed_and_can_be_updated(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Version 6 had no ``quota_alerts.updated_at``: opening adds it, NULL for old alerts."""
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as tracker:
        alert = tracker.quotas.alerts.create(daily_tokens(tracker), threshold=50)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE quota_alerts DROP COLUMN updated_at")
        conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    clock.advance(30)
    with Tracker(path, clock=clock) as tracker:
        old = tracker.quotas.alerts.get(alert.id)
        assert (old.threshold, old.updated_at) == (50, alert.created_at)
        updated = tracker.quotas.alerts.update(alert.id, threshold=70)
        assert (updated.updated_at - alert.created_at).total_seconds() == 30
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )


def test_alerts_of_a_version_2_postgres_schema_can_be_updated(clock: ManualClock) -> None:
    with postgres_schema() as schema:
        with Tracker(ledger=PostgresLedger(POSTGRES_DSN, schema=schema), clock=clock) as tracker:
            alert = tracker.quotas.alerts.create(daily_tokens(tracker), threshold=50)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(f'ALTER TABLE "{schema}".quota_alerts DROP COLUMN updated_at')
            admin.execute(f"UPDATE \"{schema}\".meta SET value = '2' WHERE key = 'schema_version'")
        clock.advance(30)
        with Tracker(ledger=PostgresLedger(POSTGRES_DSN, schema=schema), clock=clock) as tracker:
            assert tracker.quotas.alerts.get(alert.id).updated_at == alert.created_at
            updated = tracker.quotas.alerts.update(alert.id, threshold=70)
        with Tracker(ledger=PostgresLedger(POSTGRES_DSN, schema=schema), clock=clock) as tracker:
            assert tracker.quotas.alerts.get(alert.id) == updated
            assert (updated.updated_at - alert.created_at).total_seconds() == 30
        with psycopg.connect(POSTGRES_DSN) as admin:
            version = admin.execute(
                f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"
            ).fetchone()
            assert version == (str(PG_SCHEMA_VERSION),)


def test_lists_pages_and_deletes(tracker: Tracker) -> None:
    first = daily_tokens(tracker)
    second = tracker.quotas.create(name="q2", metric="total_events", limit_value=5, period="hour")
    made = [tracker.quotas.alerts.create(first, threshold=t) for t in (50, 80, 100)]
    other = tracker.quotas.alerts.create(second.id, {"threshold": 90})
    assert [a.id for a in tracker.quotas.alerts.list(first).data] == [a.id for a in made]
    page = tracker.quotas.alerts.list(limit=3)
    assert page.has_more and [a.id for a in page.data] == [a.id for a in made]
    rest = tracker.quotas.alerts.list(limit=3, cursor=page.next_cursor)
    assert [a.id for a in rest.data] == [other.id] and not rest.has_more
    assert tracker.quotas.alerts.get(other.id) == other
    assert other.last_triggered_at is None
    assert other.model_dump(by_alias=True)["quotaId"] == second.id

    tracker.quotas.alerts.delete(made[1].id)
    assert [a.threshold for a in tracker.quotas.alerts.list(first).data] == [50, 100]
    seen = collect(tracker)
    tracker.usage({**CALL, "total_tokens": 85})
    assert [e.threshold for e in seen] == [50]  # the deleted 80 % alert is gone


def test_deleting_a_quota_drops_its_alerts_and_keeps_their_history(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker)
    alert = tracker.quotas.alerts.create(quota_id, threshold=50)
    tracker.usage({**CALL, "total_tokens": 60})
    tracker.quotas.delete(quota_id)
    assert tracker.quotas.alerts.list().data == []
    with pytest.raises(NotFoundError):
        tracker.quotas.alerts.get(alert.id)
    (entry,) = tracker.quotas.alerts.history(alert_id=alert.id).data
    assert entry.quota_name == "daily tokens"  # the history describes the quota as it was


def test_history_filters_and_pages(tracker: Tracker, clock: ManualClock) -> None:
    quota_id = daily_tokens(tracker)
    low = tracker.quotas.alerts.create(quota_id, threshold=10)
    high = tracker.quotas.alerts.create(quota_id, threshold=90)
    for _ in range(3):
        tracker.usage({**CALL, "total_tokens": 95})
        clock.advance(DAY)
    everything = tracker.quotas.alerts.history(limit=100).data
    assert len(everything) == 6
    assert [e.triggered_at for e in everything] == sorted(
        (e.triggered_at for e in everything), reverse=True
    )
    assert {e.alert_id for e in tracker.quotas.alerts.history(alert_id=low.id).data} == {low.id}
    first = tracker.quotas.alerts.history(quota_id, limit=4)
    assert first.has_more
    rest = tracker.quotas.alerts.history(quota_id, limit=4, cursor=first.next_cursor)
    assert [e.id for e in first.data + rest.data] == [e.id for e in everything]
    assert tracker.quotas.alerts.get(high.id).last_triggered_at == everything[0].triggered_at
    with pytest.raises(InvalidRequestError, match="cursor"):
        tracker.quotas.alerts.history(cursor="qal_nope")
    assert tracker.quotas.alerts.history("qta_other").data == []


def test_alerts_and_their_history_survive_a_reopened_file(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as tracker:
        quota_id = daily_tokens(tracker)
        alert = tracker.quotas.alerts.create(quota_id, threshold=50)
        tracker.usage({**CALL, "total_tokens": 60})
    with Tracker(path, clock=clock) as tracker:
        seen = collect(tracker)
        tracker.usage({**CALL, "total_tokens": 1})  # fired already this period, in the ledger
        assert seen == []
        assert [a.id for a in tracker.quotas.alerts.list().data] == [alert.id]
        assert len(tracker.quotas.alerts.history().data) == 1


def test_a_reload_racing_create_does_not_list_the_alert_twice(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between create's write and its update of the Tracker's view, another thread may
    reload the definitions (another process changed one): the new alert must not be
    added a second time."""
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as one, Tracker(path, clock=clock) as two:
        quota_id = daily_tokens(one)
        add = Alerts.add

        reloader = threading.Thread(target=lambda: one.quotas.check({"customer_id": "c1"}))

        def another_thread_reloads_meanwhile(self: Alerts, alert: QuotaAlert) -> None:
            monkeypatch.setattr(Alerts, "add", add)
            two.quotas.create(name="other", metric="total_events", limit_value=5, period="day")
            reloader.start()  # check() reloads the definitions: two changed them
            reloader.join(timeout=2)  # it should wait for one's lock, and time out
            add(self, alert)

        monkeypatch.setattr(Alerts, "add", another_thread_reloads_meanwhile)
        alert = one.quotas.alerts.create(quota_id, threshold=50)
        reloader.join()
        assert [a.id for a in one.quotas.alerts.list().data] == [alert.id]


def test_two_trackers_on_one_file_see_each_others_alerts(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "usage.db"
    with Tracker(path, clock=clock) as one, Tracker(path, clock=clock) as two:
        quota_id = daily_tokens(one)
        one.quotas.alerts.create(quota_id, threshold=50)
        seen_one, seen_two = collect(one), collect(two)
        two.usage({**CALL, "total_tokens": 60})  # two learns of the alert from the ledger
        one.usage({**CALL, "total_tokens": 10})  # one sees it fired already
        assert (len(seen_one), len(seen_two)) == (0, 1)


def test_many_threads_fire_each_alert_exactly_once_per_key_and_period(
    tracker: Tracker, clock: ManualClock
) -> None:
    quota_id = daily_tokens(tracker, limit=1000, mode="soft")
    for threshold in (25, 50, 100):
        tracker.quotas.alerts.create(quota_id, threshold=threshold)
    seen = collect(tracker)
    barrier = threading.Barrier(8)

    def hammer(n: int) -> None:
        barrier.wait()
        for i in range(40):
            tracker.usage({**CALL, "customer_id": f"c{(n + i) % 2}", "total_tokens": 30})

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 8 x 40 x 30 = 9600 tokens over two customers: every threshold crossed by each.
    fired = sorted((e.dimensions["customer_id"], e.threshold) for e in seen)
    assert fired == [(c, t) for c in ("c0", "c1") for t in (25, 50, 100)]
    assert len(tracker.quotas.alerts.history(limit=100).data) == 6
    for entry in seen:
        assert entry.used * 100 >= entry.threshold * entry.limit
        assert entry.used - 30 < entry.threshold * entry.limit / 100  # the crossing event


def test_the_async_client_manages_alerts(clock: ManualClock) -> None:
    asyncio.run(_manage_alerts(clock))


async def _manage_alerts(clock: ManualClock) -> None:
    async with Client(clock=clock) as client:
        quota = await client.quotas.create(
            name="q", metric="total_events", limit_value=2, period="day"
        )
        alert = await client.quotas.alerts.create(quota.id, threshold=50)
        assert [a.id for a in (await client.quotas.alerts.list(quota.id)).data] == [alert.id]
        await client.track.usage(CALL)
        (entry,) = (await client.quotas.alerts.history(alert_id=alert.id)).data
        assert entry.used == 1
        assert (await client.quotas.alerts.get(alert.id)).last_triggered_at is not None
        await client.quotas.alerts.delete(alert.id)
        assert (await client.quotas.alerts.list()).data == []


# --- against a reference model ---------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(["a", "b"]), st.integers(0, 40)),
    st.tuples(st.just("ingest"), st.sampled_from(["a", "b"]), st.integers(0, 40)),
    st.tuples(st.just("advance"), st.just(""), st.sampled_from([3600, 40_000, DAY])),
    # quota_alerts.update: the alert (by position) gets a new threshold.
    st.tuples(st.just("retune"), st.sampled_from(["0", "1", "2"]), st.integers(1, 100)),
)


@settings(max_examples=60)
@given(
    thresholds=st.lists(st.integers(1, 100), min_size=1, max_size=3),
    limit=st.integers(1, 120),
    soft=st.booleans(),
    steps=st.lists(STEP, max_size=30),
    on_file=st.booleans(),
)
def test_alerts_fire_as_a_reference_model_says(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    thresholds: list[int],
    limit: int,
    soft: bool,
    steps: list[tuple[str, str, int]],
    on_file: bool,
) -> None:
    """Each alert fires exactly when a recorded event first takes its key's usage in a
    period to threshold % of the limit, with that usage; denied events fire nothing.
    A changed threshold counts from the next event; what fired stays fired."""
    clock = ManualClock(START)
    path = tmp_path_factory.mktemp("alerts") / "usage.db" if on_file else None
    with Tracker(path, clock=clock) as tracker:
        quota_id = daily_tokens(tracker, limit=limit, mode="soft" if soft else "enforce")
        alerts = {tracker.quotas.alerts.create(quota_id, threshold=t).id: t for t in thresholds}
        seen = collect(tracker)
        used: dict[tuple[str, int], int] = {}
        fired: set[tuple[str, str, int]] = set()
        expected: list[tuple[str, str, int, int]] = []
        for kind, customer, amount in steps:
            if kind == "advance":
                clock.advance(amount)
                continue
            if kind == "retune":
                alert_id = list(alerts)[int(customer) % len(alerts)]
                assert tracker.quotas.alerts.update(alert_id, threshold=amount).threshold == amount
                alerts[alert_id] = amount
                continue
            day = int(clock() // DAY * DAY)
            before = used.get((customer, day), 0)
            if kind == "event" and not soft and before + amount > limit:
                with pytest.raises(QuotaExceeded):
                    tracker.usage({**CALL, "customer_id": customer, "total_tokens": amount})
                continue
            if kind == "event":
                tracker.usage({**CALL, "customer_id": customer, "total_tokens": amount})
            else:
                tracker.events.ingest({**CALL, "customer_id": customer, "total_tokens": amount})
            used[customer, day] = after = before + amount
            for alert_id, threshold in alerts.items():
                if after * 100 >= threshold * limit and (alert_id, customer, day) not in fired:
                    fired.add((alert_id, customer, day))
                    expected.append((alert_id, customer, day, after))
        got = [
            (e.alert_id, e.dimensions["customer_id"], int(e.period_start.timestamp()), e.used)
            for e in seen
        ]
        assert sorted(got) == sorted(expected)
        history = tracker.quotas.alerts.history(limit=100).data
        assert sorted(e.id for e in history) == sorted(e.id for e in seen)


# --- several processes ---------------------------------------------------------------


def _open(where: str) -> Tracker:
    if where.startswith("postgres:"):
        return Tracker(ledger=PostgresLedger(POSTGRES_DSN, schema=where.split(":", 1)[1]))
    return Tracker(where)


def _fire_from_process(where: str, barrier: Any, results: Any) -> None:
    with _open(where) as tracker:
        seen = collect(tracker)
        barrier.wait()
        for _ in range(20):
            tracker.usage({**CALL, "total_tokens": 10})
    results.put([entry.id for entry in seen])


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_processes_sharing_a_ledger_fire_each_alert_once(engine: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        if engine == "postgres":
            where = "postgres:" + stack.enter_context(postgres_schema())
        else:
            where = str(tmp_path / "usage.db")
        with _open(where) as tracker:
            quota_id = daily_tokens(tracker, limit=PROCESSES * 20 * 10, mode="soft")
            for threshold in (50, 100):
                tracker.quotas.alerts.create(quota_id, threshold=threshold)
        answers = _run_together(_fire_from_process, where)
        with _open(where) as tracker:
            history = tracker.quotas.alerts.history(limit=100).data
            assert sorted(e.threshold for e in history) == [50, 100]
            assert sorted(e.used for e in history) == [600, 1200]
            assert tracker.ledger.event_count() == PROCESSES * 20
        announced = [entry_id for ids in answers for entry_id in ids]
        # Each firing was announced once, by the process whose event crossed it.
        assert sorted(announced) == sorted(e.id for e in history)


# --- a lost batch ------------------------------------------------------------------------

LOST_BATCH = textwrap.dedent(
    """
    import os, resource, signal, sys
    from limitry_local import LedgerError, Tracker

    # The file may not grow past its size now: a real EFBIG from the kernel.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path = sys.argv[1]
    tracker = Tracker(path, durability="batched", flush_ms=600_000)
    quota = tracker.quotas.create(
        name="q", metric="total_tokens", limit_value=100, period="day"
    )
    tracker.quotas.alerts.create(quota.id, threshold=50)
    seen = []
    tracker.on_alert(seen.append)
    tracker.usage(customer_id="warm", event_type="e")
    tracker.flush()
    size = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
    tracker.usage(customer_id="c", event_type="e", total_tokens=60)  # fires, in the batch
    for i in range(200):
        tracker.usage(customer_id=f"c{i}", event_type="e", properties={"pad": "x" * 200})
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    try:
        tracker.flush()
    except LedgerError as exc:
        print("lost:", "was lost" in str(exc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    tracker.flush()  # writes are refused after a loss until a flush commits
    again = tracker.usage(customer_id="c", event_type="e", total_tokens=60)
    tracker.flush()
    history = tracker.quotas.alerts.history().data
    print("history:", [e.event_id == again.id for e in history])
    print("callbacks:", len(seen))
    """
)


def test_a_firing_in_a_lost_batch_fires_again_when_usage_crosses_again(tmp_path: Path) -> None:
    """The batch that logged a firing was lost (with its events): the process must not
    keep taking that firing for logged, or the re-crossing is never in the history."""
    done = subprocess.run(
        [sys.executable, "-c", LOST_BATCH, str(tmp_path / "full.db")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["lost: True", "history: [True]", "callbacks: 2"]


def test_on_alert_refuses_a_coroutine_function_it_could_never_run(tracker: Tracker) -> None:
    async def notify(entry: QuotaAlertLog) -> None:
        return None

    with pytest.raises(TypeError, match="coroutine function"):
        tracker.on_alert(notify)


def test_each_callback_gets_its_own_copy_of_the_entry(tracker: Tracker) -> None:
    quota_id = daily_tokens(tracker)
    tracker.quotas.alerts.create(quota_id, threshold=10)

    @tracker.on_alert
    def meddle(entry: QuotaAlertLog) -> None:
        entry.dimensions["customer_id"] = "someone else"
        entry.used = -1

    seen = collect(tracker)
    tracker.usage({**CALL, "total_tokens": 50})
    assert (seen[0].dimensions, seen[0].used) == ({"customer_id": "c1"}, 50)
    assert tracker.quotas.alerts.history().data == seen
