"""``usage``: events summed per period, customer and model.

Read through the public ``events.list``, page by page, so it costs one pass
over the matching events; ``tracker.customers.get_usage`` sums in SQL but
only per customer, without the model or period split this table needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from limitry_local.metrics import MICRO_CENTS, from_units
from limitry_local.models import Event
from limitry_local.periods import Period, period_bounds

Grouping = Literal[Period, "all"]


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

    def add(self, event: Event) -> None:
        self.events += 1
        self.input_tokens += event.input_tokens or 0
        self.output_tokens += event.output_tokens or 0
        self.total_tokens += event.total_tokens or 0
        self.cost_micro_cents += round((event.cost_cents or 0) * MICRO_CENTS)

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


def aggregate(events: Iterable[Event], grouping: Grouping) -> list[UsageRow]:
    """Sum ``events`` per (period, customer, model), sorted by period, then customer, model."""
    rows: dict[tuple[datetime | None, str | None, str | None], UsageRow] = {}
    for event in events:
        start = None
        if grouping != "all":
            seconds, _ = period_bounds(grouping, event.created_at.timestamp())
            start = datetime.fromtimestamp(seconds, timezone.utc)
        key = (start, event.customer_id, event.model)
        row = rows.get(key)
        if row is None:
            row = rows[key] = UsageRow(*key)
        row.add(event)
    return sorted(rows.values(), key=_order)


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
