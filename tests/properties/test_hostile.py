"""Hostile input: whatever a caller sends, the answer is a success, a 400 or a 429.

Hypothesis builds JSON-like payloads for every entry point that takes user
data (``usage()``, ``events.ingest``, ``events.batch``, ``quotas.create`` and
``update``, ``rate_limits.create`` and ``update``, and both checks).  Each
payload starts as a valid request in wire form and then, often, is mutated:
fields set to hostile values (wrong types, negative and huge numbers, NaN and
infinity, booleans where integers go, long text, lone surrogates, SQL-looking
text, deep or huge ``properties``), fields deleted or respelled, unknown keys
added, or the whole body replaced by arbitrary JSON.  So both valid and
invalid payloads are frequent.

The only outcomes allowed:

- a normal return; a recorded event then reads back through ``events.list``
  equal to what was sent, and can be written back in wire form; a created or
  updated limit holds what was sent, and the tracker keeps working with it;
- ``APIError`` with status 400 whose message names a field that was mutated
  (by its wire name; an unknown key as sent), or anything when the whole body
  was replaced; nothing any read can see has changed;
- ``LimitExceeded`` (429) from ``usage()`` only; nothing has changed either.

Any other exception fails the test.

Payloads hold small markers (:class:`Long`, :class:`Deep`, :class:`Many`,
:class:`Repeat`, :class:`Huge`) that are expanded just before the call, so a
falsifying example prints short and reproducible.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Literal

from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from pydantic import TypeAdapter
from pydantic.alias_generators import to_snake

from limitry_local import (
    APIError,
    Event,
    LimitExceeded,
    Quota,
    RateLimit,
    Tracker,
)
from limitry_local.testing import ManualClock
from tests.conftest import START
from tests.pages import walk

HOSTILE = settings(
    max_examples=50,
    deadline=None,
    # The explain phase reruns a failure ~150 times to annotate it: slow and not needed here.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

EVENT_FIELDS = (
    "customerId",
    "eventType",
    "model",
    "provider",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "latencyMs",
    "costCents",
    "properties",
    "idempotencyKey",
    "timestamp",
)
QUOTA_FIELDS = ("name", "dimensionFilters", "metric", "limitValue", "period", "per")
RATE_FIELDS = ("name", "dimensionFilters", "limitValue", "window", "enabled", "per", "metric")
KNOWN_NAMES = frozenset(
    {*EVENT_FIELDS, *QUOTA_FIELDS, *RATE_FIELDS}
    | {to_snake(name) for name in (*EVENT_FIELDS, *QUOTA_FIELDS, *RATE_FIELDS)}
    | {"events", "dimensions"}
)

# --- markers, expanded just before a call -----------------------------------------------


@dataclass(frozen=True)
class Long:
    """``unit * count``: a long string."""

    unit: str
    count: int


@dataclass(frozen=True)
class Huge:
    """``sign * 10**exponent``: an integer too long to print (beyond 4300 digits)."""

    exponent: int
    sign: int = 1


@dataclass(frozen=True)
class Deep:
    """``depth`` nested dicts ``{"x": {"x": ...}}`` or lists ``[[...]]``."""

    depth: int
    kind: Literal["dict", "list"]


@dataclass(frozen=True)
class Many:
    """A dict of ``count`` keys ``k0``, ``k1``... each holding ``value``."""

    count: int
    value: Any


@dataclass(frozen=True)
class Repeat:
    """A list of ``count`` copies of ``item``."""

    item: Any
    count: int


def materialize(value: Any) -> Any:
    """The payload with every marker expanded (fresh objects, nothing shared)."""
    if isinstance(value, Long):
        return value.unit * value.count
    if isinstance(value, Huge):
        return value.sign * 10**value.exponent
    if isinstance(value, Deep):
        nested: Any = {} if value.kind == "dict" else []
        for _ in range(value.depth):
            nested = {"x": nested} if value.kind == "dict" else [nested]
        return nested
    if isinstance(value, Many):
        return {f"k{i}": materialize(value.value) for i in range(value.count)}
    if isinstance(value, Repeat):
        return [materialize(value.item) for _ in range(value.count)]
    if isinstance(value, dict):
        return {materialize(k): materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(item) for item in value]
    return value


# --- hostile JSON-like values ------------------------------------------------------------

SQL_TEXT = (
    "'; DROP TABLE events; --",
    "1' OR '1'='1",
    'x" OR ""="',
    "Robert'); DROP TABLE quotas;--",
    "*/ SELECT * FROM quota_counters; /*",
    "%",
    "_%_",
    "NULL",
)
ODD_TEXT = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\ud800y",
    "\ufeff",
    "\u202e",
    "é",
    "\U0001f600",
    "null",
    "true",
    "0",
    "-1",
    "1e309",
    "NaN",
    "Infinity",
    "[]",
    "{}",
)
MEANINGFUL_TEXT = (
    "minute",
    "second",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "1h",
    "30s",
    "0s",
    "01m",
    "9999999d",
    "10000000d",
    "total_tokens",
    "total_events",
    "total_cost_cents",
    "customer_id",
    "model",
    "gpt-4",
    "cust_1",
    "2026-11-25T10:00:00Z",
    "2026-11-25",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "9998-12-31T23:59:59-01:00",
    "yesterday",
)
EDGE_INTS = (
    0,
    1,
    -1,
    10**9,
    10**9 + 1,
    10**12,
    10**12 + 1,
    5 * 10**11,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**100,
)
EDGE_FLOATS = (
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    5e-324,
    1e-300,
    0.1,
    0.5,
    25.0,
    1e9,
    1e9 + 0.5,
    1e12,
    1e308,
)

any_char = st.characters(exclude_categories=())  # surrogates included
safe_char = st.characters(codec="utf-8")  # what SQLite can store

hostile_text: st.SearchStrategy[Any] = st.one_of(
    st.text(any_char, max_size=12),
    st.sampled_from(SQL_TEXT + ODD_TEXT + MEANINGFUL_TEXT),
    st.builds(
        Long,
        st.sampled_from(["x", "é", "\U0001f600", "\ud800", "'; DROP TABLE events; --"]),
        st.sampled_from([64, 65, 255, 256, 257, 1_000, 16_385, 100_000]),
    ),
)
hostile_int: st.SearchStrategy[Any] = st.one_of(
    st.integers(-5, 5_000),
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.builds(Huge, st.sampled_from([4_299, 4_300, 5_000]), st.sampled_from([1, -1])),
)
hostile_float = st.one_of(st.floats(), st.sampled_from(EDGE_FLOATS))
hostile_key = st.one_of(
    st.text(any_char, max_size=8),
    st.sampled_from(SQL_TEXT + ODD_TEXT + MEANINGFUL_TEXT),
    st.sampled_from(["k" * 64, "k" * 65]),
)
hostile_leaf = st.one_of(st.none(), st.booleans(), hostile_int, hostile_float, hostile_text)
json_like: st.SearchStrategy[Any] = st.recursive(
    hostile_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_key, children, max_size=4)
    ),
    max_leaves=12,
)
deep = st.builds(
    Deep,
    st.one_of(st.integers(1, 600), st.sampled_from([254, 255, 256, 257, 990, 1_000, 5_000])),
    st.sampled_from(["dict", "list"]),
)
many = st.builds(
    Many,
    st.sampled_from([16, 17, 64, 65, 100, 1_000]),
    st.one_of(
        st.sampled_from(["v", 1, None]),
        st.builds(Long, st.just("v"), st.sampled_from([255, 256, 257])),
        st.builds(Repeat, st.just("v" * 100), st.sampled_from([2, 10])),
    ),
)
hostile_properties = st.one_of(
    st.dictionaries(hostile_key, st.one_of(json_like, deep), max_size=5),
    many,
    deep,
)
hostile: st.SearchStrategy[Any] = st.one_of(json_like, json_like, deep, many)
HOSTILE_FOR: dict[str, st.SearchStrategy[Any]] = {
    "properties": st.one_of(hostile, hostile_properties),
    "dimensionFilters": st.one_of(
        hostile, st.dictionaries(hostile_key, st.one_of(hostile_text, json_like), max_size=4)
    ),
    "per": st.one_of(
        hostile, st.lists(hostile_text, max_size=5), st.builds(Repeat, hostile_text, st.just(17))
    ),
}

# --- valid requests (wire form) ----------------------------------------------------------

UTC = timezone.utc
CUSTOMERS = ("cust_1", "cust_2")
IDEMPOTENCY_KEYS = ("k1", "k2", "k3")
DIMENSION_NAMES = ("customer_id", "event_type", "model", "provider", "team")
safe_text = st.one_of(
    st.text(safe_char, min_size=1, max_size=16),
    st.sampled_from((*SQL_TEXT, "\x00", "a\x00b", "é", "\U0001f600")),
    st.builds(Long, st.sampled_from(["x", "\U0001f600"]), st.just(256)),
)
offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)


def _wire_time(moment: datetime, zone: timezone, style: str) -> str:
    if style == "naive":
        return moment.replace(tzinfo=None).isoformat()
    local = moment.astimezone(zone)
    if style == "z" and zone.utcoffset(None) == timedelta(0):
        return local.replace(tzinfo=None).isoformat() + "Z"
    return local.isoformat()


valid_timestamp = st.builds(
    _wire_time,
    st.one_of(
        st.datetimes(datetime(2026, 11, 20), datetime(2026, 11, 30), timezones=st.just(UTC)),
        st.datetimes(
            datetime(1970, 1, 1),
            datetime(9998, 12, 31, 23, 59, 59),
            timezones=st.just(UTC),
        ),
    ),
    st.one_of(st.just(UTC), offsets),
    st.sampled_from(["z", "offset", "naive"]),
) | st.sampled_from(
    [
        # The edges of the documented range (years 1970-9998), as the caller would write them.
        "1970-01-01T00:00:00Z",
        "1970-01-01T01:00:00+01:00",
        "9998-12-31T23:59:59Z",
        "9998-12-31T22:59:59-01:00",
    ]
)
valid_properties = st.dictionaries(
    st.text(safe_char, min_size=1, max_size=12),
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(10**18), 10**18),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(safe_char, max_size=20),
            st.sampled_from(SQL_TEXT),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.text(safe_char, max_size=6), children, max_size=3),
        ),
        max_leaves=6,
    ),
    max_size=4,
) | st.builds(
    # Nested objects inside the documented 16 KiB and 32 levels (properties itself is the
    # first): {"x": {"x": ... {}}}.
    Deep,
    st.sampled_from([2, 10, 31]),
    st.just("dict"),
)
valid_event = st.fixed_dictionaries(
    {
        "customerId": st.one_of(st.sampled_from(CUSTOMERS), safe_text),
        "eventType": st.one_of(
            st.sampled_from(["model_call", "embedding", "tool_call"]), safe_text
        ),
    },
    optional={
        "model": st.one_of(st.sampled_from(["gpt-4", "claude-3-opus"]), safe_text),
        "provider": st.one_of(st.sampled_from(["openai", "anthropic"]), safe_text),
        "inputTokens": st.one_of(st.integers(0, 3_000), st.just(5 * 10**11)),
        "outputTokens": st.one_of(st.integers(0, 3_000), st.just(5 * 10**11)),
        "totalTokens": st.one_of(st.integers(0, 3_000), st.just(10**12)),
        "latencyMs": st.one_of(st.integers(0, 10_000), st.just(10**12)),
        "costCents": st.one_of(
            st.integers(0, 500),
            st.floats(0, 500),
            st.sampled_from([0.5, 25, 10**9, 1e9, -0.0]),
        ),
        "properties": valid_properties,
        "idempotencyKey": st.one_of(st.sampled_from(IDEMPOTENCY_KEYS), safe_text),
        "timestamp": valid_timestamp,
    },
)
dimension_value = st.one_of(st.sampled_from((*CUSTOMERS, "gpt-4", "openai", "eng")), safe_text)
valid_filters = st.dictionaries(
    st.sampled_from(DIMENSION_NAMES),
    st.one_of(dimension_value, st.lists(dimension_value, min_size=1, max_size=3)),
    max_size=3,
)
valid_per = st.lists(st.sampled_from(DIMENSION_NAMES), unique=True, max_size=3)
limit_value = st.one_of(st.integers(1, 10_000), st.sampled_from([1, 10**12]))
windows = st.sampled_from(["second", "minute", "hour", "30s", "5m", "1h", "1d", "9999999d"])
QUOTA_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": safe_text,
    "dimensionFilters": valid_filters,
    "metric": st.sampled_from(["total_tokens", "total_events", "total_cost_cents"]),
    "limitValue": limit_value,
    "period": st.sampled_from(["hour", "day", "week", "month"]),
    "per": valid_per,
}
RATE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": safe_text,
    "dimensionFilters": valid_filters,
    "limitValue": limit_value,
    "window": windows,
    "enabled": st.booleans(),
    "per": valid_per,
    "metric": st.sampled_from(["total_events", "total_tokens"]),
}
valid_quota_create = st.fixed_dictionaries(
    {k: QUOTA_VALUES[k] for k in ("name", "metric", "limitValue", "period")},
    optional={k: QUOTA_VALUES[k] for k in ("dimensionFilters", "per")},
)
valid_rate_create = st.fixed_dictionaries(
    {k: RATE_VALUES[k] for k in ("name", "limitValue", "window")},
    optional={k: RATE_VALUES[k] for k in ("dimensionFilters", "enabled", "per", "metric")},
)
# An update takes any subset; None leaves a field as it is.
valid_quota_update = st.fixed_dictionaries(
    {}, optional={k: st.one_of(v, st.none()) for k, v in QUOTA_VALUES.items()}
)
valid_rate_update = st.fixed_dictionaries(
    {}, optional={k: st.one_of(v, st.none()) for k, v in RATE_VALUES.items()}
)
valid_dimensions = st.dictionaries(st.sampled_from(DIMENSION_NAMES), dimension_value, max_size=4)

# --- cases: a payload and the fields a 400 may blame -------------------------------------


@dataclass(frozen=True)
class Blame:
    """A location a 400 may name: ``loc`` as it appears in the message."""

    loc: str
    field: str
    exact: bool = False
    """An unknown key, named exactly as sent (``loc:``)."""


@dataclass(frozen=True)
class Case:
    payload: Any
    blame: tuple[Blame, ...] = ()
    junk: bool = False
    """The whole body was replaced: any 400 is a fair answer."""


def _blame(prefix: str, wire: str) -> Blame:
    return Blame(prefix + wire, wire)


@st.composite
def mutated(
    draw: st.DrawFn,
    valid: st.SearchStrategy[dict[str, Any]],
    fields: Sequence[str],
    prefix: str = "",
    modes: Sequence[str] = ("valid", "mutate", "mutate", "junk"),
) -> Case:
    """A valid payload, or one with 1-3 hostile mutations, or junk (``modes`` weighs them)."""
    payload = dict(draw(valid))
    mode = draw(st.sampled_from(modes))
    if mode == "valid":
        return Case(payload)
    if mode == "junk":
        return Case(draw(st.one_of(json_like, st.dictionaries(hostile_key, json_like))), junk=True)
    blame: list[Blame] = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "unknown", "respell"]))
        name = draw(st.sampled_from(list(fields)))
        if op == "set":
            key = draw(st.sampled_from([name, to_snake(name)]))
            payload[key] = draw(HOSTILE_FOR.get(name, hostile))
            blame.append(_blame(prefix, name))
            if key != name:  # named by its wire name, or as sent (both spellings given)
                blame.append(Blame(prefix + key, key, exact=True))
        elif op == "delete":
            payload.pop(name, None)
            blame.append(_blame(prefix, name))
        elif op == "respell" and name in payload and to_snake(name) != name:
            payload[to_snake(name)] = payload.pop(name)
            blame.append(Blame(prefix + to_snake(name), to_snake(name), exact=True))
        elif op == "unknown":
            key = draw(hostile_key.filter(lambda k: k not in KNOWN_NAMES))
            payload[key] = draw(json_like)
            blame.append(Blame(prefix + key, key, exact=True))
    return Case(payload, tuple(blame))


@st.composite
def batch_cases(draw: st.DrawFn) -> Case:
    """``{"events": [...]}`` (or the bare list) with per-event and top-level mutations."""
    items = [
        draw(
            mutated(
                valid_event,
                EVENT_FIELDS,
                prefix=f"events[{i}].",
                # One bad item rejects the batch: keep most items valid so batches pass too.
                modes=("valid", "valid", "valid", "valid", "mutate", "junk"),
            )
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    blame = [b for item in items for b in item.blame]
    for i, item in enumerate(items):
        if item.junk:
            blame.append(Blame(f"events[{i}]", f"events[{i}]"))
    events: Any = [item.payload for item in items]
    body: Any = {"events": events}
    op = draw(
        st.sampled_from(["none", "none", "none", "bare", "unknown", "events", "size", "junk"])
    )
    if op == "bare":
        body = events
    elif op == "unknown":
        # The body is checked before its events: the unknown key is what a 400 names.
        key = draw(hostile_key.filter(lambda k: k != "events"))
        body[key] = draw(json_like)
        blame = [Blame(key, key, exact=True)]
    elif op == "events":
        body = draw(
            st.sampled_from([{}, {"events": []}, {"events": None}])
            | st.builds(lambda value: {"events": value}, hostile)
        )
        blame = [Blame("events", "events")]
    elif op == "size":
        size = draw(st.sampled_from([1_001, 1_001, 1_001, 1_000]))  # 1000 passes, slowly
        body = {"events": Repeat(draw(valid_event), size)}
        blame = [Blame("events", "events")]
    elif op == "junk":
        return Case(draw(json_like), junk=True)
    return Case(body, tuple(blame))


@st.composite
def dimension_cases(draw: st.DrawFn) -> Case:
    dims: Any = dict(draw(valid_dimensions))
    blame = (Blame("dimensions", "dimensions"),)
    mode = draw(st.sampled_from(["valid", "mutate", "mutate", "junk"]))
    if mode == "junk":
        dims = draw(json_like)
    elif mode == "mutate":
        for _ in range(draw(st.integers(1, 3))):
            # Python callers can pass keys that JSON could not: numbers, None.
            key = draw(
                st.one_of(st.sampled_from(DIMENSION_NAMES), hostile_key, st.integers(), st.none())
            )
            dims[key] = draw(st.one_of(hostile, dimension_value))
    return Case(dims, blame)


def names_blamed(message: str, case: Case) -> bool:
    """Whether a 400's message names a field the case mutated.

    A known field counts as named when its wire name appears as a word (``inputTokens:
    ...``, ``totalTokens: inputTokens + outputTokens exceeds ...``), inside the batch
    item's ``events[i].`` scope for a batch; an unknown key only as ``key:``, as sent.
    """
    if case.junk:
        return bool(message)
    for b in case.blame:
        scope = b.loc[: len(b.loc) - len(b.field)]
        if b.exact:
            # An empty key cannot be named; "body: Extra inputs ..." is taken as naming it.
            # A key that is not valid text is named escaped ('\ud800'), since the
            # message must be.
            if f"{scope}{b.field or 'body'}:" in message or f"{scope}{b.field!r}:" in message:
                return True
        elif scope in message and re.search(rf"(?<!\w){re.escape(b.field)}(?!\w)", message):
            return True
    return False


# --- the tracker, its snapshot and the oracle --------------------------------------------

PROBES: tuple[dict[str, str], ...] = (
    {},
    {"customer_id": "cust_1"},
    {"customer_id": "cust_2", "event_type": "model_call", "model": "gpt-4"},
)


@contextmanager
def limited_tracker() -> Iterator[Tracker]:
    """A tracker with a tight shared rate limit and two quotas, so 429s happen."""
    with Tracker(clock=ManualClock(START)) as tracker:
        tracker.rate_limits.create(name="burst", limit_value=3, window="minute")
        tracker.quotas.create(
            name="daily tokens",
            metric="total_tokens",
            limit_value=5_000,
            period="day",
            per=["customer_id"],
        )
        tracker.quotas.create(
            name="gpt-4 spend",
            metric="total_cost_cents",
            limit_value=1_000,
            period="month",
            dimension_filters={"model": "gpt-4"},
        )
        yield tracker


@dataclass(frozen=True)
class Snapshot:
    """Everything a read can see: ``state`` is compared, ``events`` (newest first) kept."""

    events: list[Event]
    state: tuple[Any, ...]


def snapshot(tracker: Tracker) -> Snapshot:
    # Events are compared by their stored rows (properties as JSON text): no deep compares.
    events = walk(tracker.events.list, limit=100)
    state = (
        [(e.id, e.created_at, e.customer_id, e.event_type, e.total_tokens) for e in events],
        list(tracker.ledger.scan_events()),
        tracker.ledger.counters(),
        [q.model_dump() for q in tracker.quotas.list(limit=100).data],
        [r.model_dump() for r in tracker.rate_limits.list(limit=100).data],
        [tracker.rate_limits.check(p).model_dump() for p in PROBES],
        [tracker.quotas.check(p).model_dump() for p in PROBES],
        {k: tracker.ledger.idempotent(k) for k in IDEMPOTENCY_KEYS},
    )
    return Snapshot(events, state)


Outcome = Literal["ok", "400", "429"]


def attempt(
    tracker: Tracker, name: str, call: Callable[[], Any], case: Case, *, may_deny: bool = False
) -> tuple[Outcome, Any, Snapshot]:
    """Make the call; a 400 must name a mutated field, and a 400 or 429 changes nothing."""
    before = snapshot(tracker)
    try:
        result = call()
    except LimitExceeded as exc:
        assert may_deny, f"{name} answered 429 but is never denied: {exc}"
        assert exc.status_code == 429
        assert snapshot(tracker).state == before.state, f"{name}: a 429 changed the ledger"
        tally(f"{name}: 429")
        return "429", exc, before
    except APIError as exc:
        assert exc.status_code == 400, f"{name}: expected 400 or 429, got {exc!r}"
        # The 400 body must be sendable: JSON in UTF-8 (no lone surrogates echoed back).
        json.dumps(exc.response, ensure_ascii=False).encode("utf-8")
        note(f"400 message: {exc.message[:500]!r}")
        assert names_blamed(exc.message, case), (
            f"{name}: the 400 does not name a mutated field {[b.loc for b in case.blame]}: "
            f"{exc.message[:500]!r}"
        )
        assert snapshot(tracker).state == before.state, f"{name}: a 400 changed the ledger"
        tally(f"{name}: 400")
        return "400", exc, before
    tally(f"{name}: ok")
    return "ok", result, before


def _sent(sent: Mapping[str, Any], wire: str) -> Any:
    return sent[wire] if wire in sent else sent.get(to_snake(wire))


_DATETIME = TypeAdapter(datetime)


def same_json(a: object, b: object) -> bool:
    """Strict, iterative equality of JSON values (types and the sign of zero count)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, float) and isinstance(y, float):
            if x != y or math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif x != y:
            return False
    return True


