"""Conformance: one scripted scenario through ``Tracker`` and through ``Client``.

Both must give identical answers (bodies, headers, errors) and leave identical
ledgers.  Ids are random, so each side's ids are renamed in order of first
appearance (``#0``, ``#1``, ...): the outputs match only if the ids
correspond one to one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from limitry_local import APIError, Client, LimitExceeded, Tracker, TrackPostResponse
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.pages import walk


@dataclass(frozen=True)
class Saved:
    """Stands for the id of an earlier step's result."""

    name: str


@dataclass(frozen=True)
class Call:
    path: str  # "track.usage", "quotas.create", ...
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    save_as: str | None = None


@dataclass(frozen=True)
class Advance:
    seconds: float


Step = Call | Advance

GPT = {"customerId": "cust_1", "eventType": "model_call", "model": "gpt-4", "provider": "openai"}

SCENARIO: list[Step] = [
    Call(
        "rate_limits.create",
        kwargs={"name": "rpm", "limit_value": 3, "window": "minute", "per": ["customer_id"]},
        save_as="rpm",
    ),
    Call(
        "quotas.create",
        kwargs={
            "name": "daily tokens",
            "metric": "total_tokens",
            "limit_value": 1000,
            "period": "day",
            "dimension_filters": {"model": "gpt-4"},
            "per": ["customer_id"],
        },
        save_as="daily",
    ),
    Call(
        "quotas.create",
        ({"name": "cents", "metric": "total_cost_cents", "limitValue": 100, "period": "month"},),
        save_as="cents",
    ),
    Call("track.usage", ({**GPT, "inputTokens": 300, "outputTokens": 100},)),
    Call("track.usage", ({**GPT, "totalTokens": 500, "costCents": 40.5},)),
    Call("track.usage", ({**GPT, "totalTokens": 300},)),  # quota 429
    Call("track.usage", ({**GPT, "customerId": "cust_2", "totalTokens": 10},)),
    Call("track.usage", (GPT,)),
    Call("track.usage", (GPT,)),  # rate 429: three calls this minute for cust_1
    Call("track.usage", ({**GPT, "idempotencyKey": "k1", "costCents": 70},)),  # cents 429
    Advance(61),
    Call("track.usage", ({**GPT, "idempotencyKey": "k2", "costCents": 10},)),
    Call("track.usage", ({**GPT, "idempotencyKey": "k2", "costCents": 10},)),  # replay
    Call("track.usage", ({**GPT, "inputTokens": -5},)),  # 400
    Call("track.usage", ({"eventType": "model_call"},)),  # 400: no customer
    Call("events.ingest", ({**GPT, "totalTokens": 900},)),  # never denied
    Call("events.batch", ({"events": [GPT, {**GPT, "customerId": "cust_3"}]},)),
    Call("events.batch", ([GPT, {**GPT, "latencyMs": -1}],)),  # 400 names events.1
    Call("quotas.check", ({"customer_id": "cust_1", "model": "gpt-4"},)),
    Call("rate_limits.check", ({"customer_id": "cust_1"},)),
    Call("quotas.update", (Saved("daily"),), {"limit_value": 5000}),
    Call("track.usage", ({**GPT, "totalTokens": 100},)),
    Call("rate_limits.update", (Saved("rpm"),), {"enabled": False}),
    Call("track.usage", (GPT,)),
    Call("track.usage", (GPT,)),
    Call("quotas.get", (Saved("cents"),)),
    Call("quotas.get", ("qta_missing",)),  # 404
    Call("quotas.list", kwargs={"limit": 1}),
    Call("rate_limits.list"),
    Call("events.list", kwargs={"customer_id": "cust_1", "limit": 3}),
    Call("customers.get_usage", ("cust_1", "2026-11-01", "2026-11-30")),
    Advance(86_400),
    Call("track.usage", ({**GPT, "totalTokens": 1000},)),
    Call("quotas.delete", (Saved("cents"),)),
    Call("rate_limits.delete", (Saved("rpm"),)),
    Call("quotas.list"),
]


def _outcome(result: Any) -> Any:
    if isinstance(result, TrackPostResponse):
        return {"body": result.model_dump(mode="json"), "headers": result.headers}
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result


