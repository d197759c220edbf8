"""Arguments, dispatch and exit codes of ``limitry-local``.

Each command opens the ledger through the public :class:`Tracker`, does one
thing and closes it.  Expected failures (a bad file, a refused field, a
locked ledger) are one line on stderr and a documented exit code; anything
else is a bug and prints its traceback.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from limitry_local import demo
from limitry_local.cli import check, config, plan, render, transfer
from limitry_local.cli.exits import CliError, ExitCode
from limitry_local.cli.usage import Grouping, aggregate
from limitry_local.errors import APIError, LimitryError
from limitry_local.inputs import iso_date_or_time, seconds_argument
from limitry_local.ledger import SCHEMA_VERSION, LedgerError
from limitry_local.tracker import Tracker
from limitry_local.version import __version__

ENV_DB = "LIMITRY_LOCAL_DB"
DEFAULT_DB = Path("limitry.db")
DEMO_DB = Path("limitry-demo.db")

Handler = Callable[[argparse.Namespace, Console], int]
Missing = Literal["fail", "create", "empty"]
"""What a command does when the ledger file does not exist yet."""


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the command, and turn its outcome into an exit code."""
    args = build_parser().parse_args(argv)  # exits 2 itself on bad arguments
    handler: Handler = args.handler
    try:
        return handler(args, _console())
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except LedgerError as exc:
        return _fail(str(exc), ExitCode.LEDGER)
    except APIError as exc:
        # A 400 or 404 from the library: its message names the field or the id.
        return _fail(exc.message, ExitCode.USAGE)
    except LimitryError as exc:
        return _fail(str(exc), ExitCode.LEDGER)
    except KeyboardInterrupt:
        return 128 + 2  # as a shell reports SIGINT
    except BrokenPipeError:
        # The reader of stdout (``| head``) stopped early: not an error worth a
        # traceback.  Point stdout at devnull so the exit-time flush is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.PIPE_CLOSED
    except Exception:
        traceback.print_exc()
        return _fail("internal error (a bug in limitry-local; please report it)", ExitCode.INTERNAL)


