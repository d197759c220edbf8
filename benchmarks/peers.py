"""The peers, configured as their documentation shows, per key, with a limit that never denies.

- ``limits``: one ``MemoryStorage`` per limiter, ``hit(item, key)`` with a
  ``RateLimitItemPerMinute``.
- ``pyrate-limiter`` (v4): ``Limiter.try_acquire(key, blocking=False)``
  through a :class:`~pyrate_limiter.BucketFactory` that gives every key its
  own bucket (the README's ``PerNameFactory``; a plain ``Limiter(bucket)``
  has one bucket for every name).  Buckets are made with
  ``factory.create``, which schedules their leak on pyrate's background
  leaker thread, as in production.  In memory an ``InMemoryBucket`` per key;
  on a file a ``SQLiteBucket`` per key, each its own table on one shared
  connection (WAL, ``synchronous=NORMAL``, like limitry_local's default),
  with one lock shared by every bucket and the leaker so they take turns on
  that connection.  On Redis a ``RedisBucket`` per key (a sorted set, one
  Lua script call per acquire), all on one client.
- ``limits`` on Redis: ``RedisStorage`` from ``storage_from_string(url)``,
  the same strategies (one Lua script or pipeline per hit).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from functools import partial
from pathlib import Path
from typing import Literal, cast

import redis
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from pyrate_limiter import (
    AbstractBucket,
    BucketFactory,
    Duration,
    InMemoryBucket,
    Limiter,
    MonotonicClock,
    Rate,
    RateItem,
    RedisBucket,
    SQLiteBucket,
    SQLiteQueries,
)

from benchmarks.harness import Op

Strategy = Literal["fixed", "moving"]


class LimitsPeer:
    """``limits``: ``FixedWindowRateLimiter`` or ``MovingWindowRateLimiter``.

    ``MemoryStorage`` by default, or the storage a URL names (``redis://...``).
    """

    def __init__(self, strategy: Strategy, limit: int, url: str | None = None) -> None:
        self.storage: Storage = (
            MemoryStorage() if url is None else cast(Storage, storage_from_string(url))
        )
        limiter = (
            FixedWindowRateLimiter(self.storage)
            if strategy == "fixed"
            else MovingWindowRateLimiter(self.storage)
        )
        self.op: Op = partial(limiter.hit, RateLimitItemPerMinute(limit))

    def close(self) -> None:
        if isinstance(self.storage, MemoryStorage):
            self.storage.timer.cancel()
        else:
            self.storage.reset()


class _PerKeyMemory(BucketFactory):
    """The README's ``PerNameFactory``: one ``InMemoryBucket`` per name, made on first use."""

    def __init__(self, rates: list[Rate]) -> None:
        self.clock = MonotonicClock()
        self.rates = rates
        self.buckets: dict[str, AbstractBucket] = {}

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, self.clock.now(), weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        bucket = self.buckets.get(item.name)
        if bucket is None:
            bucket = self.buckets[item.name] = self.create(InMemoryBucket, self.rates)
        return bucket


class _PerKeySqlite(BucketFactory):
    """One ``SQLiteBucket`` (a table) per name, all on one connection and one lock."""

    def __init__(self, rates: list[Rate], conn: sqlite3.Connection) -> None:
        self.rates = rates
        self.conn = conn
        self.lock = threading.RLock()
        self.buckets: dict[str, AbstractBucket] = {}

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        # SQLiteBucket.now(): wall-clock milliseconds.
        return RateItem(name, time.time_ns() // 1_000_000, weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        bucket = self.buckets.get(item.name)
        if bucket is None:
            table = f"bucket_{len(self.buckets)}"
            with self.lock:
                self.conn.execute(SQLiteQueries.CREATE_BUCKET_TABLE.format(table=table))
                self.conn.execute(
                    SQLiteQueries.CREATE_INDEX_ON_TIMESTAMP.format(
                        index_name=f"idx_{table}_rate_item_timestamp", table_name=table
                    )
                )
                self.conn.commit()
            bucket = self.buckets[item.name] = self.create(
                SQLiteBucket, self.rates, self.conn, table, self.lock
            )
        return bucket


class _PerKeyRedis(BucketFactory):
    """One ``RedisBucket`` (a sorted set) per name, all on one client."""

    def __init__(self, rates: list[Rate], client: redis.Redis, prefix: str) -> None:
        self.rates = rates
        self.client = client
        self.prefix = prefix
        self.buckets: dict[str, AbstractBucket] = {}

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        # RedisBucket.now(): wall-clock milliseconds.
        return RateItem(name, time.time_ns() // 1_000_000, weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        bucket = self.buckets.get(item.name)
        if bucket is None:
            # RedisBucket.init loads its Lua script; create() would skip that.
            bucket = RedisBucket.init(self.rates, self.client, f"{self.prefix}{item.name}")
            self.schedule_leak(bucket)
            self.buckets[item.name] = bucket
        return bucket


class PyrateRedisPeer:
    """``pyrate_limiter.Limiter`` with a ``RedisBucket`` per key."""

    def __init__(self, limit: int, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix
        self.limiter = Limiter(_PerKeyRedis([Rate(limit, Duration.MINUTE)], self.client, prefix))
        self.op: Op = partial(self.limiter.try_acquire, blocking=False)

    def close(self) -> None:
        self.limiter.close()
        for key in self.client.scan_iter(f"{self.prefix}*"):
            self.client.delete(key)
        self.client.close()


class PyratePeer:
    """``pyrate_limiter.Limiter`` with a bucket per key, in memory or on a SQLite file."""

    def __init__(self, limit: int, path: Path | None = None) -> None:
        rates = [Rate(limit, Duration.MINUTE)]
        self._conn: sqlite3.Connection | None = None
        factory: BucketFactory
        if path is None:
            factory = _PerKeyMemory(rates)
        else:
            # What SQLiteBucket.init_from_file opens, plus limitry_local's default durability.
            self._conn = sqlite3.connect(
                str(path), isolation_level="DEFERRED", check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            factory = _PerKeySqlite(rates, self._conn)
        self.limiter = Limiter(factory)
        self.op: Op = partial(self.limiter.try_acquire, blocking=False)

    def close(self) -> None:
        self.limiter.close()
        if self._conn is not None:
            self._conn.close()
