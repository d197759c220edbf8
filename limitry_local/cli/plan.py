"""``limits apply``: the planner of :mod:`limitry_local.limits_as_code`, with the CLI's errors.

The planning and applying live below the CLI, where ``Tracker.apply`` and
``ensure`` share them; this module keeps the names the command and its
renderer use, and turns an ambiguous name into a :class:`CliError`.
"""

from __future__ import annotations

from limitry_local import limits_as_code
from limitry_local.cli.exits import CliError
from limitry_local.errors import ConflictError
from limitry_local.limits_as_code import (
    KIND_LABEL,
    QUOTA_FIELDS,
    RATE_LIMIT_FIELDS,
    Action,
    Change,
    Kind,
    LimitsConfig,
    apply,
    quotas_in,
    rate_limits_in,
)
from limitry_local.tracker import Tracker

__all__ = [
    "KIND_LABEL",
    "QUOTA_FIELDS",
    "RATE_LIMIT_FIELDS",
    "Action",
    "Change",
    "Kind",
    "apply",
    "plan",
    "quotas_in",
    "rate_limits_in",
]


def plan(tracker: Tracker, config: LimitsConfig, *, prune: bool) -> list[Change]:
    """What applying ``config`` would do; reads the ledger, changes nothing."""
    try:
        return limits_as_code.plan(tracker, config, prune=prune)
    except ConflictError as exc:
        raise CliError(exc.message) from None