def assert_round_trip(event: Event, sent: Mapping[str, Any], now: float) -> None:
    """The recorded event holds what was sent, and writes back in wire form."""
    input_tokens, output_tokens = _sent(sent, "inputTokens"), _sent(sent, "outputTokens")
    total = _sent(sent, "totalTokens")
    if total is None and (input_tokens is not None or output_tokens is not None):
        total = (input_tokens or 0) + (output_tokens or 0)
    stamp = _sent(sent, "timestamp")
    when = datetime.fromtimestamp(now, UTC) if stamp is None else _DATETIME.validate_python(stamp)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    # The ledger keeps float seconds (docs/semantics.md): exact to the microsecond
    # through 2106, rounded to the float's precision after.
    when = datetime.fromtimestamp(when.timestamp(), UTC)
    expected = {
        "customer_id": _sent(sent, "customerId"),
        "event_type": _sent(sent, "eventType"),
        "model": _sent(sent, "model"),
        "provider": _sent(sent, "provider"),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total,
        "latency_ms": _sent(sent, "latencyMs"),
        "cost_cents": _sent(sent, "costCents"),
        "created_at": when,
    }
    got = {name: getattr(event, name) for name in expected}
    assert got == expected, f"event {event.id} read back {got}, sent {expected}"
    properties = _sent(sent, "properties") or {}
    assert same_json(event.properties, properties), f"event {event.id}: properties changed"
    # The wire form of what was accepted must be writable.
    event.model_dump_json(by_alias=True)


