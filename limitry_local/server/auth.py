"""``Authorization: Bearer``: with an API key configured, only that key passes.

Pure ASGI, ahead of routing, so a refused request costs no parsing.  The
API (``/v1/...``) takes the hosted client's ``Authorization: Bearer KEY``;
the page at ``/`` also takes HTTP Basic with the key as the password, so a
browser asks for it.  ``/openapi.json`` describes the API and holds no
data: it is always served.  Without a key every request passes, as the
command logs at start.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from limitry_local.errors import AuthenticationError
from limitry_local.server.envelope1 import error_response, is_limitry1
from limitry_local.server.wire import respond_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/openapi.json"})


class ApiKeyAuth:
    """Answers 401 in the hosted envelope (v0 or 1.0) unless the request carries ``api_key``."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = _credentials(scope)
        if given is not None and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        # A browser asks for Basic credentials on the page; API clients are told Bearer.
        challenge = 'Basic realm="limitry-local"' if scope["path"] == "/" else "Bearer"
        error = AuthenticationError()
        headers = {"WWW-Authenticate": challenge}
        if is_limitry1(scope["path"], scope["query_string"]):
            message = f"{error.message}: send Authorization: Bearer <the server's --api-key>"
            response = error_response(error.status, message, headers=headers)
        else:
            response = respond_json(error.response, error.status, headers)
        await response(scope, receive, send)


def _credentials(scope: Scope) -> bytes | None:
    """The key a request carries: a Bearer token, or the password of Basic credentials."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).strip().partition(b" ")
            scheme = scheme.lower()
            if scheme == b"bearer":
                return token.strip()
            if scheme == b"basic":
                try:
                    decoded = base64.b64decode(token.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return None
                return decoded.partition(b":")[2]
            return None
    return None
