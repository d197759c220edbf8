"""The ``limitry-local`` command, run as a user runs it: the installed console script.

Ledgers are set up and inspected in process through the public Tracker (fast,
and independent of the command); every command under test is a real
subprocess, judged by its stdout, stderr and exit code.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic.alias_generators import to_camel

from limitry_local import Tracker, __version__
from limitry_local.cli.config import read_document
from limitry_local.cli.transfer import EventFilters
from limitry_local.cli.usage import _walk, aggregate
from limitry_local.testing import ManualClock

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "cli.md"
_FOUND = shutil.which("limitry-local", path=str(Path(sys.executable).parent))
assert _FOUND is not None, "limitry-local is not installed beside this Python: make test"
COMMAND: str = _FOUND

# Wednesday 2026-11-25 10:00 UTC, as in conftest.
NOV_25 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def run(
    *args: str | Path,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The command with ``args``, in a clean environment (no db variable, no forced colour)."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in {"LIMITRY_LOCAL_DB", "COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"}
    }
    return subprocess.run(
        [COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def ok(*args: str | Path, **kwargs: object) -> str:
    done = run(*args, **kwargs)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout


def example(language: str) -> str:
    """The full config example of docs/cli.md in ``language`` (toml or yaml)."""
    text = GUIDE.read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, f"docs/cli.md should hold one {language} example"
    return str(blocks[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text(example("toml"))
    return path


def seed_events(db: Path) -> None:
    """Five events over two days, two customers, two models (one event without a model)."""
    with Tracker(db, clock=ManualClock(NOV_25)) as tracker:
        for day, customer, model, tokens_in, tokens_out, cents in [
            (25, "acme", "gpt-4o", 100, 20, 0.1),
            (25, "acme", "gpt-4o", 200, 40, 0.2),
            (25, "globex", "claude-3-5-sonnet", 50, 10, 1.5),
            (26, "acme", "gpt-4o", 300, 60, 0.3),
            (26, "acme", None, 7, 0, None),
        ]:
            tracker.events.ingest(
                customer_id=customer,
                event_type="model_call",
                model=model,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_cents=cents,
                properties={"team": "search", "attempt": 1},
                timestamp=NOV_25.replace(day=day),
            )


def _read_terminal(controller: int) -> bytes:
    """Everything written to a pty until its other end closes."""
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal's other end closed: the process is done
            break
        if not chunk:
            break
        drawn += chunk
    return drawn


# --- wiring -------------------------------------------------------------------------


def test_the_console_script_runs_the_command() -> None:
    assert ok("--version") == f"limitry-local {__version__}\n"


def test_without_the_cli_extra_it_names_the_pip_command(tmp_path: Path, db: Path) -> None:
    # A package shadowing rich that fails as an absent one does.
    (tmp_path / "rich").mkdir()
    (tmp_path / "rich" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'rich'\", name='rich')\n"
    )
    done = run("--db", db, "limits", "list", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 4
    assert "pip install 'limitry_local[cli]'" in done.stderr
    assert "Traceback" not in done.stderr


# --- limits apply -------------------------------------------------------------------


def test_apply_creates_the_limits_then_applying_again_changes_nothing(
    db: Path, toml_file: Path
) -> None:
    first = ok("--db", db, "limits", "apply", toml_file)
    assert first.count(": created") == 5
    assert "+ rate limit 'requests per minute': created" in first
    assert first.endswith("5 created, 0 updated, 0 deleted, 0 unchanged, 0 left as they are\n")
    with Tracker(db) as tracker:
        before = {q.name: q for q in tracker.quotas.list().data}
        limits = {r.name: r for r in tracker.rate_limits.list().data}
    spend = before["monthly spend on premium models"]
    assert spend.dimension_filters == {"model": ["gpt-4o", "claude-3-5-sonnet"]}
    assert (spend.metric, spend.period, spend.per) == ("total_cost_cents", "month", ["customer_id"])
    assert spend.timezone == "America/New_York"
    assert before["daily tokens"].timezone == "UTC"
    assert limits["gpt-4o tokens per minute"].metric == "total_tokens"
    assert limits["burst"].enabled is False and limits["burst"].window == "10s"

    second = ok("--db", db, "limits", "apply", toml_file)
    assert second.count(": unchanged") == 5
    assert "0 created, 0 updated, 0 deleted, 5 unchanged" in second
    with Tracker(db) as tracker:
        after = {q.name: q for q in tracker.quotas.list().data}
    # Not even touched: same ids, same updatedAt.
    assert after == before

    # A changed zone is a change: the quota is updated in place.
    toml_file.write_text(toml_file.read_text().replace("America/New_York", "Europe/Berlin"))
    third = ok("--db", db, "limits", "apply", toml_file)
    assert "1 updated" in third
    with Tracker(db) as tracker:
        moved = {q.name: q for q in tracker.quotas.list().data}["monthly spend on premium models"]
    assert (moved.id, moved.timezone) == (spend.id, "Europe/Berlin")


def test_a_changed_fail_mode_is_applied_in_place(db: Path, toml_file: Path) -> None:
    ok("--db", db, "limits", "apply", toml_file)
    with Tracker(db) as tracker:
        burst = {r.name: r for r in tracker.rate_limits.list().data}["burst"]
    assert burst.fail_mode == "closed"
    text = toml_file.read_text()
    toml_file.write_text(text.replace("enabled = false\n", 'enabled = false\nfail_mode = "open"\n'))
    applied = ok("--db", db, "limits", "apply", toml_file)
    assert "1 updated" in applied
    with Tracker(db) as tracker:
        after = {r.name: r for r in tracker.rate_limits.list().data}["burst"]
    assert (after.id, after.fail_mode) == (burst.id, "open")


def test_the_yaml_and_json_forms_declare_the_same_limits_as_the_toml(
    db: Path, toml_file: Path, tmp_path: Path
) -> None:
    ok("--db", db, "limits", "apply", toml_file)
    yaml_file = tmp_path / "limits.yml"
    yaml_file.write_text(example("yaml"))
    # JSON in camelCase throughout, as the hosted API writes a RateLimitCreate.
    declared = read_document(toml_file)
    assert isinstance(declared, dict)
    camel = {
        to_camel(section): [
            {to_camel(key): value for key, value in limit.items()} for limit in items
        ]
        for section, items in declared.items()
    }
    json_file = tmp_path / "limits.json"
    json_file.write_text(json.dumps(camel))
    for config in (yaml_file, json_file):
        plan = json.loads(ok("--db", db, "limits", "apply", config, "--dry-run", "--json"))
        assert plan["dryRun"] is True
        assert [change["action"] for change in plan["changes"]] == ["unchanged"] * 5


def test_dry_run_prints_the_diff_and_changes_nothing(db: Path, tmp_path: Path) -> None:
    with Tracker(db) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=60, window="minute", per=["customer_id"])
        tracker.quotas.create(name="legacy", metric="total_events", limit_value=5, period="hour")
        stored = tracker.rate_limits.list().data
    config = tmp_path / "limits.toml"
    config.write_text(
        '[[rate_limits]]\nname = "rpm"\nlimit_value = 120\nwindow = "minute"\n\n'
        '[[quotas]]\nname = "daily"\nmetric = "total_tokens"\nlimit_value = 1000\nperiod = "day"\n'
    )
    out = ok("--db", db, "limits", "apply", config, "--dry-run")
    # Left out of the file, per takes its default: the file is the whole desired state.
    assert (
        "~ rate limit 'rpm': would be updated  limitValue: 60 -> 120  per: [\"customer_id\"] -> []"
        in out
    )
    assert "+ quota 'daily': would be created  name=\"daily\"  dimensionFilters={}" in out
    assert "  quota 'legacy': not in the file, left as it is (--prune would delete it)" in out
    assert out.rstrip().endswith("dry run, nothing was changed")

    pruning = json.loads(
        ok("--db", db, "limits", "apply", config, "--dry-run", "--prune", "--json")
    )
    actions = {(c["kind"], c["name"]): c for c in pruning["changes"]}
    assert actions["quota", "legacy"]["action"] == "delete"
    assert actions["rate_limit", "rpm"]["diff"] == {
        "limitValue": {"from": 60, "to": 120},
        "per": {"from": ["customer_id"], "to": []},
    }
    with Tracker(db) as tracker:
        assert tracker.rate_limits.list().data == stored
        assert [q.name for q in tracker.quotas.list().data] == ["legacy"]


def test_only_prune_deletes_the_limits_the_file_leaves_out(db: Path, tmp_path: Path) -> None:
    with Tracker(db) as tracker:
        tracker.quotas.create(name="legacy", metric="total_events", limit_value=5, period="hour")
    config = tmp_path / "limits.yaml"
    config.write_text(
        "quotas:\n  - {name: daily, metric: total_events, limit_value: 9, period: day}\n"
    )
    kept = ok("--db", db, "limits", "apply", config)
    assert "1 created, 0 updated, 0 deleted, 0 unchanged, 1 left as they are" in kept
    pruned = ok("--db", db, "limits", "apply", config, "--prune")
    assert "- quota 'legacy': deleted (not in the file; --prune)" in pruned
    with Tracker(db) as tracker:
        assert [q.name for q in tracker.quotas.list().data] == ["daily"]


def test_a_dry_run_on_a_missing_ledger_creates_no_file(db: Path, toml_file: Path) -> None:
    out = ok("--db", db, "limits", "apply", toml_file, "--dry-run")
    assert out.count(": would be created") == 5
    assert not db.exists()


# --- limits list ------------------------------------------------------------------


def test_limits_list_as_tables_and_as_wire_json(db: Path) -> None:
    with Tracker(db) as tracker:
        rpm = tracker.rate_limits.create(name="[bold]rpm", limit_value=60, window="minute")
        tracker.quotas.create(
            name="daily", metric="total_tokens", limit_value=100_000, period="day", per=["model"]
        )
    table = ok("--db", db, "limits", "list")
    # Names print as written (not read as rich markup), ids are never cut.
    assert "[bold]rpm" in table
    assert rpm.id in table
    assert "100,000" in table
    listed = json.loads(ok("limits", "list", "--json", "--db", db))
    assert listed["rateLimits"][0]["limitValue"] == 60
    assert listed["rateLimits"][0]["id"] == rpm.id
    assert listed["quotas"][0]["per"] == ["model"]


def test_limits_list_json_applies_to_another_ledger_unchanged(
    db: Path, tmp_path: Path, toml_file: Path
) -> None:
    # Moving limits between ledgers: list --json, then apply; the ledger's own
    # fields (id, projectId, createdAt, updatedAt) are ignored, the rest declared.
    ok("--db", db, "limits", "apply", toml_file)
    listed = tmp_path / "limits.json"
    listed.write_text(ok("--db", db, "limits", "list", "--json"))
    other = tmp_path / "other.db"
    applied = json.loads(ok("--db", other, "limits", "apply", listed, "--json"))
    assert {change["action"] for change in applied["changes"]} == {"create"}
    assert len(applied["changes"]) == 5
    moved = json.loads(ok("--db", other, "limits", "list", "--json"))
    ledger_fields = {"id", "projectId", "createdAt", "updatedAt"}

    def declared(limits: dict[str, list[dict[str, object]]]) -> dict[str, object]:
        return {
            kind: [{k: v for k, v in limit.items() if k not in ledger_fields} for limit in items]
            for kind, items in limits.items()
        }

    assert declared(moved) == declared(json.loads(listed.read_text()))
    # Applied back to the ledger it came from, it changes nothing (ids kept).
    again = json.loads(ok("--db", db, "limits", "apply", listed, "--json"))
    assert {change["action"] for change in again["changes"]} == {"unchanged"}
    # Other unknown fields are still refused.
    listed.write_text(listed.read_text().replace('"projectId"', '"project"', 1))
    refused = run("--db", other, "limits", "apply", listed)
    assert refused.returncode == 2
    assert "project: Extra inputs are not permitted" in refused.stderr


# --- usage ------------------------------------------------------------------------


def test_usage_per_day_customer_and_model(db: Path) -> None:
    seed_events(db)
    usage = json.loads(ok("--db", db, "usage", "--json"))
    rows = {(r["periodStart"], r["customerId"], r["model"]): r for r in usage["rows"]}
    assert list(rows) == [
        ("2026-11-25T00:00:00Z", "acme", "gpt-4o"),
        ("2026-11-25T00:00:00Z", "globex", "claude-3-5-sonnet"),
        ("2026-11-26T00:00:00Z", "acme", None),
        ("2026-11-26T00:00:00Z", "acme", "gpt-4o"),
    ]
    acme = rows["2026-11-25T00:00:00Z", "acme", "gpt-4o"]
    assert (acme["totalEvents"], acme["totalTokens"]) == (2, 360)
    # Summed as micro-cents: 0.1 + 0.2 is 0.3, not 0.30000000000000004.
    assert acme["totalCostCents"] == 0.3
    assert usage["total"] == {
        "totalEvents": 5,
        "totalInputTokens": 657,
        "totalOutputTokens": 130,
        "totalTokens": 787,
        "totalCostCents": 2.1,
    }

    table = ok("--db", db, "usage", "--period", "month", "--customer", "acme")
    assert "usage per month (UTC)" in table
    assert re.search(r"2026-11 +│ acme +│ gpt-4o +│ +3 │ +600 │ +120 │ +720 │ +0.6 │", table)
    assert "globex" not in table
    assert re.search(r"total .*│ +4 │ +607 │ +120 │ +727 │", table)


def test_usage_counts_half_a_micro_cent_as_the_ledger_reports_it(db: Path) -> None:
    # 2.5e-6 cents is 2.5 micro-cents: 3 by the one rule (half away from zero),
    # 2 by Python's round() (half to even), which the summary once used.
    with Tracker(db, clock=ManualClock(NOV_25)) as tracker:
        tracker.events.ingest(customer_id="acme", event_type="model_call", cost_cents=2.5e-6)
        (group,) = tracker.usage_report.breakdown("customer_id").data
        assert group.total_cost_cents == 3e-6
        for grouping in ("day", "all"):
            queried = aggregate(tracker, grouping, EventFilters(), query_cost=0)
            assert [row.cost_micro_cents for row in queried] == [3]
        assert [row.cost_micro_cents for row in _walk(tracker, "day", EventFilters())] == [3]
    usage = json.loads(ok("--db", db, "usage", "--json"))
    assert [row["totalCostCents"] for row in usage["rows"]] == [3e-6]
    assert usage["total"]["totalCostCents"] == 3e-6


def test_usage_with_no_matching_events_says_so(db: Path) -> None:
    seed_events(db)
    assert ok("--db", db, "usage", "--start", "2027-01-01") == "no events match\n"


def test_usage_reads_dates_as_the_library_does(db: Path) -> None:
    # Found in review: --end kept its own rule (ten characters: a date), so it
    # refused a week date the library takes; a basic date is a whole day in both.
    seed_events(db)
    extended = ok("--db", db, "usage", "--json", "--end", "2026-11-25")
    assert ok("--db", db, "usage", "--json", "--end", "20261125") == extended
    assert ok("--db", db, "usage", "--json", "--end", "2026-W48-3") == extended
    assert ok("--db", db, "usage", "--json", "--end", "2026-W48-3T10:00") != ""  # a week date-time
    refused = run("--db", db, "usage", "--end", "20261125T1")
    assert refused.returncode == 2
    assert "is not an ISO 8601 date" in refused.stderr


# --- events export / import -------------------------------------------------------


def test_export_then_import_keeps_every_event_and_reimporting_adds_nothing(
    db: Path, tmp_path: Path
) -> None:
    seed_events(db)
    exported = tmp_path / "events.jsonl"
    done = run("--db", db, "events", "export", "--jsonl", "-o", exported)
    assert done.returncode == 0 and done.stdout == ""
    assert "exported 5 events" in done.stderr
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["createdAt"][:10] for line in lines] == ["2026-11-25"] * 3 + ["2026-11-26"] * 2
    assert lines[0]["properties"] == {"team": "search", "attempt": 1}
    # stdout carries the same lines.
    assert ok("--db", db, "events", "export") == exported.read_text()

    copy = tmp_path / "copy.db"
    first = json.loads(ok("--db", copy, "events", "import", exported, "--json"))
    assert first == {"read": 5, "recorded": 5, "alreadyPresent": 0}
    again = ok("--db", copy, "events", "import", exported)
    assert again == f"5 events read from {exported}: 0 recorded, 5 already in the ledger\n"
    # Back into the ledger it came from: its own ids are recognised.
    home = json.loads(ok("--db", db, "events", "import", exported, "--json"))
    assert home["recorded"] == 0

    with Tracker(db) as source, Tracker(copy) as target:
        # Every field and time kept; only the ids are the new ledger's own.
        assert [e.model_copy(update={"id": ""}) for e in target.events.list().data] == [
            e.model_copy(update={"id": ""}) for e in source.events.list().data
        ]
        for customer in ("acme", "globex"):
            assert target.customers.get_usage(customer) == source.customers.get_usage(customer)


def test_an_event_keeps_one_identity_however_many_ledgers_it_passes_through(
    tmp_path: Path,
) -> None:
    # A -> B -> A, and C importing both A's and B's exports: each event is recorded
    # once per ledger, whether it was recorded with a key of its own or without.
    a, b, c = (tmp_path / f"{name}.db" for name in "abc")
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        '{"customerId":"acme","eventType":"call","totalTokens":100,'
        '"timestamp":"2026-11-25T10:00:00Z"}\n'
        '{"customerId":"acme","eventType":"call","totalTokens":50,"idempotencyKey":"req-1",'
        '"properties":{"team":"search"},"timestamp":"2026-11-25T10:01:00Z"}\n'
    )
    ok("--db", a, "events", "import", seed)
    from_a, from_b, from_c = (tmp_path / f"{name}.jsonl" for name in "abc")

    def export(ledger: Path, to: Path) -> None:
        assert run("--db", ledger, "events", "export", "-o", to).returncode == 0

    export(a, from_a)
    assert ok("--db", b, "events", "import", from_a, "--json") == ok(
        "--db", c, "events", "import", from_a, "--json"
    )
    export(b, from_b)
    lines_a = [json.loads(line) for line in from_a.read_text().splitlines()]
    lines_b = [json.loads(line) for line in from_b.read_text().splitlines()]
    # The key an event was recorded under travels with it: the user's own, else
    # the id it had in the first ledger.
    assert "idempotencyKey" not in lines_a[0]
    assert lines_a[1]["idempotencyKey"] == "req-1"
    assert [line["idempotencyKey"] for line in lines_b] == [lines_a[0]["id"], "req-1"]
    # Every other field is kept as it was.
    assert [{**line, "id": "", "idempotencyKey": ""} for line in lines_b] == [
        {**line, "id": "", "idempotencyKey": ""} for line in lines_a
    ]
    for target, source in ((a, from_b), (c, from_b), (b, from_a)):
        again = json.loads(ok("--db", target, "events", "import", source, "--json"))
        assert again == {"read": 2, "recorded": 0, "alreadyPresent": 2}, (target, source)
    # A third hop: C's export still names the first ledger's event.
    export(c, from_c)
    for target in (a, b):
        again = json.loads(ok("--db", target, "events", "import", from_c, "--json"))
        assert again["recorded"] == 0
    # An export made before exports carried keys, then one made after: the second
    # is recognised by its ids, which the first left here as keys.
    older, d = tmp_path / "older.jsonl", tmp_path / "d.db"
    older.write_text(
        "".join(json.dumps({**line, "idempotencyKey": None}) + "\n" for line in lines_a)
    )
    ok("--db", d, "events", "import", older)
    assert json.loads(ok("--db", d, "events", "import", from_a, "--json"))["recorded"] == 0
    for ledger in (a, b, c, d):
        with Tracker(ledger) as tracker:
            assert tracker.customers.get_usage("acme").total_events == 2
            assert tracker.customers.get_usage("acme").total_tokens == 150
    # The user's key still answers in every ledger: the same request is not recorded again.
    for ledger in (a, b, c):
        replay = ok(
            "--db",
            ledger,
            "events",
            "import",
            "-",
            stdin='{"customerId":"acme","eventType":"call","totalTokens":50,'
            '"idempotencyKey":"req-1"}\n',
        )
        assert replay.endswith(": 0 recorded, 1 already in the ledger\n"), ledger


def test_export_and_usage_page_through_more_events_than_one_page(db: Path) -> None:
    # 250 events: pages of 100, so the oldest-first export reads three pages back to front.
    with Tracker(db) as tracker:
        tracker.events.batch(
            [
                {
                    "customerId": f"c{n % 3}",
                    "eventType": "x",
                    "totalTokens": n,
                    "timestamp": f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}Z",
                }
                for n in range(250)
            ]
        )
    lines = [json.loads(line) for line in ok("--db", db, "events", "export").splitlines()]
    assert [line["totalTokens"] for line in lines] == list(range(250))
    usage = json.loads(ok("--db", db, "usage", "--period", "all", "--json"))
    assert usage["total"]["totalEvents"] == 250
    assert usage["total"]["totalTokens"] == sum(range(250))


def test_imported_events_count_toward_quotas_in_their_own_period(db: Path) -> None:
    with Tracker(db, clock=ManualClock(NOV_25)) as tracker:
        tracker.quotas.create(
            name="daily", metric="total_tokens", limit_value=100, period="day", per=["customer_id"]
        )
    lines = "\n".join(
        json.dumps({"customerId": "acme", "eventType": "x", "totalTokens": 60, **extra})
        for extra in ({"idempotencyKey": "k1"}, {"idempotencyKey": "k1"}, {})
    )
    out = ok("--db", db, "events", "import", "-", stdin=lines + "\n\n")
    # The repeated key is recorded once; the line without a key has no such guard.
    assert out == "3 events read from <stdin>: 2 recorded, 1 already in the ledger\n"
    with Tracker(db) as tracker:
        assert tracker.quotas.check({"customer_id": "acme"}).quotas[0].used == 120


def test_a_bad_line_fails_the_import_before_anything_is_written(db: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"customerId": "acme", "eventType": "x"}\n{"customerId": "acme", "eventType": "x", '
        '"inputTokens": -1}\n'
    )
    done = run("--db", db, "events", "import", events)
    assert done.returncode == 2
    assert done.stderr == (
        f"limitry-local: error: {events}:2: inputTokens: Input should be greater than or "
        "equal to 0\n"
    )
    assert not db.exists()


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        (
            '{"customerId": "acme", "eventType": "x", "properties": {"p": '
            + "[" * 100_000
            + "]" * 100_000
            + "}}",
            "nested too deeply to read (brackets inside brackets, about 1000 levels or more); "
            "an event's properties nest at most 32 levels",
        ),
        ("[" * 100_000, "nested too deeply to read"),
        (
            '{"customerId": "acme", "eventType": "x", "totalTokens": ' + "9" * 5000 + "}",
            "a number too long to read (more than 4300 digits); amounts are at most 13 digits",
        ),
    ],
    ids=["deep-properties", "deep-line", "5000-digits"],
)
def test_a_line_too_deep_or_too_long_to_read_is_exit_2_naming_it(
    db: Path, tmp_path: Path, hostile: str, message: str
) -> None:
    """0.2 exited 70 (internal error) with a RecursionError or ValueError traceback."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"customerId": "acme", "eventType": "x"}\n' + hostile + "\n")
    done = run("--db", db, "events", "import", events)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"limitry-local: error: {events}:2: {message}")
    assert done.stderr.count("\n") == 1  # one line, no traceback
    assert not db.exists()  # nothing recorded, not even the good first line


