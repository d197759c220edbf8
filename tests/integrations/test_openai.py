"""OpenAI adapter: real SDK objects (openai is in the dev extra) and their dict shapes."""

from __future__ import annotations

import doctest
import re
from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from limitry_local import InvalidRequestError, QuotaExceeded, Tracker
from limitry_local.integrations import openai as adapter
from limitry_local.integrations.openai import event_from

CHAT: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_764_064_800,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "total_tokens": 1280,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}

RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_764_064_800,
    "model": "gpt-4.1-2025-04-14",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 300,
        "input_tokens_details": {"cached_tokens": 256, "cache_write_tokens": 0},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 32},
        "total_tokens": 350,
    },
}


def test_chat_completion_object() -> None:
    event = event_from(ChatCompletion.model_validate(CHAT), customer_id="cust_1")
    assert event.customer_id == "cust_1"
    assert event.event_type == "model_call"
    assert (event.provider, event.model) == ("openai", "gpt-4o-2024-08-06")
    assert (event.input_tokens, event.output_tokens, event.total_tokens) == (1200, 80, 1280)
    assert event.cached_input_tokens == 1024
    assert event.properties == {"reasoning_tokens": 0}


def test_chat_completion_dict_reads_the_same_as_the_object() -> None:
    from_object = event_from(ChatCompletion.model_validate(CHAT), customer_id="c")
    assert event_from(CHAT, customer_id="c") == from_object


def test_responses_api_object() -> None:
    event = event_from(Response.model_validate(RESPONSE), customer_id="cust_1")
    assert event.model == "gpt-4.1-2025-04-14"
    assert (event.input_tokens, event.output_tokens, event.total_tokens) == (300, 50, 350)
    assert event.cached_input_tokens == 256
    assert event.properties == {"cache_write_input_tokens": 0, "reasoning_tokens": 32}


def test_bare_usage_object_takes_the_model_from_the_caller() -> None:
    usage = Response.model_validate(RESPONSE).usage
    event = event_from(usage, customer_id="c", model="gpt-4.1")
    assert (event.model, event.input_tokens, event.total_tokens) == ("gpt-4.1", 300, 350)
    assert event_from(CHAT["usage"], customer_id="c").model is None


def test_last_stream_chunk_with_usage() -> None:
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        }
    )
    event = event_from(chunk, customer_id="c")
    assert (event.model, event.input_tokens, event.output_tokens) == ("gpt-4o-mini", 9, 3)
    assert event.properties == {}


def test_a_chunk_without_usage_says_how_to_get_it() -> None:
    chunk = ChatCompletionChunk.model_validate(
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
    )
    with pytest.raises(InvalidRequestError, match="include_usage"):
        event_from(chunk, customer_id="c")


def test_embeddings_have_no_output_tokens() -> None:
    response = CreateEmbeddingResponse.model_validate(
        {
            "object": "list",
            "data": [],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    event = event_from(response, customer_id="c", event_type="embedding")
    assert event.event_type == "embedding"
    assert (event.input_tokens, event.output_tokens, event.total_tokens) == (8, None, 8)


def test_extra_fields_set_and_override() -> None:
    event = event_from(
        CHAT,
        customer_id="c",
        latency_ms=420,
        cost_cents=0.5,
        idempotency_key="chatcmpl-1",
        provider="azure-openai",
        properties={"team": "search", "reasoning_tokens": 7},
    )
    assert (event.latency_ms, event.cost_cents, event.idempotency_key) == (420, 0.5, "chatcmpl-1")
    assert event.provider == "azure-openai"
    # Given properties are merged over the adapter's.
    assert event.properties == {"reasoning_tokens": 7, "team": "search"}
    assert event.cached_input_tokens == 1024


def test_overriding_a_count_recomputes_the_total() -> None:
    uncached = event_from(CHAT, customer_id="c", input_tokens=1200 - 1024)
    assert (uncached.input_tokens, uncached.total_tokens) == (176, 256)
    wire_name = event_from(CHAT, customer_id="c", outputTokens=0)
    assert (wire_name.output_tokens, wire_name.total_tokens) == (0, 1200)


def test_an_unknown_extra_field_is_a_400_naming_it() -> None:
    with pytest.raises(InvalidRequestError, match="colour"):
        event_from(CHAT, customer_id="c", colour="blue")


@pytest.mark.parametrize("value", [None, "hello", 42, object(), {"model": "gpt-4o"}])
def test_objects_without_usage_are_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="ChatCompletion, a Response"):
        event_from(value, customer_id="c")


@pytest.mark.parametrize(
    ("usage", "named"),
    [
        ({"prompt_tokens": "12", "total_tokens": 12}, "usage.prompt_tokens: expected a token"),
        ({"prompt_tokens": True}, "usage.prompt_tokens"),
        ({"prompt_tokens": -1}, "usage.prompt_tokens"),
        (
            {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1.5}},
            "usage.prompt_tokens_details.cached_tokens",
        ),
        ({"input_tokens": None, "output_tokens": 3}, "usage.input_tokens: missing"),
    ],
)
def test_malformed_counts_are_a_400_naming_the_sdk_field(
    usage: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(named)) as raised:
        event_from({"model": "m", "usage": usage}, customer_id="c")
    assert raised.value.status_code == 400


def test_anthropic_usage_is_refused_not_undercounted() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 1000}
    with pytest.raises(TypeError, match="anthropic"):
        event_from({"model": "claude", "usage": usage}, customer_id="c")


def test_a_token_quota_counts_the_sdk_total(tracker: Tracker) -> None:
    tracker.quotas.create(
        name="daily tokens",
        metric="total_tokens",
        limit_value=2000,
        period="day",
        per=["customer_id"],
        dimension_filters={"provider": "openai"},
    )
    tracker.usage(event_from(ChatCompletion.model_validate(CHAT), customer_id="cust_1"))
    usage = tracker.customers.get_usage("cust_1")
    assert (usage.total_input_tokens, usage.total_output_tokens, usage.total_tokens) == (
        1200,
        80,
        1280,
    )
    with pytest.raises(QuotaExceeded) as denied:
        # 1280 used + 1280 > 2000: the second call does not fit.
        tracker.usage(event_from(CHAT, customer_id="cust_1"))
    assert denied.value.body.quotas[0].used == 1280
    tracker.usage(event_from(Response.model_validate(RESPONSE), customer_id="cust_1"))
    assert tracker.customers.get_usage("cust_1").total_tokens == 1280 + 350


def test_the_module_examples_run() -> None:
    result = doctest.testmod(adapter)
    assert result.attempted > 0
    assert result.failed == 0
