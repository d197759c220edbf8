"""Usage analytics: ``tracker.usage_report``, the totals of recorded events by dimension or period.

Two faces over the same sums.  The local reports (``breakdown``,
``timeseries``, since release 0.2) answer with the range they read and
name a group's value ``value`` and a point's start ``periodStart``.  The
hosted v0 client's calls (``get_summary``, ``get_breakdown``,
``get_timeseries``; ``client.usage`` on the async Client) answer the hosted
shapes: ``{data: [...]}`` with ``dimension`` and ``timestamp``.  Each name
keeps its own shape, so neither kind of caller sees its fields renamed.

The ledger answers each report with one aggregate query (GROUP BY in SQL, or
one pass over the in-memory events) and returns the groups unordered; the
request's validation, the period grid and the order of the answer are
decided here, once, so every ledger answers alike.

A report counts every recorded event: admitted by ``usage()``, ingested by
``events.ingest`` / ``events.batch``, or committed from a reservation.  Open
reservations are holds on quotas, not events, and are not counted.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import cast, get_args

from limitry_local.engine import Engine
from limitry_local.engine.clock import EARLIEST, LATEST
from limitry_local.errors import InvalidRequestError
from limitry_local.inputs import DateLike, date_range, optional_texts
from limitry_local.ledger import ReportFilter, UsageTotals
from limitry_local.metrics import from_units
from limitry_local.models import (
    UsageBreakdown,
    UsageBreakdownItem,
    UsageBreakdownResponse,
    UsageGroup,
    UsageGroupBy,
    UsageInterval,
    UsagePoint,
    UsageSummary,
    UsageTimeseries,
    UsageTimeseriesItem,
    UsageTimeseriesResponse,
)
from limitry_local.periods import FixedPeriod, utc_grid
from limitry_local.types import GroupBy, Interval

GROUP_BYS: tuple[str, ...] = get_args(UsageGroupBy)
INTERVALS: tuple[str, ...] = get_args(UsageInterval)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The span event times live in: [1970-01-01, 9999-01-01).


class UsageReport:
    """``tracker.usage_report``: where the tokens (and cents) went.

    >>> from limitry_local import Tracker
    >>> tracker = Tracker()
    >>> _ = tracker.events.ingest(customer_id="c", event_type="chat", model="gpt-4o",
    ...                           input_tokens=90, output_tokens=10)
    >>> [(g.value, g.total_tokens) for g in tracker.usage_report.breakdown("model").data]
    [('gpt-4o', 100)]

    Both reports take the range as ``tracker.customers.get_usage`` does
    (``start_date <= createdAt < end_date``; a plain date as ``end_date``
    includes that day; either may be None) and the same filters, each an
    exact value of the event's field.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def breakdown(
        self,
        group_by: UsageGroupBy | GroupBy,
        *,
        start_date: DateLike = None,
        end_date: DateLike = None,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> UsageBreakdownResponse:
        """Totals per ``model``, ``customer_id``, ``event_type`` or ``provider``.

        Events without a value of that dimension form one group, ``value=None``.
        Groups come largest ``totalTokens`` first; ties by value in code point
        order, the None group last.
        """
        column = cast(UsageGroupBy, _choice(group_by, "groupBy", GROUP_BYS))
        where = _filter(
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )
        engine = self._engine
        with engine.lock:
            engine.now()
            groups = engine.ledger.usage_breakdown(column, where)
        groups.sort(key=lambda group: (-group[1].total_tokens, group[0] is None, group[0] or ""))
        return UsageBreakdownResponse(
            group_by=column,
            start_date=_bound(where.start),
            end_date=_bound(where.end),
            data=[UsageGroup(value=value, **_totals(totals)) for value, totals in groups],
        )

    def timeseries(
        self,
        interval: UsageInterval | Interval,
        *,
        start_date: DateLike = None,
        end_date: DateLike = None,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> UsageTimeseriesResponse:
        """Totals per UTC ``hour``, ``day`` or ``week`` (from Monday 00:00), oldest first.

        Sparse: a period without matching events has no point.
        """
        period = cast(FixedPeriod, _choice(interval, "interval", INTERVALS))
        seconds, origin = utc_grid(period)
        where = _filter(
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )
        engine = self._engine
        with engine.lock:
            engine.now()
            points = engine.ledger.usage_timeseries(seconds, origin, where)
        points.sort(key=lambda point: point[0])
        return UsageTimeseriesResponse(
            interval=period,
            start_date=_bound(where.start),
            end_date=_bound(where.end),
            data=[
                UsagePoint(period_start=_EPOCH + timedelta(seconds=start), **_totals(totals))
                for start, totals in points
            ],
        )

    # --- the hosted v0 client's calls (``limitry.client.Usage``) -----------------

    def get_summary(
        self,
        start_date: DateLike,
        end_date: DateLike,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        *,
        provider: str | None = None,
    ) -> UsageSummary:
        """The hosted ``GET /usage``: the totals of every matching event in the range.

        Summed by the ledger: one grouped query on a column the filters fix
        (or on ``event_type``), whose few groups are added up here.
        """
        where = _filter(
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )
        # Grouped on a column a filter fixes, the ledger answers one group.
        filtered: tuple[tuple[UsageGroupBy, str | None], ...] = (
            ("customer_id", customer_id),
            ("event_type", event_type),
            ("model", model),
            ("provider", provider),
        )
        column: UsageGroupBy = next(
            (name for name, value in filtered if value is not None), "event_type"
        )
        engine = self._engine
        with engine.lock:
            engine.now()
            groups = engine.ledger.usage_breakdown(column, where)
        totals = {
            "total_events": 0,
            "total_tokens": 0,
            "total_input_tokens": 0,
            "total_output_tokens": 0,
            "cost_micro_cents": 0,
        }
        for _, group in groups:
            totals["total_events"] += group.events
            totals["total_tokens"] += group.total_tokens
            totals["total_input_tokens"] += group.input_tokens
            totals["total_output_tokens"] += group.output_tokens
            totals["cost_micro_cents"] += group.cost_micro_cents
        cents = from_units("total_cost_cents", totals.pop("cost_micro_cents"))
        return UsageSummary(**totals, total_cost_cents=cents)

    def get_breakdown(  # noqa: PLR0917 (the hosted client's positional signature)
        self,
        group_by: UsageGroupBy | GroupBy,
        start_date: DateLike,
        end_date: DateLike,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        *,
        provider: str | None = None,
    ) -> UsageBreakdown:
        """The hosted ``GET /usage/breakdown``: :meth:`breakdown`, each group's value as
        ``dimension``, in the same order."""
        report = self.breakdown(
            group_by,
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )
        return UsageBreakdown(
            data=[
                UsageBreakdownItem(dimension=group.value, **_group_totals(group))
                for group in report.data
            ]
        )

    def get_timeseries(  # noqa: PLR0917 (the hosted client's positional signature)
        self,
        interval: UsageInterval | Interval,
        start_date: DateLike,
        end_date: DateLike,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        *,
        provider: str | None = None,
    ) -> UsageTimeseries:
        """The hosted ``GET /usage/timeseries``: :meth:`timeseries`, each point's start as
        ``timestamp``, oldest first."""
        report = self.timeseries(
            interval,
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )
        return UsageTimeseries(
            data=[
                UsageTimeseriesItem(timestamp=point.period_start, **_group_totals(point))
                for point in report.data
            ]
        )


def _group_totals(row: UsageGroup | UsagePoint) -> dict[str, int | float]:
    return {
        "total_events": row.total_events,
        "total_tokens": row.total_tokens,
        "total_input_tokens": row.total_input_tokens,
        "total_output_tokens": row.total_output_tokens,
        "total_cost_cents": row.total_cost_cents,
    }


def _choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidRequestError(f"{name}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def _filter(
    *,
    start_date: DateLike,
    end_date: DateLike,
    customer_id: str | None,
    event_type: str | None,
    model: str | None,
    provider: str | None,
) -> ReportFilter:
    """The events a report sums, or a 400 naming the bad argument by its wire name."""
    start, end = date_range(start_date, end_date)
    optional_texts(
        ("customerId", customer_id),
        ("eventType", event_type),
        ("model", model),
        ("provider", provider),
    )
    return ReportFilter(customer_id, event_type, model, provider, start, end)


def _bound(seconds: float | None) -> datetime | None:
    """A bound as an aware datetime, clamped to the span event times live in: a bound
    outside it picks the same events as that edge, and every datetime can state it."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(min(max(seconds, EARLIEST), LATEST), timezone.utc)


def _totals(totals: UsageTotals) -> dict[str, int | float]:
    return {
        "total_events": totals.events,
        "total_tokens": totals.total_tokens,
        "total_input_tokens": totals.input_tokens,
        "total_output_tokens": totals.output_tokens,
        "total_cost_cents": from_units("total_cost_cents", totals.cost_micro_cents),
    }
