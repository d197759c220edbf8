"""``LimitryMiddleware``: enforce limits per HTTP request in any ASGI app.

Pure ASGI (no framework import), so it wraps a Starlette or FastAPI app, or
any other::

    app.add_middleware(
        LimitryMiddleware,
        tracker=tracker,
        event=lambda scope: {"customerId": api_key_of(scope), "eventType": "http_request"},
    )

Per HTTP request the ``event`` callable builds the track event from the
ASGI scope (or answers None to let the request through unmetered), and
``tracker.usage`` decides, before the app runs:

- allowed: the app runs and its response gains the rate-limit headers of
  the 201 (``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``);
- denied (:class:`RateLimitExceeded` / :class:`QuotaExceeded`): a 429 with
  the denial's JSON body and headers (``Retry-After`` and the rest); the
  app is not called;
- an invalid event (:class:`InvalidRequestError`, from ``tracker.usage`` or
  raised by ``event`` itself to refuse a request): a 400 with ``{"error":
  message}`` naming the field; the app is not called.  The fields usually
  come from the request (an API key, a path), so a bad one is the client's
  to fix, and letting it through unmetered would let a client dodge its
  limits by sending a malformed key.

The 201 of an allowed request is kept on the scope for the app:
``response_of(scope)`` (or Starlette's ``request.state.limitry_response``)
answers it, so a route can read the decision instead of calling
``tracker.usage`` again, which would be a second event and take a second
token from every rate limit both match (see docs/integrations.md).

Websocket scopes pass through untouched.  At the lifespan's shutdown the
Tracker's open batch is committed (``flush()``), since a server may then end
by signal, past interpreter exit; for an app that does not speak lifespan
the middleware answers it.  ``tracker.usage`` is
synchronous and runs in the event loop's thread, as :class:`limitry_local.Client`
does: tens of microseconds on an in-memory ledger, one SQLite commit on a
file, less than a hop to a thread pool would cost.  On a file shared with
other processes a call can wait up to the Tracker's ``timeout`` for a lock,
and the loop waits with it.

``ietf_headers=True`` adds the IETF ``RateLimit-Policy`` and ``RateLimit``
fields (draft-ietf-httpapi-ratelimit-headers-11) describing every matching
limit; see docs/integrations.md.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from limitry_local.errors import (
    APIError,
    InvalidRequestError,
    LedgerError,
    LimitExceeded,
    NotFoundError,
)
from limitry_local.integrations._ietf import ratelimit_fields
from limitry_local.models import QuotaStatus, RateLimitStatus, TrackPostRequest, TrackPostResponse
from limitry_local.periods import Clock
from limitry_local.tracker import Tracker

logger = logging.getLogger("limitry_local.integrations.asgi")

# The ASGI types, spelled as Starlette spells them so type checkers accept the
# middleware in app.add_middleware() without this module importing Starlette.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STARTED = "lifespan.startup.complete"
_SHUTDOWN_ANSWERS = {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}

STATE_KEY = "limitry_response"
"""Where in ``scope["state"]`` (Starlette's ``request.state``) the 201 of the request is kept."""

EventLike = TrackPostRequest | Mapping[str, Any]
EventFactory = Callable[[Scope], EventLike | Awaitable[EventLike | None] | None]
"""Builds the event for one HTTP request from its scope; None skips enforcement."""


class LimitryMiddleware:
    """Enforce ``tracker``'s limits on every HTTP request for which ``event`` builds an event.

    ``event(scope)`` may be a plain function or a coroutine function.  Every
    request it answers an event for is recorded when allowed, before the app
    runs, whatever the app then answers.  ``clock`` must be the Tracker's
    clock when that is not the system clock: the IETF ``t`` parameter is
    measured from it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracker: Tracker,
        event: EventFactory,
        ietf_headers: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.tracker = tracker
        self.event = event
        self.ietf_headers = ietf_headers
        self.clock: Clock = clock if clock is not None else time.time
        # Whether a lifespan reached the middleware, or its absence was told.
        self._lifespan_known = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self._lifespan_known = True
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._lifespan_known:
            self._warn_no_lifespan()
        try:
            made = self.event(scope)
            event = await made if inspect.isawaitable(made) else made
            response = None if event is None else self.tracker.usage(event)
        except LimitExceeded as denied:
            denial = {**denied.headers, **self._ietf(denied.body.rate_limits, denied.body.quotas)}
            await _answer(send, 429, denied.response, denial)
            return
        except InvalidRequestError as invalid:
            await _answer(send, 400, invalid.response, {})
            return
        except APIError as refused:  # BucketStoreFull: a 503 with its Retry-After
            await _answer(send, refused.status, refused.response, getattr(refused, "headers", {}))
            return
        except LedgerError as failed:
            # The ledger could not be written (locked past its timeout, read-only,
            # full): nothing was recorded (its message says so where a commit's outcome
            # is unknown); answered as serve does.
            logger.warning("request not metered: %s", failed)
            await _answer(send, 503, {"error": str(failed)}, {"Retry-After": "1"})
            return
        headers: dict[str, str] = {}
        if response is not None:
            # A new dict for a scope without state: the server's, when there is
            # one, holds per-request state (a copy of the lifespan's).
            scope.setdefault("state", {})[STATE_KEY] = response
            headers = {**response.headers, **self._ietf(response.rate_limits, response.quotas)}
        if not headers:
            await self.app(scope, receive, send)
            return
        extra = _raw(headers)

        ours = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new message: the app may keep and reuse its own.  The app's own
                # fields of these names give way: one X-RateLimit-Limit, not two.
                kept = [h for h in message.get("headers", ()) if _name(h[0]) not in ours]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The lifespan scope: the Tracker's open batch is committed as the server shuts down.

        A server may end by the signal that stopped it once shutdown is done
        (uvicorn re-raises SIGTERM), past interpreter exit, where a batch left
        open would be committed (found in review: every acknowledged event of
        a batched Tracker was lost).  So, whatever the app does after its
        startup (answers shutdown, raises, returns, hangs, is cancelled), the
        batch is committed when the server asks for shutdown, and on the way
        out.  An app that raises before it receives anything does not speak
        lifespan (the protocol's way to say so, as Django's handler does), nor
        one that returns having said nothing: the middleware speaks it in the
        app's place.  An app that fails its
        startup fails it: one that raises without saying so is answered
        ``lifespan.startup.failed``, so the server stops rather than serve
        requests no shutdown would commit.
        """
        asked: list[str] = []
        sent: list[str] = []

        async def receiving() -> Message:
            message = await receive()
            asked.append(message["type"])
            if message["type"] == "lifespan.shutdown":
                # Before the app's own shutdown, which may hang until the server
                # is killed (found in review); committed again after it, for
                # anything it records.
                self._flush()
            return message

        async def sending(message: Message) -> None:
            sent.append(message["type"])
            if message["type"] in _SHUTDOWN_ANSWERS:
                self._flush()
            await send(message)

        try:
            try:
                await self.app(scope, receiving, sending)
            except Exception as failed:
                if not (asked or sent):
                    logger.warning(
                        "the app raised on the lifespan scope (%r): taken as not speaking "
                        "lifespan, which the middleware speaks for it",
                        failed,
                    )
                    await receive()  # lifespan.startup
                    await sending({"type": _STARTED})
                elif _STARTED not in sent:
                    if not sent:  # a failure it did not say: said for it
                        await send({"type": "lifespan.startup.failed", "message": str(failed)})
                    raise
                elif not _SHUTDOWN_ANSWERS & set(sent):
                    # Said now, not held back until the server's shutdown.
                    logger.error("the app's lifespan failed after its startup", exc_info=True)
                    await self._at_shutdown(receive, asked)
                    raise
                else:
                    raise
            else:
                if not sent:
                    # An app that returns without a word does not speak lifespan
                    # either (``if scope["type"] != "http": return``), and the server
                    # serves on (found in review: a batch left open at SIGTERM).
                    if "lifespan.startup" not in asked:
                        await receive()
                    await sending({"type": _STARTED})
                elif _STARTED not in sent or _SHUTDOWN_ANSWERS & set(sent):
                    return
            await self._at_shutdown(receive, asked)
            await send({"type": "lifespan.shutdown.complete"})
        except BaseException:
            # A cancelled task, SystemExit, or the app's own error: whatever
            # runs on, the batch does not stay open (flush() is idempotent).
            if _STARTED in sent:
                self._flush()
            raise

    async def _at_shutdown(self, receive: Receive, asked: list[str]) -> None:
        """Wait for the server's shutdown (unless the app received it), then commit."""
        while "lifespan.shutdown" not in asked:
            asked.append((await receive())["type"])
        self._flush()

    def _warn_no_lifespan(self) -> None:
        # A server sends the lifespan before any request; none here means no
        # shutdown will reach the middleware (a mounted sub-app, --lifespan off),
        # and uvicorn ends by SIGTERM past the batch's exit-time commit (found in
        # review: 0 of 10 acknowledged events committed).
        self._lifespan_known = True
        if getattr(self.tracker.ledger, "durability", None) == "batched":
            logger.warning(
                "no lifespan scope reached LimitryMiddleware before this request, so it "
                "cannot commit the batched Tracker's open batch at shutdown: wrap the "
                "outermost app, or close the Tracker in your own shutdown"
            )

    def _flush(self) -> None:
        # A Tracker the app closed in its own shutdown has committed already.
        if not self.tracker.engine.closed:
            try:
                self.tracker.flush()
            except LedgerError:
                logger.exception("the open batch could not be committed at shutdown")

    def _ietf(
        self, rate_limits: list[RateLimitStatus], quotas: list[QuotaStatus]
    ) -> dict[str, str]:
        if not self.ietf_headers:
            return {}
        return ratelimit_fields(rate_limits, quotas, now=self.clock(), metric_of=self._metric)

    def _metric(self, status: RateLimitStatus) -> str | None:
        try:
            return self.tracker.rate_limits.get(status.id).metric
        except NotFoundError:
            return None  # deleted since it was applied: say nothing about its unit


def response_of(scope: Scope) -> TrackPostResponse | None:
    """The 201 :class:`LimitryMiddleware` got for this request, or None (skipped, or no middleware).

    For the app behind the middleware: the statuses and headers of the
    event already recorded for this request, without tracking it twice.
    """
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return found if isinstance(found, TrackPostResponse) else None


def _name(name: bytes | bytearray | memoryview | str) -> bytes:
    # ASGI says bytes; some servers pass an app's str names through as they are.
    return (name.encode("latin-1") if isinstance(name, str) else bytes(name)).lower()


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    # ASGI wants lowercase names; values are ASCII (numbers, and SF strings of printable ASCII).
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


async def _answer(
    send: Send, status: int, body: Mapping[str, Any], headers: Mapping[str, str]
) -> None:
    content = json.dumps(body, separators=(",", ":")).encode("utf-8")
    raw: Iterable[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode("latin-1")),
        *_raw(headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": list(raw)})
    await send({"type": "http.response.body", "body": content})
