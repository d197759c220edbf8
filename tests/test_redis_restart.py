"""A Redis restarted without persistence forgets every bucket (issue 20, item 4).

A missing bucket reads as full, so after such a restart every key may spend
a whole capacity again; with the append-only file on, a restart keeps the
buckets.  Each test starts its own redis-server on a free port, in its own
directory, and stops only that process (never the shared server on 6379).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from limitry_local import RateLimitExceeded, RedisBuckets, Tracker
from limitry_local.testing import ManualClock
from tests.conftest import START

NO_PERSISTENCE = ["--save", "", "--appendonly", "no"]
AOF = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]


class OwnRedis:
    """A redis-server of this test's own, restartable in place."""

    def __init__(self, directory: Path, options: list[str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.directory), *self.options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1.0)
        deadline = time.monotonic() + 30
        try:
            while True:  # a process starting up: nothing a manual clock can drive
                try:
                    client.ping()
                    return
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: a clean shutdown, AOF flushed
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture(params=["no persistence", "append-only file"])
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path, NO_PERSISTENCE if request.param == "no persistence" else AOF)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _admitted(tracker: Tracker, customer: str, calls: int) -> int:
    admitted = 0
    for _ in range(calls):
        try:
            tracker.usage(customer_id=customer, event_type="e")
            admitted += 1
        except RateLimitExceeded:
            pass
    return admitted


def test_a_restart_refills_every_bucket_unless_redis_persists_them(own_redis: OwnRedis) -> None:
    clock = ManualClock(START)
    store = RedisBuckets(own_redis.url, clock="client", ttl_margin=3600)
    with Tracker(clock=clock, rate_limits=store) as tracker:
        tracker.rate_limits.create(name="r", limit_value=3, window="hour", per=["customer_id"])
        assert _admitted(tracker, "cust_1", 5) == 3
        own_redis.stop()
        own_redis.start()
        again = _admitted(tracker, "cust_1", 5)
    if own_redis.options is NO_PERSISTENCE:
        assert again == 3  # the bucket was forgotten: a whole capacity once more
    else:
        assert again == 0  # the append-only file kept the empty bucket
