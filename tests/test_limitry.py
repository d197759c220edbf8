"""The Limitry 1.0 face, call by call: fields and defaults, errors, reservations,
credits, subjects and their billing dates, usage, the helpers, idempotency.

The rules as a whole are held to a plain model in
tests/properties/test_limitry_model.py; these are the edges one at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from limitry_local import Tracker
from limitry_local.limitry import ApiError, LimitReached, Limitry
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from tests.conftest import POSTGRES_DSN, postgres_schema

DAY = 86_400
USER = {"kind": "user", "id": "u1"}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at("2026-01-15T10:00:00"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def limitry(
    request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path
) -> Iterator[Limitry]:
    """The face on each ledger: memory, a SQLite file, a fresh PostgreSQL schema."""
    if request.param == "postgres":
        with postgres_schema() as schema:
            ledger = PostgresLedger(POSTGRES_DSN, schema=schema)
            with Tracker(clock=clock, ledger=ledger) as tracker:
                yield Limitry(tracker)
        return
    path = tmp_path / "usage.db" if request.param == "sqlite" else None
    with Tracker(path, clock=clock) as tracker:
        yield Limitry(tracker)


def refused(call: object, status: int, code: str, words: str) -> ApiError:
    assert callable(call)
    with pytest.raises(ApiError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code)
    assert words in caught.value.message, caught.value.message
    return caught.value


# --- limits --------------------------------------------------------------------------


def test_a_limit_takes_the_defaults_and_reads_as_its_sentence(limitry: Limitry) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=200, window="month")
    assert limit["name"] == "200 units per month for every user"
    assert limit["subject"] == {"kind": "user", "id": None}
    assert (limit["action"], limit["unit"], limit["every"], limit["start"]) == (
        "*",
        "units",
        1,
        "calendar",
    )
    assert (limit["rolling"], limit["enabled"], limit["failMode"], limit["version"]) == (
        False,
        True,
        "open",
        1,
    )
    assert limit["archivedAt"] is None and limit["id"].startswith("lim_")
    assert limitry.limits.get(limit["id"]) == limit
    other = limitry.limits.create(
        subject={"kind": "team", "id": "t1"}, amount=5, window="hour", every=3, action="chat"
    )
    assert other["name"] == "5 units per 3 hours for team t1 to chat"
    assert limitry.limits.create(subject={"kind": "agent"}, amount=2, window="concurrent")[
        "name"
    ] == ("2 units at once for every agent")


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"amount": 1, "window": "day"}, "subject", "required"),
        ({"subject": {"kind": "user"}, "amount": -1, "window": "day"}, "amount", "whole number"),
        ({"subject": {"kind": "user"}, "amount": 1, "window": "fortnight"}, "window", "one of"),
        ({"subject": {"kind": ""}, "amount": 1, "window": "day"}, "subject.kind", "non-empty"),
        (
            {"subject": {"kind": "user"}, "amount": 1, "window": "month", "rolling": True},
            "rolling",
            "minute, hour or day",
        ),
        (
            {"subject": {"kind": "user"}, "amount": 1, "window": "total", "every": 2},
            "every",
            "no periods",
        ),
        (
            {"subject": {"kind": "u"}, "amount": 1, "window": "concurrent", "start": "first_use"},
            "start",
            "no periods",
        ),
        (
            {"subject": {"kind": "k" * 150}, "amount": 1, "window": "day", "action": "a" * 150},
            "name",
            "give the limit a name",
        ),
        ({"subject": {"kind": "user"}, "amount": 1, "window": "day", "every": 0}, "every", "1 to"),
        (
            {"subject": {"kind": "user"}, "amount": 1, "window": "day", "fail_mode": "maybe"},
            "failMode",
            "open, closed",
        ),
    ],
)
def test_a_bad_limit_names_its_field(
    limitry: Limitry, fields: dict[str, object], field: str, words: str
) -> None:
    error = refused(lambda: limitry.limits.create(**fields), 400, "invalid_request", words)  # type: ignore[arg-type]
    assert error.message.startswith(f"{field}: ")


def test_what_a_limit_counts_is_fixed_and_the_rest_changes_with_a_version(
    limitry: Limitry,
) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=3, window="day", name="daily")
    refused(
        lambda: limitry.limits.update(limit["id"], window="week"), 400, "invalid_request", "fixed"
    )
    same = limitry.limits.update(limit["id"], window="day", subject={"kind": "user"})
    assert same["version"] == 1
    changed = limitry.limits.update(limit["id"], amount=5, fail_mode="closed", name="daily 5")
    assert (changed["amount"], changed["failMode"], changed["name"], changed["version"]) == (
        5,
        "closed",
        "daily 5",
        2,
    )
    limitry.limits.create(subject={"kind": "user"}, amount=1, window="hour", name="hourly")
    refused(lambda: limitry.limits.update(limit["id"], name="hourly"), 409, "name_taken", "hourly")
    refused(lambda: limitry.limits.get("lim_nope"), 404, "not_found", "lim_nope")


def test_archived_limits_stop_counting_and_restore_refuses_a_taken_name(limitry: Limitry) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=0, window="day", name="none")
    assert not limitry.checks.create(subject=USER, action="chat")["allowed"]
    limitry.limits.archive(limit["id"])
    limitry.limits.archive(limit["id"])  # twice: the same
    decision = limitry.checks.create(subject=USER, action="chat")
    assert decision["allowed"] and decision["limits"] == []
    assert limitry.limits.list()["items"] == []
    assert [x["id"] for x in limitry.limits.list(archived="true")["items"]] == [limit["id"]]
    limitry.limits.create(subject={"kind": "user"}, amount=9, window="day", name="none")
    refused(lambda: limitry.limits.restore(limit["id"]), 409, "name_taken", "none")


def test_limits_list_newest_first_a_page_at_a_time_with_filters(limitry: Limitry) -> None:
    made = [
        limitry.limits.create(subject={"kind": kind}, amount=1, window="day", action=action)["id"]
        for kind, action in [("user", "chat"), ("team", "chat"), ("user", "embed")]
    ]
    first = limitry.limits.list(limit="2")  # the SDK sends query strings
    assert [x["id"] for x in first["items"]] == made[::-1][:2]
    rest = limitry.limits.list(limit=2, cursor=first["nextCursor"])
    assert [x["id"] for x in rest["items"]] == [made[0]] and rest["nextCursor"] is None
    assert [x["id"] for x in limitry.limits.list(subject_kind="user", action="chat")["items"]] == [
        made[0]
    ]
    refused(lambda: limitry.limits.list(cursor="bm9wZQ"), 400, "invalid_request", "cursor")


def test_sync_creates_changes_archives_and_previews(limitry: Limitry) -> None:
    kept = limitry.limits.create(subject={"kind": "user"}, amount=3, window="day", name="daily")
    limitry.limits.create(subject={"kind": "user"}, amount=3, window="hour", name="old")
    wanted = [
        {"name": "daily", "subject": {"kind": "user"}, "amount": 4, "window": "day"},
        {"name": "monthly", "subject": {"kind": "user"}, "amount": 100, "window": "month"},
    ]
    preview = limitry.limits.sync(limits=wanted, archive_missing=True, preview=True)
    assert preview == {
        "preview": True,
        "created": ["monthly"],
        "updated": [{"name": "daily", "changes": {"amount": {"from": 3, "to": 4}}}],
        "archived": ["old"],
        "unchanged": [],
    }
    assert len(limitry.limits.list()["items"]) == 2  # nothing written
    done = limitry.limits.sync(limits=wanted, archive_missing=True)
    assert dict(done, preview=True) == preview
    assert limitry.limits.get(kept["id"])["amount"] == 4
    again = limitry.limits.sync(limits=wanted, archive_missing=True)
    assert again["unchanged"] == ["daily", "monthly"] and not again["created"]
    error = refused(
        lambda: limitry.limits.sync(
            limits=[
                {"name": "daily", "subject": {"kind": "team"}, "amount": 1, "window": "day"},
                {"subject": {"kind": "user"}, "amount": -5, "window": "day"},
            ]
        ),
        400,
        "invalid_request",
        "2 problem",
    )
    assert [(d["index"], d["field"]) for d in error.details or []] == [(1, "amount"), (0, "name")]
    assert limitry.limits.get(kept["id"])["amount"] == 4  # a problem anywhere changes nothing
    error = refused(
        lambda: limitry.limits.sync(
            limits=[
                {"subject": {"kind": "user"}, "amount": -5, "window": "day"},
                {"name": "daily", "subject": {"kind": "team"}, "amount": 1, "window": "day"},
            ]
        ),
        400,
        "invalid_request",
        "2 problem",
    )
    # Each problem at its entry's index, after an entry that could not be read too.
    assert [(d["index"], d["field"]) for d in error.details or []] == [(0, "amount"), (1, "name")]


def test_sync_changes_the_amount_of_an_unnamed_entry_in_place(limitry: Limitry) -> None:
    """Found in review: an unnamed entry is named by its sentence, which holds its amount,
    so a new amount archived the limit and made one with fresh counters."""
    monthly = {"subject": {"kind": "user"}, "amount": 100, "window": "month"}
    [name] = limitry.limits.sync(limits=[monthly])["created"]
    [limit] = limitry.limits.list()["items"]
    assert limitry.checks.create(subject=USER, action="a", cost=100)["allowed"]
    raised = limitry.limits.sync(limits=[dict(monthly, amount=150)], archive_missing=True)
    new_name = "150 units per month for every user"
    assert raised == {
        "preview": False,
        "created": [],
        "updated": [
            {
                "name": new_name,
                "changes": {
                    "name": {"from": name, "to": new_name},
                    "amount": {"from": 100, "to": 150},
                },
            }
        ],
        "archived": [],
        "unchanged": [],
    }
    assert [x["id"] for x in limitry.limits.list()["items"]] == [limit["id"]]
    # The counters kept: 100 used of 150.
    assert not limitry.checks.create(subject=USER, action="a", cost=51)["allowed"]
    assert limitry.checks.create(subject=USER, action="a", cost=50)["allowed"]
    again = limitry.limits.sync(limits=[dict(monthly, amount=150)], archive_missing=True)
    assert again["unchanged"] == [new_name]
    # Two limits it could be: a problem, not a guess.
    limitry.limits.create(subject={"kind": "user"}, amount=120, window="month")
    error = refused(
        lambda: limitry.limits.sync(limits=[dict(monthly, amount=200)]),
        400,
        "invalid_request",
        "1 problem",
    )
    assert [(d["index"], d["field"]) for d in error.details or []] == [(0, "name")]


# --- checks ---------------------------------------------------------------------------


def test_a_check_consumes_previews_and_says_when_to_retry(
    limitry: Limitry, clock: ManualClock
) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=2, window="day")
    for left in (1, 0):
        decision = limitry.checks.create(subject=USER, action="chat")
        assert decision["allowed"] and decision["limits"][0]["remaining"] == left
        assert decision["limits"][0]["resetsAt"] == "2026-01-16T00:00:00.000Z"
    preview = limitry.checks.create(subject=USER, action="chat", mode="preview", cost=0)
    assert preview["allowed"] and preview["limits"][0]["remaining"] == 0
    denied = limitry.checks.create(subject=USER, action="chat")
    assert not denied["allowed"]
    assert denied["reason"]["limitId"] == limit["id"]
    assert denied["retryAfterSeconds"] == 14 * 3600  # 10:00 to midnight
    clock.advance(14 * 3600)
    assert limitry.checks.create(subject=USER, action="chat")["allowed"]


def test_a_subject_s_own_limit_replaces_its_kind_s_and_shared_pools_all_count(
    limitry: Limitry,
) -> None:
    limitry.limits.create(subject={"kind": "user"}, amount=1, window="day")
    own = limitry.limits.create(subject=USER, amount=3, window="day")
    pool = limitry.limits.create(subject={"kind": "team"}, amount=2, window="day")
    team = {"kind": "team", "id": "t1"}
    first = limitry.checks.create(subject=USER, action="chat", shared=[team])
    assert sorted((x["limitId"], x["remaining"]) for x in first["limits"]) == sorted(
        [(own["id"], 2), (pool["id"], 1)]
    )
    assert limitry.checks.create(subject=USER, action="chat", shared=[team])["allowed"]
    third = limitry.checks.create(subject=USER, action="chat", shared=[team])
    assert not third["allowed"] and third["reason"]["limitId"] == pool["id"]
    # All or nothing: the refused check charged the user's own limit nothing.
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 2


def test_standing_reads_the_subject_given_even_when_its_kind_holds_a_colon(
    limitry: Limitry,
) -> None:
    """Found in review: the face joined each subject to ``kind:id`` and split it
    again at the first ``:``, so kind "team:eu" id "t1" answered for team "eu:t1"."""
    limitry.limits.create(subject={"kind": "team"}, amount=10, window="day")
    limitry.checks.create(
        subject=USER, action="a", cost=3, shared=[{"kind": "team", "id": "eu:t1"}]
    )
    odd = {"kind": "team:eu", "id": "t1"}
    assert limitry.standing(subject=USER, shared=[odd])["limits"] == []
    assert limitry.standing(subject=odd)["limits"] == []
    assert limitry.standing(subject=odd)["subject"] == odd


def test_a_rolling_hour_frees_units_as_its_minutes_leave(
    limitry: Limitry, clock: ManualClock
) -> None:
    limitry.limits.create(subject={"kind": "user"}, amount=2, window="hour", rolling=True)
    preview = limitry.checks.create(subject=USER, action="a", mode="preview")
    assert preview["limits"][0]["resetsAt"] is None  # nothing counted yet
    first = limitry.checks.create(subject=USER, action="a")
    assert first["allowed"]
    # Its own slot is the oldest counted now: it leaves the window an hour on.
    assert first["limits"][0]["resetsAt"] == "2026-01-15T11:00:00.000Z"
    clock.advance(1800)
    assert limitry.checks.create(subject=USER, action="a")["allowed"]
    denied = limitry.checks.create(subject=USER, action="a")
    assert not denied["allowed"] and denied["retryAfterSeconds"] == 1800
    clock.advance(1800)
    assert limitry.checks.create(subject=USER, action="a")["allowed"]


def test_bad_checks_name_their_field(limitry: Limitry) -> None:
    refused(
        lambda: limitry.checks.create(subject={"kind": "user"}, action="a"),
        400,
        "invalid_request",
        "subject.id",
    )
    refused(
        lambda: limitry.checks.create(subject=USER, action="a", cost=-1),
        400,
        "invalid_request",
        "cost",
    )
    refused(
        lambda: limitry.checks.create(subject=USER, action="a", mode="spend"),
        400,
        "invalid_request",
        "mode",
    )
    refused(
        lambda: limitry.checks.create(subject=USER, action="a", ttl_seconds=5),
        400,
        "invalid_request",
        "ttlSeconds",
    )
    refused(
        lambda: limitry.checks.create(subject=USER, action="a", shared=[USER] * 5),
        400,
        "invalid_request",
        "shared",
    )


def test_an_idempotency_key_answers_the_same_and_counts_once(limitry: Limitry) -> None:
    limitry.limits.create(subject={"kind": "user"}, amount=5, window="day")
    first = limitry.checks.create(subject=USER, action="a", cost=2, idempotency_key="k1")
    again = limitry.checks.create(subject=USER, action="a", cost=2, idempotency_key="k1")
    assert again == first
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 2
    refused(
        lambda: limitry.checks.create(subject=USER, action="a", cost=3, idempotency_key="k1"),
        409,
        "idempotency_key_reused",
        "k1",
    )


# --- reservations -----------------------------------------------------------------------


def test_a_reservation_holds_then_commits_what_was_used(limitry: Limitry) -> None:
    limitry.limits.create(subject={"kind": "user"}, amount=10, window="day", unit="cents")
    decision = limitry.checks.create(subject=USER, action="ai", cost=6, mode="reserve")
    reservation = decision["reservation"]
    assert (reservation["status"], reservation["reserved"], reservation["cost"]) == ("held", 6, 0)
    assert decision["limits"][0]["remaining"] == 4
    assert not limitry.checks.create(subject=USER, action="ai", cost=5, mode="preview")["allowed"]
    committed = limitry.reservations.commit(reservation["id"], cost=2)
    assert (committed["status"], committed["cost"]) == ("committed", 2)
    assert limitry.reservations.commit(reservation["id"], cost=9) == committed  # the same
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 2
    refused(
        lambda: limitry.reservations.release(reservation["id"]),
        409,
        "reservation_committed",
        "committed",
    )
    refused(lambda: limitry.reservations.commit("rsv_nope", cost=1), 404, "not_found", "rsv_nope")


def test_an_expired_reservation_gives_back_and_a_late_commit_still_charges(
    limitry: Limitry, clock: ManualClock
) -> None:
    limitry.limits.create(subject={"kind": "user"}, amount=1, window="concurrent")
    limitry.limits.create(subject={"kind": "user"}, amount=10, window="day")
    held = limitry.checks.create(subject=USER, action="a", cost=1, mode="reserve", ttl_seconds=60)
    assert not limitry.checks.create(subject=USER, action="a", mode="reserve")["allowed"]
    extended = limitry.reservations.extend(held["reservation"]["id"], ttl_seconds=120)
    assert extended["expiresAt"] == "2026-01-15T10:02:00.000Z"
    clock.advance(120)
    assert limitry.checks.create(subject=USER, action="a", mode="preview")["allowed"]
    refused(
        lambda: limitry.reservations.extend(held["reservation"]["id"]),
        409,
        "reservation_not_open",
        "expired",
    )
    assert limitry.reservations.release(held["reservation"]["id"])["status"] == "expired"
    late = limitry.reservations.commit(held["reservation"]["id"], cost=3)
    assert (late["status"], late["cost"]) == ("committed", 3)
    day = next(x for x in limitry.standing(subject=USER)["limits"] if x["window"] == "day")
    assert day["used"] == 3


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_hold_another_process_swept_cannot_be_extended(kind: str, tmp_path: Path) -> None:
    """Found in review: a process whose clock ran a moment ahead swept the expired
    hold; the extend then re-added an empty hold and answered "held", and a second
    reservation took the 1-slot limit beside it."""
    start = at("2026-01-15T10:00:00")
    mine, theirs = ManualClock(start), ManualClock(start)
    with contextlib.ExitStack() as stack:
        if kind == "postgres":
            schema = stack.enter_context(postgres_schema())
            ledgers = [PostgresLedger(POSTGRES_DSN, schema=schema) for _ in range(2)]
            a = stack.enter_context(Tracker(clock=mine, ledger=ledgers[0]))
            b = stack.enter_context(Tracker(clock=theirs, ledger=ledgers[1]))
        else:
            a = stack.enter_context(Tracker(tmp_path / "usage.db", clock=mine))
            b = stack.enter_context(Tracker(tmp_path / "usage.db", clock=theirs))
        ours, other = Limitry(a), Limitry(b)
        ours.limits.create(subject={"kind": "user"}, amount=1, window="concurrent")
        held = ours.checks.create(subject=USER, action="job", mode="reserve", ttl_seconds=10)
        mine.set(start + 9.9)  # 0.1 s before it expires, by our clock
        theirs.set(start + 10.05)  # past it, by theirs: their check sweeps it
        assert other.checks.create(subject=USER, action="job", mode="preview")["allowed"]
        refused(
            lambda: ours.reservations.extend(held["reservation"]["id"], ttl_seconds=600),
            409,
            "reservation_not_open",
            "expired",
        )
        assert other.checks.create(subject=USER, action="job", mode="reserve")["allowed"]
        assert not ours.checks.create(subject=USER, action="job", mode="reserve")["allowed"]


def test_reserve_commits_what_the_block_used_and_releases_on_an_error(limitry: Limitry) -> None:
    limitry.limits.create(subject={"kind": "user"}, amount=10, window="day")
    with limitry.reserve(subject=USER, action="ai", cost=5) as reservation:
        reservation.cost(2)
    with pytest.raises(RuntimeError), limitry.reserve(subject=USER, action="ai", cost=5):
        raise RuntimeError("the model call failed")
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 2
    with (
        pytest.raises(ValueError, match="whole number"),
        limitry.reserve(subject=USER, action="ai") as reservation,
    ):
        reservation.cost(1.5)
    with pytest.raises(LimitReached) as caught, limitry.guard(subject=USER, action="ai", cost=9):
        pytest.fail("a refused guard runs nothing")
    assert caught.value.limit_id is not None and caught.value.retry_after_seconds is not None


# --- credits and balances ------------------------------------------------------------


def test_credits_add_to_a_balance_and_a_negative_one_needs_a_note(limitry: Limitry) -> None:
    balance = limitry.limits.create(subject={"kind": "user"}, amount=5, window="total")
    day = limitry.limits.create(subject={"kind": "user"}, amount=5, window="day")
    assert limitry.checks.create(subject=USER, action="a", cost=5)["allowed"]
    assert not limitry.checks.create(subject={"kind": "user", "id": "u1"}, action="a")["allowed"]
    credit = limitry.limits.credits.create(balance["id"], subject=USER, amount=3)
    assert (credit["amount"], credit["limitId"], credit["note"]) == (3, balance["id"], "")
    refused(
        lambda: limitry.limits.credits.create(balance["id"], subject=USER, amount=-1),
        400,
        "invalid_request",
        "note",
    )
    refund = limitry.limits.credits.create(balance["id"], subject=USER, amount=-1, note="refund")
    refused(
        lambda: limitry.limits.credits.create(day["id"], subject=USER, amount=1),
        400,
        "invalid_request",
        "total",
    )
    assert [c["id"] for c in limitry.limits.credits.list(balance["id"])["items"]] == [
        refund["id"],
        credit["id"],
    ]
    standing = next(
        x for x in limitry.standing(subject=USER)["limits"] if x["limitId"] == balance["id"]
    )
    assert (standing["amount"], standing["used"], standing["remaining"]) == (7, 5, 2)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda face: face.subjects.reset("user", "u1", limit_id=5), "limitId"),
        (lambda face: face.subjects.reset("user", "u1", limit_id=""), "limitId"),
        (
            lambda face: face.limits.credits.create("lim_nope", subject={"kind": "u"}, amount=1),
            "subject.id",
        ),
        (lambda face: face.limits.credits.create("lim_nope", subject=USER, amount=0), "amount"),
        (lambda face: face.limits.credits.create("lim_nope", subject=USER, amount=-1), "note"),
        (
            lambda face: face.limits.credits.create("lim_nope", subject=USER, amount=1, note=""),
            "note",
        ),
    ],
)
def test_every_field_is_checked_before_the_limit_is_read(
    limitry: Limitry, call: Any, field: str
) -> None:
    """A bad field is a 400 naming it, even with a limit that does not exist (not a 404)."""
    error = refused(lambda: call(limitry), 400, "invalid_request", field)
    assert error.message.startswith(f"{field}: ")


# --- subjects -------------------------------------------------------------------------


def test_a_subject_exists_from_its_first_check_and_takes_a_billing_date(
    limitry: Limitry, clock: ManualClock
) -> None:
    refused(lambda: limitry.subjects.get("user", "u1"), 404, "not_found", "once a check names it")
    limitry.checks.create(subject=USER, action="a")
    assert limitry.subjects.get("user", "u1") == {
        "subject": USER,
        "billingDate": "2026-01-15T10:00:00.000Z",
    }
    updated = limitry.subjects.update("user", "u1", billing_date="2025-10-31")
    assert updated["billingDate"] == "2025-10-31T00:00:00.000Z"
    refused(
        lambda: limitry.subjects.update("user", "u1", billing_date="soon"),
        400,
        "invalid_request",
        "billingDate",
    )


def test_billing_date_months_start_on_its_day_clamped_at_month_ends(tmp_path: Path) -> None:
    clock = ManualClock(at("2024-02-28T12:00:00"))
    with Tracker(tmp_path / "usage.db", clock=clock) as tracker:
        limitry = Limitry(tracker)
        limitry.limits.create(
            subject={"kind": "user"}, amount=1, window="month", start="billing_date"
        )
        limitry.subjects.update("user", "u1", billing_date="2024-01-31T00:00:00Z")
        first = limitry.checks.create(subject=USER, action="a")
        # 2024 is a leap year: the period from Jan 31 ends on Feb 29, then Mar 31.
        assert first["limits"][0]["resetsAt"] == "2024-02-29T00:00:00.000Z"
        assert not limitry.checks.create(subject=USER, action="a")["allowed"]
        clock.set(at("2024-02-29T00:00:00"))
        second = limitry.checks.create(subject=USER, action="a")
        assert second["allowed"]
        assert second["limits"][0]["resetsAt"] == "2024-03-31T00:00:00.000Z"


def test_a_reset_gives_the_window_back_but_not_what_open_reservations_hold(
    limitry: Limitry,
) -> None:
    daily = limitry.limits.create(subject={"kind": "user"}, amount=4, window="day")
    slots = limitry.limits.create(subject={"kind": "user"}, amount=1, window="concurrent")
    limitry.checks.create(subject=USER, action="a", cost=2)
    held = limitry.checks.create(subject=USER, action="a", cost=1, mode="reserve")
    answer = limitry.subjects.reset("user", "u1", idempotency_key="r1")
    assert answer == {"subject": USER, "reset": [daily["id"]]}
    assert limitry.subjects.reset("user", "u1", idempotency_key="r1") == answer
    by_id = {x["limitId"]: x for x in limitry.standing(subject=USER)["limits"]}
    assert by_id[daily["id"]]["used"] == 1  # the open reservation's unit
    assert by_id[slots["id"]]["used"] == 1  # a concurrent limit is skipped
    limitry.reservations.release(held["reservation"]["id"])
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 0
    refused(
        lambda: limitry.subjects.reset("user", "u1", limit_id="lim_nope"),
        404,
        "not_found",
        "lim_nope",
    )


# --- usage -----------------------------------------------------------------------------


def test_usage_counts_units_allowed_and_refused_per_hour_and_by_subject(
    limitry: Limitry, clock: ManualClock
) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=3, window="day")
    other = {"kind": "user", "id": "u2"}
    limitry.checks.create(subject=USER, action="a", cost=2)
    limitry.checks.create(subject=USER, action="a", cost=2)  # refused
    clock.advance(3600)
    limitry.checks.create(subject=other, action="a", cost=1)
    series = limitry.usage.query(
        limit_id=limit["id"], granularity="hour", from_="2026-01-15T09:00:00Z"
    )
    assert [
        (p["start"][11:13], p["used"], p["allowed"], p["refused"]) for p in series["points"]
    ] == [
        ("09", 0, 0, 0),
        ("10", 2, 1, 1),
        ("11", 1, 1, 0),
    ]
    daily = limitry.usage.query(limit_id=limit["id"], subject="user:u1", from_="2026-01-14")
    assert [(p["used"], p["refused"]) for p in daily["points"]] == [(0, 0), (2, 1)]
    who = limitry.usage.subjects(limit_id=limit["id"])
    assert who["windowStart"] == "2026-01-15T00:00:00.000Z"
    assert [
        (x["subject"]["id"], x["used"], x["remaining"], x["refused"]) for x in who["items"]
    ] == [
        ("u1", 2, 1, 1),
        ("u2", 1, 2, 0),
    ]
    assert limitry.limits.get(limit["id"])["lastCheckedAt"] == "2026-01-15T11:00:00.000Z"
    refused(lambda: limitry.usage.standing(subject="u1"), 400, "invalid_request", "kind:id")


def test_a_subject_only_refused_is_listed_by_usage_subjects(limitry: Limitry) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=1, window="day")
    assert not limitry.checks.create(subject=USER, action="a", cost=5)["allowed"]
    assert limitry.usage.subjects(limit_id=limit["id"])["items"] == [
        {"subject": USER, "used": 0, "remaining": 1, "refused": 1}
    ]


def test_usage_query_answers_at_most_5000_points(limitry: Limitry) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=1, window="day")
    # 4,999 hours on: 5,000 points, the first hour and the last included.
    most = limitry.usage.query(
        limit_id=limit["id"],
        from_="2025-06-21T01:00:00Z",
        to="2026-01-15T08:00:00Z",
        granularity="hour",
    )
    assert len(most["points"]) == 5000
    refused(
        lambda: limitry.usage.query(
            limit_id=limit["id"],
            from_="2025-06-21T00:00:00Z",
            to="2026-01-15T08:00:00Z",
            granularity="hour",
        ),
        400,
        "invalid_request",
        "from: at most 5000 points",
    )


# --- the SDK's own arguments ----------------------------------------------------------


def test_code_written_for_the_sdk_runs_as_it_is(limitry: Limitry) -> None:
    """The SDK client's arguments, request_options and helper keywords are taken."""
    made = Limitry(token="sk_test", workspace="w", environment="e", timeout=1.5, max_retries=0)
    made.close()
    with pytest.raises(ValueError, match="limitry-local serve"):
        Limitry(api="http://127.0.0.1:8080")
    limitry.limits.create(
        subject={"kind": "user"}, amount=5, window="day", request_options={"idempotency_key": "c"}
    )
    again = limitry.limits.create(
        subject={"kind": "user"}, amount=5, window="day", request_options={"idempotency_key": "c"}
    )
    assert len(limitry.limits.list(request_options={})["items"]) == 1
    assert again["id"] == limitry.limits.list()["items"][0]["id"]
    with limitry.guard(subject=USER, action="a", timeout=0.5, fail_mode="closed"):
        pass
    with limitry.reserve(subject=USER, action="a", cost=2, fail_mode="open") as reservation:
        reservation.cost(1.0)
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 2


