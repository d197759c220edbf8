"""P processes writing one ledger at once: a pool of spawned workers that start together.

Workload h measures what several hosts sharing one ledger get, so each of its
rows runs in P worker processes, not threads (one interpreter lock would
measure Python, not the ledger).  :func:`shared_pool` keeps the workers for
the whole run (:func:`close_pools` ends them), since starting one costs
more than a row's warm-up.

A row is one :class:`Job` per process, a picklable description of what to
call (``usage()`` on a ledger, or a raw floor) over which keys.  Each worker
builds its operation, warms it up over ``warmup`` keys and says it is ready;
when every worker is ready the parent names a start a moment ahead (the
barrier), and each worker calls its operation from then for ``seconds``,
checking every answer and noting when each call ended.  The parent cuts
the run into equal slices (:func:`slice_count`: about
:data:`EVENTS_PER_SLICE` events each, so a slow row is not measured in
whole events per tiny slice) and counts every process's events in each: a
slice's time per event is its length over those events, the inverse of
the P processes' total throughput (as :func:`benchmarks.harness.measure`
reads threaded samples), so the median and p99 in the table are over slices.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from benchmarks.floors import PostgresFloor, SqliteFloor
from benchmarks.harness import Keys, Timing
from limitry_local import Tracker
from limitry_local.postgres_ledger import PostgresLedger

Kind = Literal["usage", "postgres-floor", "sqlite-floor"]

START_DELAY_S = 0.2
"""The start the parent names is this far ahead: every worker is waiting by then."""
EVENTS_PER_SLICE = 50
"""Aim for this many events (of all processes) per slice..."""
SLICES = (5, 40)
"""...in at least 5 and at most 40 slices of the timed run."""
REPLY_TIMEOUT_S = 120.0
"""Longest wait for a worker's answer beyond the timed run; a hung worker fails the row."""


@dataclass(frozen=True)
class Job:
    """What one worker process runs for a row.

    ``kind`` "usage": ``Tracker(path)`` (a SQLite file) or
    ``Tracker(ledger=PostgresLedger(dsn, schema=schema))`` whose limits the
    parent created, calling ``usage()`` with one model call per key.
    "postgres-floor": :class:`PostgresFloor` on ``schema``; "sqlite-floor":
    :class:`SqliteFloor` on the ledger file ``path``, counting for ``quota_id``.
    """

    kind: Kind
    keys: tuple[str, ...]
    warmup: int
    dsn: str = ""
    schema: str = ""
    path: str = ""
    quota_id: str = ""


@dataclass(frozen=True)
class Report:
    """What one worker did: when each timed call ended, and every event it recorded."""

    ends: list[float]
    """Seconds from the start to the end of each call that ended within ``seconds``."""
    timed: int
    """Calls from the start to the first that ended after ``seconds`` (included)."""
    warmup: int


Op = Callable[[str], object]


def _operation(job: Job) -> tuple[Op, Callable[[object], bool] | None, Callable[[], None]]:
    """The job's call, its answer check, and how to close what it opened."""
    if job.kind == "usage":
        ledger = PostgresLedger(job.dsn, schema=job.schema) if job.dsn else None
        tracker = Tracker(job.path or None, ledger=ledger, timeout=30)

        def usage(key: str) -> object:
            return tracker.usage(
                customer_id=key,
                event_type="model_call",
                model="gpt-4o",
                input_tokens=100,
                output_tokens=20,
            )

        return usage, lambda answer: bool(getattr(answer, "allowed", False)), tracker.close
    if job.kind == "postgres-floor":
        floor = PostgresFloor(job.dsn, job.schema)
        return floor.record, None, floor.close
    sqlite = SqliteFloor(Path(job.path), schema="ledger", quota_id=job.quota_id)
    return sqlite.record, None, sqlite.close


def _timed(
    op: Op,
    accept: Callable[[object], bool] | None,
    keys: Keys,
    start: tuple[float, float],
) -> tuple[list[float], int]:
    """Call ``op`` from ``start_at`` (wall clock, shared by the processes) for ``seconds``
    (``start`` is those two); when each call ended, and how many calls were made."""
    start_at, seconds = start
    ends: list[float] = []
    end = start_at + seconds
    done = 0
    clock = time.time
    gc.collect()
    gc.disable()
    try:
        time.sleep(max(0.0, start_at - clock()))
        while True:
            for key in keys.take(64):
                answer = op(key)
                done += 1
                if accept is not None and not accept(answer):
                    raise AssertionError(f"{key}: not admitted: {answer!r}")
                now = clock()
                if now >= end:
                    return ends, done
                ends.append(now - start_at)
    finally:
        gc.enable()


