"""MemoryLedger against the SQLite Ledger: the same writes must give the same reads.

``Tracker()`` with no path runs on :class:`MemoryLedger`, whose docstring
promises that every read answers exactly what :class:`Ledger` answers on the
same writes, and that a write scope which raises leaves nothing behind.  The
SQLite ledger (on ``:memory:``) is the reference here, because its answers
come from SQL the rest of the suite has long pinned down:

1. the operations and reads of the differential state machine, which
   tests/properties/test_ledger_differential.py drives through all three
   ledgers (events with counter increments, definition saves and deletes,
   counter rebuilds, version bumps, holds, alerts, and scopes that raise
   halfway), comparing every read after every step and inside each scope;
2. focused examples pin the rollback, closed-ledger, outside-a-scope and
   copy rules one at a time, on both ledgers where both promise them;
3. one scripted run through ``Tracker()`` and ``Tracker(path)`` compares
   what a user sees, with the random ids renamed in order of appearance.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from limitry_local import LimitExceeded, Tracker
from limitry_local.ledger import (
    AlertRow,
    CounterIncrement,
    EventRow,
    Ledger,
    LedgerBackend,
    LedgerError,
    priced,
)
from limitry_local.memory_ledger import MemoryLedger
from limitry_local.postgres_ledger import PostgresLedger
from limitry_local.testing import ManualClock
from tests.conftest import START

# --- the small world both ledgers are driven through ------------------------------
#
# Small domains, so that random steps collide: equal timestamps, the same
# counter twice in one batch, a delete of a definition that exists.

T0 = START
DAY = 86_400
DAY_START = int(T0) - int(T0) % DAY
TIMESTAMPS = [T0, T0 + 0.5, T0 + 1e-6, T0 - 3600, T0 + DAY, T0 - DAY]
CUSTOMERS = ["acme", "globex", "", None]
EVENT_TYPES = ["chat", "embed", None]
MODELS = ["gpt", "claude", None]
PROVIDERS = ["openai", None]
QUOTA_IDS = ["qta_1", "qta_2", "qta_3"]
RATE_LIMIT_IDS = ["rl_1", "rl_2"]
COUNTER_KEYS = ["[]", '["acme"]', '["globex"]']
PERIOD_STARTS = [DAY_START, DAY_START - DAY]
# Every counter the machine can touch, plus none it cannot: counter() must agree on all.
ALL_COUNTERS = [
    (q, k, s) for q in [*QUOTA_IDS, "qta_none"] for k in COUNTER_KEYS for s in PERIOD_STARTS
]
# totals() takes a real customer id; "nobody" has no events on either ledger.
TOTAL_CUSTOMERS = ["acme", "globex", "", "nobody"]
# Cents the way floats make them awkward: 0.1 has no exact binary form, 2.5e-7
# rounds to 0 micro-cents and 5e-7 to 1, 1e9 is the largest the API accepts.
AWKWARD_CENTS = [0.0, 0.1, 0.3, 2.5e-7, 5e-7, 1.5e-6, 123.456, 1e9]
STAMPS = ["2026-11-25T10:00:00Z", "2026-11-26T08:30:00.250000Z"]


class Abort(Exception):
    """Raised inside a write scope to make it fail after its writes."""


# --- operations, drawn once and applied to both ledgers ---------------------------


@dataclass(frozen=True)
class Record:
    """``record()`` of a batch; ids and idempotency keys are filled in when applied."""

    items: tuple[tuple[EventRow, tuple[CounterIncrement, ...]], ...]


@dataclass(frozen=True)
class Save:
    table: str
    row: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    table: str
    limit_id: str


@dataclass(frozen=True)
class Replace:
    quota_id: str
    totals: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Bump:
    pass


@dataclass(frozen=True)
class Hold:
    """``add_hold()``; the hold id is filled in when applied."""

    increments: tuple[CounterIncrement, ...]
    expires_at: float
    hold_id: str = ""


@dataclass(frozen=True)
class PopHold:
    """``pop_hold()`` of the ``pick``-th hold made so far (it may be gone already)."""

    pick: int
    hold_id: str = ""


@dataclass(frozen=True)
class Expire:
    now: float


@dataclass(frozen=True)
class AddCounters:
    increments: tuple[CounterIncrement, ...]


@dataclass(frozen=True)
class LogAlert:
    """``log_alert()``; the entry id is filled in when applied."""

    row: AlertRow


@dataclass(frozen=True)
class PutRecord:
    kind: str
    record_id: str
    body: str
    expires_at: float | None = None


@dataclass(frozen=True)
class PurgeRecords:
    kind: str
    now: float


@dataclass(frozen=True)
class GetRecord:
    """``get_record()`` inside the scope: it must see the scope's own puts."""

    kind: str
    record_id: str


