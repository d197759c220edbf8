"""``Client``: the hosted client's async shape over an in-process :class:`Tracker`.

It mirrors the hosted v0 Python client, ``limitry`` 0.3/0.4 (``from
limitry.client import Client``): the same resources (``track``, ``events``,
``quotas``, ``quota_alerts``, ``rate_limits``, ``customers``, ``usage``,
``project``), method names, arguments and return shapes, and its helpers
``ClientConfig``, ``PaginatedResponse``, ``paginate_all`` and ``collect_all``.
(The ``limitry`` 1.0 on the package index is a different API.)  Code written
against the hosted client keeps working offline and in tests::

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
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode

from limitry_local.analytics import UsageReport
from limitry_local.errors import APIError, InvalidRequestError, parse
from limitry_local.gate import RateGate
from limitry_local.inputs import DateLike, wait_seconds
from limitry_local.models import (
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
    TrackPostResponse,
    UsageBreakdown,
    UsageBreakdownResponse,
    UsageGroupBy,
    UsageInterval,
    UsageSummary,
    UsageTimeseries,
    UsageTimeseriesResponse,
)
from limitry_local.periods import Clock
from limitry_local.resources import (
    Customers,
    Events,
    Limit,
    ProjectInfo,
    QuotaAlerts,
    Quotas,
    RateLimits,
)
from limitry_local.tracker import Tracker
from limitry_local.types import GroupBy, Interval

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.limitry.com/v1"
DEFAULT_TIMEOUT = 30


class ClientConfig:
    """The hosted client's settings: ``ClientConfig(api_key, base_url=None, timeout=None,
    headers=None)``, with its defaults (``https://api.limitry.com/v1``, 30 seconds, no
    extra headers).

    Offline they change nothing: no request leaves the process, so there is
    no key to check, no URL to call, no time-out to wait for and no header to
    send.  They are kept (``client.config``) so code that builds or reads
    them runs unchanged; wrong types are refused, as they would fail against
    the hosted service too.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be a string, got {type(api_key).__name__}")
        if base_url is not None and not isinstance(base_url, str):
            raise TypeError(f"base_url must be a string URL, got {type(base_url).__name__}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"timeout must be a number of seconds > 0 (or None), got {timeout!r}")
        if headers is not None and not (
            isinstance(headers, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise TypeError(f"headers must map header names to string values, got {headers!r}")
        self.api_key = api_key
        self.base_url = base_url or DEFAULT_BASE_URL
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        # The key is a secret: never printed.
        key = None if self.api_key is None else "***"
        return (
            f"ClientConfig(api_key={key!r}, base_url={self.base_url!r}, "
            f"timeout={self.timeout!r}, headers={self.headers!r})"
        )


class Client:
    """Async drop-in for the hosted Limitry v0 client, backed by a :class:`Tracker`.

    ``Client(tracker)`` shares an existing Tracker, so sync and async code in
    one application see the same limits.  ``Client()`` opens its own (ledger
    in memory, or ``path=`` for a file) and closes it in :meth:`close` or at
    the end of ``async with``.

    The hosted constructor, ``Client(api_key, base_url=None, timeout=None,
    headers=None)``, works as written (a string first argument is the API
    key), and so does ``Client(config=ClientConfig(...))``.  Offline those
    settings change nothing (see :class:`ClientConfig`); ``max_retries`` and
    ``default_headers`` (other hosted clients' names) are accepted and
    ignored likewise.

    Errors are the hosted client's: :class:`APIError` with ``status_code``
    429 (as :class:`RateLimitExceeded` / :class:`QuotaExceeded`), 400 or 404.
    """

    def __init__(
        self,
        tracker: Tracker | str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        path: str | Path | None = None,
        clock: Clock | None = None,
        api_key: str | None = None,
        config: ClientConfig | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(tracker, str):
            # The hosted client's first argument: Client("sk_...").
            if api_key is not None:
                raise ValueError("pass the API key once: as the first argument or as api_key=")
            tracker, api_key = None, tracker
        if tracker is not None and not isinstance(tracker, Tracker):
            raise TypeError(
                f"Client's first argument is a Tracker (or the hosted API key), "
                f"got {type(tracker).__name__}"
            )
        if tracker is not None and (path is not None or clock is not None):
            raise ValueError("pass a Tracker, or path=/clock= to open one, not both")
        if config is not None:
            if not isinstance(config, ClientConfig):
                raise TypeError(f"config must be a ClientConfig, got {type(config).__name__}")
            if (api_key, base_url, timeout, headers) != (None, None, None, None):
                raise ValueError("pass config= or api_key/base_url/timeout/headers, not both")
            self._config = config
        else:
            self._config = ClientConfig(api_key, base_url, timeout, headers)
        self._owns_tracker = tracker is None
        self._tracker = tracker if tracker is not None else Tracker(path, clock=clock)
        self.track = AsyncTrack(self._tracker)
        self.quotas = AsyncQuotas(self._tracker.quotas)
        self.quota_alerts = self.quotas.alerts
        self.rate_limits = AsyncRateLimits(self._tracker.rate_limits)
        self.events = AsyncEvents(self._tracker.events)
        self.customers = AsyncCustomers(self._tracker.customers)
        self.usage_report = AsyncUsageReport(self._tracker.usage_report)
        self.usage = self.usage_report
        self.project = AsyncProject(self._tracker)
        self._app: Any = None  # the REST API, made on the first request()

    @property
    def tracker(self) -> Tracker:
        """The Tracker behind this client, for sync code in the same application."""
        return self._tracker

    @property
    def config(self) -> ClientConfig:
        """The hosted settings this client was given; offline they change nothing."""
        return self._config

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The hosted client's low-level call: ``method`` on ``path``, as the hosted
        client appends it to its base URL (``"/quotas"``, so ``/v1/quotas``), with a
        JSON ``body`` and query ``params``; answers the response's JSON.

        It runs the REST API that ``limitry-local serve`` serves, in process on
        this client's Tracker, so it needs the ``[server]`` extra; the resources
        (``client.quotas`` ...) do the same without it.  A non-2xx answer raises
        :class:`APIError` with its status and JSON body, as the hosted client does
        (a 429 too: the hosted client has no class of its own for it).

        >>> await client.request("GET", "/quotas", params={"limit": "10"})  # doctest: +SKIP
        """
        if not isinstance(method, str) or not method.isascii() or not method.isalpha():
            raise InvalidRequestError(f"method: an HTTP method such as 'GET', got {method!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidRequestError(f"path: a path such as '/quotas', got {path!r}")
        if self._app is None:
            try:
                from limitry_local.server.app import create_app  # noqa: PLC0415
            except ImportError as exc:  # the extra's modules, named
                raise ImportError(
                    f"client.request runs the REST API in process and needs the {exc.name!r} "
                    "module: pip install 'limitry_local[server]'"
                ) from exc
            self._app = create_app(self._tracker)
        return await _call_in_process(self._app, method.upper(), path, body, params)

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


async def _call_in_process(
    app: Any, method: str, path: str, body: Any, params: Mapping[str, Any] | None
) -> Any:
    """One HTTP exchange with the ASGI ``app``, without a socket: its JSON, or the APIError."""
    # The hosted client sends paths under its base URL, which ends in /v1.  A
    # query written into the path joins params; a None param is left out (found
    # in review: "/quotas?limit=1" was a 404, and cursor=None sent "None").
    path = path.partition("#")[0]
    path, _, written = path.partition("?")
    full = path if path.startswith("/v1/") else "/v1" + path
    given = {name: value for name, value in (params or {}).items() if value is not None}
    query = "&".join(part for part in (written, urlencode(given, doseq=True)) if part)
    content = b"" if body is None else json.dumps(body, allow_nan=False).encode()
    headers = [(b"host", b"localhost"), (b"content-length", str(len(content)).encode())]
    if body is not None:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        # Decoded, as an HTTP server hands it on: "org%2F42" is the id "org/42".
        "path": unquote(full),
        "raw_path": full.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("localhost", 80),
    }
    sent = False
    status = 500
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": content, "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    raw = b"".join(chunks)
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = raw.decode("utf-8", "replace")  # not the API (the page at "/")
    if status >= HTTPStatus.BAD_REQUEST:
        error = answer if isinstance(answer, dict) else {"error": str(answer)}
        raise APIError(status, HTTPStatus(status).phrase, error)
    return answer


async def paginate_all(
    fetch_page: Callable[[str | None], Awaitable[Page[T]]],
    initial_cursor: str | None = None,
) -> AsyncIterator[T]:
    """Every item of every page, as the hosted ``paginate_all``: ``fetch_page(cursor)``
    answers one page, called with each ``next_cursor`` while ``has_more``.

    >>> async def quotas(cursor):  # doctest: +SKIP
    ...     return await client.quotas.list(limit="100", cursor=cursor)
    >>> async for quota in paginate_all(quotas): ...  # doctest: +SKIP
    """
    cursor = initial_cursor
    while True:
        page = await fetch_page(cursor)
        for item in page.data:
            yield item
        cursor = page.next_cursor
        if not page.has_more or cursor is None:
            return


async def collect_all(
    fetch_page: Callable[[str | None], Awaitable[Page[T]]],
    initial_cursor: str | None = None,
) -> list[T]:
    """Every item of every page in one list, as the hosted ``collect_all``."""
    return [item async for item in paginate_all(fetch_page, initial_cursor)]


class AsyncProject:
    """``client.project``: the project the (offline, unchecked) API key belongs to."""

    def __init__(self, tracker: Tracker) -> None:
        self._project = ProjectInfo(tracker.engine)

    async def get(self) -> Project:
        """The Tracker's project (see :class:`~limitry_local.resources.ProjectInfo`)."""
        return self._project.get()


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
        engine = tracker.engine
        attempts = engine.attempts(parse(TrackPostRequest, request, fields), wait_seconds(wait))
        sleep = engine.clock.sleep
        try:
            while True:
                seconds = next(attempts)
                if sleep is time.sleep:
                    await asyncio.sleep(seconds)
                else:
                    sleep(seconds)
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

    async def ensure(
        self, data: QuotaCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        """Create-or-update by name, safe to re-run (ours); see :meth:`Quotas.ensure`."""
        return self._quotas.ensure(data, **fields)

    async def list(self, limit: Limit = None, cursor: str | None = None) -> Page[Quota]:
        return self._quotas.list(limit, cursor)

    async def get(self, quota_id: str) -> Quota:
        return self._quotas.get(quota_id)

    async def update(
        self, quota_id: str, data: QuotaUpdate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Quota:
        return self._quotas.update(quota_id, data, **fields)

    async def delete(self, quota_id: str) -> DeleteResponse:
        return self._quotas.delete(quota_id)

    async def check(
        self, dimensions: QuotaCheckRequest | QuotasCheckRequest | Mapping[str, Any]
    ) -> QuotaCheckResponse:
        return self._quotas.check(dimensions)

    async def create_alert(
        self,
        quota_id: str,
        request: QuotaAlertCreate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> QuotaAlert:
        return self._quotas.create_alert(quota_id, request, **fields)

    async def list_alerts(
        self, quota_id: str, limit: Limit = None, cursor: str | None = None
    ) -> Page[QuotaAlert]:
        return self._quotas.list_alerts(quota_id, limit, cursor)


class AsyncQuotaAlerts:
    """``client.quotas.alerts``, also ``client.quota_alerts`` (the hosted name): the
    coroutine face of ``tracker.quotas.alerts``."""

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
        self, quota_id: str | None = None, *, limit: Limit = None, cursor: str | None = None
    ) -> Page[QuotaAlert]:
        return self._alerts.list(quota_id, limit=limit, cursor=cursor)

    async def get(self, alert_id: str) -> QuotaAlert:
        return self._alerts.get(alert_id)

    async def update(
        self,
        alert_id: str,
        data: QuotaAlertUpdate | Mapping[str, Any] | None = None,
        /,
        **fields: Any,
    ) -> QuotaAlert:
        """The hosted ``quota_alerts.update(id, QuotaAlertsPutRequest(threshold=...))``."""
        return self._alerts.update(alert_id, data, **fields)

    async def delete(self, alert_id: str) -> DeleteResponse:
        return self._alerts.delete(alert_id)

    async def history(
        self,
        quota_id: str | None = None,
        *,
        alert_id: str | None = None,
        limit: Limit = None,
        cursor: str | None = None,
    ) -> Page[QuotaAlertLog]:
        return self._alerts.history(quota_id, alert_id=alert_id, limit=limit, cursor=cursor)

    async def get_history(
        self, alert_id: str, limit: Limit = None, cursor: str | None = None
    ) -> Page[QuotaAlertLog]:
        return self._alerts.get_history(alert_id, limit, cursor)


class AsyncRateLimits:
    """``client.rate_limits``: the coroutine face of ``tracker.rate_limits``."""

    def __init__(self, rate_limits: RateLimits) -> None:
        self._rate_limits = rate_limits

    async def create(
        self, data: RateLimitCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> RateLimit:
        return self._rate_limits.create(data, **fields)

    async def ensure(
        self, data: RateLimitCreate | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> RateLimit:
        """Create-or-update by name, safe to re-run (ours); see :meth:`RateLimits.ensure`."""
        return self._rate_limits.ensure(data, **fields)

    async def list(self, limit: Limit = None, cursor: str | None = None) -> Page[RateLimit]:
        return self._rate_limits.list(limit, cursor)

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

    async def delete(self, rate_limit_id: str) -> DeleteResponse:
        return self._rate_limits.delete(rate_limit_id)

    async def check(
        self, dimensions: RateLimitCheckRequest | RateLimitsCheckRequest | Mapping[str, Any]
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

    async def ingest_batch(
        self,
        request: EventBatchRequest
        | Mapping[str, Any]
        | Sequence[TrackPostRequest | Mapping[str, Any]],
    ) -> EventBatchResponse:
        return self._events.ingest_batch(request)

    async def list(
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
    """``client.usage`` (the hosted name) and ``client.usage_report``: the coroutine
    face of ``tracker.usage_report``."""

    def __init__(self, report: UsageReport) -> None:
        self._report = report

    async def breakdown(
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
        interval: UsageInterval | Interval,
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

    async def get_summary(
        self,
        start_date: DateLike,
        end_date: DateLike,
        customer_id: str | None = None,
        event_type: str | None = None,
        model: str | None = None,
        *,
        provider: str | None = None,
    ) -> UsageSummary:
        return self._report.get_summary(
            start_date, end_date, customer_id, event_type, model, provider=provider
        )

    async def get_breakdown(  # noqa: PLR0917 (the hosted client's positional signature)
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
        return self._report.get_breakdown(
            group_by, start_date, end_date, customer_id, event_type, model, provider=provider
        )

    async def get_timeseries(  # noqa: PLR0917 (the hosted client's positional signature)
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
        return self._report.get_timeseries(
            interval, start_date, end_date, customer_id, event_type, model, provider=provider
        )
