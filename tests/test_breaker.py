"""The circuit breaker's states, driven by explicit times (no server, no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limitry_local.breaker import CircuitBreaker


def test_it_opens_after_that_many_failures_in_a_row() -> None:
    breaker = CircuitBreaker(3, 10.0)
    for now in (0.0, 1.0):
        assert breaker.admit(now) is None
        breaker.failed(now)
    assert not breaker.is_open
    assert breaker.admit(2.0) is None
    breaker.failed(2.0)
    assert breaker.is_open
    refusal = breaker.admit(5.0)
    assert refusal is not None
    assert (refusal.failures, refusal.retry_in) == (3, 7.0)


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(2, 10.0)
    breaker.failed(0.0)
    breaker.succeeded()
    breaker.failed(1.0)
    assert breaker.admit(1.0) is None


def test_after_the_cool_down_one_probe_goes_and_the_others_still_fail_fast() -> None:
    breaker = CircuitBreaker(1, 10.0)
    breaker.failed(0.0)
    assert breaker.admit(9.9) is not None
    assert breaker.admit(10.0) is None  # the probe
    waiting = breaker.admit(10.0)
    assert waiting is not None and waiting.retry_in == 0.0
    breaker.succeeded()
    assert not breaker.is_open
    assert breaker.admit(10.1) is None


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    breaker = CircuitBreaker(5, 10.0)
    for _ in range(5):
        breaker.failed(0.0)
    assert breaker.admit(10.0) is None
    breaker.failed(10.5)  # one failure of a probe is enough
    refusal = breaker.admit(11.0)
    assert refusal is not None and refusal.retry_in == pytest.approx(9.5)
    assert breaker.admit(20.5) is None


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    breaker = CircuitBreaker(1, 1.0)
    breaker.failed(0.0)
    assert breaker.admit(1.0) is None
    breaker.abandoned()
    assert breaker.admit(1.0) is None


def test_zero_failures_turns_it_off() -> None:
    breaker = CircuitBreaker(0, 10.0)
    for now in range(100):
        assert breaker.admit(float(now)) is None
        breaker.failed(float(now))
    assert not breaker.is_open


@pytest.mark.parametrize(
    ("failures", "cool_down", "field"),
    [
        (-1, 1.0, "breaker_failures"),
        (True, 1.0, "breaker_failures"),
        (1.5, 1.0, "breaker_failures"),
        (1, -1.0, "breaker_cool_down"),
        (1, float("inf"), "breaker_cool_down"),
        (1, "5", "breaker_cool_down"),
    ],
)
def test_bad_settings_name_the_argument(failures: object, cool_down: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CircuitBreaker(failures, cool_down)  # type: ignore[arg-type]


@given(
    failures=st.integers(1, 4),
    cool_down=st.floats(0.5, 20.0),
    outcomes=st.lists(st.tuples(st.floats(0.0, 5.0), st.booleans()), max_size=40),
)
def test_it_answers_as_a_simple_model_of_it(
    failures: int, cool_down: float, outcomes: list[tuple[float, bool]]
) -> None:
    """Calls one after another: the breaker lets a call through exactly when the model does."""
    breaker = CircuitBreaker(failures, cool_down)
    in_a_row = 0
    open_until: float | None = None
    now = 0.0
    for step, reached in outcomes:
        now += step
        expect_through = open_until is None or now >= open_until
        refusal = breaker.admit(now)
        assert (refusal is None) == expect_through
        if refusal is not None:
            assert open_until is not None and refusal.retry_in == pytest.approx(open_until - now)
            continue
        probing = open_until is not None
        if reached:
            breaker.succeeded()
            in_a_row, open_until = 0, None
        else:
            breaker.failed(now)
            in_a_row += 1
            if probing or in_a_row >= failures:
                open_until = now + cool_down
        assert breaker.is_open == (open_until is not None)