Op = (
    Record
    | Save
    | Delete
    | Replace
    | Bump
    | Hold
    | PopHold
    | Expire
    | AddCounters
    | LogAlert
    | PutRecord
    | GetRecord
    | PurgeRecords
)
# The 1.0 face's documents: a NUL in an id is escaped on PostgreSQL, and must come back.
RECORD_KINDS = ["limit", "subject"]
RECORD_IDS = ["lim_1", "lim_2", 'user\x00"u1"']

timestamps = st.one_of(st.sampled_from(TIMESTAMPS), st.floats(T0 - 2 * DAY, T0 + 2 * DAY))
bounds = st.one_of(st.none(), timestamps)
tokens = st.one_of(st.none(), st.integers(0, 10**12))
cents = st.one_of(st.none(), st.sampled_from(AWKWARD_CENTS), st.floats(0, 1e9, allow_nan=False))
increments = st.tuples(
    st.sampled_from(QUOTA_IDS),
    st.sampled_from(COUNTER_KEYS),
    st.sampled_from(PERIOD_STARTS),
    st.integers(0, 10**12),
)
# The idempotency key is "" for "give this event a fresh key", None for none.
event_rows = st.builds(
    EventRow,
    id=st.just(""),
    ts=timestamps,
    customer_id=st.sampled_from(CUSTOMERS),
    event_type=st.sampled_from(EVENT_TYPES),
    model=st.sampled_from(MODELS),
    provider=st.sampled_from(PROVIDERS),
    input_tokens=tokens,
    output_tokens=tokens,
    total_tokens=tokens,
    latency_ms=st.one_of(st.none(), st.integers(0, 10**6)),
    cost_cents=cents,
    properties=st.sampled_from(["{}", '{"tier": "pro"}']),
    cached_input_tokens=tokens,
    idempotency_key=st.sampled_from(["", None]),
    # Derived, never drawn: the tracker stores micro_cents(cost_cents) with
    # every event and migrations backfill the same, so no ledger holds another
    # value.  That reports sum the stored column, not a recount, is
    # tests/test_usage_report_ledgers.py's focused test.
).map(priced)
records = st.builds(
    Record,
    st.lists(
        st.tuples(event_rows, st.lists(increments, max_size=4).map(tuple)), min_size=1, max_size=5
    ).map(tuple),
)


def _fresh(value: Any) -> Any:
    # sampled_from hands out the same object every time; each row gets its own.
    return copy.deepcopy(value)


