"""track_stream: reserve at the start, commit the last chunk's usage (or the estimate).

The chunks are the SDKs' own types (openai and anthropic are in the dev
extra), built with ``model_validate`` from the shapes their APIs stream; no
network.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import openai
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
from openai.types.responses import ResponseCompletedEvent, ResponseFailedEvent

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


def test_the_chat_stream_helpers_chunk_events_are_read() -> None:
    """``client.chat.completions.stream()`` yields ChunkEvents that wrap the chunks
    (found in review: their usage was never read, so the estimate was committed).
    The real client, over a transport that answers the chunks as server-sent events."""
    body = "".join(f"data: {chunk.model_dump_json()}\n\n" for chunk in _openai_chunks())
    answer = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=(body + "data: [DONE]\n\n").encode(),
    )
    transport = httpx2.MockTransport(lambda request: answer)  # openai's own HTTP client
    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://openai.test/v1",
        http_client=httpx2.Client(transport=transport),
    )
    with _tracker() as tracker:
        with (
            track_stream(tracker, estimate=4000, **WHO) as usage,
            client.chat.completions.stream(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                stream_options={"include_usage": True},
            ) as stream,
        ):
            kinds = {event.type for event in usage.wrap(stream)}
        assert {"chunk", "content.delta"} <= kinds  # the helper's events, not bare chunks
        (event,) = tracker.events.list().data
        assert (event.input_tokens, event.output_tokens, event.total_tokens) == (1200, 80, 1280)
        assert _used(tracker) == 1280


def _response_event(
    kind: str, counts: dict[str, int], *, reasoning_tokens: int = 0, **response: Any
) -> dict[str, Any]:
    """A Responses API stream event (``response.completed``, ``.failed``) carrying usage."""
    return {
        "type": kind,
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
            "status": kind.removeprefix("response."),
            "usage": {
                **counts,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            },
            **response,
        },
    }


def test_responses_api_stream_commits_the_completed_response() -> None:
    completed = ResponseCompletedEvent.model_validate(
        _response_event(
            "response.completed",
            {"input_tokens": 300, "output_tokens": 50, "total_tokens": 350},
            reasoning_tokens=10,
        )
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


def test_a_failed_responses_stream_commits_the_usage_it_reports() -> None:
    """Found in review: ``response.failed`` carries the usage too, and was passed over."""
    failed = ResponseFailedEvent.model_validate(
        _response_event(
            "response.failed",
            {"input_tokens": 300, "output_tokens": 20, "total_tokens": 320},
            error={"code": "server_error", "message": "the model failed"},
        )
    )
    with _tracker() as tracker:
        with track_stream(tracker, estimate=1000, **WHO) as usage:
            list(usage.wrap([failed]))
        (event,) = tracker.events.list().data
        assert event.total_tokens == 320


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


def test_a_stream_that_breaks_before_its_first_chunk_releases_the_hold() -> None:
    def refused() -> Iterator[ChatCompletionChunk]:
        raise ConnectionError("connection refused")
        yield from ()

    with _tracker() as tracker:
        with pytest.raises(ConnectionError), track_stream(tracker, estimate=4000, **WHO) as usage:
            for _ in usage.wrap(refused()):
                pass
        assert usage.reservation.state == "released"
        assert tracker.events.list().data == []
        assert _used(tracker) == 0


def test_a_stream_that_breaks_after_a_chunk_commits_the_estimate() -> None:
    """Changed after review: the hold was released and nothing recorded, so a client
    that disconnected just before a stream ended was never counted.  The provider
    was answering: the estimate stands for what it sent."""

    def broken() -> Iterator[ChatCompletionChunk]:
        yield _openai_chunks()[0]
        raise ConnectionError("stream cut")

    with _tracker() as tracker:
        with pytest.raises(ConnectionError), track_stream(tracker, estimate=4000, **WHO) as usage:
            for _ in usage.wrap(broken()):
                pass
        assert usage.reservation.state == "committed"
        (event,) = tracker.events.list().data
        assert event.total_tokens == 4000


def test_usage_already_reported_is_kept_when_the_block_raises() -> None:
    """Found in review: the whole stream was read, the caller's own code raised in the
    block, and the 1,280 tokens reported were thrown away with the hold."""
    with _tracker() as tracker:
        with pytest.raises(RuntimeError), track_stream(tracker, estimate=4000, **WHO) as usage:
            list(usage.wrap(_openai_chunks()))
            raise RuntimeError("the caller's own failure")
        (event,) = tracker.events.list().data
        assert event.total_tokens == 1280
        assert _used(tracker) == 1280


def test_a_cancelled_async_stream_keeps_what_it_reported() -> None:
    async def main() -> int:
        async def chunks() -> AsyncIterator[ChatCompletionChunk]:
            for chunk in _openai_chunks():
                yield chunk
            await asyncio.sleep(3600)  # the caller gives up here

        with _tracker() as tracker:

            async def consume() -> None:
                async with track_stream(tracker, estimate=4000, **WHO) as usage:
                    async for _ in usage.wrap_async(chunks()):
                        pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            (event,) = tracker.events.list().data
            return event.total_tokens or 0

    assert asyncio.run(main()) == 1280


@pytest.mark.parametrize(
    "reported",
    [
        # Counts the adapters refuse (InvalidRequestError).
        {"prompt_tokens": 100.5, "completion_tokens": 1, "total_tokens": 101.5},
        # Another provider's field, which made the adapter raise TypeError.
        {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "cache_read_input_tokens": 0,
        },
    ],
    ids=["fractional counts", "another providers field"],
)
def test_usage_the_adapters_refuse_commits_the_estimate(reported: dict[str, Any]) -> None:
    """Found in review: an OpenAI-compatible server's ``prompt_tokens: 100.0`` made the
    block raise and left the hold open until its ttl, the call never counted.  And in
    review of that fix: usage with Anthropic's cache field raised TypeError, which
    was not caught."""
    odd = _openai_chunks()[-1].model_dump()
    odd["usage"] = reported
    with _tracker() as tracker:
        with track_stream(tracker, estimate=900, **WHO) as usage:
            usage.observe(odd)
        assert usage.reservation.state == "committed"
        (event,) = tracker.events.list().data
        assert event.total_tokens == 900


def test_an_anthropic_stream_closed_before_its_message_delta_commits_the_estimate() -> None:
    """Found in review: message_start's output count (1) is a placeholder; a stream
    closed after it recorded 1,821 tokens of a 5,000 estimate, where OpenAI's
    commits the estimate."""
    with _tracker() as tracker:
        with track_stream(
            tracker, estimate=5000, customer_id="cust_1", model="claude-sonnet-4-5"
        ) as usage:
            for event in usage.wrap(_anthropic_events()):
                if event.type == "content_block_delta":
                    break
        (recorded,) = tracker.events.list().data
        assert recorded.total_tokens == 5000


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


def test_a_commit_that_fails_after_a_broken_stream_does_not_hide_the_stream_error(
    tmp_path: Path,
) -> None:
    """Found in review: the stream broke, the commit met a locked ledger, and the
    caller saw the LedgerError, not the ConnectionError its handler waits for."""

    def broken() -> Iterator[ChatCompletionChunk]:
        yield _openai_chunks()[0]
        raise ConnectionError("stream cut")

    path = tmp_path / "usage.db"
    with Tracker(path, clock=ManualClock(START), timeout=0.05) as tracker:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            with (
                pytest.raises(ConnectionError),
                track_stream(tracker, estimate=100, **WHO) as usage,
            ):
                other.execute("BEGIN IMMEDIATE")  # the commit will find it locked
                for _ in usage.wrap(broken()):
                    pass
            other.execute("ROLLBACK")
        assert usage.reservation.state == "open"  # expires at its ttl
