"""``POST /v1/track``: rate-limit check, quota check, record; 201 or 429 with the headers.

The busiest route, so it is a bare ASGI endpoint rather than a
``Request -> Response`` function: it reads the body from ``receive`` and
sends the 201 as two messages with its header list built directly, skipping
the request and response objects, whose setup was a visible share of the
route's own time (docs/benchmarks.md, "The HTTP API (i)").  Everything else
is as for the other routes: the app's middleware (the API key) runs first,
the router checks the method, and an error (400, 429, 503) is raised to the
one envelope handler, which answers it with its headers.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.routing import Route

from limitry_local.models import TrackPostResponse
from limitry_local.server.auth import Receive, Scope, Send
from limitry_local.server.routes import V1
from limitry_local.server.wire import decode_object
from limitry_local.tracker import Tracker

_CREATED = 201
_JSON_HEADER = (b"content-type", b"application/json")


class Track:
    """201 with the rate-limit headers; a denial raises the 429 the envelope answers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracker: Tracker = scope["app"].state.tracker
        await send_created(send, tracker.usage(decode_object(await read_body(receive))))


async def read_body(receive: Receive) -> bytes:
    """The whole request body, as ``Request.body()`` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            # The usual case, one message: no join, no copy.
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


async def send_created(send: Send, response: TrackPostResponse) -> None:
    """The 201: its JSON and headers, as two messages with the header list built directly.

    Public for the benchmark's contract floor over HTTP, which answers with
    exactly these steps (benchmarks/http_api.py)."""
    body = response.model_dump_json().encode()
    headers = [(b"content-length", str(len(body)).encode()), _JSON_HEADER]
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
    ]
    await send({"type": "http.response.start", "status": _CREATED, "headers": headers})
    await send({"type": "http.response.body", "body": body})


ROUTES = [Route(V1 + "/track", Track(), methods=["POST"])]
