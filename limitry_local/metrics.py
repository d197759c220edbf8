"""What one event costs against a limit, in whole units.

Quota counters hold whole numbers so their sums are exact: tokens and
events count as themselves, and cents are kept as micro-cents (10**-6 of a
cent), so thirty events of 0.1 cents fill a 3-cent quota exactly, where
floating-point sums would come to 3.0000000000000004 and deny the last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

Metric = Literal[
    "total_tokens", "total_events", "total_cost_cents", "input_tokens", "output_tokens"
]

MICRO_CENTS = 1_000_000


def unit_scale(metric: Metric) -> int:
    """Units per counted thing: 10**6 for cents (micro-cents), else 1."""
    return MICRO_CENTS if metric == "total_cost_cents" else 1


class Amounts(Protocol):
    """An event's amounts, as a request or a stored row holds them."""

    @property
    def total_tokens(self) -> int | None: ...
    @property
    def cost_cents(self) -> float | None: ...
    @property
    def input_tokens(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...


def amount_reader(metric: Metric) -> Callable[[Amounts], int]:
    """The one rule for what an event adds to a ``metric`` counter, in whole units (0
    when the field is absent): a function chosen once per limit, called per event."""
    return _READERS[metric]


def _one(event: Amounts) -> int:
    return 1


def _total_tokens(event: Amounts) -> int:
    return event.total_tokens or 0


def _input_tokens(event: Amounts) -> int:
    return event.input_tokens or 0


def _output_tokens(event: Amounts) -> int:
    return event.output_tokens or 0


def _cost_units(event: Amounts) -> int:
    return micro_cents(event.cost_cents) or 0


_READERS: dict[str, Callable[[Amounts], int]] = {
    "total_events": _one,
    "total_tokens": _total_tokens,
    "input_tokens": _input_tokens,
    "output_tokens": _output_tokens,
    "total_cost_cents": _cost_units,
}


def amount_units(metric: Metric, event: Amounts) -> int:
    """The event's amount in ``metric``'s whole units (0 when the field is absent)."""
    return _READERS[metric](event)


def micro_cents(cost_cents: float | None) -> int | None:
    """``cost_cents`` in whole micro-cents, the one rounding every ledger uses.

    To the nearest micro-cent, half away from zero (``2.5e-6`` cents is 3),
    as SQLite's ``round()`` rounds: ledgers store this integer with each
    event when it is recorded, quota counters add it, and reports sum it,
    so a counter and a report of the same events always agree.
    """
    if cost_cents is None:
        return None
    value = cost_cents * MICRO_CENTS
    if not math.isfinite(value):
        raise ValueError(f"cost_cents must be a finite number, got {cost_cents!r}")
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def from_units(metric: Metric, units: int) -> int | float:
    """Units back to the metric's own number: micro-cents to cents, whole when whole."""
    scale = unit_scale(metric)
    if scale == 1:
        return units
    whole, rest = divmod(units, scale)
    return whole if rest == 0 else units / scale
