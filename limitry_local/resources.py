"""The resource namespaces: ``tracker.quotas`` (and ``.quotas.alerts``), ``.rate_limits``,
``.events``, ``.customers``.

Thin by design: each method validates its arguments into a request model
and calls the engine (:mod:`limitry_local.engine`), where the rules live.  Methods take snake_case
keyword arguments or the matching model (or a wire-form dict).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from limitry_local.engine import Engine
from limitry_local.engine.definitions import paged
from limitry_local.errors import DuplicateNameWarning, InvalidRequestError, key_name, parse
from limitry_local.gate import RateGate
from limitry_local.inputs import DateLike
from limitry_local.limits_as_code import ensure_change
from limitry_local.models import (
    MAX_BATCH,
    CustomerUsageResponse,
    DeleteResponse,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    Page,
    Project,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaAlertUpdate,
    QuotaCheckRequest,
    QuotaCheckResponse,
    QuotaCreate,
    QuotasCheckRequest,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckRequest,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitsCheckRequest,
    RateLimitUpdate,
    TrackPostRequest,
)

Limit = int | str | None
"""A page size: 1 to 100, as an int or the decimal string the hosted client sends
(``limit="10"``); None is the default, 50."""
DEFAULT_LIMIT = 50


L = TypeVar("L", Quota, RateLimit)


def _copy(limit: L) -> L:
    # The tracker enforces its own instances; callers get copies, so changing
    # ``quota.limit_value`` on a returned object cannot change enforcement.
    return limit.model_copy(deep=True)


def page_limit(limit: Limit) -> int:
    """``limit`` as an int: None is 50, ``"10"`` is 10.

    The range (1 to 100) is checked where the page is cut.
    """
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, str):
        # The hosted client sends every limit as a string, as a query parameter would be.
        if not (limit.isascii() and limit.isdigit()) or len(limit) > 3:
            raise InvalidRequestError(
                f"limit: must be an integer from 1 to 100 (or its decimal string), got {limit!r}"
            )
        return int(limit)
    return limit


def _dimensions(
    given: QuotaCheckRequest
    | RateLimitCheckRequest
    | QuotasCheckRequest
    | RateLimitsCheckRequest
    | Mapping[str, Any],
    model: type[QuotaCheckRequest] | type[RateLimitCheckRequest],
) -> Mapping[str, Any]:
    """The dimensions of a check: the model, its wire body ``{"dimensions": {...}}``, or bare.

    The hosted client's ``QuotasCheckRequest`` / ``RateLimitsCheckRequest``
    wrap either form of the body.
    """
    if isinstance(given, model):
        return given.dimensions
    if isinstance(given, (QuotasCheckRequest, RateLimitsCheckRequest)):
        given = given.root
    if (
        isinstance(given, Mapping)
        and list(given) == ["dimensions"]
        and isinstance(given["dimensions"], Mapping)
    ):
        # Unambiguous: a dimension's value is a string, never an object.
        return given["dimensions"]
    return given  # type: ignore[return-value]


def _warn_if_taken(name: str, kind: str, existing: Iterable[Quota | RateLimit]) -> None:
    """Warn (not refuse, as the hosted API allows it) when ``name`` is already a limit's name."""
    ids = [limit.id for limit in existing if limit.name == name]
    if ids:
        warnings.warn(
            DuplicateNameWarning(
                f"a {kind} named {name!r} already exists ({', '.join(ids)}); this creates "
                f"another, and every one is enforced. To create it once and keep it as "
                f"declared, call ensure(...) instead of create(...)"
            ),
            stacklevel=3,
        )


class _Resource:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._definitions = engine.definitions