def build_parser() -> argparse.ArgumentParser:
    # --db and --timeout are accepted before or after the command name.
    # SUPPRESS keeps a subcommand's parser from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _db_option(common, f"the ledger file (default: ${ENV_DB}, else ./{DEFAULT_DB})")
    _timeout_option(common)
    parser = argparse.ArgumentParser(
        prog="limitry-local",
        parents=[common],
        description="Limits as code, usage tables and event export/import for a limitry_local "
        "ledger. Exit codes: 0 ok, 1 denied (check), 2 usage or input error, 3 ledger error, "
        "4 a missing extra.",
    )
    parser.add_argument("--version", action="version", version=f"limitry-local {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    limits = commands.add_parser("limits", help="apply a config file of limits, or list them")
    limit_commands = limits.add_subparsers(dest="limits_command", required=True, metavar="COMMAND")
    apply = limit_commands.add_parser(
        "apply",
        parents=[common],
        help="make the ledger's limits match a TOML/YAML/JSON file (by name)",
    )
    apply.add_argument("file", type=Path, help="a .toml, .yaml, .yml or .json file")
    apply.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    apply.add_argument(
        "--prune", action="store_true", help="delete limits that the file does not name"
    )
    _json_flag(apply)
    apply.set_defaults(handler=_apply)
    listing = limit_commands.add_parser("list", parents=[common], help="the ledger's limits")
    _json_flag(listing)
    listing.set_defaults(handler=_list_limits)

    usage = commands.add_parser(
        "usage", parents=[common], help="usage per period, customer and model"
    )
    usage.add_argument(
        "--period",
        choices=["hour", "day", "week", "month", "all"],
        default="day",
        help="UTC calendar period to group by, or all (default: day)",
    )
    _event_filters(usage)
    _json_flag(usage)
    usage.set_defaults(handler=_usage)

    breakdown = commands.add_parser(
        "breakdown",
        parents=[common],
        help="usage totals per model, customer, event type or provider",
    )
    breakdown.add_argument(
        "--by",
        choices=["model", "customer_id", "event_type", "provider"],
        default="model",
        help="the dimension to group by (default: model)",
    )
    _event_filters(breakdown, provider=True)
    _json_flag(breakdown)
    breakdown.set_defaults(handler=_breakdown)

    series = commands.add_parser(
        "timeseries", parents=[common], help="usage per hour, day or week, with a chart"
    )
    series.add_argument(
        "--interval",
        choices=["hour", "day", "week"],
        default="day",
        help="UTC period of each point (default: day)",
    )
    series.add_argument(
        "--metric",
        choices=list(render.CHART_METRICS),
        default="tokens",
        help="what the chart's bars measure (default: tokens)",
    )
    _event_filters(series, provider=True)
    _json_flag(series)
    series.set_defaults(handler=_timeseries)

    events = commands.add_parser("events", help="export or import events as JSON Lines")
    event_commands = events.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    export = event_commands.add_parser(
        "export", parents=[common], help="write events as JSON Lines, in the order recorded"
    )
    export.add_argument(
        "--jsonl", action="store_true", help="JSON Lines, one event per line (the only format)"
    )
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )
    _event_filters(export)
    _progress_flag(export)
    export.set_defaults(handler=_export)
    load = event_commands.add_parser(
        "import", parents=[common], help="record events from a JSON Lines file (idempotent)"
    )
    load.add_argument("file", help="a JSON Lines file, or - for stdin")
    _json_flag(load)
    _progress_flag(load)
    load.set_defaults(handler=_import)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="would an event with these dimensions pass? (exit 0 yes, 1 no; consumes nothing)",
    )
    check.add_argument(
        "dimensions",
        nargs="+",
        type=_dimension,
        metavar="KEY=VALUE",
        help="the event's dimensions, e.g. customer_id=acme model=gpt-4o",
    )
    _json_flag(check)
    check.set_defaults(handler=_check)

    run_demo = commands.add_parser(
        "demo",
        help=f"run a short scenario on a fresh ledger file (default ./{DEMO_DB}; "
        f"never ${ENV_DB}, since the demo deletes its file first)",
    )
    # Its own --db: the shared one's help names $LIMITRY_LOCAL_DB, which the demo
    # never reads (found in review: demo --help said it did).
    _db_option(run_demo, f"the ledger file to make (default: ./{DEMO_DB}; never ${ENV_DB})")
    # The global --timeout all the same: every command takes it after its name
    # (docs/cli.md; found in review: dropped with the shared --db).
    _timeout_option(run_demo)
    run_demo.add_argument(
        "--force",
        action="store_true",
        help="delete the --db file even if it is not a ledger the demo made",
    )
    run_demo.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="simulated day, YYYY-MM-DD (default: today, UTC)",
    )
    run_demo.set_defaults(handler=_demo)

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the hosted v0 REST API over HTTP on the ledger (needs the [server] extra)",
        description="Serve the hosted Limitry v0 REST API (/v1/track, quotas, rate limits, "
        "events, usage) on the ledger file, with its OpenAPI document at /openapi.json and "
        "a page at /. Ctrl-C or SIGTERM stops it after committing what is pending. "
        "See docs/server.md.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)"
    )
    serve.add_argument("--port", type=_port, default=8080, help="TCP port (default: 8080)")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes sharing the ledger file (default: 1)",
    )
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        help="only 'Authorization: Bearer KEY' passes (default: $LIMITRY_LOCAL_API_KEY; "
        "with neither, every request passes)",
    )
    serve.add_argument(
        "--durability",
        choices=["normal", "full", "batched"],
        default="normal",
        help="when events reach the disk (default: normal); see docs/reliability.md",
    )
    serve.add_argument(
        "--flush-ms",
        type=_milliseconds,
        default=50.0,
        metavar="MS",
        help="batched: commit at most this long after an event (default: 50)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request (default: on)",
    )
    serve.set_defaults(handler=_serve)
    return parser


# --- commands -------------------------------------------------------------------


def _apply(args: argparse.Namespace, out: Console) -> int:
    # The file first: a bad file never creates or touches a ledger.
    limits = config.load(args.file)
    if args.prune and not (limits.rate_limits or limits.quotas):
        # An empty (or all-commented) file is more often a mistake than a wish
        # to delete every limit, and --prune would then stop all enforcement.
        raise CliError(
            f"{args.file}: declares no limits, so --prune would delete every limit in the "
            "ledger; refused (declare at least one limit in the file)"
        )
    with _ledger(args, "empty" if args.dry_run else "create") as tracker:
        changes = plan.apply(tracker, limits, prune=args.prune, dry_run=args.dry_run)
    if args.json:
        print(render.to_json(render.plan_json(changes, dry_run=args.dry_run)))
        return ExitCode.OK
    for line in render.plan_lines(changes, dry_run=args.dry_run):
        out.print(line, soft_wrap=True)
    out.print(render.plan_summary(changes, dry_run=args.dry_run), soft_wrap=True)
    return ExitCode.OK