FILTERS = st.sampled_from(
    [{}, {"model": "gpt"}, {"model": ["gpt", "claude"]}, {"customer_id": "acme", "model": "gpt"}]
).map(_fresh)
PER = st.sampled_from([[], ["customer_id"], ["customer_id", "model"]]).map(_fresh)
# The shapes tracker._definition_row gives each table (see Quota and RateLimit).
quota_rows = st.fixed_dictionaries(
    {
        "id": st.sampled_from(QUOTA_IDS),
        "name": st.sampled_from(["tokens", "spend"]),
        "dimension_filters": FILTERS,
        "metric": st.sampled_from(["total_events", "total_tokens", "total_cost_cents"]),
        "limit_value": st.integers(1, 10**12),
        "period": st.sampled_from(["hour", "day", "week", "month"]),
        "per": PER,
        "created_at": st.sampled_from(STAMPS),
        "updated_at": st.sampled_from(STAMPS),
    }
)
rate_limit_rows = st.fixed_dictionaries(
    {
        "id": st.sampled_from(RATE_LIMIT_IDS),
        "name": st.sampled_from(["burst", "steady"]),
        "dimension_filters": FILTERS,
        "limit_value": st.integers(1, 10**12),
        "window": st.sampled_from(["1s", "1m", "1h"]),
        "enabled": st.booleans(),
        "created_at": st.sampled_from(STAMPS),
        "updated_at": st.sampled_from(STAMPS),
        "per": PER,
        "metric": st.sampled_from(["total_events", "total_tokens"]),
    }
)
definition_operations: st.SearchStrategy[Op] = st.one_of(
    quota_rows.map(lambda row: Save("quotas", row)),
    rate_limit_rows.map(lambda row: Save("rate_limits", row)),
    st.sampled_from(QUOTA_IDS).map(lambda limit_id: Delete("quotas", limit_id)),
    st.sampled_from(RATE_LIMIT_IDS).map(lambda limit_id: Delete("rate_limits", limit_id)),
    st.builds(
        Replace,
        st.sampled_from(QUOTA_IDS),
        # One row per (key, period_start): the tracker rebuilds each counter once.
        st.dictionaries(
            st.tuples(st.sampled_from(COUNTER_KEYS), st.sampled_from(PERIOD_STARTS)),
            st.integers(0, 10**12),
            max_size=4,
        ).map(lambda totals: tuple((k, s, used) for (k, s), used in totals.items())),
    ),
    st.just(Bump()),
)
hold_operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(Hold, st.lists(increments, max_size=3).map(tuple), timestamps),
    st.builds(PopHold, st.integers(0, 20)),
    st.builds(Expire, timestamps),
    # Negative amounts too: a hold given back, an estimate settled lower.
    st.builds(
        AddCounters,
        st.lists(
            increments.map(lambda i: (*i[:3], i[3] // 2 - 10**11)),
            max_size=3,
        ).map(tuple),
    ),
)
ALERT_IDS = ["qa_1", "qa_2"]
alert_rows = st.builds(
    AlertRow,
    id=st.just(""),
    alert_id=st.sampled_from(ALERT_IDS),
    quota_id=st.sampled_from(QUOTA_IDS),
    key=st.sampled_from(COUNTER_KEYS),
    period_start=st.sampled_from(PERIOD_STARTS),
    period_end=st.sampled_from(PERIOD_STARTS).map(lambda start: start + DAY),
    threshold=st.integers(1, 100),
    # Whole units: micro-cents of 10^9 cents x 1000 reach 10^18.
    used=st.integers(0, 10**18),
    limit_units=st.integers(1, 10**18),
    # A name may hold NUL, which PostgreSQL text cannot: stored escaped.
    quota_name=st.sampled_from(["tokens", "a\x00b\x01c"]),
    metric=st.sampled_from(["total_events", "total_tokens", "total_cost_cents"]),
    period=st.sampled_from(["hour", "day"]),
    dimensions=st.sampled_from(["{}", '{"customer_id":"acme"}']),
    event_id=st.sampled_from(["evt_a", "evt_b"]),
    triggered_at=timestamps,
)
alert_operations: st.SearchStrategy[Op] = st.one_of(
    alert_rows.map(LogAlert),
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(ALERT_IDS),
            "quota_id": st.sampled_from(QUOTA_IDS),
            "threshold": st.integers(1, 100),
            "created_at": st.sampled_from(STAMPS),
        }
    ).map(lambda row: Save("quota_alerts", row)),
    st.sampled_from(ALERT_IDS).map(lambda alert_id: Delete("quota_alerts", alert_id)),
)
record_operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(
        PutRecord,
        st.sampled_from(RECORD_KINDS),
        st.sampled_from(RECORD_IDS),
        st.sampled_from(["{}", '{"amount":1}', '{"name":"\\u0000 caf\u00e9"}']),
        st.one_of(st.none(), st.sampled_from([T0 - DAY, T0, T0 + DAY])),
    ),
    st.builds(GetRecord, st.sampled_from(RECORD_KINDS), st.sampled_from(RECORD_IDS)),
    st.builds(PurgeRecords, st.sampled_from(RECORD_KINDS), st.sampled_from([T0 - 1, T0, T0 + DAY])),
)
operations: st.SearchStrategy[Op] = st.one_of(
    records, definition_operations, hold_operations, alert_operations, record_operations
)


def _apply(ledger: LedgerBackend, scope: Any, op: Op) -> object:
    """One write; returns what the write returns."""
    if isinstance(op, Hold):
        ledger.add_hold(scope, op.hold_id, list(op.increments), op.expires_at)
    elif isinstance(op, PopHold):
        return ledger.pop_hold(scope, op.hold_id)
    elif isinstance(op, Expire):
        return sorted(ledger.pop_expired_holds(scope, op.now))
    elif isinstance(op, AddCounters):
        ledger.add_to_counters(scope, op.increments)
    elif isinstance(op, Record):
        ledger.record(scope, [(row, list(inc), _response(row)) for row, inc in op.items])
    elif isinstance(op, Save):
        ledger.save_definition(scope, op.table, op.row)
    elif isinstance(op, Delete):
        ledger.delete_definition(scope, op.table, op.limit_id)
    elif isinstance(op, Replace):
        ledger.replace_counters(scope, op.quota_id, op.totals)
    elif isinstance(op, LogAlert):
        return ledger.log_alert(scope, op.row)
    elif isinstance(op, PutRecord):
        ledger.put_record(scope, op.kind, op.record_id, op.body, op.expires_at)
    elif isinstance(op, PurgeRecords):
        return ledger.purge_records(scope, op.kind, op.now)
    elif isinstance(op, GetRecord):
        return ledger.get_record(scope, op.kind, op.record_id)
    else:
        return ledger.bump_definitions(scope)
    return None


def _response(row: EventRow) -> str | None:
    # The tracker stores a response exactly when the event has a key.
    return None if row.idempotency_key is None else json.dumps({"id": row.id})