class QuotaAlerts(_Resource):
    """``tracker.quotas.alerts``: warnings at a share of a quota, and their history.

    An alert fires at most once per quota key and period, when a recorded
    event takes usage to ``threshold`` % of the limit or more (see
    docs/semantics.md); :meth:`Tracker.on_alert` registers what to call.
    """

    def create(
        self,
        quota_id: str,
        data: QuotaAlertCreate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> QuotaAlert:
        """``create(quota_id, threshold=80)``: a percentage of the quota's limit, 1 to 100."""
        return self._definitions.create_alert(quota_id, parse(QuotaAlertCreate, data, fields))

    def list(
        self, quota_id: str | None = None, *, limit: Limit = None, cursor: str | None = None
    ) -> Page[QuotaAlert]:
        """The alerts of a quota (or of every quota), in creation order."""
        return self._definitions.list_alerts(quota_id, page_limit(limit), cursor)

    def get(self, alert_id: str) -> QuotaAlert:
        return self._definitions.get_alert(alert_id)

    def update(
        self,
        alert_id: str,
        data: QuotaAlertUpdate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> QuotaAlert:
        """``update(alert_id, threshold=90)``, the hosted ``quota_alerts.update``.

        Moves ``updatedAt``; a key the alert already fired for in this period
        is not told again at the new threshold (see docs/semantics.md).
        """
        return self._definitions.update_alert(alert_id, parse(QuotaAlertUpdate, data, fields))

    def delete(self, alert_id: str) -> DeleteResponse:
        """Stop the alert; what it fired stays in the history.  Answers ``{"success": true}``."""
        self._definitions.delete_alert(alert_id)
        return DeleteResponse()

    def history(
        self,
        quota_id: str | None = None,
        *,
        alert_id: str | None = None,
        limit: Limit = None,
        cursor: str | None = None,
    ) -> Page[QuotaAlertLog]:
        """Every firing ("qal_..."), newest first, of one quota or alert, or of all."""
        return self._engine.alert_history(quota_id, alert_id, page_limit(limit), cursor)

    def get_history(
        self, alert_id: str, limit: Limit = None, cursor: str | None = None
    ) -> Page[QuotaAlertLog]:
        """The hosted ``quota_alerts.get_history``: the firings of one alert, newest first."""
        return self.history(alert_id=alert_id, limit=limit, cursor=cursor)


class Quotas(_Resource):
    """``tracker.quotas``: totals over UTC calendar periods, counted from the ledger."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.alerts = QuotaAlerts(engine)

    def create(
        self, data: QuotaCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        """``create(name=..., metric="total_tokens", limit_value=100_000, period="day")``.

        Always a new quota, as on the hosted API: a name already in use
        warns (:class:`DuplicateNameWarning`); :meth:`ensure` is safe to re-run.
        """
        request = parse(QuotaCreate, data, fields)
        with self._engine.lock:
            _warn_if_taken(request.name, "quota", self._definitions.quotas())
            return _copy(self._definitions.create_quota(request))

    def ensure(
        self, data: QuotaCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        """The quota named ``name``, created if absent, else updated to these fields.

        Takes what :meth:`create` takes and is safe to run at every start:
        ``ensure(name="daily tokens", metric="total_tokens", limit_value=100_000,
        period="day")`` makes one quota however often it runs, and changing
        a field in the code changes it in the ledger (counters stay, as for
        :meth:`update`).  A field left out means its default, as in a limits
        file.  Raises :class:`~limitry_local.errors.ConflictError` (409) when
        several quotas already share the name.
        """
        request = parse(QuotaCreate, data, fields)
        with self._engine.lock, self._definitions.deciding():
            change = ensure_change(_Pair(self._engine), "quota", request)
            assert change.id is not None
            return self.get(change.id)

    def list(self, limit: Limit = None, cursor: str | None = None) -> Page[Quota]:
        size = page_limit(limit)
        page = paged(Page[Quota], self._definitions.quotas(), size, cursor, "quota")
        page.data = [_copy(quota) for quota in page.data]
        return page

    def get(self, quota_id: str) -> Quota:
        return _copy(self._definitions.get_quota(quota_id))

    def update(
        self, quota_id: str, data: QuotaUpdate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        return _copy(self._definitions.update_quota(quota_id, parse(QuotaUpdate, data, fields)))

    def delete(self, quota_id: str) -> DeleteResponse:
        """Delete the quota and its alerts (their history stays); answers ``{"success": true}``."""
        self._definitions.delete_quota(quota_id)
        return DeleteResponse()

    def check(
        self, dimensions: QuotaCheckRequest | QuotasCheckRequest | Mapping[str, Any]
    ) -> QuotaCheckResponse:
        """Where each matching quota stands now, consuming nothing."""
        return self._engine.check_quotas(_dimensions(dimensions, QuotaCheckRequest))

    def create_alert(
        self,
        quota_id: str,
        request: QuotaAlertCreate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> QuotaAlert:
        """The hosted ``quotas.create_alert``: :meth:`QuotaAlerts.create`."""
        return self.alerts.create(quota_id, request, **fields)

    def list_alerts(
        self, quota_id: str, limit: Limit = None, cursor: str | None = None
    ) -> Page[QuotaAlert]:
        """The hosted ``quotas.list_alerts``: the alerts of one quota, in creation order."""
        return self.alerts.list(quota_id, limit=limit, cursor=cursor)


class RateLimits(_Resource):
    """``tracker.rate_limits``: token buckets, refilled continuously."""

    def create(
        self, data: RateLimitCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> RateLimit:
        """``create(name="rpm", limit_value=60, window="minute", per=["customer_id"])``.

        Always a new rate limit, as on the hosted API: a name already in use
        warns (:class:`DuplicateNameWarning`); :meth:`ensure` is safe to re-run.
        """
        request = parse(RateLimitCreate, data, fields)
        with self._engine.lock:
            _warn_if_taken(request.name, "rate limit", self._definitions.rate_limits())
            return _copy(self._definitions.create_rate_limit(request))

    def ensure(
        self, data: RateLimitCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> RateLimit:
        """The rate limit named ``name``, created if absent, else updated to these fields.

        Takes what :meth:`create` takes and is safe to run at every start:
        ``ensure(name="rpm", limit_value=60, window="minute")`` makes one
        rate limit however often it runs; an unchanged one keeps its id and
        its buckets, a changed one is updated (buckets start afresh only
        when its shape changes, as for :meth:`update`).  A field left out
        means its default, as in a limits file.  Raises
        :class:`~limitry_local.errors.ConflictError` (409) when several rate
        limits already share the name.
        """
        request = parse(RateLimitCreate, data, fields)
        with self._engine.lock, self._definitions.deciding():
            change = ensure_change(_Pair(self._engine), "rate_limit", request)
            assert change.id is not None
            return self.get(change.id)

    def list(self, limit: Limit = None, cursor: str | None = None) -> Page[RateLimit]:
        size = page_limit(limit)
        items = self._definitions.rate_limits()
        page = paged(Page[RateLimit], items, size, cursor, "rate limit")
        page.data = [_copy(limit) for limit in page.data]
        return page

    def get(self, rate_limit_id: str) -> RateLimit:
        return _copy(self._definitions.get_rate_limit(rate_limit_id))

    def update(
        self,
        rate_limit_id: str,
        data: RateLimitUpdate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> RateLimit:
        return _copy(
            self._definitions.update_rate_limit(rate_limit_id, parse(RateLimitUpdate, data, fields))
        )

    def delete(self, rate_limit_id: str) -> DeleteResponse:
        """Delete the rate limit, unenforced at once; answers ``{"success": true}``."""
        self._definitions.delete_rate_limit(rate_limit_id)
        return DeleteResponse()

    def check(
        self, dimensions: RateLimitCheckRequest | RateLimitsCheckRequest | Mapping[str, Any]
    ) -> RateLimitCheckResponse:
        """Whether a one-request event would pass now, consuming nothing."""
        return self._engine.check_rate_limits(_dimensions(dimensions, RateLimitCheckRequest))

    def gate(self, rate_limit_id: str) -> RateGate:
        """The rate-only path: a :class:`~limitry_local.gate.RateGate` on this limit's buckets.

        ``gate.hit(key)`` takes a token (or ``cost``) from the bucket
        ``usage()`` would charge for that key and answers True, or False
        when it does not fit.  Nothing is recorded and no quota is
        involved; see :mod:`limitry_local.gate`.
        """
        return RateGate(self._engine, rate_limit_id)


class Events(_Resource):
    """``tracker.events``: recording without enforcement, and reading back."""

    def ingest(
        self, event: TrackPostRequest | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> EventIngestResponse:
        """Record one event, never denied; it still counts toward matching quotas."""
        request = parse(TrackPostRequest, event, fields)
        ids, _ = self._engine.ingest([request])
        return EventIngestResponse(id=ids[0])

    def batch(
        self,
        events: EventBatchRequest
        | Mapping[str, Any]
        | Sequence[TrackPostRequest | Mapping[str, Any]],
    ) -> EventBatchResponse:
        """Record up to 1000 events in one transaction; one invalid event rejects the batch.

        Takes a list of events, an :class:`EventBatchRequest`, or its wire
        form ``{"events": [...]}``.
        """
        if isinstance(events, EventBatchRequest):
            items: Any = events.events
        elif isinstance(events, Mapping):
            # The wire body is {"events": [...]}; anything else in it is a mistake.
            for key in events:
                if key != "events":
                    raise InvalidRequestError(f"{key_name(key)}: Extra inputs are not permitted")
            items = events.get("events")
        else:
            items = events
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
            raise InvalidRequestError("events: must be a list of events")
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequestError(
                f"events: a batch holds 1 to {MAX_BATCH} events, got {len(items)}"
            )
        requests = [
            parse(TrackPostRequest, e, {}, prefix=f"events[{i}].") for i, e in enumerate(items)
        ]
        _, recorded = self._engine.ingest(requests)
        return EventBatchResponse(count=recorded)

    def ingest_batch(
        self,
        request: EventBatchRequest
        | Mapping[str, Any]
        | Sequence[TrackPostRequest | Mapping[str, Any]],
    ) -> EventBatchResponse:
        """The hosted ``events.ingest_batch``: :meth:`batch`."""
        return self.batch(request)

    def list(
        self,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        limit: Limit = None,
        cursor: str | None = None,
        *,
        start_date: DateLike = None,
        end_date: DateLike = None,
    ) -> Page[Event]:
        """Recorded events, most recently recorded first.

        The hosted client's parameters, in its order; ``start_date`` and
        ``end_date`` (ours) narrow the range.
        """
        return self._engine.list_events(
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            start_date=start_date,
            end_date=end_date,
            limit=page_limit(limit),
            cursor=cursor,
        )


class ProjectInfo(_Resource):
    """The project a hosted API key belongs to; offline, the Tracker's.

    ``id`` is the Tracker's ``project_id``, organization ``org_local``, named
    and slugged ``local``.  Offline a project has no history of its own:
    ``createdAt`` and ``updatedAt`` are when this object was first asked.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._first_asked: datetime | None = None

    def get(self) -> Project:
        if self._first_asked is None:
            with self._engine.lock:
                self._first_asked = datetime.fromtimestamp(self._engine.now(), timezone.utc)
        return Project(
            id=self._engine.project_id,
            organization_id="org_local",
            name="local",
            slug="local",
            created_at=self._first_asked,
            updated_at=self._first_asked,
        )


class Customers(_Resource):
    """``tracker.customers``: per-customer totals."""

    def get_usage(
        self, customer_id: str, start_date: DateLike = None, end_date: DateLike = None
    ) -> CustomerUsageResponse:
        """The customer's totals from ``start_date`` to ``end_date`` (a date end is inclusive)."""
        return self._engine.customer_usage(customer_id, start_date, end_date)


class _Pair:
    """The two resources limits as code work through, for ``ensure``."""

    def __init__(self, engine: Engine) -> None:
        self.rate_limits = RateLimits(engine)
        self.quotas = Quotas(engine)
