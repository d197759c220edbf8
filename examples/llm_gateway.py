"""An LLM gateway with a free plan: the application whose limit logic the tests check.

Each customer gets ``requests_per_minute`` requests and ``daily_tokens``
model tokens a day.  A request is admitted by ``tracker.usage()`` (the
request rate); the model's tokens are known only after the call, so they
are recorded with ``tracker.events.ingest()``, which never denies: a call
that already happened must be counted, not refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from limitry_local import LimitExceeded, Tracker

ModelCall = Callable[[str], tuple[str, int, int]]
"""prompt -> (answer, input tokens, output tokens)."""


def echo_model(prompt: str) -> tuple[str, int, int]:
    """A stand-in model: answers the prompt reversed; a token is a word."""
    words = prompt.split()
    return " ".join(reversed(words)), len(words), 2 * len(words)


@dataclass(frozen=True)
class Reply:
    served: bool
    text: str
    tokens: int = 0
    retry_after: int | None = None
    """Seconds until the request rate allows another request."""
    resets_at: int | None = None
    """Unix second the spent daily budget starts again."""


class Gateway:
    def __init__(
        self,
        tracker: Tracker,
        *,
        requests_per_minute: int = 5,
        daily_tokens: int = 2_000,
        model: ModelCall = echo_model,
    ) -> None:
        self.tracker = tracker
        self.model = model
        tracker.rate_limits.create(
            name="free rpm",
            limit_value=requests_per_minute,
            window="minute",
            dimension_filters={"event_type": "request"},
            per=["customer_id"],
        )
        self.quota = tracker.quotas.create(
            name="free daily tokens",
            metric="total_tokens",
            limit_value=daily_tokens,
            period="day",
            dimension_filters={"event_type": "model_call"},
            per=["customer_id"],
        )

    def ask(self, customer_id: str, prompt: str) -> Reply:
        # 1. The request itself: denied when the customer is over their rate.
        try:
            self.tracker.usage(customer_id=customer_id, event_type="request")
        except LimitExceeded as denied:
            return Reply(False, "slow down", retry_after=denied.retry_after)
        # 2. Tokens: refuse when today's budget is already spent.
        check = self.tracker.quotas.check({"customer_id": customer_id, "event_type": "model_call"})
        if not check.allowed:
            return Reply(False, "daily budget spent", resets_at=check.quotas[0].reset)
        # 3. Call the model, then record what it really cost.
        answer, input_tokens, output_tokens = self.model(prompt)
        self.tracker.events.ingest(
            customer_id=customer_id,
            event_type="model_call",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        return Reply(True, answer, tokens=input_tokens + output_tokens)
