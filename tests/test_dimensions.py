"""Event -> dimensions, filter matching and counter keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limitry_local.dimensions import (
    BUILTIN_DIMENSIONS,
    extract,
    key_function,
    limit_key,
    matches,
    value_matches,
)


def test_builtin_dimensions_are_the_four_named_fields() -> None:
    assert BUILTIN_DIMENSIONS == ("customer_id", "event_type", "model", "provider")


def test_extract_takes_named_fields_and_string_properties() -> None:
    dims = extract("cust_1", "model_call", "gpt-4", "openai", {"team": "eng", "feature": "chat"})
    assert dims == {
        "customer_id": "cust_1",
        "event_type": "model_call",
        "model": "gpt-4",
        "provider": "openai",
        "team": "eng",
        "feature": "chat",
    }


def test_extract_leaves_out_absent_fields() -> None:
    assert extract("cust_1", "embedding", None, None, {}) == {
        "customer_id": "cust_1",
        "event_type": "embedding",
    }


@pytest.mark.parametrize("value", [3, 2.5, True, None, ["a"], {"a": "b"}])
def test_non_string_properties_are_not_dimensions(value: Any) -> None:
    dims = extract("c", "e", None, None, {"tier": value, "team": "eng"})
    assert "tier" not in dims
    assert dims["team"] == "eng"


def test_property_named_like_a_builtin_does_not_override_it() -> None:
    dims = extract(
        "cust_1",
        "model_call",
        "gpt-4",
        "openai",
        {"model": "cheap", "customer_id": "other", "provider": "x", "event_type": "y"},
    )
    assert dims["model"] == "gpt-4"
    assert dims["customer_id"] == "cust_1"
    assert dims["provider"] == "openai"
    assert dims["event_type"] == "model_call"


DIMS = {"customer_id": "cust_1", "model": "gpt-4", "team": "eng"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, True),
        ({"model": "gpt-4"}, True),
        ({"model": "gpt-3.5"}, False),
        ({"model": "GPT-4"}, False),
        ({"provider": "openai"}, False),
        ({"model": ["claude", "gpt-4"]}, True),
        ({"model": ["claude", "gemini"]}, False),
        ({"model": "gpt-4", "team": "eng"}, True),
        ({"model": "gpt-4", "team": "ops"}, False),
        ({"model": ["gpt-4"], "customer_id": ["cust_2", "cust_1"]}, True),
    ],
)
def test_matches(filters: dict[str, str | list[str]], expected: bool) -> None:
    assert matches(filters, DIMS) is expected


def test_empty_filters_match_an_event_with_no_optional_dimensions() -> None:
    assert matches({}, extract("c", "e", None, None, {}))


def test_limit_key_without_per_is_one_shared_key() -> None:
    assert limit_key({}, [], DIMS) == ()
    assert limit_key({}, [], {"customer_id": "other"}) == ()


def test_limit_key_with_per_follows_the_order_of_per() -> None:
    assert limit_key({}, ["customer_id"], DIMS) == ("cust_1",)
    assert limit_key({}, ["team", "customer_id"], DIMS) == ("eng", "cust_1")
    assert limit_key({}, ["customer_id", "team"], DIMS) == ("cust_1", "eng")


def test_limit_key_distinct_values_give_distinct_keys() -> None:
    other = {**DIMS, "customer_id": "cust_2"}
    assert limit_key({}, ["customer_id"], DIMS) != limit_key({}, ["customer_id"], other)


def test_event_lacking_a_per_dimension_does_not_match() -> None:
    assert limit_key({}, ["provider"], DIMS) is None
    assert limit_key({}, ["customer_id", "provider"], DIMS) is None


def test_limit_key_is_none_when_filters_do_not_match() -> None:
    assert limit_key({"model": "claude"}, ["customer_id"], DIMS) is None
    assert limit_key({"model": "gpt-4"}, ["customer_id"], DIMS) == ("cust_1",)


# --- key_function: limit_key compiled once per limit ----------------------------------

_NAMES = st.sampled_from(["customer_id", "model", "team", "tier"])
_VALUES = st.sampled_from(["a", "b", ""])


@given(
    filters=st.dictionaries(_NAMES, _VALUES | st.lists(_VALUES, min_size=1, max_size=3)),
    per=st.lists(_NAMES, unique=True, max_size=3),
    dims=st.dictionaries(_NAMES, _VALUES),
)
def test_key_function_answers_as_limit_key(
    filters: dict[str, str | list[str]], per: list[str], dims: dict[str, str]
) -> None:
    assert key_function(filters, per)(dims) == limit_key(filters, per, dims)


@given(
    field=st.sampled_from(["model", "team"]),
    wanted=st.sampled_from(["gpt-4o", "a", ""]),
    per=st.lists(_NAMES, unique=True, max_size=1),
    dims=st.dictionaries(
        st.sampled_from(["customer_id", "model", "team"]),
        st.sampled_from(["gpt-4o", "gpt-4o-latest", "gpt-4o-2024-08-06", "gpt-4o-mini", "a", ""]),
    ),
)
def test_key_function_of_one_filter_answers_as_limit_key(
    field: str, wanted: str, per: list[str], dims: dict[str, str]
) -> None:
    # One filter on one value: compiled without matches(), snapshots of a model included.
    filters = {field: wanted}
    assert key_function(filters, per)(dims) == limit_key(filters, per, dims)


@pytest.mark.parametrize(
    ("per", "dims", "expected"),
    [
        ([], {}, ()),
        ([], DIMS, ()),
        (["team"], DIMS, ("eng",)),
        (["team"], {"team": ""}, ("",)),
        (["provider"], DIMS, None),
    ],
)
def test_key_function_of_the_usual_shapes(
    per: list[str], dims: dict[str, str], expected: tuple[str, ...] | None
) -> None:
    # No filters and at most one per dimension: the shapes without a loop.
    assert key_function({}, per)(dims) == expected


@given(
    names=st.lists(st.none() | _VALUES, min_size=4, max_size=4),
    properties=st.dictionaries(
        st.sampled_from([*BUILTIN_DIMENSIONS, "team"]), _VALUES | st.integers() | st.none()
    ),
)
def test_extract_is_the_string_properties_then_the_named_fields(
    names: list[str | None], properties: dict[str, Any]
) -> None:
    expected = {key: value for key, value in properties.items() if isinstance(value, str)}
    for name, value in zip(BUILTIN_DIMENSIONS, names, strict=True):
        if value is None:
            expected.pop(name, None)
        else:
            expected[name] = value
    customer_id, event_type, model, provider = names
    dims = extract(customer_id, event_type, model, provider, properties)
    assert dims == expected
    assert list(dims) == list(expected)


# --- model names: a filter on the alias matches its dated snapshots ----------------


@pytest.mark.parametrize(
    ("wanted", "served"),
    [
        ("gpt-4o", "gpt-4o-2024-08-06"),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("gpt-4", "gpt-4-0613"),
        ("claude-3-5-sonnet", "claude-3-5-sonnet-20241022"),
        ("claude-3-5-sonnet", "claude-3-5-sonnet-latest"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ("gpt-4o", "gpt-4o"),
    ],
)
def test_a_model_filter_matches_the_dated_snapshots_of_its_name(wanted: str, served: str) -> None:
    assert matches({"model": wanted}, {"model": served})
    assert matches({"model": ["other", wanted]}, {"model": served})
    assert value_matches("model", wanted, served)


@pytest.mark.parametrize(
    ("wanted", "served"),
    [
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4o", "gpt-4o-mini-2024-07-18"),
        ("gpt-4", "gpt-4o"),
        ("gpt-4", "gpt-4-turbo"),
        ("gpt-4o-2024-08-06", "gpt-4o"),  # a snapshot filter wants that snapshot
        ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20"),
        ("gpt-4o", "gpt-4o-2024"),  # not a date: month 20 does not exist
        ("gpt-4o", "gpt-4o-2024-13-01"),
        ("gpt-4o", "gpt-4o2024-08-06"),  # no dash before the date
        ("claude-3-5-sonnet", "claude-3-5-sonnet-v2"),
    ],
)
def test_a_model_filter_does_not_match_other_models(wanted: str, served: str) -> None:
    assert not matches({"model": wanted}, {"model": served})
    assert not matches({"model": [wanted]}, {"model": served})


def test_only_the_model_dimension_matches_snapshots() -> None:
    dims = {"model": "gpt-4o", "customer_id": "acme-2024-08-06", "feature": "chat-latest"}
    assert not matches({"customer_id": "acme"}, dims)
    assert not matches({"feature": "chat"}, dims)
    assert not value_matches("provider", "openai", "openai-latest")


def test_a_per_model_key_is_the_name_as_served() -> None:
    # Matching widens, keys do not merge: per=["model"] counts each snapshot apart.
    assert limit_key({"model": "gpt-4o"}, ["model"], {"model": "gpt-4o-2024-08-06"}) == (
        "gpt-4o-2024-08-06",
    )


def _is_date(digits: str, month_at: int) -> bool:
    """The reference: month 01-12 and day 01-31 at the given offsets of an all-digit string."""
    if not (digits.isascii() and digits.isdigit()):
        return False
    month, day = int(digits[month_at : month_at + 2]), int(digits[month_at + 2 : month_at + 4])
    return 1 <= month <= 12 and 1 <= day <= 31


def _reference_snapshot_suffix(suffix: str) -> bool:
    if not suffix.startswith("-"):
        return False
    rest = suffix[1:]
    if rest == "latest":
        return True
    if len(rest) == 10 and rest[4] == "-" and rest[7] == "-":
        return _is_date(rest[:4] + rest[5:7] + rest[8:], 4)
    if len(rest) == 8:
        return _is_date(rest, 4)
    if len(rest) == 4:
        return _is_date(rest, 0)
    return False


_name_st = st.text(alphabet="abcdeglopt0123456789.-", min_size=1, max_size=12)
_suffix_st = st.one_of(
    st.dates().map(lambda d: d.strftime("-%Y-%m-%d") if d.year >= 1000 else "-x"),
    st.dates().map(lambda d: d.strftime("-%Y%m%d") if d.year >= 1000 else "-x"),
    st.dates().map(lambda d: d.strftime("-%m%d")),
    st.just("-latest"),
    st.text(alphabet="-0123456789latesmini", min_size=1, max_size=11),
)


@given(_name_st, _suffix_st)
def test_model_matching_is_equality_or_a_dated_suffix(wanted: str, suffix: str) -> None:
    served = wanted + suffix
    assert value_matches("model", wanted, served) == _reference_snapshot_suffix(suffix)
    assert matches({"model": wanted}, {"model": served}) == _reference_snapshot_suffix(suffix)
    assert value_matches("model", wanted, wanted)
    # Never the other way round: a snapshot filter does not match a shorter name.
    assert not value_matches("model", served, wanted)


def test_limits_of_one_shape_share_their_key_function() -> None:
    # usage() takes the key of the limit before when the function is the
    # same object: equal shapes must give it, different ones must not.
    filters: dict[str, str | list[str]] = {"model": "gpt-4o", "event_type": ["a", "b"]}
    first = key_function(filters, ["customer_id"])
    assert key_function({"event_type": ["a", "b"], "model": "gpt-4o"}, ["customer_id"]) is first
    assert key_function(filters, ["model"]) is not first
    assert key_function({"model": "gpt-4o"}, ["customer_id"]) is not first
    dims = {"customer_id": "c", "model": "gpt-4o", "event_type": "b"}
    assert first(dims) == ("c",)
    # The function keeps its own filters: a caller's dict changed later changes no key.
    filters["model"] = "other"
    assert first(dims) == ("c",)
    assert key_function(filters, ["customer_id"])(dims) is None
