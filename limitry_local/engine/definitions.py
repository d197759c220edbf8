"""The limit definitions: quotas, rate limits and quota alerts, cached and compiled.

:class:`Definitions` is the one place that reads and writes them.  It keeps
the ledger's rows as models, reloads them when another process changed them
(the ledger's definitions version), and compiles them into the
:class:`~limitry_local.engine.rules.Plan` every call runs.  The resources,
the gate and the CLI go through its public methods; each takes the engine's
lock itself (reentrant), so a caller may also hold it around several.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from limitry_local.alerts import Alerts
from limitry_local.dimensions import extract, limit_key
from limitry_local.errors import InvalidRequestError, NotFoundError
from limitry_local.ids import new_id
from limitry_local.inputs import limit_id, page_size
from limitry_local.ledger import LedgerBackend, LedgerError
from limitry_local.metrics import amount_units
from limitry_local.models import (
    MAX_YEAR,
    Page,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertUpdate,
    QuotaCreate,
    QuotaUpdate,
    RateLimit,
    RateLimitCreate,
    RateLimitUpdate,
)
from limitry_local.periods import period_bounds

from .responses import damaged_event, definition_row, utc
from .rules import (
    RESHAPING_QUOTA_FIELDS,
    RESHAPING_RATE_FIELDS,
    Plan,
    QuotaRule,
    RateRule,
    key_json,
    reshaped,
    shape,
)

M = TypeVar("M", bound=BaseModel)
# Past every timestamp the models accept: a stored one beyond is damage.
_LAST_INSTANT = datetime(MAX_YEAR + 1, 1, 1, tzinfo=timezone.utc).timestamp()
L = TypeVar("L", Quota, RateLimit)


class Definitions:
    """Quotas, rate limits and alerts of one ledger, as this process last saw them.

    ``lock`` is the engine's; ``opened`` raises once the engine is closed;
    ``now`` reads the engine's clock (and checks it is open).
    """

    def __init__(
        self,
        ledger: LedgerBackend,
        lock: threading.RLock,
        *,
        project_id: str,
        opened: Callable[[], None],
        now: Callable[[], float],
    ) -> None:
        self._ledger = ledger
        self.lock = lock
        """The engine's lock (replaced in a forked child, see :mod:`.core`)."""
        self._project_id = project_id
        self._opened = opened
        self._now = now
        self._quotas: dict[str, Quota] = {}
        self._rate_rules: dict[str, RateRule] = {}
        self._version = -1
        self.alerts = Alerts()
        """The quota alerts, by quota, and the callbacks to announce them to."""
        self.plan = Plan((), ())
        """What every call runs: the limits compiled for this version of the definitions."""
        self.on_retired: Callable[[set[tuple[str, str]]], None] | None = None
        """Told the ``(rate limit id, generation)`` pairs no limit has any more."""
        self._deciding: Any = None
        """The write scope of an open :meth:`deciding`, which changes join."""
        self._joined = False
        self._retiring: set[tuple[str, str]] = set()
        self.live: set[tuple[str, str]] = set()
        """The ``(rate limit id, generation)`` pairs the limits have now."""

    # --- reading ---------------------------------------------------------------

    def refresh(self) -> None:
        """Load the definitions again if any process changed them since we last looked."""
        if not self._ledger.shared and self._version >= 0:
            return  # no other connection can change this ledger
        version = self._ledger.definitions_version()
        if version == self._version:
            return
        quotas = [self._stored(Quota, row) for row in self._ledger.definitions("quotas")]
        limits = []
        for row in self._ledger.definitions("rate_limits"):
            generation = row.pop("generation", None)
            limit = self._stored(RateLimit, row)
            # A ledger from before generations were stored: the shape stands in.
            limits.append((limit, generation or shape(limit)))
        alerts = [self._stored(QuotaAlert, row) for row in self._ledger.definitions("quota_alerts")]
        self._quotas = {quota.id: quota for quota in quotas}
        self.alerts.load(alerts)
        rules = {limit.id: self._reuse(limit, generation) for limit, generation in limits}
        # In place: a gate holds this mapping (see loaded_rules).
        self._rate_rules.clear()
        self._rate_rules.update(rules)
        self._compile()
        self._version = version

    def _reuse(self, limit: RateLimit, generation: str) -> RateRule:
        # An unchanged limit keeps its rule object: a gate bound to it stays bound.
        rule = self._rate_rules.get(limit.id)
        if rule is not None and rule.generation == generation and rule.limit == limit:
            return rule
        return RateRule.compile(limit, generation)

    def _compile(self) -> None:
        previous = {rule.quota.id: rule for rule in self.plan.quotas}
        quota_rules = []
        for quota in self._quotas.values():
            rule = previous.get(quota.id)
            if rule is None or rule.quota is not quota:
                rule = QuotaRule.compile(quota)
            quota_rules.append(rule)
        self.plan = Plan.of(
            [rule for rule in self._rate_rules.values() if rule.limit.enabled], quota_rules
        )
        live = {(rule.limit.id, rule.generation) for rule in self._rate_rules.values()}
        retired, self.live = self.live - live, live
        if self._deciding is not None:
            # Told only once the scope commits: rolled back, the limits stand as
            # they were, buckets and all (found in review: a failed apply wiped
            # the spent tokens of a limit it had reshaped).
            self._retiring |= retired
        elif retired and self.on_retired is not None:
            self.on_retired(retired)

    def _stored(self, kind: type[M], row: dict[str, Any]) -> M:
        if "project_id" in kind.model_fields:
            row = {**row, "project_id": self._project_id}
        try:
            return kind.model_validate(row)
        except ValidationError as exc:
            raise LedgerError(
                f"ledger {self._ledger.where} is corrupt: a stored {kind.__name__} "
                f"({row.get('id')!r}) cannot be read ({exc.error_count()} errors); "
                "restore it from a backup",
                "corrupt",
            ) from None

    def current(self) -> None:
        """Check the engine is open and the view up to date (under the caller's lock)."""
        self._opened()
        self.refresh()

    def quotas(self) -> list[Quota]:
        """Every quota, in creation order (the instances enforced: do not change them)."""
        with self.lock:
            self.current()
            return list(self._quotas.values())

    def rate_limits(self) -> list[RateLimit]:
        """Every rate limit, in creation order (the instances enforced: do not change them)."""
        with self.lock:
            self.current()
            return [rule.limit for rule in self._rate_rules.values()]

    def rate_rule(self, rate_limit_id: str) -> RateRule:
        """The compiled rule of a rate limit; :class:`NotFoundError` once it is deleted."""
        with self.lock:
            self.current()
            rule = self._rate_rules.get(limit_id(rate_limit_id, "rate limit"))
            if rule is None:
                raise NotFoundError(f"rate limit {rate_limit_id!r} not found")
            return rule

    @property
    def loaded_rules(self) -> Mapping[str, RateRule]:
        """Every rate limit's rule as last loaded, by id, without looking at the ledger:
        one mapping for the engine's life, kept current in place, so a gate can hold
        it to test that its limit did not change (read under the lock)."""
        return self._rate_rules

    def counts(self) -> tuple[int, int]:
        """How many rate limits and quotas are loaded (no I/O: for a repr)."""
        return len(self._rate_rules), len(self._quotas)

    # --- changing ----------------------------------------------------------------

    @contextmanager
    def deciding(self) -> Iterator[None]:
        """One exclusive write scope around a look at the definitions and the changes
        decided on it (``ensure``, ``apply``): two processes ensuring one name create it
        once, where each used to look, find nothing and create (found in review: four
        workers starting at once made four limits, and every later start a 409).
        Changes inside join it (:meth:`changing`) and commit together, or none."""
        with self.lock:
            if self._deciding is not None:
                yield
                return
            self._opened()
            live = self.live
            try:
                with self._ledger.write(durable=True, exclusive=True) as conn:
                    # Before the scope counts as open: what other processes changed
                    # is committed, and its retirements are told now, not deferred
                    # to a commit this scope may never make.
                    self.refresh()
                    live = self.live
                    self._deciding, self._joined = conn, False
                    try:
                        yield
                        version = self._ledger.bump_definitions(conn) if self._joined else None
                    finally:
                        self._deciding = None
            except BaseException:
                # What joined may or may not have committed (an answer lost after
                # COMMIT): read afresh, from the pairs as they stood, so the
                # reload retires what the changes took away only if they landed
                # (found in review: an in-doubt reshape never freed its old buckets).
                self._version = -1
                self._retiring = set()
                self.live = live
                raise
            if version is not None:
                self._version = version
            retired, self._retiring = self._retiring - self.live, set()
            if retired and self.on_retired is not None:
                self.on_retired(retired)

    @contextmanager
    def changing(self) -> Iterator[Any]:
        """A durable write scope that sees, and then announces, the latest definitions."""
        with self.lock:
            if self._deciding is not None:
                self._joined = True
                yield self._deciding  # the enclosing deciding() commits and announces
                return
            self._opened()
            try:
                with self._ledger.write(durable=True, exclusive=True) as conn:
                    self.refresh()
                    yield conn
                    version = self._ledger.bump_definitions(conn)
            except BaseException:
                # The change may not have committed: read the definitions afresh
                # next time rather than trust a version the file may not have.
                self._version = -1
                raise
            self._version = version

    def _new(self, kind: type[L], prefix: str, data: BaseModel) -> L:
        stamp = utc(self._now())
        fields = data.model_dump(by_alias=False)
        return kind(
            id=new_id(prefix),
            project_id=self._project_id,
            created_at=stamp,
            updated_at=stamp,
            **fields,
        )

    def _changed(self, current: L, data: BaseModel) -> L:
        # Fields left out, or given as None, stay as they are.
        changes = data.model_dump(by_alias=False, exclude_unset=True, exclude_none=True)
        return current.model_copy(update={**changes, "updated_at": utc(self._now())})

    # --- quotas ------------------------------------------------------------------

    # Each change updates this view once its write scope has committed, under
    # the lock: a reload by another thread in between would already hold it.

    def create_quota(self, data: QuotaCreate) -> Quota:
        with self.lock:
            with self.changing() as conn:
                quota = self._new(Quota, "qta", data)
                self._save_quota(conn, quota, rebuild=True)
            self._quotas[quota.id] = quota
            self._compile()
        return quota

    def update_quota(self, quota_id: str, data: QuotaUpdate) -> Quota:
        with self.lock:
            with self.changing() as conn:
                current = self.get_quota(quota_id)
                quota = self._changed(current, data)
                rebuild = reshaped(current, quota, RESHAPING_QUOTA_FIELDS)
                self._save_quota(conn, quota, rebuild=rebuild)
            self._quotas[quota.id] = quota
            self._compile()
        return quota

    def _save_quota(self, conn: Any, quota: Quota, *, rebuild: bool) -> None:
        self._ledger.save_definition(conn, "quotas", definition_row(quota))
        if rebuild:
            self._ledger.replace_counters(conn, quota.id, self._count_existing(quota))

    def _count_existing(self, quota: Quota) -> list[tuple[str, int, int]]:
        """Counters of ``quota`` over every event already recorded (spec: earlier events count)."""
        totals: dict[tuple[str, int], int] = defaultdict(int)
        for row in self._ledger.scan_events():
            try:
                properties = json.loads(row.properties)
                dims = extract(row.customer_id, row.event_type, row.model, row.provider, properties)
                key = limit_key(quota.dimension_filters, quota.per, dims)
                if key is None:
                    continue
                if not -_LAST_INSTANT < row.ts < _LAST_INSTANT:  # (NaN too)
                    raise ValueError(f"ts {row.ts!r} is no instant a ledger holds")
                start, _ = period_bounds(quota.period, row.ts, quota.timezone)
                totals[key_json(key), start] += amount_units(quota.metric, row)
            except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
                raise damaged_event(row, exc) from None
        return [(key, start, used) for (key, start), used in totals.items()]

    def get_quota(self, quota_id: str) -> Quota:
        with self.lock:
            self.current()
            quota = self._quotas.get(limit_id(quota_id, "quota"))
            if quota is None:
                raise NotFoundError(f"quota {quota_id!r} not found")
            return quota

    def delete_quota(self, quota_id: str) -> None:
        with self.lock:
            with self.changing() as conn:
                self._now()
                self.get_quota(quota_id)
                self._ledger.delete_definition(conn, "quotas", quota_id)
                # Its alerts go with it; their history stays.
                alerts = [alert.id for alert in self.alerts.by_quota.get(quota_id, ())]
                for alert_id in alerts:
                    self._ledger.delete_definition(conn, "quota_alerts", alert_id)
            self._quotas.pop(quota_id, None)
            self.alerts.remove(alerts)
            self._compile()

    # --- rate limits -------------------------------------------------------------

    def create_rate_limit(self, data: RateLimitCreate) -> RateLimit:
        with self.lock:
            with self.changing() as conn:
                limit = self._new(RateLimit, "rl", data)
                generation = new_id("gen")
                row = {**definition_row(limit), "generation": generation}
                self._ledger.save_definition(conn, "rate_limits", row)
            self._rate_rules[limit.id] = RateRule.compile(limit, generation)
            self._compile()
        return limit

    def update_rate_limit(self, rate_limit_id: str, data: RateLimitUpdate) -> RateLimit:
        with self.lock:
            with self.changing() as conn:
                current = self.get_rate_limit(rate_limit_id)
                limit = self._changed(current, data)
                # Stored with the definition, so every process names the same
                # buckets, and a reshape (even back to an earlier shape) starts
                # fresh ones.
                generation = self._rate_rules[limit.id].generation
                if reshaped(current, limit, RESHAPING_RATE_FIELDS):
                    generation = new_id("gen")
                row = {**definition_row(limit), "generation": generation}
                self._ledger.save_definition(conn, "rate_limits", row)
            self._rate_rules[limit.id] = RateRule.compile(limit, generation)
            self._compile()
        return limit

    def get_rate_limit(self, rate_limit_id: str) -> RateLimit:
        return self.rate_rule(rate_limit_id).limit

    def delete_rate_limit(self, rate_limit_id: str) -> None:
        with self.lock:
            with self.changing() as conn:
                self._now()
                self.get_rate_limit(rate_limit_id)
                self._ledger.delete_definition(conn, "rate_limits", rate_limit_id)
            del self._rate_rules[rate_limit_id]
            self._compile()

    # --- quota alerts ------------------------------------------------------------

    def create_alert(self, quota_id: str, data: QuotaAlertCreate) -> QuotaAlert:
        # A reload by another thread between the write and add() would already
        # hold the alert, and add() would list it twice: the lock spans both.
        with self.lock:
            with self.changing() as conn:
                quota = self.get_quota(quota_id)
                stamp = utc(self._now())
                alert = QuotaAlert(
                    id=new_id("qa"),
                    quota_id=quota.id,
                    threshold=data.threshold,
                    created_at=stamp,
                    updated_at=stamp,
                )
                row = alert.model_dump(mode="json", by_alias=False, exclude={"last_triggered_at"})
                self._ledger.save_definition(conn, "quota_alerts", row)
            self.alerts.add(alert)
        return alert.model_copy()

    def list_alerts(self, quota_id: str | None, limit: int, cursor: str | None) -> Page[QuotaAlert]:
        """One page of alerts in creation order (of one quota, or all)."""
        with self.lock:
            self.current()
            if quota_id is not None:
                self.get_quota(quota_id)
            alerts = [a for a in self.alerts.all if quota_id is None or a.quota_id == quota_id]
            page = paged(Page[QuotaAlert], alerts, limit, cursor, "quota alert")
            page.data = self._fired_last(page.data)
            return page

    def get_alert(self, alert_id: str) -> QuotaAlert:
        limit_id(alert_id, "quota alert")
        with self.lock:
            self.current()
            return self._fired_last([self._alert(alert_id)])[0]

    def _alert(self, alert_id: str) -> QuotaAlert:
        """The loaded alert of that id, or :class:`NotFoundError` (a 400 for a bad id)."""
        alert = next((a for a in self.alerts.all if a.id == alert_id), None)
        if alert is None:
            raise NotFoundError(f"quota alert {limit_id(alert_id, 'quota alert')!r} not found")
        return alert

    def _fired_last(self, alerts: list[QuotaAlert]) -> list[QuotaAlert]:
        """Copies of the alerts with ``lastTriggeredAt`` read from the history."""
        last = self._ledger.last_triggered(a.id for a in alerts) if alerts else {}
        return [
            alert.model_copy(update={"last_triggered_at": utc(last[alert.id])})
            if alert.id in last
            else alert.model_copy()
            for alert in alerts
        ]

    def delete_alert(self, alert_id: str) -> None:
        with self.lock:
            with self.changing() as conn:
                self._alert(alert_id)  # NotFoundError before anything is written
                self._ledger.delete_definition(conn, "quota_alerts", alert_id)
            self.alerts.remove([alert_id])

    def update_alert(self, alert_id: str, data: QuotaAlertUpdate) -> QuotaAlert:
        """A new threshold (or the same: ``updatedAt`` moves either way, as a quota's does).

        What the alert fired stays fired: the history's unique (alert, key,
        period) still holds, so a key it fired for this period is not told
        again at the new threshold; it applies from the next recorded event.
        """
        with self.lock:
            with self.changing() as conn:
                alert = self._alert(alert_id)
                changes = data.model_dump(by_alias=False, exclude_unset=True, exclude_none=True)
                updated = alert.model_copy(update={**changes, "updated_at": utc(self._now())})
                row = updated.model_dump(mode="json", by_alias=False, exclude={"last_triggered_at"})
                self._ledger.save_definition(conn, "quota_alerts", row)
            # Replaced in place: lists keep creation order.
            self.alerts.load([updated if a.id == alert_id else a for a in self.alerts.all])
            return self._fired_last([updated])[0]


def paged(
    page: type[Page[M]], items: Sequence[M], limit: int, cursor: str | None, kind: str
) -> Page[M]:
    """One page of ``items``; the cursor is the id of the last item of the previous page."""
    limit = page_size(limit)
    start = 0
    if cursor is not None:
        ids = [getattr(item, "id", None) for item in items]
        if cursor not in ids:
            raise InvalidRequestError(f"cursor: {cursor!r} is not a {kind} cursor")
        start = ids.index(cursor) + 1
    data = list(items[start : start + limit])
    more = start + limit < len(items)
    return page(
        data=data, next_cursor=getattr(data[-1], "id", None) if more else None, has_more=more
    )
