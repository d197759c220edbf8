"""Reading a request and writing a response: JSON bodies, query parameters, wire models.

Every body goes out in wire form (camelCase, as ``model_dump(by_alias=True,
mode="json")`` writes it); every bad input comes back as the 400 the
library raises, naming the field, so the error envelope answers it alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from limitry_local.errors import InvalidRequestError

JSON = "application/json"


def respond(
    model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``model`` in wire form.  The models serialise by alias, so this is the camelCase JSON."""
    return Response(model.model_dump_json(), status, headers, JSON)


def respond_json(body: object, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """A body already in wire form (an error envelope, a 429 body)."""
    content = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(content, status, headers, JSON)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object, or a 400 that says what was wrong with it."""
    return decode_object(await request.body())


def decode_object(raw: bytes) -> dict[str, Any]:
    """A body's bytes as a JSON object, or a 400 that says what was wrong with them."""
    if not raw.strip():
        raise InvalidRequestError("body: expected a JSON object, got an empty body")
    try:
        # What json.loads does with bytes, on a decoder made once: loads()
        # given parse_constant builds a new decoder and scanner every call.
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError too: the body must be UTF-8 JSON.
        raise InvalidRequestError(f"body: not valid JSON ({_reason(exc)})") from None
    if not isinstance(body, dict):
        raise InvalidRequestError(f"body: expected a JSON object, got {_json_type(body)}")
    return body


def query_text(request: Request, name: str) -> str | None:
    """A query parameter as sent, None when absent; given twice, a 400 (which one was meant?)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequestError(f"{name}: given {len(values)} times; give it once")
    return values[0] if values else None


def required_text(request: Request, name: str, choices: tuple[str, ...]) -> str:
    value = query_text(request, name)
    if value is None:
        raise InvalidRequestError(f"{name}: required; one of {', '.join(choices)}")
    return value


def page_args(request: Request) -> dict[str, Any]:
    """``limit`` (1 to 100, default 50; the hosted clients send a string) and ``cursor``."""
    limit = query_text(request, "limit")
    args: dict[str, Any] = {"cursor": query_text(request, "cursor")}
    if limit is not None:
        text = limit.strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 100):
            raise InvalidRequestError(f"limit: must be an integer from 1 to 100, got {limit!r}")
        args["limit"] = int(text)
    return args


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told.
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
