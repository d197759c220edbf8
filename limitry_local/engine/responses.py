"""The answers: 201 bodies, 429 denials, status entries and stored rows, built from outcomes.

Everything here shapes values the engine just computed; nothing decides.
Models are built with :func:`~limitry_local.models.trusted` (no revalidation
of values that cannot be wrong) where the hot path builds them.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from limitry_local.dimensions import describe_key
from limitry_local.errors import QuotaExceeded, RateLimitExceeded
from limitry_local.headers import (
    FAILED_OPEN_HEADER,
    quota_denied_headers,
    rate_limit_denied_headers,
    rate_limit_headers,
)
from limitry_local.ledger import EventRow, LedgerError
from limitry_local.metrics import from_units, micro_cents
from limitry_local.models import (
    Event,
    FailedOpen,
    Quota,
    QuotaStatus,
    RateLimit,
    RateLimitStatus,
    TrackDeniedResponse,
    TrackPostRequest,
    TrackPostResponse,
    trusted,
)

from .rules import QuotaOutcome, RateOutcome

_new_row = tuple.__new__


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def shown_rates(rates: list[RateOutcome]) -> list[RateOutcome]:
    """What the caller sees: every limit but the shadow ones."""
    return [o for o in rates if o.rule.shown]


def shown_quotas(quotas: list[QuotaOutcome]) -> list[QuotaOutcome]:
    return [o for o in quotas if o.rule.shown]


def rate_status(o: RateOutcome, charged: bool) -> RateLimitStatus:
    """The limit's status after this event (charged) or as it stands (denied, or a check)."""
    limit = o.rule.limit
    answer = o.answer
    # The fields inline, not from a helper: this runs once per shown limit per event.
    if charged:
        remaining, reset = answer.remaining, answer.reset
    else:
        remaining, reset = answer.current_remaining, answer.current_reset
    return trusted(
        RateLimitStatus,
        {
            "id": limit.id,
            "name": limit.name,
            "limit": o.ask.capacity,
            "remaining": remaining,
            "reset": reset,
            "window": limit.window,
            "exceeded": not answer.allowed,
        },
    )


def quota_status(o: QuotaOutcome, charged: bool) -> QuotaStatus:
    """The quota's usage after this event (charged) or as it stands (denied, or a check)."""
    rule = o.rule
    quota = rule.quota
    units = o.used + (o.amount or 0) if charged else o.used
    left = o.limit_units - units
    if left < 0:  # noqa: PLR1730 (max() is a call, once per quota per event)
        left = 0
    used: float = units
    remaining: float = left
    if rule.scale != 1:  # counted in smaller units (micro-cents): back to the metric's
        used = from_units(quota.metric, units)
        remaining = from_units(quota.metric, left)
    return trusted(
        QuotaStatus,
        {
            "id": quota.id,
            "name": quota.name,
            "metric": quota.metric,
            "period": quota.period,
            "limit": o.limit,
            "used": used,
            "remaining": remaining,
            "reset": o.end,
            "exceeded": o.exceeded,
        },
    )


def admitted(
    event_id: str,
    rates: list[RateOutcome],
    quotas: list[QuotaOutcome],
    failed_open: list[FailedOpen],
    *,
    charged: bool = True,
) -> TrackPostResponse:
    """The 201 body and its headers; ``charged=False`` when the counters already hold the event."""
    rate_statuses = [rate_status(o, charged) for o in rates if o.rule.shown]
    headers = rate_limit_headers(rate_statuses)
    if failed_open:
        headers[FAILED_OPEN_HEADER] = ",".join(f.id for f in failed_open)
    return trusted(
        TrackPostResponse,
        {
            "id": event_id,
            "allowed": True,
            "rate_limits": rate_statuses,
            "quotas": [quota_status(o, charged) for o in quotas if o.rule.shown],
            "failed_open": failed_open,
        },
        {"_headers": headers},
    )


def rate_denial(rates: list[RateOutcome], quotas: list[QuotaOutcome]) -> RateLimitExceeded:
    """The 429 of the enforced rate limit whose retry comes last."""
    shown = shown_rates(rates)
    statuses = [rate_status(o, charged=False) for o in shown]
    at, worst = max(
        ((i, o) for i, o in enumerate(shown) if o.enforced and not o.answer.allowed),
        key=lambda item: item[1].answer.retry_after,
    )
    retry = worst.answer.retry_after
    body = TrackDeniedResponse(
        error="Rate limit exceeded",
        rate_limits=statuses,
        quotas=[quota_status(o, charged=False) for o in shown_quotas(quotas)],
        retry_after=retry,
    )
    limit = worst.rule.limit
    detail = (
        f"rate limit {limit.name!r} ({worst.ask.capacity} per {limit.window}) exceeded for "
        f"{describe_key(limit.per, worst.key)}: retry in {retry}s"
    )
    headers = rate_limit_denied_headers(statuses[at], retry)
    return RateLimitExceeded(body, headers, detail)