def _list_limits(args: argparse.Namespace, out: Console) -> int:
    with _ledger(args, "fail") as tracker:
        rate_limits = list(plan.rate_limits_in(tracker))
        quotas = list(plan.quotas_in(tracker))
    if args.json:
        print(render.to_json(render.limits_json(rate_limits, quotas)))
    else:
        out.print(render.limits_table(rate_limits, quotas))
    return ExitCode.OK


def _usage(args: argparse.Namespace, out: Console) -> int:
    grouping: Grouping = args.period
    with _ledger(args, "fail") as tracker:
        rows = aggregate(tracker, grouping, _filters(args))
    if args.json:
        print(render.to_json(render.usage_json(rows, grouping)))
    elif not rows:
        out.print("no events match")
    else:
        out.print(render.usage_table(rows, grouping))
    return ExitCode.OK


def _breakdown(args: argparse.Namespace, out: Console) -> int:
    with _ledger(args, "fail") as tracker:
        report = tracker.usage_report.breakdown(args.by, **_report_filters(args))
    if args.json:
        print(render.to_json(report.model_dump(mode="json", by_alias=True)))
    elif not report.data:
        out.print("no events match")
    else:
        out.print(render.breakdown_table(report))
    return ExitCode.OK


def _timeseries(args: argparse.Namespace, out: Console) -> int:
    with _ledger(args, "fail") as tracker:
        report = tracker.usage_report.timeseries(args.interval, **_report_filters(args))
    if args.json:
        print(render.to_json(report.model_dump(mode="json", by_alias=True)))
    elif not report.data:
        out.print("no events match")
    else:
        out.print(render.timeseries_chart(report, args.metric))
    return ExitCode.OK


def _export(args: argparse.Namespace, out: Console) -> int:
    filters = _filters(args)
    path = _db_path(args)
    if args.output is not None and _same_file(args.output, path):
        # Opening it for writing would truncate the ledger being read.
        raise CliError(f"{args.output}: is the ledger file itself; export to another file")
    with _ledger(args, "fail") as tracker:
        # Counted once the ledger is open (so known to be one, of this schema).
        records = _count(path, "records")
        if records:
            sys.stderr.write(
                f"limitry-local: warning: {path} also holds {records:,} Limitry 1.0 records "
                "(limits, subjects, credits, reservations), which events export leaves out: "
                "it writes v0 events only; copy the ledger file to keep them\n"
            )
        with _progress(args) as progress:
            task = None
            if progress is not None:
                task = progress.add_task("exporting", total=transfer.export_total(tracker, filters))
            advance = _advancer(progress, task)
            if args.output is None:
                transfer.export_events(tracker, filters, sys.stdout, advance)
                return ExitCode.OK
            try:
                with args.output.open("w", encoding="utf-8", newline="\n") as file:
                    count = transfer.export_events(tracker, filters, file, advance)
            except OSError as exc:
                raise CliError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
    _console(stderr=True).print(f"exported {count:,} events to {args.output}")
    return ExitCode.OK


def _import(args: argparse.Namespace, out: Console) -> int:
    source = None if args.file == "-" else Path(args.file)
    with transfer.open_source(source, sys.stdin.buffer) as (name, file):
        # Two passes over the file, one line in memory at a time: every line is
        # checked before any is written (as documented), then written in batches.
        size = os.fstat(file.fileno()).st_size
        with _progress(args) as progress:
            task = None if progress is None else progress.add_task("validating", total=size)
            lines = transfer.lines_of(file, _advancer(progress, task))
            count = sum(1 for _ in transfer.scan_events(name, lines))
        with _ledger(args, "create") as tracker, _progress(args) as progress:
            task = None if progress is None else progress.add_task("writing", total=count)
            incoming = transfer.scan_events(name, transfer.lines_of(file), check=False)
            result = transfer.import_events(tracker, incoming, _advancer(progress, task))
    if args.json:
        print(
            render.to_json(
                {
                    "read": result.read,
                    "recorded": result.recorded,
                    "alreadyPresent": result.already_present,
                }
            )
        )
    else:
        out.print(
            f"{result.read:,} events read from {name}: {result.recorded:,} recorded, "
            f"{result.already_present:,} already in the ledger",
        )
    return ExitCode.OK


@contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Progress | None]:
    """A progress bar on stderr: on a terminal, or wherever ``--progress`` asks; else None."""
    wanted: bool | None = getattr(args, "progress", None)
    errors = Console(stderr=True, markup=False, highlight=False, force_terminal=wanted or None)
    if not (wanted or (wanted is None and errors.is_terminal)):
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        # Left to itself, Progress redirects sys.stdout (and sys.stderr) into
        # its console, so ``events export`` to stdout wrote the events to stderr.
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        yield progress


def _advancer(progress: Progress | None, task: TaskID | None) -> Callable[[int], None]:
    if progress is None or task is None:
        return lambda _: None
    return lambda done: progress.advance(task, done)


def _check(args: argparse.Namespace, out: Console) -> int:
    dimensions = dict(args.dimensions)
    with _ledger(args, "fail") as tracker:
        rates = tracker.rate_limits.check(dimensions)
        quotas = tracker.quotas.check(dimensions)
        unused = check.unused_dimensions(tracker, dimensions)
    allowed = rates.allowed and quotas.allowed
    # A warning, not a failure: the exit code answers "allowed?", which a
    # dimension no limit reads does not change (it may be a plain property).
    for warning in unused.values():
        sys.stderr.write(f"limitry-local: warning: {warning}\n")
    if args.json:
        answer = render.check_json(allowed, rates.rate_limits, quotas.quotas)
        answer["unusedDimensions"] = list(unused)
        print(render.to_json(answer))
    elif not rates.rate_limits and not quotas.quotas:
        out.print("allowed: no limit matches these dimensions")
    else:
        out.print(render.check_table(rates.rate_limits, quotas.quotas))
        out.print("allowed" if allowed else "denied", style="green" if allowed else "bold red")
    return ExitCode.OK if allowed else ExitCode.DENIED


def _demo(args: argparse.Namespace, out: Console) -> int:
    path: Path = getattr(args, "db", DEMO_DB)
    try:
        # Found in review: --timeout was accepted here and ignored (5 s whatever it said).
        demo.run(path, sys.stdout, args.date, force=args.force, timeout=_timeout(args))
    except demo.DemoError as exc:
        raise CliError(str(exc)) from None
    return ExitCode.OK


def _serve(args: argparse.Namespace, out: Console) -> int:
    try:
        from limitry_local.server.serve import ENV_API_KEY, Settings, serve  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in {"uvicorn", "starlette"}:
            raise
        raise CliError(
            f"the {exc.name!r} module is missing; serve needs the [server] extra: "
            "pip install 'limitry_local[server]'",
            ExitCode.MISSING_EXTRA,
        ) from None
    api_key = args.api_key or os.environ.get(ENV_API_KEY) or None
    if api_key is None:
        sys.stderr.write(
            f"limitry-local serve: no API key (--api-key or ${ENV_API_KEY}): every request "
            "passes, whatever its Authorization header\n"
        )
    settings = Settings(
        db=str(_db_path(args)),
        api_key=api_key,
        durability=args.durability,
        flush_ms=args.flush_ms,
        timeout=_timeout(args),
    )
    serve(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
    )
    return ExitCode.OK


# --- the ledger -------------------------------------------------------------------


def _db_path(args: argparse.Namespace) -> Path:
    given: Path | None = getattr(args, "db", None)
    if given is not None:
        return given
    from_env = os.environ.get(ENV_DB)
    return Path(from_env) if from_env else DEFAULT_DB


@contextmanager
def _ledger(args: argparse.Namespace, missing: Missing) -> Iterator[Tracker]:
    """A Tracker on the ledger file, closed afterwards.

    A command that only reads never creates a file: a mistyped ``--db``
    should say so, not answer from an empty ledger.  A dry run on a missing
    file plans against an empty ledger in memory.
    """
    path = _db_path(args)
    timeout = _timeout(args)
    if missing != "create" and path.exists():
        _refuse_to_migrate(path, timeout)
    if path.exists() or missing == "create":
        tracker = Tracker(path, timeout=timeout)
    elif missing == "empty":
        tracker = Tracker()
    else:
        raise CliError(
            f"no ledger at {path}: pass --db PATH or set {ENV_DB} "
            "(limits apply and events import create the file)",
            ExitCode.LEDGER,
        )
    with tracker:
        yield tracker


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.exists() and other.exists() and os.path.samefile(one, other)
    except OSError:
        return False


