"""The PostgreSQL ledger's batches on the wire: literals written in, one message, its results.

A write scope sends each step's statements as one simple-query message (one
round trip, docs/scaling.md), so their parameters are written into the text
as literals.  Both halves are done here without psycopg's cursor, which
costs more per statement than the statements' own work on the client: a
``usage()`` spent about a quarter of its instructions in ``mogrify`` and in
the cursor's per-result bookkeeping.  Results are still read by psycopg's
own loaders (its ``Transformer``), and errors are psycopg's, raised from the
failed result, so what the ledger makes of them is unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from limitry_local.ledger.pg_sql import enc


def literal(value: Any) -> str:
    """``value`` as an SQL literal.

    Only the types the ledger sends: text (already NUL-escaped, see
    :func:`~limitry_local.ledger.pg_sql.enc`), whole numbers, finite
    floats, booleans and None.  Text is written as an escape string
    (``E'...'``, backslashes and quotes doubled), which reads the same
    whatever ``standard_conforming_strings`` says, even if a session changes
    it: no setting can end the literal early.
    """
    if value is None:
        return "NULL"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        text: str = value
        if "\x00" in text:
            raise ValueError("a NUL character cannot be sent: escape text with pg_sql.enc")
        return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    if kind is int:
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be stored in the ledger")
        return repr(value)
    raise TypeError(f"no SQL literal for a {kind.__name__}: {value!r}")


def stored_all(values: Sequence[Any]) -> list[str]:
    """Each value as stored, as an SQL literal: text NUL-escaped first
    (``literal(enc(value))``), in one loop (a ``usage()`` writes about twenty:
    a call each cost more than the escaping), the common types first."""
    out: list[str] = []
    for value in values:
        kind = type(value)
        if kind is str:
            text: str = value
            if "\x00" in text or "\x01" in text:
                text = enc(text)
            out.append("E'" + text.replace("\\", "\\\\").replace("'", "''") + "'")
        elif kind is int:
            out.append(str(value))
        elif value is None:
            out.append("NULL")
        else:
            out.append(literal(value))
    return out


class Statement:
    """One statement whose ``%s`` placeholders take stored values (:func:`stored_all`).

    Its template is made once, when the ledger is: a call only writes the
    literals in.

    >>> Statement("SELECT %s, %s")(["it's", 7])
    "SELECT E'it''s', 7"
    """

    __slots__ = ("_count", "_template", "query")

    def __init__(self, query: str) -> None:
        self.query = query
        self._template, self._count = _template(query)

    def __call__(self, params: Sequence[Any]) -> str:
        if len(params) != self._count:
            raise ValueError(f"{self._count} placeholders, {len(params)} parameters: {self.query}")
        return self._template % tuple(stored_all(params))


@functools.lru_cache(maxsize=256)
def _template(query: str) -> tuple[str, int]:
    """``query`` as a ``%`` template (any other ``%`` doubled), and its placeholder count.

    Cached: the same few statements are written on every call."""
    parts = query.split("%s")
    return "%s".join(part.replace("%", "%%") for part in parts), len(parts) - 1


class Batches:
    """Sends a batch of statements on one connection and reads every result."""

    def __init__(self, psycopg: Any) -> None:
        self._psycopg = psycopg
        self._fatal = psycopg.pq.ExecStatus.FATAL_ERROR
        self._execute = psycopg.generators.execute
        # The connection last read, its loaders and its encoding: made once per
        # connection, not per batch (the ledger never changes client_encoding).
        self._loaders: tuple[Any, Any, str] | None = None

    def run(self, conn: Any, statements: Sequence[str]) -> list[list[Any]]:
        """The rows each statement answered (``[]`` for one that answers none).

        ``conn.wait`` runs the exchange, so the connection's deadline and
        breaker see it as any other.  The first failed statement raises its
        error; the server ran nothing after it, and the transaction is failed
        until ROLLBACK."""
        loaders = self._loaders
        if loaders is None or loaders[0] is not conn:
            loaders = self._loaders = (
                conn,
                self._psycopg.adapt.Transformer(conn),
                conn.info.encoding,
            )
        _, loader, encoding = loaders
        pgconn = conn.pgconn
        pgconn.send_query("; ".join(statements).encode(encoding))
        results = conn.wait(self._execute(pgconn))
        answers: list[list[Any]] = []
        for result in results:
            if result.status == self._fatal:
                raise self._psycopg.errors.error_from_result(result, encoding=encoding)
            if result.nfields:
                loader.set_pgresult(result)
                answers.append(loader.load_rows(0, result.ntuples, tuple))
            else:
                answers.append([])
        return answers

    def prepare(self, conn: Any, wanted: dict[str, str], setting: str) -> None:
        """PREPARE the ``wanted`` statements (by name) that ``conn`` lacks, and run
        ``setting``: one round trip, besides the look-up of those it has.

        A scope then runs them as ``EXECUTE name(literals)``: planned once per
        connection, not once per message.  Prepared statements outlive
        transactions (a ROLLBACK keeps them) and go with the connection; so
        does a ``SET`` made here, outside any transaction."""
        have = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM pg_catalog.pg_prepared_statements WHERE name = ANY(%s)",
                [list(wanted)],
            )
        }
        missing = [f"PREPARE {name} AS {text}" for name, text in wanted.items() if name not in have]
        self.run(conn, [setting, *missing])
