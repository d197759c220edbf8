"""The ledgers' report queries: the focused rules each ledger keeps whatever the tracker asks.

That the three ledgers' reports agree on random writes, grouped by every
column and every period grid under random filters and bounds, is the
differential state machine's (tests/properties/test_ledger_differential.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from limitry_local.ledger import (
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
from tests.conftest import POSTGRES_DSN, postgres_schema

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


def test_reports_and_totals_sum_the_micro_cents_stored_with_each_event(
    ledger: LedgerBackend,
) -> None:
    # The tracker stores micro_cents(cost_cents); a ledger is given 7 for 0.1
    # cents here, so a report that counted cost_cents again would say 100,000.
    stored = memory._event("evt_1", "acme", memory.T0)._replace(cost_micro_cents=7)
    _record(ledger, stored, memory._event("evt_2", "acme", memory.T0))
    assert next(ledger.scan_events()).cost_micro_cents == 7
    assert ledger.totals("acme", None, None).cost_micro_cents == 100_007
    assert ledger.usage_breakdown("model", ReportFilter()) == [
        ("gpt", UsageTotals(2, 14, 6, 8, 100_007))
    ]
    day = utc_grid("day")
    assert ledger.usage_timeseries(*day, ReportFilter()) == [
        (memory.DAY_START, UsageTotals(2, 14, 6, 8, 100_007))
    ]


def test_an_event_with_a_cost_but_no_micro_cents_is_refused_and_nothing_is_kept(
    ledger: LedgerBackend,
) -> None:
    unpriced = memory._event("evt_2", "acme", memory.T0)._replace(cost_micro_cents=None)
    with pytest.raises(ValueError, match=r"'evt_2' has cost_cents=0.1 but cost_micro_cents=None"):
        _record(ledger, memory._event("evt_1", "acme", memory.T0), unpriced)
    assert ledger.event_count() == 0
    # No cost, no micro-cents: nothing to count.
    _record(ledger, unpriced._replace(cost_cents=None))
    assert ledger.totals("acme", None, None) == UsageTotals(1, 7, 3, 4, 0)


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
