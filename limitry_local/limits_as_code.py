"""Limits as code: the changes that bring a ledger's limits to a declared set, and making them.

Limits are matched by name within their kind (a rate limit and a quota may
share a name).  Planning only reads; :func:`apply` then makes each change
through the public resources, so a limit left as it is keeps its id, its
``updatedAt`` and, for a rate limit, its in-memory buckets.  Three faces
share this: ``limitry-local limits apply`` (a file), :meth:`Tracker.apply`
(a :class:`LimitsConfig` or its plain-data form) and ``quotas.ensure`` /
``rate_limits.ensure`` (one limit), which is what makes start-up code safe
to run again and again on one ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar

from limitry_local.errors import ConflictError, InvalidRequestError, parse
from limitry_local.models import (
    Page,
    Quota,
    QuotaCreate,
    RateLimit,
    RateLimitCreate,
    same_setting,
)


class LimitResource(Protocol):
    """The four calls of ``rate_limits`` or ``quotas`` that limits as code make."""

    def list(self, limit: int, cursor: str | None) -> Page[Any]: ...

    def create(self, **fields: Any) -> Any: ...

    def update(self, limit_id: str, /, **fields: Any) -> Any: ...

    def delete(self, limit_id: str, /) -> Any: ...


class Limits(Protocol):
    """What holds the two resources: a Tracker, or the resources' own pair."""

    @property
    def rate_limits(self) -> LimitResource: ...

    @property
    def quotas(self) -> LimitResource: ...


Kind = Literal["rate_limit", "quota"]
Action = Literal["create", "update", "unchanged", "delete", "keep"]
"""``keep``: in the ledger, not declared, and left alone (no ``prune``)."""

C = TypeVar("C", RateLimitCreate, QuotaCreate)
T = TypeVar("T", RateLimit, Quota)

# The fields a declaration states, in the order a diff shows them.  Everything
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

# Each section under both spellings, as the models take both.
_SECTIONS = {"rate_limits": "rate_limits", "rateLimits": "rate_limits", "quotas": "quotas"}


@dataclass(frozen=True)
class LimitsConfig:
    """The whole desired state of the limits it names, validated by the same models as ``create``.

    A field left out takes its default (``per = []``, ``enabled = true``),
    it does not mean "keep what the ledger has".  Build one from plain data
    with :func:`parse_limits`, or pass that data to :meth:`Tracker.apply`.
    """

    rate_limits: list[RateLimitCreate] = field(default_factory=list)
    quotas: list[QuotaCreate] = field(default_factory=list)


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
    """For an update: field (snake_case) -> (in the ledger, declared)."""


def parse_limits(document: object) -> LimitsConfig:
    """``{"rate_limits": [...], "quotas": [...]}`` (either spelling of each key) as a config.

    Every failure is an :class:`InvalidRequestError` naming the section,
    the entry and the field.  Names must be unique within a section: they
    are what identifies a limit.
    """
    if document is None:
        document = {}  # an empty YAML file declares no limits
    if not isinstance(document, Mapping):
        raise InvalidRequestError(
            "the top level must be a table/mapping with rate_limits and quotas, "
            f"got {type(document).__name__}"
        )
    sections: dict[str, Any] = {}
    for key, value in document.items():
        section = _SECTIONS.get(key) if isinstance(key, str) else None
        if section is None:
            raise InvalidRequestError(f"{key!r}: unknown section; expected rate_limits or quotas")
        if section in sections:
            raise InvalidRequestError("rate_limits is given twice (rate_limits and rateLimits)")
        sections[section] = value
    return LimitsConfig(
        rate_limits=_entries(RateLimitCreate, sections.get("rate_limits"), "rate_limits"),
        quotas=_entries(QuotaCreate, sections.get("quotas"), "quotas"),
    )


