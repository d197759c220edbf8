"""``limits apply``: the changes that bring the ledger's limits to a config file, and making them.

Limits are matched by name within their kind (a rate limit and a quota may
share a name).  Planning only reads; :func:`apply` then makes each change
through the public resources, so a limit the file leaves as it is keeps its
id, its ``updatedAt`` and, for a rate limit, its in-memory buckets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from limitry_local.cli.config import LimitsConfig
from limitry_local.cli.exits import CliError
from limitry_local.models import Quota, QuotaCreate, RateLimit, RateLimitCreate
from limitry_local.tracker import Tracker

Kind = Literal["rate_limit", "quota"]
Action = Literal["create", "update", "unchanged", "delete", "keep"]
"""``keep``: in the ledger, absent from the file, and left alone (no ``--prune``)."""

# The fields a config states, in the order a diff shows them.  Everything
# else (id, timestamps, projectId) belongs to the ledger.
RATE_LIMIT_FIELDS = (
    "name",
    "dimension_filters",
    "limit_value",
    "window",
    "enabled",
    "per",
    "metric",
    "overrides",
    "mode",
    "fail_mode",
)
QUOTA_FIELDS = (
    "name",
    "dimension_filters",
    "metric",
    "limit_value",
    "period",
    "per",
    "timezone",
    "overrides",
    "mode",
    "fail_mode",
)

KIND_LABEL: dict[Kind, str] = {"rate_limit": "rate limit", "quota": "quota"}


@dataclass(frozen=True)
class Change:
    """One line of the plan."""

    action: Action
    kind: Kind
    name: str
    id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    """Every stated field (snake_case) of the desired limit, or of the ledger's for delete/keep."""
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """For an update: field (snake_case) -> (in the ledger, in the file)."""


def plan(tracker: Tracker, config: LimitsConfig, *, prune: bool) -> list[Change]:
    """What applying ``config`` would do; reads the ledger, changes nothing."""
    return [
        *_plan_kind(
            "rate_limit",
            config.rate_limits,
            list(rate_limits_in(tracker)),
            RATE_LIMIT_FIELDS,
            prune=prune,
        ),
        *_plan_kind("quota", config.quotas, list(quotas_in(tracker)), QUOTA_FIELDS, prune=prune),
    ]


def apply(tracker: Tracker, changes: Sequence[Change]) -> list[Change]:
    """Make the planned changes, one call each; returns them with the new ids filled in.

    Not one transaction: a failure part-way leaves the earlier changes made,
    and applying the same file again finishes the job (planning is by name).
    """
    done: list[Change] = []
    for change in changes:
        resource = tracker.rate_limits if change.kind == "rate_limit" else tracker.quotas
        if change.action == "create":
            created = resource.create(**change.fields)
            done.append(replace(change, id=created.id))
            continue
        if change.action == "update":
            assert change.id is not None
            resource.update(change.id, **{name: new for name, (_, new) in change.diff.items()})
        elif change.action == "delete":
            assert change.id is not None
            resource.delete(change.id)
        done.append(change)
    return done


def _plan_kind(
    kind: Kind,
    desired: Sequence[RateLimitCreate | QuotaCreate],
    current: Sequence[RateLimit | Quota],
    fields: Sequence[str],
    *,
    prune: bool,
) -> list[Change]:
    by_name: dict[str, list[RateLimit | Quota]] = {}
    for limit in current:
        by_name.setdefault(limit.name, []).append(limit)
    changes: list[Change] = []
    for wanted in desired:
        # getattr, not model_dump: a request model dumps only the fields it was
        # given, and a field the file leaves out must compare as its default.
        stated = {name: getattr(wanted, name) for name in fields}
        matches = by_name.pop(wanted.name, [])
        if len(matches) > 1:
            ids = ", ".join(limit.id for limit in matches)
            raise CliError(
                f"the ledger holds {len(matches)} {KIND_LABEL[kind]}s named {wanted.name!r} "
                f"({ids}), so the file cannot say which one it means; delete or rename all "
                "but one first"
            )
        if not matches:
            changes.append(Change("create", kind, wanted.name, None, stated))
            continue
        existing = matches[0]
        diff = {
            name: (getattr(existing, name), value)
            for name, value in stated.items()
            if getattr(existing, name) != value
        }
        action: Action = "update" if diff else "unchanged"
        changes.append(Change(action, kind, wanted.name, existing.id, stated, diff))
    for name, leftovers in by_name.items():
        for limit in leftovers:
            stated = {field_name: getattr(limit, field_name) for field_name in fields}
            changes.append(Change("delete" if prune else "keep", kind, name, limit.id, stated))
    return changes


def rate_limits_in(tracker: Tracker) -> Iterator[RateLimit]:
    cursor: str | None = None
    while True:
        page = tracker.rate_limits.list(limit=100, cursor=cursor)
        yield from page.data
        if not page.has_more:
            return
        cursor = page.next_cursor


def quotas_in(tracker: Tracker) -> Iterator[Quota]:
    cursor: str | None = None
    while True:
        page = tracker.quotas.list(limit=100, cursor=cursor)
        yield from page.data
        if not page.has_more:
            return
        cursor = page.next_cursor
