"""``Client``: the hosted client's async shape over an in-process :class:`Tracker`.

Code written against the hosted client keeps working offline and in tests::

    client = Client()                                    # or Client(tracker) to share one
    response = await client.track.usage(TrackPostRequest(customer_id="c", event_type="call"))
    quota = await client.quotas.create(name="daily", metric="total_events",
                                       limit_value=1000, period="day")

Every method is a coroutine that calls the same Tracker method directly, in
the event loop's own thread.  There is no thread hop: a call costs
microseconds on the in-memory ledger and one SQLite commit on a file, less
than handing it to an executor would.  The price is that a call waiting on
another process's lock on a file ledger (at most the Tracker's ``timeout``)
blocks the loop for that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from limitry_local.analytics import UsageReport
from limitry_local.errors import parse
from limitry_local.gate import RateGate
from limitry_local.models import (
    CustomerUsageResponse,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    Page,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaCheckRequest,
    QuotaCheckResponse,
    QuotaCreate,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckRequest,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitUpdate,
    TrackPostRequest,
    TrackPostResponse,
    UsageBreakdownResponse,
    UsageGroupBy,
    UsageInterval,
    UsageTimeseriesResponse,
)
from limitry_local.periods import Clock
from limitry_local.resources import (
    Customers,
    DateLike,
    Events,
    QuotaAlerts,
    Quotas,
    RateLimits,
)
from limitry_local.tracker import Tracker, _wait_seconds


class Client:
    """Async drop-in for the hosted Limitry client, backed by a :class:`Tracker`.

    ``Client(tracker)`` shares an existing Tracker, so sync and async code in
    one application see the same limits.  ``Client()`` opens its own (ledger
    in memory, or ``path=`` for a file) and closes it in :meth:`close` or at
    the end of ``async with``.

    ``api_key``, ``base_url``, ``max_retries`` and ``default_headers`` are the
    hosted client's options; they are accepted so constructor calls need no
    change, and ignored, since nothing goes over a network.

    Errors are the hosted client's: :class:`APIError` with ``status_code``
    429 (as :class:`RateLimitExceeded` / :class:`QuotaExceeded`) or 400.
    """

    def __init__(
        self,
        tracker: Tracker | None = None,
        *,
        path: str | Path | None = None,
        clock: Clock | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if tracker is not None and (path is not None or clock is not None):
            raise ValueError("pass a Tracker, or path=/clock= to open one, not both")
        self._owns_tracker = tracker is None
        self._tracker = tracker if tracker is not None else Tracker(path, clock=clock)
        self.track = AsyncTrack(self._tracker)
        self.quotas = AsyncQuotas(self._tracker.quotas)
        self.rate_limits = AsyncRateLimits(self._tracker.rate_limits)
        self.events = AsyncEvents(self._tracker.events)
        self.customers = AsyncCustomers(self._tracker.customers)
        self.usage_report = AsyncUsageReport(self._tracker.usage_report)

    @property
    def tracker(self) -> Tracker:
        """The Tracker behind this client, for sync code in the same application."""
        return self._tracker

    async def close(self) -> None:
        """Close the Tracker if this client opened it; a shared one stays open."""
        if self._owns_tracker:
            self._tracker.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncTrack:
    """``client.track``: ``POST /track``."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    async def usage(
        self,
        request: TrackPostRequest | Mapping[str, Any] | None = None,
        /,
        *,
        # Any, not float | None: callers spread a dict of event fields
        # (``usage(**fields)``), which a typed ``wait`` would make them cast.
        wait: Any = None,
        **fields: Any,
    ) -> TrackPostResponse:
        """Check rate limits, check quotas, record the event; see :meth:`Tracker.usage`.

        ``wait`` waits for rate limits as there, awaiting rather than blocking
        the loop: ``asyncio.sleep``, unless the Tracker was given a ``sleep``
        (or a clock that has one, as ``ManualClock``), which is then called as
        a simulated sleep.
        """
        tracker = self._tracker
        if wait is None or wait == 0:
            return tracker.usage(request, **fields)
        attempts = tracker._attempts(parse(TrackPostRequest, request, fields), _wait_seconds(wait))
        try:
            while True:
                seconds = next(attempts)
                if tracker._sleep is time.sleep:
                    await asyncio.sleep(seconds)
                else:
                    tracker._sleep(seconds)
                    await asyncio.sleep(0)  # still a turn for the loop's other tasks
        except StopIteration as admitted:
            response: TrackPostResponse = admitted.value
            return response


