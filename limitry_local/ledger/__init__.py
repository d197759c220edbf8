"""The ledgers: where the tracker keeps events, quota counters, definitions and keys.

One package, one concept per module:

- :mod:`~limitry_local.ledger.protocol`: :class:`LedgerBackend`, the contract
  the tracker writes against, and the rows that cross it;
- :mod:`~limitry_local.ledger.common`: the pure parts every ledger shares;
- :mod:`~limitry_local.ledger.schema`: the SQLite schema and its migrations;
- :mod:`~limitry_local.ledger.sqlite`: :class:`Ledger`, one SQLite file (or ``:memory:``);
- :mod:`~limitry_local.ledger.postgres`: ``PostgresLedger``, one PostgreSQL schema;
- :mod:`~limitry_local.ledger.memory`: ``MemoryLedger``, this process's memory.

The names below stay importable from ``limitry_local.ledger`` as they were
when it was one module; ``limitry_local.memory_ledger`` and
``limitry_local.postgres_ledger`` still name the other two ledgers.
"""

from __future__ import annotations

from limitry_local.errors import LedgerError, LedgerErrorReason
from limitry_local.ledger.protocol import (
    ALERT_COLUMNS,
    DEFINITION_TABLES,
    DURABILITIES,
    EVENT_COLUMNS,
    REPORT_COLUMNS,
    AlertRow,
    CounterIncrement,
    Durability,
    EventRow,
    LedgerBackend,
    ReportFilter,
    UsageTotals,
    check_options,
    priced,
    report_column,
)
from limitry_local.ledger.schema import SCHEMA_VERSION
from limitry_local.ledger.sqlite import Ledger

__all__ = [
    "ALERT_COLUMNS",
    "DEFINITION_TABLES",
    "DURABILITIES",
    "EVENT_COLUMNS",
    "REPORT_COLUMNS",
    "SCHEMA_VERSION",
    "AlertRow",
    "CounterIncrement",
    "Durability",
    "EventRow",
    "Ledger",
    "LedgerBackend",
    "LedgerError",
    "LedgerErrorReason",
    "ReportFilter",
    "UsageTotals",
    "check_options",
    "priced",
    "report_column",
]