def _list(
    ledger: LedgerBackend,
    *,
    customer_id: str | None = None,
    event_type: str | None = None,
    model: str | None = None,
    start: float | None = None,
    end: float | None = None,
    before_seq: int | None = None,
    limit: int = 10_000,
) -> list[tuple[int, EventRow]]:
    return ledger.list_events(
        customer_id=customer_id,
        event_type=event_type,
        model=model,
        start=start,
        end=end,
        before_seq=before_seq,
        limit=limit,
    )


def _in_scope_reads(ledger: LedgerBackend) -> dict[str, object]:
    # A scope must see its own writes: the tracker decides on these reads.
    return {
        "counters": ledger.counters(),
        "event_count": ledger.event_count(),
        "version": ledger.definitions_version(),
        "quotas": ledger.definitions("quotas"),
        "rate_limits": ledger.definitions("rate_limits"),
        "alert_log": _alert_log(ledger),
        "held": {c: ledger.held(*c) for c in ALL_COUNTERS},
        "records": _records(ledger),
    }


def _records(ledger: LedgerBackend) -> dict[str, object]:
    """Every document, listed in order and read one by one."""
    return {
        kind: (ledger.records(kind), [ledger.get_record(None, kind, i) for i in RECORD_IDS])
        for kind in RECORD_KINDS
    }


def _alert_log(ledger: LedgerBackend, **query: Any) -> list[tuple[int, AlertRow]]:
    return ledger.alert_log(
        **{"quota_id": None, "alert_id": None, "before_seq": None, "limit": 10_000, **query}
    )


def _alert_state(ledger: LedgerBackend, entry_ids: Sequence[str]) -> dict[str, object]:
    return {
        "alert_log": _alert_log(ledger),
        "alert_log_by_quota": {q: _alert_log(ledger, quota_id=q) for q in QUOTA_IDS},
        "alert_log_by_alert": {a: _alert_log(ledger, alert_id=a) for a in ALERT_IDS},
        "alert_seqs": {i: ledger.alert_log_seq(i) for i in [*entry_ids, "qal_never"]},
        "last_triggered": ledger.last_triggered([*ALERT_IDS, "qa_never"]),
        "quota_alerts": ledger.definitions("quota_alerts"),
        "held": {c: ledger.held(*c) for c in ALL_COUNTERS},
    }


def _state(
    ledger: LedgerBackend, event_ids: Sequence[str] = (), keys: Sequence[str] = ()
) -> dict[str, object]:
    """Every read the Protocol offers, over everything the machine may have written."""
    return {
        "counters": ledger.counters(),
        "counter": {c: ledger.counter(*c) for c in ALL_COUNTERS},
        "event_count": ledger.event_count(),
        "version": ledger.definitions_version(),
        # Lists compare in order: definitions come back in creation order.
        "quotas": ledger.definitions("quotas"),
        "rate_limits": ledger.definitions("rate_limits"),
        "scan": list(ledger.scan_events()),
        "seqs": {i: ledger.event_seq(i) for i in [*event_ids, "evt_never"]},
        "keys": {k: ledger.idempotent(k) for k in [*keys, "never"]},
        "listed": _list(ledger),
        "by_customer": {c: _list(ledger, customer_id=c) for c in TOTAL_CUSTOMERS},
        "totals": {c: ledger.totals(c, None, None) for c in TOTAL_CUSTOMERS},
        "records": _records(ledger),
    }


def _assert_same(sqlite: dict[str, object], memory: dict[str, object]) -> None:
    # Read by read, so a failure names the read that differs.
    assert sqlite.keys() == memory.keys()
    for name, expected in sqlite.items():
        assert memory[name] == expected, f"{name}: sqlite {expected!r} != memory {memory[name]!r}"


# --- 1. the differential state machine: tests/properties/test_ledger_differential.py ---
#
# It drives the operations above through all three ledgers (memory, a SQLite
# file, PostgreSQL) and compares the reads above after every step.


# --- 2. focused examples ------------------------------------------------------------

LedgerFactory = Callable[[], LedgerBackend]
LEDGERS: dict[str, LedgerFactory] = {"memory": MemoryLedger, "sqlite": lambda: Ledger(None)}


@pytest.fixture(params=sorted(LEDGERS))
def ledger(request: pytest.FixtureRequest) -> Iterator[LedgerBackend]:
    """Each focused rule on both ledgers: the SQLite one shows the rule is the contract."""
    opened = LEDGERS[request.param]()
    yield opened
    opened.close()


def _event(event_id: str, customer_id: str | None, ts: float, key: str | None = None) -> EventRow:
    return priced(
        EventRow(
            id=event_id,
            ts=ts,
            customer_id=customer_id,
            event_type="chat",
            model="gpt",
            provider=None,
            input_tokens=3,
            output_tokens=4,
            total_tokens=7,
            latency_ms=None,
            cost_cents=0.1,
            properties="{}",
            idempotency_key=key,
        )
    )


