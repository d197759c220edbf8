"""The IETF ``RateLimit-Policy`` and ``RateLimit`` fields, draft-ietf-httpapi-ratelimit-headers-11.

Both are Structured Field Lists (RFC 9651) with one Item per matching limit,
rate limits first, then quotas::

    RateLimit-Policy: "rpm";q=60;w=60, "daily tokens";q=100000;w=86400;limitry-metric="total_tokens"
    RateLimit: "rpm";r=59;t=1, "daily tokens";r=99850;t=50400

- The Item is a String naming the policy: the limit's name, or its id when
  the name is not printable ASCII (all a String may hold) or is shared by
  another limit in the same response, since the name ties a RateLimit item
  to its policy.
- ``q`` is the limit value, ``w`` the window in seconds: a rate limit's
  window, or the length of the quota's current calendar period (a month's
  length varies with the month).
- ``r`` is the whole units left; ``t`` the seconds until ``reset``: when a
  token bucket is full again, or when the quota's period ends.
- The draft's quota units are requests, content-bytes and
  concurrent-requests, and an Item without ``qu`` counts requests.  A limit
  measured in tokens or cents says so in a vendor parameter,
  ``limitry-metric="total_tokens"`` / ``"total_cost_cents"``, as the draft
  asks of service-specific parameters; ``qu`` stays unset rather than carry
  a unit the draft does not register.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from limitry_local.models import QuotaStatus, RateLimitStatus, window_seconds
from limitry_local.periods import period_bounds

DRAFT = "draft-ietf-httpapi-ratelimit-headers-11"

MetricOf = Callable[[RateLimitStatus], str | None]
"""A rate limit's metric by its status (the status does not carry it); None if unknown."""


def _printable(name: str) -> bool:
    return all(" " <= char <= "~" for char in name)


def _sf_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _identifiers(statuses: Sequence[RateLimitStatus | QuotaStatus]) -> list[str]:
    names = Counter(status.name for status in statuses)
    return [
        status.name if names[status.name] == 1 and _printable(status.name) else status.id
        for status in statuses
    ]


def ratelimit_fields(
    rate_limits: Sequence[RateLimitStatus],
    quotas: Sequence[QuotaStatus],
    *,
    now: float,
    metric_of: MetricOf,
) -> dict[str, str]:
    """``{"RateLimit-Policy": ..., "RateLimit": ...}``, or ``{}`` when no limit matched."""
    statuses: list[RateLimitStatus | QuotaStatus] = [*rate_limits, *quotas]
    if not statuses:
        return {}
    policies, limits = [], []
    for status, identifier in zip(statuses, _identifiers(statuses), strict=True):
        if isinstance(status, RateLimitStatus):
            window = window_seconds(status.window)
            metric = metric_of(status)
        else:
            # reset is the period's end, so the period holding reset - 1 is the current one.
            start, end = period_bounds(
                status.period, now if status.reset is None else status.reset - 1
            )
            window = end - start
            metric = status.metric
        unit = f';limitry-metric="{metric}"' if metric not in (None, "total_events") else ""
        name = _sf_string(identifier)
        policies.append(f"{name};q={status.limit};w={window}{unit}")
        left = max(0, math.floor(status.remaining))
        # t is optional: a status read from elsewhere may lack a reset.
        until = "" if status.reset is None else f";t={max(0, math.ceil(status.reset - now))}"
        limits.append(f"{name};r={left}{until}")
    return {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(limits)}
