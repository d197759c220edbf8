"""``limits apply``: :meth:`Tracker.apply <limitry_local.Tracker.apply>`, with the CLI's errors.

The planning and applying live below the CLI, where ``Tracker.apply`` and
``ensure`` share them; the command goes through ``Tracker.apply`` so that it
plans and changes in one exclusive write scope, as a worker's start does
(found in review: two ``limits apply`` runs at once could create a limit
twice).  This module keeps the names the command and its renderer use, and
turns an ambiguous name into a :class:`CliError`.
"""

from __future__ import annotations

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
    "quotas_in",
    "rate_limits_in",
]


def apply(tracker: Tracker, config: LimitsConfig, *, prune: bool, dry_run: bool) -> list[Change]:
    """Bring the ledger to ``config`` (``dry_run``: only plan); the changes, made or planned."""
    try:
        return tracker.apply(config, prune=prune, dry_run=dry_run)
    except ConflictError as exc:
        raise CliError(exc.message) from None
