"""The response headers of ``POST /track``, rendered from the limit statuses."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from limitry_local.models import QuotaStatus, RateLimitStatus

FAILED_OPEN_HEADER = "X-Limitry-Failed-Open"
"""Ours: the ids of the limits an admitted event passed unchecked (``failMode: open``)
because their store could not be reached, comma-separated."""


def rate_limit_headers(statuses: Sequence[RateLimitStatus]) -> dict[str, str]:
    """``X-RateLimit-*`` for the matching limit with the least remaining (none if none matched)."""
    if not statuses:
        return {}
    if len(statuses) == 1:
        return _describe(statuses[0])
    # min() keeps the first of equals: ties go to the limit created first.
    return _describe(min(statuses, key=_REMAINING))


# attrgetter, not a lambda: it runs in C, once per status of every 201.
_REMAINING = attrgetter("remaining")


def rate_limit_denied_headers(denying: RateLimitStatus, retry_after: int) -> dict[str, str]:
    """On a rate-limit 429 the headers describe the limit that decides when the event fits."""
    return {**_describe(denying), "Retry-After": str(retry_after)}


def quota_denied_headers(
    statuses: Sequence[RateLimitStatus], denying: QuotaStatus, retry_after: int
) -> dict[str, str]:
    return {
        **rate_limit_headers(statuses),
        "Retry-After": str(retry_after),
        "X-Quota-Reset": str(denying.reset),
        "X-Quota-Period": denying.period,
        "X-Quota-Metric": denying.metric,
    }


def _describe(status: RateLimitStatus) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(status.limit),
        "X-RateLimit-Remaining": str(status.remaining),
        "X-RateLimit-Reset": str(status.reset),
    }