def _error(exc: APIError) -> dict[str, Any]:
    seen = {"status": exc.status_code, "body": exc.response, "message": exc.message}
    if isinstance(exc, LimitExceeded):
        seen["headers"] = exc.headers
        seen["kind"] = type(exc).__name__
    return seen


class Transcript:
    def __init__(self) -> None:
        self.outcomes: list[Any] = []
        self.saved: dict[str, str] = {}

    def resolve(self, value: Any) -> Any:
        return self.saved[value.name] if isinstance(value, Saved) else value

    def keep(self, step: Call, result: Any) -> None:
        if step.save_as is not None:
            self.saved[step.save_as] = result.id
        self.outcomes.append(_outcome(result))


def _through_tracker(tracker: Tracker, clock: ManualClock) -> Transcript:
    transcript = Transcript()
    for step in SCENARIO:
        if isinstance(step, Advance):
            clock.advance(step.seconds)
            continue
        namespace, method = step.path.split(".")
        fn: Callable[..., Any] = (
            tracker.usage if namespace == "track" else getattr(getattr(tracker, namespace), method)
        )
        args = [transcript.resolve(a) for a in step.args]
        try:
            transcript.keep(step, fn(*args, **step.kwargs))
        except APIError as exc:
            transcript.outcomes.append(_error(exc))
    return transcript


async def _through_client(client: Client, clock: ManualClock) -> Transcript:
    transcript = Transcript()
    for step in SCENARIO:
        if isinstance(step, Advance):
            clock.advance(step.seconds)
            continue
        namespace, method = step.path.split(".")
        fn: Callable[..., Any] = getattr(getattr(client, namespace), method)
        args = [transcript.resolve(a) for a in step.args]
        try:
            transcript.keep(step, await fn(*args, **step.kwargs))
        except APIError as exc:
            transcript.outcomes.append(_error(exc))
    return transcript


def _ledger(tracker: Tracker) -> dict[str, Any]:
    events = walk(tracker.events.list, limit=7)
    return {
        "events": [e.model_dump(mode="json") for e in events],
        "counters": sorted([*key, value] for key, value in tracker.ledger.counters().items()),
        "quotas": [q.model_dump(mode="json") for q in tracker.quotas.list(limit=100).data],
        "rate_limits": [r.model_dump(mode="json") for r in tracker.rate_limits.list().data],
    }


_ID = re.compile(r"\b(?:evt|qta|rl)_[0-9A-Za-z]+")


def _renamed(value: Any) -> Any:
    """Every id replaced by its order of first appearance: equal iff ids correspond."""
    names: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"#{len(names)}")

    def walk_value(v: Any) -> Any:
        if isinstance(v, str):
            return _ID.sub(rename, v)
        if isinstance(v, dict):
            return {walk_value(k): walk_value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk_value(x) for x in v]
        return v

    return walk_value(value)


def test_tracker_and_client_give_identical_answers_and_ledgers() -> None:
    sync_clock = ManualClock(START)
    with Tracker(clock=sync_clock) as tracker:
        sync_side = (_through_tracker(tracker, sync_clock).outcomes, _ledger(tracker))

    async_clock = ManualClock(START)

    async def go() -> tuple[list[Any], dict[str, Any]]:
        async with Client(clock=async_clock) as client:
            transcript = await _through_client(client, async_clock)
            return transcript.outcomes, _ledger(client.tracker)

    async_side = asyncio.run(go())

    assert _renamed(async_side) == _renamed(sync_side)


def test_the_scenario_exercises_every_kind_of_answer() -> None:
    # Guards the test above: a scenario that only ever succeeded would compare little.
    clock = ManualClock(START)
    with Tracker(clock=clock) as tracker:
        outcomes = _through_tracker(tracker, clock).outcomes
    statuses = {o.get("status") for o in outcomes if isinstance(o, dict)}
    kinds = {o.get("kind") for o in outcomes if isinstance(o, dict)}
    assert {400, 404, 429} <= statuses
    assert {"RateLimitExceeded", "QuotaExceeded"} <= kinds
    replayed = [
        o
        for o in outcomes
        if isinstance(o, dict) and "body" in o and "headers" in o and o["body"].get("allowed")
    ]
    assert len(replayed) >= 8
