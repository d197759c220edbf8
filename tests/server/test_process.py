"""The server as an operator runs it: signals, a batched ledger, several workers on one file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from limitry_local import Tracker
from tests.server.conftest import API_KEY, Server, running

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def committed_events(db: Path) -> int:
    """Events committed to the file, as any other reader of it sees them."""
    with sqlite3.connect(db, timeout=10) as conn:
        count: int = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return count


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_commits_a_batched_ledger_before_exit(tmp_path: Path, sig: signal.Signals) -> None:
    db = tmp_path / "batched.db"
    # A batch that would wait ten minutes: only the shutdown can commit it.
    with running(db, "--durability", "batched", "--flush-ms", "600000") as server:
        with httpx.Client(base_url=server.url, headers=AUTH) as client:
            tracked = [
                client.post("/track", json={"customerId": f"c{i}", "eventType": "call"})
                for i in range(5)
            ]
            batch = client.post(
                "/events/batch",
                json={"events": [{"customerId": "b", "eventType": "call"}] * 20},
            )
        assert [answer.status_code for answer in tracked] == [201] * 5
        assert batch.json() == {"count": 20}
        assert committed_events(db) == 0  # acknowledged, still pending in the batch

        # uvicorn shuts down gracefully, then re-raises a SIGTERM it caught (so a
        # supervisor sees the process end of it); Ctrl-C ends in a plain exit.
        assert server.stop(sig) in (0, -sig), server.output()
        assert "Application shutdown complete" in server.output()

    assert committed_events(db) == 25
    with Tracker(db) as tracker:
        ids = {event.id for event in tracker.events.list(limit=100).data}
    assert {answer.json()["id"] for answer in tracked} <= ids


def _workers(server: Server) -> list[int]:
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_two_workers_on_one_file_admit_exactly_a_tight_quota(tmp_path: Path) -> None:
    limit, attempts = 20, 120
    with running(tmp_path / "shared.db", "--workers", "2") as server:
        assert len(_workers(server)) >= 2, server.output()  # uvicorn's supervisor, 2 workers
        with httpx.Client(base_url=server.url, headers=AUTH) as client:
            created = client.post(
                "/quotas",
                json={"name": "tight", "metric": "total_events", "limitValue": limit,
                      "period": "day"},
            )  # fmt: skip
            assert created.status_code == 201

        async def hammer() -> list[int]:
            # Many connections at once, so both workers take requests.
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
            async with httpx.AsyncClient(
                base_url=server.url, headers=AUTH, limits=limits, timeout=60
            ) as http:
                answers = await asyncio.gather(
                    *(
                        http.post("/track", json={"customerId": f"c{i}", "eventType": "call"})
                        for i in range(attempts)
                    )
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(hammer())
        assert statuses.count(201) == limit
        assert statuses.count(429) == attempts - limit
        assert server.stop() in (0, -signal.SIGTERM), server.output()
    assert committed_events(tmp_path / "shared.db") == limit
