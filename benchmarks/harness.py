"""Timing: warm up, then time many samples of ``batch`` operations each, gc disabled.

A sample is one ``time.perf_counter_ns`` interval around ``batch`` calls of
``op(key)``; its per-operation time is the interval divided by ``batch``.
Fast operations are timed in batches (about :data:`TARGET_SAMPLE_NS` each,
so the clock's own cost stays out of the numbers), slow ones one call per
sample (``batch == 1``), so the p99 of a slow row is the p99 of single calls
and the p99 of a batched row the p99 of batch means.  The median and p99
are taken over the samples.  With ``threads`` > 0 every sample runs
``batch`` calls in each of that many worker threads at once, and the
per-operation time is the sample's wall time divided by all the calls:
the inverse of the total throughput.  Rows run in several processes
(:mod:`benchmarks.processes`) read the same way, their samples being
slices of a timed run.
"""

from __future__ import annotations

import gc
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Op = Callable[[str], object]

TARGET_SAMPLE_NS = 50_000
"""Batch fast operations so that one sample takes about this long."""
THREADED_SAMPLE_NS = 5_000_000
"""A threaded sample runs this long, so starting and joining the workers is noise."""
SINGLE_CALL_NS = 20_000
"""Operations slower than this are timed one call per sample."""


@dataclass
class Timing:
    """What one row measured.  ``per_op_ns`` holds one number per sample."""

    per_op_ns: list[float]
    batch: int
    threads: int
    warmup_ops: int
    seconds: float
    processes: int = 0
    """Worker processes that ran the row at once (benchmarks/processes.py); 0: this one."""
    ops: int = field(init=False)

    def __post_init__(self) -> None:
        self.ops = len(self.per_op_ns) * self.batch * max(1, self.threads)

    @property
    def median_us(self) -> float:
        return statistics.median(self.per_op_ns) / 1000

    @property
    def p99_us(self) -> float:
        ordered = sorted(self.per_op_ns)
        return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)] / 1000

    @property
    def ops_per_second(self) -> float:
        return 1e6 / self.median_us


class Keys:
    """An endless walk over ``keys`` in order; each batch continues where the last stopped."""

    def __init__(self, keys: Sequence[str], start: int = 0) -> None:
        if not keys:
            raise ValueError("no keys")
        self._keys = list(keys)
        self._at = start % len(self._keys)

    def take(self, n: int) -> list[str]:
        keys, at = self._keys, self._at
        out = keys[at : at + n]
        while len(out) < n:
            out.extend(keys[: n - len(out)])
        self._at = (at + n) % len(keys)
        return out


def _run(op: Op, batch: list[str]) -> int:
    """Time one batch; the loop is the same for every implementation."""
    t0 = time.perf_counter_ns()
    for key in batch:
        op(key)
    return time.perf_counter_ns() - t0


class _Workers:
    """``threads`` worker threads that each run a batch when the main thread says go."""

    def __init__(self, op: Op, keys: Sequence[str], threads: int) -> None:
        self._op = op
        self._streams = [Keys(keys[i::threads] or keys) for i in range(threads)]
        self._batches: list[list[str]] = [[] for _ in range(threads)]
        self._go = threading.Barrier(threads + 1)
        self._done = threading.Barrier(threads + 1)
        self._stop = False
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"bench-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, i: int) -> None:
        op = self._op
        while True:
            self._go.wait()
            if self._stop:
                return
            try:
                for key in self._batches[i]:
                    op(key)
            except BaseException as exc:
                self._errors.append(exc)
            self._done.wait()

    def sample(self, batch: int) -> int:
        """Wall nanoseconds for every worker to run ``batch`` calls."""
        for i, stream in enumerate(self._streams):
            self._batches[i] = stream.take(batch)
        t0 = time.perf_counter_ns()
        self._go.wait()
        self._done.wait()
        elapsed = time.perf_counter_ns() - t0
        if self._errors:
            raise self._errors[0]
        return elapsed

    def stop(self) -> None:
        self._stop = True
        self._go.wait()
        for thread in self._threads:
            thread.join()


def measure(
    op: Op,
    keys: Sequence[str],
    *,
    budget_s: float,
    warmup_ops: int,
    accept: Callable[[object], bool] | None = None,
    threads: int = 0,
    max_samples: int = 20_000,
    min_samples: int = 5,
) -> Timing:
    """Warm ``op`` up over ``warmup_ops`` keys (checking each answer with ``accept``), then
    time samples until ``budget_s`` seconds of them are in (at least ``min_samples``)."""
    stream = Keys(keys)
    # Warm-up: caches, lazily built state (a bucket or a counter row per key), the
    # statement cache, and, with ``accept``, proof that the operation is admitted.
    for key in stream.take(warmup_ops):
        result = op(key)
        if accept is not None and not accept(result):
            raise AssertionError(f"{key}: not admitted during warm-up: {result!r}")
    # Estimate the cost of one call to size the samples: the median of a few short
    # runs, so one run slowed by another thread (a peer's expiry timer) does not count.
    chunk = max(1, min(100, warmup_ops // 5))
    estimate = statistics.median(_run(op, stream.take(chunk)) / chunk for _ in range(5))

    started = time.perf_counter()
    samples: list[float] = []
    gc.collect()
    gc.disable()
    try:
        if threads:
            batch = max(1, round(THREADED_SAMPLE_NS / max(estimate, 1.0) / threads))
            workers = _Workers(op, keys, threads)
            try:
                while len(samples) < max_samples and (
                    len(samples) < min_samples or time.perf_counter() - started < budget_s
                ):
                    samples.append(workers.sample(batch) / (batch * threads))
            finally:
                workers.stop()
        else:
            batch = 1 if estimate >= SINGLE_CALL_NS else max(1, round(TARGET_SAMPLE_NS / estimate))
            while len(samples) < max_samples and (
                len(samples) < min_samples or time.perf_counter() - started < budget_s
            ):
                keys_batch = stream.take(batch)
                samples.append(_run(op, keys_batch) / batch)
    finally:
        gc.enable()
    seconds = time.perf_counter() - started
    if accept is not None:
        # Still admitted after all that (a row that started denying measured something else).
        key = stream.take(1)[0]
        result = op(key)
        if not accept(result):
            raise AssertionError(f"{key}: denied after the timed samples: {result!r}")
    return Timing(samples, batch, threads, warmup_ops, seconds)
