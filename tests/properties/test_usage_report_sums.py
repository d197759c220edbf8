"""Usage reports equal the sums over the raw events, on every ledger.

For any events (any timestamps from 1970 to 9998, clustered so that they
share periods, or spread wide), any grouping or interval, any filters and
any range (dates, datetimes in any zone or none, ISO strings, or no bound),
a report must answer exactly what summing the recorded events
(``ledger.scan_events``) by the documented rules gives: the groups and
their order, the sparse points and their order, every total to the
micro-cent.  The reference is written here from docs/semantics.md; it
shares no code with the ledgers' SQL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local import Tracker, TrackPostRequest
from limitry_local.ledger import EventRow, LedgerBackend
from limitry_local.metrics import from_units
from limitry_local.periods import period_bounds
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from limitry_local.testing import strategies as lst
from tests.conftest import LEDGERS, POSTGRES_DSN, START, postgres_schema

DAY = 86_400
FIRST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LAST = datetime(9998, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
GROUP_BYS = ("model", "customer_id", "event_type", "provider")
INTERVALS = ("hour", "day", "week")
ZONES = (timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)))

# --- strategies -------------------------------------------------------------------------

_midnight = int(START) - int(START) % DAY
moments = st.one_of(
    # Clustered around START, so events share hours, days and weeks.
    st.floats(START - 20 * DAY, START + 20 * DAY),
    # Exactly on hour, day and week boundaries, and a microsecond either side.
    st.tuples(st.integers(-20 * 24, 20 * 24), st.sampled_from((-1e-6, 0.0, 1e-6))).map(
        lambda hour_and_nudge: _midnight + hour_and_nudge[0] * 3600 + hour_and_nudge[1]
    ),
    # The first week of the epoch, which starts on Monday 1969-12-29.
    st.floats(0, 8 * DAY),
    # Anywhere an event may be.
    st.floats(FIRST.timestamp(), LAST.timestamp()),
).map(lambda seconds: datetime.fromtimestamp(seconds, timezone.utc))

events = lst.track_requests(
    timestamps=moments, max_tokens=10**12, max_cost_cents=10**9, idempotency_keys=True
)


@st.composite
def bounds(draw: st.DrawFn, near: list[datetime]) -> date | datetime | str | None:
    """A range bound in any form the reports take; often one of the events' own times."""
    when = draw(st.one_of(st.sampled_from(near), moments))
    form = draw(st.sampled_from(("none", "date", "aware", "naive", "iso date", "iso time")))
    if form == "none":
        return None
    if form == "date":
        return when.date()
    if form == "aware":
        return when.astimezone(draw(st.sampled_from(ZONES)))
    if form == "naive":
        return when.replace(tzinfo=None)
    if form == "iso date":
        return when.date().isoformat()
    return when.isoformat().replace("+00:00", draw(st.sampled_from(("Z", "+00:00", ""))))


filters = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": st.sampled_from((*lst.CUSTOMER_IDS, "nobody")),
        "event_type": st.sampled_from(lst.EVENT_TYPES),
        "model": st.sampled_from((*lst.MODELS, "none-such")),
        "provider": st.sampled_from(lst.PROVIDERS),
    },
)

# --- the reference -------------------------------------------------------------------------


def _instant(value: date | datetime | str | None, *, end: bool) -> float | None:
    """docs/semantics.md: ``start <= createdAt < end``; a plain date as end includes the day."""
    if value is None:
        return None
    if isinstance(value, str):
        value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    day = value + timedelta(days=1) if end else value
    return datetime.combine(day, time(), timezone.utc).timestamp()


def _micro_cents(cents: float | None) -> int:
    # Each event's cents to the nearest micro-cent, half away from zero (cents are >= 0).
    return 0 if cents is None else math.floor(cents * 1_000_000 + 0.5)


Totals = tuple[int, int, int, int, int | float]


def _sums(rows: list[EventRow]) -> Totals:
    return (
        len(rows),
        sum(r.total_tokens or 0 for r in rows),
        sum(r.input_tokens or 0 for r in rows),
        sum(r.output_tokens or 0 for r in rows),
        from_units("total_cost_cents", sum(_micro_cents(r.cost_cents) for r in rows)),
    )