def _serve(pipe: Connection) -> None:
    """A worker's loop: a job, ready, the start, the report; until the parent sends None."""
    while True:
        job = pipe.recv()
        if job is None:
            return
        try:
            op, accept, close = _operation(job)
        except BaseException:
            pipe.send(("error", traceback.format_exc()))
            continue
        try:
            keys = Keys(job.keys)
            for key in keys.take(job.warmup):
                answer = op(key)
                if accept is not None and not accept(answer):
                    raise AssertionError(f"{key}: not admitted during warm-up: {answer!r}")
            pipe.send(("ready", None))
            start = pipe.recv()
            if start is None:  # another worker failed: no timed run
                pipe.send(("done", None))
                continue
            ends, timed = _timed(op, accept, keys, start)
            pipe.send(("done", Report(ends, timed, job.warmup)))
        except BaseException:
            pipe.send(("error", traceback.format_exc()))
        finally:
            close()


def slice_count(events: int) -> int:
    """Slices to cut a timed run of ``events`` events into (see :data:`EVENTS_PER_SLICE`).

    >>> slice_count(100), slice_count(1000), slice_count(100_000)
    (5, 20, 40)
    """
    low, high = SLICES
    return max(low, min(high, events // EVENTS_PER_SLICE))


class Pool:
    """``size`` spawned worker processes; :meth:`run` gives a row to the first P of them."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes: list[Any] = []
        for i in range(size):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child,), name=f"bench-{i}", daemon=True)
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)

    @property
    def size(self) -> int:
        return len(self._processes)

    def run(self, jobs: Sequence[Job], *, seconds: float) -> tuple[Timing, int]:
        """Run ``jobs[i]`` in worker i, all started together; the timing and events recorded."""
        if not 0 < len(jobs) <= self.size:
            raise ValueError(f"{len(jobs)} jobs for a pool of {self.size} processes")
        pipes = self._pipes[: len(jobs)]
        for pipe, job in zip(pipes, jobs, strict=True):
            pipe.send(job)
        first = [self._receive(pipe, 0.0) for pipe in pipes]
        failed = [text for kind, text in first if kind == "error"]
        start = None if failed else (time.time() + START_DELAY_S, seconds)
        for pipe, (kind, _) in zip(pipes, first, strict=True):
            if kind == "ready":
                pipe.send(start)
        done = [
            self._receive(pipe, seconds)
            for pipe, (kind, _) in zip(pipes, first, strict=True)
            if kind == "ready"
        ]
        failed += [text for kind, text in done if kind == "error"]
        if failed:
            raise RuntimeError("a benchmark worker failed:\n" + "\n".join(failed))
        reports: list[Report] = [report for _, report in done]
        ends = [t for r in reports for t in r.ends]
        slice_s = seconds / slice_count(len(ends))
        slices = [0] * slice_count(len(ends))
        for t in ends:
            slices[min(len(slices) - 1, max(0, int(t / slice_s)))] += 1
        per_event_ns = [slice_s * 1e9 / max(1, n) for n in slices]
        timing = Timing(
            per_event_ns,
            batch=max(1, round(sum(slices) / len(slices))),
            threads=0,
            warmup_ops=sum(r.warmup for r in reports),
            seconds=seconds,
            processes=len(jobs),
        )
        return timing, sum(r.timed + r.warmup for r in reports)

    def _receive(self, pipe: Connection, seconds: float) -> tuple[str, Any]:
        if not pipe.poll(seconds + REPLY_TIMEOUT_S):
            raise TimeoutError(f"a benchmark worker did not answer in {REPLY_TIMEOUT_S:.0f} s")
        answer: tuple[str, Any] = pipe.recv()
        return answer

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # that worker is gone already
                pipe.send(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()


_POOLS: dict[int, Pool] = {}


def shared_pool(size: int) -> Pool:
    """The run's pool of ``size`` workers, started on first use."""
    if size not in _POOLS:
        _POOLS[size] = Pool(size)
    return _POOLS[size]


def close_pools() -> None:
    """End every worker :func:`shared_pool` started."""
    while _POOLS:
        _POOLS.popitem()[1].close()