def _quota_row(limit_id: str, *, limit_value: int = 10) -> dict[str, Any]:
    return {
        "id": limit_id,
        "name": limit_id,
        "dimension_filters": {"model": ["gpt", "claude"]},
        "metric": "total_tokens",
        "limit_value": limit_value,
        "period": "day",
        "per": ["customer_id"],
        "created_at": STAMPS[0],
        "updated_at": STAMPS[0],
    }


def _rate_limit_row(limit_id: str) -> dict[str, Any]:
    return {
        "id": limit_id,
        "name": limit_id,
        "dimension_filters": {},
        "limit_value": 5,
        "window": "1m",
        "enabled": True,
        "created_at": STAMPS[0],
        "updated_at": STAMPS[0],
        "per": [],
        "metric": "total_events",
    }


COUNTER = ("qta_1", '["acme"]', DAY_START)
NEW_COUNTER = ("qta_1", '["initech"]', DAY_START)


def _seed(ledger: LedgerBackend) -> None:
    """Two committed events for acme, one keyed, with a counter; and three definitions."""
    with ledger.write() as scope:
        ledger.record(
            scope,
            [
                (_event("evt_1", "acme", T0, key="k1"), [(*COUNTER, 7)], '{"id": "evt_1"}'),
                (_event("evt_2", "acme", T0), [(*COUNTER, 7)], None),
            ],
        )
        ledger.save_definition(scope, "quotas", _quota_row("qta_1"))
        ledger.save_definition(scope, "quotas", _quota_row("qta_2"))
        ledger.save_definition(scope, "rate_limits", _rate_limit_row("rl_1"))
        ledger.bump_definitions(scope)


def test_a_failed_record_leaves_events_counters_keys_and_customer_lists_intact(
    ledger: LedgerBackend,
) -> None:
    _seed(ledger)
    before = _state(ledger, ["evt_1", "evt_2", "evt_3", "evt_4"], ["k1", "k2"])
    with pytest.raises(Abort), ledger.write() as scope:
        ledger.record(
            scope,
            [
                # The same counter twice in one batch, and a counter first made here.
                (_event("evt_3", "acme", T0 + 1, key="k2"), [(*COUNTER, 5), (*COUNTER, 6)], "{}"),
                (_event("evt_4", "initech", T0 + 2), [(*NEW_COUNTER, 9), (*COUNTER, 1)], None),
            ],
        )
        assert ledger.event_count() == 4  # the scope saw its own writes
        raise Abort
    assert _state(ledger, ["evt_1", "evt_2", "evt_3", "evt_4"], ["k1", "k2"]) == before
    # Absent, not 0: a counter the failed scope made must not linger.
    assert NEW_COUNTER not in ledger.counters()
    assert ledger.counters() == {COUNTER: 14}
    assert ledger.idempotent("k1") == ("evt_1", '{"id": "evt_1"}')
    assert ledger.idempotent("k2") is None
    assert ledger.event_seq("evt_3") is None
    assert _list(ledger, customer_id="initech") == []
    # The next event takes a seq above every kept one (PostgreSQL's identity
    # may skip the numbers the rolled-back scope drew; SQLite and memory reuse
    # them), and the per-customer list holds no stale seq of the rolled-back events.
    with ledger.write() as scope:
        ledger.record(scope, [(_event("evt_5", "acme", T0 + 3), [], None)])
    listed = _list(ledger, customer_id="acme")
    assert [row.id for _, row in listed] == ["evt_5", "evt_2", "evt_1"]
    assert [seq for seq, _ in listed][1:] == [2, 1]
    newest = listed[0][0]
    assert newest == (5 if isinstance(ledger, PostgresLedger) else 3)
    assert [seq for seq, _ in _list(ledger, customer_id="acme", before_seq=newest)] == [2, 1]
    assert ledger.totals("acme", None, None).events == 3


def test_a_failed_definition_change_restores_definitions_counters_and_version(
    ledger: LedgerBackend,
) -> None:
    _seed(ledger)
    before = _state(ledger)
    assert before["version"] == 1
    with pytest.raises(Abort), ledger.write() as scope:
        ledger.save_definition(scope, "quotas", _quota_row("qta_1", limit_value=99))
        ledger.save_definition(scope, "quotas", _quota_row("qta_3"))
        ledger.delete_definition(scope, "quotas", "qta_2")  # the last one: order is its own test
        ledger.delete_definition(scope, "rate_limits", "rl_1")
        ledger.replace_counters(scope, "qta_1", [('["acme"]', DAY_START, 1), ("[]", 0, 2)])
        assert ledger.bump_definitions(scope) == 2
        ledger.replace_counters(scope, "qta_1", [])  # a second rebuild in the same scope
        assert ledger.counters() == {}
        ledger.delete_definition(scope, "quotas", "qta_3")  # made in this very scope
        raise Abort
    _assert_same(before, _state(ledger))
    assert ledger.counters() == {COUNTER: 14}
    assert ledger.definitions_version() == 1
    assert [row["limit_value"] for row in ledger.definitions("quotas")] == [10, 10]