class Recorded:
    """What the test knows was recorded: idempotency keys -> event ids."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}


def check_recorded(
    tracker: Tracker,
    ledger: Recorded,
    before: list[Event],
    sent: Sequence[Mapping[str, Any]],
    now: float,
) -> list[str]:
    """The events newly recorded equal the sent ones that were not idempotent repeats."""
    old = {e.id for e in before}
    new = [e for e in reversed(walk(tracker.events.list, limit=100)) if e.id not in old]
    expected: list[Mapping[str, Any]] = []
    keys: set[str] = set()
    for item in sent:
        key = _sent(item, "idempotencyKey")
        if key is not None and (key in ledger.keys or key in keys):
            continue
        if key is not None:
            keys.add(key)
        expected.append(item)
    assert len(new) == len(expected), f"{len(new)} events recorded, expected {len(expected)}"
    for event, item in zip(new, expected, strict=True):
        assert_round_trip(event, item, now)
        key = _sent(item, "idempotencyKey")
        if key is not None:
            ledger.keys[key] = event.id
    return [e.id for e in new]


def calling(method: Callable[..., Any], sent: Any, *, as_kwargs: bool) -> Callable[[], Any]:
    """``method(sent)``, or ``method(**sent)`` (keyword arguments) when asked and possible."""
    if as_kwargs and isinstance(sent, dict) and all(isinstance(k, str) for k in sent):
        return partial(method, **sent)
    return partial(method, sent)


def send_event(
    tracker: Tracker,
    ledger: Recorded,
    *,
    name: str,
    method: Callable[..., Any],
    case: Case,
    as_kwargs: bool,
) -> Outcome:
    sent = materialize(case.payload)
    outcome, result, before = attempt(
        tracker,
        name,
        calling(method, sent, as_kwargs=as_kwargs),
        case,
        may_deny=name == "usage",
    )
    if outcome != "ok":
        return outcome
    assert isinstance(sent, dict)
    key = _sent(sent, "idempotencyKey")
    if key is not None and key in ledger.keys:
        assert result.id == ledger.keys[key], f"{name}: a repeated key answered another id"
        assert snapshot(tracker).state == before.state, f"{name}: a repeated key changed the ledger"
        return outcome
    (event_id,) = check_recorded(tracker, ledger, before.events, [sent], START)
    assert result.id == event_id
    result.model_dump_json(by_alias=True)
    return outcome


# --- the properties ---------------------------------------------------------------------

event_cases = st.lists(mutated(valid_event, EVENT_FIELDS), min_size=1, max_size=5)

# Payloads this test has found breaking the contract, kept as explicit examples so every
# run (any seed, no database) checks them first.
EVENT = {"customerId": "cust_1", "eventType": "model_call"}
# A time with microseconds past 2106 reads back to the float's precision (documented).
FAR_MICROSECOND = Case({**EVENT, "timestamp": "2243-01-01T00:00:00.000001Z"})
# The last microsecond of 9998 rounds up to 9999 as float seconds: a 400, not a poisoned list.
LAST_MICROSECOND = Case(
    {**EVENT, "timestamp": "9998-12-31T23:59:59.999999Z"}, (Blame("timestamp", "timestamp"),)
)
# An unknown key holding a lone surrogate is named, escaped.
SURROGATE_KEY = Case({**EVENT, "\ud800": None}, (Blame("\ud800", "\ud800", exact=True),))
QUOTA = {"name": "q", "metric": "total_tokens", "limitValue": 1, "period": "hour"}


@HOSTILE
@given(cases=event_cases, as_kwargs=st.booleans())
@example(cases=[FAR_MICROSECOND], as_kwargs=False)
@example(cases=[LAST_MICROSECOND], as_kwargs=False)
@example(cases=[SURROGATE_KEY], as_kwargs=False)
def test_usage_answers_success_400_or_429(cases: list[Case], as_kwargs: bool) -> None:
    with limited_tracker() as tracker:
        ledger = Recorded()
        for case in cases:
            send_event(
                tracker, ledger, name="usage", method=tracker.usage, case=case, as_kwargs=as_kwargs
            )


@HOSTILE
@given(cases=event_cases, as_kwargs=st.booleans())
@example(cases=[FAR_MICROSECOND], as_kwargs=True)
@example(cases=[LAST_MICROSECOND], as_kwargs=True)
def test_events_ingest_answers_success_or_400(cases: list[Case], as_kwargs: bool) -> None:
    with limited_tracker() as tracker:
        ledger = Recorded()
        for case in cases:
            send_event(
                tracker,
                ledger,
                name="events.ingest",
                method=tracker.events.ingest,
                case=case,
                as_kwargs=as_kwargs,
            )


@settings(HOSTILE, max_examples=30)
@given(cases=st.lists(batch_cases(), min_size=1, max_size=3))
@example(
    cases=[
        Case(
            {"events": [LAST_MICROSECOND.payload]},
            (Blame("events[0].timestamp", "timestamp"),),
        )
    ]
)
@example(
    cases=[
        Case(
            {"events": [EVENT, SURROGATE_KEY.payload]},
            (Blame("events[1].\ud800", "\ud800", exact=True),),
        )
    ]
)
def test_events_batch_answers_success_or_400(cases: list[Case]) -> None:
    with limited_tracker() as tracker:
        ledger = Recorded()
        for case in cases:
            body = materialize(case.payload)
            outcome, result, before = attempt(
                tracker, "events.batch", partial(tracker.events.batch, body), case
            )
            if outcome == "ok":
                events = body["events"] if isinstance(body, dict) else body
                recorded = check_recorded(tracker, ledger, before.events, events, START)
                assert result.count == len(recorded)


def probe(tracker: Tracker) -> None:
    """The tracker still works with whatever limits it accepted."""
    for event in (
        {"customerId": "cust_1", "eventType": "model_call", "model": "gpt-4", "totalTokens": 10},
        {"customerId": "cust_2", "eventType": "e", "costCents": 0.5, "properties": {"team": "x"}},
    ):
        with suppress(LimitExceeded):
            tracker.usage(event)
        tracker.events.ingest(event)
    for dims in PROBES:
        tracker.quotas.check(dims)
        tracker.rate_limits.check(dims)
    snapshot(tracker)


def assert_holds(limit: Quota | RateLimit, sent: Mapping[str, Any], previous: Any) -> None:
    """Each field sent (None: left as it was) is what the limit now holds."""
    if not isinstance(sent, Mapping):
        sent = {}  # ``update(id, None)``: no body, nothing to change
    dumped = limit.model_dump(by_alias=True, mode="json")
    old = {} if previous is None else previous.model_dump(by_alias=True, mode="json")
    for wire in (*QUOTA_FIELDS, *RATE_FIELDS):
        value = _sent(sent, wire)
        if wire not in dumped and wire not in ("per", "metric"):
            continue
        if value is None:
            if wire in old:
                assert dumped.get(wire) == old[wire], f"{wire} changed without being sent"
            continue
        held = dumped.get(wire, [] if wire == "per" else "total_events")
        assert held == value, f"{wire}: sent {value!r}, the limit holds {held!r}"


def define(
    tracker: Tracker,
    *,
    name: str,
    case: Case,
    as_kwargs: bool,
    method: Callable[..., Quota | RateLimit],
    get: Callable[[str], Quota | RateLimit],
    previous: Quota | RateLimit | None,
) -> None:
    sent = materialize(case.payload)
    outcome, result, _ = attempt(tracker, name, calling(method, sent, as_kwargs=as_kwargs), case)
    if outcome == "ok":
        assert get(result.id) == result
        assert_holds(result, sent, previous)
        probe(tracker)


@HOSTILE
@given(
    cases=st.lists(mutated(valid_quota_create, QUOTA_FIELDS), min_size=1, max_size=3),
    as_kwargs=st.booleans(),
)
@example(
    cases=[Case({**QUOTA, "\ud800": None}, (Blame("\ud800", "\ud800", exact=True),))],
    as_kwargs=False,
)
def test_quotas_create_answers_success_or_400(cases: list[Case], as_kwargs: bool) -> None:
    with limited_tracker() as tracker:
        for case in cases:
            define(
                tracker,
                name="quotas.create",
                case=case,
                as_kwargs=as_kwargs,
                method=tracker.quotas.create,
                get=tracker.quotas.get,
                previous=None,
            )


@HOSTILE
@given(
    cases=st.lists(mutated(valid_rate_create, RATE_FIELDS), min_size=1, max_size=3),
    as_kwargs=st.booleans(),
)
def test_rate_limits_create_answers_success_or_400(cases: list[Case], as_kwargs: bool) -> None:
    with limited_tracker() as tracker:
        for case in cases:
            define(
                tracker,
                name="rate_limits.create",
                case=case,
                as_kwargs=as_kwargs,
                method=tracker.rate_limits.create,
                get=tracker.rate_limits.get,
                previous=None,
            )


@HOSTILE
@given(
    cases=st.lists(mutated(valid_quota_update, QUOTA_FIELDS), min_size=1, max_size=3),
    as_kwargs=st.booleans(),
)
def test_quotas_update_answers_success_or_400(cases: list[Case], as_kwargs: bool) -> None:
    with limited_tracker() as tracker:
        quota_id = tracker.quotas.list().data[0].id
        for case in cases:
            previous = tracker.quotas.get(quota_id)
            define(
                tracker,
                name="quotas.update",
                case=case,
                as_kwargs=as_kwargs,
                method=partial(tracker.quotas.update, quota_id),
                get=tracker.quotas.get,
                previous=previous,
            )


@HOSTILE
@given(
    cases=st.lists(mutated(valid_rate_update, RATE_FIELDS), min_size=1, max_size=3),
    as_kwargs=st.booleans(),
)
def test_rate_limits_update_answers_success_or_400(cases: list[Case], as_kwargs: bool) -> None:
    with limited_tracker() as tracker:
        limit_id = tracker.rate_limits.list().data[0].id
        for case in cases:
            previous = tracker.rate_limits.get(limit_id)
            define(
                tracker,
                name="rate_limits.update",
                case=case,
                as_kwargs=as_kwargs,
                method=partial(tracker.rate_limits.update, limit_id),
                get=tracker.rate_limits.get,
                previous=previous,
            )


@settings(HOSTILE, max_examples=30)
@given(cases=st.lists(dimension_cases(), min_size=1, max_size=4))
def test_checks_answer_success_or_400_and_consume_nothing(cases: list[Case]) -> None:
    with limited_tracker() as tracker:
        tracker.usage(customer_id="cust_1", event_type="model_call", model="gpt-4", total_tokens=7)
        for case in cases:
            dims = materialize(case.payload)
            for name, check in (
                ("quotas.check", tracker.quotas.check),
                ("rate_limits.check", tracker.rate_limits.check),
            ):
                outcome, result, before = attempt(tracker, name, partial(check, dims), case)
                assert snapshot(tracker).state == before.state, f"{name} changed the ledger"
                if outcome == "ok":
                    result.model_dump_json(by_alias=True)
