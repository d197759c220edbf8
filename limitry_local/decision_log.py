"""Decisions as log records, on the ``limitry_local.decisions`` logger.

``tracker.usage()`` and ``tracker.reserve()`` log every decision: an
admitted event or reservation at DEBUG, a denial at INFO.  The library adds
no handler, so nothing is printed until the application configures logging
(``logging.getLogger("limitry_local").setLevel(logging.INFO)`` and a
handler); a disabled level costs one cached check per call.  Each record
carries its facts as attributes (``extra``), for a JSON formatter or a
filter to read without parsing the message:

- ``decision``: ``"allowed"``, ``"reserved"`` or ``"denied"``
- ``event_id`` (allowed) or ``reservation_id`` (reserved)
- ``customer_id``: the event's, when the call named it
- ``status_code``: 201 or 429
- ``rate_limits`` / ``quotas``: the ids of the limits the event met
- denied only: ``limit_kind`` (``"rate_limit"`` or ``"quota"``),
  ``exceeded`` (the ids of the enforced limits of that kind that refused)
  and ``retry_after`` (seconds)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from limitry_local.errors import LimitExceeded, RateLimitExceeded
from limitry_local.models import TrackPostRequest, TrackPostResponse
from limitry_local.reservations import Reservation

logger = logging.getLogger("limitry_local.decisions")

P = ParamSpec("P")
R = TypeVar("R", TrackPostResponse, Reservation)
S = TypeVar("S")


def logged(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Log what ``method`` (``usage`` or ``reserve``) decided, after it returns or raises.

    Outside the method, so no handler ever runs under the Tracker's lock.
    """

    @functools.wraps(method)
    def deciding(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = method(self, *args, **kwargs)
        except LimitExceeded as denied:
            if logger.isEnabledFor(logging.INFO):
                _denied(denied, _customer(args, kwargs))
            raise
        if logger.isEnabledFor(logging.DEBUG):
            _admitted(result, _customer(args, kwargs))
        return result

    return deciding


def _customer(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """The customer id as the call gave it (a model, a dict in either spelling, or keywords)."""
    event = args[0] if args else None
    if isinstance(event, TrackPostRequest):
        return event.customer_id
    source = event if isinstance(event, Mapping) else kwargs
    value = source.get("customer_id", source.get("customerId"))
    return value if isinstance(value, str) else None


def _admitted(result: TrackPostResponse | Reservation, customer_id: str | None) -> None:
    if isinstance(result, Reservation):
        decision, id_field = "reserved", "reservation_id"
        customer_id = result.event.customer_id
    else:
        decision, id_field = "allowed", "event_id"
    logger.debug(
        "%s %s for customer_id=%s",
        decision,
        result.id,
        customer_id,
        extra={
            "decision": decision,
            id_field: result.id,
            "customer_id": customer_id,
            "status_code": 201,
            "rate_limits": [status.id for status in result.rate_limits],
            "quotas": [status.id for status in result.quotas],
        },
    )


def _denied(denied: LimitExceeded, customer_id: str | None) -> None:
    body = denied.body
    kind = "rate_limit" if isinstance(denied, RateLimitExceeded) else "quota"
    statuses = body.rate_limits if kind == "rate_limit" else body.quotas
    logger.info(
        "denied customer_id=%s: %s",
        customer_id,
        denied.message,
        extra={
            "decision": "denied",
            "customer_id": customer_id,
            "status_code": denied.status_code,
            "rate_limits": [status.id for status in body.rate_limits],
            "quotas": [status.id for status in body.quotas],
            "limit_kind": kind,
            "exceeded": [status.id for status in statuses if status.exceeded],
            "retry_after": denied.retry_after,
        },
    )
