"""The admission decision: every matching limit evaluated, then all or nothing.

Rate limits first (their buckets taken, to be kept or given back once the
event is recorded or refused), quotas second (their counters read under the
ledger's write scope), then one verdict: an enforced limit over its line
raises the 429 (or, for rate limits alone within ``usage(wait=...)``,
:class:`Wait`); soft and shadow ones are counted and logged, never denying.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from limitry_local.alerts import Crossing
from limitry_local.buckets import BucketAsk, BucketTime, RateLimitStore
from limitry_local.denials import DenialCounter
from limitry_local.dimensions import Dimensions, Key, describe_key
from limitry_local.ledger import CounterIncrement, LedgerBackend
from limitry_local.models import FailedOpen, Quota, RateLimit, TrackPostRequest
from limitry_local.redis_buckets import RateLimitStoreError

from .responses import quota_denial, rate_denial
from .rules import Plan, QuotaOutcome, RateOutcome, RateRule, exceeds, key_json

logger = logging.getLogger("limitry_local.tracker")


class Wait(Exception):
    """Rate limits alone deny, and their buckets refill within the wait: sleep, then retry."""

    def __init__(self, seconds: int) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def rate_asks(
    plan: Plan, dims: Dimensions, tokens: int | None
) -> tuple[list[tuple[RateRule, Key]], list[BucketAsk]]:
    """Every enabled rate limit the event matches, and what it asks of each bucket.

    ``tokens`` is the event's totalTokens; None for a check, which asks
    whether a one-request event would pass.
    """
    matched = []
    asks = []
    # Limits of one shape share their key function (key_function): consecutive
    # ones take the key already found, not a call each.
    key_of = None
    key: Key | None = None
    for rule in plan.rates:
        if rule.key_of is not key_of:
            key_of = rule.key_of
            key = key_of(dims)
        if key is not None:
            matched.append((rule, key))
            asks.append(rule.ask(key, dims, tokens))
    return matched, asks


def decide_rates(
    store: RateLimitStore,
    plan: Plan,
    dims: Dimensions,
    tokens: int | None,
    at: BucketTime,
    *,
    take: bool,
) -> list[RateOutcome]:
    """Take from every matching bucket (all or nothing; the store's ``settle`` keeps or
    gives back), or with ``take=False`` only look at what a one-request event would see."""
    matched, asks = rate_asks(plan, dims, tokens)
    if not asks:
        return []
    if take and plan.enforced_only:
        return [
            RateOutcome(rule, key, ask, answer, True)
            for (rule, key), ask, answer in zip(matched, asks, store.take(asks, at), strict=True)
        ]
    enforced = [rule.enforced for rule, _ in matched]
    if not take:
        answers = store.peek(asks, at)
    elif all(enforced):
        answers = store.take(asks, at)
    else:
        # Soft and shadow limits never deny: their buckets are only read
        # here, and charged once the event is recorded.  Peek first: a
        # store keeps one pending take, which a peek must not replace.
        pairs = list(zip(asks, enforced, strict=True))
        others = iter(store.peek([a for a, e in pairs if not e], at))
        to_take = [a for a, e in pairs if e]
        held = iter(store.take(to_take, at) if to_take else [])
        answers = [next(held) if e else next(others) for e in enforced]
    return [
        RateOutcome(rule, key, ask, answer, is_enforced)
        for (rule, key), ask, answer, is_enforced in zip(
            matched, asks, answers, enforced, strict=True
        )
    ]


def quota_outcomes(
    plan: Plan,
    ledger: LedgerBackend,
    dims: Dimensions,
    request: TrackPostRequest | None,
    when: float,
    *,
    read_used: bool = True,
    scope: Any = None,
) -> list[QuotaOutcome]:
    """Every quota the event matches, with its key, period and (if read) current usage.

    Inside a write ``scope`` the counters are read in one batch that holds
    them against other writers until the scope ends (a shared ledger
    locks them in one global order, so two writers cannot deadlock).
    ``request`` None is a check: does anything more fit?
    """
    outcomes = []
    second = math.floor(when)
    unlocked = read_used and scope is None
    # Read in one batch below: "exceeded" is decided there, once.
    locked = read_used and scope is not None
    counters = []
    # Limits of one shape share their key function, and so the key and its JSON.
    key_of = None
    key: Key | None = None
    counter_key = ""
    for rule in plan.quotas:
        if rule.key_of is not key_of:
            key_of = rule.key_of
            key = key_of(dims)
            if key is not None:
                counter_key = key_json(key)
        if key is None:
            continue
        quota = rule.quota
        # The period cached per second (QuotaRule.period), read here without its call.
        start, end = rule.bounds if rule.second == second else rule.period(second, when)
        if locked:
            counters.append((quota.id, counter_key, start))
        used = ledger.counter(quota.id, counter_key, start) if unlocked else 0
        amount = None if request is None else rule.amount_of(request)
        limit = rule.limit if rule.limit is not None else quota.limit_for(dims)
        limit_units = limit * rule.scale
        outcomes.append(
            QuotaOutcome(
                rule,
                key,
                counter_key,
                start,
                end,
                used,
                amount,
                limit,
                limit_units,
                False if locked else exceeds(used, amount, limit_units),
            )
        )
    if locked and outcomes:
        for o, used in zip(outcomes, ledger.lock_counters(scope, counters), strict=True):
            o.used = used
            o.exceeded = exceeds(used, o.amount, o.limit_units)
    return outcomes


def verdict(
    rates: list[RateOutcome],
    quotas: list[QuotaOutcome],
    denials: DenialCounter,
    now: float,
    patience: float = 0.0,
) -> None:
    """Raise the 429 an enforced limit calls for; count and log what soft and shadow ones saw.

    With ``patience`` (seconds ``usage(wait=...)`` may still wait), a
    denial by rate limits alone whose retry comes within it raises
    :class:`Wait` instead, and counts as no denial.  ``now`` is the raw
    clock reading a quota's Retry-After counts from.
    """
    # The common case first: every limit passed, nothing to count or log.
    for o in rates:
        if not o.answer.allowed:
            break
    else:
        for q in quotas:
            if q.exceeded:
                break
        else:
            return
    over_rates = [o for o in rates if o.enforced and not o.answer.allowed]
    over_quotas = [q for q in quotas if q.exceeded and q.rule.enforced]
    if over_rates and patience > 0 and not over_quotas:
        retry = max(o.answer.retry_after for o in over_rates)
        # A cost above a bucket's capacity never fits, however long the wait.
        if retry <= patience and all(o.ask.cost <= o.ask.capacity for o in over_rates):
            raise Wait(retry)
    if over_rates or over_quotas:
        for o in over_rates:
            rate = o.rule.limit
            denials.count("rate_limit", rate.id, rate.name, rate.mode, enforced=True)
        for q in over_quotas:
            denials.count("quota", q.quota.id, q.quota.name, "enforce", enforced=True)
        # Waiting on a quota is pointless: its denial goes first when waiting.
        if over_rates and not (patience > 0 and over_quotas):
            raise rate_denial(rates, quotas)
        raise quota_denial(rates, quotas, now)
    unenforced_over: list[tuple[str, Quota | RateLimit, Key]] = [
        ("rate limit", o.rule.limit, o.key) for o in rates if not o.answer.allowed
    ]
    unenforced_over += [("quota", q.quota, q.key) for q in quotas if q.exceeded]
    for kind, limit, key in unenforced_over:
        denials.count(
            "rate_limit" if kind == "rate limit" else "quota",
            limit.id,
            limit.name,
            limit.mode,
            enforced=False,
        )
        logger.info(
            "%s %s %r would have denied %s",
            limit.mode,
            kind,
            limit.name,
            describe_key(limit.per, key),
        )


def failed_open(plan: Plan, dims: Dimensions, exc: RateLimitStoreError) -> list[FailedOpen]:
    """The limits an event passes unchecked when the rate store cannot be reached.

    Re-raises ``exc`` unless every rate limit the event matches fails
    open, and the store is unreachable (not refusing us: a wrong password
    or script is a fault to fix, not an outage to ride out).
    """
    matched, _ = rate_asks(plan, dims, None)
    if exc.reason not in ("connection", "timeout") or any(
        rule.limit.fail_mode != "open" for rule, _ in matched
    ):
        raise exc
    logger.warning(
        "rate limits %s failed open for %s: %s",
        ", ".join(repr(rule.limit.name) for rule, _ in matched),
        dims.get("customer_id"),
        exc,
    )
    return [
        FailedOpen(id=rule.limit.id, name=rule.limit.name, kind="rate_limit", reason=exc.reason)
        for rule, _ in matched
        if rule.shown
    ]


def falls_on(plan: Plan, dims: Dimensions) -> list[tuple[Key, int] | None]:
    """Each limit's bucket or counter key an event falls on, and the limit it meets
    there (None: not matched).

    The limit too: an override outside ``per`` decides per event, on the same
    key (found in review: a hold reserved as ``tier=enterprise`` committed as
    ``tier=free`` put 5,000 tokens under a limit of 100 that never checked them).
    """
    keyed = [(r.limit, r.key_of(dims)) for r in plan.rates] + [
        (q.quota, q.key_of(dims)) for q in plan.quotas
    ]
    return [None if key is None else (key, limit.limit_for(dims)) for limit, key in keyed]


def increments(quotas: list[QuotaOutcome]) -> list[CounterIncrement]:
    """What recording the event adds to each matching quota's counter."""
    return [(o.rule.quota.id, o.key_json, o.start, o.amount or 0) for o in quotas]


def crossing(o: QuotaOutcome, used: int, event_id: str) -> Crossing:
    return Crossing(o.quota, o.key, o.key_json, o.start, o.end, used, o.limit_units, event_id)


def crossings(quotas: list[QuotaOutcome], event_id: str, watched: dict[str, Any]) -> list[Crossing]:
    """Usage after an admitted event, on the quotas that have alerts."""
    return [
        crossing(o, o.used + (o.amount or 0), event_id) for o in quotas if o.quota.id in watched
    ]