def test_import_draws_a_progress_bar_on_a_terminal_only(db: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"customerId": "a", "eventType": "x"}\n' * 3)
    piped = run("--db", db, "events", "import", events)
    assert piped.returncode == 0 and piped.stderr == ""

    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in {"LIMITRY_LOCAL_DB", "NO_COLOR"}}
    with subprocess.Popen(
        [COMMAND, "--db", str(tmp_path / "tty.db"), "events", "import", str(events)],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=env,
    ) as process:
        os.close(terminal)
        drawn = _read_terminal(controller)
        assert process.wait(timeout=60) == 0
    os.close(controller)
    # Both passes: every line checked (bytes read), then written (events).
    assert b"validating" in drawn
    assert b"writing" in drawn
    assert b"3/3" in drawn


# --- check ------------------------------------------------------------------------


def test_check_exits_0_when_allowed_and_1_when_a_quota_is_used_up(db: Path) -> None:
    with Tracker(db) as tracker:
        tracker.rate_limits.create(name="rpm", limit_value=60, window="minute")
        tracker.quotas.create(
            name="daily", metric="total_events", limit_value=2, period="day", per=["customer_id"]
        )
        for _ in range(2):
            tracker.usage(customer_id="acme", event_type="model_call")
    denied = run("--db", db, "check", "customer_id=acme", "event_type=model_call")
    assert denied.returncode == 1, denied.stderr
    assert re.search(
        r"quota +│ daily +│ +2 │ +2 │ +0 │ day \(total_events\) .*exceeded", denied.stdout
    )
    assert denied.stdout.rstrip().endswith("denied")

    allowed = run("--db", db, "check", "customer_id=globex", "--json")
    assert allowed.returncode == 0
    answer = json.loads(allowed.stdout)
    assert answer["allowed"] is True
    assert answer["quotas"][0]["used"] == 0 and answer["quotas"][0]["remaining"] == 2
    assert answer["rateLimits"][0]["name"] == "rpm"

    denied_json = run("--db", db, "check", "customer_id=acme", "--json")
    assert denied_json.returncode == 1
    assert json.loads(denied_json.stdout)["allowed"] is False


