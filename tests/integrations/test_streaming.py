"""track_stream: reserve at the start, commit the last chunk's usage, release on error.

The chunks are the SDKs' own types (openai and anthropic are in the dev
extra), built with ``model_validate`` from the shapes their APIs stream; no
network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseCompletedEvent

from limitry_local import QuotaExceeded, RateLimitExceeded, Tracker
from limitry_local.integrations.streaming import track_stream
from limitry_local.testing import ManualClock
from tests.conftest import START

WHO: dict[str, Any] = {"customer_id": "cust_1", "model": "gpt-4o", "provider": "openai"}


def _openai_chunks(*, include_usage: bool = True) -> list[ChatCompletionChunk]:
    base: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_764_064_800,
        "model": "gpt-4o-2024-08-06",
    }
    chunks = [
        ChatCompletionChunk.model_validate(
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}],
            }
        )
        for text in ("Hel", "lo")
    ]
    chunks.append(
        ChatCompletionChunk.model_validate(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
    )
    if include_usage:
        # stream_options={"include_usage": True}: a last chunk, no choices, the usage.
        chunks.append(
            ChatCompletionChunk.model_validate(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 1200,
                        "completion_tokens": 80,
                        "total_tokens": 1280,
                        "prompt_tokens_details": {"cached_tokens": 1024},
                    },
                }
            )
        )
    return chunks


def _anthropic_events() -> list[Any]:
    return [
        RawMessageStartEvent.model_validate(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 20,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 1800,
                    },
                },
            }
        ),
        RawContentBlockStartEvent.model_validate(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        RawContentBlockDeltaEvent.model_validate(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"},
            }
        ),
        RawContentBlockStopEvent.model_validate({"type": "content_block_stop", "index": 0}),
        RawMessageDeltaEvent.model_validate(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 300},
            }
        ),
        RawMessageStopEvent.model_validate({"type": "message_stop"}),
    ]


def _tracker() -> Tracker:
    tracker = Tracker(clock=ManualClock(START))
    tracker.quotas.create(
        name="daily tokens",
        metric="total_tokens",
        limit_value=5000,
        period="day",
        per=["customer_id"],
    )
    return tracker


def _used(tracker: Tracker) -> int | float:
    return tracker.quotas.check({"customer_id": "cust_1"}).quotas[0].used


def test_openai_stream_commits_the_usage_of_its_last_chunk() -> None:
    with _tracker() as tracker:
        with track_stream(tracker, estimate=4000, **WHO) as usage:
            assert _used(tracker) == 4000  # held from the start
            seen = list(usage.wrap(iter(_openai_chunks())))
        assert len(seen) == 4  # every chunk passed through unchanged
        assert usage.response is not None and usage.reservation.state == "committed"
        (event,) = tracker.events.list().data
        assert (event.input_tokens, event.output_tokens, event.total_tokens) == (1200, 80, 1280)
        assert event.model == "gpt-4o"  # the dimensions reserved, which limits matched on
        assert event.event_type == "model_call"
        assert event.properties == {"cached_input_tokens": 1024}
        assert _used(tracker) == 1280  # the hold became the real usage


def test_responses_api_stream_commits_the_completed_response() -> None:
    completed = ResponseCompletedEvent.model_validate(
        {
            "type": "response.completed",
            "sequence_number": 9,
            "response": {
                "id": "resp_1",
                "object": "response",
                "created_at": 1_764_064_800,
                "model": "gpt-4o-2024-08-06",
                "output": [],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "status": "completed",
                "usage": {
                    "input_tokens": 300,
                    "output_tokens": 50,
                    "total_tokens": 350,
                    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 10},
                },
            },
        }
    )
    with _tracker() as tracker:
        with track_stream(tracker, estimate=1000, **WHO) as usage:
            list(usage.wrap([completed]))
        (event,) = tracker.events.list().data
        assert event.total_tokens == 350
        assert event.properties == {
            "cache_write_input_tokens": 0,
            "reasoning_tokens": 10,
            "cached_input_tokens": 0,
        }


def test_anthropic_stream_sums_message_start_and_the_last_message_delta() -> None:
    with _tracker() as tracker:
        with track_stream(
            tracker, estimate=3000, customer_id="cust_1", model="claude-sonnet-4-5"
        ) as usage:
            for _ in usage.wrap(_anthropic_events()):
                pass
        (event,) = tracker.events.list().data
        # input: 20 uncached + 1800 read from the cache; output: message_delta's cumulative 300.
        assert (event.input_tokens, event.output_tokens, event.total_tokens) == (1820, 300, 2120)
        assert event.properties == {"cache_write_input_tokens": 0, "cached_input_tokens": 1800}
        assert _used(tracker) == 2120


def test_a_stream_that_breaks_releases_the_hold_and_records_nothing() -> None:
    def broken() -> Iterator[ChatCompletionChunk]:
        yield _openai_chunks()[0]
        raise ConnectionError("stream cut")

    with _tracker() as tracker:
        with pytest.raises(ConnectionError), track_stream(tracker, estimate=4000, **WHO) as usage:
            for _ in usage.wrap(broken()):
                pass
        assert usage.reservation.state == "released"
        assert tracker.events.list().data == []
        assert _used(tracker) == 0


def test_a_stream_without_usage_commits_the_estimate() -> None:
    with _tracker() as tracker:
        with track_stream(tracker, estimate=700, **WHO) as usage:
            list(usage.wrap(_openai_chunks(include_usage=False)))
        assert usage.usage is None
        (event,) = tracker.events.list().data
        assert event.total_tokens == 700


def test_the_reservation_denies_before_the_stream_starts() -> None:
    with _tracker() as tracker:
        tracker.rate_limits.create(
            name="1 gpt-4o stream a minute",
            limit_value=1,
            window="minute",
            dimension_filters={"model": "gpt-4o"},
        )
        with track_stream(tracker, estimate=100, **WHO) as usage:
            list(usage.wrap(_openai_chunks()))
        with pytest.raises(RateLimitExceeded):
            track_stream(tracker, estimate=100, **WHO)
        with pytest.raises(QuotaExceeded):
            track_stream(tracker, estimate=4000, customer_id="cust_1", event_type="x")
        assert len(tracker.events.list().data) == 1


def test_async_streams_work_the_same() -> None:
    async def stream() -> AsyncIterator[Any]:
        for event in _anthropic_events():
            yield event

    async def scenario(tracker: Tracker) -> None:
        async with track_stream(tracker, estimate=3000, customer_id="cust_1") as usage:
            async for _ in usage.wrap_async(stream()):
                pass

    with _tracker() as tracker:
        asyncio.run(scenario(tracker))
        (event,) = tracker.events.list().data
        assert event.total_tokens == 2120


def test_dict_chunks_read_like_sdk_objects() -> None:
    with _tracker() as tracker:
        with track_stream(tracker, estimate=4000, **WHO) as usage:
            for chunk in _openai_chunks():
                usage.observe(chunk.model_dump())
        (event,) = tracker.events.list().data
        assert event.total_tokens == 1280
