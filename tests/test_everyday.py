"""What a new user meets first: a bad model is the library's 400, decisions in logs, reprs.

The module holds the small everyday promises of docs/semantics.md ("Errors",
"Logging decisions") that no other module owns.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pydantic
import pytest

from limitry_local import (
    APIError,
    InvalidRequestError,
    QuotaCreate,
    QuotaExceeded,
    RateLimitCreate,
    RateLimitExceeded,
    Tracker,
    TrackPostRequest,
)
from limitry_local.testing import ManualClock

# --- a request model built with a bad field is the library's 400 ---------------------


def test_building_a_bad_request_model_raises_the_librarys_400() -> None:
    with pytest.raises(APIError) as caught:
        TrackPostRequest(customer_id="", event_type="model_call")
    error = caught.value
    assert isinstance(error, InvalidRequestError)
    assert isinstance(error, ValueError)  # as pydantic's ValidationError is
    assert error.status_code == 400
    assert error.response == {"error": "customerId: String should have at least 1 character"}
    assert error.errors[0]["type"] == "string_too_short"  # pydantic's details, kept


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda: QuotaCreate(name="q", metric="total_events", limit_value=0, period="day"),
            "limitValue",
        ),
        (lambda: RateLimitCreate(name="r", limit_value=1, window="fortnight"), "window"),
        (lambda: TrackPostRequest(customer_id="c", event_type="e", total_tokens=-1), "totalTokens"),
    ],
)
def test_every_request_model_names_the_bad_field(build: object, field: str) -> None:
    assert callable(build)
    with pytest.raises(InvalidRequestError, match=f"^400 Bad Request: {field}: "):
        build()


def test_model_validate_stays_pydantics() -> None:
    # pydantic's own API keeps pydantic's error; usage() of the same dict is the 400.
    with pytest.raises(pydantic.ValidationError):
        TrackPostRequest.model_validate({"customerId": "", "eventType": "e"})
    with Tracker() as tracker, pytest.raises(InvalidRequestError, match="customerId"):
        tracker.usage({"customerId": "", "eventType": "e"})


def test_except_api_error_catches_a_bad_event_built_by_the_caller() -> None:
    """The shape of a request handler: build the event and track it inside one try."""

    def handle(customer: str) -> tuple[int, dict[str, object]]:
        with Tracker() as tracker:
            try:
                tracker.usage(TrackPostRequest(customer_id=customer, event_type="http"))
            except APIError as error:
                return error.status_code, error.response
            return 201, {}

    assert handle("cust_1") == (201, {})
    status, body = handle("")
    assert status == 400
    assert "customerId" in str(body["error"])


# --- decisions in the log --------------------------------------------------------------


def _tracker() -> Tracker:
    tracker = Tracker(clock=ManualClock(datetime(2026, 11, 25, 12, tzinfo=timezone.utc)))
    tracker.rate_limits.create(name="rpm", limit_value=1, window="minute", per=["customer_id"])
    return tracker


def test_decisions_are_logged_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="limitry_local")
    with _tracker() as tracker:
        quota = tracker.quotas.create(
            name="tokens", metric="total_tokens", limit_value=100, period="day"
        )
        rpm = tracker.rate_limits.list().data[0]
        allowed = tracker.usage({"customerId": "cust_1", "eventType": "call", "totalTokens": 5})
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="cust_1", event_type="call")
        with pytest.raises(QuotaExceeded):
            tracker.usage(TrackPostRequest(customer_id="cust_2", event_type="c", total_tokens=99))
        held = tracker.reserve(customer_id="cust_3", event_type="call", estimate=10)
        held.release()
    records = [r for r in caplog.records if r.name == "limitry_local.decisions"]
    assert [(r.levelno, r.__dict__["decision"]) for r in records] == [
        (logging.DEBUG, "allowed"),
        (logging.INFO, "denied"),
        (logging.INFO, "denied"),
        (logging.DEBUG, "reserved"),
    ]
    first, by_rate, by_quota, reserved = (r.__dict__ for r in records)
    assert first["event_id"] == allowed.id
    assert first["customer_id"] == "cust_1"
    assert (first["status_code"], first["rate_limits"], first["quotas"]) == (
        201,
        [rpm.id],
        [quota.id],
    )
    assert (by_rate["limit_kind"], by_rate["exceeded"], by_rate["status_code"]) == (
        "rate_limit",
        [rpm.id],
        429,
    )
    assert by_rate["retry_after"] == 60
    assert by_rate["customer_id"] == "cust_1"
    assert "rate limit 'rpm'" in records[1].getMessage()
    assert (by_quota["limit_kind"], by_quota["exceeded"], by_quota["customer_id"]) == (
        "quota",
        [quota.id],
        "cust_2",
    )
    assert (reserved["reservation_id"], reserved["customer_id"]) == (held.id, "cust_3")


def test_at_info_only_denials_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="limitry_local")
    with _tracker() as tracker:
        tracker.usage(customer_id="a", event_type="call")
        with pytest.raises(RateLimitExceeded):
            tracker.usage(customer_id="a", event_type="call")
    decisions = [r for r in caplog.records if r.name == "limitry_local.decisions"]
    assert [r.__dict__["decision"] for r in decisions] == ["denied"]


def test_the_library_configures_no_handler_so_nothing_prints(tmp_path: Path) -> None:
    """A denial in a fresh process with no logging set up writes nothing anywhere."""
    script = (
        "import logging\n"
        "from limitry_local import Tracker, RateLimitExceeded\n"
        "assert logging.getLogger('limitry_local').handlers == []\n"
        "assert logging.getLogger('limitry_local.decisions').handlers == []\n"
        "t = Tracker()\n"
        "t.rate_limits.create(name='rpm', limit_value=1, window='minute')\n"
        "t.usage(customer_id='c', event_type='e')\n"
        "try:\n"
        "    t.usage(customer_id='c', event_type='e')\n"
        "except RateLimitExceeded:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('not denied')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --- reprs -----------------------------------------------------------------------------


def test_a_trackers_repr_says_where_and_how_many(tmp_path: Path) -> None:
    with Tracker() as memory:
        assert (
            repr(memory) == "<Tracker ledger in memory, buckets in memory, 0 rate limits, 0 quotas>"
        )
    tracker = _tracker()
    tracker.close()
    assert repr(tracker).endswith("1 rate limit, 0 quotas, closed>")
    path = tmp_path / "usage.db"
    with Tracker(path) as on_file:
        on_file.quotas.create(name="a", metric="total_events", limit_value=1, period="day")
        on_file.quotas.create(name="b", metric="total_events", limit_value=1, period="day")
        assert repr(on_file) == (
            f"<Tracker ledger SQLite {str(path)!r}, buckets in memory, 0 rate limits, 2 quotas>"
        )


def test_a_reservations_repr_says_who_what_and_until_when() -> None:
    with _tracker() as tracker:
        held = tracker.reserve(customer_id="cust_1", event_type="call", estimate=500)
        assert repr(held) == (
            f"<Reservation {held.id} open: customer_id='cust_1' event_type='call', holds "
            "total_tokens=500 on 1 rate limit and 0 quotas, expires 2026-11-25T12:10:00Z>"
        )
        held.release()
        assert repr(held).startswith(f"<Reservation {held.id} released: ")
        assert " held total_tokens=500 " in repr(held)
