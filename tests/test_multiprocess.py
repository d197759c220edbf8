"""Several processes on one ledger admit exactly, lose nothing and record a key once.

Real processes (a team spawned once for the module,
tests/multiprocess_children.py), each with its own Tracker, against a real
PostgreSQL schema of their own and a real SQLite file; they start on one
barrier.  Only the public API is used, so the tests
hold whatever the ledger does inside (a schema lock, row locks, one
server-side call).

Every event matches four quotas at once: the tight one (one counter every
process shares), two per region (three counters each, their ``per``
dimensions in different orders) and one without ``per`` (one counter).  The
events' keywords and properties come in a random order, and each event
picks its region at random, so processes take the counter rows of one call
in every combination: a writer that locked counter rows in the order an
event names them, rather than in one global order, deadlocks here (the
server's deadlock error reaches the test as the child's traceback) or, if
it dropped the lock to avoid that, admits past the limit.  Every wait is
bounded: a stuck process fails the test within ``TIMEOUT`` seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from limitry_local import Tracker
from limitry_local.limitry import Limitry
from tests.conftest import POSTGRES_DSN, START, postgres_schema
from tests.multiprocess_children import REGIONS, SHARED, Ledger, Team, admit, check, replay

PROCESSES = 6
TIMEOUT = 90.0
"""Seconds every process together may take, start-up included."""
DIMENSIONS = {**SHARED, "team": "core", "tier": "gold"}


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    """The processes every test of the module runs in."""
    team = Team(PROCESSES, timeout=TIMEOUT)
    try:
        yield team
    finally:
        team.close()


@pytest.fixture(params=["postgres", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """One ledger the processes share: a fresh PostgreSQL schema, or a file in tmp_path."""
    if request.param == "sqlite":
        yield Ledger(path=str(tmp_path / "shared.db"))
        return
    with postgres_schema() as schema:
        yield Ledger(dsn=POSTGRES_DSN, schema=schema)


def _quotas(tracker: Tracker, tight: int) -> dict[str, str]:
    """The four quotas every event of the tests matches: name -> id."""
    made = [
        tracker.quotas.create(
            name="tight",
            metric="total_events",
            limit_value=tight,
            period="day",
            per=["customer_id", "model", "team"],
        ),
        tracker.quotas.create(
            name="tokens by region",
            metric="total_tokens",
            limit_value=10**9,
            period="day",
            per=["region", "customer_id"],
        ),
        tracker.quotas.create(
            name="events by region",
            metric="total_events",
            limit_value=10**9,
            period="hour",
            dimension_filters={"tier": "gold"},
            per=["model", "region", "tier"],
        ),
        tracker.quotas.create(
            name="all tokens", metric="total_tokens", limit_value=10**9, period="month"
        ),
    ]
    return {quota.name: quota.id for quota in made}


def _event_ids(tracker: Tracker) -> list[str]:
    """Every event in the ledger, through the public list, page by page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = tracker.events.list(limit=100, cursor=cursor)
        ids.extend(event.id for event in page.data)
        if not page.has_more:
            return ids
        cursor = page.next_cursor


def _used(tracker: Tracker, region: str) -> dict[str, float]:
    """What each quota counted for an event of ``region``: quota id -> used."""
    check = tracker.quotas.check({**DIMENSIONS, "region": region})
    return {status.id: status.used for status in check.quotas}


