"""The OpenAPI 3.1 document of the served API, built from the wire models' JSON schemas.

Each operation is one row of :data:`OPERATIONS`: its request model, query
parameters, success status and answer model.  The schemas are pydantic's own
(``by_alias``: camelCase), requests as validated and answers as serialised,
so the document says what the routes read and write.  The tests fuzz the
served document with schemathesis: every answer must match it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, cast

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from limitry_local.analytics import GROUP_BYS, INTERVALS
from limitry_local.models import (
    CustomerUsageResponse,
    DeleteResponse,
    ErrorBody,
    Event,
    EventBatchRequest,
    EventBatchResponse,
    EventIngestResponse,
    Page,
    Project,
    Quota,
    QuotaAlert,
    QuotaAlertCreate,
    QuotaAlertLog,
    QuotaAlertUpdate,
    QuotaCheckRequest,
    QuotaCheckResponse,
    QuotaCreate,
    QuotaUpdate,
    RateLimit,
    RateLimitCheckRequest,
    RateLimitCheckResponse,
    RateLimitCreate,
    RateLimitUpdate,
    TrackDeniedResponse,
    TrackPostRequest,
    TrackPostResponse,
    UsageBreakdown,
    UsageSummary,
    UsageTimeseries,
)
from limitry_local.version import __version__

Location = Literal["query", "path"]


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    where: Location = "query"
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    answer: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    headers: dict[int, dict[str, bool]] = field(default_factory=dict)
    """Response headers by status: name -> always sent."""


_TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
_WHEN: dict[str, Any] = {
    "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]
}
_PAGE = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100}, description="1 to 100"),
    Param("cursor", _TEXT, description="nextCursor of the previous page"),
)
_RANGE = (
    Param("startDate", _WHEN, description="from this instant (a date: its 00:00 UTC)"),
    Param("endDate", _WHEN, description="before this instant (a date: through that day)"),
)
_FILTERS = (
    *_RANGE,
    Param("customerId", _TEXT),
    Param("eventType", _TEXT),
    Param("model", _TEXT),
    Param("provider", _TEXT),
)


def _id(name: str) -> Param:
    return Param(name, {"type": "string"}, where="path", required=True)


_RATE_HEADERS = {"X-RateLimit-Limit": False, "X-RateLimit-Remaining": False}
_RATE_HEADERS["X-RateLimit-Reset"] = False
_DENIED_HEADERS = {
    **_RATE_HEADERS,
    "Retry-After": True,
    "X-Quota-Reset": False,
    "X-Quota-Period": False,
    "X-Quota-Metric": False,
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post", "/v1/track", "trackUsage",
        "Check rate limits, check quotas, record the event (all or nothing)",
        TrackPostResponse, 201, TrackPostRequest,
        headers={201: _RATE_HEADERS, 429: _DENIED_HEADERS},
    ),
    Operation(
        "post", "/v1/events", "ingestEvent", "Record one event without enforcement",
        EventIngestResponse, 201, TrackPostRequest,
    ),
    Operation(
        "post", "/v1/events/batch", "ingestEventBatch",
        "Record 1 to 1000 events in one transaction; one bad event rejects the batch",
        EventBatchResponse, 201, EventBatchRequest,
    ),
    Operation(
        "get", "/v1/events", "listEvents", "Recorded events, newest first", Page[Event],
        params=(Param("customerId", _TEXT), Param("eventType", _TEXT), Param("model", _TEXT),
                *_RANGE, *_PAGE),
    ),
    Operation("get", "/v1/quotas", "listQuotas", "The quotas", Page[Quota], params=_PAGE),
    Operation("post", "/v1/quotas", "createQuota", "Create a quota", Quota, 201, QuotaCreate),
    Operation(
        "post", "/v1/quotas/check", "checkQuotas",
        "Where each quota matching these dimensions stands (consumes nothing)",
        QuotaCheckResponse, body=QuotaCheckRequest,
    ),
    Operation("get", "/v1/quotas/{quotaId}", "getQuota", "One quota", Quota,
              params=(_id("quotaId"),)),
    Operation("put", "/v1/quotas/{quotaId}", "updateQuota", "Change any of a quota's fields",
              Quota, body=QuotaUpdate, params=(_id("quotaId"),)),
    Operation("delete", "/v1/quotas/{quotaId}", "deleteQuota", "Delete a quota",
              DeleteResponse, params=(_id("quotaId"),)),
    Operation(
        "post", "/v1/quotas/{quotaId}/alerts", "createQuotaAlert",
        "Alert at a percentage of the quota's limit", QuotaAlert, 201, QuotaAlertCreate,
        params=(_id("quotaId"),),
    ),
    Operation("get", "/v1/quotas/{quotaId}/alerts", "listQuotaAlerts", "A quota's alerts",
              Page[QuotaAlert], params=(_id("quotaId"), *_PAGE)),
    Operation("get", "/v1/quota-alerts/{alertId}", "getQuotaAlert", "One alert", QuotaAlert,
              params=(_id("alertId"),)),
    Operation("put", "/v1/quota-alerts/{alertId}", "updateQuotaAlert",
              "Change an alert's threshold", QuotaAlert, body=QuotaAlertUpdate,
              params=(_id("alertId"),)),
    Operation("delete", "/v1/quota-alerts/{alertId}", "deleteQuotaAlert",
              "Stop an alert (what it fired stays recorded)", DeleteResponse,
              params=(_id("alertId"),)),
    Operation(
        "get", "/v1/quota-alerts/{alertId}/history", "getQuotaAlertHistory",
        "An alert's firings, newest first", Page[QuotaAlertLog], params=(_id("alertId"), *_PAGE),
    ),
    Operation("get", "/v1/rate-limits", "listRateLimits", "The rate limits", Page[RateLimit],
              params=_PAGE),
    Operation("post", "/v1/rate-limits", "createRateLimit", "Create a rate limit", RateLimit,
              201, RateLimitCreate),
    Operation(
        "post", "/v1/rate-limits/check", "checkRateLimits",
        "Whether a one-request event with these dimensions would pass (consumes nothing)",
        RateLimitCheckResponse, body=RateLimitCheckRequest,
    ),
    Operation("get", "/v1/rate-limits/{rateLimitId}", "getRateLimit", "One rate limit",
              RateLimit, params=(_id("rateLimitId"),)),
    Operation("put", "/v1/rate-limits/{rateLimitId}", "updateRateLimit",
              "Change any of a rate limit's fields", RateLimit, body=RateLimitUpdate,
              params=(_id("rateLimitId"),)),
    Operation("delete", "/v1/rate-limits/{rateLimitId}", "deleteRateLimit",
              "Delete a rate limit", DeleteResponse, params=(_id("rateLimitId"),)),
    Operation("get", "/v1/customers/{customerId}/usage", "getCustomerUsage",
              "A customer's totals over a range", CustomerUsageResponse,
              params=(_id("customerId"), *_RANGE)),
    Operation("get", "/v1/usage", "getUsage", "Totals of the matching events (the hosted path)",
              UsageSummary, params=_FILTERS),
    Operation("get", "/v1/usage/summary", "getUsageSummary",
              "Totals of the matching events (the same as GET /v1/usage)", UsageSummary,
              params=_FILTERS),
    Operation(
        "get", "/v1/usage/breakdown", "getUsageBreakdown", "Totals per value of a dimension",
        UsageBreakdown,
        params=(Param("groupBy", {"type": "string", "enum": list(GROUP_BYS)}, required=True),
                *_FILTERS),
    ),
    Operation(
        "get", "/v1/usage/timeseries", "getUsageTimeseries", "Totals per UTC hour, day or week",
        UsageTimeseries,
        params=(Param("interval", {"type": "string", "enum": list(INTERVALS)}, required=True),
                *_FILTERS),
    ),
    Operation("get", "/v1/project", "getProject", "The project the API key belongs to",
              Project),
)  # fmt: skip

_ERRORS = {
    400: "Invalid input: the message names the field",
    401: "Missing or wrong API key (when the server has one)",
    404: "No such resource",
    429: "A rate limit or a quota denied the event; nothing was recorded",
    503: "The ledger file stayed locked by another process; nothing was recorded, retry",
}


def _error_statuses(operation: Operation) -> list[int]:
    statuses = [400, 401]
    if any(param.where == "path" for param in operation.params):
        statuses.append(404)
    if operation.operation_id == "trackUsage":
        statuses.append(429)
    statuses.append(503)
    return statuses


def _schemas() -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], str], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    wanted.append((TrackDeniedResponse, "serialization"))
    for operation in OPERATIONS:
        if operation.body is not None:
            wanted.append((operation.body, "validation"))
        wanted.append((operation.answer, "serialization"))
    keys, top = models_json_schema(
        list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}"
    )
    refs: dict[tuple[type[BaseModel], JsonSchemaMode], str] = {
        (cast(type[BaseModel], model), mode): schema["$ref"]
        for (model, mode), schema in keys.items()
    }
    return refs, top.get("$defs", {})


def _headers(names: dict[str, bool]) -> dict[str, Any]:
    return {
        name: {"required": required, "schema": {"type": "string"}}
        for name, required in names.items()
    }


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": ref}}}


@cache
def document() -> dict[str, Any]:
    """The document as a dict (built once per process)."""
    refs, schemas = _schemas()
    error_ref = refs[(ErrorBody, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        success: dict[str, Any] = {
            "description": op.summary,
            "content": _json(refs[(op.answer, "serialization")]),
        }
        if op.status in op.headers:
            success["headers"] = _headers(op.headers[op.status])
        responses[str(op.status)] = success
        for status in _error_statuses(op):
            ref = refs[(TrackDeniedResponse, "serialization")] if status == 429 else error_ref
            error: dict[str, Any] = {"description": _ERRORS[status], "content": _json(ref)}
            if status in op.headers:
                error["headers"] = _headers(op.headers[status])
            elif status == 503:
                error["headers"] = _headers({"Retry-After": True})
            responses[str(status)] = error
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "responses": responses,
        }
        if op.params:
            operation["parameters"] = [
                {
                    "name": param.name,
                    "in": param.where,
                    "required": param.required,
                    "schema": param.schema,
                    **({"description": param.description} if param.description else {}),
                }
                for param in op.params
            ]
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": _json(refs[(op.body, "validation")]),
            }
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "limitry-local",
            "version": __version__,
            "description": "The hosted Limitry v0 REST API, served offline by limitry_local "
            "over a local ledger file (docs/server.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def document_bytes() -> bytes:
    """The document as the bytes ``GET /openapi.json`` answers."""
    return json.dumps(document(), separators=(",", ":")).encode()
