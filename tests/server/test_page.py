"""The page at ``/``, loaded in a real headless Chromium after its script ran.

Chromium is Debian's ``chromium`` package: installed here when missing (as
root, with apt-get, as .ci/run does), never fetched from anywhere else.
``LIMITRY_UPDATE_SCREENSHOT=1`` also writes the docs' screenshot,
docs/server-page.png, from the same page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server, running

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "server-page.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") is not None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        found = shutil.which("chromium")
    assert found is not None, "Chromium is missing: apt-get install -y chromium (.ci/run does)"
    return found


def browse(chromium: str, url: str, tmp_path: Path, *output: str) -> str:
    """Chromium, headless and offline-minded, on ``url``; what it printed."""
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            "--window-size=1000,1300",
            # Let the page's script run before the DOM is printed or the shot taken.
            "--virtual-time-budget=5000",
            *output,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def seed(server: Server) -> None:
    """Limits, a day of events for several customers, and a few tracked just now."""
    now = datetime.now(timezone.utc)
    with httpx.Client(base_url=server.url) as client:
        client.post(
            "/rate-limits",
            json={"name": "requests per minute", "limitValue": 120, "window": "minute",
                  "per": ["customer_id"]},
        )  # fmt: skip
        client.post(
            "/quotas",
            json={"name": "daily tokens", "metric": "total_tokens", "limitValue": 20_000,
                  "period": "day", "per": ["customer_id"]},
        )  # fmt: skip
        client.post(
            "/quotas",
            json={"name": "gpt-4o cents", "metric": "total_cost_cents", "limitValue": 500,
                  "period": "month", "dimensionFilters": {"model": "gpt-4o"},
                  "per": ["customer_id"]},
        )  # fmt: skip
        customers = ["acme", "globex", "initech", "umbrella", "hooli", "<b>stark</b>"]
        events = [
            {
                "customerId": customers[(hour * 7 + k) % len(customers)],
                "eventType": "model_call",
                "model": ["gpt-4o", "claude-3-5-sonnet", "gpt-4o-mini"][(hour + k) % 3],
                "inputTokens": 100 + (hour * 37 + k * 91) % 800,
                "outputTokens": 20 + (hour * 13 + k * 29) % 280,
                "costCents": round(0.1 + ((hour * 17 + k * 5) % 29) / 10, 2),
                "timestamp": (now - timedelta(hours=23 - hour, minutes=10 * k)).isoformat(),
            }
            for hour in range(23)
            for k in range(1 + (hour * 5) % 5)
        ]
        assert client.post("/events/batch", json={"events": events}).status_code == 201
        for _ in range(4):
            tracked = client.post(
                "/track",
                json={"customerId": "acme", "eventType": "model_call", "model": "gpt-4o",
                      "inputTokens": 2000, "outputTokens": 400, "costCents": 4},
            )  # fmt: skip
            assert tracked.status_code == 201


def test_the_page_shows_limits_standings_chart_and_events_in_chromium(
    chromium: str, tmp_path: Path
) -> None:
    with running(tmp_path / "page.db", api_key=None) as server:
        seed(server)
        dom = browse(chromium, server.root + "/", tmp_path, "--dump-dom")
        shot = tmp_path / "page.png"
        browse(chromium, server.root + "/", tmp_path, f"--screenshot={shot}")
        if os.environ.get("LIMITRY_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, DOCS_SCREENSHOT)

    assert 'data-ready="1"' in dom  # the script ran to its end
    limits = _section(dom, "limits")
    for name in ("requests per minute", "daily tokens", "gpt-4o cents"):
        assert name in limits
    assert "model = gpt-4o" in limits
    busiest = _section(dom, "busiest")
    # acme tracked 9,600 tokens just now: the busiest, and near its daily quota.
    rows = re.findall(r"<tr><td>(.*?)</td>", busiest)
    assert rows[0] == "acme"
    assert len(rows) == 5
    assert re.search(
        r"daily tokens</b> <span class=\"muted\">quota, day</span> [\d,]+ of 20,000", busiest
    )
    chart = _section(dom, "chart")
    assert len(re.findall(r"<rect ", chart)) == 24
    assert "peak" in chart
    events = _section(dom, "events")
    assert events.count("<tr>") == 21  # the header and the latest 20
    assert re.search(r"<time [^>]*>\d+ s ago</time>", events)  # rendered by the script
    assert "<b>stark</b>" not in dom  # a customer id is text, never markup
    assert "&lt;b&gt;stark&lt;/b&gt;" in dom
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    assert shot.stat().st_size > 20_000


def _section(dom: str, element_id: str) -> str:
    found = re.search(rf'<(table|svg|p)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', dom, re.DOTALL)
    assert found is not None, f"no #{element_id} in the page"
    return found.group(2)
