"""The floors: the least work each workload could possibly do, to measure the others against.

- :class:`TokenBucketFloor`: a minimal pure-Python token bucket, a dict of
  ``key -> (tokens, timestamp)`` refilled continuously.  Nothing cheaper
  decides a rate limit per key in Python.
- :class:`LockedBucketFloor`: that take under a lock, with a gate hit's
  argument checks: the least a thread-safe hit can do.
- :class:`ContractFloor`: the least one ``usage()`` call can do and still
  answer in the API contract's models: the event validated into a
  ``TrackPostRequest``, a :class:`TokenBucketFloor` take, a dict quota
  counter, the event kept (in a list or a :class:`SqliteFloor`), and the 201
  ``TrackPostResponse`` with its statuses and headers.
- :class:`LimitsFloor`: the same call for several rate limits and quotas at
  once, one status each: what every extra matching limit costs the contract.
- :class:`SqliteFloor`: raw ``sqlite3`` recording one event per call, one
  event ``INSERT`` plus one counter upsert (``INSERT ... ON CONFLICT DO
  UPDATE``) and one ``COMMIT`` (or one commit per ``commit_every`` events),
  with Python's cached prepared statements and explicit transactions.  On
  its own minimal schema, or on a ledger file written by limitry_local, where
  it also reads the counter first (a quota check needs it) and fills every
  column of the ledger's events table.
- :class:`PostgresFloor`: the same writes with raw ``psycopg`` on a
  PostgreSQL schema of its own (BEGIN; event ``INSERT``; counter upsert;
  ``COMMIT`` per event), shaped like the ledger's events and counters
  tables but independent of them, so it stays a floor while the ledger's
  internals change.  Several processes on one schema measure what the
  server does with the writes of P writers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal

import psycopg

from limitry_local.headers import rate_limit_headers
from limitry_local.ids import new_id
from limitry_local.models import (
    MAX_AMOUNT,
    QuotaStatus,
    RateLimitStatus,
    TrackPostRequest,
    TrackPostResponse,
    trusted,
)

Schema = Literal["minimal", "ledger"]

_MINIMAL_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    "seq INTEGER PRIMARY KEY, ts REAL NOT NULL, customer_id TEXT, total_tokens INTEGER)",
    "CREATE TABLE IF NOT EXISTS counters ("
    "key TEXT NOT NULL, period_start INTEGER NOT NULL, used INTEGER NOT NULL, "
    "PRIMARY KEY (key, period_start))",
)
_MINIMAL_INSERT = "INSERT INTO events (ts, customer_id, total_tokens) VALUES (?, ?, ?)"
_MINIMAL_UPSERT = (
    "INSERT INTO counters (key, period_start, used) VALUES (?, ?, ?) "
    "ON CONFLICT (key, period_start) DO UPDATE SET used = used + excluded.used"
)

# Every column of the ledger's events table, as usage() writes them: a floor
# that bound fewer (it left out the last two, added with the schema) did less.
LEDGER_INSERT = (
    "INSERT INTO events (id, ts, customer_id, event_type, model, provider, input_tokens, "
    "output_tokens, total_tokens, latency_ms, cost_cents, properties, idempotency_key, "
    "cached_input_tokens, cost_micro_cents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LEDGER_READ = "SELECT used FROM quota_counters WHERE quota_id = ? AND key = ? AND period_start = ?"
_LEDGER_UPSERT = (
    "INSERT INTO quota_counters (quota_id, key, period_start, used) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (quota_id, key, period_start) DO UPDATE SET used = used + excluded.used"
)

_DAY = 86_400


class TokenBucketFloor:
    """``capacity`` tokens per key, refilled at ``capacity / window_seconds`` per second.

    >>> bucket = TokenBucketFloor(capacity=2, window_seconds=60)
    >>> [bucket.take("k"), bucket.take("k"), bucket.take("k")]
    [True, True, False]
    """

    __slots__ = ("_buckets", "_capacity", "_clock", "_rate")

    def __init__(self, capacity: float, window_seconds: float) -> None:
        self._capacity = float(capacity)
        self._rate = self._capacity / window_seconds
        self._buckets: dict[str, tuple[float, float]] = {}
        self._clock = time.monotonic

    def take(self, key: str) -> bool:
        """Spend one token of ``key``'s bucket; False (nothing spent) when it is empty."""
        now = self._clock()
        state = self._buckets.get(key)
        if state is None:
            tokens = self._capacity
        else:
            tokens = state[0] + (now - state[1]) * self._rate
            if tokens > self._capacity:  # noqa: PLR1730 (min() is a call: slower here)
                tokens = self._capacity
        if tokens < 1.0:
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def tokens(self, key: str) -> float:
        """Tokens left in ``key``'s bucket at its last take."""
        state = self._buckets.get(key)
        return self._capacity if state is None else state[0]

    def __len__(self) -> int:
        return len(self._buckets)


