"""``MemoryLedger``, where it has always been imported from; it lives in
:mod:`limitry_local.ledger.memory`."""

from limitry_local.ledger.memory import MemoryLedger

__all__ = ["MemoryLedger"]
