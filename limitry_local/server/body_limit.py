"""A bound on request bodies: a 413 before a large one is read whole.

Every route reads its body whole before answering, so without a bound a
100 MiB body held 3.5 times its size in the worker before its 400 (found
in review).  A ``Content-Length`` over the bound is refused at the first
read; a chunked body, once what came passes it.  The bound fits the
largest valid ``/v1/events/batch``: 1,000 events, each with 16 KiB of
properties and five 256-character fields, is about 22 MB with every
character escaped (a first bound of 8 MiB refused valid batches).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest request body the server reads."""

_TOO_LARGE = 413


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        _TOO_LARGE,
        f"body: larger than {limit:,} bytes, the most this server reads; send less",
    )


class BodyLimit:
    """Refuses, with a 413 in the hosted envelope, a body larger than ``max_bytes``.

    Raised from the route's own read, inside Starlette's exception handling,
    so the answer takes the envelope of the path (v0 or 1.0) like any other.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                # A malformed length is the HTTP server's to refuse, not ours.
                declared = int(value) if value.isdigit() else 0
                break
        received = 0

        async def bounded() -> Message:
            nonlocal received
            if declared > limit:
                raise too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, bounded, send)
