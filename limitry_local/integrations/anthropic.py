"""A track event from the usage of an Anthropic SDK ``Message`` (duck-typed, no import).

>>> from limitry_local.integrations.anthropic import event_from
>>> message = {"model": "claude-sonnet-4-5", "usage": {
...     "input_tokens": 20, "output_tokens": 300,
...     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1800}}
>>> event = event_from(message, customer_id="cust_1")
>>> event.provider, event.input_tokens, event.output_tokens, event.total_tokens
('anthropic', 1820, 300, 2120)
>>> event.cached_input_tokens, event.properties
(1800, {'cache_write_input_tokens': 0})

Anthropic's ``usage.input_tokens`` counts only the input after the last
cache breakpoint: tokens read from the cache (``cache_read_input_tokens``)
and written to it (``cache_creation_input_tokens``) are reported beside it,
not in it.  The event's ``inputTokens`` is their sum, every input token the
model processed, so it means what OpenAI's ``prompt_tokens`` means and a
token quota counts a cached prompt as the tokens it holds.  ``totalTokens``
is that input plus ``output_tokens``.  Cache reads also go to the event's
``cachedInputTokens``; cache writes to an integer property
(``cache_write_input_tokens``), never a dimension.  To count only uncached
input, pass ``input_tokens=message.usage.input_tokens``: the total follows,
and the cache reads, no longer part of that input, are left out.
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

_EXPECTED = "a Message (or the usage of one)"


def event_from(
    message: object,
    *,
    customer_id: str,
    event_type: str = "model_call",
    **extra: Any,
) -> TrackPostRequest:
    """The track event for one Anthropic call, ready for ``tracker.usage()``.

    ``message`` is an SDK ``Message`` (also ``stream.get_final_message()``),
    a dict of the same shape, or a bare usage object (then pass ``model=``
    yourself).  ``extra`` sets or overrides any other TrackPostRequest field
    (``latency_ms=``, ``cost_cents=``, ``idempotency_key=message.id``,
    ``properties=``; given properties are merged over ours).

    Raises :class:`TypeError` for an object with no usage, and
    :class:`InvalidRequestError` (a 400, also a ``ValueError``) for usage
    that is missing or malformed, naming the SDK's field.
    """
    if has(message, "usage"):
        usage, model = field(message, "usage"), model_name(message)
        if usage is None:
            raise InvalidRequestError(f"{type(message).__name__}.usage is null")
    elif has(message, "input_tokens") or has(message, "output_tokens"):
        usage, model = message, None
    else:
        raise not_usage(message, "anthropic", _EXPECTED)
    if has(usage, "prompt_tokens") or has(usage, "total_tokens"):
        # OpenAI's counts already include cached input: summing cache fields would not apply.
        raise TypeError(
            "this usage has OpenAI's fields; use limitry_local.integrations.openai.event_from"
        )
    uncached = count(usage, "usage.input_tokens", required=True)
    output = count(usage, "usage.output_tokens", required=True)
    read = count(usage, "usage.cache_read_input_tokens")
    written = count(usage, "usage.cache_creation_input_tokens")
    # Part of output_tokens, as OpenAI's reasoning tokens are of theirs.
    thinking = count(usage, "usage.output_tokens_details.thinking_tokens")
    assert uncached is not None and output is not None  # required=True
    properties = {
        name: value
        for name, value in (
            (CACHED_INPUT, read),
            (CACHE_WRITE_INPUT, written),
            (REASONING, thinking),
        )
        if value is not None
    }
    return build_event(
        provider="anthropic",
        customer_id=customer_id,
        event_type=event_type,
        model=model,
        input_tokens=uncached + (read or 0) + (written or 0),
        output_tokens=output,
        # Left to the model: input + output, and recomputed if extra replaces either.
        total_tokens=None,
        properties=properties,
        extra=extra,
    )
