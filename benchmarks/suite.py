"""The benchmark suite: limitry_local beside floors and peers, one process, one table.

    .venv/bin/python -m benchmarks                  # everything (make bench)
    .venv/bin/python -m benchmarks --quick          # tiny sizes, seconds (the test runs this)
    .venv/bin/python -m benchmarks --only a2 --only c --json bench.json
    .venv/bin/python -m benchmarks --list           # the workloads

Every row is timed by :func:`benchmarks.harness.measure`: warm-up, then
samples of ``batch`` calls with ``time.perf_counter_ns``, gc disabled; the
median and p99 are over the samples' per-call times.  The rows of workload
h run in P worker processes at once (:mod:`benchmarks.processes`); their
samples are slices of one timed run, per event over all P processes.  Each
workload group names its reference row, and "vs ref" is a row's median over
the reference median (below 1.00x is faster).  Peers and floors are configured with a
limit that never denies; every answer is checked during warm-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, cast

import limitry as limitry_sdk
import psycopg
import redis

from benchmarks import http_api, ledgers, reports
from benchmarks.floors import (
    ContractFloor,
    LimitsFloor,
    LockedBucketFloor,
    PostgresFloor,
    SqliteFloor,
    TokenBucketFloor,
)
from benchmarks.harness import Op, Timing, measure
from benchmarks.peers import LimitsPeer, PyratePeer, PyrateRedisPeer
from benchmarks.processes import Job, close_pools, shared_pool
from limitry_local import (
    RedisBuckets,
    Tracker,
    UsageBreakdownResponse,
    UsageTimeseriesResponse,
)
from limitry_local.buckets import RateLimitStore
from limitry_local.ledger import Durability, Ledger, LedgerBackend
from limitry_local.limitry import Limitry
from limitry_local.models import UsageGroupBy, UsageInterval
from limitry_local.postgres_ledger import PostgresLedger

HTTP_CONNECTIONS = 4
"""Workload h: client threads, each with its own keep-alive connection to the one server."""
RATE_LIMIT = 10**9
"""Per minute: every implementation's limit, high enough never to deny."""
QUOTA_LIMIT = 10**12


@dataclass(frozen=True)
class Config:
    quick: bool
    budget_s: float
    hot_warmup: int
    rotating_keys: int
    customers: int
    sizes: tuple[int, ...]
    cache_dir: Path | None
    """Where big ledgers are cached; None builds them in the run's temp directory."""
    report_events: int = 1_000_000
    """Events in the ledger of workload g (usage reports)."""
    processes: tuple[int, ...] = (1, 2, 4)
    """Workload h: the numbers of processes writing one ledger at once."""
    process_customers: int = 100
    """Workload h: the customers of each process (and its warm-up calls)."""
    process_seconds: float = 1.5
    """Workload h: the timed run of each row, every process at once."""


@dataclass
class Subject:
    """What a row times: ``op(key)`` over ``keys``, and how to tear it down."""

    op: Op
    keys: Sequence[str]
    warmup_ops: int
    accept: Callable[[object], bool] | None = None
    close: Callable[[], None] = lambda: None
    threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    run: Callable[[], Timing] | None = None
    """Times the row itself (workload h: in worker processes) instead of ``op``."""


class Context:
    """A workload group's temp directory and the fixtures its rows share."""

    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self._shared: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._files = 0

    def path(self, name: str) -> Path:
        self._files += 1
        return self.workdir / f"{self._files:02d}-{name}.db"

    def shared(self, name: str, make: Callable[[], Any], close: Callable[[Any], None]) -> Any:
        if name not in self._shared:
            value = make()
            self._shared[name] = value
            self._closers.append(lambda: close(value))
        return self._shared[name]

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()
        self._shared.clear()


@dataclass(frozen=True)
class Case:
    implementation: str
    make: Callable[[Context], Subject]
    reference: bool = False


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    cases: Callable[[Config], list[Case]]
    note: str = ""

    def heading(self, config: Config) -> str:
        return self.title.format(
            keys=f"{config.rotating_keys:,}",
            customers=f"{config.customers:,}",
            events=f"{config.report_events:,}",
            process_customers=f"{config.process_customers:,}",
        )


# --- what the rows call ----------------------------------------------------------


def _allowed(result: object) -> bool:
    return bool(getattr(result, "allowed", False))


def _true(result: object) -> bool:
    return result is True


def _customers(n: int) -> list[str]:
    return [f"cust_{i}" for i in range(n)]


def _tracker(
    path: Path | None,
    *,
    rates: int = 0,
    quotas: int = 0,
    durability: Durability = "normal",
    clock: Callable[[], float] | None = None,
    ledger: LedgerBackend | None = None,
    rate_limits: RateLimitStore | None = None,
) -> Tracker:
    """A Tracker with ``rates`` per-customer rate limits and ``quotas`` per-customer quotas."""
    tracker = Tracker(
        path, durability=durability, clock=clock, ledger=ledger, rate_limits=rate_limits
    )
    windows = ["minute", "second", "hour", "1d", "5m"]
    for i in range(rates):
        tracker.rate_limits.create(
            name=f"rate {i}",
            limit_value=RATE_LIMIT,
            window=windows[i % len(windows)],
            metric="total_tokens" if i % 2 else "total_events",
            per=["customer_id"],
        )
    shapes: list[dict[str, Any]] = [
        {"metric": "total_tokens", "period": "day"},
        {"metric": "total_events", "period": "hour"},
        {"metric": "total_tokens", "period": "week", "dimension_filters": {"model": "gpt-4o"}},
        {"metric": "total_events", "period": "month"},
        {
            "metric": "total_tokens",
            "period": "month",
            "dimension_filters": {"event_type": "model_call"},
        },
    ]
    for i in range(quotas):
        tracker.quotas.create(
            name=f"quota {i}",
            limit_value=QUOTA_LIMIT,
            per=["customer_id"],
            **shapes[i % len(shapes)],
        )
    return tracker


def _rate_event(tracker: Tracker) -> Op:
    def op(key: str) -> object:
        return tracker.usage(customer_id=key, event_type="model_call")

    return op


def _model_call(tracker: Tracker) -> Op:
    def op(key: str) -> object:
        return tracker.usage(
            customer_id=key,
            event_type="model_call",
            model="gpt-4o",
            input_tokens=100,
            output_tokens=20,
        )

    return op


def _rate_check(tracker: Tracker) -> Op:
    def op(key: str) -> object:
        return tracker.rate_limits.check({"customer_id": key, "event_type": "model_call"})

    return op


def _gate_hit(tracker: Tracker) -> Op:
    # The tracker's one rate limit; hit is the callable itself, as a caller would keep it.
    (limit,) = tracker.rate_limits.list().data
    return tracker.rate_limits.gate(limit.id).hit