def test_check_with_no_matching_limit_is_allowed(db: Path) -> None:
    with Tracker(db) as tracker:
        tracker.quotas.create(
            name="gpt-4o",
            metric="total_events",
            limit_value=1,
            period="day",
            dimension_filters={"model": "gpt-4o"},
        )
    out = ok("--db", db, "check", "model=other")
    assert out == "allowed: no limit matches these dimensions\n"


# --- the ledger path and demo -----------------------------------------------------


def test_the_ledger_comes_from_the_environment_when_no_db_is_given(db: Path) -> None:
    seed_events(db)
    usage = json.loads(ok("usage", "--period", "all", "--json", env={"LIMITRY_LOCAL_DB": str(db)}))
    assert usage["total"]["totalEvents"] == 5


def test_demo_uses_its_own_file_never_the_environments(tmp_path: Path, db: Path) -> None:
    seed_events(db)
    out = ok("demo", "--date", "2026-11-25", cwd=tmp_path, env={"LIMITRY_LOCAL_DB": str(db)})
    assert "9 events recorded, 3 denied" in out
    assert (tmp_path / "limitry-demo.db").exists()
    with Tracker(db) as untouched:
        assert untouched.ledger.event_count() == 5


def test_demo_takes_the_global_options_after_its_name(tmp_path: Path) -> None:
    """Found in review: giving the demo its own --db dropped --timeout after the name,
    which docs/cli.md says every command takes (exit 2, unrecognized arguments)."""
    out = ok("demo", "--timeout", "3", "--date", "2026-11-25", cwd=tmp_path)
    assert "9 events recorded, 3 denied" in out
    assert "never $LIMITRY_LOCAL_DB" in ok("demo", "--help", cwd=tmp_path)


