"""The three ledgers against each other: the same writes must give the same reads.

One hypothesis state machine drives the same random write scopes through a
MemoryLedger, a SQLite Ledger on a real file and a PostgresLedger on a
fresh schema of the real server: events (with and without idempotency
keys) and their counter increments, definition saves and deletes, counter
rebuilds, version bumps, holds taken, released and expired, alert firings,
and scopes that raise halfway.  After every step, and after every write
inside a scope, every read the protocol offers must answer the same on all
three: counters, definitions in order, events listed and paged under random
filters, idempotency keys, totals, usage breakdowns and timeseries, holds
and the alert history.  The SQLite file is the reference each of the
others is compared with, so a failure names the ledger that differs.

The operations and reads are tests/test_memory_ledger.py's; this machine
replaces the two-ledger machines that file and tests/test_postgres_ledger.py
ran, and the report machines of tests/test_usage_report_ledgers.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from limitry_local.ledger import REPORT_COLUMNS, Ledger, LedgerBackend, ReportFilter, UsageTotals
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.periods import utc_grid
from limitry_local.postgres_ledger import PostgresLedger
from tests import test_memory_ledger as ops
from tests.conftest import POSTGRES_DSN, postgres_schema


def _mostly_none(values: list[Any]) -> st.SearchStrategy[Any]:
    # No filter most of the time: four random filters at once would match nothing.
    return st.sampled_from([None, None, None, *(v for v in values if v is not None)])


report_filters = st.builds(
    ReportFilter,
    customer_id=_mostly_none(ops.CUSTOMERS),
    event_type=_mostly_none(ops.EVENT_TYPES),
    model=_mostly_none(ops.MODELS),
    provider=_mostly_none(ops.PROVIDERS),
    start=ops.bounds,
    end=ops.bounds,
)
GRIDS = [utc_grid("hour"), utc_grid("day"), utc_grid("week"), (7, 3)]
list_queries = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(ops.CUSTOMERS),
        "event_type": st.sampled_from(ops.EVENT_TYPES),
        "model": st.sampled_from(ops.MODELS),
        "start": ops.bounds,
        "end": ops.bounds,
        "before_seq": st.one_of(st.none(), st.integers(-1, 40)),
        "limit": st.one_of(st.integers(0, 25), st.just(-1)),
    }
)


def _reports(ledger: LedgerBackend, where: ReportFilter) -> dict[str, object]:
    return {
        **{f"by {c}": _by(ledger, c, where) for c in REPORT_COLUMNS},
        **{f"per {grid}": sorted(ledger.usage_timeseries(*grid, where)) for grid in GRIDS},
    }


def _by(ledger: LedgerBackend, column: str, where: ReportFilter) -> list[tuple[Any, UsageTotals]]:
    rows = ledger.usage_breakdown(column, where)
    return sorted(rows, key=lambda row: (row[0] is None, row[0] or ""))


class _Ranked:
    """A PostgresLedger whose event and firing numbers read as their rank (1, 2, ...).

    PostgreSQL numbers rows from identity sequences, which skip the numbers a
    rolled-back scope drew; SQLite reuses them.  Both promise the same order,
    which is what the differential compares: ``before_seq`` given as a rank
    means "before the event of that rank".
    """

    def __init__(self, ledger: PostgresLedger) -> None:
        self.ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def _event_seqs(self) -> list[int]:
        return sorted(
            seq
            for seq, _ in self.ledger.list_events(
                customer_id=None,
                event_type=None,
                model=None,
                start=None,
                end=None,
                before_seq=None,
                limit=-1,
            )
        )

    def _alert_seqs(self) -> list[int]:
        rows = self.ledger.alert_log(quota_id=None, alert_id=None, before_seq=None, limit=10**6)
        return sorted(seq for seq, _ in rows)

    @staticmethod
    def _bound(seqs: list[int], rank: int | None) -> int | None:
        if rank is None:
            return None
        if rank <= 1:
            return -(2**62)
        return seqs[rank - 1] if rank <= len(seqs) else 2**62

    def list_events(self, *, before_seq: int | None, **query: Any) -> list[tuple[int, Any]]:
        seqs = self._event_seqs()
        rank = {seq: i + 1 for i, seq in enumerate(seqs)}
        rows = self.ledger.list_events(before_seq=self._bound(seqs, before_seq), **query)
        return [(rank[seq], row) for seq, row in rows]

    def event_seq(self, event_id: str) -> int | None:
        seq = self.ledger.event_seq(event_id)
        return None if seq is None else self._event_seqs().index(seq) + 1

    def alert_log(self, *, before_seq: int | None, **query: Any) -> list[tuple[int, Any]]:
        seqs = self._alert_seqs()
        rank = {seq: i + 1 for i, seq in enumerate(seqs)}
        rows = self.ledger.alert_log(before_seq=self._bound(seqs, before_seq), **query)
        return [(rank[seq], row) for seq, row in rows]

    def alert_log_seq(self, entry_id: str) -> int | None:
        seq = self.ledger.alert_log_seq(entry_id)
        return None if seq is None else self._alert_seqs().index(seq) + 1


class ThreeLedgers(RuleBasedStateMachine):
    """Memory, SQLite file and PostgreSQL, driven alike; every read must agree."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self._schema = postgres_schema()
        self.reference = Ledger(Path(self._dir.name) / "usage.db")
        self.others: dict[str, LedgerBackend] = {
            "memory": MemoryLedger(),
            "postgres": cast(
                LedgerBackend,
                _Ranked(PostgresLedger(POSTGRES_DSN, schema=self._schema.__enter__())),
            ),
        }
        self.serial = 0
        self.event_ids: list[str] = []
        self.keys: list[str] = []
        self.holds: list[str] = []
        self.entries: list[str] = []

    def teardown(self) -> None:
        try:
            self.reference.close()
            for ledger in self.others.values():
                ledger.close()
        finally:
            self._schema.__exit__(None, None, None)
            self._dir.cleanup()

    def _agree(self, read: Any, what: str) -> None:
        expected = read(self.reference)
        for name, ledger in self.others.items():
            got = read(ledger)
            assert got == expected, f"{what}: sqlite {expected!r} != {name} {got!r}"

    def _agree_on_each(self, reads: Any) -> None:
        # Read by read, so a failure names the read that differs.
        expected = reads(self.reference)
        for name, ledger in self.others.items():
            got = reads(ledger)
            assert got.keys() == expected.keys()
            for read, value in expected.items():
                assert got[read] == value, f"{read}: sqlite {value!r} != {name} {got[read]!r}"

    # --- writes ------------------------------------------------------------------------------

    def _concrete(self, op: ops.Op) -> ops.Op:
        """Unique event ids, idempotency keys, hold ids and alert entry ids, as the tracker
        makes them; unique across rolled-back scopes too, so a rolled-back id must be unknown."""
        if isinstance(op, ops.Hold):
            self.serial += 1
            self.holds.append(f"hold_{self.serial}")
            return ops.Hold(op.increments, op.expires_at, self.holds[-1])
        if isinstance(op, ops.PopHold):
            pick = self.holds[op.pick % len(self.holds)] if self.holds else "none"
            return ops.PopHold(op.pick, pick)
        if isinstance(op, ops.LogAlert):
            self.serial += 1
            self.entries.append(f"qal_{self.serial}")
            return ops.LogAlert(op.row._replace(id=self.entries[-1]))
        if not isinstance(op, ops.Record):
            return op
        items = []
        for row, inc in op.items:
            self.serial += 1
            event_id = f"evt_{self.serial}"
            key = None if row.idempotency_key is None else f"key_{self.serial}"
            self.event_ids.append(event_id)
            if key is not None:
                self.keys.append(key)
            items.append((row._replace(id=event_id, idempotency_key=key), inc))
        return ops.Record(tuple(items))

    @staticmethod
    def _run(ledger: LedgerBackend, scope_ops: Sequence[ops.Op], fail: bool) -> list[object]:
        seen: list[object] = []
        try:
            with ledger.write() as scope:
                for op in scope_ops:
                    seen.append(ops._apply(ledger, scope, op))
                    seen.append(ops._in_scope_reads(ledger))
                if fail:
                    raise ops.Abort
        except ops.Abort:
            seen.append("aborted")
        return seen

    def _scope(self, scope_ops: list[ops.Op], fail: bool) -> None:
        concrete = [self._concrete(op) for op in scope_ops]
        before = ops._state(self.reference, self.event_ids, self.keys) if fail else None
        expected = self._run(self.reference, concrete, fail)
        for name, ledger in self.others.items():
            got = self._run(ledger, concrete, fail)
            for step, (want, have) in enumerate(zip(expected, got, strict=True)):
                assert have == want, f"{name}, inside the scope, after write {step // 2}"
        if before is not None:
            # A failed scope leaves the reference exactly as it was (and the
            # invariant holds the others to the reference).
            ops._assert_same(before, ops._state(self.reference, self.event_ids, self.keys))

    @rule(scope_ops=st.lists(ops.operations, min_size=1, max_size=6), fail=st.booleans())
    def write_scope(self, scope_ops: list[ops.Op], fail: bool) -> None:
        self._scope(scope_ops, fail)

    # Definition changes and alerts alone too: in mixed scopes events crowd them out.
    @rule(scope_ops=st.lists(ops.definition_operations, min_size=1, max_size=4), fail=st.booleans())
    def change_definitions(self, scope_ops: list[ops.Op], fail: bool) -> None:
        self._scope(scope_ops, fail)

    @rule(scope_ops=st.lists(ops.alert_operations, min_size=1, max_size=4), fail=st.booleans())
    def log_alerts(self, scope_ops: list[ops.Op], fail: bool) -> None:
        self._scope(scope_ops, fail)

    # --- reads -------------------------------------------------------------------------------

    @rule(query=list_queries)
    def lists_agree(self, query: dict[str, Any]) -> None:
        self._agree(lambda ledger: ops._list(ledger, **query), f"list_events({query})")

    @precondition(lambda self: bool(self.event_ids))
    @rule(pick=st.integers(0, 10**6), customer_id=st.sampled_from(ops.CUSTOMERS))
    def pages_from_a_cursor_agree(self, pick: int, customer_id: str | None) -> None:
        # The tracker pages with before_seq = event_seq(cursor id).
        event_id = self.event_ids[pick % len(self.event_ids)]
        self._agree(lambda ledger: ledger.event_seq(event_id), "event_seq")
        seq = self.reference.event_seq(event_id)
        if seq is not None:
            for limit in (1, 3):
                query = {"customer_id": customer_id, "before_seq": seq, "limit": limit}
                self._agree(lambda ledger, q=query: ops._list(ledger, **q), f"page {query}")

    @precondition(lambda self: bool(self.entries))
    @rule(pick=st.integers(0, 10**6), alert_id=st.sampled_from([None, *ops.ALERT_IDS]))
    def alert_pages_from_a_cursor_agree(self, pick: int, alert_id: str | None) -> None:
        entry = self.entries[pick % len(self.entries)]
        self._agree(lambda ledger: ledger.alert_log_seq(entry), "alert_log_seq")
        seq = self.reference.alert_log_seq(entry)
        if seq is not None:
            for limit in (1, 3):
                query = {"alert_id": alert_id, "before_seq": seq, "limit": limit}
                self._agree(
                    lambda ledger, q=query: ops._alert_log(ledger, **q), f"alert page {query}"
                )

    @rule(customer_id=st.sampled_from(ops.TOTAL_CUSTOMERS), start=ops.bounds, end=ops.bounds)
    def totals_agree(self, customer_id: str, start: float | None, end: float | None) -> None:
        self._agree(lambda ledger: ledger.totals(customer_id, start, end), "totals")

    @precondition(lambda self: self.reference.event_count() > 0)
    @rule(where=report_filters)
    def filtered_reports_agree(self, where: ReportFilter) -> None:
        self._agree_on_each(lambda ledger: _reports(ledger, where))

    @invariant()
    def every_read_agrees(self) -> None:
        self._agree_on_each(lambda ledger: ops._state(ledger, self.event_ids, self.keys))
        self._agree_on_each(lambda ledger: ops._alert_state(ledger, self.entries))
        self._agree_on_each(lambda ledger: _reports(ledger, ReportFilter()))
        # A report is the events' sums: per customer, what totals() answers.
        by_customer = dict(self.reference.usage_breakdown("customer_id", ReportFilter()))
        for customer in ops.TOTAL_CUSTOMERS:
            assert by_customer.get(customer, UsageTotals(0, 0, 0, 0, 0)) == (
                self.reference.totals(customer, None, None)
            )


# Each example creates and drops a PostgreSQL schema and a SQLite file.
ThreeLedgers.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestThreeLedgers = ThreeLedgers.TestCase
