"""PostgreSQL's own SQL: the schema (DDL and migrations), the statements only the
PostgreSQL ledger runs, and how text is stored (NUL characters escaped).

The statements both database ledgers share are the SQL core's
(:mod:`limitry_local.ledger.sql`); the transactions that run these are
:mod:`limitry_local.ledger.postgres`'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from limitry_local.errors import LedgerError
from limitry_local.ledger.common import schema_version_of
from limitry_local.ledger.protocol import ALERT_COLUMNS, EVENT_COLUMNS
from limitry_local.ledger.sql import Dialect

if TYPE_CHECKING:
    from psycopg import Connection

SCHEMA_VERSION = 4
"""1: the first PostgreSQL schema (the SQLite ledger's version 5, in PostgreSQL types).
2: events and alert firings numbered by identity columns, not ``max(seq) + 1``;
both definition tables' ``fail_mode`` (the SQLite ledger's version 6).
3: ``quota_alerts.updated_at`` (the SQLite ledger's version 7).
4: ``records``, the Limitry 1.0 face's documents, and ``events.cost_micro_cents``
(the SQLite ledger's version 8)."""


# --- NUL characters -----------------------------------------------------------------
#
# PostgreSQL text cannot hold U+0000, which the API (and SQLite) accept in a
# customer id or an idempotency key.  Every string goes in through enc and
# comes out through dec: \x01 -> \x01\x01 and \x00 -> \x01\x02.  The mapping
# is one to one, so equality filters still work; strings without either
# character (all JSON, nearly every id) are stored as they are.

_ESCAPED = re.compile("\x01([\x01\x02])")


def enc(value: Any) -> Any:
    if isinstance(value, str) and ("\x00" in value or "\x01" in value):
        return value.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02")
    return value


def dec(value: Any) -> Any:
    if isinstance(value, str) and "\x01" in value:
        return _ESCAPED.sub(lambda m: "\x01" if m[1] == "\x01" else "\x00", value)
    return value


class Queries:
    """The statements only this engine runs (the writers' lock, the numbering), with
    the schema's quoted name and its writers' lock (:func:`lock_key`) written in
    once; the rest are the SQL core's."""

    def __init__(self, schema: str, lock: int) -> None:
        s = self.schema = schema
        self.version = f"SELECT value FROM {s}.meta WHERE key = 'definitions_version'"
        self.bump = (
            f"UPDATE {s}.meta SET value = (value::bigint + 1)::text "
            "WHERE key = 'definitions_version' RETURNING value"
        )
        # used is NUMERIC; the cast refuses a sum past 2**63 - 1 (22003), as
        # SQLite's INTEGER would, so no ledger holds a counter the others cannot.
        self.add_to_counter = (
            f"INSERT INTO {s}.quota_counters (quota_id, key, period_start, used) "
            "VALUES (%s, %s, %s, %s::bigint) ON CONFLICT (quota_id, key, period_start) "
            f"DO UPDATE SET used = ({s}.quota_counters.used + excluded.used)::bigint"
        )
        self.counter = (
            f"SELECT used FROM {s}.quota_counters "
            "WHERE quota_id = %s AND key = %s AND period_start = %s"
        )
        self.idempotent = f"SELECT event_id, response FROM {s}.idempotency_keys WHERE key = %s"
        self.take_expired_holds = (
            f"DELETE FROM {s}.holds WHERE id IN (SELECT id FROM {s}.holds "
            "WHERE expires_at <= %s FOR UPDATE SKIP LOCKED) RETURNING id, increments"
        )
        # seq from the identity column: no lock on the whole table to number one.
        self.insert_event = (
            f"INSERT INTO {s}.events ({', '.join(EVENT_COLUMNS)}) VALUES "
            f"({', '.join('%s' for _ in EVENT_COLUMNS)})"
        )
        self.insert_key = (
            f"INSERT INTO {s}.idempotency_keys (key, event_id, response) VALUES (%s, %s, %s)"
        )
        self.scan = (
            f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM {s}.events "
            "WHERE seq > %s ORDER BY seq LIMIT %s"
        )
        # seq from the identity column, as for events.  Two writers logging one
        # alert, key and period hold that counter's lock, so they take turns.
        self.log_alert = (
            f"INSERT INTO {s}.alert_log ({', '.join(ALERT_COLUMNS)}) VALUES "
            f"({', '.join('%s' for _ in ALERT_COLUMNS)}) "
            "ON CONFLICT (alert_id, key, period_start) DO NOTHING"
        )
        # The statements of every usage(): PREPAREd once per connection under
        # these names ($1, $2, ... for %s), run as "EXECUTE name(literals)".
        hot = {
            "limitry_version": self.version,
            "limitry_idempotent": self.idempotent,
            "limitry_counter": self.counter,
            "limitry_event": self.insert_event,
            "limitry_add": self.add_to_counter,
            "limitry_key": self.insert_key,
        }
        self.prepared = {name: numbered(text) for name, text in hot.items()}
        self.run = {
            name: f"EXECUTE {name}({', '.join(['%s'] * text.count('%s'))})"
            if "%s" in text
            else f"EXECUTE {name}"
            for name, text in hot.items()
        }
        # The advisory locks of every scope, PREPAREd as well: as plain SELECTs
        # the server parsed and planned them in every message, a sixth of its
        # work for a usage() (run by lock_all and by the scope's BEGIN).
        # No column (SELECT FROM): nothing for the client to read back.
        self.prepared.update(
            limitry_shared=f"SELECT FROM pg_advisory_xact_lock_shared({lock})",
            limitry_exclusive=f"SELECT FROM pg_advisory_xact_lock({lock})",
            limitry_lock="SELECT FROM pg_advisory_xact_lock($1)",
            # The version and one counter's lock, in one statement (_begin).
            limitry_version_lock=f"SELECT ({self.version}), pg_advisory_xact_lock($1::bigint)",
            limitry_locks="SELECT count(pg_advisory_xact_lock(x)) FROM unnest($1::bigint[]) AS x",
        )


def schema_ddl(s: str) -> str:
    """The current schema, for a new ledger (an old one would be migrated instead)."""
    definition = (
        "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE, "
        "name text, dimension_filters text, metric text, limit_value bigint"
    )
    return f"""
        CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
        INSERT INTO {s}.meta (key, value)
            VALUES ('schema_version', '{SCHEMA_VERSION}'), ('definitions_version', '0');
        CREATE TABLE {s}.events (
            seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            ts double precision NOT NULL,
            customer_id text,
            event_type text,
            model text,
            provider text,
            input_tokens bigint,
            output_tokens bigint,
            total_tokens bigint,
            latency_ms bigint,
            cost_cents double precision,
            properties text NOT NULL,
            idempotency_key text,
            cached_input_tokens bigint,
            cost_micro_cents bigint
        );
        CREATE INDEX ON {s}.events (customer_id, ts);
        CREATE INDEX ON {s}.events (ts);
        CREATE TABLE {s}.quota_counters (
            quota_id text,
            key text,
            period_start bigint,
            used numeric NOT NULL,
            PRIMARY KEY (quota_id, key, period_start)
        );
        CREATE TABLE {s}.idempotency_keys (
            key text PRIMARY KEY, event_id text NOT NULL, response text
        );
        -- increments: JSON [[quota_id, key, period_start, amount], ...], already on
        -- the counters (open reservations, docs/semantics.md).
        CREATE TABLE {s}.holds (
            id text PRIMARY KEY, increments text NOT NULL, expires_at double precision NOT NULL
        );
        CREATE INDEX ON {s}.holds (expires_at);
        CREATE TABLE {s}.quotas (
            {definition}, period text, per text, timezone text, overrides text, mode text,
            created_at text, updated_at text, fail_mode text
        );
        CREATE TABLE {s}.rate_limits (
            {definition}, "window" text, enabled boolean, per text, generation text,
            overrides text, mode text, created_at text, updated_at text, fail_mode text
        );
        CREATE TABLE {s}.quota_alerts (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE,
            quota_id text, threshold bigint, created_at text, updated_at text
        );
        -- One row per firing; the unique key is "once per alert, key and period".
        CREATE TABLE {s}.alert_log (
            seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            alert_id text NOT NULL,
            quota_id text NOT NULL,
            key text NOT NULL,
            period_start bigint NOT NULL,
            period_end bigint,
            threshold bigint,
            used numeric,
            limit_units numeric,
            quota_name text,
            metric text,
            period text,
            dimensions text,
            event_id text,
            triggered_at double precision NOT NULL,
            UNIQUE (alert_id, key, period_start)
        );
        CREATE INDEX ON {s}.alert_log (quota_id, seq);
        CREATE INDEX ON {s}.alert_log (alert_id, seq);
        CREATE INDEX ON {s}.alert_log (alert_id, triggered_at);
        {records_ddl(s)}
    """


def records_ddl(s: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {s}.records (
            seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            kind text NOT NULL, id text NOT NULL, body text NOT NULL,
            expires_at double precision, UNIQUE (kind, id)
        );
        CREATE INDEX IF NOT EXISTS records_kind_expires ON {s}.records (kind, expires_at);
    """


def v1_to_v2(conn: Connection[Any], s: str, schema: str) -> None:
    """Version 1 numbered events and firings as ``max(seq) + 1`` under one lock,
    and had no fail modes (NULL reads as "closed")."""
    for table in ("events", "alert_log"):
        identity = conn.execute(
            "SELECT is_identity FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s AND column_name = 'seq'",
            [schema, table],
        ).fetchone()
        if identity is None or identity[0] != "YES":
            conn.execute(
                f"ALTER TABLE {s}.{table} ALTER COLUMN seq ADD GENERATED BY DEFAULT AS IDENTITY"
            )
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'seq'), "
                f"coalesce((SELECT max(seq) FROM {s}.{table}), 0) + 1, false)",
                [f"{s}.{table}"],
            )
    for table in ("quotas", "rate_limits"):
        conn.execute(f"ALTER TABLE {s}.{table} ADD COLUMN IF NOT EXISTS fail_mode text")
    conn.execute(f"UPDATE {s}.meta SET value = '2' WHERE key = 'schema_version'")


def v2_to_v3(conn: Connection[Any], s: str) -> None:
    """Version 2 could not change an alert: NULL ``updated_at`` reads as its ``created_at``."""
    conn.execute(f"ALTER TABLE {s}.quota_alerts ADD COLUMN IF NOT EXISTS updated_at text")
    conn.execute(f"UPDATE {s}.meta SET value = '3' WHERE key = 'schema_version'")


def v3_to_v4(conn: Connection[Any], s: str) -> None:
    """Version 3 summed each report's micro-cents from ``cost_cents``: the same
    expression fills the new column, so an old ledger reports what it did."""
    conn.execute(records_ddl(s))
    conn.execute(f"ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS cost_micro_cents bigint")
    # SQLite's round(), and so metrics.micro_cents: add 0.5 in double
    # precision, truncate, away from zero.
    conn.execute(
        f"UPDATE {s}.events SET cost_micro_cents = CASE WHEN cost_cents >= 0 "
        "THEN trunc(cost_cents * 1e6::float8 + 0.5::float8) "
        "ELSE -trunc(-cost_cents * 1e6::float8 + 0.5::float8) END::bigint "
        "WHERE cost_cents IS NOT NULL"
    )
    conn.execute(f"UPDATE {s}.meta SET value = '4' WHERE key = 'schema_version'")


def numbered(query: str) -> str:
    """A statement with psycopg's ``%s`` placeholders as PREPARE's ``$1``, ``$2``, ..."""
    numbers = iter(range(1, query.count("%s") + 1))
    return re.sub("%s", lambda _: f"${next(numbers)}", query)


def lock_all(locks: Sequence[int], *, prepared: bool = True) -> str:
    """Take these advisory locks, in the order given (the caller sorted them).

    ``prepared``: by the statements :class:`Queries` PREPAREs on every
    connection before its first scope; else (setting up) as a plain SELECT."""
    # A function scan yields unnest's rows in the array's order, and nothing
    # here sorts them again.  The ids are ints: written in as they are.
    ids = ",".join(str(int(lock)) for lock in locks)
    if not prepared:
        return f"SELECT count(pg_advisory_xact_lock(x)) FROM unnest(ARRAY[{ids}]::bigint[]) AS x"
    if len(locks) == 1:
        return f"EXECUTE limitry_lock({ids})"
    return f"EXECUTE limitry_locks('{{{ids}}}')"


class LockIds:
    """The advisory locks of one schema's rows (keys, counters, records), and the
    ones the open transaction holds (:meth:`clear` when it ends).

    An id is the same in every process and host; a call locks a counter, then
    writes it, so ids are kept (up to :data:`LOCK_IDS_KEPT`) rather than hashed twice."""

    def __init__(self, schema: str) -> None:
        self._salt = f"limitry_local:{schema}:".encode()
        self._ids: dict[tuple[bytes, tuple[str | int, ...]], int] = {}
        self._held: set[int] = set()

    def id(self, kind: bytes, *parts: str | int) -> int:
        known = self._ids.get((kind, parts))
        if known is not None:
            return known
        text = "\x00".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(self._salt + kind + text, digest_size=8).digest()
        lock = int.from_bytes(digest, "big", signed=True)
        if len(self._ids) >= LOCK_IDS_KEPT:
            self._ids.clear()
        self._ids[kind, parts] = lock
        return lock

    def new(self, ids: Iterable[int]) -> list[int]:
        """The ids not held yet, sorted (every call takes its locks in one global
        order), now counted as held."""
        new = sorted(set(ids) - self._held)
        self._held.update(new)
        return new

    def counters(self, counters: Iterable[tuple[str, str, int]]) -> list[int]:
        """:meth:`new` for these quota counters."""
        return self.new([self.id(b"c", q, k, s) for q, k, s in counters])

    def clear(self) -> None:
        self._held.clear()


LOCK_IDS_KEPT = 4096


def lock_key(schema: str) -> int:
    """The writers' advisory lock for one schema, the same in every process and host."""
    digest = hashlib.blake2b(f"limitry_local:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def schema_version(conn: Connection[Any], quoted: str, schema: str, where: str) -> int | None:
    """The schema's version; None when there is no ledger yet.  Refuses what is not ours."""
    found, tables = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, "
        "(SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s)",
        [f"{quoted}.meta", schema],
    ).fetchone() or (False, 0)
    if not found:
        if tables:
            # Someone else's schema: adding our tables to it would be a surprise.
            raise LedgerError(
                f"schema {schema!r} holds tables but is not a limitry_local ledger "
                f"({where}); give PostgresLedger(schema=...) another name",
                "not_a_ledger",
            )
        return None
    columns = conn.execute(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'meta' AND column_name IN ('key', 'value')",
        [schema],
    ).fetchone()
    row = (
        conn.execute(f"SELECT value FROM {quoted}.meta WHERE key = 'schema_version'").fetchone()
        if columns and columns[0] == 2
        else None
    )
    if row is None:
        # A table named meta is not enough: ours has key/value rows and a version.
        raise LedgerError(
            f"schema {schema!r} has a meta table but is not a limitry_local ledger "
            f"({where}); give PostgresLedger(schema=...) another name",
            "not_a_ledger",
        )
    return schema_version_of(row[0], SCHEMA_VERSION, where)


def migrate(conn: Connection[Any], quoted: str, schema: str, where: str) -> None:
    """Create the schema, or bring an older one to :data:`SCHEMA_VERSION` (the caller
    holds the writers' lock, in one transaction: a failure leaves nothing half made)."""
    version = schema_version(conn, quoted, schema, where)
    if version is None:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]
        ).fetchone()
        if exists is None:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS still asks for the
            # CREATE privilege on the database, which a role given a schema may lack.
            conn.execute(f"CREATE SCHEMA {quoted}")
        conn.execute(schema_ddl(quoted))
    if version == 1:
        v1_to_v2(conn, quoted, schema)
    if version in (1, 2):
        v2_to_v3(conn, quoted)
    if version in (1, 2, 3):
        v3_to_v4(conn, quoted)


def dialect(quoted: str) -> Dialect:
    """How the SQL core's statements are written for PostgreSQL, on the schema ``quoted``."""
    return Dialect(
        mark="%s",
        prefix=f"{quoted}.",
        float_mark="%s::float8",
        int_mark="%s::bigint",
        # floor(), not a cast: ::bigint rounds.
        second="floor(ts)::bigint",
        modulo="%%",
        contains="strpos({0}, {1}) > 0",
        no_limit=None,  # LIMIT NULL; a negative LIMIT is an error here
        enc=enc,
        dec=dec,
    )