def _picked(rows: list[EventRow], query: dict[str, Any]) -> list[EventRow]:
    start = _instant(query.get("start_date"), end=False)
    end = _instant(query.get("end_date"), end=True)
    return [
        row
        for row in rows
        if all(getattr(row, name) == query[name] for name in filters_in(query))
        and (start is None or row.ts >= start)
        and (end is None or row.ts < end)
    ]


def filters_in(query: dict[str, Any]) -> list[str]:
    return [name for name in ("customer_id", "event_type", "model", "provider") if name in query]


def expected_breakdown(
    rows: list[EventRow], group_by: str, query: dict[str, Any]
) -> list[tuple[str | None, Totals]]:
    groups: dict[str | None, list[EventRow]] = {}
    for row in _picked(rows, query):
        groups.setdefault(getattr(row, group_by), []).append(row)
    answer = [(value, _sums(members)) for value, members in groups.items()]
    # Largest totalTokens first; ties by value, the null group last.
    answer.sort(key=lambda item: (-item[1][1], item[0] is None, item[0] or ""))
    return answer


def expected_timeseries(
    rows: list[EventRow], interval: Any, query: dict[str, Any]
) -> list[tuple[int, Totals]]:
    periods: dict[int, list[EventRow]] = {}
    for row in _picked(rows, query):
        periods.setdefault(period_bounds(interval, row.ts)[0], []).append(row)
    return sorted((start, _sums(members)) for start, members in periods.items())


# --- the property ---------------------------------------------------------------------------


@pytest.fixture(params=LEDGERS)
def open_tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Tracker]]:
    """Opens a fresh Tracker on a fresh ledger of one kind, once per hypothesis example."""
    opened: list[Tracker] = []
    schemas: list[Any] = []

    def open_one() -> Tracker:
        ledger: LedgerBackend | None = None
        path = None
        if request.param == "postgres":
            schema = postgres_schema()
            schemas.append(schema)
            ledger = PostgresLedger(POSTGRES_DSN, schema=schema.__enter__())
        elif request.param == "sqlite":
            path = tmp_path / f"usage-{len(opened)}.db"
        tracker = Tracker(path, ledger=ledger, clock=ManualClock(START))
        opened.append(tracker)
        return tracker

    yield open_one
    for tracker in opened:
        tracker.close()
    for schema in schemas:
        schema.__exit__(None, None, None)


@settings(max_examples=40)
@given(
    batches=st.lists(st.lists(events, min_size=1, max_size=20), min_size=1, max_size=3),
    data=st.data(),
)
def test_every_report_is_the_sum_of_the_raw_events(
    open_tracker: Callable[[], Tracker],
    batches: list[list[TrackPostRequest]],
    data: st.DataObject,
) -> None:
    tracker = open_tracker()
    try:
        for batch in batches:
            tracker.events.batch(batch)
        rows = list(tracker.ledger.scan_events())
        # Each event's micro-cents, stored when it was recorded, by the reference's rule.
        assert [r.cost_micro_cents for r in rows] == [
            None if r.cost_cents is None else _micro_cents(r.cost_cents) for r in rows
        ]
        times = [datetime.fromtimestamp(row.ts, timezone.utc) for row in rows]
        for _ in range(3):
            query = {
                **data.draw(filters, label="filters"),
                "start_date": data.draw(bounds(times), label="start_date"),
                "end_date": data.draw(bounds(times), label="end_date"),
            }
            group_by = data.draw(st.sampled_from(GROUP_BYS), label="group_by")
            breakdown = tracker.usage_report.breakdown(group_by, **query)  # type: ignore[arg-type]
            assert breakdown.group_by == group_by
            assert [
                (
                    g.value,
                    (
                        g.total_events,
                        g.total_tokens,
                        g.total_input_tokens,
                        g.total_output_tokens,
                        g.total_cost_cents,
                    ),
                )
                for g in breakdown.data
            ] == expected_breakdown(rows, group_by, query)

            interval = data.draw(st.sampled_from(INTERVALS), label="interval")
            series = tracker.usage_report.timeseries(interval, **query)  # type: ignore[arg-type]
            assert series.interval == interval
            assert [
                (
                    int(p.period_start.timestamp()),
                    (
                        p.total_events,
                        p.total_tokens,
                        p.total_input_tokens,
                        p.total_output_tokens,
                        p.total_cost_cents,
                    ),
                )
                for p in series.data
            ] == expected_timeseries(rows, interval, query)
    finally:
        tracker.close()