def test_closing_the_face_closes_only_a_tracker_it_opened(tmp_path: Path) -> None:
    with Tracker(tmp_path / "usage.db") as tracker:
        Limitry(tracker).close()
        assert tracker.quotas.list().data == []  # still open
    owned = Limitry(tmp_path / "usage.db")
    owned.close()
    with pytest.raises(Exception, match="closed"):
        owned.tracker.quotas.list()


# --- what the review found -------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    name: str
    url: str


@contextmanager
def own_database() -> Iterator[tuple[Database, psycopg.Connection[Any]]]:
    """A database of its own on the test server, so its statistics count only this test."""
    name = f"limitry_{os.urandom(6).hex()}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield Database(name, make_conninfo(POSTGRES_DSN, dbname=name)), admin
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_checks_drawing_on_pools_in_opposite_orders_never_deadlock() -> None:
    """Two Trackers on one PostgreSQL database, pools listed in opposite orders: every
    document is locked in one order, so the server breaks no deadlock (it broke
    26 in 300 checks when each document was locked in the order it was named)."""
    with own_database() as (dsn, admin):
        deadlocks = f"SELECT deadlocks FROM pg_stat_database WHERE datname = '{dsn.name}'"
        trackers = [Tracker(ledger=PostgresLedger(dsn.url)) for _ in "ab"]
        first, second = (Limitry(tracker) for tracker in trackers)
        first.limits.create(subject={"kind": "team"}, amount=10**9, window="day")
        before = admin.execute(deadlocks).fetchone()
        allowed: list[bool] = []

        def check(limitry: Limitry, pools: tuple[str, str]) -> None:
            for i in range(100):
                decision = limitry.checks.create(
                    subject={"kind": "user", "id": f"u{i % 5}"},
                    action="a",
                    shared=[{"kind": "team", "id": pool} for pool in pools],
                )
                allowed.append(decision["allowed"])

        threads = [
            threading.Thread(target=check, args=(first, ("x", "y"))),
            threading.Thread(target=check, args=(second, ("y", "x"))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for tracker in trackers:
            tracker.close()  # a server process reports its counts as it ends
        assert allowed == [True] * 200
        after = admin.execute(deadlocks).fetchone()
        assert before is not None and after is not None
        assert after[0] == before[0]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda face: face.subjects.update(
                "user", "u1", billing_date="9999-12-31T23:59:59-12:00"
            ),
            "billingDate",
        ),
        (
            lambda face: face.subjects.update(
                "user", "u1", billing_date="0001-01-01T00:00:00+01:00"
            ),
            "billingDate",
        ),
        (
            lambda face: face.checks.create(subject={"kind": "user", "id": "\ud800"}, action="a"),
            "subject.id",
        ),
        (
            lambda face: face.checks.create(subject=USER, action="a", idempotency_key="\udc00"),
            "Idempotency-Key",
        ),
        (lambda face: face.limits.list(limit=float("inf")), "limit"),
        (lambda face: face.limits.list(limit="2.7"), "limit"),
        (lambda face: face.limits.list(limit="²"), "limit"),
        (lambda face: face.limits.list(limit="+-5"), "limit"),
    ],
)
def test_input_no_ledger_can_hold_is_a_400_naming_it(
    limitry: Limitry, call: Any, field: str
) -> None:
    error = refused(lambda: call(limitry), 400, "invalid_request", field)
    assert error.message.startswith(f"{field}: ")


