"""What the ledgers share beyond the protocol: the pure parts written once.

Decoding stored rows (hold increments, definitions), the arithmetic of
holds, and the filters of paged lists; no engine, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from limitry_local.ledger.protocol import CounterIncrement


def decode_increments(text: str) -> list[CounterIncrement]:
    return [(str(q), str(k), int(s), int(a)) for q, k, s, a in json.loads(text)]


def held_in(holds: Iterable[str], quota_id: str, key: str, period_start: int) -> int:
    """The sum the holds' increments (JSON, as stored) add to one counter."""
    return sum(
        amount
        for text in holds
        for q, k, s, amount in decode_increments(text)
        if q == quota_id and k == key and s == period_start
    )


def alert_filters(
    quota_id: str | None, alert_id: str | None, before_seq: int | None, mark: str
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for condition, value in (
        (f"quota_id = {mark}", quota_id),
        (f"alert_id = {mark}", alert_id),
        (f"seq < {mark}", before_seq),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    return where, params


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
    # zones is UTC, a rate limit from before stored generations has none.
    for added in ("timezone", "generation", "overrides", "mode"):
        if added in decoded and decoded[added] is None:
            del decoded[added]
    if "overrides" in decoded:
        decoded["overrides"] = json.loads(decoded["overrides"])
    return decoded
