"""What the processes of tests/test_multiprocess.py run, and the team that runs it.

Kept apart from the test module so a spawned child imports only this and
limitry_local (not pytest, hypothesis or the fixtures).  A :class:`Team` of
spawned processes serves every test of the module (starting six costs more
CPU than the tests' own work on the 2-core machine).  For each task every
member opens its own Tracker on the shared ledger, on a clock stopped at
one instant (every event falls in the same hour, day and month), waits on
the team's barrier, and puts what it saw on the results queue; an
unexpected exception (a deadlock error, a lock timeout) is put there as its
traceback, so the test fails naming it.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limitry_local import QuotaExceeded, Tracker
from limitry_local.limitry import Limitry
from limitry_local.postgres_ledger import PostgresLedger


@dataclass(frozen=True)
class Ledger:
    """Where the processes meet: a PostgreSQL schema (``dsn`` and ``schema``) or a file."""

    dsn: str = ""
    schema: str = ""
    path: str = ""

    def tracker(self, now: float) -> Tracker:
        """A Tracker of this process on the shared ledger, its clock stopped at ``now``."""
        if self.dsn:
            ledger = PostgresLedger(self.dsn, schema=self.schema, timeout=30)
            return Tracker(clock=lambda: now, ledger=ledger)
        return Tracker(Path(self.path), clock=lambda: now, timeout=30)


REGIONS = ("eu", "us", "ap")
"""A property every event carries, one of these, chosen at random."""
SHARED = {"customer_id": "cust_shared", "model": "gpt-4o"}
"""Every event's customer and model: the tight quota's one counter is shared by all."""


def admit(ledger: Ledger, now: float, seed: int, calls: int, *, barrier: Any, results: Any) -> None:
    """``calls`` events with random regions and token counts, keywords and properties in a
    random order; puts ``("ok", [(id, region, tokens)...], [denied quota ids...])``."""
    try:
        rng = random.Random(seed)
        admitted: list[tuple[str, str, int]] = []
        denied: list[list[str]] = []
        with ledger.tracker(now) as tracker:
            barrier.wait()
            for _ in range(calls):
                region, tokens = rng.choice(REGIONS), rng.randint(1, 50)
                properties = [("team", "core"), ("region", region), ("tier", "gold")]
                rng.shuffle(properties)
                fields: list[tuple[str, Any]] = [
                    *SHARED.items(),
                    ("event_type", "model_call"),
                    ("total_tokens", tokens),
                    ("properties", dict(properties)),
                ]
                rng.shuffle(fields)
                try:
                    answer = tracker.usage(**dict(fields))
                except QuotaExceeded as exc:
                    denied.append([q.id for q in exc.body.quotas if q.exceeded])
                else:
                    admitted.append((answer.id, region, tokens))
        results.put(("ok", admitted, denied))
    except BaseException:
        results.put(("error", traceback.format_exc(), []))


def replay(ledger: Ledger, now: float, seed: int, keys: int, *, barrier: Any, results: Any) -> None:
    """Every process sends idempotency keys ``race-0`` .. at the same moment (a barrier per
    key), the same event for a key; puts ``("ok", [the 201 body of each key...], [])``."""
    try:
        rng = random.Random(seed)
        answers: list[dict[str, Any]] = []
        with ledger.tracker(now) as tracker:
            for key in range(keys):
                fields: list[tuple[str, Any]] = [
                    *SHARED.items(),
                    ("event_type", "model_call"),
                    ("total_tokens", key + 1),
                    ("idempotency_key", f"race-{key}"),
                    ("properties", {"team": "core", "region": REGIONS[key % 3], "tier": "gold"}),
                ]
                rng.shuffle(fields)
                barrier.wait()
                answers.append(tracker.usage(**dict(fields)).model_dump(by_alias=True))
        results.put(("ok", answers, []))
    except BaseException:
        results.put(("error", traceback.format_exc(), []))


def check(ledger: Ledger, now: float, seed: int, calls: int, *, barrier: Any, results: Any) -> None:
    """Limitry 1.0 checks: ``calls`` consumes by user u1 drawing on two shared pools
    listed in a random order, then ``calls`` reserves of one agent's concurrent slots,
    none released; puts ``("ok", [consumes allowed, reserves allowed], [])``."""
    try:
        rng = random.Random(seed)
        pools = [{"kind": "team", "id": "t1"}, {"kind": "org", "id": "o1"}]
        with ledger.tracker(now) as tracker:
            limitry = Limitry(tracker)
            barrier.wait()
            consumed = 0
            for _ in range(calls):
                rng.shuffle(pools)
                decision = limitry.checks.create(
                    subject={"kind": "user", "id": "u1"}, action="chat", shared=list(pools)
                )
                consumed += decision["allowed"]
            barrier.wait()
            reserved = sum(
                limitry.checks.create(
                    subject={"kind": "agent", "id": "a1"}, action="run", mode="reserve"
                )["allowed"]
                for _ in range(calls)
            )
        results.put(("ok", [consumed, reserved], []))
    except BaseException:
        results.put(("error", traceback.format_exc(), []))


def _member(tasks: Any, barrier: Any, results: Any) -> None:
    """A team member's loop: run each ``(target, args)`` it is given, until None."""
    while (task := tasks.get()) is not None:
        target, args = task
        target(*args, barrier=barrier, results=results)


class Team:
    """``size`` spawned processes that run one task each at a time, sharing one barrier."""

    def __init__(self, size: int, *, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._barrier = context.Barrier(self.size, timeout=self.timeout)
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(self.size)]
        self._processes = [
            context.Process(target=_member, args=(tasks, self._barrier, self._results))
            for tasks in self._tasks
        ]
        for process in self._processes:
            process.start()

    def run(
        self, target: Callable[..., None], args: list[tuple[Any, ...]]
    ) -> list[tuple[str, Any, Any]]:
        """``target(*args[i], barrier=, results=)`` in member i; what each put.

        Fails when one errs, dies, or has not answered within ``timeout``
        seconds; the team is then started afresh for the next test.
        """
        assert len(args) == self.size
        for tasks, task_args in zip(self._tasks, args, strict=True):
            tasks.put((target, task_args))
        answers: list[tuple[str, Any, Any]] = []
        deadline = time.monotonic() + self.timeout
        while len(answers) < self.size and time.monotonic() < deadline:
            try:
                answers.append(self._results.get(timeout=0.5))
            except queue.Empty:
                if not all(process.is_alive() for process in self._processes):
                    break
        errors = [text for kind, text, _ in answers if kind == "error"]
        if errors or len(answers) < self.size:
            codes = [process.exitcode for process in self._processes]
            self.close()
            self._start()
            assert not errors, "a process failed:\n" + "\n".join(errors)
            raise AssertionError(
                f"{self.size - len(answers)} of {self.size} processes gave no answer in "
                f"{self.timeout:.0f} s (deadlocked, or died: exit codes {codes})"
            )
        return answers

    def close(self) -> None:
        """Stop every member: at once if it is still busy."""
        for tasks, process in zip(self._tasks, self._processes, strict=True):
            if process.is_alive():
                tasks.put(None)
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
