"""The engine's answers and rows, built positionally on the hot path, equal their named forms."""

from __future__ import annotations

import json

import pytest

from limitry_local.engine.responses import event_row
from limitry_local.ledger import EventRow
from limitry_local.metrics import micro_cents
from limitry_local.models import TrackPostRequest


@pytest.mark.parametrize(
    "fields",
    [
        {"customer_id": "c1", "event_type": "e"},
        {
            "customer_id": "c1",
            "event_type": "model_call",
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 100,
            "output_tokens": 20,
            "latency_ms": 35,
            "cost_cents": 0.25,
            "properties": {"team": "a", "n": 3},
            "idempotency_key": "k1",
            "cached_input_tokens": 7,
        },
    ],
)
def test_event_row_equals_the_row_built_by_name(fields: dict[str, object]) -> None:
    request = TrackPostRequest.model_validate(fields)
    expected = EventRow(
        id="evt_1",
        ts=1.5,
        customer_id=request.customer_id,
        event_type=request.event_type,
        model=request.model,
        provider=request.provider,
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        total_tokens=request.total_tokens,
        latency_ms=request.latency_ms,
        cost_cents=request.cost_cents,
        properties=json.dumps(request.properties, separators=(",", ":"))
        if request.properties
        else "{}",
        idempotency_key=request.idempotency_key,
        cached_input_tokens=request.cached_input_tokens,
        cost_micro_cents=micro_cents(request.cost_cents),
    )
    row = event_row("evt_1", request, 1.5)
    assert type(row) is EventRow
    assert row._asdict() == expected._asdict()