LOCK_WHEN_MADE = """
import os, sqlite3, sys, time
print("waiting", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.0005)
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # between two of the demo's writes
time.sleep(8)  # past the 5 s the demo waited whatever --timeout said
"""


@pytest.mark.parametrize("module", [False, True], ids=["limitry-local", "python-m"])
def test_demo_waits_for_a_lock_as_long_as_its_timeout(tmp_path: Path, module: bool) -> None:
    """Found in review: demo accepted --timeout and ignored it; a lock taken on its
    fresh file was waited out for 5 s, and the message then advised --timeout.
    ``python -m limitry_local demo`` (docs/cli.md: the same) refused --timeout."""
    ledger = tmp_path / "demo.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_WHEN_MADE, str(ledger)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "waiting"
        argv = ("demo", "--db", str(ledger), "--timeout", "0.2", "--date", "2026-11-25")
        done = (
            subprocess.run(
                [sys.executable, "-m", "limitry_local", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if module
            else run(*argv)
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert done.returncode == 3, done.stderr
    assert "stayed locked for 0.2s" in done.stderr


# --- expected failures: one line on stderr, a documented exit code ------------------


@pytest.mark.parametrize(
    ("config", "code", "message"),
    [
        pytest.param(
            '[[quotas]]\nname = "q"\nmetric = "total_tokens"\nlimit_value = 0\nperiod = "day"\n',
            2,
            "limits.toml: quotas[0] ('q').limitValue: Input should be greater than 0",
            id="a-bad-field-is-named",
        ),
        pytest.param(
            '[[rate_limits]]\nname = "a"\nlimit_value = 1\nwindow = "minute"\nburst = 3\n',
            2,
            "limits.toml: rate_limits[0] ('a').burst: Extra inputs are not permitted",
            id="an-unknown-field-is-named",
        ),
        pytest.param(
            '[[rate_limits]]\nname = "a"\nlimit_value = 1\nwindow = "minute"\n'
            '[[rate_limits]]\nname = "a"\nlimit_value = 2\nwindow = "hour"\n',
            2,
            "rate_limits[0] and rate_limits[1] are both named 'a'",
            id="a-name-used-twice",
        ),
        pytest.param("[limits\nx = 1\n", 2, "limits.toml: not valid TOML", id="broken-toml"),
        pytest.param("[global]\nx = 1\n", 2, "'global': unknown section", id="unknown-section"),
    ],
)
def test_a_bad_config_changes_nothing_and_says_why(
    tmp_path: Path, db: Path, config: str, code: int, message: str
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(config)
    done = run("limits", "apply", "limits.toml", "--db", db, cwd=tmp_path)
    assert done.returncode == code
    assert message in done.stderr
    assert done.stderr.startswith("limitry-local: error: ")
    assert done.stderr.count("\n") == 1  # one line, no traceback
    assert not db.exists()


def test_read_commands_never_create_a_ledger(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    done = run("--db", missing, "usage")
    assert done.returncode == 3
    assert done.stderr == (
        f"limitry-local: error: no ledger at {missing}: pass --db PATH or set LIMITRY_LOCAL_DB "
        "(limits apply and events import create the file)\n"
    )
    assert not missing.exists()


def test_a_file_that_is_not_a_ledger_exits_3(tmp_path: Path) -> None:
    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not a database\n" * 100)
    done = run("--db", junk, "limits", "list")
    assert done.returncode == 3
    assert "is not a SQLite database" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_locked_ledger_exits_3_after_the_timeout(db: Path, toml_file: Path) -> None:
    Tracker(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = run("--db", db, "--timeout", "0.1", "limits", "apply", toml_file)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 3
    assert "is locked by another connection" in done.stderr
    assert "Traceback" not in done.stderr


def test_limits_the_file_cannot_tell_apart_are_refused(db: Path, tmp_path: Path) -> None:
    with Tracker(db) as tracker:
        first = tracker.rate_limits.create(name="rpm", limit_value=1, window="minute")
        second = tracker.rate_limits.create(name="rpm", limit_value=2, window="minute")
    config = tmp_path / "limits.json"
    config.write_text('{"rate_limits": [{"name": "rpm", "limitValue": 3, "window": "minute"}]}')
    done = run("--db", db, "limits", "apply", config)
    assert done.returncode == 2
    assert f"2 rate limits named 'rpm' ({first.id}, {second.id})" in done.stderr


def test_bad_arguments_exit_2(db: Path) -> None:
    done = run("--db", db, "check", "customer_id")
    assert done.returncode == 2
    assert "'customer_id' is not KEY=VALUE" in done.stderr


# --- breakdown, timeseries, progress when asked, bounded import, check's warning ----


def _report_ledger(db: Path) -> None:
    """Events over three days: two customers, two models and one event without a model."""
    day = datetime(2026, 11, 23, 10, tzinfo=timezone.utc).timestamp()
    with Tracker(db, clock=ManualClock(day)) as tracker:
        rows = [
            (0, "acme", "gpt-4o", 100, 0.5),
            (0, "acme", "claude-sonnet-4", 300, 1.25),
            (1, "acme", "gpt-4o", 50, 0.1),
            (1, "globex", None, 20, 0.2),
            (2, "globex", "gpt-4o", 500, 2.0),
        ]
        for offset, customer, model, tokens, cents in rows:
            fields = {"model": model, "provider": "openai"} if model else {}
            tracker.events.ingest(
                customer_id=customer,
                event_type="model_call",
                total_tokens=tokens,
                cost_cents=cents,
                timestamp=datetime.fromtimestamp(day + offset * 86_400, timezone.utc),
                **fields,
            )


def test_breakdown_is_the_usage_report_in_tables_and_wire_json(db: Path) -> None:
    _report_ledger(db)
    answer = json.loads(ok("--db", db, "breakdown", "--by", "model", "--json"))
    with Tracker(db) as tracker:
        assert answer == tracker.usage_report.breakdown("model").model_dump(
            mode="json", by_alias=True
        )
    assert [(g["value"], g["totalTokens"]) for g in answer["data"]] == [
        ("gpt-4o", 650),
        ("claude-sonnet-4", 300),
        (None, 20),
    ]
    table = ok("--db", db, "breakdown", "--by", "customer_id", "--model", "gpt-4o")
    assert re.search(r"globex\s.*\s500\s.*76\.9%", table)
    assert re.search(r"total\s.*\s650\s", table)
    assert ok("--db", db, "breakdown", "--customer", "nobody") == "no events match\n"


def test_usage_rows_keep_every_micro_cent_of_large_totals(db: Path) -> None:
    # 4_817_304_331_474_589 micro-cents (past 2**52): as cents * 10**6 in
    # floats the queried row read ..590, one more than the events hold.
    costs = [
        477238932.869272,
        691425584.844028,
        719686475.924092,
        730353425.567101,
        171826754.635427,
        780371628.226525,
        580845300.230795,
        665556229.177349,
    ]
    with Tracker(db, clock=ManualClock(NOV_25)) as tracker:
        tracker.events.batch(
            [{"customerId": "acme", "eventType": "model_call", "costCents": c} for c in costs]
        )
        for grouping in ("day", "all"):
            (row,) = aggregate(tracker, grouping, EventFilters(), query_cost=0)
            assert row.cost_micro_cents == 4_817_304_331_474_589
        (walked,) = _walk(tracker, "day", EventFilters())
        assert walked.cost_micro_cents == 4_817_304_331_474_589


def test_timeseries_charts_each_period_with_a_bar_as_long_as_its_share(db: Path) -> None:
    _report_ledger(db)
    answer = json.loads(ok("--db", db, "timeseries", "--interval", "day", "--json"))
    assert [(p["periodStart"], p["totalTokens"]) for p in answer["data"]] == [
        ("2026-11-23T00:00:00Z", 400),
        ("2026-11-24T00:00:00Z", 70),
        ("2026-11-25T00:00:00Z", 500),
    ]
    chart = ok("--db", db, "timeseries", "--interval", "day")
    bars = {line.split()[1]: line.count("█") for line in chart.splitlines() if "2026-11-2" in line}
    assert bars == {"2026-11-23": 32, "2026-11-24": 5, "2026-11-25": 40}  # of 40 cells
    by_events = ok("--db", db, "timeseries", "--metric", "events", "--provider", "openai")
    assert "bars: events" in by_events


def walked_day(tracker: Tracker) -> list[object]:
    return list(_walk(tracker, "day", EventFilters()))


def test_usage_from_the_ledger_matches_a_walk_over_the_events(db: Path) -> None:
    """Every grouping and filter: the rows summed by report queries equal the events' sums."""
    _report_ledger(db)
    with Tracker(db) as tracker:
        for grouping in ("hour", "day", "week", "month"):
            for filters in (
                EventFilters(),
                EventFilters(customer_id="acme"),
                EventFilters(model="gpt-4o", start_date="2026-11-24"),
                EventFilters(end_date="2026-11-24"),
            ):
                queried = aggregate(tracker, grouping, filters, query_cost=0)
                walked = _walk(tracker, grouping, filters)
                assert queried
                assert queried == walked, (grouping, filters)
        assert aggregate(tracker, "day", EventFilters()) == walked_day(tracker)
        everything = aggregate(tracker, "all", EventFilters())
        assert [(r.customer_id, r.model, r.total_tokens) for r in everything] == [
            ("acme", "claude-sonnet-4", 300),
            ("acme", "gpt-4o", 150),
            ("globex", None, 20),
            ("globex", "gpt-4o", 500),
        ]
        assert sum(r.cost_micro_cents for r in everything) == 4_050_000


def test_progress_is_drawn_when_asked_even_off_a_terminal(db: Path, tmp_path: Path) -> None:
    seed_events(db)
    exported = tmp_path / "out.jsonl"
    done = run("--db", db, "events", "export", "-o", exported, "--progress")
    assert done.returncode == 0
    assert "exporting" in done.stderr
    lines = exported.read_text().splitlines()
    assert f"{len(lines)}/{len(lines)}" in done.stderr
    quiet = run("--db", tmp_path / "copy.db", "events", "import", exported, "--no-progress")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = run("--db", tmp_path / "other.db", "events", "import", exported, "--progress")
    assert "validating" in loud.stderr and "writing" in loud.stderr


def test_import_from_stdin_reads_twice_through_a_spool(db: Path, tmp_path: Path) -> None:
    lines = "".join(
        json.dumps({"customerId": f"c{i}", "eventType": "x", "idempotencyKey": f"k{i}"}) + "\n"
        for i in range(2500)
    )
    first = run("--db", db, "events", "import", "-", "--json", stdin=lines)
    assert json.loads(first.stdout) == {"read": 2500, "recorded": 2500, "alreadyPresent": 0}
    again = run("--db", db, "events", "import", "-", "--json", stdin=lines)
    assert json.loads(again.stdout) == {"read": 2500, "recorded": 0, "alreadyPresent": 2500}
    # A bad last line: nothing of the 2,500 before it is written (the first pass stops it).
    bad = lines.replace("k", "n") + '{"customerId": "", "eventType": "x"}\n'
    refused = run("--db", db, "events", "import", "-", stdin=bad)
    assert refused.returncode == 2
    assert "<stdin>:2501: customerId" in refused.stderr
    with Tracker(db) as tracker:
        assert tracker.ledger.event_count() == 2500


def test_import_memory_stays_bounded_however_long_the_file(tmp_path: Path) -> None:
    """Peak memory of importing 60k events is within a few MB of importing 3k."""
    line = '{"customerId": "c", "eventType": "x", "model": "gpt-4o", "totalTokens": 5}\n'

    def peak_kb(events: int) -> int:
        source = tmp_path / f"{events}.jsonl"
        source.write_text(line * events)
        script = (
            "import resource, sys\n"
            "from limitry_local.cli.main import run\n"
            f"code = run(['--db', {str(tmp_path / f'{events}.db')!r}, 'events', 'import', "
            f"{str(source)!r}])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
            "sys.exit(code)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        return int(done.stdout.splitlines()[-1])

    small, large = peak_kb(3_000), peak_kb(60_000)
    # Holding the file would cost ~1-2 KB an event: 57k more events, about 60-120 MB.
    assert large - small < 20_000, (small, large)


def test_check_warns_about_a_dimension_no_limit_uses(db: Path) -> None:
    with Tracker(db) as tracker:
        tracker.quotas.create(
            name="daily", metric="total_events", limit_value=5, period="day", per=["customer_id"]
        )
        tracker.rate_limits.create(
            name="rpm", limit_value=60, window="minute", dimension_filters={"tier": "free"}
        )
    typo = run("--db", db, "check", "customer=cust_1")
    assert typo.returncode == 0  # still the answer to "allowed?"
    assert typo.stderr == (
        "limitry-local: warning: 'customer': no rate limit or quota uses this dimension, "
        "so it changes no answer; did you mean 'customer_id'?\n"
    )
    near = run("--db", db, "check", "customer_id=c", "teir=free", "--json")
    assert "did you mean 'tier'?" in near.stderr
    assert json.loads(near.stdout)["unusedDimensions"] == ["teir"]
    fine = run("--db", db, "check", "customer_id=c", "tier=free")
    assert fine.returncode == 0 and fine.stderr == ""


# --- review fixes: export to stdout under a progress bar, ... ----------------------


def test_export_to_stdout_under_a_progress_bar_writes_the_events_to_stdout(
    db: Path,
) -> None:
    """rich's Progress redirected sys.stdout into its console: the events went to stderr."""
    seed_events(db)
    asked = run("--db", db, "events", "export", "--progress")
    assert asked.returncode == 0, asked.stderr
    assert len(asked.stdout.splitlines()) == 5
    assert all(json.loads(line)["customerId"] for line in asked.stdout.splitlines())
    assert "customerId" not in asked.stderr
    assert "exporting" in asked.stderr

    # As typed in a terminal: stderr is one (a pty), stdout redirected.
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in {"LIMITRY_LOCAL_DB", "NO_COLOR"}}
    with subprocess.Popen(
        [COMMAND, "--db", str(db), "events", "export", "--jsonl"],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=env,
    ) as process:
        os.close(terminal)
        assert process.stdout is not None
        written = process.stdout.read()
        drawn = _read_terminal(controller)
        assert process.wait(timeout=60) == 0
    os.close(controller)
    assert len(written.splitlines()) == 5
    assert b"customerId" not in drawn
    assert b"exporting" in drawn


def test_demo_refuses_a_file_it_did_not_make_unless_forced(tmp_path: Path, db: Path) -> None:
    """0.2's demo deleted whatever file --db named (notes, a production ledger) unasked."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    seed_events(db)
    for target, argv in ((notes, ("demo", "--db", notes)), (db, ("--db", db, "demo"))):
        done = run(*argv)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"limitry-local: error: --db {target}:")
        assert "is not a ledger the demo made" in done.stderr and "--force" in done.stderr
        assert done.stderr.count("\n") == 1
        assert done.stdout == ""
    assert notes.read_text() == "my precious notes\n"
    with Tracker(db) as untouched:
        assert untouched.ledger.event_count() == 5
    # A ledger the demo made is its own to recreate; --force recreates any file.
    ok("demo", "--db", db, "--date", "2026-11-25", "--force")
    again = ok("demo", "--db", db, "--date", "2026-11-25")
    assert "9 events recorded, 3 denied" in again
    with Tracker(db) as recreated:
        assert recreated.ledger.event_count() == 9


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ("--db", "dir.db"), "--db dir.db: is a directory, not a ledger file", id="a-directory"
        ),
        pytest.param(
            ("--date", "1960-01-01", "--db", "d.db"),
            "--date 1960-01-01: the demo's day must fall between 1970-01-01 and 9998-12-31",
            id="a-day-before-1970",
        ),
    ],
)
def test_demo_bad_arguments_exit_2_in_one_line(
    tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    """0.2: a directory was a traceback (exit 70), a day before 1970 exit 3 (a ledger error)."""
    (tmp_path / "dir.db").mkdir()
    done = run("demo", *argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"limitry-local: error: {message}\n"
    module = subprocess.run(
        [sys.executable, "-m", "limitry_local", "demo", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert module.returncode == 2, module.stderr
    assert module.stderr == f"python -m limitry_local demo: error: {message}\n"
    assert not (tmp_path / "d.db").exists()


def _state(ledger: Path) -> tuple[bytes, str]:
    connection = sqlite3.connect(ledger)
    try:
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()
    return ledger.read_bytes(), journal


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("limits", "apply", "LIMITS", "--dry-run"), id="apply-dry-run"),
        pytest.param(("limits", "list", "--json"), id="limits-list"),
        pytest.param(("usage", "--period", "all", "--json"), id="usage"),
        pytest.param(("breakdown", "--json"), id="breakdown"),
        pytest.param(("timeseries", "--json"), id="timeseries"),
        pytest.param(("events", "export"), id="export"),
        pytest.param(("check", "customer_id=acme"), id="check"),
    ],
)
def test_read_only_commands_refuse_an_older_ledger_rather_than_migrate_it(
    tmp_path: Path, toml_file: Path, argv: tuple[str, ...]
) -> None:
    """0.2 upgraded a schema 1 ledger in place (to 8, and to WAL) for --dry-run or a read."""
    old = tmp_path / "old.db"
    shutil.copyfile(ROOT / "tests" / "ledgers" / "v1.db", old)
    before = _state(old)
    done = run("--db", old, *(str(toml_file) if a == "LIMITS" else a for a in argv))
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        f"limitry-local: error: ledger {old} has schema version 1, older than this "
        "version's 8; a command that only reads (or --dry-run) does not migrate it: run "
        "limits apply or events import to migrate it in place (back it up first if an "
        "older limitry_local still uses it)\n"
    )
    assert done.stdout == ""
    assert _state(old) == before
    # A writing command migrates it, after which reading works.
    ok("--db", old, "limits", "apply", toml_file)
    assert _state(old)[1] == "wal"
    assert json.loads(ok("--db", old, "limits", "list", "--json"))["quotas"]


CRASHED_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")  # the change spills to the file before commit
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE events SET properties = properties || ' '")
os._exit(0)  # a crash mid-transaction: a hot journal stays beside the file
"""


def test_a_read_only_command_refuses_a_file_it_could_only_read_by_writing(
    tmp_path: Path,
) -> None:
    """Found in review: a crashed writer's journal made the read-only look at the
    schema version fail, which was taken for "let the Tracker see", and the
    Tracker then migrated an old ledger in place."""
    old = tmp_path / "old.db"
    shutil.copyfile(ROOT / "tests" / "ledgers" / "v1.db", old)
    with closing(sqlite3.connect(old)) as conn:
        conn.executemany(
            "INSERT INTO events (id, ts, customer_id, event_type, properties) "
            "VALUES (?, 0, 'c', 'e', '{}')",
            [(f"evt_{n}",) for n in range(2000)],
        )
        conn.commit()
    subprocess.run([sys.executable, "-c", CRASHED_WRITER, str(old)], check=True)
    assert Path(f"{old}-journal").exists()
    done = run("--db", old, "limits", "list")
    assert done.returncode == 3, done.stderr
    assert "cannot be read without writing to it" in done.stderr
    assert Path(f"{old}-journal").exists()  # nothing recovered, nothing migrated


HOLD_THE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(6)  # past the 5 s a read-only look waited before the fix
conn.execute("COMMIT")
"""


def test_a_read_only_command_waits_out_a_lock_as_long_as_its_timeout(tmp_path: Path) -> None:
    """Found in review of the fix above: a ledger merely locked by another writer
    (a rollback-journal copy, made by VACUUM INTO) was refused as unreadable after
    5 s, whatever --timeout said; it waits as the command's --timeout allows."""
    source, copy = tmp_path / "source.db", tmp_path / "copy.db"
    with Tracker(source) as tracker:
        tracker.usage(customer_id="acme", event_type="e", total_tokens=5)
    with closing(sqlite3.connect(source)) as conn:
        conn.execute(f"VACUUM INTO '{copy}'")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(copy)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = run("--db", copy, "--timeout", "30", "usage", "--customer", "acme")
        assert done.returncode == 0, done.stderr
    finally:
        holder.wait(timeout=30)


def test_an_old_ledger_locked_past_the_timeout_is_refused_not_migrated(tmp_path: Path) -> None:
    """Found in review of the fix above: the read-only look gave up on the lock and
    left the file to a Tracker that waited again, and migrated it (schema 1 to 8)
    once the other writer let go."""
    old = tmp_path / "old.db"
    shutil.copyfile(ROOT / "tests" / "ledgers" / "v1.db", old)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(old)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = run("--db", old, "--timeout", "4", "limits", "list")  # 4 s < 6 s < 8 s
        assert done.returncode == 3, done.stderr
        assert "stayed locked for 4s" in done.stderr
    finally:
        holder.wait(timeout=30)
    with closing(sqlite3.connect(old)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",
        )


def test_export_warns_that_it_leaves_out_limitry_1_0_records(db: Path) -> None:
    """0.2 wrote nothing and said nothing for a ledger used through the 1.0 face."""
    from limitry_local.limitry import Limitry  # noqa: PLC0415

    seed_events(db)
    quiet = run("--db", db, "events", "export")
    assert quiet.returncode == 0 and quiet.stderr == ""
    client = Limitry(str(db))
    client.limits.create(subject={"kind": "user"}, amount=200, window="month", unit="cents")
    for _ in range(3):
        client.checks.create(subject={"kind": "user", "id": "usr_1"}, action="chat", cost=5)
    client.close()
    with sqlite3.connect(db) as connection:
        (records,) = connection.execute("SELECT count(*) FROM records").fetchone()
    assert records > 0
    done = run("--db", db, "events", "export")
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 5  # the v0 events, as before
    assert done.stderr == (
        f"limitry-local: warning: {db} also holds {records} Limitry 1.0 records (limits, "
        "subjects, credits, reservations), which events export leaves out: it writes "
        "v0 events only; copy the ledger file to keep them\n"
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            {
                ".json": "[" * 100_000 + "]" * 100_000,
                ".yaml": "[" * 100_000 + "]" * 100_000,
                ".toml": "a = " + "[" * 100_000 + "]" * 100_000,
            },
            "nested too deeply to read",
            id="too-deep",
        ),
        pytest.param(
            {
                ".json": '{"quotas": [{"name": "q", "limit_value": ' + "9" * 5000 + "}]}",
                ".yaml": "quotas:\n  - name: q\n    limit_value: " + "9" * 5000 + "\n",
                ".toml": '[[quotas]]\nname = "q"\nlimit_value = ' + "9" * 5000 + "\n",
            },
            "cannot read the file (Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits)",
            id="an-integer-of-5000-digits",
        ),
    ],
)
def test_a_config_too_deep_or_too_long_to_read_is_exit_2_naming_it(
    tmp_path: Path, db: Path, suffix: str, content: dict[str, str], message: str
) -> None:
    """0.2: a RecursionError or ValueError traceback, exit 70."""
    config = tmp_path / f"limits{suffix}"
    config.write_text(content[suffix])
    done = run("--db", db, "limits", "apply", config, "--dry-run")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"limitry-local: error: {config}: {message}\n"


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)], ids=["apply", "dry-run"])
def test_prune_with_a_file_that_declares_no_limits_is_refused(
    db: Path, toml_file: Path, tmp_path: Path, dry_run: tuple[str, ...]
) -> None:
    """0.2 deleted every limit: a file emptied by mistake (or moved) said 'delete them all'."""
    ok("--db", db, "limits", "apply", toml_file)
    empty = tmp_path / "team.yaml"
    empty.write_text("# limits moved to another file\n")
    done = run("--db", db, "limits", "apply", empty, "--prune", *dry_run)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"limitry-local: error: {empty}: declares no limits, so --prune would delete every "
        "limit in the ledger; refused (declare at least one limit in the file)\n"
    )
    assert json.loads(ok("--db", db, "limits", "list", "--json"))["quotas"]
    # Without --prune an empty file is a plan that changes nothing, as before.
    assert "0 created, 0 updated, 0 deleted" in ok("--db", db, "limits", "apply", empty)


