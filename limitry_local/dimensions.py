"""Event -> dimensions, filter matching and the key tuples that name a counter.

One rule, one place: ``usage()``, the checks and the counter rebuild all
decide "does this limit apply, and to which key?" through :func:`limit_key`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Dimensions = dict[str, str]
Filters = Mapping[str, "str | Sequence[str]"]
Key = tuple[str, ...]

BUILTIN_DIMENSIONS = ("customer_id", "event_type", "model", "provider")


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
    dims: Dimensions = {key: value for key, value in properties.items() if isinstance(value, str)}
    for name, value in zip(
        BUILTIN_DIMENSIONS, (customer_id, event_type, model, provider), strict=True
    ):
        if value is not None:
            dims[name] = value
        else:
            dims.pop(name, None)
    return dims


def matches(filters: Filters, dims: Mapping[str, str]) -> bool:
    """True when every filter names a dimension of the event with an equal value.

    A list value means "any of these"; empty filters match every event.
    """
    for name, wanted in filters.items():
        value = dims.get(name)
        if value is None:
            return False
        if isinstance(wanted, str):
            if value != wanted:
                return False
        elif value not in wanted:
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
