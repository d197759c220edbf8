"""The error hierarchy, shaped like the hosted client's.

``LimitryError`` > ``APIError(status, status_text, response)`` for any
answer the hosted API would give as non-2xx: ``InvalidRequestError`` (400),
``NotFoundError`` (404), ``ConflictError`` (409, ours), ``LimitExceeded``
(429).  ``DuplicateNameWarning`` is a warning, not an error.  A denied event is an
``APIError`` with status 429 (as in the hosted client), raised as
``RateLimitExceeded`` or ``QuotaExceeded`` so callers can tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    # The body's type only: the models raise this module's errors.
    from limitry_local.models import TrackDeniedResponse

M = TypeVar("M", bound=BaseModel)


class LimitryError(Exception):
    """Root of every error this library raises."""


LedgerErrorReason = Literal[
    "locked",
    "conflict",
    "read_only",
    "not_a_database",
    "corrupt",
    "cannot_open",
    "disk_full",
    "not_a_ledger",
    "schema_version",
    "overflow",
    "connection",
    "timeout",
    "io",
]


class LedgerError(LimitryError):
    """The ledger file cannot be opened or used: the message names the file, the cause
    and what to do.  ``.reason`` names the cause for code that reacts to it:
    ``"locked"``, ``"conflict"`` (a shared ledger chose this write to give way
    in a deadlock; nothing of it was kept, and running it again is safe),
    ``"read_only"``, ``"not_a_database"``, ``"corrupt"``,
    ``"cannot_open"``, ``"disk_full"``, ``"not_a_ledger"``, ``"schema_version"``,
    ``"overflow"`` (a quota counter would pass 2**63 - 1), ``"connection"``
    (a server ledger could not be reached, or the connection was lost) and
    ``"timeout"`` (the server did not answer in time), or ``"io"``.

    ``.in_doubt`` is True when the write's COMMIT was sent and no answer
    came: it may have been kept (a retry with the same idempotency key is
    recorded once).
    """

    def __init__(
        self, message: str, reason: LedgerErrorReason = "io", *, in_doubt: bool = False
    ) -> None:
        super().__init__(message)
        self.reason: LedgerErrorReason = reason
        self.in_doubt = in_doubt


class APIError(LimitryError):
    """What the hosted API would answer with a non-2xx status.

    ``.status`` / ``.status_code``, ``.status_text``, ``.message`` and
    ``.response`` (the JSON error body, ``{"error": message}``).
    """

    def __init__(self, status: int, status_text: str, response: dict[str, Any]) -> None:
        self.status = status
        self.status_text = status_text
        self.response = response
        self.message = str(response.get("error", status_text))
        super().__init__(f"{status} {status_text}: {self.message}")

    @property
    def status_code(self) -> int:
        return self.status


class InvalidRequestError(APIError, ValueError):
    """400: the input was not valid.  Also a ``ValueError``; ``.errors`` has pydantic's details."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(400, HTTPStatus.BAD_REQUEST.phrase, {"error": message})
        self.errors = errors or []

    @classmethod
    def from_validation(
        cls, exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = ""
    ) -> InvalidRequestError:
        """Name every bad field by its wire name: ``customerId: String should have ...``."""
        fields = model.model_fields if model is not None else {}
        parts = []
        for error in exc.errors(include_url=False):
            loc = list(error["loc"])
            field = fields.get(loc[0]) if loc and isinstance(loc[0], str) else None
            if field is not None and field.alias and error["type"] != "extra_forbidden":
                # A known field is named by its wire name whichever spelling came
                # in; an unknown key (even the other spelling of a field sent
                # twice) is named as it was sent.
                loc[0] = field.alias
            where = ".".join(str(part) for part in loc) or "body"
            parts.append(f"{prefix}{where}: {error['msg']}")
        details = [dict(e) for e in exc.errors(include_url=False, include_input=False)]
        return cls("; ".join(parts), details)


NOT_FOUND_BODY = "Resource not found"
"""The hosted API's 404 body says only this (``{"error": "Resource not found"}``)."""


