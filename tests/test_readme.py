"""The README's quick start runs as written."""

from __future__ import annotations

import re
import textwrap
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest

from limitry_local import (
    Tracker,
    TrackPostResponse,
    UsageBreakdownResponse,
    UsageTimeseriesResponse,
)
from limitry_local.limitry import Limitry
from limitry_local.testing import ManualClock

README = Path(__file__).parents[1] / "README.md"


def test_quick_start_runs_and_admits_the_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = README.read_text()
    start = text.index("```python") + len("```python")
    code = text[start : text.index("```", start)]
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), scope)
    response, tracker = scope["r"], scope["tracker"]
    assert isinstance(response, TrackPostResponse)
    assert isinstance(tracker, Tracker)
    assert response.headers["X-RateLimit-Remaining"] == "59"
    tracker.close()
    with Tracker(tmp_path / "usage.db") as reopened:
        assert reopened.customers.get_usage("cust_1").total_tokens == 150


def test_quick_start_runs_twice_on_one_file_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _quick_start()
    monkeypatch.chdir(tmp_path)
    seen = []
    for _ in range(2):
        scope: dict[str, object] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a DuplicateNameWarning would fail the run
            exec(compile(code, str(README), "exec"), scope)
        tracker = scope["tracker"]
        assert isinstance(tracker, Tracker)
        limits = tracker.rate_limits.list().data
        quotas = tracker.quotas.list().data
        response = scope["r"]
        assert isinstance(response, TrackPostResponse)
        seen.append(
            (
                [(limit.id, limit.name) for limit in limits],
                [(quota.id, quota.name) for quota in quotas],
                response.allowed,
                response.headers["X-RateLimit-Remaining"],
            )
        )
        tracker.close()
    assert seen[0] == seen[1]
    assert [name for _, name in seen[0][0]] == ["rpm"]
    assert [name for _, name in seen[0][1]] == ["daily tokens"]
    with Tracker(tmp_path / "usage.db") as reopened:
        assert reopened.customers.get_usage("cust_1").total_tokens == 300


def test_the_limitry_1_0_example_runs_twice_on_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: it created its limit, so a second run was a 409 name_taken."""
    text = README.read_text()
    start = text.index("```python", text.index("### Limitry 1.0, offline")) + len("```python")
    code = text[start : text.index("```", start)].rstrip()
    *body, last = code.splitlines()
    code = "\n".join([*body, f"allowed = {last}"])
    monkeypatch.chdir(tmp_path)
    for run in range(2):
        scope: dict[str, object] = {}
        exec(compile(code, str(README), "exec"), scope)
        assert scope["allowed"] is True, run
    with Limitry("usage.db") as limitry:
        limits = limitry.limits.list()["items"]
        assert [limit["amount"] for limit in limits] == [200]
        standing = limitry.usage.standing(subject="user:usr_1")
        assert [row["used"] for row in standing["limits"]] == [10]  # 5 per run


def _quick_start() -> str:
    text = README.read_text()
    start = text.index("```python") + len("```python")
    return text[start : text.index("```", start)]


def test_the_usage_report_example_runs_on_the_quick_starts_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README.read_text()
    blocks = re.findall(r"^ *```python\n(.*?)^ *```", text, flags=re.MULTILINE | re.DOTALL)
    quick_start, report = blocks[0], textwrap.dedent(blocks[1])
    assert "usage_report.breakdown" in report
    monkeypatch.chdir(tmp_path)
    # The quick start's event is stamped now: on a clock in 2026-11, after the example's start.
    with Tracker(clock=ManualClock(datetime(2026, 11, 25, 12, tzinfo=timezone.utc))) as tracker:
        scope: dict[str, object] = {"given": tracker}
        setup = quick_start.replace('Tracker("usage.db")', "given")
        assert setup != quick_start
        exec(compile(setup, str(README), "exec"), scope)
        capsys.readouterr()
        exec(compile(report, str(README), "exec"), scope)
    by_model, daily = scope["by_model"], scope["daily"]
    assert isinstance(by_model, UsageBreakdownResponse)
    assert [(g.value, g.total_tokens) for g in by_model.data] == [("gpt-4o", 150)]
    assert capsys.readouterr().out == "gpt-4o 1 150 0\n"
    assert isinstance(daily, UsageTimeseriesResponse)
    assert [(p.period_start.isoformat(), p.total_events) for p in daily.data] == [
        ("2026-11-25T00:00:00+00:00", 1)
    ]


def test_the_testing_guide_shows_tests_that_exist_and_run() -> None:
    """Every test docs/testing.md shows is a real test in examples/, which make test runs."""
    root = Path(__file__).parent.parent
    guide = (root / "docs" / "testing.md").read_text()
    examples = (root / "examples" / "test_llm_gateway.py").read_text()
    shown = re.findall(r"^def (test_\w+)", guide, flags=re.MULTILINE)
    assert len(shown) == 3
    for name in shown:
        assert f"def {name}(" in examples, name
