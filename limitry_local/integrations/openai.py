"""A track event from the usage of an OpenAI SDK response (duck-typed, no import).

>>> from limitry_local.integrations.openai import event_from
>>> completion = {"model": "gpt-4o", "usage": {"prompt_tokens": 120, "completion_tokens": 30,
...                                            "total_tokens": 150}}
>>> event = event_from(completion, customer_id="cust_1")
>>> event.provider, event.input_tokens, event.output_tokens, event.total_tokens
('openai', 120, 30, 150)

Reads either usage shape:

- Chat Completions (``ChatCompletion``, the last ``ChatCompletionChunk`` of
  a stream with ``stream_options={"include_usage": True}``, embeddings):
  ``usage.prompt_tokens`` / ``completion_tokens`` / ``total_tokens``,
  ``prompt_tokens_details.cached_tokens`` / ``cache_write_tokens``,
  ``completion_tokens_details.reasoning_tokens``.
- Responses (``Response``): ``usage.input_tokens`` / ``output_tokens`` /
  ``total_tokens``, ``input_tokens_details.cached_tokens`` /
  ``cache_write_tokens``, ``output_tokens_details.reasoning_tokens``.

OpenAI's input count already includes cached tokens, so it is the event's
``inputTokens`` as it stands; its cached part goes to ``cachedInputTokens``.
The cache-write and reasoning counts go to integer properties
(``cache_write_input_tokens``, ``reasoning_tokens``): kept on the event, never
dimensions.
"""

from __future__ import annotations

from typing import Any

from limitry_local.errors import InvalidRequestError
from limitry_local.integrations._sdk import (
    CACHE_WRITE_INPUT,
    CACHED_INPUT,
    REASONING,
    build_event,
    count,
    field,
    has,
    model_name,
    not_usage,
)
from limitry_local.models import TrackPostRequest

_EXPECTED = "a ChatCompletion, a Response, an embeddings response or their .usage"


def event_from(
    response: object,
    *,
    customer_id: str,
    event_type: str = "model_call",
    **extra: Any,
) -> TrackPostRequest:
    """The track event for one OpenAI call, ready for ``tracker.usage()``.

    ``response`` is an SDK response object, a dict of the same shape
    (``response.model_dump()`` or raw JSON), or a bare usage object (then
    pass ``model=`` yourself).  ``extra`` sets or overrides any other
    TrackPostRequest field (``latency_ms=``, ``cost_cents=``,
    ``idempotency_key=response.id``, ``properties=``; given properties are
    merged over ours).

    Raises :class:`TypeError` for an object with no usage, and
    :class:`InvalidRequestError` (a 400, also a ``ValueError``) for usage
    that is missing or malformed, naming the SDK's field.
    """
    if has(response, "usage"):
        usage, model = field(response, "usage"), model_name(response)
        if usage is None:
            raise InvalidRequestError(
                f"{type(response).__name__}.usage is null: a stream reports usage only in "
                'its last chunk, and only with stream_options={"include_usage": True}'
            )
    elif has(response, "prompt_tokens") or has(response, "input_tokens"):
        usage, model = response, None
    else:
        raise not_usage(response, "openai", _EXPECTED)
    if has(usage, "cache_read_input_tokens") or has(usage, "cache_creation_input_tokens"):
        # Anthropic's input_tokens leaves cached tokens out: read as OpenAI's it would undercount.
        raise TypeError(
            "this usage has Anthropic's cache fields; use "
            "limitry_local.integrations.anthropic.event_from"
        )
    if has(usage, "prompt_tokens"):
        input_name, output_name, details, output_details = (
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )
    else:
        input_name, output_name, details, output_details = (
            "input_tokens",
            "output_tokens",
            "input_tokens_details",
            "output_tokens_details",
        )
    properties = {
        name: value
        for name, value in (
            (CACHED_INPUT, count(usage, f"usage.{details}.cached_tokens")),
            (CACHE_WRITE_INPUT, count(usage, f"usage.{details}.cache_write_tokens")),
            (REASONING, count(usage, f"usage.{output_details}.reasoning_tokens")),
        )
        if value is not None
    }
    input_tokens = count(usage, f"usage.{input_name}", required=True)
    assert input_tokens is not None  # required=True
    return build_event(
        provider="openai",
        customer_id=customer_id,
        event_type=event_type,
        model=model,
        input_tokens=input_tokens,
        output_tokens=count(usage, f"usage.{output_name}"),
        total_tokens=count(usage, "usage.total_tokens"),
        properties=properties,
        extra=extra,
    )
