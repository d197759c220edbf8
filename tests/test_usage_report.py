"""``tracker.usage_report``: breakdowns and time series, one rule per example.

Every example runs on every rate-limit store x ledger pair (the ``tracker``
fixture); tests/properties/test_usage_report_sums.py holds the property that
any report equals the sums over the raw events, and
tests/test_usage_report_ledgers.py the ledgers' own differential test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from limitry_local import (
    Client,
    InvalidRequestError,
    LimitryError,
    Tracker,
    UsageBreakdownResponse,
    UsageGroup,
    UsagePoint,
    UsageTimeseriesResponse,
)
from limitry_local.ledger import Ledger, LedgerBackend
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from tests.conftest import POSTGRES_DSN, START, postgres_schema

# START is Wednesday 2026-11-25 10:00 UTC.
HOUR = 3600
DAY = 86_400


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _ingest(tracker: Tracker, *events: dict[str, Any]) -> None:
    tracker.events.batch([{"customer_id": "cust_a", "event_type": "chat", **e} for e in events])


@pytest.fixture
def history(tracker: Tracker) -> Tracker:
    """Five events over a week and a half; tokens and cents chosen so every total differs."""
    _ingest(
        tracker,
        # Wednesday 10:00 and 11:30
        {
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 100,
            "output_tokens": 20,
            "cost_cents": 1.5,
            "timestamp": "2026-11-25T10:00:00Z",
        },
        {
            "customer_id": "cust_b",
            "model": "gpt-4o",
            "provider": "openai",
            "total_tokens": 300,
            "cost_cents": 0.25,
            "timestamp": "2026-11-25T11:30:00Z",
        },
        # The last millisecond of Tuesday
        {
            "event_type": "embed",
            "model": "claude",
            "provider": "anthropic",
            "input_tokens": 120,
            "timestamp": "2026-11-24T23:59:59.999Z",
        },
        # Sunday of the week before: no model, provider or tokens
        {"customer_id": "cust_c", "event_type": "tool_call", "timestamp": "2026-11-22T08:00:00Z"},
        # Friday 00:00
        {
            "customer_id": "cust_b",
            "model": "claude",
            "provider": "anthropic",
            "output_tokens": 50,
            "cost_cents": 2,
            "timestamp": "2026-11-27T00:00:00Z",
        },
    )
    return tracker


def _groups(report: UsageBreakdownResponse) -> list[tuple[str | None, int, int]]:
    return [(g.value, g.total_events, g.total_tokens) for g in report.data]


def _points(report: UsageTimeseriesResponse) -> list[tuple[str, int, int]]:
    return [
        (p.period_start.strftime("%Y-%m-%d %H:%M"), p.total_events, p.total_tokens)
        for p in report.data
    ]


# --- breakdown ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("model", [("gpt-4o", 2, 420), ("claude", 2, 170), (None, 1, 0)]),
        ("customer_id", [("cust_b", 2, 350), ("cust_a", 2, 240), ("cust_c", 1, 0)]),
        ("event_type", [("chat", 3, 470), ("embed", 1, 120), ("tool_call", 1, 0)]),
        ("provider", [("openai", 2, 420), ("anthropic", 2, 170), (None, 1, 0)]),
    ],
)
def test_breakdown_by_each_dimension(
    history: Tracker, group_by: Any, expected: list[tuple[str | None, int, int]]
) -> None:
    report = history.usage_report.breakdown(group_by)
    assert report.group_by == group_by
    assert _groups(report) == expected


def test_a_group_carries_every_total_of_customer_usage(history: Tracker) -> None:
    (gpt, claude, nothing) = history.usage_report.breakdown(group_by="model").data
    assert gpt == UsageGroup(
        value="gpt-4o",
        total_events=2,
        total_tokens=420,
        total_input_tokens=100,
        total_output_tokens=20,
        total_cost_cents=1.75,
    )
    assert (claude.total_input_tokens, claude.total_output_tokens) == (120, 50)
    assert claude.total_cost_cents == 2
    assert isinstance(claude.total_cost_cents, int)  # whole cents stay an int, as in get_usage
    assert nothing.model_dump(by_alias=True) == {
        "value": None,
        "totalEvents": 1,
        "totalTokens": 0,
        "totalInputTokens": 0,
        "totalOutputTokens": 0,
        "totalCostCents": 0,
    }


def test_a_customer_breakdown_equals_each_customers_usage(history: Tracker) -> None:
    for group in history.usage_report.breakdown("customer_id").data:
        assert group.value is not None
        usage = history.customers.get_usage(group.value)
        assert group.model_dump(exclude={"value"}) == usage.model_dump(exclude={"customer_id"})


def test_ties_go_by_value_and_the_null_group_last(tracker: Tracker) -> None:
    _ingest(
        tracker,
        {"model": "b", "total_tokens": 5},
        {"model": "a", "total_tokens": 5},
        {"total_tokens": 5},  # no model
        {"model": "B", "total_tokens": 5},  # code point order: "B" < "a"
        {"model": "z", "total_tokens": 6},
        {"model": "", "total_tokens": 5},  # an empty model is a value, not a missing one
    )
    report = tracker.usage_report.breakdown("model")
    assert [g.value for g in report.data] == ["z", "", "B", "a", "b", None]


def test_a_breakdown_of_an_empty_ledger_has_no_groups(tracker: Tracker) -> None:
    report = tracker.usage_report.breakdown("provider")
    assert report.data == []
    assert report.model_dump(by_alias=True, mode="json") == {
        "groupBy": "provider",
        "startDate": None,
        "endDate": None,
        "data": [],
    }


# --- timeseries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (
            "hour",
            [
                ("2026-11-22 08:00", 1, 0),
                ("2026-11-24 23:00", 1, 120),
                ("2026-11-25 10:00", 1, 120),
                ("2026-11-25 11:00", 1, 300),
                ("2026-11-27 00:00", 1, 50),
            ],
        ),
        (
            "day",
            [
                ("2026-11-22 00:00", 1, 0),
                ("2026-11-24 00:00", 1, 120),
                ("2026-11-25 00:00", 2, 420),
                ("2026-11-27 00:00", 1, 50),
            ],
        ),
        # Weeks from Monday: Sunday the 22nd is in the week of Monday the 16th.
        ("week", [("2026-11-16 00:00", 1, 0), ("2026-11-23 00:00", 4, 590)]),
    ],
)
def test_timeseries_per_utc_period_sparse_and_oldest_first(
    history: Tracker, interval: Any, expected: list[tuple[str, int, int]]
) -> None:
    report = history.usage_report.timeseries(interval)
    assert report.interval == interval
    # Sparse: no point for Monday the 23rd or Thursday the 26th.
    assert _points(report) == expected
    for point in report.data:
        assert point.period_start.tzinfo == timezone.utc


def test_a_point_carries_every_total(history: Tracker) -> None:
    report = history.usage_report.timeseries("day", start_date="2026-11-25", end_date="2026-11-25")
    assert report.model_dump(by_alias=True, mode="json") == {
        "interval": "day",
        "startDate": "2026-11-25T00:00:00Z",
        "endDate": "2026-11-26T00:00:00Z",
        "data": [
            {
                "periodStart": "2026-11-25T00:00:00Z",
                "totalEvents": 2,
                "totalTokens": 420,
                "totalInputTokens": 100,
                "totalOutputTokens": 20,
                "totalCostCents": 1.75,
            }
        ],
    }


def test_an_event_on_a_boundary_starts_the_next_period(tracker: Tracker) -> None:
    # Monday 2026-11-30 00:00:00 exactly, and a microsecond before it.
    _ingest(
        tracker,
        {"total_tokens": 1, "timestamp": "2026-11-30T00:00:00Z"},
        {"total_tokens": 2, "timestamp": "2026-11-29T23:59:59.999999Z"},
    )
    for interval, before in (
        ("hour", "2026-11-29 23:00"),
        ("day", "2026-11-29 00:00"),
        ("week", "2026-11-23 00:00"),
    ):
        report = tracker.usage_report.timeseries(interval)  # type: ignore[arg-type]
        assert _points(report) == [(before, 1, 2), ("2026-11-30 00:00", 1, 1)], interval


def test_the_week_of_the_epoch_starts_on_monday_1969_12_29(tracker: Tracker) -> None:
    # 1970-01-01 was a Thursday: its week starts before the first instant an event may have.
    _ingest(tracker, {"total_tokens": 7, "timestamp": "1970-01-01T00:00:00Z"})
    (point,) = tracker.usage_report.timeseries("week").data
    assert point.period_start == _utc("1969-12-29T00:00:00")
    assert point.model_dump(mode="json")["periodStart"] == "1969-12-29T00:00:00Z"


def test_the_last_year_an_event_may_have(tracker: Tracker) -> None:
    _ingest(tracker, {"total_tokens": 7, "timestamp": "9998-12-31T23:59:59Z"})
    (point,) = tracker.usage_report.timeseries("hour").data
    assert point.period_start == _utc("9998-12-31T23:00:00")
    (group,) = tracker.usage_report.breakdown("model", start_date="9998-12-31").data
    assert group.total_tokens == 7


# --- filters and dates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"customer_id": "cust_b"}, [("gpt-4o", 1, 300), ("claude", 1, 50)]),
        ({"event_type": "embed"}, [("claude", 1, 120)]),
        ({"model": "claude"}, [("claude", 2, 170)]),
        ({"provider": "openai"}, [("gpt-4o", 2, 420)]),
        ({"customer_id": "cust_b", "provider": "anthropic"}, [("claude", 1, 50)]),
        ({"customer_id": "nobody"}, []),
        ({"customer_id": "cust_a", "event_type": "tool_call"}, []),
    ],
)
def test_filters_keep_the_events_with_each_value_given(
    history: Tracker, filters: dict[str, str], expected: list[tuple[str | None, int, int]]
) -> None:
    assert _groups(history.usage_report.breakdown("model", **filters)) == expected
    series = history.usage_report.timeseries("week", **filters)
    assert sum(p.total_tokens for p in series.data) == sum(tokens for _, _, tokens in expected)
    assert sum(p.total_events for p in series.data) == sum(n for _, n, _ in expected)


@pytest.mark.parametrize(
    ("start", "end", "tokens"),
    [
        # A plain date as end includes that whole day.
        (None, date(2026, 11, 24), 120),
        (date(2026, 11, 25), date(2026, 11, 25), 420),
        (date(2026, 11, 25), None, 470),
        ("2026-11-24", "2026-11-25", 540),
        # Any ISO form of a date is a date (found in review: "20261125" was midnight).
        ("20261124", "20261125", 540),
        ("2026-W48-2", "2026-W48-3", 540),
        # A datetime start is inclusive, a datetime end exclusive.
        (_utc("2026-11-25T10:00:00"), _utc("2026-11-25T11:30:00"), 120),
        (_utc("2026-11-25T10:00:00.000001"), _utc("2026-11-25T11:30:00.000001"), 300),
        # Strings with a zone, and naive ones read as UTC.
        ("2026-11-24T23:59:59.999Z", "2026-11-25T10:00:00+00:00", 120),
        # RFC 3339's lowercase t and z (found in review: z was a 400).
        ("2026-11-24t23:59:59.999z", "2026-11-25t10:00:00z", 120),
        ("2026-11-25T12:30:00+02:00", "2026-11-25T11:30:01", 300),
        (datetime(2026, 11, 27), None, 50),
        # An empty or inverted range: nothing, like customers.get_usage.
        (date(2026, 11, 26), date(2026, 11, 26), 0),
        (date(2026, 11, 27), date(2026, 11, 20), 0),
    ],
)
def test_dates_as_customers_get_usage_reads_them(
    history: Tracker, start: Any, end: Any, tokens: int
) -> None:
    breakdown = history.usage_report.breakdown("event_type", start_date=start, end_date=end)
    series = history.usage_report.timeseries("hour", start_date=start, end_date=end)
    assert sum(g.total_tokens for g in breakdown.data) == tokens
    assert sum(p.total_tokens for p in series.data) == tokens
    by_customer = history.usage_report.breakdown("customer_id", start_date=start, end_date=end)
    for group in by_customer.data:
        assert group.value is not None
        usage = history.customers.get_usage(group.value, start, end)
        assert (group.total_events, group.total_tokens) == (usage.total_events, usage.total_tokens)


@pytest.mark.parametrize(
    ("start", "end", "start_date", "end_date"),
    [
        (None, None, None, None),
        (date(2026, 11, 1), date(2026, 11, 30), "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        ("2026-11-25T10:00:00.250Z", None, "2026-11-25T10:00:00.250Z", None),
        (None, datetime(2026, 11, 25, 12, 0), None, "2026-11-25T12:00:00Z"),
        ("2026-11-25T12:00:00+02:00", None, "2026-11-25T10:00:00Z", None),
        # Outside the span event times live in: its edge, which picks the same events.
        (date(1900, 1, 1), "9999-06-01T00:00:00Z", "1970-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),
        # An end of date.max: no bound at all.
        (None, date.max, None, None),
    ],
)
def test_the_answer_states_the_range_it_read(
    tracker: Tracker, start: Any, end: Any, start_date: str | None, end_date: str | None
) -> None:
    for report in (
        tracker.usage_report.breakdown("model", start_date=start, end_date=end),
        tracker.usage_report.timeseries("day", start_date=start, end_date=end),
    ):
        wire = report.model_dump(by_alias=True, mode="json")
        assert (wire["startDate"], wire["endDate"]) == (start_date, end_date)


def test_every_recorded_event_counts_however_it_was_recorded(
    tracker: Tracker, clock: ManualClock
) -> None:
    tracker.quotas.create(name="q", metric="total_tokens", limit_value=10_000, period="day")
    tracker.usage(customer_id="c", event_type="chat", model="m", total_tokens=60)
    tracker.events.ingest(customer_id="c", event_type="chat", model="m", total_tokens=500)
    reservation = tracker.reserve(customer_id="c", event_type="chat", model="m", estimate=30)
    # A hold is not an event: it is not counted until it is committed.
    assert _groups(tracker.usage_report.breakdown("model")) == [("m", 2, 560)]
    reservation.commit(total_tokens=25)
    assert _groups(tracker.usage_report.breakdown("model")) == [("m", 3, 585)]
    # Events stamped now count in the clock's period.
    (point,) = tracker.usage_report.timeseries("day").data
    assert point.period_start == _utc("2026-11-25T00:00:00")
    assert point.period_start.timestamp() <= clock() < point.period_start.timestamp() + DAY


# --- cents ----------------------------------------------------------------------------------


def test_cents_are_summed_as_whole_micro_cents(tracker: Tracker) -> None:
    # 30 x 0.1 is 3.0000000000000004 in floats; per-event micro-cents sum to exactly 3.
    _ingest(tracker, *({"model": "m", "cost_cents": 0.1} for _ in range(30)))
    (group,) = tracker.usage_report.breakdown("model").data
    assert group.total_cost_cents == 3
    assert isinstance(group.total_cost_cents, int)
    # Each event rounds to the nearest micro-cent, half away from zero: 2.5e-7 is 0.25
    # of one (0), 5e-7 half of one (1), 1.5e-6 one and a half (2).
    _ingest(
        tracker,
        {"model": "n", "cost_cents": 2.5e-7},
        {"model": "n", "cost_cents": 5e-7},
        {"model": "n", "cost_cents": 1.5e-6},
    )
    report = tracker.usage_report.breakdown("model", model="n")
    assert report.data[0].total_cost_cents == 3e-6
    (point,) = tracker.usage_report.timeseries("week", model="n").data
    assert point.total_cost_cents == 3e-6


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", ["customerId", "properties.team", "", None, 1, ["model"]])
def test_an_unknown_group_by_is_a_400_naming_it(tracker: Tracker, group_by: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tracker.usage_report.breakdown(group_by)
    assert info.value.status_code == 400
    assert info.value.message == (
        f"groupBy: must be one of model, customer_id, event_type, provider; got {group_by!r}"
    )


@pytest.mark.parametrize("interval", ["month", "minute", "Day", "", None, 3600])
def test_an_unknown_interval_is_a_400_naming_it(tracker: Tracker, interval: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tracker.usage_report.timeseries(interval)
    assert info.value.message == f"interval: must be one of hour, day, week; got {interval!r}"


@pytest.mark.parametrize(
    ("dates", "field"),
    [
        ({"start_date": "last tuesday"}, "startDate"),
        ({"end_date": "2026-13-01"}, "endDate"),
        # date.fromisoformat alone would read it as the day 2026-12-01.
        ({"end_date": "20261201T1"}, "endDate"),
        # Python would read these as 05:00, and as the Monday alone.
        ({"end_date": "2026-12-01-05:00"}, "endDate"),
        ({"start_date": "2026-W49"}, "startDate"),
        ({"start_date": 1_700_000_000}, "startDate"),
        ({"end_date": b"2026-11-25"}, "endDate"),
    ],
)
def test_bad_dates_are_a_400_naming_the_field(
    tracker: Tracker, dates: dict[str, Any], field: str
) -> None:
    for call in (
        lambda: tracker.usage_report.breakdown("model", **dates),
        lambda: tracker.usage_report.timeseries("day", **dates),
    ):
        with pytest.raises(InvalidRequestError) as info:
            call()
        assert info.value.message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("argument", "field"),
    [
        ("customer_id", "customerId"),
        ("event_type", "eventType"),
        ("model", "model"),
        ("provider", "provider"),
    ],
)
@pytest.mark.parametrize("value", [1, ["a"], b"a", "\ud800"])
def test_a_filter_that_is_not_text_is_a_400_naming_it(
    tracker: Tracker, argument: str, field: str, value: Any
) -> None:
    for call in (
        lambda: tracker.usage_report.breakdown("model", **{argument: value}),
        lambda: tracker.usage_report.timeseries("day", **{argument: value}),
    ):
        with pytest.raises(InvalidRequestError) as info:
            call()
        assert info.value.message.startswith(f"{field}: ")


def test_a_closed_tracker_refuses_reports(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "usage.db")
    tracker.close()
    with pytest.raises(LimitryError, match="closed"):
        tracker.usage_report.breakdown("model")
    with pytest.raises(LimitryError, match="closed"):
        tracker.usage_report.timeseries("hour")


# --- exact sums past 64 bits (SQLite's sum() stops at 2**63) -------------------------------


@pytest.mark.parametrize("ledger", ["sqlite file", "sqlite memory", "memory", "postgres"])
def test_cent_sums_past_64_bits_stay_exact(ledger: str, tmp_path: Path) -> None:
    # 9,300 events of the largest cost, 10**9 cents = 10**15 micro-cents each:
    # 9.3 * 10**18 micro-cents, past the 2**63 (9.22 * 10**18) of a 64-bit integer.
    with postgres_schema() as schema:
        makers: dict[str, Callable[[], LedgerBackend]] = {
            "sqlite file": lambda: Ledger(tmp_path / "usage.db"),
            "sqlite memory": lambda: Ledger(None),
            "memory": MemoryLedger,
            "postgres": lambda: PostgresLedger(POSTGRES_DSN, schema=schema),
        }
        _sum_past_64_bits(makers[ledger]())


def _sum_past_64_bits(ledger: LedgerBackend) -> None:
    with Tracker(ledger=ledger, clock=ManualClock(START)) as tracker:
        big = {"model": "m", "cost_cents": 10**9, "total_tokens": 10**12}
        for _ in range(9):
            _ingest(tracker, *([big] * 1000))
        _ingest(tracker, *([big] * 299), {"model": "m", "cost_cents": 0.5, "total_tokens": 1})
        (group,) = tracker.usage_report.breakdown("model").data
        (point,) = tracker.usage_report.timeseries("week").data
    for totals in (group, point):
        assert totals.total_events == 9300
        assert totals.total_cost_cents == 9299 * 10**9 + 0.5
        assert totals.total_tokens == 9299 * 10**12 + 1


# --- the async client ---------------------------------------------------------------------


def test_the_client_has_the_same_reports_as_coroutines(history: Tracker) -> None:
    client = Client(history)

    async def go() -> tuple[UsageBreakdownResponse, UsageTimeseriesResponse]:
        return (
            await client.usage_report.breakdown("customer_id", start_date="2026-11-25"),
            await client.usage_report.timeseries("day", model="claude", provider="anthropic"),
        )

    breakdown, series = asyncio.run(go())
    assert breakdown == history.usage_report.breakdown("customer_id", start_date="2026-11-25")
    assert _groups(breakdown) == [("cust_b", 2, 350), ("cust_a", 1, 120)]
    assert series.data == [
        UsagePoint(
            period_start=_utc("2026-11-24T00:00:00"),
            total_events=1,
            total_tokens=120,
            total_input_tokens=120,
            total_output_tokens=0,
            total_cost_cents=0,
        ),
        UsagePoint(
            period_start=_utc("2026-11-27T00:00:00"),
            total_events=1,
            total_tokens=50,
            total_input_tokens=0,
            total_output_tokens=50,
            total_cost_cents=2,
        ),
    ]
    with pytest.raises(InvalidRequestError, match=r"^400 Bad Request: interval: "):
        asyncio.run(client.usage_report.timeseries("month"))  # type: ignore[arg-type]
