"""``check``'s warning about dimensions that no limit reads.

``check customer=cust_1`` (for ``customer_id``) matches no limit, so it is
"allowed"; without a word, a typo reads as a green light.  Each dimension
given that no enabled or disabled rate limit or quota names (in its
filters, ``per`` or overrides) is named on stderr, with the closest name a
limit does use.  It stays a warning, and the exit code keeps answering
"allowed?": a dimension that no limit reads may be a plain property of
the event, which is no error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from limitry_local.cli.plan import quotas_in, rate_limits_in
from limitry_local.dimensions import BUILTIN_DIMENSIONS
from limitry_local.models import Quota, RateLimit
from limitry_local.tracker import Tracker


def unused_dimensions(tracker: Tracker, dimensions: Mapping[str, str]) -> dict[str, str]:
    """Each dimension of ``dimensions`` no limit reads, with the warning to print for it."""
    used: set[str] = set()
    for rate in rate_limits_in(tracker):
        used.update(_names(rate))
    for quota in quotas_in(tracker):
        used.update(_names(quota))
    warnings = {}
    for name in dimensions:
        if name in used:
            continue
        # The four event fields are the likeliest meaning of a near miss.
        known = sorted((used | set(BUILTIN_DIMENSIONS)) - {name})  # never the name itself
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings[name] = (
            f"{name!r}: no rate limit or quota uses this dimension, so it changes no answer{hint}"
        )
    return warnings


def _names(limit: RateLimit | Quota) -> Iterable[str]:
    yield from limit.dimension_filters
    yield from limit.per
    yield from limit.overrides
