"""The served Limitry 1.0 API driven by the real ``limitry`` 1.0 SDK against a real server.

One ``limitry-local serve`` process for the module (each test puts its limits
on a subject kind of its own, so tests do not interfere); every call goes through
``limitry.Limitry`` or ``limitry.AsyncLimitry`` as a product's code makes it,
so what is asserted is what the SDK reads: decisions, remaining counts, and
for failures the ``ApiError`` status and code it takes from the 1.0 envelope.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import limitry
import pytest
from limitry.product import Subject

from limitry_local.limitry import Limitry as InProcess
from tests.server.conftest import API_KEY, Server, running

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LOCK_TIMEOUT = "0.5"
"""The server's ``--timeout``: how long a write waits for a lock the test holds."""


@pytest.fixture(scope="module", params=["sync", "async"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    """One server per client flavour: every test runs once through ``limitry.Limitry``
    and once through ``limitry.AsyncLimitry``, each on a ledger of its own."""
    db = tmp_path_factory.mktemp("limitry1") / "ledger.db"
    with running(db, "--timeout", LOCK_TIMEOUT) as started:
        yield started, request.param


@pytest.fixture(scope="module")
def server(served: tuple[Server, str]) -> Server:
    return served[0]


class Blocking:
    """An ``AsyncLimitry`` (or one of its resources) driven from plain test code: each
    call's coroutine is run to completion on the client's own event loop."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return Blocking(value, self._loop)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            return self._loop.run_until_complete(result) if inspect.isawaitable(result) else result

        return call


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """A plain HTTP client, for what the SDK does not show: statuses, headers, raw bodies."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30.0) as client:
        yield client


@pytest.fixture
def sdk(served: tuple[Server, str]) -> Iterator[Any]:
    """The served module's client: the sync SDK, or the async one behind :class:`Blocking`."""
    server, flavour = served
    # No retries: a failure must surface as the first answer, not after backoff.
    if flavour == "sync":
        with limitry.Limitry(token=API_KEY, api=server.root, max_retries=0) as client:
            yield client
        return
    loop = asyncio.new_event_loop()
    async_client = limitry.AsyncLimitry(token=API_KEY, api=server.root, max_retries=0)
    try:
        yield Blocking(async_client, loop)
    finally:
        loop.run_until_complete(async_client.aclose())
        loop.close()


@pytest.fixture
def sync_sdk(server: Server) -> Iterator[limitry.Limitry]:
    """The sync SDK, for its ``with`` helpers (the async ones have a test of their own)."""
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


def test_app_failures_on_1_0_paths_are_in_the_1_0_envelope(http: httpx.Client) -> None:
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
    archive = http.delete("/limits/lim_1")
    assert archive.status_code == 405
    assert archive.headers["Allow"] == "GET, HEAD, PATCH"
    assert archive.json()["error"]["message"].endswith("this path takes GET, HEAD, PATCH")
    assert no_route.status_code == 404
    assert no_route.json()["error"]["code"] == "not_found"
    assert v0_no_route.json() == {"error": "Resource not found"}


# --- the 1.0 calls, through the face -------------------------------------------------


def _limit(sdk: limitry.Limitry, kind: str, amount: int, **more: Any) -> dict[str, Any]:
    """A limit on every subject of ``kind``: the tests' kinds are their own."""
    window = more.pop("window", "day")
    return dict(sdk.limits.create(subject={"kind": kind}, amount=amount, window=window, **more))


def _check(sdk: limitry.Limitry, who: dict[str, str], action: str, **more: Any) -> Any:
    """A check's decision (the SDK types it optional)."""
    decision = sdk.checks.create(subject=who, action=action, **more)
    assert decision is not None
    return decision


def _remaining(sdk: limitry.Limitry, kind: str, subject_id: str) -> list[int]:
    standing = sdk.usage.standing(subject=f"{kind}:{subject_id}")
    return [limit["remaining"] for limit in standing["limits"]]


def test_checks_consume_preview_and_reserve(sdk: limitry.Limitry) -> None:
    limit = _limit(sdk, "consumer", 3, action="chat")
    who = {"kind": "consumer", "id": "c1"}

    preview = _check(sdk, who, "chat", cost=3, mode="preview")
    consumed = _check(sdk, who, "chat", cost=2)
    reserved = _check(sdk, who, "chat", mode="reserve", ttl_seconds=60)
    refused = _check(sdk, who, "chat")

    assert (preview["allowed"], preview["limits"][0]["remaining"]) == (True, 3)
    assert (consumed["allowed"], consumed["limits"][0]["remaining"]) == (True, 1)
    assert reserved["allowed"] is True and reserved["limits"][0]["remaining"] == 0
    assert reserved["reservation"]["status"] == "held"
    assert reserved["reservation"]["reserved"] == 1
    assert refused["allowed"] is False
    assert refused["reason"]["code"] == "limit_reached"
    assert refused["reason"]["limitId"] == limit["id"]
    assert refused["retryAfterSeconds"] >= 1
    # Another action is not limited; another consumer has its own window.
    assert _check(sdk, who, "search")["limits"] == []
    other = _check(sdk, {"kind": "consumer", "id": "c2"}, "chat")
    assert other["limits"][0]["remaining"] == 2


def test_reservations_commit_release_extend(sdk: limitry.Limitry) -> None:
    _limit(sdk, "reserver", 10)
    who = {"kind": "reserver", "id": "r1"}
    first = _check(sdk, who, "x", cost=4, mode="reserve", ttl_seconds=60)
    second = _check(sdk, who, "x", cost=3, mode="reserve")
    held, other = first["reservation"], second["reservation"]
    assert _remaining(sdk, "reserver", "r1") == [3]

    extended = sdk.reservations.extend(held["id"], ttl_seconds=600)
    committed = sdk.reservations.commit(held["id"], cost=1)
    again = sdk.reservations.commit(held["id"], cost=1)
    released = sdk.reservations.release(other["id"])

    assert extended["status"] == "held" and extended["expiresAt"] > held["expiresAt"]
    assert (committed["status"], committed["reserved"], committed["cost"]) == ("committed", 4, 1)
    assert again == committed  # a repeated commit answers the same, charging once
    assert (released["status"], released["cost"]) == ("released", 0)
    assert _remaining(sdk, "reserver", "r1") == [9]
    refused = _raises(lambda: sdk.reservations.release(held["id"]))
    assert (refused.status, refused.code) == (409, "reservation_committed")
    unknown = _raises(lambda: sdk.reservations.commit("rsv_nope", cost=1))
    assert (unknown.status, unknown.code) == (404, "not_found")


def test_limits_create_get_list_update_archive_restore(
    sdk: limitry.Limitry, http: httpx.Client
) -> None:
    limit = _limit(sdk, "lister", 5, action="upload", unit="files", fail_mode="closed")
    assert limit["subject"] == {"kind": "lister", "id": None}
    assert (limit["amount"], limit["unit"], limit["failMode"]) == (5, "files", "closed")
    assert sdk.limits.get(limit["id"]) == limit

    listed = sdk.limits.list(subject_kind="lister", limit=10)
    changed = sdk.limits.update(limit["id"], amount=7, name="seven uploads", enabled=False)
    sdk.limits.archive(limit["id"])
    active = sdk.limits.list(subject_kind="lister")
    gone = sdk.limits.list(subject_kind="lister", archived="true")
    restored = sdk.limits.restore(limit["id"])

    assert [item["id"] for item in listed["items"]] == [limit["id"]]
    assert (changed["amount"], changed["name"], changed["enabled"]) == (7, "seven uploads", False)
    assert changed["version"] > limit["version"]
    assert active["items"] == []
    assert [item["id"] for item in gone["items"]] == [limit["id"]]
    assert gone["items"][0]["archivedAt"] is not None
    assert restored["archivedAt"] is None and restored["amount"] == 7
    fixed = _raises(lambda: sdk.limits.update(limit["id"], window="hour"))
    assert (fixed.status, fixed.code) == (400, "invalid_request")
    assert fixed.message.startswith("window")
    # The statuses the SDK does not show: 201 for a create, 204 for an archive.
    created = http.post(
        "/limits", json={"subject": {"kind": "lister2"}, "amount": 1, "window": "day"}
    )
    assert created.status_code == 201
    archive = http.post(f"/limits/{created.json()['id']}/archive")
    assert (archive.status_code, archive.content) == (204, b"")


def test_limits_sync_previews_then_applies(sdk: limitry.Limitry) -> None:
    wanted = [
        {"name": "sync a", "subject": {"kind": "syncer"}, "amount": 2, "window": "day"},
        {"name": "sync b", "subject": {"kind": "syncer"}, "amount": 9, "window": "hour"},
    ]
    preview = sdk.limits.sync(limits=wanted, preview=True)
    assert preview["preview"] is True and sorted(preview["created"]) == ["sync a", "sync b"]
    assert sdk.limits.list(subject_kind="syncer")["items"] == []

    applied = sdk.limits.sync(limits=wanted)
    again = sdk.limits.sync(limits=wanted)
    # Previewed only: archiveMissing would archive the other tests' limits on this server too.
    trimmed = sdk.limits.sync(limits=wanted[:1], archive_missing=True, preview=True)

    assert applied["preview"] is False and sorted(applied["created"]) == ["sync a", "sync b"]
    assert sorted(again["unchanged"]) == ["sync a", "sync b"] and again["created"] == []
    assert "sync b" in trimmed["archived"] and "sync a" not in trimmed["archived"]
    names = [item["name"] for item in sdk.limits.list(subject_kind="syncer")["items"]]
    assert sorted(names) == ["sync a", "sync b"]


def test_credits_add_to_a_total_balance(sdk: limitry.Limitry, http: httpx.Client) -> None:
    balance = _limit(sdk, "wallet", 2, window="total")
    who = {"kind": "wallet", "id": "w1"}
    credit = sdk.limits.credits.create(balance["id"], subject=who, amount=3, note="promo")
    assert (credit["limitId"], credit["amount"], credit["note"]) == (balance["id"], 3, "promo")
    listed = sdk.limits.credits.list(balance["id"])
    assert [item["id"] for item in listed["items"]] == [credit["id"]]

    spent = _check(sdk, who, "any", cost=5)
    empty = _check(sdk, who, "any")
    assert (spent["allowed"], spent["limits"][0]["remaining"]) == (True, 0)
    assert empty["allowed"] is False
    added = http.post(
        f"/limits/{balance['id']}/credits", json={"subject": who, "amount": 1, "note": "n"}
    )
    assert added.status_code == 201


def test_subjects_get_update_reset(sdk: limitry.Limitry) -> None:
    limit = _limit(sdk, "member", 1)
    who = {"kind": "member", "id": "m1"}
    assert _check(sdk, who, "a")["allowed"] is True
    assert _check(sdk, who, "a")["allowed"] is False

    named = sdk.subjects.get("member", "m1")  # a check named it: it exists
    assert named["subject"] == {"kind": "member", "id": "m1"} and named["billingDate"]
    never = _raises(lambda: sdk.subjects.get("member", "never-checked"))
    assert (never.status, never.code) == (404, "not_found")

    updated = sdk.subjects.update("member", "m1", billing_date="2026-01-15T00:00:00Z")
    fetched = sdk.subjects.get("member", "m1")
    reset = sdk.subjects.reset("member", "m1", limit_id=limit["id"])

    assert updated["billingDate"] == fetched["billingDate"] == "2026-01-15T00:00:00.000Z"
    assert fetched["subject"] == {"kind": "member", "id": "m1"}
    assert reset == {"subject": {"kind": "member", "id": "m1"}, "reset": [limit["id"]]}
    assert _check(sdk, who, "a")["allowed"] is True
    assert sdk.subjects.reset("member", "m1")["reset"] == [limit["id"]]


def test_a_subject_id_with_a_slash_is_served_as_in_process(sdk: limitry.Limitry) -> None:
    """Found in review: the SDK sends "org/42" as org%2F42, the server decodes the
    path before routing, and get, update and reset were 404s."""
    limit = _limit(sdk, "org", 1)
    who = {"kind": "org", "id": "eu/42"}
    assert _check(sdk, who, "a")["allowed"] is True
    assert dict(sdk.subjects.get("org", "eu/42")["subject"]) == who
    updated = sdk.subjects.update("org", "eu/42", billing_date="2026-01-15T00:00:00Z")
    assert dict(updated["subject"]) == who
    assert sdk.subjects.reset("org", "eu/42", limit_id=limit["id"])["reset"] == [limit["id"]]
    assert _check(sdk, who, "a")["allowed"] is True


def test_usage_query_standing_and_subjects(sdk: limitry.Limitry, http: httpx.Client) -> None:
    limit = _limit(sdk, "meter", 10)
    for subject_id, cost in (("m1", 3), ("m2", 5)):
        sdk.checks.create(subject={"kind": "meter", "id": subject_id}, action="a", cost=cost)

    series = sdk.usage.query(limit_id=limit["id"], granularity="hour")
    one = sdk.usage.query(limit_id=limit["id"], subject="meter:m1")
    standing = sdk.usage.standing(subject="meter:m1")
    helper = sdk.standing(subject={"kind": "meter", "id": "m2"})
    by_subject = sdk.usage.subjects(limit_id=limit["id"], limit=1)

    assert (series["limitId"], series["granularity"]) == (limit["id"], "hour")
    assert sum(point["used"] for point in series["points"]) == 8
    assert sum(point["used"] for point in one["points"]) == 3
    [mine] = standing["limits"]
    assert (mine["limitId"], mine["used"], mine["remaining"]) == (limit["id"], 3, 7)
    assert [item["remaining"] for item in helper["limits"]] == [5]
    assert [(i["subject"]["id"], i["used"]) for i in by_subject["items"]] == [("m2", 5)]
    # GET /v1/usage without limitId is still v0's usage summary.
    assert set(http.get("/usage").json()) >= {"totalEvents", "totalTokens"}


def test_standing_reads_shared_ids_holding_commas(sdk: limitry.Limitry, http: httpx.Client) -> None:
    """Found in review: ``shared`` was split on every comma, so a pool such as
    "acme, inc" (which checks count in) could not be asked about at all, over
    HTTP or in process; repeated ``shared=`` was a 400."""
    _limit(sdk, "firm", 10)
    # Any: the SDK's Subject and the face's dict[str, Any] are one shape, two types.
    acme: Any = {"kind": "firm", "id": "acme, inc"}
    other: Any = {"kind": "firm", "id": "f2"}
    who: Any = {"kind": "firmuser", "id": "u1"}
    # The SDK types shared as one str; a list is sent all the same, as shared= repeated.
    listed: Any = ["firm:acme, inc", "firm:f2"]
    _check(sdk, who, "a", cost=2, shared=[acme, other])

    def seen(standing: Any) -> list[tuple[str, int]]:
        return [(item["subject"]["id"], item["used"]) for item in standing["limits"]]

    both = [("acme, inc", 2), ("f2", 2)]
    # shared= repeated: one subject each, whole, whatever it holds.
    assert seen(sdk.usage.standing(subject="firmuser:u1", shared=listed)) == both
    odd: list[tuple[str, str | int | float | bool | None]] = [
        ("subject", "firmuser:u1"),
        ("shared", "firm:a,b:c"),
        ("shared", "firm:f2"),
    ]
    assert seen(http.get("/usage/standing", params=odd).json()) == [("a,b:c", 0), ("f2", 2)]
    # The SDK's one joined string splits on every comma, as before; a piece it
    # cannot read is a 400 that names the repeated form, never another subject.
    assert seen(sdk.usage.standing(subject="firmuser:u1", shared="firm:f2,firm:f3")) == [
        ("f2", 2),
        ("f3", 0),
    ]
    for shared in ("firm:acme, inc", "firm:f2,firm:acme, inc", "f2", "firm:a,"):
        refused = _raises(partial(sdk.usage.standing, subject="firmuser:u1", shared=shared))
        assert refused.status == 400 and "shared=kind:id&shared=kind:id" in str(refused)
    refused = _raises(lambda: sdk.standing(subject=who, shared=[acme]))
    assert refused.status == 400 and "shared=kind:id&shared=kind:id" in str(refused)
    assert seen(sdk.standing(subject=who, shared=[other])) == [("f2", 2)]
    kindless: Any = ["firm:f2", "f3"]
    assert _raises(lambda: sdk.usage.standing(subject="firmuser:u1", shared=kindless)).status == 400
    # In process, lists throughout: any id.
    with InProcess() as local:
        local.limits.create(subject={"kind": "firm"}, amount=10, window="day")
        local.checks.create(subject=who, action="a", cost=2, shared=[acme, other])
        assert seen(local.standing(subject=who, shared=[acme, other])) == both
        assert seen(local.standing(subject=who, shared=[acme])) == [("acme, inc", 2)]
        assert seen(local.usage.standing(subject="firmuser:u1", shared=["firm:acme, inc"])) == [
            ("acme, inc", 2)
        ]


def test_the_idempotency_key_replays_the_decision_and_counts_once(sdk: limitry.Limitry) -> None:
    _limit(sdk, "retrier", 5)
    who = {"kind": "retrier", "id": "r1"}
    once: limitry.RequestOptions = {"idempotency_key": "k1"}
    first = _check(sdk, who, "a", cost=2, request_options=once)
    second = _check(sdk, who, "a", cost=2, request_options=once)
    fresh = _check(sdk, who, "a", cost=2)

    assert first == second
    assert first["limits"][0]["remaining"] == 3
    assert fresh["id"] != first["id"]
    assert fresh["limits"][0]["remaining"] == 1
    assert _remaining(sdk, "retrier", "r1") == [1]


def test_guard_runs_the_block_only_when_allowed(sync_sdk: limitry.Limitry) -> None:
    sdk = sync_sdk
    limit = _limit(sdk, "guarded", 2)
    who: Subject = {"kind": "guarded", "id": "g1"}
    ran: list[int] = []
    with sdk.guard(subject=who, action="a", cost=2):
        ran.append(1)

    with pytest.raises(limitry.LimitReached) as refused, sdk.guard(subject=who, action="a"):
        ran.append(2)

    assert ran == [1]
    assert refused.value.limit_id == limit["id"]
    assert refused.value.retry_after_seconds is not None and refused.value.retry_after_seconds >= 1
    assert refused.value.reason == "limit_reached"


def test_reserve_commits_what_the_block_used_and_releases_on_error(
    sync_sdk: limitry.Limitry,
) -> None:
    sdk = sync_sdk
    limit = _limit(sdk, "reserving", 10)
    who: Subject = {"kind": "reserving", "id": "r1"}
    with sdk.reserve(subject=who, action="a", cost=6) as reservation:
        assert _remaining(sdk, "reserving", "r1") == [4]  # held while the block runs
        reservation.cost(2)
    assert _remaining(sdk, "reserving", "r1") == [8]

    with pytest.raises(RuntimeError), sdk.reserve(subject=who, action="a", cost=5):
        raise RuntimeError("the work failed")
    assert _remaining(sdk, "reserving", "r1") == [8]  # released, nothing charged

    with (
        pytest.raises(limitry.LimitReached) as refused,
        sdk.reserve(subject=who, action="a", cost=9),
    ):
        pytest.fail("a refused reservation runs no block")
    assert refused.value.limit_id == limit["id"]


def test_the_async_client_checks_guards_and_reserves(server: Server, sdk: limitry.Limitry) -> None:
    limit = _limit(sdk, "asyncer", 4)
    who: Subject = {"kind": "asyncer", "id": "a1"}

    async def scenario() -> tuple[Any, ...]:
        async with limitry.AsyncLimitry(token=API_KEY, api=server.root) as client:
            decision = await client.checks.create(subject=dict(who), action="a")
            async with client.guard(subject=who, action="a"):
                pass
            async with client.reserve(subject=who, action="a", cost=2) as reservation:
                reservation.cost(1)
            refused = None
            try:
                async with client.guard(subject=who, action="a", cost=5):
                    pass
            except limitry.LimitReached as exc:
                refused = exc
            standing = await client.usage.standing(subject="asyncer:a1")
            fetched = await client.limits.get(limit["id"])
            missing = None
            try:
                await client.limits.get("lim_nope")
            except limitry.ApiError as exc:
                missing = exc
            return decision, refused, standing, fetched, missing

    decision, refused, standing, fetched, missing = asyncio.run(scenario())
    assert decision["allowed"] is True and decision["limits"][0]["remaining"] == 3
    assert refused is not None and refused.limit_id == limit["id"]
    assert [item["remaining"] for item in standing["limits"]] == [1]
    assert (fetched["id"], fetched["amount"]) == (limit["id"], 4)
    assert missing is not None and (missing.status, missing.code) == (404, "not_found")


def test_bad_input_is_400_naming_the_field_and_unknown_ids_404(
    sdk: limitry.Limitry, http: httpx.Client
) -> None:
    empty = _raises(lambda: sdk.checks.create(subject={"kind": "bad", "id": "b"}, action=""))
    assert (empty.status, empty.code) == (400, "invalid_request")
    assert empty.message.startswith("action")
    unknown = _raises(lambda: sdk.limits.get("lim_nope"))
    assert (unknown.status, unknown.code) == (404, "not_found")
    assert _raises(lambda: sdk.limits.credits.list("lim_nope")).status == 404

    stray = http.post(
        "/checks", json={"subject": {"kind": "bad", "id": "b"}, "action": "a", "x": 1}
    )
    missing = http.post("/limits", json={"amount": 1, "window": "day"})
    body_on_release = http.post("/reservations/rsv_1/release", json={"cost": 1})
    bad_sync = http.post(
        "/limits/sync",
        json={"limits": [{"name": "s", "subject": {"kind": "bad"}, "amount": -1, "window": "day"}]},
    )
    assert bad_sync.status_code == 400
    # A sync's problems, one each, in the envelope's details (the SDK's ApiError drops them).
    assert [(d["index"], d["field"]) for d in bad_sync.json()["error"]["details"]] == [
        (0, "amount")
    ]
    for answer, field in ((stray, "x"), (missing, "subject"), (body_on_release, "cost")):
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_request"
        assert answer.json()["error"]["message"].startswith(f"{field}: ")


def test_a_locked_ledger_is_503_busy_in_the_1_0_envelope(
    server: Server, http: httpx.Client
) -> None:
    _limit_body = {"subject": {"kind": "locked"}, "amount": 1, "window": "day"}
    assert http.post("/limits", json=_limit_body).status_code == 201
    holder = sqlite3.connect(server.db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        busy = http.post("/checks", json={"subject": {"kind": "locked", "id": "l"}, "action": "a"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["error"]["code"] == "busy"
    after = http.post("/checks", json={"subject": {"kind": "locked", "id": "l"}, "action": "a"})
    assert after.json()["allowed"] is True


def test_guard_asks_again_while_the_ledger_is_busy_and_counts_once(
    server: Server, sync_sdk: limitry.Limitry
) -> None:
    """A 503 ``busy`` is no failure to the SDK's helpers: ``guard`` asks again with the
    same key (Retry-After, at least a second) before its fail mode would decide."""
    sync_sdk.limits.create(subject={"kind": "waiter"}, amount=5, window="day")
    holder = sqlite3.connect(server.db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")

    def let_go() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    # Past the first attempt's 0.5 s wait (a 503), before the retry a second later.
    releaser = threading.Timer(1.0, let_go)
    releaser.start()
    started = time.monotonic()
    try:
        with sync_sdk.guard(subject={"kind": "waiter", "id": "w1"}, action="a", fail_mode="closed"):
            waited = time.monotonic() - started
    finally:
        releaser.join()
    assert waited >= 1.0
    [limit] = sync_sdk.usage.standing(subject="waiter:w1")["limits"]
    assert limit["used"] == 1
