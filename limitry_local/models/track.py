"""``POST /track``: the request, the statuses of the limits it met, the 201 and the 429."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

from limitry_local.metrics import Metric
from limitry_local.models.wire import (
    MAX_AMOUNT,
    Amount,
    Cents,
    Name,
    Properties,
    RequestModel,
    Text,
    Timestamp,
    WireModel,
    is_empty,
    is_none,
)
from limitry_local.periods import Period


class TrackPostRequest(RequestModel):
    """One usage event, as sent to ``POST /track`` (and ``POST /events``).

    ``total_tokens`` reads as ``input_tokens + output_tokens`` when it was not
    sent (spec); the dump leaves it out, as the caller did.
    """

    customer_id: Name
    event_type: Name
    model: Text | None = None
    provider: Text | None = None
    input_tokens: Amount | None = None
    output_tokens: Amount | None = None
    total_tokens: Amount | None = Field(default=None, validate_default=True)
    latency_ms: Amount | None = None
    cost_cents: Cents | None = None
    properties: Properties = Field(default_factory=dict)
    idempotency_key: Name | None = None
    timestamp: Timestamp | None = None
    cached_input_tokens: Amount | None = None
    """Ours: input tokens the provider served from its prompt cache, a part of
    ``input_tokens`` (recorded on the event; no limit counts it yet)."""

    def _derived(self) -> set[str]:
        # A total the caller did not send was computed by _default_total.  One
        # sent as an explicit null is written back as that computed total: the
        # hosted API reads both the same way, and telling them apart would cost
        # every request a slower validator.
        return {"total_tokens"}

    @field_validator("total_tokens", mode="after")
    @classmethod
    def _default_total(cls, value: int | None, info: ValidationInfo) -> int | None:
        # Runs for an absent totalTokens too (validate_default), so an
        # overflowing sum is reported as totalTokens, the field it would fill.
        if value is not None:
            return value
        data = info.data
        inputs, outputs = data.get("input_tokens"), data.get("output_tokens")
        if inputs is None and outputs is None:
            return None
        total = (inputs or 0) + (outputs or 0)
        if total > MAX_AMOUNT:
            raise ValueError(f"inputTokens + outputTokens exceeds {MAX_AMOUNT}")
        return total

    @field_validator("cached_input_tokens", mode="after")
    @classmethod
    def _cached_within_input(cls, value: int | None, info: ValidationInfo) -> int | None:
        inputs = info.data.get("input_tokens")
        if value is not None and inputs is not None and value > inputs:
            raise ValueError(f"cachedInputTokens ({value}) is more than inputTokens ({inputs})")
        return value


class RateLimitStatus(WireModel):
    id: str
    name: str
    limit: int
    remaining: int
    reset: int
    window: str
    exceeded: bool


class QuotaStatus(WireModel):
    id: str
    name: str
    metric: Metric
    period: Period
    limit: int
    used: float | int
    remaining: float | int
    # Ours: the hosted quota check answers without it; we always fill it in.
    reset: int | None = Field(default=None, exclude_if=is_none)
    exceeded: bool


class FailedOpen(WireModel):
    """Ours: a limit the event passed unchecked, its store being unreachable (``failMode: open``).

    ``reason`` is the store error's: ``connection`` or ``timeout``.
    """

    id: str
    name: str
    kind: Literal["rate_limit", "quota"]
    reason: str


class TrackPostResponse(WireModel):
    """The 201 body.  ``.headers`` holds the rate-limit headers (not part of the body).

    ``failedOpen`` (ours, written only when not empty) lists the limits the
    event passed unchecked because their store could not be reached.
    """

    id: str
    allowed: Literal[True] = True
    rate_limits: list[RateLimitStatus] = Field(default_factory=list)
    quotas: list[QuotaStatus] = Field(default_factory=list)
    failed_open: list[FailedOpen] = Field(default_factory=list, exclude_if=is_empty)
    _headers: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """The response headers the hosted API would send with this 201."""
        return self._headers


class TrackDeniedResponse(WireModel):
    """The 429 body."""

    error: Literal["Rate limit exceeded", "Quota exceeded"]
    allowed: Literal[False] = False
    rate_limits: list[RateLimitStatus] = Field(default_factory=list)
    quotas: list[QuotaStatus] = Field(default_factory=list)
    retry_after: int


# --- quotas -----------------------------------------------------------------
