"""Quota alerts: say once per quota key and period that usage reached a share of the limit.

An alert fires when a recorded event takes a quota key's usage to at least
``threshold`` % of its limit (the override the key meets, if any), and
at most once per alert, key and period.  "Once" is kept by the ledger, not
by this process: the firing is written in the event's own write scope,
against a unique index on ``(alert, key, period)``, so several threads or
processes that see the same crossing log it once, and a denied or rolled
back event fires nothing.  The callbacks run after the scope, outside the
tracker's lock, in the thread whose event fired the alert.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from limitry_local.dimensions import Key
from limitry_local.ids import new_id
from limitry_local.ledger import AlertRow, LedgerBackend
from limitry_local.metrics import from_units, unit_scale
from limitry_local.models import Quota, QuotaAlert, QuotaAlertLog

logger = logging.getLogger("limitry_local.tracker")

AlertCallback = Callable[[QuotaAlertLog], object]
"""What :meth:`Tracker.on_alert` takes: called with each firing; its result is ignored."""

_Mark = tuple[str, str, int]
"""``(alert_id, key_json, period_start)``: what fires at most once."""

# Marks this process knows were logged, so a key that stays over a threshold
# does not ask the ledger again on every event (a round trip on PostgreSQL).
# A cache only: the ledger's unique index decides.  Cleared when it grows
# this large, which costs one ledger look-up per key afterwards.
_MAX_MARKS = 65_536


@dataclass(slots=True)
class Crossing:
    """A quota key's counter after a recorded event, to compare with its alerts.

    ``used`` is the counter, which includes what open reservations hold.
    """

    quota: Quota
    key: Key
    key_json: str
    start: int
    end: int
    used: int
    limit_units: int
    event_id: str


@dataclass(slots=True)
class Firing:
    mark: _Mark
    entry: QuotaAlertLog | None
    """None when the ledger had it already (another thread or process fired it)."""


@dataclass(slots=True)
class Alerts:
    """The alerts of one Tracker: definitions by quota, callbacks, and what already fired."""

    all: list[QuotaAlert] = field(default_factory=list)
    by_quota: dict[str, list[QuotaAlert]] = field(default_factory=dict)
    """The hot path's view: a quota without alerts is not in it."""
    callbacks: list[AlertCallback] = field(default_factory=list)
    _marks: set[_Mark] = field(default_factory=set)
    _lost_batches: int = 0
    """The ledger's count of lost batches when the marks were last known good."""

    def load(self, alerts: Iterable[QuotaAlert]) -> None:
        """Every alert, in creation order (the order lists answer in)."""
        self.all = list(alerts)
        self._index()

    def add(self, alert: QuotaAlert) -> None:
        self.all.append(alert)
        self._index()

    def remove(self, alert_ids: Iterable[str]) -> None:
        gone = set(alert_ids)
        self.all = [alert for alert in self.all if alert.id not in gone]
        self._index()

    def _index(self) -> None:
        by_quota: dict[str, list[QuotaAlert]] = {}
        for alert in self.all:
            by_quota.setdefault(alert.quota_id, []).append(alert)
        self.by_quota = by_quota

    def log(
        self, ledger: LedgerBackend, scope: Any, crossings: Iterable[Crossing], now: float
    ) -> list[Firing]:
        """Log, in the event's write scope, every alert these usages reach for the first time."""
        # A batched ledger that lost a batch lost the firings it logged: marks
        # may name firings the ledger no longer has.
        lost = getattr(ledger, "lost_batches", 0)
        if lost != self._lost_batches:
            self._marks.clear()
            self._lost_batches = lost
        firings: list[Firing] = []
        for c in crossings:
            recorded: int | None = None
            for alert in self.by_quota.get(c.quota.id, ()):
                # Integers only: 80 % of 3 is reached at 3, not at 2.4000000000000004.
                # The counter includes open holds: an upper bound of recorded usage.
                if c.used * 100 < alert.threshold * c.limit_units:
                    continue
                mark = (alert.id, c.key_json, c.start)
                if mark in self._marks:
                    continue
                if recorded is None:
                    # A hold is not usage: asked only when the bound reaches a threshold.
                    recorded = c.used - ledger.held(c.quota.id, c.key_json, c.start)
                if recorded * 100 < alert.threshold * c.limit_units:
                    continue
                row = _row(alert, c, recorded, now)
                entry = log_entry(row) if ledger.log_alert(scope, row) else None
                firings.append(Firing(mark, entry))
        return firings

    def announce(self, firings: list[Firing]) -> None:
        """After the scope: remember what fired, then call the callbacks (errors are logged)."""
        if len(self._marks) + len(firings) > _MAX_MARKS:
            self._marks.clear()
        for firing in firings:
            self._marks.add(firing.mark)
        for firing in firings:
            if firing.entry is None:
                continue
            for callback in list(self.callbacks):
                try:
                    # A copy each: one callback cannot change what the next one sees.
                    callback(firing.entry.model_copy(deep=True))
                except Exception:
                    # An alert hook must not turn an admitted event into an error.
                    logger.exception(
                        "quota alert callback %r raised on %s; tracking goes on",
                        callback,
                        firing.entry.id,
                    )


def _row(alert: QuotaAlert, c: Crossing, used: int, now: float) -> AlertRow:
    quota = c.quota
    return AlertRow(
        id=new_id("qal"),
        alert_id=alert.id,
        quota_id=quota.id,
        key=c.key_json,
        period_start=c.start,
        period_end=c.end,
        threshold=alert.threshold,
        used=used,
        limit_units=c.limit_units,
        quota_name=quota.name,
        metric=quota.metric,
        period=quota.period,
        dimensions=json.dumps(dict(zip(quota.per, c.key, strict=True)), ensure_ascii=False),
        event_id=c.event_id,
        triggered_at=now,
    )


def log_entry(row: AlertRow) -> QuotaAlertLog:
    """The model of a stored firing."""
    metric: Any = row.metric  # as stored: validated when the quota was written
    return QuotaAlertLog(
        id=row.id,
        quota_alert_id=row.alert_id,
        quota_id=row.quota_id,
        quota_name=row.quota_name,
        metric=metric,
        period=row.period,
        threshold=row.threshold,
        dimensions=json.loads(row.dimensions),
        period_start=_datetime(row.period_start),
        period_end=_datetime(row.period_end),
        current_usage=from_units(metric, row.used),
        limit_value=row.limit_units // unit_scale(metric),
        event_id=row.event_id,
        triggered_at=_datetime(row.triggered_at),
    )


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)
