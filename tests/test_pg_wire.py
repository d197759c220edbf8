"""The PostgreSQL ledger's literals and batches against a real server.

Every value the ledger writes into a batch as a literal must come back from
the server exactly as it went in, whatever the text holds (quotes,
backslashes, statement separators, any Unicode): the literal is data, never
SQL, and reads the same whether ``standard_conforming_strings`` is on or off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limitry_local.ledger.pg_sql import dec, enc
from limitry_local.ledger.pg_wire import Batches, Statement, literal
from tests.conftest import POSTGRES_DSN

# Text as the ledger sends it: NUL already escaped (pg_sql.enc), no lone surrogates.
texts = st.text(st.characters(exclude_characters="\x00", codec="utf-8"))
values = st.one_of(
    st.none(),
    st.booleans(),
    texts,
    st.sampled_from(["'", "''", "\\", "\\'", "'; DROP TABLE events; --", "$$", "%s", "E'x'"]),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        yield connection


def _round_trip(conn: psycopg.Connection[Any], batches: Batches, value: Any) -> Any:
    # As the ledger writes a value (Statement) and reads it back (pg_sql.dec).
    cast = "::float8" if type(value) is float else ""
    statement = Statement(f"SELECT %s{cast}")([value])
    (answer,) = batches.run(conn, [statement, "SELECT 1"])[0]
    return dec(answer[0])


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_every_literal_comes_back_as_it_went_in(conn: psycopg.Connection[Any], value: Any) -> None:
    got = _round_trip(conn, Batches(psycopg), value)
    if type(value) is float:
        assert got == value or (value == 0 and got == 0)
    else:
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize("setting", ["on", "off"])
def test_text_reads_the_same_whatever_standard_conforming_strings_says(setting: str) -> None:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as session:
        session.execute(f"SET standard_conforming_strings = {setting}")
        batches = Batches(psycopg)
        for value in ["a\\'b", "\\", "it's", "x\\\\y", "\\'; SELECT 1; --"]:
            assert _round_trip(session, batches, value) == value


def test_a_batch_answers_each_statement_and_stops_at_the_first_error(
    conn: psycopg.Connection[Any],
) -> None:
    batches = Batches(psycopg)
    assert batches.run(conn, ["SELECT 1, 'a'", "SET LOCAL work_mem = '4MB'", "SELECT 2"]) == [
        [(1, "a")],
        [],
        [(2,)],
    ]
    with pytest.raises(psycopg.errors.DivisionByZero):
        batches.run(conn, ["SELECT 1", "SELECT 1 / 0", "SELECT 3"])
    assert batches.run(conn, ["SELECT 4"]) == [[(4,)]]  # the connection is usable after


def test_a_percent_sign_that_is_no_placeholder_stays_as_it_is(
    conn: psycopg.Connection[Any],
) -> None:
    statement = Statement("SELECT 7 % 4, %s, '%%'")(["it's 100%"])
    assert statement == "SELECT 7 % 4, E'it''s 100%', '%%'"
    assert Batches(psycopg).run(conn, [statement]) == [[(3, "it's 100%", "%%")]]


def test_what_cannot_be_a_literal_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")
    with pytest.raises(ValueError, match="cannot be stored"):
        literal(float("nan"))
    with pytest.raises(TypeError, match="bytes"):
        literal(b"raw")


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(values, st.text(st.characters(codec="utf-8"))))
def test_a_stored_value_is_the_literal_of_its_escaped_text(value: Any) -> None:
    # The writes' one-loop form (NUL escaped, then the literal) is the two calls'.
    assert Statement("SELECT %s, %s")([value, value]) == (
        f"SELECT {literal(enc(value))}, {literal(enc(value))}"
    )


def test_a_statement_refuses_the_wrong_number_of_values() -> None:
    with pytest.raises(ValueError, match="2 placeholders, 1 parameters"):
        Statement("SELECT %s, %s")([1])
