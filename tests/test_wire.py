"""Wire fidelity: every golden fixture read, written back, and built from Python, unchanged.

Each fixture under ``tests/golden/`` (the hosted reference's copies at the top level, ours
under ``ours/``) is checked in both directions:

* wire -> model -> wire: ``model_validate`` then ``model_dump(mode="json", by_alias=True)``
  (and ``model_dump_json``) give back the fixture exactly;
* Python -> wire: the same model built from snake_case keyword arguments and Python values
  (``datetime``, nested models) dumps to the fixture and equals the parsed one;
* JSON text round trip: ``model_validate_json(model_dump_json())`` is an equal model.

A request model dumps exactly the fields it was given, so a request builder passes exactly
the fields its fixture holds (an explicit ``{}`` or ``None`` included, a default left out).
The rule itself, and the datetime form, are pinned by the tests after the table.

Known gaps (hosted shapes that do not round-trip) are written down as strict xfails at the
end, so fixing one turns the suite red until its case becomes a fixture.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, RootModel

import limitry_local
from limitry_local import (
    CustomerUsageResponse,
    DeleteResponse,
    ErrorBody,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    FailedOpen,
    Page,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaAlertUpdate,
    QuotaCheckRequest,
    QuotaCheckResponse,
    QuotaCreate,
    QuotasCheckRequest,
    QuotaStatus,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckRequest,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitsCheckRequest,
    RateLimitStatus,
    RateLimitUpdate,
    TrackDeniedResponse,
    TrackPostRequest,
    TrackPostResponse,
    UsageBreakdown,
    UsageBreakdownItem,
    UsageBreakdownResponse,
    UsageGroup,
    UsagePoint,
    UsageSummary,
    UsageTimeseries,
    UsageTimeseriesItem,
    UsageTimeseriesResponse,
)
from limitry_local.models import RequestModel
from limitry_local.types import Project

GOLDEN = Path(__file__).parent / "golden"
README = GOLDEN / "README.md"
CAMEL = re.compile(r"^[a-z][A-Za-z0-9]*$")


def _at(text: str) -> datetime:
    """``"2024-01-15T10:30:00"`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


T0 = _at("2024-01-15T10:30:00")


# --- Python-side builders: the same shapes, from snake_case keyword arguments ----------------


def _rl_per_customer(remaining: int, reset: int, exceeded: bool = False) -> RateLimitStatus:
    return RateLimitStatus(
        id="rl_4k8m2p",
        name="Per-customer requests",
        limit=60,
        remaining=remaining,
        reset=reset,
        window="minute",
        exceeded=exceeded,
    )


def _rl_hourly(remaining: int, reset: int, exceeded: bool = False) -> RateLimitStatus:
    return RateLimitStatus(
        id="rl_7h3n9q",
        name="Hourly API limit",
        limit=1000,
        remaining=remaining,
        reset=reset,
        window="1h",
        exceeded=exceeded,
    )


def _failed_open() -> FailedOpen:
    return FailedOpen(
        id="rl_4k8m2p", name="Per-customer requests", kind="rate_limit", reason="timeout"
    )


def _qs_daily_tokens(used: int, exceeded: bool = False) -> QuotaStatus:
    return QuotaStatus(
        id="qta_abc123",
        name="Daily Token Limit",
        metric="total_tokens",
        period="day",
        limit=100_000,
        used=used,
        remaining=100_000 - used,
        reset=1705363200,
        exceeded=exceeded,
    )


def _qs_hourly_tool_calls() -> QuotaStatus:
    return QuotaStatus(
        id="qta_8j4l1z",
        name="Hourly tool calls",
        metric="total_events",
        period="hour",
        limit=500,
        used=500,
        remaining=0,
        reset=1705316400,
        exceeded=True,
    )


def _hosted_quota() -> Quota:
    return Quota(
        id="qta_abc123",
        project_id="proj_xyz",
        name="Daily Token Limit",
        dimension_filters={"customer_id": "cust_123"},
        metric="total_tokens",
        limit_value=100_000,
        period="day",
        created_at=T0,
        updated_at=T0,
    )


def _quota_spend_per_customer(dimension_filters: dict[str, str | list[str]]) -> Quota:
    return Quota(
        id="qta_5r2t8w",
        project_id="proj_xyz",
        name="Monthly spend per customer",
        dimension_filters=dimension_filters,
        metric="total_cost_cents",
        limit_value=50_000,
        period="month",
        per=["customer_id"],
        created_at=_at("2024-01-02T08:00:00"),
        updated_at=T0,
    )


def _event_gpt4() -> Event:
    return Event(
        id="evt_9d2c41f7a8b3",
        created_at=T0,
        customer_id="cust_123",
        event_type="model_call",
        model="gpt-4",
        provider="openai",
        input_tokens=150,
        output_tokens=50,
        total_tokens=200,
        latency_ms=1200,
        cost_cents=25,
        properties={"user_id": "user_456", "team_id": "team_eng", "feature": "chat"},
    )


def _alert_80() -> QuotaAlert:
    return QuotaAlert(
        id="qa_7h2k9m",
        quota_id="qta_5r2t8w",
        threshold=80,
        last_triggered_at=_at("2024-01-15T10:30:00"),
        created_at=_at("2024-01-02T08:00:00"),
        updated_at=_at("2024-01-02T08:00:00"),
    )


BUILDERS: dict[str, Callable[[], BaseModel]] = {
    # hosted reference copies
    "customer_usage.json": lambda: CustomerUsageResponse(
        customer_id="cust_123",
        total_events=500,
        total_tokens=200_000,
        total_input_tokens=120_000,
        total_output_tokens=80_000,
        total_cost_cents=500,
    ),
    "errors.json#bad_request": lambda: ErrorBody(error="Invalid request"),
    "errors.json#unauthorized": lambda: ErrorBody(error="Invalid or missing API key"),
    "errors.json#not_found": lambda: ErrorBody(error="Resource not found"),
    "event_ingest_request.json": lambda: TrackPostRequest(
        customer_id="cust_123",
        event_type="model_call",
        model="gpt-4",
        provider="openai",
        input_tokens=150,
        output_tokens=50,
        total_tokens=200,
        latency_ms=1200,
        cost_cents=25,
        properties={"user_id": "user_456", "team_id": "team_eng", "feature": "chat"},
        idempotency_key="req_abc123",
        timestamp=T0,
    ),
    "event_ingest_response.json": lambda: EventIngestResponse(id="evt_abc123"),
    "quota.json": _hosted_quota,
    "quota_create.json": lambda: QuotaCreate(
        name="Daily Token Limit",
        dimension_filters={"customer_id": "cust_123"},
        metric="total_tokens",
        limit_value=100_000,
        period="day",
    ),
    "quota_list.json": lambda: Page[Quota](
        data=[_hosted_quota()], next_cursor="qta_xyz789", has_more=True
    ),
    "rate_limit.json": lambda: RateLimit(
        id="rl_abc123",
        project_id="proj_xyz",
        name="Customer API limit",
        dimension_filters={"customer_id": "cust_123"},
        limit_value=100,
        window="1h",
        enabled=True,
        created_at=T0,
        updated_at=T0,
    ),
    "rate_limit_create.json": lambda: RateLimitCreate(
        name="Customer API limit",
        dimension_filters={"customer_id": "cust_123"},
        limit_value=100,
        window="minute",
        enabled=True,
    ),
    # ours
    "ours/customer_usage_fractional.json": lambda: CustomerUsageResponse(
        customer_id="cust_456",
        total_events=37,
        total_tokens=0,
        total_input_tokens=0,
        total_output_tokens=0,
        total_cost_cents=12.5,
    ),
    "ours/error_body.json": lambda: ErrorBody(error="Quota not found"),
    "ours/event.json": lambda: Event(
        id="evt_9d2c41f7a8b3",
        created_at=T0,
        customer_id="cust_123",
        event_type="model_call",
        model="claude-3-opus",
        provider="anthropic",
        input_tokens=1250,
        output_tokens=430,
        total_tokens=1680,
        latency_ms=2340,
        cost_cents=37.5,
        properties={
            "feature": "chat",
            "retries": 2,
            "cached": False,
            "tags": ["beta"],
            "parentId": None,
        },
    ),
    "ours/event_batch_request.json": lambda: EventBatchRequest(
        events=[
            TrackPostRequest(
                customer_id="cust_123",
                event_type="model_call",
                model="gpt-4",
                provider="openai",
                input_tokens=150,
                output_tokens=50,
                total_tokens=200,
                cost_cents=25,
                idempotency_key="batch_0001",
                timestamp=_at("2024-01-15T09:00:00"),
            ),
            TrackPostRequest(
                customer_id="cust_456",
                event_type="tool_call",
                properties={"tool": "web_search", "results": 10},
            ),
            TrackPostRequest(
                customer_id="cust_789",
                event_type="embedding",
                model="text-embedding-3-small",
                total_tokens=512,
                cost_cents=0.01,
                timestamp=_at("2024-01-15T09:05:30"),
            ),
        ]
    ),
    "ours/event_batch_response.json": lambda: EventBatchResponse(count=3),
    "ours/event_list.json": lambda: Page[Event](
        data=[
            _event_gpt4(),
            Event(
                id="evt_3f8e2a6c1b9d",
                created_at=_at("2024-01-15T10:29:12"),
                customer_id="cust_123",
                event_type="tool_call",
                latency_ms=87,
            ),
        ],
        next_cursor="evt_3f8e2a6c1b9d",
        has_more=True,
    ),
    "ours/quota_check_request.json": lambda: QuotaCheckRequest(
        dimensions={
            "customer_id": "cust_123",
            "event_type": "model_call",
            "model": "gpt-4",
            "team_id": "team_eng",
        }
    ),
    "ours/quota_check_response.json": lambda: QuotaCheckResponse(
        allowed=False, quotas=[_qs_daily_tokens(41_680), _qs_hourly_tool_calls()]
    ),
    "ours/quota_check_response_hosted.json": lambda: QuotaCheckResponse(
        allowed=True,
        quotas=[
            QuotaStatus(
                id="qta_abc123",
                name="Daily Token Limit",
                metric="total_tokens",
                period="day",
                limit=100_000,
                used=41_680,
                remaining=58_320,
                exceeded=False,
            )
        ],
    ),
    "ours/quota_create_cost.json": lambda: QuotaCreate(
        name="Monthly spend",
        dimension_filters={},  # the fixture sends an explicit empty object
        metric="total_cost_cents",
        limit_value=50_000,
        period="month",
    ),
    "ours/quota_create_minimal.json": lambda: QuotaCreate(
        name="Monthly spend", metric="total_cost_cents", limit_value=50_000, period="month"
    ),
    "ours/quota_create_per.json": lambda: QuotaCreate(
        name="Daily tokens per customer",
        dimension_filters={"model": ["gpt-4", "gpt-4o"], "provider": "openai"},
        metric="total_tokens",
        limit_value=100_000,
        period="day",
        per=["customer_id"],
    ),
    "ours/quota_list_last_page.json": lambda: Page[Quota](
        data=[
            Quota(
                id="qta_8j4l1z",
                project_id="proj_xyz",
                name="Hourly tool calls",
                dimension_filters={"event_type": "tool_call"},
                metric="total_events",
                limit_value=500,
                period="hour",
                created_at=_at("2024-01-10T09:15:00"),
                updated_at=_at("2024-01-10T09:15:00"),
            ),
            _quota_spend_per_customer({}),
        ],
        next_cursor=None,
        has_more=False,
    ),
    "ours/quota_per.json": lambda: _quota_spend_per_customer(
        {"event_type": ["model_call", "embedding"]}
    ),
    "ours/quota_status.json": _qs_hourly_tool_calls,
    "ours/quota_alert.json": _alert_80,
    "ours/quota_alert_create.json": lambda: QuotaAlertCreate(threshold=80),
    "ours/quota_alert_update.json": lambda: QuotaAlertUpdate(threshold=90),
    "ours/quota_alert_updated.json": lambda: _alert_80().model_copy(
        update={"threshold": 90, "updated_at": _at("2024-01-20T16:45:00")}
    ),
    "ours/quota_alert_list.json": lambda: Page[QuotaAlert](
        data=[
            _alert_80(),
            QuotaAlert(
                id="qa_9x4p1z",
                quota_id="qta_5r2t8w",
                threshold=100,
                last_triggered_at=None,
                created_at=_at("2024-01-02T08:00:05"),
                updated_at=_at("2024-01-02T08:00:05"),
            ),
        ],
    ),
    "ours/quota_alert_log.json": lambda: QuotaAlertLog(
        id="qal_3c8v2n",
        quota_alert_id="qa_7h2k9m",
        quota_id="qta_5r2t8w",
        threshold=80,
        current_usage=40000.5,
        limit_value=50000,
        triggered_at=_at("2024-01-15T10:30:00"),
        quota_name="Monthly spend per customer",
        metric="total_cost_cents",
        period="month",
        dimensions={"customer_id": "cust_123"},
        period_start=_at("2024-01-01T00:00:00"),
        period_end=_at("2024-02-01T00:00:00"),
        event_id="evt_9a7b3c2d1e0f",
    ),
    "ours/quota_update.json": lambda: QuotaUpdate(limit_value=200_000),
    "ours/quota_update_full.json": lambda: QuotaUpdate(
        name="Weekly team events",
        dimension_filters={"team_id": "team_eng"},
        metric="total_events",
        limit_value=5000,
        period="week",
        per=["customer_id", "feature"],
    ),
    "ours/rate_limit_check_request.json": lambda: RateLimitCheckRequest(
        dimensions={"customer_id": "cust_123", "provider": "openai"}
    ),
    "ours/rate_limit_check_response.json": lambda: RateLimitCheckResponse(
        allowed=False,
        rate_limits=[
            _rl_hourly(0, 1705318200, exceeded=True),
            _rl_per_customer(60, 1705314600),
        ],
    ),
    "ours/rate_limit_create_tokens.json": lambda: RateLimitCreate(
        name="Token throughput",
        dimension_filters={"provider": "openai"},
        limit_value=90_000,
        window="minute",
        enabled=True,  # sent explicitly, though it is the default
        per=["customer_id"],
        metric="total_tokens",
    ),
    "ours/rate_limit_create_minimal.json": lambda: RateLimitCreate(
        name="Hourly API limit", limit_value=1000, window="1h"
    ),
    "ours/rate_limit_create_window.json": lambda: RateLimitCreate(
        name="Hourly API limit",
        dimension_filters={},  # the fixture sends an explicit empty object
        limit_value=1000,
        window="1h",
        enabled=False,
    ),
    "ours/rate_limit_list.json": lambda: Page[RateLimit](
        data=[
            RateLimit(
                id="rl_4k8m2p",
                project_id="proj_xyz",
                name="Per-customer requests",
                limit_value=60,
                window="minute",
                per=["customer_id"],
                created_at=_at("2024-01-08T12:00:00"),
                updated_at=_at("2024-01-08T12:00:00"),
            ),
            RateLimit(
                id="rl_7h3n9q",
                project_id="proj_xyz",
                name="Hourly API limit",
                dimension_filters={"customer_id": "cust_123"},
                limit_value=1000,
                window="1h",
                created_at=_at("2024-01-09T16:45:00"),
                updated_at=_at("2024-01-14T11:20:00"),
            ),
        ],
        next_cursor="rl_7h3n9q",
        has_more=True,
    ),
    "ours/rate_limit_per.json": lambda: RateLimit(
        id="rl_2w6e1r",
        project_id="proj_xyz",
        name="Token throughput",
        dimension_filters={"provider": "openai"},
        limit_value=90_000,
        window="5m",
        enabled=False,
        per=["customer_id"],
        metric="total_tokens",
        created_at=_at("2024-01-12T14:00:00"),
        updated_at=T0,
    ),
    "ours/rate_limit_status.json": lambda: _rl_hourly(874, 1705315054),
    "ours/rate_limit_update.json": lambda: RateLimitUpdate(limit_value=120, window="30s"),
    "ours/rate_limit_update_full.json": lambda: RateLimitUpdate(
        name="Daily requests per user",
        dimension_filters={"feature": ["chat", "search"]},
        limit_value=10_000,
        window="1d",
        enabled=False,
        per=["user_id"],
        metric="total_events",
    ),
    "ours/track_denied_quota.json": lambda: TrackDeniedResponse(
        error="Quota exceeded",
        rate_limits=[_rl_per_customer(42, 1705314618)],
        quotas=[_qs_daily_tokens(99_500, exceeded=True)],
        retry_after=48_600,
    ),
    "ours/track_denied_rate_limit.json": lambda: TrackDeniedResponse(
        error="Rate limit exceeded",
        rate_limits=[_rl_per_customer(0, 1705314660, exceeded=True)],
        retry_after=1,
    ),
    "ours/track_request_computed_total.json": lambda: TrackPostRequest(
        customer_id="cust_123",
        event_type="model_call",
        model="gpt-4",
        input_tokens=120,
        output_tokens=30,
    ),
    "ours/track_request_empty_properties.json": lambda: TrackPostRequest(
        customer_id="cust_123", event_type="model_call", properties={}
    ),
    "ours/track_request_full.json": lambda: TrackPostRequest(
        customer_id="cust_123",
        event_type="model_call",
        model="claude-3-opus",
        provider="anthropic",
        input_tokens=1250,
        output_tokens=430,
        total_tokens=1680,
        latency_ms=2340,
        cost_cents=37.5,
        properties={
            "user_id": "user_456",
            "team_id": "team_eng",
            "feature": "chat",
            "retries": 2,
            "temperature": 0.7,
            "cached": False,
            "tags": ["beta", "eu-west"],
            "request": {"region": "eu-west-1", "attempt": 1},
            "parentId": None,
        },
        idempotency_key="req_7f3a9c2e",
        timestamp=T0,
    ),
    "ours/track_request_minimal.json": lambda: TrackPostRequest(
        customer_id="cust_123", event_type="model_call"
    ),
    "ours/track_request_null_model.json": lambda: TrackPostRequest(
        customer_id="cust_123", event_type="model_call", model=None
    ),
    "ours/track_request_timestamp_ms.json": lambda: TrackPostRequest(
        customer_id="cust_123",
        event_type="model_call",
        timestamp=T0.replace(microsecond=123_000),
    ),
    "ours/track_request_zeros.json": lambda: TrackPostRequest(
        customer_id="cust_789",
        event_type="embedding",
        model="text-embedding-3-small",
        provider="openai",
        total_tokens=512,
        latency_ms=0,
        cost_cents=0,
    ),
    "ours/track_response.json": lambda: TrackPostResponse(
        id="evt_9d2c41f7a8b3",
        rate_limits=[_rl_per_customer(59, 1705314601), _rl_hourly(874, 1705315054)],
        quotas=[
            _qs_daily_tokens(41_680),
            QuotaStatus(
                id="qta_5r2t8w",
                name="Monthly spend",
                metric="total_cost_cents",
                period="month",
                limit=50_000,
                used=1287.5,
                remaining=48_712.5,
                reset=1706745600,
                exceeded=False,
            ),
        ],
    ),
    "ours/track_response_unmatched.json": lambda: TrackPostResponse(id="evt_1a2b3c4d5e6f"),
    "ours/track_response_failed_open.json": lambda: TrackPostResponse(
        id="evt_1a2b3c4d5e6f",
        quotas=[_qs_daily_tokens(12_500)],
        failed_open=[_failed_open()],
    ),
    "ours/failed_open.json": _failed_open,
    "ours/rate_limit_fail_open.json": lambda: RateLimit(
        id="rl_4k8m2p",
        project_id="proj_xyz",
        name="Per-customer requests",
        limit_value=60,
        window="minute",
        per=["customer_id"],
        fail_mode="open",
        created_at=T0,
        updated_at=T0,
    ),
    "ours/usage_breakdown.json": lambda: UsageBreakdownResponse(
        group_by="model",
        start_date=_at("2024-01-01T00:00:00"),
        end_date=_at("2024-02-01T00:00:00"),
        data=[
            UsageGroup(
                value="claude-3-opus",
                total_events=1204,
                total_tokens=2_022_720,
                total_input_tokens=1_505_000,
                total_output_tokens=517_720,
                total_cost_cents=4515,
            ),
            UsageGroup(
                value="gpt-4o-mini",
                total_events=380,
                total_tokens=190_000,
                total_input_tokens=150_000,
                total_output_tokens=40_000,
                total_cost_cents=4.65,
            ),
            UsageGroup(
                value=None,
                total_events=52,
                total_tokens=0,
                total_input_tokens=0,
                total_output_tokens=0,
                total_cost_cents=0,
            ),
        ],
    ),
    "ours/usage_breakdown_unbounded.json": lambda: UsageBreakdownResponse(
        group_by="customer_id", start_date=None, end_date=None, data=[]
    ),
    "ours/usage_group.json": lambda: UsageGroup(
        value="cust_123",
        total_events=3,
        total_tokens=1680,
        total_input_tokens=1250,
        total_output_tokens=430,
        total_cost_cents=37.5,
    ),
    "ours/usage_point.json": lambda: UsagePoint(
        period_start=T0.replace(minute=0),
        total_events=1,
        total_tokens=0,
        total_input_tokens=0,
        total_output_tokens=0,
        total_cost_cents=0.000001,
    ),
    "ours/delete_response.json": lambda: DeleteResponse(success=True),
    "ours/project.json": lambda: Project(
        id="proj_xyz",
        organization_id="org_abc",
        name="My Project",
        slug="my-project",
        created_at=_at("2024-01-15T10:30:00"),
        updated_at=_at("2024-01-15T10:30:00"),
    ),
    "ours/quotas_check_request_hosted.json": lambda: QuotasCheckRequest(
        {"dimensions": {"customer_id": "cust_123", "model": "gpt-4"}}
    ),
    "ours/rate_limits_check_request_hosted.json": lambda: RateLimitsCheckRequest(
        {"customer_id": "cust_123"}
    ),
    "ours/usage_summary.json": lambda: UsageSummary(
        total_events=500,
        total_tokens=200_000,
        total_input_tokens=120_000,
        total_output_tokens=80_000,
        total_cost_cents=500,
    ),
    "ours/usage_breakdown_hosted.json": lambda: UsageBreakdown(
        data=[
            UsageBreakdownItem(
                dimension="gpt-4",
                total_events=300,
                total_tokens=150_000,
                total_input_tokens=90_000,
                total_output_tokens=60_000,
                total_cost_cents=450,
            ),
            UsageBreakdownItem(
                dimension=None,
                total_events=200,
                total_tokens=50_000,
                total_input_tokens=30_000,
                total_output_tokens=20_000,
                total_cost_cents=50.5,
            ),
        ]
    ),
    "ours/usage_breakdown_item.json": lambda: UsageBreakdownItem(
        dimension="cust_123",
        total_events=3,
        total_tokens=0,
        total_input_tokens=0,
        total_output_tokens=0,
        total_cost_cents=0.000001,
    ),
    "ours/usage_timeseries_hosted.json": lambda: UsageTimeseries(
        data=[
            UsageTimeseriesItem(
                timestamp=_at("2024-01-15T00:00:00"),
                total_events=120,
                total_tokens=48_000,
                total_input_tokens=30_000,
                total_output_tokens=18_000,
                total_cost_cents=120,
            ),
            UsageTimeseriesItem(
                timestamp=_at("2024-01-16T00:00:00"),
                total_events=80,
                total_tokens=32_000,
                total_input_tokens=20_000,
                total_output_tokens=12_000,
                total_cost_cents=80,
            ),
        ]
    ),
    "ours/usage_timeseries_item.json": lambda: UsageTimeseriesItem(
        timestamp=_at("2024-01-15T10:00:00"),
        total_events=1,
        total_tokens=200,
        total_input_tokens=150,
        total_output_tokens=50,
        total_cost_cents=25,
    ),
    "ours/usage_timeseries.json": lambda: UsageTimeseriesResponse(
        interval="week",
        start_date=_at("2024-01-01T00:00:00"),
        end_date=None,
        data=[
            UsagePoint(
                period_start=_at("2024-01-01T00:00:00"),
                total_events=120,
                total_tokens=96_000,
                total_input_tokens=80_000,
                total_output_tokens=16_000,
                total_cost_cents=210,
            ),
            UsagePoint(
                period_start=_at("2024-01-15T00:00:00"),
                total_events=7,
                total_tokens=5600,
                total_input_tokens=5000,
                total_output_tokens=600,
                total_cost_cents=12.25,
            ),
        ],
    ),
}


# --- the table: fixture -> model ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One wire example: a file under ``golden/`` (``#key`` picks one body of a keyed file)."""

    name: str
    model: type[BaseModel]

    @property
    def path(self) -> Path:
        return GOLDEN / self.name.partition("#")[0]

    def raw(self) -> Any:
        assert self.path.is_file(), f"golden file {self.path} is missing"
        data = json.loads(self.path.read_text(encoding="utf-8"))
        _, _, key = self.name.partition("#")
        return data[key] if key else data

    def build(self) -> BaseModel:
        return BUILDERS[self.name]()


CASES = [
    # hosted reference copies
    Case("customer_usage.json", CustomerUsageResponse),
    Case("errors.json#bad_request", ErrorBody),
    Case("errors.json#unauthorized", ErrorBody),
    Case("errors.json#not_found", ErrorBody),
    Case("event_ingest_request.json", TrackPostRequest),
    Case("event_ingest_response.json", EventIngestResponse),
    Case("quota.json", Quota),
    Case("quota_create.json", QuotaCreate),
    Case("quota_list.json", Page[Quota]),
    Case("rate_limit.json", RateLimit),
    Case("rate_limit_create.json", RateLimitCreate),
    # ours
    Case("ours/customer_usage_fractional.json", CustomerUsageResponse),
    Case("ours/error_body.json", ErrorBody),
    Case("ours/event.json", Event),
    Case("ours/event_batch_request.json", EventBatchRequest),
    Case("ours/event_batch_response.json", EventBatchResponse),
    Case("ours/event_list.json", Page[Event]),
    Case("ours/quota_check_request.json", QuotaCheckRequest),
    Case("ours/quota_check_response.json", QuotaCheckResponse),
    Case("ours/quota_check_response_hosted.json", QuotaCheckResponse),
    Case("ours/quota_create_cost.json", QuotaCreate),
    Case("ours/quota_create_minimal.json", QuotaCreate),
    Case("ours/quota_create_per.json", QuotaCreate),
    Case("ours/quota_list_last_page.json", Page[Quota]),
    Case("ours/quota_per.json", Quota),
    Case("ours/quota_status.json", QuotaStatus),
    Case("ours/quota_alert.json", QuotaAlert),
    Case("ours/quota_alert_create.json", QuotaAlertCreate),
    Case("ours/quota_alert_update.json", QuotaAlertUpdate),
    Case("ours/quota_alert_updated.json", QuotaAlert),
    Case("ours/quota_alert_list.json", Page[QuotaAlert]),
    Case("ours/quota_alert_log.json", QuotaAlertLog),
    Case("ours/quota_update.json", QuotaUpdate),
    Case("ours/quota_update_full.json", QuotaUpdate),
    Case("ours/rate_limit_check_request.json", RateLimitCheckRequest),
    Case("ours/rate_limit_check_response.json", RateLimitCheckResponse),
    Case("ours/rate_limit_create_minimal.json", RateLimitCreate),
    Case("ours/rate_limit_create_tokens.json", RateLimitCreate),
    Case("ours/rate_limit_create_window.json", RateLimitCreate),
    Case("ours/rate_limit_list.json", Page[RateLimit]),
    Case("ours/rate_limit_per.json", RateLimit),
    Case("ours/rate_limit_status.json", RateLimitStatus),
    Case("ours/rate_limit_update.json", RateLimitUpdate),
    Case("ours/rate_limit_update_full.json", RateLimitUpdate),
    Case("ours/track_denied_quota.json", TrackDeniedResponse),
    Case("ours/track_denied_rate_limit.json", TrackDeniedResponse),
    Case("ours/track_request_computed_total.json", TrackPostRequest),
    Case("ours/track_request_empty_properties.json", TrackPostRequest),
    Case("ours/track_request_full.json", TrackPostRequest),
    Case("ours/track_request_minimal.json", TrackPostRequest),
    Case("ours/track_request_null_model.json", TrackPostRequest),
    Case("ours/track_request_timestamp_ms.json", TrackPostRequest),
    Case("ours/track_request_zeros.json", TrackPostRequest),
    Case("ours/track_response.json", TrackPostResponse),
    Case("ours/track_response_unmatched.json", TrackPostResponse),
    Case("ours/track_response_failed_open.json", TrackPostResponse),
    Case("ours/failed_open.json", FailedOpen),
    Case("ours/rate_limit_fail_open.json", RateLimit),
    Case("ours/usage_breakdown.json", UsageBreakdownResponse),
    Case("ours/usage_breakdown_unbounded.json", UsageBreakdownResponse),
    Case("ours/usage_group.json", UsageGroup),
    Case("ours/usage_point.json", UsagePoint),
    Case("ours/usage_timeseries.json", UsageTimeseriesResponse),
    Case("ours/delete_response.json", DeleteResponse),
    Case("ours/project.json", Project),
    Case("ours/quotas_check_request_hosted.json", QuotasCheckRequest),
    Case("ours/rate_limits_check_request_hosted.json", RateLimitsCheckRequest),
    Case("ours/usage_summary.json", UsageSummary),
    Case("ours/usage_breakdown_hosted.json", UsageBreakdown),
    Case("ours/usage_breakdown_item.json", UsageBreakdownItem),
    Case("ours/usage_timeseries_hosted.json", UsageTimeseries),
    Case("ours/usage_timeseries_item.json", UsageTimeseriesItem),
]

each_case = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])


def _exact(value: Any) -> str:
    """Canonical JSON text: equal only when keys, values *and* number forms (25 vs 25.0) agree."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _wire(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


# --- (a) wire -> model -> wire ----------------------------------------------------------------


@each_case
def test_fixture_reads_and_writes_back_unchanged(case: Case) -> None:
    raw = case.raw()
    model = case.model.model_validate(raw)
    assert type(model) is case.model
    assert _wire(model) == raw
    assert _exact(_wire(model)) == _exact(raw)
    # The JSON serializer writes the same document as the python-mode dump.
    assert _exact(json.loads(model.model_dump_json())) == _exact(raw)


@each_case
def test_fixture_text_reads_like_the_parsed_fixture(case: Case) -> None:
    # model_validate_json takes a different parsing path (strings become datetimes there).
    text = json.dumps(case.raw())
    assert case.model.model_validate_json(text) == case.model.model_validate(case.raw())


# --- (b) Python -> wire -----------------------------------------------------------------------


@each_case
def test_model_built_from_snake_case_kwargs_dumps_the_fixture(case: Case) -> None:
    built = case.build()
    assert type(built) is case.model
    raw = case.raw()
    assert _wire(built) == raw
    assert _exact(_wire(built)) == _exact(raw)
    assert built == case.model.model_validate(raw)


# --- (c) JSON text round trip -------------------------------------------------------------------


@each_case
def test_dump_json_then_validate_json_is_an_equal_model(case: Case) -> None:
    model = case.model.model_validate(case.raw())
    again = case.model.model_validate_json(model.model_dump_json())
    assert again == model
    assert _exact(_wire(again)) == _exact(case.raw())


# --- camelCase keys only ------------------------------------------------------------------------


def _models_within(model: BaseModel) -> Iterator[BaseModel]:
    """The model and every model nested in its fields (directly or in lists)."""
    yield model
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, BaseModel):
                yield from _models_within(item)


@each_case
def test_every_dumped_field_name_is_camel_case(case: Case) -> None:
    # Field names only: data keys (properties, dimensionFilters, dimensions) are the user's own.
    for model in _models_within(case.model.model_validate(case.raw())):
        if isinstance(model, RootModel):
            continue  # the hosted check bodies: every key is the caller's own data
        aliases = {field.alias or name for name, field in type(model).model_fields.items()}
        dumps = (
            model.model_dump(mode="json", by_alias=True),
            model.model_dump(mode="json"),  # serialize_by_alias makes camelCase the default
            json.loads(model.model_dump_json()),
        )
        for dumped in dumps:
            for key in dumped:
                assert CAMEL.match(key), f"{type(model).__name__} dumps {key!r}"
                assert key in aliases, f"{type(model).__name__} dumps unknown {key!r}"


# --- coverage: every model, every file ----------------------------------------------------------


def _public_models() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    for name in limitry_local.__all__:
        obj = getattr(limitry_local, name)
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not Page:
            found.add(obj)
    return found


def test_every_public_model_has_a_golden_fixture() -> None:
    covered = {case.model for case in CASES}
    missing = sorted(model.__name__ for model in _public_models() - covered)
    assert not missing, f"public models without a golden fixture: {missing}"


def test_every_list_shape_has_a_golden_page() -> None:
    pages = {
        case.model for case in CASES if case.model.__pydantic_generic_metadata__["origin"] is Page
    }
    assert {Page[Quota], Page[RateLimit], Page[Event]} <= pages


def test_table_and_builders_and_files_agree() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert set(names) == set(BUILDERS)
    on_disk = {path.relative_to(GOLDEN).as_posix() for path in GOLDEN.rglob("*.json")}
    in_table = {case.name.partition("#")[0] for case in CASES}
    assert on_disk == in_table


def test_keyed_fixture_files_are_covered_key_by_key() -> None:
    keyed: dict[str, set[str]] = {}
    for case in CASES:
        file, _, key = case.name.partition("#")
        if key:
            keyed.setdefault(file, set()).add(key)
    for file, keys in keyed.items():
        assert set(json.loads((GOLDEN / file).read_text(encoding="utf-8"))) == keys


def test_readme_says_where_each_file_comes_from() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    for path in sorted(GOLDEN.rglob("*.json")):
        name = path.relative_to(GOLDEN).as_posix()
        entries = [line for line in lines if line.startswith(f"- `{name}`:")]
        assert len(entries) == 1, f"README.md must describe {name} on exactly one line"
        hosted = "/" not in name
        expected = "hosted reference (copy)" if hosted else "ours"
        assert expected in entries[0], f"{name}: README should say {expected!r}"


# --- the request rule: a request dumps the fields it was given, and only those -------------

REQUEST_MODELS = {
    TrackPostRequest,
    QuotaCreate,
    QuotaUpdate,
    QuotaAlertCreate,
    QuotaAlertUpdate,
    RateLimitCreate,
    RateLimitUpdate,
    QuotaCheckRequest,
    RateLimitCheckRequest,
    EventBatchRequest,
}


def test_exactly_the_request_models_follow_the_request_rule() -> None:
    requests = {model for model in _public_models() if issubclass(model, RequestModel)}
    assert requests == REQUEST_MODELS


def _all_dumps(model: BaseModel) -> list[Any]:
    return [
        _wire(model),
        model.model_dump(mode="json"),  # camelCase is the default
        json.loads(model.model_dump_json()),
    ]


GIVEN: list[tuple[str, Callable[[], BaseModel], dict[str, Any]]] = [
    (
        "track-required-only",
        lambda: TrackPostRequest(customer_id="c", event_type="e"),
        {"customerId": "c", "eventType": "e"},
    ),
    (
        "track-zeros-null-and-empty",
        lambda: TrackPostRequest(
            customer_id="c", event_type="e", model=None, latency_ms=0, cost_cents=0, properties={}
        ),
        {
            "customerId": "c",
            "eventType": "e",
            "model": None,
            "latencyMs": 0,
            "costCents": 0,
            "properties": {},
        },
    ),
    (
        "quota-create-required-only",
        lambda: QuotaCreate(name="q", metric="total_events", limit_value=5, period="day"),
        {"name": "q", "metric": "total_events", "limitValue": 5, "period": "day"},
    ),
    (
        "quota-create-defaults-given",
        lambda: QuotaCreate(
            name="q",
            dimension_filters={},
            metric="total_events",
            limit_value=5,
            period="day",
            per=[],
        ),
        {
            "name": "q",
            "dimensionFilters": {},
            "metric": "total_events",
            "limitValue": 5,
            "period": "day",
            "per": [],
        },
    ),
    (
        "rate-limit-create-required-only",
        lambda: RateLimitCreate(name="r", limit_value=1, window="second"),
        {"name": "r", "limitValue": 1, "window": "second"},
    ),
    (
        "rate-limit-create-defaults-given",
        lambda: RateLimitCreate(
            name="r",
            dimension_filters={},
            limit_value=1,
            window="second",
            enabled=True,
            per=[],
            metric="total_events",
        ),
        {
            "name": "r",
            "dimensionFilters": {},
            "limitValue": 1,
            "window": "second",
            "enabled": True,
            "per": [],
            "metric": "total_events",
        },
    ),
    ("quota-update-nothing", QuotaUpdate, {}),
    ("quota-update-explicit-null", lambda: QuotaUpdate(name=None), {"name": None}),
    (
        "rate-limit-update-one-default-like-value",
        lambda: RateLimitUpdate(enabled=True),
        {"enabled": True},
    ),
    (
        "quota-check-empty-dimensions",
        lambda: QuotaCheckRequest(dimensions={}),
        {"dimensions": {}},
    ),
    (
        "rate-limit-check",
        lambda: RateLimitCheckRequest(dimensions={"customer_id": "c"}),
        {"dimensions": {"customer_id": "c"}},
    ),
    (
        "batch-of-minimal-events",
        lambda: EventBatchRequest(
            events=[
                TrackPostRequest(customer_id="c", event_type="e"),
                TrackPostRequest(customer_id="d", event_type="e", properties={}),
            ]
        ),
        {
            "events": [
                {"customerId": "c", "eventType": "e"},
                {"customerId": "d", "eventType": "e", "properties": {}},
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("build", "expected"), [(b, e) for _, b, e in GIVEN], ids=[name for name, _, _ in GIVEN]
)
def test_request_built_from_kwargs_dumps_only_the_given_fields(
    build: Callable[[], BaseModel], expected: dict[str, Any]
) -> None:
    request = build()
    for dumped in _all_dumps(request):
        assert _exact(dumped) == _exact(expected)
    # The dump, read back, is the same request and dumps the same again.
    again = type(request).model_validate(expected)
    assert again == request
    assert _exact(_wire(again)) == _exact(expected)


def test_request_changed_after_construction_dumps_the_change() -> None:
    event = TrackPostRequest(customer_id="c", event_type="e")
    event.properties["team"] = "a"  # mutating a default counts as giving it
    event.model = "gpt-4"  # so does assigning
    expected = {"customerId": "c", "eventType": "e", "model": "gpt-4", "properties": {"team": "a"}}
    for dumped in _all_dumps(event):
        assert _exact(dumped) == _exact(expected)

    quota = QuotaCreate(name="q", metric="total_events", limit_value=5, period="day")
    quota.dimension_filters["customer_id"] = "cust_1"
    quota.per.append("feature")
    assert _wire(quota) == {
        "name": "q",
        "dimensionFilters": {"customer_id": "cust_1"},
        "metric": "total_events",
        "limitValue": 5,
        "period": "day",
        "per": ["feature"],
    }

    limit = RateLimitCreate(name="r", limit_value=1, window="second")
    limit.enabled = False
    assert _wire(limit) == {"name": "r", "limitValue": 1, "window": "second", "enabled": False}

    batch = EventBatchRequest(events=[TrackPostRequest(customer_id="c", event_type="e")])
    batch.events[0].properties["team"] = "a"
    assert _wire(batch) == {
        "events": [{"customerId": "c", "eventType": "e", "properties": {"team": "a"}}]
    }


def test_computed_total_tokens_is_readable_but_not_dumped() -> None:
    computed = TrackPostRequest(customer_id="c", event_type="e", input_tokens=120, output_tokens=30)
    assert computed.total_tokens == 150
    sent = {"customerId": "c", "eventType": "e", "inputTokens": 120, "outputTokens": 30}
    for dumped in _all_dumps(computed):
        assert _exact(dumped) == _exact(sent)
    # Read back from its own dump it computes the total again, and still leaves it out.
    again = TrackPostRequest.model_validate_json(computed.model_dump_json())
    assert again.total_tokens == 150
    assert _exact(_wire(again)) == _exact(sent)
    # Inside a batch as well.
    batch = EventBatchRequest(events=[computed])
    assert batch.events[0].total_tokens == 150
    assert _exact(_wire(batch)) == _exact({"events": [sent]})


@pytest.mark.parametrize(
    "build",
    [
        lambda: TrackPostRequest(
            customer_id="c", event_type="e", input_tokens=120, output_tokens=30, total_tokens=150
        ),
        lambda: TrackPostRequest.model_validate(
            {
                "customerId": "c",
                "eventType": "e",
                "inputTokens": 120,
                "outputTokens": 30,
                "totalTokens": 150,
            }
        ),
    ],
    ids=["kwargs", "wire"],
)
def test_explicit_total_tokens_is_dumped_even_when_it_equals_the_sum(
    build: Callable[[], TrackPostRequest],
) -> None:
    explicit = build()
    assert explicit.total_tokens == 150
    for dumped in _all_dumps(explicit):
        assert _exact(dumped) == _exact(
            {
                "customerId": "c",
                "eventType": "e",
                "inputTokens": 120,
                "outputTokens": 30,
                "totalTokens": 150,
            }
        )


def test_total_tokens_assigned_after_a_computed_one_is_dumped() -> None:
    event = TrackPostRequest(customer_id="c", event_type="e", input_tokens=120, output_tokens=30)
    event.total_tokens = 200
    assert _wire(event)["totalTokens"] == 200


# --- response models dump every field (our additions only when set) ----------------------------


def test_response_quota_dumps_every_field_including_defaults() -> None:
    quota = Quota(
        id="qta_1",
        project_id="proj_xyz",
        name="q",
        metric="total_events",
        limit_value=5,
        period="day",
        created_at=T0,
        updated_at=T0,
    )
    expected = {
        "id": "qta_1",
        "projectId": "proj_xyz",
        "name": "q",
        "dimensionFilters": {},
        "metric": "total_events",
        "limitValue": 5,
        "period": "day",
        "createdAt": "2024-01-15T10:30:00Z",
        "updatedAt": "2024-01-15T10:30:00Z",
    }
    for dumped in _all_dumps(quota):
        assert _exact(dumped) == _exact(expected)
    # ``per`` is ours: left out while empty, even when given empty; written once set.
    assert "per" not in _wire(quota.model_copy(update={"per": []}))
    assert _wire(quota.model_copy(update={"per": ["customer_id"]}))["per"] == ["customer_id"]


def test_response_event_dumps_every_field_including_nulls() -> None:
    event = Event(id="evt_1", created_at=T0)
    expected: dict[str, Any] = {
        "id": "evt_1",
        "createdAt": "2024-01-15T10:30:00Z",
        "customerId": None,
        "eventType": None,
        "model": None,
        "provider": None,
        "inputTokens": None,
        "outputTokens": None,
        "totalTokens": None,
        "latencyMs": None,
        "costCents": None,
        "properties": {},
    }
    for dumped in _all_dumps(event):
        assert _exact(dumped) == _exact(expected)


def test_response_rate_limit_dumps_defaults_but_not_our_additions() -> None:
    limit = RateLimit(
        id="rl_1",
        project_id="proj_xyz",
        name="r",
        limit_value=1,
        window="second",
        created_at=T0,
        updated_at=T0,
    )
    assert _wire(limit) == {
        "id": "rl_1",
        "projectId": "proj_xyz",
        "name": "r",
        "dimensionFilters": {},
        "limitValue": 1,
        "window": "second",
        "enabled": True,
        "createdAt": "2024-01-15T10:30:00Z",
        "updatedAt": "2024-01-15T10:30:00Z",
    }


def test_quota_status_reset_is_ours_and_left_out_when_none() -> None:
    fields: dict[str, Any] = {
        "id": "qta_1",
        "name": "q",
        "metric": "total_events",
        "period": "day",
        "limit": 5,
        "used": 1,
        "remaining": 4,
        "exceeded": False,
    }
    assert QuotaStatus(**fields).reset is None
    assert "reset" not in _wire(QuotaStatus(**fields))
    assert _wire(QuotaStatus(**fields, reset=1705363200))["reset"] == 1705363200


# --- datetimes: UTC "Z", milliseconds when whole, microseconds otherwise -----------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (T0, "2024-01-15T10:30:00Z"),
        (T0.replace(microsecond=123_000), "2024-01-15T10:30:00.123Z"),
        (T0.replace(microsecond=1_000), "2024-01-15T10:30:00.001Z"),
        (T0.replace(microsecond=123_456), "2024-01-15T10:30:00.123456Z"),
        (T0.replace(microsecond=500), "2024-01-15T10:30:00.000500Z"),
        (
            datetime.fromisoformat("2024-01-15T12:30:00.250+02:00"),
            "2024-01-15T10:30:00.250Z",
        ),
    ],
    ids=["whole-seconds", "milliseconds", "one-millisecond", "microseconds", "sub-ms", "offset"],
)
def test_datetimes_are_written_in_utc_with_the_shortest_exact_fraction(
    value: datetime, text: str
) -> None:
    request = TrackPostRequest(customer_id="c", event_type="e", timestamp=value)
    response = Event(id="evt_1", created_at=value)
    for dumped in _all_dumps(request):
        assert dumped["timestamp"] == text
    for dumped in _all_dumps(response):
        assert dumped["createdAt"] == text
    # The text reads back as the same instant.
    assert TrackPostRequest.model_validate_json(request.model_dump_json()).timestamp == value
    assert Event.model_validate_json(response.model_dump_json()).created_at == value


# --- known gaps: hosted shapes that do not round-trip (kept red-on-fix by strict xfail) --------


def _gap(
    name: str, model: type[BaseModel], raw: dict[str, Any], reason: str, error: type[Exception]
) -> Any:
    return pytest.param(
        model, raw, id=name, marks=pytest.mark.xfail(reason=reason, raises=error, strict=True)
    )


KNOWN_GAPS = [
    _gap(
        "timestamp-zero-milliseconds",
        Quota,
        {
            "id": "qta_abc123",
            "projectId": "proj_xyz",
            "name": "Daily Token Limit",
            "dimensionFilters": {},
            "metric": "total_tokens",
            "limitValue": 100000,
            "period": "day",
            "createdAt": "2024-01-15T10:30:00.000Z",
            "updatedAt": "2024-01-15T10:30:00.000Z",
        },
        "deliberate normalisation: JavaScript toISOString() writes .000Z; the models read it as"
        " the same instant and write 2024-01-15T10:30:00Z, without the fraction",
        AssertionError,
    ),
]


@pytest.mark.parametrize(("model", "raw"), KNOWN_GAPS)
def test_known_gap_round_trip(model: type[BaseModel], raw: dict[str, Any]) -> None:
    assert _exact(_wire(model.model_validate(raw))) == _exact(raw)


def test_zero_milliseconds_read_as_the_same_instant() -> None:
    # The one known gap loses only the spelling, never the time.
    hosted = {**_wire(_hosted_quota()), "createdAt": "2024-01-15T10:30:00.000Z"}
    quota = Quota.model_validate(hosted)
    assert quota.created_at == T0
    assert _wire(quota) == _wire(_hosted_quota())