def test_export_to_the_ledger_file_itself_is_refused(db: Path, tmp_path: Path) -> None:
    """0.2 truncated the ledger it was reading: -o naming it, by any path."""
    seed_events(db)
    before = db.read_bytes()
    for output in (db, tmp_path / "." / db.name):
        done = run("--db", db, "events", "export", "-o", output)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"limitry-local: error: {output}: is the ledger file itself; export to another file\n"
        )
    assert db.read_bytes() == before
    with Tracker(db) as tracker:
        assert tracker.ledger.event_count() == 5


def test_check_never_suggests_the_name_it_warns_about(db: Path) -> None:
    """0.2: "'customer_id': ... did you mean 'customer_id'?" when no limit reads it."""
    with Tracker(db) as tracker:
        tracker.quotas.create(name="q", metric="total_events", limit_value=100, period="day")
    done = run("--db", db, "check", "customer_id=acme", "model=gpt-4o")
    assert done.returncode == 0
    assert done.stderr == (
        "limitry-local: warning: 'customer_id': no rate limit or quota uses this dimension, "
        "so it changes no answer\n"
        "limitry-local: warning: 'model': no rate limit or quota uses this dimension, "
        "so it changes no answer\n"
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param(
            "limits.yaml",
            "quotas:\n  - name: q\n    metric: total_events\n    limit_value: 5\n"
            "    period: day\n    limit_value: 50000\n",
            "limits.yaml: not valid YAML: the key 'limit_value' is given twice line 6, column 5",
            id="yaml",
        ),
        pytest.param(
            "limits.json",
            '{"quotas": [{"name": "q", "metric": "total_events", "limit_value": 5, '
            '"period": "day", "limit_value": 50000}]}',
            "limits.json: not valid JSON: the key 'limit_value' is given twice in one object",
            id="json",
        ),
    ],
)
def test_a_key_given_twice_in_one_entry_is_refused(
    tmp_path: Path, db: Path, name: str, content: str, message: str
) -> None:
    """0.2 kept the last value silently (TOML refuses the same file)."""
    (tmp_path / name).write_text(content)
    done = run("limits", "apply", name, "--db", db, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"limitry-local: error: {message}")
    assert done.stderr.count("\n") == 1
    assert not db.exists()


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path: Path, db: Path) -> None:
    (tmp_path / "limits.yaml").write_text(
        "quotas:\n  - &q {name: q, metric: total_events, period: day, limit_value: 5}\n"
        "  - <<: *q\n    name: q2\n"
    )
    ok("limits", "apply", "limits.yaml", "--db", db, cwd=tmp_path)
    quotas = json.loads(ok("--db", db, "limits", "list", "--json"))["quotas"]
    assert sorted(q["name"] for q in quotas) == ["q", "q2"]
