"""``PostgresLedger``, where it has always been imported from; it lives in
:mod:`limitry_local.ledger.postgres`.  Importing it does not import psycopg."""

from limitry_local.ledger.pg_sql import SCHEMA_VERSION
from limitry_local.ledger.postgres import PostgresLedger

__all__ = ["SCHEMA_VERSION", "PostgresLedger"]
