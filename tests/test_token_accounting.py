"""Token accounting: cached input tokens on events, quotas on input or output tokens."""

from __future__ import annotations

import pytest

from limitry_local import InvalidRequestError, QuotaExceeded, Tracker

CALL = {"customer_id": "c", "event_type": "model_call"}


def test_cached_input_tokens_are_recorded_and_listed(tracker: Tracker) -> None:
    tracker.usage({**CALL, "inputTokens": 100, "cachedInputTokens": 80, "outputTokens": 5})
    tracker.events.ingest({**CALL, "input_tokens": 10})
    without, with_cache = tracker.events.list().data
    assert with_cache.cached_input_tokens == 80
    assert with_cache.model_dump(by_alias=True)["cachedInputTokens"] == 80
    assert without.cached_input_tokens is None
    assert "cachedInputTokens" not in without.model_dump(by_alias=True)


def test_cached_input_tokens_are_part_of_the_input(tracker: Tracker) -> None:
    with pytest.raises(InvalidRequestError, match="cachedInputTokens"):
        tracker.usage({**CALL, "inputTokens": 10, "cachedInputTokens": 11})
    with pytest.raises(InvalidRequestError, match="cachedInputTokens"):
        tracker.usage({**CALL, "cachedInputTokens": -1})
    assert tracker.ledger.event_count() == 0


def test_quotas_count_input_and_output_tokens_separately(tracker: Tracker) -> None:
    tracker.quotas.create(name="in", metric="input_tokens", limit_value=150, period="day")
    tracker.quotas.create(name="out", metric="output_tokens", limit_value=1000, period="day")
    answer = tracker.usage({**CALL, "input_tokens": 100, "output_tokens": 400})
    assert {q.name: q.used for q in answer.quotas} == {"in": 100, "out": 400}
    with pytest.raises(QuotaExceeded) as denied:
        tracker.usage({**CALL, "input_tokens": 60, "output_tokens": 1})
    assert denied.value.headers["X-Quota-Metric"] == "input_tokens"
    # Only output: the input quota has room for an event without input tokens.
    tracker.usage({**CALL, "output_tokens": 500})
    checked = {q.name: q.used for q in tracker.quotas.check({"customer_id": "c"}).quotas}
    assert checked == {"in": 100, "out": 900}


def test_a_new_input_quota_counts_the_events_already_recorded(tracker: Tracker) -> None:
    tracker.events.batch(
        [{**CALL, "input_tokens": 30, "output_tokens": 7}, {**CALL, "total_tokens": 50}]
    )
    tracker.quotas.create(name="in", metric="input_tokens", limit_value=1000, period="day")
    tracker.quotas.create(name="out", metric="output_tokens", limit_value=1000, period="day")
    used = {q.name: q.used for q in tracker.quotas.check({"customer_id": "c"}).quotas}
    assert used == {"in": 30, "out": 7}
