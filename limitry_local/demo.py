"""``python -m limitry_local demo``: a short, realistic run on a ledger file.

Three customers call two models under a per-customer rate limit and a
per-customer daily token quota.  Time is simulated (a manual clock starting
now) so the run is quick and shows refills and denials the same way every
time.  Afterwards the ledger file is reopened and usage is read back from it.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timezone
from datetime import time as dt_time
from pathlib import Path
from typing import TextIO

from limitry_local.errors import LimitExceeded
from limitry_local.models import TrackPostRequest
from limitry_local.testing import ManualClock
from limitry_local.tracker import Tracker

# (seconds to wait first, customer, model, provider, input tokens, output tokens, cost cents)
SCRIPT: list[tuple[float, str, str, str, int, int, float]] = [
    (0, "acme", "gpt-4o", "openai", 1200, 300, 0.75),
    (2, "acme", "gpt-4o", "openai", 900, 250, 0.56),
    (1, "globex", "claude-3-5-sonnet", "anthropic", 2000, 600, 1.50),
    (1, "acme", "gpt-4o", "openai", 400, 100, 0.25),
    (1, "acme", "gpt-4o", "openai", 300, 80, 0.19),
    (1, "acme", "gpt-4o", "openai", 250, 50, 0.15),  # 5th call in the minute: rate limited
    (1, "initech", "gpt-4o-mini", "openai", 800, 200, 0.03),
    (14, "acme", "gpt-4o", "openai", 700, 150, 0.43),  # a token has refilled
    (5, "globex", "claude-3-5-sonnet", "anthropic", 2500, 1000, 2.10),  # over the daily quota
    (1, "globex", "claude-3-5-sonnet", "anthropic", 100, 40, 0.09),  # a small one still fits
    (30, "initech", "gpt-4o-mini", "openai", 600, 150, 0.02),
    (20, "acme", "gpt-4o", "openai", 1500, 400, 0.95),  # over the daily quota
]


RATE_LIMIT = "4 calls per minute"
QUOTA = "daily tokens"
# The days a ManualClock can start on (unix seconds 1970-01-01 to 9998-12-31).
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


class DemoError(Exception):
    """A bad argument to :func:`run`; its message is one line for stderr."""


def run(
    path: Path,
    out: TextIO,
    day: date | None = None,
    *,
    force: bool = False,
    timeout: float = 5.0,
) -> None:
    """Run the scenario on a fresh ledger at ``path``, printing as it goes.

    The simulated clock starts at 09:00 UTC on ``day`` (default: today), so
    the outcomes are the same at any hour of the run.  An existing file at
    ``path`` is deleted first only if it is a ledger this demo left (its
    limits and customers are the demo's), or if ``force`` is true; else
    :class:`DemoError`, and nothing is touched.  ``timeout`` is how long a
    write waits for another process's lock on the file (the CLI's ``--timeout``).
    """
    if day is not None and not FIRST_DAY <= day <= LAST_DAY:
        raise DemoError(
            f"--date {day}: the demo's day must fall between {FIRST_DAY} and {LAST_DAY}"
        )
    if path.is_dir():
        raise DemoError(f"--db {path}: is a directory, not a ledger file")
    if path.exists() and not force and not is_demo_ledger(path, timeout):
        raise DemoError(
            f"--db {path}: the file exists and is not a ledger the demo made; the demo "
            "deletes its file first, so name another file, or pass --force to delete this one"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    day = day or datetime.now(timezone.utc).date()
    manual = ManualClock(datetime.combine(day, dt_time(9), timezone.utc))
    say = out.write

    with Tracker(path, clock=manual, timeout=timeout) as tracker:
        tracker.rate_limits.create(
            name=RATE_LIMIT, limit_value=4, window="minute", per=["customer_id"]
        )
        tracker.quotas.create(
            name=QUOTA,
            metric="total_tokens",
            limit_value=6000,
            period="day",
            per=["customer_id"],
        )
        say(f"limitry_local demo - ledger file: {path} (simulated clock)\n")
        say("limits: '4 calls per minute' per customer, 'daily tokens' 6,000 per customer\n\n")
        say(f"{'time':8}  {'customer':8}  {'model':18} {'tokens':>6}  outcome, then its headers\n")
        say(f"{'-' * 8}  {'-' * 8}  {'-' * 18} {'-' * 6}  {'-' * 50}\n")
        for wait, customer, model, provider, tokens_in, tokens_out, cents in SCRIPT:
            manual.advance(wait)
            stamp = datetime.fromtimestamp(manual(), timezone.utc).strftime("%H:%M:%S")
            event = TrackPostRequest(
                customer_id=customer,
                event_type="model_call",
                model=model,
                provider=provider,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_cents=cents,
            )
            try:
                response = tracker.usage(event)
            except LimitExceeded as denied:
                headers = denied.headers
                outcome = f"429 {denied.body.error}, retry in {_human(denied.retry_after)}"
            else:
                headers = response.headers
                quota = response.quotas[0]
                outcome = (
                    f"201 rate {headers['X-RateLimit-Remaining']}/4 left, "
                    f"tokens today {quota.used:,}/{quota.limit:,}"
                )
            say(f"{stamp:8}  {customer:8}  {model:18} {tokens_in + tokens_out:>6,}  {outcome}\n")
            say(f"{'':47}{'  '.join(f'{k}: {v}' for k, v in headers.items())}\n")
        # Counted in this process's memory (tracker.stats()), so read before it ends.
        say("\ndenials per limit (tracker.stats()):\n")
        for limit in tracker.stats().limits:
            say(f"  {limit.kind:10} {limit.name!r:22} denied {limit.denied}\n")

    # A new Tracker on the same file: everything below is read back from disk.
    with Tracker(path, clock=manual, timeout=timeout) as reopened:
        say(f"\nusage read back from {path}:\n\n")
        say(f"{'customer':10} {'events':>6} {'input':>8} {'output':>8} {'total':>8} {'cents':>8}\n")
        say(f"{'-' * 10} {'-' * 6} {'-' * 8} {'-' * 8} {'-' * 8} {'-' * 8}\n")
        for customer in sorted({row[1] for row in SCRIPT}):
            usage = reopened.customers.get_usage(customer)
            say(
                f"{customer:10} {usage.total_events:>6} {usage.total_input_tokens:>8,} "
                f"{usage.total_output_tokens:>8,} {usage.total_tokens:>8,} "
                f"{usage.total_cost_cents:>8.2f}\n"
            )
        recorded = reopened.ledger.event_count()
        say(f"\n{recorded} events recorded, {len(SCRIPT) - recorded} denied (never recorded).\n")


def is_demo_ledger(path: Path, timeout: float = 5.0) -> bool:
    """Whether ``path`` is a ledger :func:`run` left: its two limits, its customers, no records.

    Read through a read-only connection, so that a file which is not one
    (another SQLite database, an older ledger) is not changed by asking.
    """
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout
        )
    except (sqlite3.Error, OSError, ValueError):
        return False
    # The demo's own limits exactly, no more events than it records, and nothing
    # it never makes: a real ledger that only shares its names is not one (found
    # in review: one with 10,000 "acme" events and an alert was wiped).
    one = "SELECT count(*) FROM {} LIMIT 1"
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        rate_limits = connection.execute(
            "SELECT name, limit_value, window, per FROM rate_limits"
        ).fetchall()
        quotas = connection.execute(
            "SELECT name, metric, limit_value, period, per FROM quotas"
        ).fetchall()
        customers = connection.execute("SELECT DISTINCT customer_id FROM events").fetchall()
        (events,) = connection.execute("SELECT count(*) FROM events").fetchone()
        # Tables of later schemas: a demo ledger of an older release has none.
        extra = sum(
            connection.execute(one.format(table)).fetchone()[0]
            for table in ("records", "holds", "quota_alerts", "alert_log", "idempotency_keys")
            if table in tables
        )
    except sqlite3.Error:  # not a SQLite file, not a ledger, or a ledger of another schema
        return False
    finally:
        connection.close()
    return (
        rate_limits == [(RATE_LIMIT, 4, "minute", '["customer_id"]')]
        and quotas == [(QUOTA, "total_tokens", 6000, "day", '["customer_id"]')]
        and {customer for (customer,) in customers} <= {row[1] for row in SCRIPT}
        and events <= len(SCRIPT)
        and not extra
    )


def _human(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
