"""limitry_local: Limitry-style usage tracking with enforcement, in process.

>>> from limitry_local import Tracker
>>> tracker = Tracker()
"""

from limitry_local.client import Client
from limitry_local.denials import LimitStats, TrackerStats
from limitry_local.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    LimitExceeded,
    LimitryError,
    NetworkError,
    NotFoundError,
    QuotaExceeded,
    RateLimitExceeded,
)
from limitry_local.gate import RateGate
from limitry_local.ledger import LedgerError
from limitry_local.models import (
    CustomerUsageResponse,
    ErrorBody,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    Page,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaCheckRequest,
    QuotaCheckResponse,
    QuotaCreate,
    QuotaStatus,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckRequest,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitStatus,
    RateLimitUpdate,
    TrackDeniedResponse,
    TrackPostRequest,
    TrackPostResponse,
    UsageBreakdownResponse,
    UsageGroup,
    UsagePoint,
    UsageTimeseriesResponse,
)
from limitry_local.redis_buckets import RateLimitStoreError, RedisBuckets
from limitry_local.reservations import Guard, Reservation
from limitry_local.tracker import Tracker

__version__ = "0.2.0.dev0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "Client",
    "CustomerUsageResponse",
    "ErrorBody",
    "Event",
    "EventBatchRequest",
    "EventBatchResponse",
    "EventIngestResponse",
    "Guard",
    "InvalidRequestError",
    "LedgerError",
    "LimitExceeded",
    "LimitStats",
    "LimitryError",
    "NetworkError",
    "NotFoundError",
    "Page",
    "Quota",
    "QuotaAlert",
    "QuotaAlertCreate",
    "QuotaAlertLog",
    "QuotaCheckRequest",
    "QuotaCheckResponse",
    "QuotaCreate",
    "QuotaExceeded",
    "QuotaStatus",
    "QuotaUpdate",
    "RateGate",
    "RateLimit",
    "RateLimitCheckRequest",
    "RateLimitCheckResponse",
    "RateLimitCreate",
    "RateLimitExceeded",
    "RateLimitStatus",
    "RateLimitStoreError",
    "RateLimitUpdate",
    "RedisBuckets",
    "Reservation",
    "TrackDeniedResponse",
    "TrackPostRequest",
    "TrackPostResponse",
    "Tracker",
    "TrackerStats",
    "UsageBreakdownResponse",
    "UsageGroup",
    "UsagePoint",
    "UsageTimeseriesResponse",
    "__version__",
]