def quota_denial(rates: list[RateOutcome], quotas: list[QuotaOutcome], now: float) -> QuotaExceeded:
    """The 429 of the enforced quota whose period ends last."""
    statuses = [rate_status(o, charged=False) for o in shown_rates(rates)]
    shown = shown_quotas(quotas)
    quota_statuses = [quota_status(o, charged=False) for o in shown]
    at, worst = max(
        ((i, o) for i, o in enumerate(shown) if o.exceeded and o.rule.enforced),
        key=lambda item: item[1].end,
    )
    retry = max(1, math.ceil(worst.end - now))
    body = TrackDeniedResponse(
        error="Quota exceeded", rate_limits=statuses, quotas=quota_statuses, retry_after=retry
    )
    quota = worst.rule.quota
    resets = datetime.fromtimestamp(worst.end, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    detail = (
        f"quota {quota.name!r} ({quota.metric} per {quota.period}) exceeded for "
        f"{describe_key(quota.per, worst.key)}: {_display(quota, worst.used)} used of "
        f"{worst.limit}, this event needs {_display(quota, worst.amount or 0)}, "
        f"resets {resets}"
    )
    headers = quota_denied_headers(statuses, quota_statuses[at], retry)
    return QuotaExceeded(body, headers, detail)


def _display(quota: Quota, units: int) -> str:
    return f"{from_units(quota.metric, units):,}"


def event_row(event_id: str, request: TrackPostRequest, when: float) -> EventRow:
    """The ledger's row of an event."""
    properties = request.properties
    cost = request.cost_cents
    # Positional, through tuple.__new__, in EVENT_COLUMNS order: the named
    # tuple's keyword constructor cost a tenth of an in-memory usage().
    return _new_row(
        EventRow,
        (
            event_id,
            when,
            request.customer_id,
            request.event_type,
            request.model,
            request.provider,
            request.input_tokens,
            request.output_tokens,
            request.total_tokens,
            request.latency_ms,
            cost,
            json.dumps(properties, separators=(",", ":")) if properties else "{}",
            request.idempotency_key,
            request.cached_input_tokens,
            # Counted here, once: the ledger stores it and every report sums it.
            None if cost is None else micro_cents(cost),
        ),
    )


def event_model(row: EventRow) -> Event:
    """An event as ``events.list`` answers it; a damaged row is a "corrupt" LedgerError."""
    try:
        return _event_model(row)
    # ValidationError is a ValueError; a timestamp past the calendar, an OverflowError.
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise damaged_event(row, exc) from None


def damaged_event(row: EventRow, exc: Exception) -> LedgerError:
    """The error for an event row that cannot be read as one."""
    return LedgerError(
        f"the ledger is corrupt: event {row.id!r} cannot be read ({exc!r:.200}); "
        "restore it from a backup",
        "corrupt",
    )


def _event_model(row: EventRow) -> Event:
    return Event(
        id=row.id,
        created_at=utc(row.ts),
        customer_id=row.customer_id,
        event_type=row.event_type,
        model=row.model,
        provider=row.provider,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        total_tokens=row.total_tokens,
        latency_ms=row.latency_ms,
        cost_cents=None if row.cost_cents is None else _number(row.cost_cents),
        properties=json.loads(row.properties),
        cached_input_tokens=row.cached_input_tokens,
    )


def _number(value: float) -> float | int:
    """Whole amounts as ints (tokens and events), fractions kept (cents)."""
    return int(value) if float(value).is_integer() else value


def definition_row(model: Quota | RateLimit) -> dict[str, Any]:
    """A quota's or rate limit's row in the ledger's definitions."""
    row = model.model_dump(mode="json", by_alias=False, exclude={"project_id"})
    row.setdefault("per", [])
    row.setdefault("overrides", {})  # written when empty too, to replace stored ones
    row.setdefault("mode", model.mode)
    row.setdefault("fail_mode", model.fail_mode)
    if isinstance(model, Quota):
        # Written even when UTC (the dump leaves the default out), so a
        # change back to UTC replaces the stored zone.
        row.setdefault("timezone", model.timezone)
    if isinstance(model, RateLimit):
        row.setdefault("metric", model.metric)
    return row


def response_to_json(response: TrackPostResponse) -> str:
    """What an idempotency key replays: the first answer, body and headers."""
    return json.dumps({"body": response.model_dump(mode="json"), "headers": response.headers})


def response_from_json(text: str) -> TrackPostResponse:
    """The 201 stored with an idempotency key; a damaged one is a "corrupt" LedgerError."""
    try:
        stored = json.loads(text)
        response = TrackPostResponse.model_validate(stored["body"])
        headers = stored["headers"]
        if not all(isinstance(v, str) for v in headers.values()):
            raise TypeError("a header value that is not text")  # a 500 when served
        response.headers.update(headers)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise LedgerError(
            f"the response stored with this idempotency key is damaged ({exc!r:.200}); "
            "restore the ledger from a backup, or send the event with a new key",
            "corrupt",
        ) from None
    return response
