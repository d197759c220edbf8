"""Reading usage from SDK objects or their dict shapes, and turning it into a track event.

The provider modules decide which fields mean what; this module only reads
them safely (an attribute or a dict key, validated as a token count) and
builds the :class:`TrackPostRequest`, so both providers fail the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from limitry_local.errors import InvalidRequestError, parse
from limitry_local.models import TrackPostRequest

# The adapters collect the counts under these names.  Cache reads go to the event's
# cachedInputTokens field (build_event moves them); the others have no field and
# stay integer properties, which never become dimensions, so they never split a
# limit's keys.
CACHED_INPUT = "cached_input_tokens"
CACHE_WRITE_INPUT = "cache_write_input_tokens"
REASONING = "reasoning_tokens"

_BY_WIRE_NAME = {
    info.alias: name for name, info in TrackPostRequest.model_fields.items() if info.alias
}


def has(obj: object, name: str) -> bool:
    """Whether ``obj`` has ``name`` as a dict key or an attribute (even one holding None)."""
    return name in obj if isinstance(obj, Mapping) else hasattr(obj, name)


def field(obj: object, name: str) -> object:
    """``obj[name]`` for a dict, ``obj.name`` otherwise; None when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def count(obj: object, path: str, *, required: bool = False) -> int | None:
    """The token count at ``path`` (``"usage.prompt_tokens_details.cached_tokens"``).

    The path's first part names ``obj`` itself in messages.  A missing link
    or a null reads as None; anything else but a whole number >= 0 is a 400
    that names the path as the SDK spells it, not the event field it feeds.
    """
    value: object = obj
    for name in path.split(".")[1:]:
        value = field(value, name)
        if value is None:
            break
    if value is None:
        if required:
            raise InvalidRequestError(f"{path}: missing, expected a token count")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise InvalidRequestError(f"{path}: expected a token count (an integer >= 0), got {shown}")
    return value


def model_name(obj: object) -> str | None:
    value = field(obj, "model")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"model: expected a string, got {type(value).__name__}")
    return value


def build_event(
    *,
    provider: str,
    customer_id: str,
    event_type: str,
    model: str | None,
    input_tokens: int,
    output_tokens: int | None,
    total_tokens: int | None,
    properties: Mapping[str, int],
    extra: Mapping[str, Any],
) -> TrackPostRequest:
    """The event, with ``extra`` (any TrackPostRequest field) taking precedence.

    A caller who overrides the input or output count without a total gets
    the total recomputed from the counts, not the SDK's stale one.
    """
    # Wire names (inputTokens) become field names, so an override replaces ours
    # instead of sitting beside it under the other spelling.
    extra = {_BY_WIRE_NAME.get(key, key): value for key, value in extra.items()}
    fields: dict[str, Any] = {
        "customer_id": customer_id,
        "event_type": event_type,
        "provider": provider,
        "input_tokens": input_tokens,
    }
    if model is not None:
        fields["model"] = model
    if output_tokens is not None:
        fields["output_tokens"] = output_tokens
    if total_tokens is not None and not ({"input_tokens", "output_tokens"} & extra.keys()):
        fields["total_tokens"] = total_tokens
    properties = dict(properties)
    cached = properties.pop(CACHED_INPUT, None)
    # The event's own field; a caller's own input count may not include it.
    if cached is not None and "input_tokens" not in extra:
        fields["cached_input_tokens"] = cached
    given = extra.get("properties", {})
    if not isinstance(given, Mapping):
        raise InvalidRequestError(f"properties: expected a dict, got {type(given).__name__}")
    merged = {**properties, **given}
    if merged:
        fields["properties"] = merged
    fields.update((key, value) for key, value in extra.items() if key != "properties")
    return parse(TrackPostRequest, fields, {})


def not_usage(obj: object, provider: str, expected: str) -> TypeError:
    return TypeError(
        f"{provider}.event_from expected {expected} (or a dict of the same shape), "
        f"got {type(obj).__name__}, which has no usage"
    )
