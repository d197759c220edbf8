"""The served OpenAPI document, fuzzed with schemathesis: no 5xx, every answer as documented.

schemathesis reads ``/openapi.json`` from a running server and, for every
operation, sends requests generated from its schemas (valid ones and
boundary cases), checking each answer against the document: its status is
listed, its body matches the schema, its headers and content type are the
documented ones, and it is never a server error.  Bounded (a few examples
per operation) so the whole run stays under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from limitry_local import Tracker
from limitry_local.server import create_app
from limitry_local.server.envelope1 import is_limitry1
from limitry_local.server.openapi import OPERATIONS, Operation, document
from tests.server.conftest import API_KEY, Server, running

MAX_EXAMPLES = 15
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("fuzz") / "fuzz.db") as server:
        with httpx.Client(base_url=server.url, headers=AUTH) as client:
            # Something for the reads to find: a limit of each kind, an alert, events.
            quota = client.post(
                "/quotas",
                json={"name": "q", "metric": "total_tokens", "limitValue": 50, "period": "day"},
            ).json()
            client.post(f"/quotas/{quota['id']}/alerts", json={"threshold": 10})
            client.post("/rate-limits", json={"name": "r", "limitValue": 1000, "window": "1h"})
            client.post("/track", json={"customerId": "c", "eventType": "e", "inputTokens": 9})
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_server.root}/openapi.json")


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.operation_id)
def test_every_answer_matches_the_document(
    api_schema: schemathesis.BaseSchema, operation: Operation
) -> None:
    # One hypothesis run per operation, on the strategy schemathesis derives
    # from the served document (its pytest plugin does the same, per test).
    served = api_schema[operation.path][operation.method]

    @given(case=served.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    fuzz()


def test_the_document_describes_every_route_the_app_serves() -> None:
    """Every v0 route; the 1.0 API's are the SDK's to describe (envelope1.is_limitry1)."""

    with Tracker() as tracker:
        app = create_app(tracker)
    served = set()
    for route in app.routes:
        assert isinstance(route, Route) and route.methods is not None
        if route.path.startswith("/v1/") and not is_limitry1(route.path, ""):
            for method in route.methods - {"HEAD"}:
                served.add((method.lower(), _camel_params(route.path)))
    documented = {(op.method, op.path) for op in OPERATIONS}
    assert served == documented


def _camel_params(path: str) -> str:
    """``{quota_id}`` as the document names it, ``{quotaId}``."""
    head, *rest = path.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def test_the_document_is_served_as_built(fuzzed_server: Server) -> None:
    served = httpx.get(f"{fuzzed_server.root}/openapi.json")
    assert served.headers["content-type"] == "application/json"
    assert served.json() == document()
    assert served.json()["openapi"] == "3.1.0"
