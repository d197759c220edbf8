"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from limitry_local import Tracker, TrackPostResponse

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


def test_the_testing_guide_shows_tests_that_exist_and_run() -> None:
    """Every test docs/testing.md shows is a real test in examples/, which make test runs."""
    root = Path(__file__).parent.parent
    guide = (root / "docs" / "testing.md").read_text()
    examples = (root / "examples" / "test_llm_gateway.py").read_text()
    shown = re.findall(r"^def (test_\w+)", guide, flags=re.MULTILINE)
    assert len(shown) == 3
    for name in shown:
        assert f"def {name}(" in examples, name
