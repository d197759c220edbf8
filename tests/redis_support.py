"""The Redis the tests share: where it is, fresh key prefixes, and cleaning up after.

Tests talk to a real server (``LIMITRY_TEST_REDIS_URL``, default database 15 on
127.0.0.1:6379, which ``.ci/run`` starts).  One that cannot reach it fails:
nothing here skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import redis

from limitry_local.buckets import RateLimitStore
from limitry_local.redis_buckets import ClockSource, RedisBuckets

REDIS_URL = os.environ.get("LIMITRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

RateStores = Callable[[], RateLimitStore | None]
"""Makes a fresh rate-limit store for one Tracker (None: the Tracker's in-memory default)."""

# A manual clock does not run at real speed, so TTLs (real time on the server)
# must outlast any test that drives one.
MANUAL_CLOCK_TTL_MARGIN = 3600.0


def new_prefix() -> str:
    """A key prefix no other test (or run) uses."""
    return f"limitry-test:{uuid.uuid4().hex}:"


def raw_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5.0, socket_connect_timeout=5.0)


class RedisStores:
    """Makes RedisBuckets on fresh prefixes and deletes all their keys on :meth:`cleanup`."""

    def __init__(self) -> None:
        self.prefixes: list[str] = []
        self.stores: list[RedisBuckets] = []

    def new(
        self,
        *,
        clock: ClockSource = "client",
        ttl_margin: float = MANUAL_CLOCK_TTL_MARGIN,
        prefix: str | None = None,
    ) -> RedisBuckets:
        """A store on a fresh prefix, or on ``prefix`` to share another's buckets."""
        if prefix is None:
            prefix = new_prefix()
            self.prefixes.append(prefix)
        store = RedisBuckets(REDIS_URL, prefix=prefix, clock=clock, ttl_margin=ttl_margin)
        self.stores.append(store)
        return store

    def cleanup(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()
        client = raw_client()
        try:
            for prefix in self.prefixes:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
        finally:
            client.close()
        self.prefixes.clear()