class LockedBucketFloor:
    """A :class:`TokenBucketFloor` take made safe to share: what a gate hit cannot do without.

    ``hit(*key, cost=1)`` as :meth:`RateGate.hit <limitry_local.gate.RateGate.hit>`
    is called: under one reentrant lock (two threads must not both take the
    last token), with the same argument checks (the key's arity, the cost an
    int in range), then the dict bucket's take.  Still cheaper than a gate:
    one token per call whatever ``cost`` says, a bucket named by its key
    alone, no bound on the buckets kept, no limit that can change.
    """

    __slots__ = ("hit",)

    def __init__(self, capacity: float, window_seconds: float) -> None:
        take = TokenBucketFloor(capacity, window_seconds).take
        lock = threading.RLock()

        def hit(*key: str, cost: int = 1) -> bool:
            lock.acquire()
            try:
                if len(key) != 1 or cost.__class__ is not int or cost < 0 or cost > MAX_AMOUNT:
                    raise TypeError(
                        f"a key of one value and a cost in range, got {key!r}, {cost!r}"
                    )
                return take(key[0])
            finally:
                lock.release()

        self.hit = hit


class SqliteFloor:
    """Record one event per :meth:`record` call with raw ``sqlite3``.

    ``path`` is a file (WAL, ``synchronous=NORMAL``: limitry_local's default
    durability) or ``None`` for an in-memory database.  ``schema="ledger"``
    writes into a ledger file that limitry_local created (``quota_id`` names
    the quota whose counter it keeps) and reads the counter before writing.
    ``commit_every`` > 1 keeps one transaction open across that many events.
    ``read_counter=False`` skips the counter read (for a batch, which holds
    the write lock across its events, a cache could answer it).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        schema: Schema = "minimal",
        quota_id: str = "",
        commit_every: int = 1,
        read_counter: bool = True,
    ) -> None:
        self._conn = sqlite3.connect(
            ":memory:" if path is None else str(path),
            isolation_level=None,
            check_same_thread=False,
        )
        if path is not None:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        if schema == "minimal":
            for statement in _MINIMAL_SCHEMA:
                self._conn.execute(statement)
        self._schema: Schema = schema
        self._quota_id = quota_id
        self._commit_every = commit_every
        self._read_counter = read_counter
        self._pending = 0

    def record(
        self,
        customer_id: str,
        event_id: str | None = None,
        input_tokens: int = 100,
        output_tokens: int = 20,
    ) -> None:
        """One event for ``customer_id``, its total tokens counted in today's counter.

        The event's id, where the ledger schema keeps one, is ``event_id`` or
        a fresh one in ``usage()``'s layout (``limitry_local.ids.new_id``).
        """
        conn = self._conn
        tokens = input_tokens + output_tokens
        now = time.time()
        day = int(now) // _DAY * _DAY
        if self._pending == 0:
            conn.execute("BEGIN IMMEDIATE")
        if self._schema == "minimal":
            conn.execute(_MINIMAL_INSERT, (now, customer_id, tokens))
            conn.execute(_MINIMAL_UPSERT, (customer_id, day, tokens))
        else:
            key = f'["{customer_id}"]'
            if self._read_counter:
                conn.execute(_LEDGER_READ, (self._quota_id, key, day)).fetchone()
            conn.execute(
                LEDGER_INSERT,
                (
                    event_id or new_id("evt"),
                    now,
                    customer_id,
                    "model_call",
                    "gpt-4o",
                    None,
                    input_tokens,
                    output_tokens,
                    tokens,
                    None,
                    None,
                    "{}",
                    None,
                    None,
                    None,
                ),
            )
            conn.execute(_LEDGER_UPSERT, (self._quota_id, key, day, tokens))
        self._pending += 1
        if self._pending >= self._commit_every:
            conn.execute("COMMIT")
            self._pending = 0

    def close(self) -> None:
        if self._pending:
            self._conn.execute("COMMIT")
            self._pending = 0
        self._conn.close()


class ContractFloor:
    """One track-with-enforcement call with little more than the API contract asks for.

    Per call: the event, a dict as the benchmark's callers pass it, validated
    into a ``TrackPostRequest`` by the model's own validator (``validate=False``
    reads the dict as it is); one token taken from a :class:`TokenBucketFloor`;
    the customer's quota counter read from a dict and added to; the event
    appended to a list, or recorded by ``sqlite`` (a :class:`SqliteFloor`)
    under the same id; and the 201 ``TrackPostResponse`` holding one
    ``RateLimitStatus``, one ``QuotaStatus`` and the ``X-RateLimit-*``
    headers, in the shape ``usage()`` gives, built without revalidation
    (``models.trusted``, as ``usage()`` builds its answer).

    It does less than the contract in ways that only make it cheaper: one
    counter per customer, never per period; a rate-limit ``reset`` that is
    always a window away; no ``timestamp``, idempotency key, limit matching
    or ``per`` keys; no lock.  So it is a lower bound for a Python
    implementation of the contract's call: a target below this row cannot
    be met in Python, and the gap between it and ``usage()`` is the most the
    library's own machinery could give back.
    """

    def __init__(
        self,
        capacity: int,
        quota_limit: int,
        *,
        validate: bool = True,
        sqlite: SqliteFloor | None = None,
    ) -> None:
        self._bucket = TokenBucketFloor(capacity, 60)
        self._capacity = capacity
        self._quota_limit = quota_limit
        self._validator = (
            TrackPostRequest.__pydantic_validator__.validate_python if validate else None
        )
        self._counters: dict[str, int] = {}
        self._events: list[tuple[str, Any]] = []
        self._sqlite = sqlite

    def usage(self, event: dict[str, Any]) -> TrackPostResponse | None:
        """The 201 body, or None where ``usage()`` would raise its 429."""
        if self._validator is None:
            customer = event["customer_id"]
            inputs, outputs = event["input_tokens"], event["output_tokens"]
            request: Any = event
        else:
            request = self._validator(event)
            customer = request.customer_id
            inputs, outputs = request.input_tokens, request.output_tokens
        tokens = inputs + outputs
        used = self._counters.get(customer, 0)
        if used + tokens > self._quota_limit or not self._bucket.take(customer):
            return None
        self._counters[customer] = used + tokens
        event_id = new_id("evt")
        if self._sqlite is None:
            self._events.append((event_id, request))
        else:
            self._sqlite.record(customer, event_id, inputs, outputs)
        now = int(time.time())
        remaining = int(self._bucket.tokens(customer))
        rate = trusted(
            RateLimitStatus,
            {
                "id": "rl_floor",
                "name": "floor",
                "limit": self._capacity,
                "remaining": remaining,
                "reset": now + 60,
                "window": "minute",
                "exceeded": False,
            },
        )
        quota = trusted(
            QuotaStatus,
            {
                "id": "q_floor",
                "name": "floor",
                "metric": "total_tokens",
                "period": "day",
                "limit": self._quota_limit,
                "used": used + tokens,
                "remaining": self._quota_limit - used - tokens,
                "reset": now // _DAY * _DAY + _DAY,
                "exceeded": False,
            },
        )
        return trusted(
            TrackPostResponse,
            {"id": event_id, "allowed": True, "rate_limits": [rate], "quotas": [quota]},
            {"_headers": rate_limit_headers([rate])},
        )

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()


# What LimitsFloor's limits look like: benchmarks.suite._tracker's windows and
# metrics in turn, with each quota's period cut to a fixed length (cheaper).
_FLOOR_WINDOWS = (("minute", 60), ("second", 1), ("hour", 3600), ("1d", 86_400), ("5m", 300))
_FLOOR_PERIODS = (
    ("total_tokens", "day", 86_400),
    ("total_events", "hour", 3_600),
    ("total_tokens", "week", 604_800),
    ("total_events", "month", 2_592_000),
)


class LimitsFloor:
    """:class:`ContractFloor`'s call for ``rates`` rate limits and ``quotas`` quotas at once.

    For workload d2, which asks what each extra matching limit costs: the
    same code for one of each and for five of each, so the ratio of the two
    is the contract's own cost of more limits.  Per call: the event
    validated; every rate limit's dict bucket refilled and every quota's
    dict counter (per customer and period) read, each checked before
    anything is written (the call is all or nothing); then every bucket and
    counter written, the event kept in a list, and the 201 with one status
    per limit (built without revalidation, as ``usage()`` builds them) and
    the ``X-RateLimit-*`` headers.

    Cheaper than the contract as :class:`ContractFloor` is, and more: no
    limit matching (every limit applies), periods of a fixed length (no
    calendar week or month), no lock, no ``timestamp``, no idempotency key.
    """

    def __init__(self, rates: int, quotas: int, capacity: int, quota_limit: int) -> None:
        self._validator = TrackPostRequest.__pydantic_validator__.validate_python
        # (id, name, capacity, tokens per second, window name, window seconds, by tokens, buckets)
        self._rates: list[tuple[str, str, float, float, str, int, bool, dict[str, Any]]] = []
        for i in range(rates):
            window, seconds = _FLOOR_WINDOWS[i % len(_FLOOR_WINDOWS)]
            self._rates.append(
                (
                    f"rl_{i}",
                    f"rate {i}",
                    float(capacity),
                    capacity / seconds,
                    window,
                    seconds,
                    i % 2 == 1,
                    {},
                )
            )
        # (id, name, metric, period name, period seconds, by tokens, counters)
        self._quotas: list[tuple[str, str, str, str, int, bool, dict[Any, int]]] = []
        for i in range(quotas):
            metric, period, seconds = _FLOOR_PERIODS[i % len(_FLOOR_PERIODS)]
            self._quotas.append(
                (f"q_{i}", f"quota {i}", metric, period, seconds, metric == "total_tokens", {})
            )
        self._limit = quota_limit
        self._events: list[tuple[str, Any]] = []

    def usage(self, event: dict[str, Any]) -> TrackPostResponse | None:
        """The 201 body, or None where ``usage()`` would raise its 429."""
        request = self._validator(event)
        customer = request.customer_id
        tokens = request.input_tokens + request.output_tokens
        now = time.time()
        second = int(now)
        lefts = []
        for _, _, capacity, rate, _, _, by_tokens, buckets in self._rates:
            state = buckets.get(customer)
            if state is None:
                left = capacity
            else:
                left = state[0] + (now - state[1]) * rate
                if left > capacity:  # noqa: PLR1730 (min() is a call: slower here)
                    left = capacity
            left -= tokens if by_tokens else 1
            if left < 0:
                return None
            lefts.append(left)
        counts = []
        limit = self._limit
        for _, _, _, _, seconds, by_tokens, counters in self._quotas:
            start = second // seconds * seconds
            used = counters.get((customer, start), 0) + (tokens if by_tokens else 1)
            if used > limit:
                return None
            counts.append((start, used))
        for rule, left in zip(self._rates, lefts, strict=True):
            rule[7][customer] = (left, now)
        for quota, (start, used) in zip(self._quotas, counts, strict=True):
            quota[6][(customer, start)] = used
        event_id = new_id("evt")
        self._events.append((event_id, request))
        rates = [
            trusted(
                RateLimitStatus,
                {
                    "id": rule_id,
                    "name": name,
                    "limit": int(capacity),
                    "remaining": int(left),
                    "reset": second + seconds,
                    "window": window,
                    "exceeded": False,
                },
            )
            for (rule_id, name, capacity, _, window, seconds, _, _), left in zip(
                self._rates, lefts, strict=True
            )
        ]
        quotas = [
            trusted(
                QuotaStatus,
                {
                    "id": quota_id,
                    "name": name,
                    "metric": metric,
                    "period": period,
                    "limit": limit,
                    "used": used,
                    "remaining": limit - used,
                    "reset": start + seconds,
                    "exceeded": False,
                },
            )
            for (quota_id, name, metric, period, seconds, _, _), (start, used) in zip(
                self._quotas, counts, strict=True
            )
        ]
        return trusted(
            TrackPostResponse,
            {"id": event_id, "allowed": True, "rate_limits": rates, "quotas": quotas},
            {"_headers": rate_limit_headers(rates)},
        )


_POSTGRES_SCHEMA = """
    CREATE SCHEMA {s};
    CREATE TABLE {s}.events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        ts double precision NOT NULL,
        customer_id text,
        event_type text,
        model text,
        provider text,
        input_tokens bigint,
        output_tokens bigint,
        total_tokens bigint,
        latency_ms bigint,
        cost_cents double precision,
        properties text NOT NULL,
        idempotency_key text,
        cached_input_tokens bigint,
        cost_micro_cents bigint
    );
    CREATE INDEX ON {s}.events (customer_id, ts);
    CREATE INDEX ON {s}.events (ts);
    CREATE TABLE {s}.counters (
        quota_id text,
        key text,
        period_start bigint,
        used numeric NOT NULL,
        PRIMARY KEY (quota_id, key, period_start)
    );
