"""limitry_local: Limitry-style usage tracking with enforcement, in process.

>>> from limitry_local import Tracker
>>> tracker = Tracker()
"""

from limitry_local.client import AsyncCustomers as Customers
from limitry_local.client import AsyncEvents as Events
from limitry_local.client import AsyncProject as Project
from limitry_local.client import AsyncQuotaAlerts as QuotaAlerts
from limitry_local.client import AsyncQuotas as Quotas
from limitry_local.client import AsyncRateLimits as RateLimits
from limitry_local.client import AsyncTrack as Track
from limitry_local.client import AsyncUsageReport as Usage
from limitry_local.client import Client, ClientConfig, collect_all, paginate_all
from limitry_local.denials import LimitStats, TrackerStats
from limitry_local.errors import (
    APIError,
    AuthenticationError,
    BucketStoreFull,
    ConflictError,
    DuplicateNameWarning,
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
from limitry_local.limits_as_code import LimitsConfig
from limitry_local.models import (
    CustomerUsageResponse,
    DeleteResponse,
    ErrorBody,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    FailedOpen,
    Page,
    PaginatedResponse,
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
from limitry_local.redis_buckets import RateLimitStoreError, RedisBuckets
from limitry_local.reservations import Guard, Reservation
from limitry_local.tracker import Tracker
from limitry_local.types import EventsBatchPostRequest, EventsPostRequest

__version__ = "0.2.0.dev0"

__all__ = [
    "APIError",
    "AuthenticationError",
    "BucketStoreFull",
    "Client",
    "ClientConfig",
    "ConflictError",
    "CustomerUsageResponse",
    "Customers",
    "DeleteResponse",
    "DuplicateNameWarning",
    "ErrorBody",
    "Event",
    "EventBatchRequest",
    "EventBatchResponse",
    "EventIngestResponse",
    "Events",
    "EventsBatchPostRequest",
    "EventsPostRequest",
    "FailedOpen",
    "Guard",
    "InvalidRequestError",
    "LedgerError",
    "LimitExceeded",
    "LimitStats",
    "LimitryError",
    "LimitsConfig",
    "NetworkError",
    "NotFoundError",
    "Page",
    "PaginatedResponse",
    "Project",
    "Quota",
    "QuotaAlert",
    "QuotaAlertCreate",
    "QuotaAlertLog",
    "QuotaAlertUpdate",
    "QuotaAlerts",
    "QuotaCheckRequest",
    "QuotaCheckResponse",
    "QuotaCreate",
    "QuotaExceeded",
    "QuotaStatus",
    "QuotaUpdate",
    "Quotas",
    "QuotasCheckRequest",
    "RateGate",
    "RateLimit",
    "RateLimitCheckRequest",
    "RateLimitCheckResponse",
    "RateLimitCreate",
    "RateLimitExceeded",
    "RateLimitStatus",
    "RateLimitStoreError",
    "RateLimitUpdate",
    "RateLimits",
    "RateLimitsCheckRequest",
    "RedisBuckets",
    "Reservation",
    "Track",
    "TrackDeniedResponse",
    "TrackPostRequest",
    "TrackPostResponse",
    "Tracker",
    "TrackerStats",
    "Usage",
    "UsageBreakdown",
    "UsageBreakdownItem",
    "UsageBreakdownResponse",
    "UsageGroup",
    "UsagePoint",
    "UsageSummary",
    "UsageTimeseries",
    "UsageTimeseriesItem",
    "UsageTimeseriesResponse",
    "__version__",
    "collect_all",
    "paginate_all",
]
