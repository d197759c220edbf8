"""The benchmark floors do the work they claim, so the rows measured against them mean something."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchmarks import event_ids
from benchmarks.floors import (
    ContractFloor,
    LimitsFloor,
    LockedBucketFloor,
    Schema,
    SqliteFloor,
    TokenBucketFloor,
)
from limitry_local import Tracker, TrackPostResponse


def _event(customer: str, tokens: int = 60) -> dict[str, object]:
    return {
        "customer_id": customer,
        "event_type": "model_call",
        "input_tokens": tokens,
        "output_tokens": tokens,
    }


def test_the_token_bucket_floor_denies_once_empty() -> None:
    bucket = TokenBucketFloor(capacity=2, window_seconds=3600)
    assert [bucket.take("k"), bucket.take("k"), bucket.take("k"), bucket.take("j")] == [
        True,
        True,
        False,
        True,
    ]
    assert bucket.tokens("k") < 1 <= bucket.tokens("j") < 2


def test_the_locked_floor_checks_a_hits_arguments_and_shares_one_bucket_per_key() -> None:
    hit = LockedBucketFloor(capacity=50, window_seconds=3600).hit
    with pytest.raises(TypeError):
        hit("a", "b")
    with pytest.raises(TypeError):
        hit("a", cost=True)
    answers: list[bool] = []

    def spend() -> None:
        answers.extend(hit("k") for _ in range(40))

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers.count(True) == 50  # of 160 hits, whatever the interleaving
    assert hit("j") is True


@pytest.mark.parametrize("validate", [True, False])
def test_the_contract_floor_answers_a_valid_201_and_enforces_both_limits(validate: bool) -> None:
    floor = ContractFloor(capacity=3, quota_limit=300, validate=validate)
    first = floor.usage(_event("a"))
    assert isinstance(first, TrackPostResponse)
    # Built without validation, it must still be what validation would build.
    rebuilt = TrackPostResponse.model_validate(first.model_dump())
    assert rebuilt.model_dump() == first.model_dump()
    assert rebuilt.model_fields_set == first.model_fields_set
    assert first.rate_limits[0].remaining == 2
    assert first.quotas[0].used == 120
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert floor.usage(_event("a", 30)) is not None
    assert floor.usage(_event("a", 61)) is None  # 180 + 122 tokens > the quota of 300
    assert floor.usage(_event("a", 1)) is not None  # the third request: 182 tokens
    assert floor.usage(_event("a", 1)) is None  # the bucket of 3 is empty
    assert floor.usage(_event("b")) is not None


def test_the_limits_floor_answers_every_limit_and_writes_all_or_nothing() -> None:
    # Rate 0: events a minute; rate 1: tokens a second.  Quota 0: tokens a day;
    # quota 1: events an hour.  Every quota's limit is 50.
    floor = LimitsFloor(rates=2, quotas=2, capacity=300, quota_limit=50)
    first = floor.usage(_event("a", 10))
    assert isinstance(first, TrackPostResponse)
    rebuilt = TrackPostResponse.model_validate(first.model_dump())
    assert rebuilt.model_dump() == first.model_dump()
    assert [s.remaining for s in first.rate_limits] == [299, 280]
    assert [(q.metric, q.used) for q in first.quotas] == [("total_tokens", 20), ("total_events", 1)]
    assert first.headers["X-RateLimit-Remaining"] == "280"
    assert floor.usage(_event("a", 10)) is not None  # 40 tokens of 50
    assert floor.usage(_event("a", 10)) is None  # 60 would pass the quota
    last = floor.usage(_event("a", 5))  # 50: the denial counted nothing
    assert last is not None
    assert [q.used for q in last.quotas] == [50, 3]
    assert last.rate_limits[0].remaining == 297  # nor took a token

    rates_only = LimitsFloor(rates=2, quotas=0, capacity=300, quota_limit=50)
    assert rates_only.usage(_event("a", 100)) is not None  # 200 of the 300 tokens
    assert rates_only.usage(_event("a", 100)) is None  # the token bucket holds about 100
    again = rates_only.usage(_event("a", 25))
    assert again is not None
    assert again.rate_limits[0].remaining == 298  # the denial took no request token


def test_the_contract_floor_rejects_a_bad_event_only_when_it_validates() -> None:
    bad = {**_event("a"), "input_tokens": -1}
    with pytest.raises(ValueError, match="input_tokens"):
        ContractFloor(capacity=3, quota_limit=300).usage(bad)
    # Trusting the dict is the cheaper row: nothing looks at the values.
    assert ContractFloor(capacity=3, quota_limit=300, validate=False).usage(bad) is not None


@pytest.mark.parametrize(
    ("schema", "read_counter"), [("minimal", True), ("ledger", True), ("ledger", False)]
)
def test_the_contract_floor_records_its_events_through_its_sqlite_floor(
    tmp_path: Path, schema: Schema, read_counter: bool
) -> None:
    path = tmp_path / "floor.db"
    quota_id = ""
    if schema == "ledger":
        with Tracker(path) as tracker:
            quota_id = tracker.quotas.create(
                name="q", metric="total_tokens", period="day", limit_value=10**6
            ).id
    db = SqliteFloor(
        path, schema=schema, quota_id=quota_id, commit_every=2, read_counter=read_counter
    )
    floor = ContractFloor(capacity=10, quota_limit=10**6, sqlite=db)
    answers = [floor.usage(_event(customer, tokens)) for customer, tokens in [("a", 7), ("b", 60)]]
    answers.append(floor.usage(_event("a", 5)))
    floor.close()
    with sqlite3.connect(path) as conn:
        counters = "counters" if schema == "minimal" else "quota_counters"
        used = dict(conn.execute(f"SELECT key, used FROM {counters}").fetchall())
        assert sorted(used.values()) == [24, 120]
        if schema == "ledger":
            ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
            assert ids == [answer.id for answer in answers if answer is not None]
        else:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_the_event_id_benchmark_fills_both_layouts_and_prints_their_rows(tmp_path: Path) -> None:
    samples = event_ids.measure(50, 1000, tmp_path)
    assert set(samples) == set(event_ids.LAYOUTS)
    assert all(len(values) == 2 and min(values) > 0 for values in samples.values())
    # Each file holds its 50 filled events and the 1000 timed ones, ids of its own layout.
    for i, name in enumerate(event_ids.LAYOUTS):
        with sqlite3.connect(tmp_path / f"ids-{i}-50.db") as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
        assert len(ids) == len(set(ids)) == 1050
        millis = [event_id[4:16] for event_id in ids]
        assert (millis == sorted(millis)) == (name == "time-ordered (new_id)")

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.event_ids", "--sizes", "10", "--inserts", "500"],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 10 |")]
    assert [row.split("|")[2].strip() for row in rows] == list(event_ids.LAYOUTS)