"""


class PostgresFloor:
    """Record one event per :meth:`record` call with raw ``psycopg``, one transaction each.

    Per event: BEGIN; one event ``INSERT`` (the ledger's 15 columns, an id
    minted as ``usage()`` mints it); one counter upsert (``INSERT ... ON
    CONFLICT DO UPDATE``, the row lock held to the commit, as a quota
    counter's is); COMMIT.  No lock beyond the row's, no counter read, no
    definitions: what the server must do for each event a ``usage()`` on
    PostgreSQL records.  :meth:`create` makes the schema once; each process
    then opens its own ``PostgresFloor`` on it.
    """

    QUOTA_ID = "qta_floor"

    def __init__(self, dsn: str, schema: str) -> None:
        self._conn = psycopg.connect(dsn)
        s = _quoted(schema)
        self._insert = (
            f"INSERT INTO {s}.events (id, ts, customer_id, event_type, model, provider, "
            "input_tokens, output_tokens, total_tokens, latency_ms, cost_cents, properties, "
            "idempotency_key, cached_input_tokens, cost_micro_cents) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        )
        self._upsert = (
            f"INSERT INTO {s}.counters (quota_id, key, period_start, used) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (quota_id, key, period_start) "
            f"DO UPDATE SET used = {s}.counters.used + excluded.used"
        )

    @staticmethod
    def create(dsn: str, schema: str) -> None:
        """Make ``schema`` and the floor's two tables in it."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_POSTGRES_SCHEMA.format(s=_quoted(schema)))

    @staticmethod
    def events(dsn: str, schema: str) -> int:
        """How many events the floors recorded in ``schema``."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM {_quoted(schema)}.events").fetchone()
        return int(row[0]) if row is not None else 0

    def record(self, customer_id: str, input_tokens: int = 100, output_tokens: int = 20) -> None:
        """One event for ``customer_id``, its total tokens counted in today's counter."""
        conn = self._conn
        tokens = input_tokens + output_tokens
        now = time.time()
        # psycopg opens the transaction (BEGIN) with the first statement.
        conn.execute(
            self._insert,
            (
                new_id("evt"),
                now,
                customer_id,
                "model_call",
                "gpt-4o",
                None,
                input_tokens,
                output_tokens,
                tokens,
                None,
                None,
                "{}",
                None,
                None,
                None,
            ),
            prepare=True,
        )
        key = f'["{customer_id}"]'
        conn.execute(
            self._upsert,
            (self.QUOTA_ID, key, int(now) // _DAY * _DAY, tokens),
            prepare=True,
        )
        conn.commit()

    def close(self) -> None:
        self._conn.close()


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'
