"""``usage``: events summed per period, customer and model, by the ledger.

Sums are aggregate queries of ``tracker.usage_report`` (GROUP BY in
SQL).  One breakdown lists the customers; then, per customer, a time
series finds the periods that hold its events and one breakdown per period
sums them by model.  Each of those reads only that customer's events in
that period, through the ledger's (customer, time) index.  The report's
intervals stop at weeks; months are found from days, which nest in UTC
months.

The table has one row per (period, customer, model): with many customers
and short periods it holds about as many rows as there are events, and a
query per row costs more than reading the events.  When the queries would
(by :data:`QUERY_COST`), the rows are summed from one walk over the events
(``events.list``, a page at a time) instead.  The rows are the same either
way (a test holds both to it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from limitry_local.metrics import MICRO_CENTS, from_units, micro_cents
from limitry_local.models import UsageInterval
from limitry_local.periods import Period, period_bounds

if TYPE_CHECKING:
    from limitry_local.cli.transfer import EventFilters
    from limitry_local.tracker import Tracker

Grouping = Literal[Period, "all"]

QUERY_COST = 10
"""About how many events a walk reads in the time one report query takes
(measured on a 200k-event file, docs/cli.md): when the queries would cost
more than walking the events, the rows are summed from a walk instead."""


class Totals(Protocol):
    """A report's group or point: what a row adds up."""

    @property
    def total_events(self) -> int: ...
    @property
    def total_input_tokens(self) -> int: ...
    @property
    def total_output_tokens(self) -> int: ...
    @property
    def total_tokens(self) -> int: ...
    @property
    def total_cost_cents(self) -> int | float: ...


@dataclass
class UsageRow:
    period_start: datetime | None
    """Start of the UTC calendar period; None when grouping over all time."""
    customer_id: str | None
    model: str | None
    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_micro_cents: int = 0
    """Summed as whole micro-cents, like the quota counters, so 0.1 + 0.2 totals 0.3."""

    def add(self, totals: Totals) -> None:
        """Add a report's group or point."""
        self.events += totals.total_events
        self.input_tokens += totals.total_input_tokens
        self.output_tokens += totals.total_output_tokens
        self.total_tokens += totals.total_tokens
        self.cost_micro_cents += _whole_micro_cents(totals.total_cost_cents)

    @property
    def cost_cents(self) -> int | float:
        return from_units("total_cost_cents", self.cost_micro_cents)

    def to_json(self) -> dict[str, Any]:
        """Wire-style camelCase, with the totals named as in ``CustomerUsageResponse``."""
        start = self.period_start
        return {
            "periodStart": None if start is None else start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "customerId": self.customer_id,
            "model": self.model,
            "totalEvents": self.events,
            "totalInputTokens": self.input_tokens,
            "totalOutputTokens": self.output_tokens,
            "totalTokens": self.total_tokens,
            "totalCostCents": self.cost_cents,
        }


def aggregate(
    tracker: Tracker, grouping: Grouping, filters: EventFilters, *, query_cost: float = QUERY_COST
) -> list[UsageRow]:
    """Matching events summed per (period, customer, model), sorted by period, customer, model.

    ``query_cost`` is :data:`QUERY_COST` (0 always queries: the tests use it).
    """
    report = tracker.usage_report
    where: dict[str, Any] = {
        "start_date": filters.start_date,
        "end_date": filters.end_date,
        "event_type": filters.event_type,
        "model": filters.model,
    }
    groups = report.breakdown("customer_id", **{**where, "customer_id": filters.customer_id}).data
    customers = [group.value for group in groups]
    interval: UsageInterval = grouping if grouping in ("hour", "day", "week") else "day"
    if grouping != "all":
        events = sum(group.total_events for group in groups)
        periods = len(report.timeseries(interval, **where).data)
        # Queries per customer <= 1 + its periods (and <= 1 + its events).
        queries = sum(1 + min(periods, group.total_events) for group in groups)
        if queries * query_cost > events:
            return _walk(tracker, grouping, filters)
    rows: list[UsageRow] = []
    for customer in customers:
        if customer is None:  # customerId is required: no event lacks one
            continue
        mine = {**where, "customer_id": customer}
        if grouping == "all":
            rows.extend(_by_model(tracker, mine, None, customer))
            continue
        series = report.timeseries(interval, **mine)
        # The range as the report read it, to clip each period to the asked range.
        low, high = series.start_date, series.end_date
        for start in sorted({_period(point.period_start, grouping) for point in series.data}):
            _, end_seconds = period_bounds(grouping, start.timestamp())
            end = datetime.fromtimestamp(end_seconds, timezone.utc)
            period = {
                **mine,
                "start_date": start if low is None else max(start, low),
                "end_date": end if high is None else min(end, high),
            }
            rows.extend(_by_model(tracker, period, start, customer))
    return sorted(rows, key=_order)