def _count(path: Path, table: str) -> int:
    """Rows of ``table`` in the ledger file, through a read-only connection; 0 if unreadable."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (sqlite3.Error, OSError, ValueError):
        return 0
    try:
        (rows,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    except sqlite3.Error:
        return 0
    finally:
        connection.close()
    return int(rows)


def _refuse_to_migrate(path: Path, timeout: float) -> None:
    """Refuse a ledger of an older schema: opening it would migrate it in place.

    For the commands that only read, and ``limits apply --dry-run``, which
    are documented to change nothing.  The file is looked at through a
    read-only connection; whatever that cannot read is left to the Tracker
    to report, as before.
    """
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout
        )
    except (sqlite3.Error, OSError, ValueError):
        return
    try:
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            # Left to the Tracker, a lock freed while it waits let it migrate the file.
            raise CliError(
                f"ledger {path} is locked by another connection and stayed locked for "
                f"{timeout:g}s; wait for the other writer, or give --timeout more time",
                ExitCode.LEDGER,
            ) from None
        if code != sqlite3.SQLITE_READONLY:
            # Not a ledger, not a database, ...: the Tracker says so, as before.
            return
        # Found in review: a crashed writer's journal made the look fail, and the
        # Tracker then migrated the file.
        raise CliError(
            f"ledger {path} cannot be read without writing to it ({exc}; a writer that "
            "crashed mid-transaction leaves a journal to roll back): run a command that "
            "writes, such as limits apply, to recover and migrate it",
            ExitCode.LEDGER,
        ) from None
    finally:
        connection.close()
    try:
        version = int(row[0]) if row is not None else None
    except (TypeError, ValueError):
        return
    if version is not None and 1 <= version < SCHEMA_VERSION:
        raise CliError(
            f"ledger {path} has schema version {version}, older than this version's "
            f"{SCHEMA_VERSION}; a command that only reads (or --dry-run) does not migrate it: "
            "run limits apply or events import to migrate it in place (back it up first if "
            "an older limitry_local still uses it)",
            ExitCode.LEDGER,
        )


# --- arguments --------------------------------------------------------------------


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of tables"
    )


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar on stderr (default: only when stderr is a terminal)",
    )


def _event_filters(parser: argparse.ArgumentParser, *, provider: bool = False) -> None:
    parser.add_argument("--customer", metavar="ID", help="only this customerId")
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--event-type", metavar="TYPE", help="only this eventType")
    if provider:
        parser.add_argument("--provider", help="only this provider")
    parser.add_argument(
        "--start", type=_instant, help="from this date or ISO 8601 date-time (UTC if no offset)"
    )
    parser.add_argument(
        "--end", type=_instant, help="before this date-time, or to the end of this date"
    )


def _filters(args: argparse.Namespace) -> transfer.EventFilters:
    return transfer.EventFilters(
        customer_id=args.customer,
        event_type=args.event_type,
        model=args.model,
        start_date=args.start,
        end_date=args.end,
    )


def _report_filters(args: argparse.Namespace) -> dict[str, str | None]:
    """The filters as ``tracker.usage_report`` takes them."""
    return {
        "customer_id": args.customer,
        "event_type": args.event_type,
        "model": args.model,
        "provider": args.provider,
        "start_date": args.start,
        "end_date": args.end,
    }


def _db_option(parser: argparse.ArgumentParser, says: str) -> None:
    # SUPPRESS: a value given before the command name is not overwritten.
    parser.add_argument("--db", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=says)


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds_argument,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="how long to wait for another process's write lock on the ledger (default: 5)",
    )


def _timeout(args: argparse.Namespace) -> float:
    """``--timeout``, or the Tracker's default when it was not given (SUPPRESS leaves it unset)."""
    timeout: float = getattr(args, "timeout", 5.0)
    return timeout


def _instant(text: str) -> str:
    """An ISO 8601 date or date-time, passed on as written (``events.list`` reads it)."""
    try:
        iso_date_or_time(text)  # as the library reads it
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date (2026-11-25) or date-time (2026-11-25T10:00:00Z)"
        ) from None
    return text


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return int(text)


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1 or more)")
    return int(text)


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds > 0")
    return value


def _dimension(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. customer_id=acme)")
    return key, value


def _console(*, stderr: bool = False) -> Console:
    # No markup or highlighting: strings printed here hold names and paths from
    # the user, which must print as written ("[prod].db" is not a style).
    console = Console(stderr=stderr, markup=False, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Written to a file or a pipe: wide enough that no table cell is cut.
        # Tables stay as narrow as their content; --json is the format for scripts.
        console = Console(stderr=stderr, markup=False, highlight=False, width=250)
    return console


def _fail(message: str, code: ExitCode) -> int:
    sys.stderr.write(f"limitry-local: error: {message}\n")
    return code