def _entries(model: type[C], value: object, section: str) -> list[C]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise InvalidRequestError(f"{section}: must be a list of tables/mappings")
    entries: list[C] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(value):
        where = f"{section}[{index}]"
        if not isinstance(entry, (model, Mapping)):
            raise InvalidRequestError(f"{where}: must be a table/mapping of fields")
        name = entry.get("name") if isinstance(entry, Mapping) else entry.name
        if isinstance(name, str) and name:
            where += f" ({name!r})"
        created = parse(model, entry, {}, prefix=f"{where}.")
        first = seen.setdefault(created.name, index)
        if first != index:
            raise InvalidRequestError(
                f"{section}[{first}] and {section}[{index}] are both named "
                f"{created.name!r}; names identify limits, so each must be unique in its section"
            )
        entries.append(created)
    return entries


def plan(tracker: Limits, config: LimitsConfig, *, prune: bool) -> list[Change]:
    """What applying ``config`` would do; reads the ledger, changes nothing.

    Raises :class:`ConflictError` when the ledger holds several limits of
    one kind under a name the config declares: it cannot say which is meant.
    """
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


def apply(tracker: Limits, changes: Sequence[Change]) -> list[Change]:
    """Make the planned changes, one call each; returns them with the new ids filled in.

    :meth:`Tracker.apply` runs the plan and this in one exclusive write scope,
    so the changes commit together or not at all; called alone, a failure
    part-way leaves the earlier changes made, and applying the same
    declaration again finishes the job (planning is by name).
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


def ensure_change(tracker: Limits, kind: Kind, desired: RateLimitCreate | QuotaCreate) -> Change:
    """Create the limit named ``desired.name``, or bring the one of that name to ``desired``.

    The caller holds the Tracker's lock and the definitions' exclusive scope
    (``Definitions.deciding``), so two threads, or two processes, ensuring one
    name create it once.  Returns the change made (``unchanged`` when none).
    """
    if kind == "rate_limit":
        current: list[RateLimit | Quota] = list(rate_limits_in(tracker))
        fields = RATE_LIMIT_FIELDS
    else:
        current = list(quotas_in(tracker))
        fields = QUOTA_FIELDS
    same_name = [limit for limit in current if limit.name == desired.name]
    (change,) = apply(tracker, _plan_kind(kind, [desired], same_name, fields, prune=False))
    return change


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
        # given, and a field left out must compare as its default.
        stated = {name: getattr(wanted, name) for name in fields}
        matches = by_name.pop(wanted.name, [])
        if len(matches) > 1:
            ids = ", ".join(limit.id for limit in matches)
            raise ConflictError(
                f"the ledger holds {len(matches)} {KIND_LABEL[kind]}s named {wanted.name!r} "
                f"({ids}); limits as code find a limit by its name, so it cannot say which "
                "one is meant: delete or rename all but one first"
            )
        if not matches:
            changes.append(Change("create", kind, wanted.name, None, stated))
            continue
        existing = matches[0]
        diff = {
            name: (getattr(existing, name), value)
            for name, value in stated.items()
            if not same_setting(name, getattr(existing, name), value)
        }
        action: Action = "update" if diff else "unchanged"
        changes.append(Change(action, kind, wanted.name, existing.id, stated, diff))
    for name, leftovers in by_name.items():
        for limit in leftovers:
            stated = {field_name: getattr(limit, field_name) for field_name in fields}
            changes.append(Change("delete" if prune else "keep", kind, name, limit.id, stated))
    return changes


def rate_limits_in(tracker: Limits) -> Iterator[RateLimit]:
    """Every rate limit of the ledger, page by page."""
    return _every(tracker.rate_limits.list)


def quotas_in(tracker: Limits) -> Iterator[Quota]:
    """Every quota of the ledger, page by page."""
    return _every(tracker.quotas.list)


def _every(list_page: Callable[..., Page[T]]) -> Iterator[T]:
    cursor: str | None = None
    while True:
        page = list_page(limit=100, cursor=cursor)
        yield from page.data
        if not page.has_more:
            return
        cursor = page.next_cursor