class NotFoundError(APIError):
    """404: no quota, rate limit or alert with that id.

    ``.response`` is the hosted body, ``{"error": "Resource not found"}``, so
    code that reads it sees what the hosted client would; ``.message`` and
    ``str()`` keep the detail (``quota 'qta_x' not found``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(404, HTTPStatus.NOT_FOUND.phrase, {"error": NOT_FOUND_BODY})
        self.message = message
        self.args = (f"404 {self.status_text}: {message}",)


class ConflictError(APIError):
    """409: the request names something ambiguous, e.g. two limits share the name to ensure."""

    def __init__(self, message: str) -> None:
        super().__init__(409, HTTPStatus.CONFLICT.phrase, {"error": message})


class DuplicateNameWarning(UserWarning):
    """``create`` made a second quota or rate limit under a name already in the ledger.

    Both are enforced.  Usually start-up code ran again on a ledger file:
    ``ensure(...)`` or ``tracker.apply(...)`` create a limit once and keep it
    in step.  Turn it into an error with
    ``warnings.simplefilter("error", DuplicateNameWarning)``.
    """


class AuthenticationError(APIError):
    """401 (or 403) from the hosted service.  Never raised in process; importable for code
    that catches it, and constructible as the hosted client's: ``(message, status, response)``.
    """

    def __init__(
        self,
        message: str = "Invalid or missing API key",
        status: int = 401,
        response: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, HTTPStatus.UNAUTHORIZED.phrase, response or {"error": message})
        self.message = message


class NetworkError(LimitryError):
    """The hosted client's transport failure: ``NetworkError(message, cause=None)``.

    Never raised in process; importable for code written against the hosted client.
    """

    def __init__(self, message: str = "network error", cause: Exception | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


class LimitExceeded(APIError):
    """429: a rate limit or a quota denied the event.  Nothing was recorded or charged.

    ``.headers`` are the response headers (``Retry-After`` and the
    ``X-RateLimit-*`` / ``X-Quota-*`` set), ``.retry_after`` is whole seconds,
    ``.body`` is the 429 body as a :class:`TrackDeniedResponse`.
    """

    def __init__(self, body: TrackDeniedResponse, headers: dict[str, str], detail: str) -> None:
        super().__init__(429, HTTPStatus.TOO_MANY_REQUESTS.phrase, body.model_dump(mode="json"))
        self.body = body
        self.headers = headers
        self.retry_after = body.retry_after
        self.message = detail
        self.args = (f"429 {self.status_text}: {detail}",)


class BucketStoreFull(APIError):
    """503: the in-memory buckets are at ``max_buckets`` and every one is below capacity.

    Forgetting any of them would let its key admit past its limit, so the
    new key is refused instead: nothing was recorded or charged.
    ``.retry_after`` is whole seconds until the first held bucket is full
    again (and may be dropped); raising ``Tracker(max_buckets=...)`` above
    the number of keys active within one window avoids the refusal.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(503, HTTPStatus.SERVICE_UNAVAILABLE.phrase, {"error": message})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class RateLimitExceeded(LimitExceeded):
    """429 from a rate limit (token bucket)."""


class QuotaExceeded(LimitExceeded):
    """429 from a quota (calendar-period total)."""


# --- the Limitry 1.0 face (limitry_local.limitry), named as the 1.0 SDK names them ---


class ApiError(LimitryError):
    """A Limitry 1.0 call refused: its HTTP status, its error code and message.

    The 1.0 SDK's ``limitry.ApiError``, with the same attributes: 400
    ``invalid_request`` names the field, 404 ``not_found``, 409 ``conflict``.
    ``details`` lists each problem of a request that has several (a sync).
    """

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id: str | None = None

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r})"


class LimitReached(LimitryError):
    """A 1.0 check refused in ``guard`` or ``reserve``: ``limit_id`` names the limit,
    ``retry_after_seconds`` says when to try again (None: not by waiting)."""

    def __init__(self, decision: dict[str, Any]) -> None:
        reason = decision.get("reason") or {}
        super().__init__(reason.get("message") or "Refused")
        self.reason: str = reason.get("code") or "limit_reached"
        self.limit_id: str | None = reason.get("limitId")
        self.retry_after_seconds: int | None = decision.get("retryAfterSeconds")
        self.decision = decision


def is_text(value: str) -> bool:
    """Whether every ledger can store ``value``: UTF-8 text, no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_name(key: object) -> str:
    """A key as an error message names it: as sent, or quoted when empty or not valid text."""
    return key if isinstance(key, str) and key and is_text(key) else repr(key)


def parse(
    model: type[M], value: M | Mapping[str, Any] | None, fields: Mapping[str, Any], prefix: str = ""
) -> M:
    """Validate input into ``model``, turning pydantic's error into a 400 that names the field."""
    if value is not None and fields:
        raise InvalidRequestError("pass one model or dict, or keyword arguments, not both")
    # A dict is checked for first: the isinstance() checks against a model
    # class and against Mapping (abc) cost a visible share of parsing one.
    if type(value) is not dict and isinstance(value, model):
        # Revalidated: models are mutable, and a field set after construction
        # (``event.total_tokens = -5``) must not reach the ledger unchecked.
        try:
            value = value.model_dump(round_trip=True)
        except Exception as exc:  # a model_construct()-ed instance can fail in many ways
            raise InvalidRequestError(
                f"{prefix or 'body'}: not a valid {model.__name__}: {exc}"
            ) from None
    if value is None:
        value = fields
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidRequestError(
            f"{prefix or 'body'}: expected a {model.__name__} or a dict, got {type(value).__name__}"
        )
    try:
        # The validator itself, as model_validate() would call it with no
        # options: that wrapper's Python call is a sixth of validating an event.
        validated: M = model.__pydantic_validator__.validate_python(
            value if type(value) is dict else dict(value)
        )
    except ValidationError as exc:
        # Looked for only once validation failed (no valid request has such a
        # key): pydantic can only say "unable to parse raw data"; name the key,
        # escaped, since the message itself must be valid text.
        for key in value:
            if isinstance(key, str) and not is_text(key):
                raise InvalidRequestError(
                    f"{prefix}{key_name(key)}: field names must be valid Unicode text "
                    "(no lone surrogates)"
                ) from None
        raise InvalidRequestError.from_validation(exc, model, prefix) from None
    return validated
