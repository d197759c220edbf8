"""Denial counters: how many calls each limit denied, or would have denied.

``tracker.stats()`` reads them.  They count in the memory of one Tracker,
from its creation, and are not stored in the ledger: a count is about what
this process saw (like its token buckets), a new process starts at zero, and
counting costs no write on the hot path.  A long-lived process that wants a
history exports the numbers (a metrics scrape, a log line) itself.

What counts, per limit:

- ``denied``: calls of ``usage()`` or ``reserve()`` that this *enforced*
  limit refused with a 429.  One denied call counts once for every enforced
  limit that was over; ``usage(wait=...)`` counts a call once, when it gives
  up, not for each attempt while it waits.
- ``would_deny``: admitted calls that this *soft* or *shadow* limit would
  have refused had it been enforced (the calls it logs).

Checks (``rate_limits.check``, ``quotas.check``) consume nothing and count
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LimitKind = Literal["rate_limit", "quota"]


@dataclass(frozen=True)
class LimitStats:
    """One limit's counters, as :meth:`Tracker.stats` reports them."""

    kind: LimitKind
    id: str
    name: str
    """The limit's name when it last counted (a rename shows from the next count)."""
    mode: str
    """``enforce``, ``soft`` or ``shadow``, as when it last counted."""
    denied: int
    would_deny: int


@dataclass(frozen=True)
class TrackerStats:
    """What :meth:`Tracker.stats` returns: the counters of every limit that counted."""

    limits: list[LimitStats]
    """Limits with at least one count, most denials first, then by name."""

    @property
    def denied(self) -> int:
        """Denials summed over the limits (a call two limits denied counts twice)."""
        return sum(limit.denied for limit in self.limits)

    def get(self, name_or_id: str) -> LimitStats | None:
        """The counters of the limit with this id, else the first with this name."""
        for limit in self.limits:
            if limit.id == name_or_id:
                return limit
        return next((limit for limit in self.limits if limit.name == name_or_id), None)


class DenialCounter:
    """The counters behind ``tracker.stats()``; the Tracker calls it under its lock."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._labels: dict[str, tuple[LimitKind, str, str]] = {}

    def count(
        self, kind: LimitKind, limit_id: str, name: str, mode: str, *, enforced: bool
    ) -> None:
        """Add one denial (``enforced``) or one would-have-denied to this limit."""
        counts = self._counts.get(limit_id)
        if counts is None:
            counts = self._counts[limit_id] = [0, 0]
        counts[0 if enforced else 1] += 1
        self._labels[limit_id] = (kind, name, mode)

    def snapshot(self) -> TrackerStats:
        limits = [
            LimitStats(kind, limit_id, name, mode, counts[0], counts[1])
            for limit_id, counts in self._counts.items()
            for kind, name, mode in [self._labels[limit_id]]
        ]
        limits.sort(key=lambda s: (-s.denied, -s.would_deny, s.name, s.id))
        return TrackerStats(limits)