def _contract_floor(floor: ContractFloor | LimitsFloor) -> Op:
    # The same event _model_call sends, as the dict usage() builds from its keywords.
    def op(key: str) -> object:
        return floor.usage(
            {
                "customer_id": key,
                "event_type": "model_call",
                "model": "gpt-4o",
                "input_tokens": 100,
                "output_tokens": 20,
            }
        )

    return op


def _floor_record(floor: SqliteFloor) -> Op:
    def op(key: str) -> object:
        floor.record(key)
        return True

    return op


# --- (a) rate-limit check only ------------------------------------------------------


def _rate_cases(
    keys: Callable[[Config], list[str]], warmup: Callable[[Config], int]
) -> Callable[[Config], list[Case]]:
    def cases(config: Config) -> list[Case]:
        def floor(ctx: Context) -> Subject:
            bucket = TokenBucketFloor(RATE_LIMIT, 60)
            return Subject(bucket.take, keys(config), warmup(config), _true)

        def limits(strategy: str) -> Callable[[Context], Subject]:
            def make(ctx: Context) -> Subject:
                peer = LimitsPeer("fixed" if strategy == "fixed" else "moving", RATE_LIMIT)
                return Subject(peer.op, keys(config), warmup(config), _true, peer.close)

            return make

        def locked(ctx: Context) -> Subject:
            bucket = LockedBucketFloor(RATE_LIMIT, 60)
            return Subject(bucket.hit, keys(config), warmup(config), _true)

        def pyrate(ctx: Context) -> Subject:
            peer = PyratePeer(RATE_LIMIT)
            return Subject(peer.op, keys(config), warmup(config), _true, peer.close)

        def rate_tracker(ctx: Context) -> Tracker:
            tracker: Tracker = ctx.shared(
                "rate-tracker", lambda: _tracker(None, rates=1), lambda t: t.close()
            )
            return tracker

        def usage(ctx: Context) -> Subject:
            return Subject(_rate_event(rate_tracker(ctx)), keys(config), warmup(config), _allowed)

        def check(ctx: Context) -> Subject:
            # Runs after ``usage`` on the same tracker: every key has a bucket.
            tracker = rate_tracker(ctx)
            return Subject(_rate_check(tracker), keys(config), min(warmup(config), 2000), _allowed)

        def gate(ctx: Context) -> Subject:
            tracker = rate_tracker(ctx)
            return Subject(_gate_hit(tracker), keys(config), warmup(config), _true)

        return [
            Case("floor: dict token bucket", floor, reference=True),
            Case("floor: the same under a lock, a gate's checks", locked),
            Case("limits FixedWindow, MemoryStorage", limits("fixed")),
            Case("limits MovingWindow, MemoryStorage", limits("moving")),
            Case("pyrate InMemoryBucket per key", pyrate),
            Case("limitry usage(), rate limit only, memory ledger", usage),
            Case("limitry rate_limits.check() (peek)", check),
            Case("limitry rate_limits.gate().hit()", gate),
        ]

    return cases


# --- (b) full usage() ------------------------------------------------------------------


def ledger_floor(path: Path, commit_every: int = 1, read_counter: bool = True) -> SqliteFloor:
    """Raw sqlite3 on a ledger file made by limitry_local, with the quota it counts for."""
    with _tracker(path, quotas=1) as tracker:
        (quota,) = tracker.quotas.list().data
    return SqliteFloor(
        path,
        schema="ledger",
        quota_id=quota.id,
        commit_every=commit_every,
        read_counter=read_counter,
    )


