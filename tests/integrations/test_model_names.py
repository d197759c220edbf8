"""Limits written for a model's alias apply to the dated snapshot a provider answers with.

The responses are the SDKs' own types (openai and anthropic are in the dev
extra), read by ``event_from`` and sent through a real Tracker.
"""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from limitry_local import QuotaExceeded, RateLimitExceeded, Tracker
from limitry_local.integrations import anthropic, openai


def _chat(model: str, total: int) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_764_064_800,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": total - 10,
                "completion_tokens": 10,
                "total_tokens": total,
            },
        }
    )


def _message(model: str, total: int) -> Message:
    return Message.model_validate(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": total - 10, "output_tokens": 10},
        }
    )


def _event(alias: str, served: str, total: int) -> Any:
    if alias.startswith("gpt"):
        return openai.event_from(_chat(served, total), customer_id="cust_1")
    return anthropic.event_from(_message(served, total), customer_id="cust_1")


SERVED = [
    ("gpt-4o", "gpt-4o-2024-08-06"),
    ("claude-3-5-sonnet", "claude-3-5-sonnet-20241022"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
]


@pytest.mark.parametrize(("alias", "served"), SERVED)
def test_a_quota_on_the_alias_counts_and_denies_the_snapshot(alias: str, served: str) -> None:
    with Tracker() as tracker:
        quota = tracker.quotas.create(
            name="tokens",
            metric="total_tokens",
            limit_value=1000,
            period="day",
            dimension_filters={"model": alias},
        )
        event = _event(alias, served, 600)
        assert event.model == served  # event_from keeps the name the provider answered
        first = tracker.usage(event)
        assert [q.id for q in first.quotas] == [quota.id]
        assert first.quotas[0].used == 600
        checked = tracker.quotas.check({"model": served, "customer_id": "cust_1"})
        assert [(q.id, q.remaining) for q in checked.quotas] == [(quota.id, 400)]
        with pytest.raises(QuotaExceeded):
            tracker.usage(_event(alias, served, 600))


@pytest.mark.parametrize(("alias", "served"), SERVED)
def test_a_rate_limit_and_an_override_on_the_alias_apply_to_the_snapshot(
    alias: str, served: str
) -> None:
    with Tracker() as tracker:
        limit = tracker.rate_limits.create(
            name="rpm",
            limit_value=1,
            window="minute",
            per=["customer_id"],
            overrides={"model": {alias: 2}},
        )
        check = tracker.rate_limits.check({"model": served, "customer_id": "cust_1"})
        assert [(r.id, r.limit) for r in check.rate_limits] == [(limit.id, 2)]
        tracker.usage(_event(alias, served, 20))
        tracker.usage(_event(alias, served, 20))
        with pytest.raises(RateLimitExceeded):
            tracker.usage(_event(alias, served, 20))


def test_the_mini_model_is_not_the_model() -> None:
    with Tracker() as tracker:
        tracker.quotas.create(
            name="gpt-4o tokens",
            metric="total_tokens",
            limit_value=10,
            period="day",
            dimension_filters={"model": "gpt-4o"},
        )
        response = tracker.usage(
            openai.event_from(_chat("gpt-4o-mini-2024-07-18", 500), customer_id="cust_1")
        )
        assert response.quotas == []