def _whole_micro_cents(cents: int | float) -> int:
    """A report's total (whole micro-cents stated as cents) back to its integer.

    ``cents * 10**6`` in floats is rounded once more: past 2**52 micro-cents
    (some 4.5e9 cents) it can land a unit off the ledger's sum, and the rows
    would differ from a walk's.  The float's exact value times 10**6 is within
    half a unit of the sum while floats still tell micro-cents apart (below
    2**33 cents).
    """
    if isinstance(cents, int):
        return cents * MICRO_CENTS
    return round(Decimal(cents) * MICRO_CENTS)


def _by_model(
    tracker: Tracker, where: dict[str, Any], start: datetime | None, customer: str
) -> list[UsageRow]:
    """One customer's rows in one period: a breakdown by model."""
    rows = []
    for group in tracker.usage_report.breakdown("model", **where).data:
        row = UsageRow(start, customer, group.value)
        row.add(group)
        rows.append(row)
    return rows


def _walk(tracker: Tracker, grouping: Grouping, filters: EventFilters) -> list[UsageRow]:
    """The same rows summed from a walk over the matching events, page by page."""
    from limitry_local.cli.transfer import events_newest_first  # noqa: PLC0415 - imports us

    rows: dict[tuple[datetime | None, str | None, str | None], UsageRow] = {}
    for event in events_newest_first(tracker, filters):
        seconds, _ = period_bounds(grouping, event.created_at.timestamp())  # type: ignore[arg-type]
        key = (datetime.fromtimestamp(seconds, timezone.utc), event.customer_id, event.model)
        row = rows.get(key)
        if row is None:
            row = rows[key] = UsageRow(*key)
        row.events += 1
        row.input_tokens += event.input_tokens or 0
        row.output_tokens += event.output_tokens or 0
        row.total_tokens += event.total_tokens or 0
        # What the ledger stored with the event and its reports sum: the one
        # rule, half away from zero (round() is half to even: 2.5e-6 cents is 2).
        row.cost_micro_cents += micro_cents(event.cost_cents) or 0
    return sorted(rows.values(), key=_order)


def _period(start: datetime, grouping: Grouping) -> datetime:
    """A report point's start as the row's period: itself, or its month."""
    if grouping != "month":
        return start
    seconds, _ = period_bounds("month", start.timestamp())
    return datetime.fromtimestamp(seconds, timezone.utc)


def total(rows: Iterable[UsageRow]) -> UsageRow:
    """One row summing ``rows``, for the table's last line."""
    summed = UsageRow(None, None, None)
    for row in rows:
        summed.events += row.events
        summed.input_tokens += row.input_tokens
        summed.output_tokens += row.output_tokens
        summed.total_tokens += row.total_tokens
        summed.cost_micro_cents += row.cost_micro_cents
    return summed


def period_label(start: datetime | None, grouping: Grouping) -> str:
    """How a person reads the period: ``2026-11-25 10:00``, ``2026-11-25``, ``2026-11``."""
    if start is None:
        return "all time"
    if grouping == "hour":
        return start.strftime("%Y-%m-%d %H:00")
    if grouping == "week":
        return f"week of {start:%Y-%m-%d}"
    if grouping == "month":
        return start.strftime("%Y-%m")
    return start.strftime("%Y-%m-%d")


def _order(row: UsageRow) -> tuple[float, str, str]:
    # None sorts first: an event without a model lists before the named models.
    when = row.period_start.timestamp() if row.period_start is not None else 0.0
    return when, row.customer_id or "", row.model or ""
