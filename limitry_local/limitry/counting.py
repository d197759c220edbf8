"""Which limits apply to a check, and which ledger counters each one reads and charges.

Every 1.0 limit counts on the ledger's quota counters, as the Tracker's
quotas do: ``(limit id, subject key, period start)``.  A periodic window is
one counter per period; a rolling window sums 60 slots (:mod:`~limitry_local.windows`);
``total`` is one counter for good, with the credits added to it beside it;
``concurrent`` is one counter of the slots open reservations hold.  Usage
history for ``usage.query`` is three more counters per limit, subject and
hour: units used, checks allowed, checks refused.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limitry_local.windows import rolling_slots, window_bounds

Counter = tuple[str, str, int]
"""``(quota_id, key, period_start)`` as the ledger keys a counter."""
HOUR = 3600
CREDITS = "#credits"
USED, ALLOWED, REFUSED = "#used", "#allowed", "#refused"


def subject_key(subject: Mapping[str, Any]) -> str:
    """A subject as its counters' key: JSON, so no kind or id can collide with another."""
    return _key(subject["kind"], subject["id"])


@functools.lru_cache(maxsize=65_536)
def _key(kind: str, subject_id: str) -> str:
    # Cached: the same subjects come back on every check, and JSON encoding is
    # a visible share of one.
    return json.dumps([kind, subject_id], separators=(",", ":"), ensure_ascii=False)


def subject_of(key: str) -> dict[str, str]:
    kind, subject_id = json.loads(key)
    return {"kind": kind, "id": subject_id}


@dataclass(frozen=True, slots=True)
class Rule:
    """One stored limit, read once per definitions version."""

    limit: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.limit["id"])

    @property
    def active(self) -> bool:
        return self.limit["archivedAt"] is None

    def applies(self, subject: Mapping[str, Any], action: str) -> bool:
        on = self.limit["subject"]
        return (
            self.active
            and self.limit["enabled"]
            and on["kind"] == subject["kind"]
            and on["id"] in (None, subject["id"])
            and self.limit["action"] in ("*", action)
        )


def applicable(rules: Sequence[Rule], subject: Mapping[str, Any], action: str) -> list[Rule]:
    """The limits a check of ``subject`` doing ``action`` meets, in creation order.

    A limit on one subject replaces the limits on its whole kind with the same
    action and window: a customer's own allowance instead of the plan's."""
    matching = [rule for rule in rules if rule.applies(subject, action)]
    own = {(r.limit["action"], r.limit["window"]) for r in matching if r.limit["subject"]["id"]}
    return [
        r
        for r in matching
        if r.limit["subject"]["id"] or (r.limit["action"], r.limit["window"]) not in own
    ]


@dataclass(frozen=True, slots=True)
class Place:
    """Where one limit counts one subject at one moment."""

    rule: Rule
    subject: dict[str, str]
    counters: tuple[Counter, ...]
    """What is summed for its usage (60 slots for a rolling window, else one)."""
    charge: Counter
    """The counter a use adds to."""
    end: int | None
    """When the period ends; None for total, concurrent and rolling windows."""
    slot: int = 0
    """A rolling window's slot length (0 for the others)."""

    @property
    def credits(self) -> Counter | None:
        if self.rule.limit["window"] != "total":
            return None
        return (self.rule.id + CREDITS, self.charge[1], 0)

    @property
    def concurrent(self) -> bool:
        return bool(self.rule.limit["window"] == "concurrent")

    def standing(self, values: Sequence[int], credits: int, now: float) -> Standing:
        """What is used and left, given the counters' values (in :attr:`counters` order)."""
        used = sum(values)
        allowance = int(self.rule.limit["amount"]) + credits
        resets: float | None = self.end
        if self.slot:
            oldest = next((c for c, v in zip(self.counters, values, strict=True) if v), None)
            # A slot counts while it is one of the last 60: until start + 60 slots.
            resets = None if oldest is None else oldest[2] + self.slot * len(self.counters)
        return Standing(self, used, allowance, resets)


@dataclass(frozen=True, slots=True)
class Standing:
    place: Place
    used: int
    allowance: int
    resets_at: float | None

    @property
    def remaining(self) -> int:
        return max(0, self.allowance - self.used)

    def refuses(self, cost: int) -> bool:
        """The one rule for "reached": the cost does not fit in what is left."""
        return self.used + cost > self.allowance

    def retry_after(self, now: float) -> int | None:
        """Seconds until the window frees units; None when only time cannot."""
        if self.resets_at is None:
            return None
        return max(1, math.ceil(self.resets_at - now))


def place(rule: Rule, subject: dict[str, str], now: float, anchor: float | None) -> Place:
    """The counters ``rule`` reads and charges for ``subject`` at ``now``.

    ``anchor``: when the subject's periods start for a ``billing_date`` or
    ``first_use`` limit (None for calendar periods)."""
    limit = rule.limit
    key = subject_key(subject)
    window = limit["window"]
    if window in ("total", "concurrent"):
        counter = (rule.id, key, 0)
        return Place(rule, subject, (counter,), counter, None)
    if limit["rolling"]:
        first, slot, count = rolling_slots(window, now)
        counters = tuple((rule.id, key, first + i * slot) for i in range(count))
        return Place(rule, subject, counters, counters[-1], None, slot)
    start, end = window_bounds(window, limit["every"], now, anchor)
    counter = (rule.id, key, start)
    return Place(rule, subject, (counter,), counter, end)


def history(
    rule_id: str, key: str, now: float, column: str, amount: int
) -> tuple[str, str, int, int]:
    """One increment of the usage history: ``column`` of the hour holding ``now``."""
    hour = math.floor(now) - math.floor(now) % HOUR
    return (rule_id + column, key, hour, amount)