def test_processes_admit_exactly_the_tight_quota_and_lose_nothing(
    team: Team, ledger: Ledger
) -> None:
    limit, calls = 40, 15  # 6 x 15 = 90 tries at 40
    with ledger.tracker(START) as setup:
        quotas = _quotas(setup, limit)

    answers = team.run(admit, [(ledger, START, seed, calls) for seed in range(PROCESSES)])

    admitted: list[tuple[str, str, int]] = [event for _, got, _ in answers for event in got]
    denials: list[list[str]] = [ids for _, _, denied in answers for ids in denied]
    # Exactly the limit, every id distinct; the rest denied by the tight quota alone.
    assert len(admitted) == limit
    assert len({event_id for event_id, _, _ in admitted}) == limit
    assert len(denials) == PROCESSES * calls - limit
    assert all(ids == [quotas["tight"]] for ids in denials)
    # The race was a race: more than one process got a share.
    assert sum(1 for _, got, _ in answers if got) > 1

    with ledger.tracker(START) as tracker:
        # Nothing admitted is lost, and nothing denied was recorded.
        recorded = _event_ids(tracker)
        assert sorted(recorded) == sorted(event_id for event_id, _, _ in admitted)
        # Every counter equals the sum of the admitted events it counts.
        tokens = Counter[str]()
        events = Counter[str]()
        for _, region, amount in admitted:
            tokens[region] += amount
            events[region] += 1
        for region in REGIONS:
            assert _used(tracker, region) == {
                quotas["tight"]: limit,
                quotas["tokens by region"]: tokens[region],
                quotas["events by region"]: events[region],
                quotas["all tokens"]: sum(tokens.values()),
            }


def test_an_idempotency_key_sent_by_every_process_at_once_is_recorded_once(
    team: Team, ledger: Ledger
) -> None:
    keys = 12
    with ledger.tracker(START) as setup:
        quotas = _quotas(setup, 10**6)

    answers = team.run(replay, [(ledger, START, seed, keys) for seed in range(PROCESSES)])

    bodies: list[list[dict[str, Any]]] = [got for _, got, _ in answers]
    # Every process got the first response of each key: the same id, the same counts.
    for key in range(keys):
        first = bodies[0][key]
        assert all(body[key] == first for body in bodies), f"race-{key} answered differently"
    ids = [bodies[0][key]["id"] for key in range(keys)]
    assert len(set(ids)) == keys

    with ledger.tracker(START) as tracker:
        assert sorted(_event_ids(tracker)) == sorted(ids)
        # Each key counted once: event k carries k + 1 tokens.
        all_tokens = keys * (keys + 1) // 2
        for region in REGIONS:
            mine = [k for k in range(keys) if REGIONS[k % 3] == region]
            assert _used(tracker, region) == {
                quotas["tight"]: keys,
                quotas["tokens by region"]: sum(k + 1 for k in mine),
                quotas["events by region"]: len(mine),
                quotas["all tokens"]: all_tokens,
            }


def test_limitry_checks_from_every_process_admit_exactly_each_limit(
    team: Team, ledger: Ledger
) -> None:
    """Limitry 1.0 on a shared ledger: 6 processes, pools in random orders (so their
    counters' locks are asked in every order), a first-use period made by the race."""
    limit, slots, calls = 40, 3, 15
    with ledger.tracker(START) as tracker:
        setup = Limitry(tracker)
        user = setup.limits.create(subject={"kind": "user"}, amount=limit, window="day")
        pool = setup.limits.create(subject={"kind": "team"}, amount=10**6, window="total")
        org = setup.limits.create(
            subject={"kind": "org"}, amount=10**6, window="week", start="first_use"
        )
        setup.limits.create(subject={"kind": "agent"}, amount=slots, window="concurrent")

    answers = team.run(check, [(ledger, START, seed, calls) for seed in range(PROCESSES)])

    assert sum(got[0] for _, got, _ in answers) == limit
    assert sum(1 for _, got, _ in answers if got[0]) > 1  # a race, not one winner
    assert sum(got[1] for _, got, _ in answers) == slots
    with ledger.tracker(START) as tracker:
        limitry = Limitry(tracker)
        used = {
            x["limitId"]: x["used"]
            for who in ("user:u1", "team:t1", "org:o1", "agent:a1")
            for x in limitry.usage.standing(subject=who)["limits"]
        }
        assert used[user["id"]] == used[pool["id"]] == used[org["id"]] == limit
        assert limitry.subjects.get("org", "o1")["billingDate"] is not None
        refused = limitry.usage.query(limit_id=user["id"], granularity="hour")["points"][-1]
        assert (refused["allowed"], refused["refused"]) == (limit, PROCESSES * calls - limit)