def test_a_failed_delete_keeps_the_definition_in_its_place(ledger: LedgerBackend) -> None:
    # definitions() lists in creation order and an update keeps its place; a
    # rolled-back delete must too, as a rolled-back SQL DELETE keeps the seq.
    _seed(ledger)
    with pytest.raises(Abort), ledger.write() as scope:
        ledger.delete_definition(scope, "quotas", "qta_1")
        raise Abort
    assert [row["id"] for row in ledger.definitions("quotas")] == ["qta_1", "qta_2"]
    with pytest.raises(Abort), ledger.write() as scope:
        # Deleted and saved again in one scope: the undo must still restore the place.
        ledger.delete_definition(scope, "quotas", "qta_1")
        ledger.save_definition(scope, "quotas", _quota_row("qta_1", limit_value=5))
        raise Abort
    assert ledger.definitions("quotas") == [_quota_row("qta_1"), _quota_row("qta_2")]


def test_an_update_keeps_its_place_and_a_re_created_definition_goes_last(
    ledger: LedgerBackend,
) -> None:
    _seed(ledger)
    with ledger.write() as scope:
        ledger.save_definition(scope, "quotas", _quota_row("qta_1", limit_value=3))
    assert [(r["id"], r["limit_value"]) for r in ledger.definitions("quotas")] == [
        ("qta_1", 3),
        ("qta_2", 10),
    ]
    with ledger.write() as scope:
        ledger.delete_definition(scope, "quotas", "qta_1")
        ledger.save_definition(scope, "quotas", _quota_row("qta_1"))
    assert [r["id"] for r in ledger.definitions("quotas")] == ["qta_2", "qta_1"]
    # Deleting a quota took its counters with it, committed.
    assert ledger.counters() == {}


READS: dict[str, Callable[[LedgerBackend], object]] = {
    "counters": lambda ledger: ledger.counters(),
    "counter": lambda ledger: ledger.counter(*COUNTER),
    "event_count": lambda ledger: ledger.event_count(),
    "idempotent": lambda ledger: ledger.idempotent("k1"),
    "event_seq": lambda ledger: ledger.event_seq("evt_1"),
    "definitions": lambda ledger: ledger.definitions("quotas"),
    "definitions_version": lambda ledger: ledger.definitions_version(),
    "list_events": _list,
    "totals": lambda ledger: ledger.totals("acme", None, None),
    "scan_events": lambda ledger: list(ledger.scan_events()),
    "alert_log": _alert_log,
    "alert_log_seq": lambda ledger: ledger.alert_log_seq("qal_1"),
    "last_triggered": lambda ledger: ledger.last_triggered(["qa_1"]),
    "held": lambda ledger: ledger.held(*COUNTER),
    "write": lambda ledger: ledger.write().__enter__(),
}


@pytest.mark.parametrize("call", sorted(READS))
def test_a_closed_ledger_refuses_every_read_and_write(call: str) -> None:
    # Answering from a closed ledger would hide a use-after-close in the caller;
    # the SQLite ledger refuses each of these with the same reason.
    ledger = MemoryLedger()
    _seed(ledger)
    ledger.close()
    with pytest.raises(LedgerError) as info:
        READS[call](ledger)
    assert info.value.reason == "cannot_open"


OUTSIDE_WRITES: dict[str, Callable[[LedgerBackend], object]] = {
    "record": lambda ledger: ledger.record(None, [(_event("evt_9", "acme", T0), [], None)]),
    "record_nothing": lambda ledger: ledger.record(None, []),
    "save_new": lambda ledger: ledger.save_definition(None, "quotas", _quota_row("qta_9")),
    "save_existing": lambda ledger: ledger.save_definition(
        None, "quotas", _quota_row("qta_1", limit_value=1)
    ),
    "delete_quota": lambda ledger: ledger.delete_definition(None, "quotas", "qta_1"),
    "delete_rate_limit": lambda ledger: ledger.delete_definition(None, "rate_limits", "rl_1"),
    "delete_missing_rate_limit": lambda ledger: ledger.delete_definition(
        None, "rate_limits", "rl_missing"
    ),
    "replace_counters": lambda ledger: ledger.replace_counters(None, "qta_1", []),
    "bump": lambda ledger: ledger.bump_definitions(None),
    "log_alert": lambda ledger: ledger.log_alert(
        None,
        AlertRow(
            "qal_9",
            "qa_1",
            "qta_1",
            '["acme"]',
            DAY_START,
            DAY_START + DAY,
            50,
            5,
            10,
            "tokens",
            "total_tokens",
            "day",
            '{"customer_id":"acme"}',
            "evt_1",
            T0,
        ),
    ),
}


