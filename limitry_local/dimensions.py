"""Event -> dimensions, filter matching and the key tuples that name a counter.

One rule, one place: ``usage()``, the checks and the counter rebuild all
decide "does this limit apply, and to which key?" through :func:`limit_key`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Dimensions = dict[str, str]
Filters = Mapping[str, "str | Sequence[str]"]
Key = tuple[str, ...]
KeyFunction = Callable[[Mapping[str, str]], "Key | None"]

BUILTIN_DIMENSIONS = ("customer_id", "event_type", "model", "provider")

# What a provider appends to a model's name to pin a snapshot: a date
# (OpenAI's ``-2024-08-06`` and older ``-0613``, Anthropic's ``-20241022``) or
# ``-latest``.  Months and days are checked, so ``-2024`` or ``-1234`` are
# not snapshot suffixes but part of a name.
_MONTH_DAY = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_SNAPSHOT = re.compile(
    rf"-(?:[0-9]{{4}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|[0-9]{{4}}{_MONTH_DAY}|{_MONTH_DAY}|latest)"
)


def extract(
    customer_id: str | None,
    event_type: str | None,
    model: str | None,
    provider: str | None,
    properties: Mapping[str, Any],
) -> Dimensions:
    """The dimensions of an event: its four named fields plus every string property.

    The four named fields are reserved: a property with one of their names
    is never a dimension, so ``properties={"model": "x"}`` cannot make a call
    look like another model to a limit.
    """
    # Unrolled, and no comprehension for the usual empty properties: this
    # runs on every event, and the loop cost more than the work.
    dims: Dimensions = (
        {key: value for key, value in properties.items() if isinstance(value, str)}
        if properties
        else {}
    )
    if customer_id is not None:
        dims["customer_id"] = customer_id
    elif dims:
        dims.pop("customer_id", None)
    if event_type is not None:
        dims["event_type"] = event_type
    elif dims:
        dims.pop("event_type", None)
    if model is not None:
        dims["model"] = model
    elif dims:
        dims.pop("model", None)
    if provider is not None:
        dims["provider"] = provider
    elif dims:
        dims.pop("provider", None)
    return dims


def is_snapshot_of(value: str, wanted: str) -> bool:
    """True when model name ``value`` is ``wanted`` plus a dated-snapshot suffix.

    ``gpt-4o-2024-08-06`` and ``gpt-4o-latest`` are snapshots of ``gpt-4o``;
    ``claude-sonnet-4-5-20250929`` of ``claude-sonnet-4-5``.  ``gpt-4o-mini``
    is not a snapshot of ``gpt-4o`` (``-mini`` is not a date), nor
    ``gpt-4o-mini-2024-07-18``.
    """
    return (
        len(value) > len(wanted)
        and value.startswith(wanted)
        and _SNAPSHOT.fullmatch(value, len(wanted)) is not None
    )


def value_matches(name: str, wanted: str, value: str) -> bool:
    """Whether a filter's (or an override's) ``wanted`` value admits the event's ``value``.

    Equal values match.  For ``model`` alone a dated snapshot of the wanted
    name matches too: providers answer with the snapshot they served
    (``gpt-4o-2024-08-06``) when asked for the alias (``gpt-4o``), and a
    limit written for the alias is meant for both.
    """
    return value == wanted or (name == "model" and is_snapshot_of(value, wanted))


def matches(filters: Filters, dims: Mapping[str, str]) -> bool:
    """True when every filter names a dimension of the event with a matching value.

    A list value means "any of these"; empty filters match every event.
    Values match when equal, and a ``model`` filter also matches its dated
    snapshots (:func:`value_matches`).
    """
    for name, wanted in filters.items():
        value = dims.get(name)
        if value is None:
            return False
        if isinstance(wanted, str):
            if value != wanted and not (name == "model" and is_snapshot_of(value, wanted)):
                return False
        elif value not in wanted and not (
            name == "model" and any(is_snapshot_of(value, one) for one in wanted)
        ):
            return False
    return True


def limit_key(filters: Filters, per: Sequence[str], dims: Mapping[str, str]) -> Key | None:
    """The key of the counter or bucket this event charges, or None if the limit does not apply.

    Without ``per`` every matching event shares the key ``()``; an event that
    lacks one of the ``per`` dimensions does not match.
    """
    if not matches(filters, dims):
        return None
    key = []
    for name in per:
        value = dims.get(name)
        if value is None:
            return None
        key.append(value)
    return tuple(key)


def key_function(filters: Filters, per: Sequence[str]) -> KeyFunction:
    """``limit_key(filters, per, dims)`` as a function of ``dims``, built once per limit.

    The usual shapes (no filters or one filter on one value, and no or one
    ``per`` dimension) get a function without loops; any other shape calls
    :func:`limit_key`, the rule itself.  Limits of one shape get the same
    function, so a caller may take the key of the limit before when the
    function is the same object (most plans key every limit by customer).
    """
    shape = (
        tuple(sorted((name, v if isinstance(v, str) else tuple(v)) for name, v in filters.items())),
        tuple(per),
    )
    return _shared_key_function(shape)


@functools.lru_cache(maxsize=1024)
def _shared_key_function(
    shape: tuple[tuple[tuple[str, str | tuple[str, ...]], ...], tuple[str, ...]],
) -> KeyFunction:
    # Its own copy of the filters: a caller's dict changed later changes no key.
    pairs, names = shape
    filters = {name: v if isinstance(v, str) else list(v) for name, v in pairs}
    if len(names) > 1:
        return functools.partial(limit_key, filters, names)
    if filters:
        if len(filters) == 1:
            ((field, wanted),) = filters.items()
            if isinstance(wanted, str):
                return _one_filter(field, wanted, names[0] if names else None)
        return functools.partial(limit_key, filters, names)
    if not names:
        return _every_event
    (name,) = names

    def one_dimension(dims: Mapping[str, str]) -> Key | None:
        value = dims.get(name)
        return None if value is None else (value,)

    return one_dimension


def _one_filter(field: str, wanted: str, name: str | None) -> KeyFunction:
    """One filter on one value, and no or one ``per`` dimension: a limit on one model or
    event type, per customer, without :func:`matches`' loop over the filters."""
    snapshots = field == "model"

    def one_filter(dims: Mapping[str, str]) -> Key | None:
        value = dims.get(field)
        if value is None or (value != wanted and not (snapshots and is_snapshot_of(value, wanted))):
            return None
        if name is None:
            return ()
        value = dims.get(name)
        return None if value is None else (value,)

    return one_filter


def describe_key(per: Sequence[str], key: Key) -> str:
    """A key for people: ``customer_id=cust_1, model=gpt-4o`` (in messages and logs)."""
    if not per:
        return "all matching events"
    return ", ".join(f"{name}={value}" for name, value in zip(per, key, strict=True))


def _every_event(dims: Mapping[str, str]) -> Key:
    return ()
