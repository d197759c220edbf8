"""Anthropic adapter: real SDK objects (anthropic is in the dev extra) and their dict shapes."""

from __future__ import annotations

import doctest
import re
from typing import Any

import pytest
from anthropic.types import Message, MessageDeltaUsage, Usage

from limitry_local import InvalidRequestError, QuotaExceeded, Tracker
from limitry_local.integrations import anthropic as adapter
from limitry_local.integrations.anthropic import event_from

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "output_tokens": 200,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 4000,
    },
}


def test_message_object_counts_cache_reads_and_writes_as_input() -> None:
    event = event_from(Message.model_validate(MESSAGE), customer_id="cust_1")
    assert (event.provider, event.model) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert event.event_type == "model_call"
    # 50 uncached + 1000 written to the cache + 4000 read from it.
    assert event.input_tokens == 5050
    assert (event.output_tokens, event.total_tokens) == (200, 5250)
    assert event.cached_input_tokens == 4000
    assert event.properties == {"cache_write_input_tokens": 1000}


def test_message_dict_reads_the_same_as_the_object() -> None:
    assert event_from(MESSAGE, customer_id="c") == event_from(
        Message.model_validate(MESSAGE), customer_id="c"
    )


def test_usage_without_cache_fields() -> None:
    usage = Usage.model_validate({"input_tokens": 12, "output_tokens": 3})
    event = event_from(usage, customer_id="c", model="claude-haiku-4-5")
    assert (event.model, event.input_tokens, event.total_tokens) == ("claude-haiku-4-5", 12, 15)
    # The SDK reports no cache counts here: none are invented.
    assert event.properties == {}


def test_thinking_tokens_are_the_reasoning_tokens_property() -> None:
    """As OpenAI's reasoning tokens: part of the output, shown as a property."""
    usage = Usage.model_validate(
        {
            "input_tokens": 12,
            "output_tokens": 300,
            "output_tokens_details": {"thinking_tokens": 250},
        }
    )
    event = event_from(usage, customer_id="c", model="claude-sonnet-4-5")
    assert (event.output_tokens, event.total_tokens) == (300, 312)
    assert event.properties == {"reasoning_tokens": 250}


def test_stream_delta_usage_needs_its_input_count() -> None:
    # A message_delta's usage may leave input_tokens out; the final Message has it.
    delta = MessageDeltaUsage.model_validate({"output_tokens": 40, "input_tokens": None})
    with pytest.raises(InvalidRequestError, match=r"usage\.input_tokens: missing"):
        event_from(delta, customer_id="c")


def test_counting_only_uncached_input_is_one_override() -> None:
    message = Message.model_validate(MESSAGE)
    event = event_from(message, customer_id="c", input_tokens=message.usage.input_tokens)
    assert (event.input_tokens, event.total_tokens) == (50, 250)
    # Cache reads are not part of an input count that leaves them out.
    assert event.cached_input_tokens is None


def test_extra_properties_merge() -> None:
    event = event_from(MESSAGE, customer_id="c", properties={"feature": "chat"}, latency_ms=900)
    assert event.properties == {"cache_write_input_tokens": 1000, "feature": "chat"}
    assert event.cached_input_tokens == 4000
    assert event.latency_ms == 900


@pytest.mark.parametrize("value", [None, "msg", 3.5, {"id": "msg_01"}])
def test_objects_without_usage_are_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="a Message"):
        event_from(value, customer_id="c")


def test_openai_usage_is_refused() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    with pytest.raises(TypeError, match="openai"):
        event_from({"model": "gpt-4o", "usage": usage}, customer_id="c")


@pytest.mark.parametrize(
    ("usage", "named"),
    [
        ({"input_tokens": 1, "output_tokens": "2"}, "usage.output_tokens"),
        ({"input_tokens": 1}, "usage.output_tokens: missing"),
        (
            {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": -5},
            "usage.cache_read_input_tokens",
        ),
    ],
)
def test_malformed_counts_are_a_400(usage: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(named)):
        event_from({"model": "claude", "usage": usage}, customer_id="c")


def test_a_message_with_null_usage_is_a_400() -> None:
    with pytest.raises(InvalidRequestError, match="usage is null"):
        event_from({"model": "claude", "usage": None}, customer_id="c")


def test_a_non_string_model_is_a_400() -> None:
    with pytest.raises(InvalidRequestError, match="model: expected a string"):
        event_from({"model": 4, "usage": MESSAGE["usage"]}, customer_id="c")


def test_a_token_quota_counts_cached_input(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="daily tokens",
        metric="total_tokens",
        limit_value=10_000,
        period="day",
        per=["customer_id"],
        dimension_filters={"provider": "anthropic"},
    )
    first = tracker.usage(event_from(Message.model_validate(MESSAGE), customer_id="cust_1"))
    assert (first.quotas[0].used, first.quotas[0].remaining) == (5250, 4750)
    with pytest.raises(QuotaExceeded):
        # 5250 more would make 10500 > 10000, though uncached input alone would fit.
        tracker.usage(event_from(MESSAGE, customer_id="cust_1"))
    usage = tracker.customers.get_usage("cust_1")
    assert (usage.total_events, usage.total_input_tokens, usage.total_tokens) == (1, 5050, 5250)
    events = tracker.events.list(customer_id="cust_1").data
    assert events[0].properties == {"cache_write_input_tokens": 1000}
    assert events[0].cached_input_tokens == 4000


def test_the_module_examples_run() -> None:
    result = doctest.testmod(adapter)
    assert result.attempted > 0
    assert result.failed == 0