@pytest.mark.parametrize("call", sorted(OUTSIDE_WRITES))
def test_a_write_outside_a_scope_raises_and_changes_nothing(call: str) -> None:
    # Outside a scope there is no journal to undo from, so a write there could
    # never be rolled back: it must be refused before it changes anything.
    ledger = MemoryLedger()
    _seed(ledger)
    before = _state(ledger, ["evt_1", "evt_9"], ["k1"])
    with pytest.raises(RuntimeError, match=r"inside MemoryLedger\.write\(\)"):
        OUTSIDE_WRITES[call](ledger)
    assert _state(ledger, ["evt_1", "evt_9"], ["k1"]) == before


def test_definitions_are_copies_both_ways(ledger: LedgerBackend) -> None:
    row = _quota_row("qta_1")
    with ledger.write() as scope:
        ledger.save_definition(scope, "quotas", row)
    # The caller's row, changed after saving, must not reach the ledger...
    row["per"].append("model")
    row["dimension_filters"]["model"].append("mistral")
    row["limit_value"] = 1
    # ...nor changes to what definitions() returned.
    returned = ledger.definitions("quotas")[0]
    returned["per"].clear()
    returned["dimension_filters"]["model"].pop()
    returned["name"] = "changed"
    assert ledger.definitions("quotas") == [_quota_row("qta_1")]
    # An update merges into the stored row: the same rule holds for it.
    update = _quota_row("qta_1", limit_value=4)
    with ledger.write() as scope:
        ledger.save_definition(scope, "quotas", update)
    update["per"].append("event_type")
    assert ledger.definitions("quotas") == [_quota_row("qta_1", limit_value=4)]


def test_list_events_with_limit_zero_lists_nothing(ledger: LedgerBackend) -> None:
    # SQL's LIMIT 0 returns no row; the tracker never asks for 0 (it asks
    # limit + 1), but the Protocol allows it and the two must answer alike.
    _seed(ledger)
    assert _list(ledger, limit=0) == []
    assert _list(ledger, customer_id="acme", limit=0) == []


def test_totals_sum_cents_as_whole_micro_cents(ledger: LedgerBackend) -> None:
    # 30 x 0.1 is 3.0000000000000004 in floats; per-event micro-cents sum to
    # exactly 3 cents.  2.5e-7 rounds down to 0 micro-cents, 5e-7 up to 1.
    with ledger.write() as scope:
        rows = [_event(f"evt_{i}", "acme", T0) for i in range(30)]
        rows += [priced(_event("evt_a", "acme", T0)._replace(cost_cents=2.5e-7))]
        rows += [priced(_event("evt_b", "acme", T0)._replace(cost_cents=5e-7))]
        rows += [priced(_event("evt_c", "acme", T0)._replace(cost_cents=None, total_tokens=None))]
        ledger.record(scope, [(row, [], None) for row in rows])
    totals = ledger.totals("acme", None, None)
    assert totals.cost_micro_cents == 3_000_001
    assert totals.events == 33
    assert totals.total_tokens == 32 * 7
    # The window is [start, end): an event exactly at end is out.
    assert ledger.totals("acme", T0 - 1, T0).events == 0
    assert ledger.totals("acme", T0, T0 + 1).events == 33


# --- 3. the tracker on both ledgers -------------------------------------------------

_ID = re.compile(r"\b(evt|qta|rl)_[0-9a-f]{32}\b")


