"""What the ledgers share beyond the protocol: the pure parts written once.

Decoding stored rows (hold increments, definitions), the arithmetic of
holds, and the filters of paged lists; no engine, no I/O.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any, TypeVar

from limitry_local.errors import LedgerError
from limitry_local.ledger.protocol import CounterIncrement, EventRow

T = TypeVar("T")

MAX_UNITS = 2**63 - 1
"""The largest amount a quota counter holds: SQLite's INTEGER, PostgreSQL's bigint."""


def _decimal(value: Any) -> bool:
    # Not str.isdigit(): "²" is a digit to it, and int() refuses it.
    text = str(value)
    return text.isascii() and text.isdecimal()


def definitions_version_of(row: Any, where: str) -> int:
    """``meta.definitions_version`` as read (a one-column row), or a "corrupt" error."""
    if row is None or not _decimal(row[0]):
        raise LedgerError(
            f"ledger {where} is corrupt (meta.definitions_version is {row!r}); "
            "restore it from a backup",
            "corrupt",
        )
    return int(row[0])


def schema_version_of(found: Any, newest: int, where: str) -> int:
    """A stored ``meta.schema_version`` this code can open (1 to ``newest``), or
    a "schema_version" error that says what to do."""
    version = int(found) if found is not None and _decimal(found) else None
    if version is None or not 1 <= version <= newest:
        advice = (
            "upgrade limitry_local to open it"
            if version is not None and version > newest
            else "it is damaged: restore the ledger from a backup"
        )
        raise LedgerError(
            f"ledger {where} has schema version {found!r}; this limitry_local reads "
            f"versions 1 to {newest}: {advice}",
            "schema_version",
        )
    return version


def check_priced(row: EventRow) -> None:
    """Refuse a row with a cost but no ``cost_micro_cents``, as every ledger does: it
    would report no cost."""
    if row.cost_micro_cents is not None or row.cost_cents is None:
        return
    raise ValueError(
        f"event {row.id!r} has cost_cents={row.cost_cents!r} but cost_micro_cents=None; "
        "build the row with limitry_local.ledger.priced(row), which counts it by "
        "metrics.micro_cents"
    )


def overflow(where: str) -> LedgerError:
    """What every ledger says when a counter would pass :data:`MAX_UNITS`."""
    return LedgerError(
        f"ledger {where}: a quota counter would pass 2**63 - 1 units, the most a counter "
        "holds; lower the amounts recorded against that quota, or give it a shorter period",
        "overflow",
    )


def checked_units(used: int, where: str) -> int:
    """``used``, if a counter can hold it; else the :func:`overflow` error."""
    if not -MAX_UNITS - 1 <= used <= MAX_UNITS:
        raise overflow(where)
    return used


def merged_increments(increments: Iterable[CounterIncrement]) -> dict[tuple[str, str, int], int]:
    """The increments added up per counter, in first-seen order (one write per counter)."""
    added: dict[tuple[str, str, int], int] = {}
    for quota_id, key, start, amount in increments:
        counter = (quota_id, key, start)
        added[counter] = added.get(counter, 0) + amount
    return added


def without_quota(increments: list[CounterIncrement], quota_id: str) -> list[CounterIncrement]:
    """A hold's increments once ``quota_id``'s counters are rebuilt (or gone) under it."""
    return [increment for increment in increments if increment[0] != quota_id]


def decode_increments(text: str) -> list[CounterIncrement]:
    return [(str(q), str(k), int(s), int(a)) for q, k, s, a in json.loads(text)]


def held_in(holds: Iterable[str], quota_id: str, key: str, period_start: int) -> int:
    """The sum the holds' increments (JSON, as stored) add to one counter."""
    return held_by((decode_increments(text) for text in holds), quota_id, key, period_start)


def held_by(
    holds: Iterable[Iterable[CounterIncrement]], quota_id: str, key: str, period_start: int
) -> int:
    """The sum the holds' increments add to one counter."""
    return sum(
        amount
        for increments in holds
        for q, k, s, amount in increments
        if q == quota_id and k == key and s == period_start
    )


def page(rows: Iterable[T], limit: int) -> list[T]:
    """The first ``limit`` rows; a negative ``limit`` is no limit (SQL's LIMIT -1)."""
    return list(rows if limit < 0 else itertools.islice(rows, limit))


def event_matches(
    row: EventRow,
    event_type: str | None,
    model: str | None,
    start: float | None,
    end: float | None,
    *,
    provider: str | None = None,
) -> bool:
    """Whether an event passes the filters of a list or report (``start <= ts < end``)."""
    return (
        (event_type is None or row.event_type == event_type)
        and (model is None or row.model == model)
        and (provider is None or row.provider == provider)
        and (start is None or row.ts >= start)
        and (end is None or row.ts < end)
    )


def decode_definition(row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    decoded.pop("seq", None)
    for key in ("dimension_filters", "per"):
        if key in decoded:
            decoded[key] = (
                json.loads(decoded[key])
                if decoded[key]
                else ({} if key == "dimension_filters" else [])
            )
    if "enabled" in decoded:
        decoded["enabled"] = bool(decoded["enabled"])
    # Columns a migration added read as absent when empty: a quota from before
    # zones is UTC, a rate limit from before stored generations has none, an
    # alert from before updates was never changed.
    for added in ("timezone", "generation", "overrides", "mode", "fail_mode", "updated_at"):
        if added in decoded and decoded[added] is None:
            del decoded[added]
    if "overrides" in decoded:
        decoded["overrides"] = json.loads(decoded["overrides"])
    # Whole numbers the tracker computes with: a damaged one must not reach it.
    for number in ("limit_value", "threshold"):
        value = decoded.get(number)
        if number in decoded and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UNITS
        ):
            raise ValueError(f"{number} is {value!r}, not a whole number from 0 to 2**63 - 1")
    return decoded