def test_a_list_cursor_survives_its_item_being_archived(limitry: Limitry) -> None:
    made = [
        limitry.limits.create(subject={"kind": "user"}, amount=1, window="day", name=f"l{i}")
        for i in range(4)
    ]
    page = limitry.limits.list(limit=2)
    limitry.limits.archive(page["items"][-1]["id"])
    rest = limitry.limits.list(limit=2, cursor=page["nextCursor"])
    assert [x["id"] for x in rest["items"]] == [made[1]["id"], made[0]["id"]]


def test_a_whole_float_cost_is_a_cost_and_a_fresh_limit_has_a_window_start(
    limitry: Limitry,
) -> None:
    limit = limitry.limits.create(subject={"kind": "user"}, amount=5, window="day")
    assert limitry.usage.subjects(limit_id=limit["id"])["windowStart"] == (
        "2026-01-15T00:00:00.000Z"
    )
    decision = limitry.checks.create(subject=USER, action="a", cost=2.0)  # type: ignore[arg-type]
    assert decision["limits"][0]["remaining"] == 3
    refused(
        lambda: limitry.checks.create(subject=USER, action="a", cost=2.5),  # type: ignore[arg-type]
        400,
        "invalid_request",
        "cost",
    )


def test_an_idempotency_key_is_replayed_for_a_day_then_purged(
    limitry: Limitry, clock: ManualClock
) -> None:
    """The SDK sends a fresh key with every write: answers are kept a day, then dropped."""
    limitry.limits.create(subject={"kind": "user"}, amount=10, window="month")
    ledger = limitry.tracker.engine.ledger
    first = limitry.checks.create(subject=USER, action="a", idempotency_key="k1")
    clock.advance(DAY - 1)
    assert limitry.checks.create(subject=USER, action="a", idempotency_key="k1") == first
    clock.advance(1)
    later = limitry.checks.create(subject=USER, action="a", idempotency_key="k1")
    assert later["id"] != first["id"]  # a new check, counted again
    assert limitry.standing(subject=USER)["limits"][0]["used"] == 2
    stored = {key for key, _ in ledger.records("idempotency")}
    assert "k1" in stored
    clock.advance(DAY + 3600)  # k1's second answer is past its day, and a purge is due
    limitry.checks.create(subject=USER, action="a", idempotency_key="k2")
    assert {key for key, _ in ledger.records("idempotency")} == {"k2"}


@pytest.mark.parametrize("kind", ["team/eu", "team:eu"])
def test_a_subject_kind_is_one_segment(limitry: Limitry, kind: str) -> None:
    """Found in review: over HTTP, kind "team/eu" with id "42" was served as kind
    "team" with id "eu/42", another subject; and "kind:id" cannot hold a ":" kind.
    Refused when a limit is made, so limits made before still answer checks."""
    refused(
        lambda: limitry.limits.create(subject={"kind": kind}, amount=1, window="day"),
        400,
        "invalid_request",
        "subject.kind",
    )
    # A check names no new kind: it finds no limit of this one, and is allowed.
    assert limitry.checks.create(subject={"kind": kind, "id": "42"}, action="a")["allowed"]
