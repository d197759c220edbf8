"""The ledgers' report queries agree: MemoryLedger and PostgresLedger against the SQLite Ledger.

The differential state machines of tests/test_memory_ledger.py and
tests/test_postgres_ledger.py drive random write scopes through two ledgers
at once; here they also ask both for usage reports, grouped by every column
and every period grid, under random filters and bounds.  Their rows reach
what the API never writes (a null customer or event type, an empty string,
costs that round awkwardly to micro-cents, amounts up to 10**12), and the
answers must be the same integers.  Below them, the focused rules each
ledger keeps whatever the tracker asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from limitry_local.ledger import (
    REPORT_COLUMNS,
    EventRow,
    Ledger,
    LedgerBackend,
    LedgerError,
    ReportFilter,
    UsageTotals,
)
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.periods import utc_grid
from limitry_local.postgres_ledger import PostgresLedger
from tests import test_memory_ledger as memory
from tests import test_postgres_ledger as postgres
from tests.conftest import POSTGRES_DSN, postgres_schema


def _mostly_none(values: list[Any]) -> st.SearchStrategy[Any]:
    # No filter most of the time: four random filters at once would match nothing.
    return st.sampled_from([None, None, None, *(v for v in values if v is not None)])


report_filters = st.builds(
    ReportFilter,
    customer_id=_mostly_none(memory.CUSTOMERS),
    event_type=_mostly_none(memory.EVENT_TYPES),
    model=_mostly_none(memory.MODELS),
    provider=_mostly_none(memory.PROVIDERS),
    start=memory.bounds,
    end=memory.bounds,
)
GRIDS = [utc_grid("hour"), utc_grid("day"), utc_grid("week")]


def _reports(ledger: LedgerBackend, where: ReportFilter, grid: tuple[int, int]) -> object:
    return {
        "by": {c: _sorted(ledger.usage_breakdown(c, where)) for c in REPORT_COLUMNS},
        "per": sorted(ledger.usage_timeseries(*grid, where)),
    }


def _sorted(rows: list[tuple[str | None, UsageTotals]]) -> list[tuple[str | None, UsageTotals]]:
    return sorted(rows, key=lambda row: (row[0] is None, row[0] or ""))


class _Reports:
    """What both machines gain: every report agrees with the SQLite ledger's."""

    sqlite: Ledger
    memory: LedgerBackend

    @invariant()
    def unfiltered_reports_agree(self) -> None:
        for grid in GRIDS:
            assert _reports(self.memory, ReportFilter(), grid) == _reports(
                self.sqlite, ReportFilter(), grid
            )
        # And they are the events' sums: per customer, what totals() answers.
        by_customer = dict(self.sqlite.usage_breakdown("customer_id", ReportFilter()))
        for customer in memory.TOTAL_CUSTOMERS:
            assert by_customer.get(customer, UsageTotals(0, 0, 0, 0, 0)) == (
                self.sqlite.totals(customer, None, None)
            )

    @precondition(lambda self: self.sqlite.event_count() > 0)
    @rule(where=report_filters, grid=st.sampled_from([*GRIDS, (7, 3)]))
    def filtered_reports_agree(self, where: ReportFilter, grid: tuple[int, int]) -> None:
        assert _reports(self.memory, where, grid) == _reports(self.sqlite, where, grid)


class MemoryReports(_Reports, memory.LedgerDifferential):
    pass


class PostgresReports(_Reports, postgres.PostgresDifferential):
    pass


MemoryReports.TestCase.settings = settings(max_examples=40, stateful_step_count=20)
TestMemoryReports = MemoryReports.TestCase
PostgresReports.TestCase.settings = settings(max_examples=20, stateful_step_count=20)
TestPostgresReports = PostgresReports.TestCase


# --- focused rules, on each ledger ----------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Iterator[LedgerBackend]:
    if request.param == "postgres":
        with postgres_schema() as schema:
            opened: LedgerBackend = PostgresLedger(POSTGRES_DSN, schema=schema)
            yield opened
            opened.close()
        return
    opened = MemoryLedger() if request.param == "memory" else Ledger(None)
    yield opened
    opened.close()


def _record(ledger: LedgerBackend, *rows: EventRow) -> None:
    with ledger.write() as scope:
        ledger.record(scope, [(row, [], None) for row in rows])


def test_a_null_value_is_a_group_of_its_own(ledger: LedgerBackend) -> None:
    _record(
        ledger,
        memory._event("evt_1", None, memory.T0),
        memory._event("evt_2", "", memory.T0),
        memory._event("evt_3", "\x00nul", memory.T0),  # PostgreSQL text cannot hold NUL
        memory._event("evt_4", None, memory.T0),
    )
    groups = dict(ledger.usage_breakdown("customer_id", ReportFilter()))
    assert groups == {
        None: UsageTotals(2, 14, 6, 8, 200_000),
        "": UsageTotals(1, 7, 3, 4, 100_000),
        "\x00nul": UsageTotals(1, 7, 3, 4, 100_000),
    }
    assert ledger.usage_breakdown("customer_id", ReportFilter(customer_id="\x00nul")) == [
        ("\x00nul", UsageTotals(1, 7, 3, 4, 100_000))
    ]


def test_the_range_is_half_open_and_periods_start_on_the_grid(ledger: LedgerBackend) -> None:
    start = memory.DAY_START
    _record(
        ledger,
        memory._event("evt_1", "acme", start - 1e-6),
        memory._event("evt_2", "acme", start),
        memory._event("evt_3", "acme", start + 86_399.999999),
    )
    day = utc_grid("day")
    assert sorted(ledger.usage_timeseries(*day, ReportFilter())) == [
        (start - 86_400, UsageTotals(1, 7, 3, 4, 100_000)),
        (start, UsageTotals(2, 14, 6, 8, 200_000)),
    ]
    within = ReportFilter(start=start, end=start + 86_399.999999)
    assert ledger.usage_timeseries(*day, within) == [(start, UsageTotals(1, 7, 3, 4, 100_000))]
    assert ledger.usage_breakdown("model", ReportFilter(start=start, end=start)) == []


def test_an_unknown_column_is_refused_before_any_sql(ledger: LedgerBackend) -> None:
    with pytest.raises(ValueError, match="no report column 'seq'"):
        ledger.usage_breakdown("seq", ReportFilter())
    with pytest.raises(ValueError, match="no report column"):
        ledger.usage_breakdown("model) FROM events; --", ReportFilter())


def test_a_closed_ledger_refuses_reports(ledger: LedgerBackend) -> None:
    _record(ledger, memory._event("evt_1", "acme", memory.T0))
    ledger.close()
    with pytest.raises(LedgerError, match="is closed") as info:
        ledger.usage_breakdown("model", ReportFilter())
    assert info.value.reason == "cannot_open"
    with pytest.raises(LedgerError, match="is closed"):
        ledger.usage_timeseries(*utc_grid("day"), ReportFilter())
