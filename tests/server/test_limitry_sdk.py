"""The served Limitry 1.0 API driven by the real ``limitry`` 1.0 SDK against a real server.

One ``limitry-local serve`` process for the module (tests use distinct
subjects and limits, so they do not interfere); every call goes through
``limitry.Limitry`` or ``limitry.AsyncLimitry`` as a product's code makes it,
so what is asserted is what the SDK reads: decisions, remaining counts, and
for failures the ``ApiError`` status and code it takes from the 1.0 envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import limitry
import pytest

from tests.server.conftest import API_KEY, Server, running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("limitry1") / "ledger.db") as started:
        yield started


@pytest.fixture
def sdk(server: Server) -> Iterator[limitry.Limitry]:
    # No retries: a failure must surface as the first answer, not after backoff.
    with limitry.Limitry(token=API_KEY, api=server.root, max_retries=0) as client:
        yield client


def _raises(call: Callable[[], Any]) -> limitry.ApiError:
    with pytest.raises(limitry.ApiError) as caught:
        call()
    return caught.value


# Every call of the SDK's account resources, with what it needs to be made.
ACCOUNT_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("user.me", lambda c: c.user.me()),
    ("user.revoke_token", lambda c: c.user.revoke_token()),
    ("workspace.get", lambda c: c.workspace.get()),
    ("workspace.usage", lambda c: c.workspace.usage()),
    ("workspace.members.list", lambda c: c.workspace.members.list(limit=5)),
    ("workspace.invitations.list", lambda c: c.workspace.invitations.list()),
    ("workspace.teams.list", lambda c: c.workspace.teams.list()),
    ("workspace.audit_events.list", lambda c: c.workspace.audit_events.list(cursor="x")),
    ("workspace.event_types.list", lambda c: c.workspace.event_types.list()),
    ("workspace.approval_actions.list", lambda c: c.workspace.approval_actions.list()),
    (
        "workspace.approval_requests.create",
        lambda c: c.workspace.approval_requests.create(action="a", input={}, reason="r"),
    ),
    ("workspace.approval_requests.get", lambda c: c.workspace.approval_requests.get("ar_1")),
    ("workspace.approval_requests.redeem", lambda c: c.workspace.approval_requests.redeem("a")),
    (
        "workspace.webhook_endpoints.create",
        lambda c: c.workspace.webhook_endpoints.create(url="https://example.com/hook"),
    ),
    ("workspace.webhook_endpoints.list", lambda c: c.workspace.webhook_endpoints.list()),
    ("workspace.webhook_endpoints.get", lambda c: c.workspace.webhook_endpoints.get("we_1")),
    ("workspace.webhook_endpoints.delete", lambda c: c.workspace.webhook_endpoints.delete("w")),
    ("workspace.webhook_endpoints.enable", lambda c: c.workspace.webhook_endpoints.enable("w")),
    ("workspace.webhook_endpoints.test", lambda c: c.workspace.webhook_endpoints.test("we_1")),
    ("workspace.webhook_deliveries.list", lambda c: c.workspace.webhook_deliveries.list("w")),
    (
        "workspace.webhook_deliveries.redeliver",
        lambda c: c.workspace.webhook_deliveries.redeliver("we_1", "wd_1"),
    ),
]


@pytest.mark.parametrize("call", [call for _, call in ACCOUNT_CALLS], ids=dict(ACCOUNT_CALLS))
def test_every_account_call_is_501_not_available_offline(
    sdk: limitry.Limitry, call: Callable[[Any], Any]
) -> None:
    error = _raises(lambda: call(sdk))
    assert (error.status, error.code) == (501, "not_available_offline")
    assert "account management, which limitry-local does not emulate" in error.message
    assert error.request_id is not None and error.request_id.startswith("req_")


def test_the_async_client_reads_the_501_alike(server: Server) -> None:
    async def ask() -> limitry.ApiError:
        async with limitry.AsyncLimitry(token=API_KEY, api=server.root) as client:
            with pytest.raises(limitry.ApiError) as caught:
                await client.workspace.teams.list()
            return caught.value

    error = asyncio.run(ask())
    assert (error.status, error.code) == (501, "not_available_offline")
    assert "/v1/workspace/teams (teams)" in error.message


def test_a_wrong_key_is_401_unauthorized_in_the_1_0_envelope(server: Server) -> None:
    with limitry.Limitry(token="sk_wrong", api=server.root, max_retries=0) as wrong:
        error = _raises(wrong.limits.list)
        assert (error.status, error.code) == (401, "unauthorized")
        assert error.message.startswith("Invalid or missing API key")
        # Before routing: even an account path is refused first.
        assert _raises(wrong.user.me).status == 401

    # v0 paths keep their own envelope, refused or not.
    v0 = httpx.get(f"{server.url}/quotas", headers={"Authorization": "Bearer sk_wrong"})
    assert (v0.status_code, v0.json()) == (401, {"error": "Invalid or missing API key"})
    summary = httpx.get(f"{server.url}/usage", headers={"Authorization": "Bearer sk_wrong"})
    assert summary.json() == {"error": "Invalid or missing API key"}
    query = httpx.get(f"{server.url}/usage", params={"limitId": "lim_x"})
    assert query.json()["error"]["code"] == "unauthorized"


def test_app_failures_on_1_0_paths_are_in_the_1_0_envelope(server: Server) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=auth) as http:
        bad_json = http.post("/checks", content=b"{not json")
        wrong_method = http.delete("/checks")
        no_route = http.get("/limits/lim_1/nothing-here")
        v0_no_route = http.get("/quotas/qta_1/nothing-here")

    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "invalid_request"
    assert bad_json.json()["error"]["message"].startswith("body: not valid JSON")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["Allow"] == "POST"
    assert no_route.status_code == 404
    assert no_route.json()["error"]["code"] == "not_found"
    assert v0_no_route.json() == {"error": "Resource not found"}
