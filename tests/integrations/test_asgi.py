"""LimitryMiddleware in a real Starlette app, driven through an ASGI client."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from limitry_local import InvalidRequestError, Tracker, TrackPostRequest
from limitry_local.integrations.asgi import LimitryMiddleware, Scope, response_of
from limitry_local.testing import ManualClock
from tests.conftest import START


class Calls:
    """What reached the app, and what the event callable saw."""

    def __init__(self) -> None:
        self.app = 0
        self.events: list[str] = []
        self.lifespan: list[str] = []


def customer_event(scope: Scope) -> dict[str, Any] | None:
    headers = dict(scope["headers"])
    customer = headers.get(b"x-customer")
    if scope["path"] == "/health" or customer is None:
        return None
    return {"customerId": customer.decode(), "eventType": "http_request", "model": "gpt-4"}


def make_app(tracker: Tracker, clock: ManualClock, calls: Calls, **options: Any) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        calls.app += 1
        return PlainTextResponse("hello", headers={"x-app": "yes"})

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        calls.lifespan.append("startup")
        yield
        calls.lifespan.append("shutdown")

    def event(scope: Scope) -> dict[str, Any] | None:
        calls.events.append(scope["type"])
        return customer_event(scope)

    app = Starlette(
        routes=[Route("/", hello), Route("/health", hello), WebSocketRoute("/ws", echo)],
        lifespan=lifespan,
    )
    app.add_middleware(LimitryMiddleware, tracker=tracker, event=event, clock=clock, **options)
    return app


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def client(tracker: Tracker, clock: ManualClock, calls: Calls) -> Iterator[TestClient]:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute", per=["customer_id"])
    with TestClient(make_app(tracker, clock, calls)) as test_client:
        yield test_client


CUST_1 = {"x-customer": "cust_1"}


def test_allowed_requests_carry_the_rate_limit_headers(
    client: TestClient, calls: Calls, tracker: Tracker, clock: ManualClock
) -> None:
    response = client.get("/", headers=CUST_1)
    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["x-app"] == "yes"  # the app's own headers are kept
    assert response.headers["x-ratelimit-limit"] == "2"
    assert response.headers["x-ratelimit-remaining"] == "1"
    # 2 per minute refills one token in 30 s: the bucket is full again then.
    assert response.headers["x-ratelimit-reset"] == str(int(clock()) + 30)
    assert "ratelimit" not in response.headers  # IETF fields are opt-in
    assert calls.app == 1
    assert tracker.events.list(customer_id="cust_1").data[0].event_type == "http_request"


def test_over_the_limit_is_a_429_and_the_app_is_not_called(
    client: TestClient, calls: Calls, tracker: Tracker, clock: ManualClock
) -> None:
    assert [client.get("/", headers=CUST_1).status_code for _ in range(2)] == [200, 200]
    denied = client.get("/", headers=CUST_1)
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "30"
    assert denied.headers["x-ratelimit-remaining"] == "0"
    assert denied.headers["content-type"] == "application/json"
    body = denied.json()
    assert (body["error"], body["allowed"], body["retryAfter"]) == (
        "Rate limit exceeded",
        False,
        30,
    )
    assert body["rateLimits"][0]["name"] == "rpm"
    assert calls.app == 2
    assert len(tracker.events.list(customer_id="cust_1").data) == 2
    # Another customer has a bucket of its own; the first one refills with time.
    assert client.get("/", headers={"x-customer": "cust_2"}).status_code == 200
    clock.advance(30)
    assert client.get("/", headers=CUST_1).status_code == 200


def test_a_quota_429_has_the_quota_headers(client: TestClient, tracker: Tracker) -> None:
    tracker.quotas.create(
        name="daily", metric="total_events", limit_value=1, period="day", per=["customer_id"]
    )
    assert client.get("/", headers=CUST_1).status_code == 200
    denied = client.get("/", headers=CUST_1)
    assert denied.status_code == 429
    assert denied.json()["error"] == "Quota exceeded"
    assert denied.headers["x-quota-period"] == "day"
    assert denied.headers["x-quota-metric"] == "total_events"
    # START is 10:00 UTC: the day ends 14 hours later.
    assert denied.headers["retry-after"] == str(14 * 3600)


def test_a_skipped_request_is_neither_limited_nor_recorded(
    client: TestClient, calls: Calls, tracker: Tracker
) -> None:
    for _ in range(5):
        response = client.get("/health", headers=CUST_1)
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers
    assert calls.app == 5
    assert tracker.events.list().data == []


def test_lifespan_and_websockets_pass_through(client: TestClient, calls: Calls) -> None:
    # The fixture's `with TestClient(...)` ran the app's lifespan through the middleware.
    assert calls.lifespan == ["startup"]
    with client.websocket_connect("/ws", headers=CUST_1) as websocket:
        assert websocket.receive_text() == "hi"
    # The event callable saw no lifespan or websocket scope.
    assert "lifespan" not in calls.events
    assert "websocket" not in calls.events


def test_lifespan_shutdown_runs_too(tracker: Tracker, clock: ManualClock, calls: Calls) -> None:
    with TestClient(make_app(tracker, clock, calls)):
        pass
    assert calls.lifespan == ["startup", "shutdown"]


def test_an_invalid_event_is_a_400_naming_the_field(client: TestClient, calls: Calls) -> None:
    response = client.get("/", headers={"x-customer": "c" * 300})
    assert response.status_code == 400
    assert response.json()["error"].startswith("customerId:")
    assert calls.app == 0


def test_the_event_callable_may_refuse_with_invalid_request_error(
    tracker: Tracker, clock: ManualClock, calls: Calls
) -> None:
    def require_customer(scope: Scope) -> dict[str, Any] | None:
        event = customer_event(scope)
        if event is None:
            raise InvalidRequestError("x-customer: header required")
        return event

    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    app.add_middleware(LimitryMiddleware, tracker=tracker, event=require_customer)
    response = TestClient(app).get("/")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "x-customer: header required"},
    )


def test_no_matching_limit_adds_no_headers(
    tracker: Tracker, clock: ManualClock, calls: Calls
) -> None:
    with TestClient(make_app(tracker, clock, calls, ietf_headers=True)) as test_client:
        response = test_client.get("/", headers=CUST_1)
    assert response.status_code == 200
    assert not any(name.startswith(("x-ratelimit", "ratelimit")) for name in response.headers)
    assert len(tracker.events.list().data) == 1  # recorded all the same


def test_ietf_headers(tracker: Tracker, clock: ManualClock, calls: Calls) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute", per=["customer_id"])
    tracker.quotas.create(
        name="daily tokens", metric="total_tokens", limit_value=1000, period="day"
    )
    with TestClient(make_app(tracker, clock, calls, ietf_headers=True)) as test_client:
        first = test_client.get("/", headers=CUST_1)
        clock.advance(10)
        test_client.get("/", headers=CUST_1)
        denied = test_client.get("/", headers=CUST_1)
    assert first.headers["ratelimit-policy"] == (
        '"rpm";q=2;w=60, "daily tokens";q=1000;w=86400;limitry-metric="total_tokens"'
    )
    # The day ends at 24:00 UTC, 14 hours after START.
    assert first.headers["ratelimit"] == f'"rpm";r=1;t=30, "daily tokens";r=1000;t={14 * 3600}'
    assert first.headers["x-ratelimit-remaining"] == "1"  # the X- headers stay
    assert denied.status_code == 429
    # After 10 s a third of a token is back: the second request left 1/3, so none whole.
    assert denied.headers["ratelimit"].startswith('"rpm";r=0;t=')
    assert denied.headers["ratelimit-policy"] == first.headers["ratelimit-policy"]
    assert denied.headers["retry-after"] == "20"


def test_an_async_event_callable(tracker: Tracker, calls: Calls) -> None:
    async def event(scope: Scope) -> TrackPostRequest:
        await asyncio.sleep(0)
        return TrackPostRequest(customer_id="cust_async", event_type="http_request")

    tracker.rate_limits.create(name="one", limit_value=1, window="hour")
    app = Starlette(routes=[Route("/", lambda request: JSONResponse({"ok": True}))])
    app.add_middleware(LimitryMiddleware, tracker=tracker, event=event)
    test_client = TestClient(app)
    assert test_client.get("/").json() == {"ok": True}
    assert test_client.get("/").status_code == 429
    assert tracker.customers.get_usage("cust_async").total_events == 1


def test_through_httpx_asgi_transport_with_middleware_list(tracker: Tracker) -> None:
    tracker.rate_limits.create(name="rps", limit_value=1, window="second")
    app = Starlette(
        routes=[Route("/", lambda request: PlainTextResponse("ok"))],
        middleware=[
            Middleware(
                LimitryMiddleware,
                tracker=tracker,
                event=lambda scope: {"customerId": "c", "eventType": "http_request"},
            )
        ],
    )

    async def two_requests() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.get("/"), await http.get("/")]

    allowed, denied = asyncio.run(two_requests())
    assert (allowed.status_code, allowed.text) == (200, "ok")
    assert allowed.headers["x-ratelimit-limit"] == "1"
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "1"


# --- one event per HTTP request: a route reads the middleware's decision ----------------


def _app_with_a_tracking_route(tracker: Tracker, clock: ManualClock, *, reuse: bool) -> Starlette:
    seen: list[str] = []

    async def chat(request: Request) -> JSONResponse:
        if reuse:
            response = response_of(request.scope)
            assert response is not None
            assert request.state.limitry_response is response  # the same, for Starlette
        else:  # the trap docs/integrations.md warns about: a second event, a second token
            response = tracker.usage(customer_id="cust_1", event_type="http_request")
        seen.append(response.id)
        return JSONResponse({"event": response.id, "remaining": response.headers})

    app = Starlette(routes=[Route("/chat", chat)])
    app.add_middleware(LimitryMiddleware, tracker=tracker, event=customer_event, clock=clock)
    app.state.seen = seen
    return app


def test_a_route_calling_usage_again_takes_a_second_token(
    tracker: Tracker, clock: ManualClock
) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute", per=["customer_id"])
    with TestClient(_app_with_a_tracking_route(tracker, clock, reuse=False)) as client:
        assert client.get("/chat", headers=CUST_1).status_code == 200
        assert client.get("/chat", headers=CUST_1).status_code == 429
    assert len(tracker.events.list(customer_id="cust_1").data) == 2  # one HTTP request


def test_a_route_reading_response_of_takes_one_token_per_request(
    tracker: Tracker, clock: ManualClock
) -> None:
    tracker.rate_limits.create(name="rpm", limit_value=2, window="minute", per=["customer_id"])
    app = _app_with_a_tracking_route(tracker, clock, reuse=True)
    with TestClient(app) as client:
        first = client.get("/chat", headers=CUST_1)
        second = client.get("/chat", headers=CUST_1)
        assert client.get("/chat", headers=CUST_1).status_code == 429
    assert (first.status_code, second.status_code) == (200, 200)
    recorded = [event.id for event in tracker.events.list(customer_id="cust_1").data]
    # Each request's route saw its own event: the one the middleware recorded.
    assert app.state.seen == [first.json()["event"], second.json()["event"]]
    assert sorted(recorded) == sorted(app.state.seen)
    assert second.json()["remaining"]["X-RateLimit-Remaining"] == "0"


def test_response_of_is_none_without_the_middleware_or_for_a_skipped_request() -> None:
    assert response_of({"type": "http"}) is None
    assert response_of({"type": "http", "state": {}}) is None
    assert response_of({"type": "http", "state": {"limitry_response": "not a response"}}) is None


def _hello_app(tracker: Tracker, headers: dict[str, str] | None = None) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello", headers=headers)

    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(LimitryMiddleware, tracker=tracker, event=customer_event)
    return app


def test_a_full_bucket_store_is_a_503_with_its_retry_after() -> None:
    """Found in review: BucketStoreFull reached the server as a bare 500."""
    with Tracker(clock=ManualClock(START), max_buckets=1) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=2, window="minute", per=["customer_id"])
        with TestClient(_hello_app(tracker)) as client:
            assert client.get("/", headers={"x-customer": "a"}).status_code == 200
            refused = client.get("/", headers={"x-customer": "b"})
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "max_buckets" in refused.json()["error"]


def test_a_ledger_that_cannot_be_written_is_a_503_to_retry(tmp_path: Path) -> None:
    """Found in review: a ledger locked by another process was a bare 500; serve
    answers 503 with Retry-After, and nothing was recorded, so a retry is safe."""
    path = tmp_path / "usage.db"
    with Tracker(path, timeout=0.05) as tracker, TestClient(_hello_app(tracker)) as client:
        tracker.quotas.create(name="q", metric="total_events", limit_value=9, period="day")
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            busy = client.get("/", headers={"x-customer": "a"})
            other.execute("ROLLBACK")
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert "locked" in busy.json()["error"] or "lock" in busy.json()["error"]
        assert client.get("/", headers={"x-customer": "a"}).status_code == 200
        assert tracker.ledger.event_count() == 1


def test_the_apps_own_rate_limit_headers_give_way_to_the_middlewares(
    tracker: Tracker,
) -> None:
    """Found in review: an app that set X-RateLimit-Limit itself answered two."""
    tracker.rate_limits.create(name="rpm", limit_value=5, window="minute", per=["customer_id"])
    app = _hello_app(tracker, headers={"X-RateLimit-Limit": "999", "x-app": "yes"})
    with TestClient(app) as client:
        answer = client.get("/", headers={"x-customer": "a"})
    assert answer.headers.get_list("x-ratelimit-limit") == ["5"]
    assert answer.headers["x-app"] == "yes"


@pytest.mark.parametrize("kind", [str, bytearray, memoryview])
def test_an_app_sending_header_names_of_any_kind_still_gets_one_set(
    tracker: Tracker, kind: Any
) -> None:
    """Found in review: ASGI says bytes, but servers pass an app's str names through
    (the de-duplication raised TypeError), and bytearray or memoryview ones."""
    tracker.rate_limits.create(name="rpm", limit_value=5, window="minute", per=["customer_id"])

    def name(text: str) -> Any:
        return text if kind is str else kind(text.encode())

    async def raw_app(scope: Scope, receive: Any, send: Any) -> None:
        # The app's other header as bytes: the test client reads what passes through.
        headers = [(name("X-RateLimit-Limit"), b"999"), (b"x-app", b"yes")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hi"})

    app = LimitryMiddleware(raw_app, tracker=tracker, event=customer_event)
    answer = asyncio.run(_asgi_get(app, {"x-customer": "a"}))
    assert answer.headers.get_list("x-ratelimit-limit") == ["5"]
    assert answer.headers["x-app"] == "yes"


async def _asgi_get(app: Any, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/", headers=headers)


def _mounted(tracker: Tracker, *, inside: bool) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    metered = [Middleware(LimitryMiddleware, tracker=tracker, event=customer_event)]
    api = Starlette(routes=[Route("/", hello)], middleware=metered if inside else [])
    return Starlette(routes=[Mount("/api", app=api)], middleware=[] if inside else metered)


@pytest.mark.parametrize("inside", [True, False])
def test_a_batched_tracker_no_lifespan_reaches_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, inside: bool
) -> None:
    """Found in review: on a mounted sub-app the middleware never sees the lifespan
    (Starlette's Mount passes none on), so nothing committed the batch at shutdown
    and uvicorn's SIGTERM lost it (0 of 10), without a word."""
    tracker = Tracker(tmp_path / "usage.db", durability="batched", flush_ms=600_000)
    with tracker, TestClient(_mounted(tracker, inside=inside)) as client:
        for _ in range(2):
            assert client.get("/api/", headers={"x-customer": "acme"}).status_code == 200
    warned = [r for r in caplog.records if "no lifespan scope reached" in r.getMessage()]
    assert len(warned) == (1 if inside else 0)