class _Renamer:
    """Replaces random ids with ``evt#0``, ``qta#1``, ... in order of first appearance.

    Two runs match only if their ids correspond one to one, which is
    stronger than dropping the ids.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, value: object) -> Any:
        def rename(match: re.Match[str]) -> str:
            found = match.group(0)
            if found not in self.names:
                self.names[found] = f"{match.group(1)}#{len(self.names)}"
            return self.names[found]

        return json.loads(_ID.sub(rename, json.dumps(value, sort_keys=True, default=str)))


def _tracker_script(tracker: Tracker, clock: ManualClock) -> list[object]:
    """One user's session: what every call answered, in order."""
    out: list[object] = []

    def track(**fields: Any) -> None:
        try:
            response = tracker.usage(**fields)
        except LimitExceeded as exc:
            out.append([type(exc).__name__, exc.body.model_dump(mode="json"), exc.headers])
        else:
            out.append(["ok", response.model_dump(mode="json"), response.headers])

    tokens = tracker.quotas.create(
        name="tokens", metric="total_tokens", limit_value=400, period="day", per=["customer_id"]
    )
    spend = tracker.quotas.create(
        name="spend",
        metric="total_cost_cents",
        limit_value=1,
        period="month",
        per=["customer_id"],
        dimension_filters={"model": ["gpt", "claude"]},
    )
    burst = tracker.rate_limits.create(
        name="burst", metric="total_events", limit_value=3, window="1m", per=["customer_id"]
    )
    out += [q.model_dump(mode="json") for q in (tokens, spend, burst)]
    customers = ["acme", "globex", "initech"]
    for i in range(18):
        track(
            customer_id=customers[i % 3],
            event_type=["chat", "embed"][i % 2],
            model=["gpt", "claude", None][i % 3],
            input_tokens=10 * i,
            output_tokens=5,
            cost_cents=[0.1, 2.5e-7, 0.3, None][i % 4],
            idempotency_key=f"k{i % 5}" if i % 2 else None,
        )
        # Each customer comes back every 6 s: faster than burst refills.
        clock.advance(2)
    # Without enforcement: past timestamps (yesterday, and equal ones), a key
    # repeated inside the batch and a key usage() already used.
    yesterday = datetime.fromtimestamp(clock() - DAY, timezone.utc)
    batch = tracker.events.batch(
        [
            {"customer_id": "acme", "event_type": "chat", "model": "gpt", "total_tokens": 50},
            {
                "customer_id": "globex",
                "event_type": "chat",
                "timestamp": yesterday,
                "cost_cents": 0.25,
                "model": "gpt",
            },
            {"customer_id": "globex", "event_type": "embed", "timestamp": yesterday},
            {"customer_id": "acme", "event_type": "chat", "idempotency_key": "b1"},
            {"customer_id": "acme", "event_type": "chat", "idempotency_key": "b1"},
            {"customer_id": "acme", "event_type": "chat", "idempotency_key": "k1"},
        ]
    )
    out.append(batch.model_dump(mode="json"))
    track(customer_id="acme", event_type="chat", idempotency_key="b1")  # replays the batch's
    clock.advance(120)  # burst refills: the next denial is the quota's
    track(customer_id="initech", event_type="chat", total_tokens=10_000)  # over the day
    clock.advance(DAY)
    track(customer_id="initech", event_type="chat", total_tokens=300, model="gpt")
    # A reshaping update rebuilds counters from scan_events(); then a delete.
    out.append(tracker.quotas.update(tokens.id, per=[]).model_dump(mode="json"))
    track(customer_id="acme", event_type="chat", total_tokens=1)
    tracker.quotas.delete(spend.id)
    track(customer_id="acme", event_type="chat", cost_cents=5, model="gpt")
    for filters in (
        {},
        {"customer_id": "acme"},
        {"event_type": "chat", "model": "gpt"},
        {"start_date": yesterday.date(), "end_date": yesterday.date()},
        {"customer_id": "globex", "start_date": yesterday},
    ):
        cursor: str | None = None
        while True:
            page = tracker.events.list(limit=4, cursor=cursor, **filters)
            out.append(page.model_dump(mode="json"))
            if not page.has_more:
                break
            cursor = page.next_cursor
    for customer in [*customers, "nobody"]:
        out.append(tracker.customers.get_usage(customer).model_dump(mode="json"))
        out.append(
            tracker.customers.get_usage(
                customer, start_date=yesterday.date(), end_date=yesterday + timedelta(hours=1)
            ).model_dump(mode="json")
        )
    out.append(tracker.ledger.event_count())
    # Keyed by JSON text, not sorted: sorting by random quota ids would differ.
    out.append({json.dumps(key): used for key, used in tracker.ledger.counters().items()})
    return out


def test_a_tracker_answers_the_same_in_memory_and_on_a_file(tmp_path: Path) -> None:
    clock = ManualClock(START)
    with Tracker(clock=clock) as in_memory:
        assert isinstance(in_memory.ledger, MemoryLedger)
        rename = _Renamer()
        got = [rename(step) for step in _tracker_script(in_memory, clock)]
    clock = ManualClock(START)
    with Tracker(tmp_path / "x.db", clock=clock) as on_file:
        assert isinstance(on_file.ledger, Ledger)
        rename = _Renamer()
        expected = [rename(step) for step in _tracker_script(on_file, clock)]
    assert len(got) == len(expected)
    for step, (answer, reference) in enumerate(zip(got, expected, strict=True)):
        assert answer == reference, f"step {step}"
    # The session was not trivial: both denials happened and some replays did.
    kinds = [step[0] for step in expected if isinstance(step, list) and step]
    assert {"ok", "QuotaExceeded", "RateLimitExceeded"} <= set(kinds)