class AsyncQuotas:
    """``client.quotas``: the coroutine face of ``tracker.quotas``."""

    def __init__(self, quotas: Quotas) -> None:
        self._quotas = quotas
        self.alerts = AsyncQuotaAlerts(quotas.alerts)

    async def create(
        self, data: QuotaCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        return self._quotas.create(data, **fields)

    async def list(self, *, limit: int = 50, cursor: str | None = None) -> Page[Quota]:
        return self._quotas.list(limit=limit, cursor=cursor)

    async def get(self, quota_id: str) -> Quota:
        return self._quotas.get(quota_id)

    async def update(
        self, quota_id: str, data: QuotaUpdate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        return self._quotas.update(quota_id, data, **fields)

    async def delete(self, quota_id: str) -> None:
        self._quotas.delete(quota_id)

    async def check(self, dimensions: QuotaCheckRequest | Mapping[str, Any]) -> QuotaCheckResponse:
        return self._quotas.check(dimensions)


class AsyncQuotaAlerts:
    """``client.quotas.alerts``: the coroutine face of ``tracker.quotas.alerts``."""

    def __init__(self, alerts: QuotaAlerts) -> None:
        self._alerts = alerts

    async def create(
        self,
        quota_id: str,
        data: QuotaAlertCreate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> QuotaAlert:
        return self._alerts.create(quota_id, data, **fields)

    async def list(
        self, quota_id: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Page[QuotaAlert]:
        return self._alerts.list(quota_id, limit=limit, cursor=cursor)

    async def get(self, alert_id: str) -> QuotaAlert:
        return self._alerts.get(alert_id)

    async def delete(self, alert_id: str) -> None:
        self._alerts.delete(alert_id)

    async def history(
        self,
        quota_id: str | None = None,
        *,
        alert_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[QuotaAlertLog]:
        return self._alerts.history(quota_id, alert_id=alert_id, limit=limit, cursor=cursor)


class AsyncRateLimits:
    """``client.rate_limits``: the coroutine face of ``tracker.rate_limits``."""

    def __init__(self, rate_limits: RateLimits) -> None:
        self._rate_limits = rate_limits

    async def create(
        self, data: RateLimitCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> RateLimit:
        return self._rate_limits.create(data, **fields)

    async def list(self, *, limit: int = 50, cursor: str | None = None) -> Page[RateLimit]:
        return self._rate_limits.list(limit=limit, cursor=cursor)

    async def get(self, rate_limit_id: str) -> RateLimit:
        return self._rate_limits.get(rate_limit_id)

    async def update(
        self,
        rate_limit_id: str,
        data: RateLimitUpdate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> RateLimit:
        return self._rate_limits.update(rate_limit_id, data, **fields)

    async def delete(self, rate_limit_id: str) -> None:
        self._rate_limits.delete(rate_limit_id)

    async def check(
        self, dimensions: RateLimitCheckRequest | Mapping[str, Any]
    ) -> RateLimitCheckResponse:
        return self._rate_limits.check(dimensions)

    async def gate(self, rate_limit_id: str) -> RateGate:
        """The limit's :class:`~limitry_local.gate.RateGate`, whose ``hit`` is synchronous.

        A hit is about a microsecond in memory: awaiting it would cost more.
        Like the Client's other calls it runs in the caller's thread (on
        ``RedisBuckets``, one round trip).
        """
        return self._rate_limits.gate(rate_limit_id)


class AsyncEvents:
    """``client.events``: the coroutine face of ``tracker.events``."""

    def __init__(self, events: Events) -> None:
        self._events = events

    async def ingest(
        self, event: TrackPostRequest | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> EventIngestResponse:
        return self._events.ingest(event, **fields)

    async def batch(
        self,
        events: EventBatchRequest
        | Mapping[str, Any]
        | Sequence[TrackPostRequest | Mapping[str, Any]],
    ) -> EventBatchResponse:
        return self._events.batch(events)

    async def list(
        self,
        *,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        start_date: DateLike = None,
        end_date: DateLike = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Event]:
        return self._events.list(
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            start_date=start_date,
            end_date=end_date,
            limit=limit,
            cursor=cursor,
        )


class AsyncCustomers:
    """``client.customers``: the coroutine face of ``tracker.customers``."""

    def __init__(self, customers: Customers) -> None:
        self._customers = customers

    async def get_usage(
        self, customer_id: str, start_date: DateLike = None, end_date: DateLike = None
    ) -> CustomerUsageResponse:
        return self._customers.get_usage(customer_id, start_date, end_date)


class AsyncUsageReport:
    """``client.usage_report``: the coroutine face of ``tracker.usage_report``."""

    def __init__(self, report: UsageReport) -> None:
        self._report = report

    async def breakdown(
        self,
        group_by: UsageGroupBy,
        *,
        start_date: DateLike = None,
        end_date: DateLike = None,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> UsageBreakdownResponse:
        return self._report.breakdown(
            group_by,
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )

    async def timeseries(
        self,
        interval: UsageInterval,
        *,
        start_date: DateLike = None,
        end_date: DateLike = None,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> UsageTimeseriesResponse:
        return self._report.timeseries(
            interval,
            start_date=start_date,
            end_date=end_date,
            customer_id=customer_id,
            event_type=event_type,
            model=model,
            provider=provider,
        )