def _b_normal(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def floor(ctx: Context) -> Subject:
        db = SqliteFloor(ctx.path("floor"))
        return Subject(_floor_record(db), keys, warm, close=db.close)

    def contract(ctx: Context) -> Subject:
        floor = ContractFloor(RATE_LIMIT, QUOTA_LIMIT, sqlite=ledger_floor(ctx.path("contract")))
        return Subject(_contract_floor(floor), keys, warm, _allowed, floor.close)

    def floor_ledger(ctx: Context) -> Subject:
        db = ledger_floor(ctx.path("floor-ledger"))
        return Subject(_floor_record(db), keys, warm, close=db.close)

    def pyrate(ctx: Context) -> Subject:
        peer = PyratePeer(RATE_LIMIT, ctx.path("pyrate"))
        return Subject(peer.op, keys, warm, _true, peer.close)

    def usage(ctx: Context) -> Subject:
        tracker = _tracker(ctx.path("limitry"), rates=1, quotas=1)
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    return [
        Case("floor: raw sqlite3, 1 commit per event", floor, reference=True),
        Case("floor: raw sqlite3 on the ledger schema", floor_ledger),
        Case("floor: the contract's models around the ledger-schema floor", contract),
        Case("pyrate SQLiteBucket per key (rate only)", pyrate),
        Case("limitry usage(), durability=normal", usage),
    ]


def _b_batched(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def floor(ctx: Context) -> Subject:
        db = SqliteFloor(ctx.path("floor-batched"), commit_every=1000)
        return Subject(_floor_record(db), keys, warm, close=db.close)

    def contract(read_counter: bool) -> Callable[[Context], Subject]:
        def make(ctx: Context) -> Subject:
            path = ctx.path(f"contract-batched-{read_counter}")
            db = ledger_floor(path, commit_every=1000, read_counter=read_counter)
            floor = ContractFloor(RATE_LIMIT, QUOTA_LIMIT, sqlite=db)
            return Subject(_contract_floor(floor), keys, warm, _allowed, floor.close)

        return make

    def usage(ctx: Context) -> Subject:
        tracker = _tracker(ctx.path("limitry-batched"), rates=1, quotas=1, durability="batched")
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    return [
        Case("floor: raw sqlite3, 1 commit per 1000 events", floor, reference=True),
        Case("floor: the contract's models, the ledger schema, 1 commit per 1000", contract(True)),
        Case("floor: the same without the counter read", contract(False)),
        Case("limitry usage(), durability=batched", usage),
    ]


def _b_memory(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def limits(ctx: Context) -> Subject:
        peer = LimitsPeer("fixed", RATE_LIMIT)
        return Subject(peer.op, keys, warm, _true, peer.close)

    def floor(ctx: Context) -> Subject:
        db = SqliteFloor(None)
        return Subject(_floor_record(db), keys, warm, close=db.close)

    def contract(validate: bool) -> Callable[[Context], Subject]:
        def make(ctx: Context) -> Subject:
            floor = ContractFloor(RATE_LIMIT, QUOTA_LIMIT, validate=validate)
            return Subject(_contract_floor(floor), keys, warm, _allowed, floor.close)

        return make

    def usage(ctx: Context) -> Subject:
        tracker = _tracker(None, rates=1, quotas=1)
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    def usage_sqlite(ctx: Context) -> Subject:
        tracker = _tracker(None, rates=1, quotas=1, ledger=Ledger(None))
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    return [
        Case("limits FixedWindow, MemoryStorage (rate only)", limits, reference=True),
        Case("floor: raw sqlite3 :memory:, 1 commit per event", floor),
        Case("floor: the contract's 201 models around a dict bucket and counter", contract(False)),
        Case("floor: the same, the request validated by its pydantic model", contract(True)),
        Case("limitry usage(), memory ledger", usage),
        Case("limitry usage(), SQLite :memory: ledger (as before 0.2)", usage_sqlite),
    ]


# --- (c) quota check vs ledger size --------------------------------------------------------


def _c_sizes(config: Config) -> list[Case]:
    keys = _customers(ledgers.CUSTOMERS)
    warm = 2 * ledgers.CUSTOMERS if not config.quick else 200

    def at(size: int) -> Callable[[Context], Subject]:
        def make(ctx: Context) -> Subject:
            directory = config.cache_dir if config.cache_dir is not None else ctx.workdir
            schema: str = ctx.shared(
                "schema", lambda: ledgers.schema_hash(ctx.workdir), lambda _: None
            )
            ledger = ledgers.big_ledger(size, directory, schema)
            snapshot = ledgers.Snapshot(ledger)
            tracker = Tracker(ledger.path, clock=ledger.clock())

            def close() -> None:
                tracker.close()
                snapshot.restore()

            return Subject(
                _model_call(tracker),
                keys,
                warm,
                _allowed,
                close,
                extra={"events": size, "build_seconds": round(ledger.build_seconds, 1)},
            )

        return make

    return [
        Case(f"limitry usage(), 1 quota, {size:,} events", at(size), reference=i == 0)
        for i, size in enumerate(config.sizes)
    ]


# --- (d) ten matching limits -----------------------------------------------------------------


def _d_cases(file: bool) -> Callable[[Config], list[Case]]:
    def cases(config: Config) -> list[Case]:
        keys = _customers(config.customers)
        warm = 2 * config.customers

        def limits(n: int) -> Callable[[Context], Subject]:
            def make(ctx: Context) -> Subject:
                path = ctx.path(f"limits-{n}") if file else None
                tracker = _tracker(path, rates=n, quotas=n)
                return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

            return make

        def floor(n: int) -> Callable[[Context], Subject]:
            def make(ctx: Context) -> Subject:
                contract = LimitsFloor(n, n, RATE_LIMIT, QUOTA_LIMIT)
                return Subject(_contract_floor(contract), keys, warm, _allowed)

            return make

        cases = [
            Case("limitry usage(), 1 rate limit + 1 quota", limits(1), reference=True),
            Case("limitry usage(), 5 rate limits + 5 quotas", limits(5)),
        ]
        if file:
            return cases
        # The contract's own cost of more limits, in the same run (memory only:
        # the floor keeps nothing in a file).
        return [
            *cases,
            Case("floor: the contract for 1 rate limit + 1 quota", floor(1)),
            Case("floor: the contract for 5 rate limits + 5 quotas", floor(5)),
        ]

    return cases


# --- (e) threads -----------------------------------------------------------------------------


def _e_cases(file: bool) -> Callable[[Config], list[Case]]:
    def cases(config: Config) -> list[Case]:
        keys = _customers(config.customers)
        warm = 2 * config.customers

        def threads(n: int) -> Callable[[Context], Subject]:
            def make(ctx: Context) -> Subject:
                path = ctx.path(f"threads-{n}") if file else None
                tracker = _tracker(path, rates=1, quotas=1)
                return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close, threads=n)

            return make

        return [
            Case("limitry usage(), 1 thread", threads(1), reference=True),
            Case("limitry usage(), 2 threads, one Tracker", threads(2)),
        ]

    return cases


# --- (f) shared engines: Redis buckets, PostgreSQL ledger ------------------------------

REDIS_URL = os.environ.get("LIMITRY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def _redis_store(ctx: Context) -> RedisBuckets:
    # Server time: what several hosts would use.  A fresh prefix per row,
    # its keys deleted when the row is done.
    prefix = f"limitry-bench:{os.urandom(6).hex()}:"
    store = RedisBuckets(REDIS_URL, prefix=prefix)
    ctx.shared(prefix, lambda: prefix, _delete_keys)
    return store


def _delete_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _f_redis(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def limits(strategy: str) -> Callable[[Context], Subject]:
        def make(ctx: Context) -> Subject:
            peer = LimitsPeer("fixed" if strategy == "fixed" else "moving", RATE_LIMIT, REDIS_URL)
            return Subject(peer.op, keys, warm, _true, peer.close)

        return make

    def pyrate(ctx: Context) -> Subject:
        peer = PyrateRedisPeer(
            RATE_LIMIT, REDIS_URL, f"limitry-bench:pyrate:{os.urandom(6).hex()}:"
        )
        return Subject(peer.op, keys, warm, _true, peer.close)

    def usage(ctx: Context) -> Subject:
        tracker = _tracker(None, rates=1, rate_limits=_redis_store(ctx))
        return Subject(_rate_event(tracker), keys, warm, _allowed, tracker.close)

    def check(ctx: Context) -> Subject:
        tracker = _tracker(None, rates=1, rate_limits=_redis_store(ctx))
        return Subject(_rate_check(tracker), keys, warm, _allowed, tracker.close)

    def gate(ctx: Context) -> Subject:
        tracker = _tracker(None, rates=1, rate_limits=_redis_store(ctx))
        return Subject(_gate_hit(tracker), keys, warm, _true, tracker.close)

    return [
        Case("limits FixedWindow, RedisStorage", limits("fixed"), reference=True),
        Case("limits MovingWindow, RedisStorage", limits("moving")),
        Case("pyrate RedisBucket per key", pyrate),
        Case("limitry usage(), RedisBuckets, memory ledger", usage),
        Case("limitry rate_limits.check(), RedisBuckets (peek)", check),
        Case("limitry rate_limits.gate().hit(), RedisBuckets", gate),
    ]


POSTGRES_DSN = os.environ.get(
    "LIMITRY_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_ledger(ctx: Context) -> PostgresLedger:
    return PostgresLedger(POSTGRES_DSN, schema=_bench_schema(ctx))


def _bench_schema(ctx: Context) -> str:
    """A fresh schema name per row, the schema dropped when the workload group is done."""
    schema = f"limitry_bench_{os.urandom(6).hex()}"
    ctx.shared(schema, lambda: schema, _drop_schema)
    return schema


def _drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _f_postgres(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def file(ctx: Context) -> Subject:
        tracker = _tracker(ctx.path("f2-sqlite"), rates=1, quotas=1)
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    def postgres(ctx: Context) -> Subject:
        tracker = _tracker(None, rates=1, quotas=1, ledger=_postgres_ledger(ctx))
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    def both(ctx: Context) -> Subject:
        tracker = _tracker(
            None,
            rates=1,
            quotas=1,
            ledger=_postgres_ledger(ctx),
            rate_limits=_redis_store(ctx),
        )
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    return [
        Case("limitry usage(), SQLite file, memory buckets", file, reference=True),
        Case("limitry usage(), PostgresLedger, memory buckets", postgres),
        Case("limitry usage(), PostgresLedger, RedisBuckets", both),
    ]


# --- (g) usage reports on a big ledger ------------------------------------------------

REPORT_GROUP_BYS: tuple[UsageGroupBy, ...] = ("model", "customer_id", "event_type", "provider")
REPORT_INTERVALS: tuple[UsageInterval, ...] = ("hour", "day", "week")


def _report_dates() -> dict[str, tuple[date, date]]:
    """The two ranges, as dates (a date end includes its day): every event, and one day."""
    first = datetime.fromtimestamp(reports.START, timezone.utc).date()
    middle = first + timedelta(days=reports.DAYS // 2)
    return {
        f"{reports.DAYS} days": (first, first + timedelta(days=reports.DAYS - 1)),
        "1 day": (middle, middle),
    }


def _report_ledger(ctx: Context) -> tuple[Tracker, Path]:
    """The workload's one ledger and a Tracker on it, shared by every row."""

    def build() -> tuple[Tracker, Path]:
        config = ctx.config
        directory = config.cache_dir if config.cache_dir is not None else ctx.workdir
        built = reports.report_ledger(
            config.report_events, directory, ledgers.schema_hash(ctx.workdir)
        )
        done = f"built in {built.build_seconds:.0f} s" if built.build_seconds else "cached"
        print(f"  g: ledger of {built.events:,} events {done}", file=sys.stderr, flush=True)
        return Tracker(built.path), built.path

    shared: tuple[Tracker, Path] = ctx.shared("report-ledger", build, lambda t: t[0].close())
    return shared


def _report_case(kind: str, by: str, label: str, *, reference: bool = False) -> Case:
    first, last = _report_dates()[label]

    def make(ctx: Context) -> Subject:
        tracker, path = _report_ledger(ctx)
        # A date end includes its day: the range ends at the next midnight.
        start, end = (
            datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
            for day in (first, last + timedelta(days=1))
        )
        events, tokens = reports.expected(path, start, end)
        report = tracker.usage_report

        def op(key: str) -> UsageBreakdownResponse | UsageTimeseriesResponse:
            if kind == "breakdown":
                return report.breakdown(cast(UsageGroupBy, by), start_date=first, end_date=last)
            return report.timeseries(cast(UsageInterval, by), start_date=first, end_date=last)

        def accept(answer: object) -> bool:
            assert isinstance(answer, (UsageBreakdownResponse, UsageTimeseriesResponse))
            totals = [(item.total_events, item.total_tokens) for item in answer.data]
            return (sum(n for n, _ in totals), sum(t for _, t in totals)) == (events, tokens)

        # One call per sample (each reads a big share of the ledger), a single warm-up call.
        return Subject(op, ["report"], 1, accept, extra={"rows": len(op("report").data)})

    name = f"breakdown({by})" if kind == "breakdown" else f"timeseries({by})"
    return Case(f"{name}, {label}", make, reference=reference)


def _g_reports(config: Config) -> list[Case]:
    labels = list(_report_dates())
    return [
        *(
            _report_case("breakdown", by, label, reference=by == "model" and label == labels[0])
            for by in REPORT_GROUP_BYS
            for label in labels
        ),
        *(_report_case("timeseries", by, label) for by in REPORT_INTERVALS for label in labels),
    ]


# --- (h) P processes writing one ledger ---------------------------------------------

Engine = Literal["postgres", "sqlite"]
Series = Literal["floor", "usage"]

H_NAMES: dict[tuple[Engine, Series], str] = {
    ("postgres", "floor"): "floor: raw psycopg",
    ("postgres", "usage"): "limitry usage(), PostgresLedger",
    ("sqlite", "floor"): "floor: raw sqlite3 on the ledger schema",
    ("sqlite", "usage"): "limitry usage(), SQLite file",
}
H_WHAT: dict[tuple[Engine, Series], str] = {
    ("postgres", "floor"): "benchmarks/floors.py PostgresFloor in each process, all on one "
    "schema of its own: BEGIN, INSERT the event (the ledger's 15 columns, 2 indexes), upsert "
    "the customer's day counter, COMMIT, per event; no lock but the counter row's",
    ("postgres", "usage"): "Tracker(ledger=PostgresLedger(dsn, schema)).usage(...) in each "
    "process, all on one schema: 1 rate limit (memory buckets, each process its own) + "
    "1 quota, per customer",
    ("sqlite", "floor"): "SqliteFloor on the ledger's schema in each process, all on one "
    "file: BEGIN IMMEDIATE, read the counter, INSERT the event, upsert the counter, COMMIT",
    ("sqlite", "usage"): "Tracker(path).usage(...) in each process, all on one file "
    "(durability=normal): 1 rate limit (memory buckets, each process its own) + 1 quota, "
    "per customer",
}


def _process_count(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def _recorded(open_tracker: Callable[[], Tracker]) -> int:
    """Every event in a ledger, counted through the public usage report."""
    with open_tracker() as tracker:
        report = tracker.usage_report.breakdown("customer_id")
    return sum(group.total_events for group in report.data)


def _h_store(ctx: Context, engine: Engine, series: Series) -> tuple[Job, Callable[[], int]]:
    """A fresh ledger (or floor) for one row: the job's template, and its event count."""
    if engine == "postgres":
        schema = _bench_schema(ctx)
        if series == "floor":
            PostgresFloor.create(POSTGRES_DSN, schema)
            job = Job("postgres-floor", (), 0, dsn=POSTGRES_DSN, schema=schema)
            return job, lambda: PostgresFloor.events(POSTGRES_DSN, schema)
        _tracker(
            None, rates=1, quotas=1, ledger=PostgresLedger(POSTGRES_DSN, schema=schema)
        ).close()
        job = Job("usage", (), 0, dsn=POSTGRES_DSN, schema=schema)
        return job, lambda: _recorded(
            lambda: Tracker(ledger=PostgresLedger(POSTGRES_DSN, schema=schema))
        )
    path = ctx.path(f"h-{series}")
    if series == "floor":
        with _tracker(path, quotas=1) as tracker:
            (quota,) = tracker.quotas.list().data
        job = Job("sqlite-floor", (), 0, path=str(path), quota_id=quota.id)
    else:
        _tracker(path, rates=1, quotas=1).close()
        job = Job("usage", (), 0, path=str(path))
    return job, lambda: _recorded(lambda: Tracker(path))


def _unused(key: str) -> object:
    raise AssertionError("workload h rows are timed by their own run")


def _h_cases(engine: Engine, hot: bool) -> Callable[[Config], list[Case]]:
    def cases(config: Config) -> list[Case]:
        def row(series: Series, processes: int) -> Callable[[Context], Subject]:
            def make(ctx: Context) -> Subject:
                keys: list[tuple[str, ...]]
                if hot:
                    keys = [("cust_hot",)] * processes
                else:
                    keys = [
                        tuple(f"p{i}_cust_{j}" for j in range(config.process_customers))
                        for i in range(processes)
                    ]
                template, count = _h_store(ctx, engine, series)
                jobs = [replace(template, keys=k, warmup=config.process_customers) for k in keys]
                pool = shared_pool(max(config.processes))
                extra: dict[str, Any] = {"processes": processes, "series": series}

                def run() -> Timing:
                    timing, events = pool.run(jobs, seconds=config.process_seconds)
                    # The counts are real: every call the workers counted is in the ledger.
                    recorded = count()
                    if recorded != events:
                        raise AssertionError(
                            f"workers made {events:,} calls, {recorded:,} recorded"
                        )
                    extra["events"] = events
                    return timing

                return Subject(_unused, [], 0, run=run, extra=extra)

            return make

        out: list[Case] = []
        for processes in config.processes:
            series: Series
            for series in ("floor", "usage"):
                name = f"{H_NAMES[engine, series]}, {_process_count(processes)}"
                reference = series == "floor" and processes == config.processes[0]
                out.append(Case(name, row(series, processes), reference=reference))
        return out

    return cases


# --- (i) the HTTP API ------------------------------------------------------------------------


def _i_http(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def server(ctx: Context, durability: Durability) -> http_api.Server:
        made: http_api.Server = ctx.shared(
            f"server-{durability}",
            lambda: http_api.Server(ctx.path(f"http-{durability}"), durability),
            lambda s: s.close(),
        )
        return made

    def row(path: str, durability: Durability = "normal") -> Callable[[Context], Subject]:
        def make(ctx: Context) -> Subject:
            load = http_api.Load(server(ctx, durability).port, path, keys)
            return Subject(load.op, keys, warm, _created, load.close, threads=HTTP_CONNECTIONS)

        return make

    return [
        Case("floor: bare Starlette endpoint, the same 201 JSON", row(http_api.FLOOR_PATH),
             reference=True),
        Case("floor: b1's contract floor over HTTP, 1 commit per event",
             row(http_api.CONTRACT_PATH)),
        Case("limitry POST /v1/track (serve, 1 worker)", row(http_api.TRACK_PATH)),
        Case("limitry POST /v1/track (serve --durability batched)",
             row(http_api.TRACK_PATH, "batched")),
    ]  # fmt: skip


def _created(status: object) -> bool:
    return status == 201


def _ok(status: object) -> bool:
    return status == 200


def _j_limitry(config: Config) -> list[Case]:
    keys = _customers(config.customers)
    warm = 2 * config.customers

    def usage(ctx: Context) -> Subject:
        tracker = _tracker(ctx.path("j-usage"), quotas=1)
        return Subject(_model_call(tracker), keys, warm, _allowed, tracker.close)

    def in_process(file: bool) -> Callable[[Context], Subject]:
        def make(ctx: Context) -> Subject:
            limitry = Limitry(ctx.path("j-checks") if file else None)
            limitry.limits.create(subject={"kind": "user"}, amount=QUOTA_LIMIT, window="day")

            def op(key: str) -> object:
                subject = {"kind": "user", "id": key}
                return limitry.checks.create(subject=subject, action="chat", cost=1)["allowed"]

            return Subject(op, keys, warm, _true, limitry.close)

        return make

    def server(ctx: Context) -> http_api.Server:
        made: http_api.Server = ctx.shared(
            "server-j",
            lambda: http_api.Server(ctx.path("http-j")),
            lambda s: s.close(),
        )
        return made

    def raw_http(ctx: Context) -> Subject:
        load = http_api.Load(server(ctx).port, http_api.CHECK_PATH, keys, http_api.check_body)
        return Subject(load.op, keys, warm, _ok, load.close)

    def sdk(ctx: Context) -> Subject:
        client = limitry_sdk.Limitry(token="bench", api=f"http://127.0.0.1:{server(ctx).port}")

        def op(key: str) -> object:
            subject = {"kind": "user", "id": key}
            decision = client.checks.create(subject=subject, action="chat", cost=1)
            return decision is not None and decision["allowed"]

        return Subject(op, keys, warm, _true, client.close)

    return [
        Case("limitry usage(), file ledger, 1 quota", usage, reference=True),
        Case("Limitry 1.0 checks.create in process, file ledger", in_process(file=True)),
        Case("Limitry 1.0 checks.create in process, memory ledger", in_process(file=False)),
        Case("POST /v1/checks, raw keep-alive client (serve, 1 worker)", raw_http),
        Case("limitry SDK 1.0 checks.create over HTTP (serve, 1 worker)", sdk),
    ]


WORKLOADS = [
    Workload(
        "a1",
        "rate limit only, 1 hot key",
        _rate_cases(lambda c: ["cust_hot"], lambda c: c.hot_warmup),
    ),
    Workload(
        "a2",
        "rate limit only, {keys} rotating keys",
        _rate_cases(lambda c: _customers(c.rotating_keys), lambda c: c.rotating_keys),
        note="every key warmed once before timing, so each call finds its key's state",
    ),
    Workload(
        "b1",
        "usage(): 1 rate limit + 1 quota, file ledger, durability=normal",
        _b_normal,
    ),
    Workload(
        "b2",
        "usage(): 1 rate limit + 1 quota, file ledger, durability=batched",
        _b_batched,
    ),
    Workload("b3", "usage(): 1 rate limit + 1 quota, memory ledger", _b_memory),
    Workload(
        "c",
        "quota check vs events already in the ledger (file, durability=normal)",
        _c_sizes,
    ),
    Workload("d1", "10 matching limits, file ledger, durability=normal", _d_cases(file=True)),
    Workload("d2", "10 matching limits, memory ledger", _d_cases(file=False)),
    Workload("e1", "threads on one Tracker, file ledger, durability=normal", _e_cases(file=True)),
    Workload("e2", "threads on one Tracker, memory ledger", _e_cases(file=False)),
    Workload(
        "f1",
        "rate limit only, shared on Redis (127.0.0.1), {customers} keys",
        _f_redis,
        note="every implementation makes one round trip to the same local Redis per call",
    ),
    Workload(
        "f2",
        "usage(): 1 rate limit + 1 quota on shared engines (127.0.0.1)",
        _f_postgres,
        note="PostgreSQL: 3 round trips per call, counters locked in one sorted batch",
    ),
    Workload(
        "g",
        "usage reports on a file ledger of {events} events over 30 days",
        _g_reports,
        note="each answer checked against raw SQL sums of the range",
    ),
    Workload(
        "h1",
        "P processes on one PostgreSQL schema, {process_customers} customers each",
        _h_cases("postgres", hot=False),
        note="a sample is a slice of one timed run (5 to 40 slices, about 50 events each): "
        "its length over the events all P processes finished in it",
    ),
    Workload(
        "h2",
        "P processes on one PostgreSQL schema, all on one customer (hot key)",
        _h_cases("postgres", hot=True),
    ),
    Workload(
        "h3",
        "P processes on one SQLite file, {process_customers} customers each",
        _h_cases("sqlite", hot=False),
    ),
    Workload(
        "i",
        "POST /v1/track over HTTP, 1 uvicorn worker, file ledger (127.0.0.1)",
        _i_http,
        note=f"{HTTP_CONNECTIONS} client threads, a keep-alive connection each; ops/s is "
        "requests per second (the server's throughput)",
    ),
    Workload(
        "j",
        "Limitry 1.0 checks.create: in process, and over HTTP through the real SDK",
        _j_limitry,
        note="one call at a time; the HTTP rows share one server (1 uvicorn worker, file "
        "ledger, 127.0.0.1)",
    ),
]

WHAT = {
    "limitry usage(), file ledger, 1 quota": "Tracker(path).usage(...) with one per-customer "
    "day quota, durability=normal: the same decision as the 1.0 rows in v0's words",
    "Limitry 1.0 checks.create in process, file ledger": "Limitry(path).checks.create("
    "subject=user, action, cost=1) against one day limit on every user: the subject's "
    "document read, the counter locked and charged, the usage history counted",
    "Limitry 1.0 checks.create in process, memory ledger": "the same on Limitry() (memory)",
    "POST /v1/checks, raw keep-alive client (serve, 1 worker)": "the same check over HTTP to "
    "the app `limitry-local serve` runs (file ledger), from workload i's raw-socket client: "
    "the server's share",
    "limitry SDK 1.0 checks.create over HTTP (serve, 1 worker)": "the real SDK "
    "(limitry 1.0.0rc7, httpx) against that server, one call at a time: what an application "
    "using the SDK offline pays",
    "floor: bare Starlette endpoint, the same 201 JSON": "benchmarks/http_api.py: a route "
    "added to the served app (same uvicorn, middleware and auth) that reads the body and "
    "answers a precomputed 201 body and headers: the HTTP stack's own cost",
    "floor: b1's contract floor over HTTP, 1 commit per event": "benchmarks/"
    "http_api.py: a route on the same server doing /v1/track's steps (body read and parsed, "
    "the 201 body and header list built) with b1's contract floor in place of usage(): "
    "ContractFloor validating the request with its pydantic model, on raw sqlite3 in a file "
    "of its own on the ledger's schema, one commit per event; /v1/track cannot beat it",
    "limitry POST /v1/track (serve --durability batched)": "the same on a second server "
    "whose ledger commits once per 1000 events or 50 ms",
    "limitry POST /v1/track (serve, 1 worker)": "the app `limitry-local serve` runs, on a "
    "file ledger (durability=normal) with 1 rate limit + 1 quota per customer: JSON parsed, "
    "usage(), the 201 body and X-RateLimit headers written",
    "limitry usage(), SQLite file, memory buckets": "Tracker(path).usage(...), "
    "durability=normal: the single-host default, for scale",
    "limitry usage(), PostgresLedger, memory buckets": "Tracker(ledger=PostgresLedger(dsn))"
    ".usage(...): BEGIN + advisory lock + version, counter read, record, COMMIT",
    "limitry usage(), PostgresLedger, RedisBuckets": "Tracker(rate_limits=RedisBuckets(url), "
    "ledger=PostgresLedger(dsn)).usage(...): the fully shared setup, one more round trip "
    "(the Redis take)",
    "limits FixedWindow, RedisStorage": "limits 5.8 FixedWindowRateLimiter.hit(item, key) "
    "on RedisStorage (storage_from_string): a counter per key and minute in Redis",
    "limits MovingWindow, RedisStorage": "MovingWindowRateLimiter.hit(item, key) on "
    "RedisStorage: a list of hit times per key, trimmed by a Lua script",
    "pyrate RedisBucket per key": "pyrate-limiter 4.5 Limiter.try_acquire(key) with a "
    "RedisBucket (a sorted set, one Lua call) per key, all on one client",
    "limitry usage(), RedisBuckets, memory ledger": "Tracker(rate_limits=RedisBuckets(url))"
    ".usage(customer_id, event_type): validates, takes the token in one EVALSHA round trip "
    "(server time), records the event in the in-memory ledger",
    "limitry rate_limits.check(), RedisBuckets (peek)": "tracker.rate_limits.check(...) on "
    "RedisBuckets: one read-only EVALSHA round trip, consumes nothing",
    "limitry rate_limits.gate().hit(), RedisBuckets": "tracker.rate_limits.gate(id).hit(key) "
    "on RedisBuckets: the same take as usage() (one EVALSHA round trip), nothing validated "
    "or recorded",
    "limitry rate_limits.gate().hit()": "tracker.rate_limits.gate(id).hit(key): the dedicated "
    "rate-only path; takes a token from the bucket usage() charges for that key, records "
    "nothing (limitry_local/gate.py)",
    "floor: dict token bucket": "benchmarks/floors.py TokenBucketFloor.take(key): a dict of "
    "key -> (tokens, timestamp), refilled continuously; nothing recorded",
    "limits FixedWindow, MemoryStorage": "limits 5.8 FixedWindowRateLimiter.hit(item, key): "
    "a counter per key and minute",
    "limits MovingWindow, MemoryStorage": "limits MovingWindowRateLimiter.hit(item, key): a "
    "list of hit times per key; each hit inserts at the front, so it costs O(hits in the "
    "last minute) with a limit this high",
    "pyrate InMemoryBucket per key": "pyrate-limiter 4.5 Limiter.try_acquire(key, "
    "blocking=False), a BucketFactory giving each key an InMemoryBucket (sliding-window log, "
    "one item appended per call), leaked every 10 s by pyrate's background thread",
    "limitry usage(), rate limit only, memory ledger": "Tracker().usage(customer_id, "
    "event_type) with one per-customer rate limit: validates the request, takes a token, "
    "and records the event in the in-memory ledger (MemoryLedger: Python lists and dicts)",
    "limitry rate_limits.check() (peek)": "tracker.rate_limits.check({customer_id, "
    "event_type}): the public rate-only path; it answers whether a call would pass and "
    "consumes nothing, so it does less than the others",
    "floor: raw sqlite3, 1 commit per event": "benchmarks/floors.py SqliteFloor: BEGIN "
    "IMMEDIATE, INSERT event (4 columns, no index), upsert the day's counter, COMMIT; WAL, "
    "synchronous=NORMAL; no rate limit",
    "floor: raw sqlite3 on the ledger schema": "the same on a ledger file that limitry_local "
    "created (15 columns, its 3 event indexes, ids minted as usage() mints them) plus the "
    "counter read a quota check needs: the SQL work of usage() without the Python around it",
    "floor: the contract's models around the ledger-schema floor": "benchmarks/floors.py "
    "ContractFloor with that ledger-schema SQL: the request validated by its pydantic model, "
    "a dict token bucket, the event recorded, the 201 models and headers",
    "floor: the contract's models, the ledger schema, 1 commit per 1000": "the same with one "
    "transaction per 1000 events: the least a batched usage() can do on the ledger's schema",
    "floor: the same without the counter read": "the same, the quota counter never read "
    "(a batch holds the write lock, so a cache could answer the read)",
    "floor: the contract's 201 models around a dict bucket and counter": "ContractFloor "
    "without validation: a dict token bucket, a dict quota counter, the event kept in a "
    "list, the 201 TrackPostResponse (one rate-limit and one quota status, three models built "
    "without revalidation) and its X-RateLimit headers",
    "floor: the same, the request validated by its pydantic model": "ContractFloor: the "
    "same, the event dict first validated into a TrackPostRequest (and that model kept)",
    "pyrate SQLiteBucket per key (rate only)": "Limiter.try_acquire(key) through a factory "
    "giving each key a SQLiteBucket (a table) on one WAL, synchronous=NORMAL connection: "
    "COUNT the key's items in the window, INSERT one, COMMIT; no quota, no event",
    "limitry usage(), durability=normal": "Tracker(path).usage(...): 1 rate limit + 1 quota "
    "per customer, one transaction (BEGIN IMMEDIATE .. COMMIT) per event",
    "floor: raw sqlite3, 1 commit per 1000 events": "SqliteFloor with one transaction "
    "per 1000 events (group commit)",
    "limitry usage(), durability=batched": "Tracker(path, durability='batched'): a savepoint "
    "per event, a commit per 1000 events or 50 ms",
    "limits FixedWindow, MemoryStorage (rate only)": "FixedWindowRateLimiter.hit(item, "
    "customer): rate limit only, nothing recorded",
    "floor: raw sqlite3 :memory:, 1 commit per event": "SqliteFloor on an in-memory "
    "database: the SQL share of an in-memory usage() while its ledger was SQLite",
    "limitry usage(), SQLite :memory: ledger (as before 0.2)": "Tracker(ledger="
    "Ledger(None)).usage(...): the same call on the SQLite in-memory ledger that Tracker() "
    "used before MemoryLedger",
    "limitry usage(), memory ledger": "Tracker().usage(...): 1 rate limit + 1 quota, the "
    "event recorded in the in-memory ledger (MemoryLedger)",
    "limitry usage(), 1 rate limit + 1 quota": "usage() with one per-customer rate limit and "
    "one per-customer quota",
    "limitry usage(), 5 rate limits + 5 quotas": "usage() where 10 limits match each event "
    "(5 windows, 5 quota periods/metrics, two with filters)",
    "floor: the same under a lock, a gate's checks": "LockedBucketFloor.hit(key): that "
    "take under an RLock after a gate hit's argument checks (arity, cost an int in range): "
    "the least a thread-safe hit can do",
    "floor: the contract for 1 rate limit + 1 quota": "LimitsFloor(1, 1): the request "
    "validated, a dict bucket and a dict counter checked before either is written, the event "
    "kept in a list, the 201 with one status per limit and its headers",
    "floor: the contract for 5 rate limits + 5 quotas": "LimitsFloor(5, 5): the same code "
    "for ten limits (no matching, fixed-length periods); its ratio to the row above is the "
    "contract's own cost of more limits",
    "limitry usage(), 1 thread": "usage() from one worker thread; per-op = wall time / calls",
    "limitry usage(), 2 threads, one Tracker": "two worker threads calling usage() on one "
    "Tracker at once; per-op = wall time / calls of both (the inverse of total throughput)",
}


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    workload: Workload
    case: Case
    timing: Timing
    extra: dict[str, Any]
    ratio: float = 1.0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    versions = {}
    for package in ("limitry_local", "limits", "pyrate-limiter", "pydantic", "sqlite-utils"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "packages": versions,
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@contextmanager
def _group(config: Config, root: Path, workload: Workload) -> Iterator[Context]:
    workdir = root / workload.id
    workdir.mkdir()
    ctx = Context(config, workdir)
    try:
        yield ctx
    finally:
        ctx.close()


def run_workload(config: Config, root: Path, workload: Workload) -> list[Row]:
    rows: list[Row] = []
    with _group(config, root, workload) as ctx:
        for case in workload.cases(config):
            gc.collect()
            subject = case.make(ctx)
            try:
                timing = (
                    subject.run()
                    if subject.run is not None
                    else measure(
                        subject.op,
                        subject.keys,
                        budget_s=config.budget_s,
                        warmup_ops=subject.warmup_ops,
                        accept=subject.accept,
                        threads=subject.threads,
                        max_samples=100_000,
                    )
                )
            finally:
                subject.close()
            rows.append(Row(workload, case, timing, subject.extra))
            print(
                f"  {workload.id} {case.implementation}: {timing.median_us:.2f} us "
                f"({len(timing.per_op_ns)} x {timing.batch}{_workers(timing)}, "
                f"{timing.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    reference = next((r for r in rows if r.case.reference), rows[0])
    for row in rows:
        row.ratio = row.timing.median_us / reference.timing.median_us
    return rows


def _workers(timing: Timing) -> str:
    if timing.processes:
        return f" x {_process_count(timing.processes)}"
    return f" x {timing.threads} thr" if timing.threads else ""


def _us(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def table(rows: list[Row], config: Config) -> str:
    lines = [
        "| workload | implementation | median us/op | p99 us/op | ops/s | vs ref | samples x ops |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = row.timing
        ratio = f"{row.ratio:.2f}x" + (" (ref)" if row.case.reference else "")
        threads = _workers(t)
        lines.append(
            f"| {row.workload.id} {row.workload.heading(config)} | {row.case.implementation} "
            f"| {_us(t.median_us)} | {_us(t.p99_us)} | {t.ops_per_second:,.0f} | {ratio} "
            f"| {len(t.per_op_ns):,} x {t.batch:,}{threads} |"
        )
    return "\n".join(lines)


def notes(rows: list[Row], config: Config) -> str:
    out = ["References (vs ref = median / the reference's median):"]
    seen: set[str] = set()
    for row in rows:
        w = row.workload
        if row.case.reference and w.id not in seen:
            seen.add(w.id)
            extra = f"; {w.note}" if w.note else ""
            out.append(f"- {w.id}: {row.case.implementation}{extra}")
    sizes = [r for r in rows if r.workload.id == "c"]
    if len(sizes) >= 2:
        first, last = sizes[0], sizes[-1]
        out.append(
            f"- c: {last.extra['events']:,} vs {first.extra['events']:,} events: "
            f"{last.timing.median_us / first.timing.median_us:.2f}x median, "
            f"{last.timing.p99_us / first.timing.p99_us:.2f}x p99"
        )
    out.extend(_scaling(rows))
    out.append("")
    out.append("What each row does:")
    described: set[str] = set()
    for row in rows:
        name = row.case.implementation
        if name in described:
            continue
        described.add(name)
        what = WHAT.get(name)
        if what is None and row.workload.id == "g":
            what = (
                "tracker.usage_report.breakdown(group_by, start_date=, end_date=) or "
                ".timeseries(interval, ...) on a Tracker(path) whose ledger holds "
                f"{config.report_events:,} events (1,000 customers, 10 models of 3 providers, "
                "3 event types, one event in twenty without a model; built with raw "
                "sqlite3 in the ledger's schema, cached); the 30-day range is every event, "
                "the 1-day range a day in the middle, both given as dates"
            )
            described.update(r.case.implementation for r in rows if r.workload.id == "g")
        if what is None and row.workload.id == "c":
            what = (
                "Tracker(path).usage(...) with one per-customer daily token quota on a "
                "ledger already holding N events (built with raw sqlite3 in the ledger's "
                "schema, cached)"
            )
            described.update(r.case.implementation for r in rows if r.workload.id == "c")
        if what is None and row.workload.id.startswith("h"):
            engine: Engine = "sqlite" if row.workload.id == "h3" else "postgres"
            series: Series = row.extra["series"]
            name = f"{H_NAMES[engine, series]}, P processes"
            if name in described:
                continue
            what = H_WHAT[engine, series]
            described.add(name)
        out.append(f"- {name}: {what}")
    out.append("")
    out.append(
        f"Keys: a2 rotates over {config.rotating_keys:,} keys; b-e over {config.customers:,} "
        f"customers (c: {ledgers.CUSTOMERS:,}). Limits: {RATE_LIMIT:,} per minute, quotas "
        f"{QUOTA_LIMIT:,}: nothing is denied. Rows of 1 op per sample time single calls "
        "(their p99 is a single call's); batched rows' p99 is over batch means."
    )
    return "\n".join(out)


def _scaling(rows: list[Row]) -> list[str]:
    """Workload h's events/s per P, the scaling from the fewest to the most processes,
    and usage() over the floor with the same P."""
    out: list[str] = []
    for workload in dict.fromkeys(r.workload for r in rows if r.workload.id.startswith("h")):
        series: dict[str, dict[int, float]] = {"floor": {}, "usage": {}}
        for row in rows:
            if row.workload is workload:
                series[row.extra["series"]][row.extra["processes"]] = row.timing.ops_per_second
        counts = sorted(series["usage"])
        if not counts or sorted(series["floor"]) != counts:
            continue
        low, high = counts[0], counts[-1]
        ps = ", ".join(str(n) for n in counts)
        parts = []
        for name, rates in (("floor", series["floor"]), ("usage()", series["usage"])):
            each = ", ".join(f"{rates[n]:,.0f}" for n in counts)
            parts.append(f"{name} {each} (P={low} -> {high}: {rates[high] / rates[low]:.2f}x)")
        ratios = ", ".join(f"{series['usage'][n] / series['floor'][n]:.2f}x" for n in counts)
        out.append(
            f"- {workload.id}: events/s at P = {ps}: {'; '.join(parts)}; "
            f"usage() / floor at the same P: {ratios}"
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (tests)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="WORKLOAD",
        help="run only these workloads: ids or id prefixes (a, b1, c), repeatable or "
        "comma-separated",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the raw numbers")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed samples per row (default 3, quick 0.03; the timed run of a "
        "workload h row: default 1.5, quick 0.25)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="events in the ledger for workload c (default 10000 1000000 10000000)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "limitry-bench",
        help="where workload c keeps its built ledgers (default: %(default)s)",
    )
    parser.add_argument(
        "--report-events",
        type=int,
        help="events in the ledger for workload g (default 1000000, quick 2000)",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    if args.quick:
        return Config(
            quick=True,
            budget_s=args.budget if args.budget is not None else 0.03,
            hot_warmup=50,
            rotating_keys=1000,
            customers=50,
            sizes=tuple(args.sizes or (1_000, 3_000, 10_000)),
            cache_dir=None,
            report_events=args.report_events or 2_000,
            processes=(1, 2),
            process_customers=10,
            process_seconds=args.budget if args.budget is not None else 0.25,
        )
    return Config(
        quick=False,
        budget_s=args.budget if args.budget is not None else 3.0,
        hot_warmup=2000,
        rotating_keys=100_000,
        customers=1000,
        sizes=tuple(args.sizes or (10_000, 1_000_000, 10_000_000)),
        cache_dir=args.cache_dir,
        report_events=args.report_events or 1_000_000,
        process_seconds=args.budget if args.budget is not None else 1.5,
    )


def selected(only: Sequence[str]) -> list[Workload]:
    wanted = [w.strip() for item in only for w in item.split(",") if w.strip()]
    if not wanted:
        return list(WORKLOADS)
    chosen = [w for w in WORKLOADS if any(w.id.startswith(prefix) for prefix in wanted)]
    unknown = [p for p in wanted if not any(w.id.startswith(p) for w in WORKLOADS)]
    if unknown:
        ids = ", ".join(w.id for w in WORKLOADS)
        raise SystemExit(f"unknown workload {', '.join(unknown)}; choose from {ids}")
    return chosen


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = config_from(args)
    if args.list:
        for w in WORKLOADS:
            print(f"{w.id}\t{w.heading(config)}")
        return
    workloads = selected(args.only)
    info = machine()
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="limitry-bench-") as tmp:
        try:
            for workload in workloads:
                print(f"{workload.id}: {workload.heading(config)}", file=sys.stderr, flush=True)
                rows.extend(run_workload(config, Path(tmp), workload))
        finally:
            close_pools()
    elapsed = time.perf_counter() - started
    info["loadavg_end"] = _loadavg()

    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    print(
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs "
        f"({info['usable_cpus']} usable), {info['python']}, SQLite {info['sqlite']}, "
        f"{info['platform']}"
    )
    print(f"Packages: {packages}")
    print(
        f"Load average (1, 5, 15 min): {info['loadavg_start']} at start, "
        f"{info['loadavg_end']} at end; {elapsed:.0f} s in all"
        + (" (--quick: sizes and budgets too small to mean anything)" if config.quick else "")
    )
    print()
    print(table(rows, config))
    print()
    print(notes(rows, config))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": [sys.executable, "-m", "benchmarks", *(argv or sys.argv[1:])],
                    "machine": info,
                    "seconds": round(elapsed, 1),
                    "config": {
                        "quick": config.quick,
                        "budget_s": config.budget_s,
                        "rotating_keys": config.rotating_keys,
                        "customers": config.customers,
                        "sizes": list(config.sizes),
                    },
                    "rows": [
                        {
                            "workload": row.workload.id,
                            "title": row.workload.heading(config),
                            "implementation": row.case.implementation,
                            "reference": row.case.reference,
                            "median_us": row.timing.median_us,
                            "p99_us": row.timing.p99_us,
                            "ops_per_s": row.timing.ops_per_second,
                            "ratio": row.ratio,
                            "batch": row.timing.batch,
                            "threads": row.timing.threads,
                            "processes": row.timing.processes,
                            "samples": len(row.timing.per_op_ns),
                            "warmup_ops": row.timing.warmup_ops,
                            "seconds": row.timing.seconds,
                            **row.extra,
                            "per_op_ns": [round(x, 1) for x in row.timing.per_op_ns],
                        }
                        for row in rows
                    ],
                },
                indent=1,
            )
        )
